"""Thin magicgui/Qt widgets over the model code in ``_model`` and the mrtherm core.

Long work (thermometry, window checks) runs in napari worker threads; the UI
only receives progress and finished layers, so the viewer never freezes.
"""

from __future__ import annotations

import os
import queue
import threading

import numpy as np
from magicgui import widgets
from napari.qt.threading import thread_worker

from mrtherm.thermometry.dose import COMMERCIAL_LEVELS_CEM43_MIN

from . import _model


def _mrtherm_meta(layer):
    return (getattr(layer, "metadata", None) or {}).get("mrtherm", {})


def _layers_of_kind(viewer, kind):
    return [ly for ly in viewer.layers if _mrtherm_meta(ly).get("kind") == kind]


def _add_layers(viewer, layer_tuples):
    added = []
    for data, kwargs, kind in layer_tuples:
        added.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    return added


# --------------------------------------------------------------------------- thermometry
class ThermometryWidget(widgets.Container):
    """Run the thermometry pipeline on files or on magnitude/phase image layers, in a worker thread."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        _model.radiological_view(napari_viewer)
        self.magnitude_file = widgets.FileEdit(label="magnitude file", filter="*.nii*")
        self.phase_file = widgets.FileEdit(label="phase file (optional)", filter="*.nii*")
        self.magnitude_layer = widgets.ComboBox(label="or magnitude layer", choices=self._image_layers, nullable=True)
        self.phase_layer = widgets.ComboBox(label="phase layer (rad)", choices=self._image_layers, nullable=True)
        self.labels_file = widgets.FileEdit(label="labels (optional)", filter="*.nii*")
        self.te_ms = widgets.FloatSpinBox(label="TE ms (0: sidecar)", value=0.0, min=0.0, max=1000.0, step=0.1)
        self.b0_t = widgets.FloatSpinBox(label="B0 T (0: sidecar)", value=0.0, min=0.0, max=20.0, step=0.1)
        self.frame_time_s = widgets.FloatSpinBox(label="frame time s (0: NIfTI)", value=0.0, min=0.0, max=600.0)
        self.alpha = widgets.FloatSpinBox(label="alpha ppm/C", value=-0.01, min=-1.0, max=1.0, step=0.0001)
        self.phase_sign = widgets.ComboBox(label="phase sign", choices=[1, -1], value=1)
        self.baseline = widgets.SpinBox(label="baseline frames", value=3, min=1, max=1000)
        self.drift_order = widgets.ComboBox(label="drift order", choices=[0, 1, 2], value=2)
        self.levels = widgets.LineEdit(label="dose levels CEM43", value="240")
        self.out_dir = widgets.FileEdit(label="save to (optional)", mode="d")
        self.run_button = widgets.PushButton(text="Run thermometry")
        self.progress = widgets.ProgressBar(label="frames", value=0, min=0, max=1)
        self.status = widgets.Label(value="")
        self.extend([self.magnitude_file, self.phase_file, self.magnitude_layer, self.phase_layer, self.labels_file,
                     self.te_ms, self.b0_t, self.frame_time_s, self.alpha, self.phase_sign, self.baseline,
                     self.drift_order, self.levels, self.out_dir, self.run_button, self.progress, self.status])
        self.run_button.changed.connect(self.start)
        self.viewer.layers.events.inserted.connect(lambda e: self._refresh())
        self.viewer.layers.events.removed.connect(lambda e: self._refresh())
        self.worker = None

    def _refresh(self):
        self.magnitude_layer.reset_choices()
        self.phase_layer.reset_choices()

    def _image_layers(self, _widget=None):
        import napari.layers
        return [ly for ly in self.viewer.layers if isinstance(ly, napari.layers.Image) and ly.data.ndim == 4]

    def _exam(self):
        import mrtherm
        te = self.te_ms.value / 1000.0 or None
        b0 = self.b0_t.value or None
        step = self.frame_time_s.value or None
        if self.magnitude_layer.value is not None and self.phase_layer.value is not None:
            mag, ph = self.magnitude_layer.value, self.phase_layer.value
            return mrtherm.load_exam(np.asarray(mag.data), np.asarray(ph.data), te_s=te, b0_t=b0,
                                     frame_time_s=step or 1.0,
                                     affine=_model.nifti_affine_from_napari(mag.affine.affine_matrix))
        mag = str(self.magnitude_file.value)
        if not mag or mag == "." or not os.path.exists(mag):
            raise mrtherm.MrthermError("choose a magnitude file or magnitude and phase layers")
        ph = str(self.phase_file.value)
        ph = ph if ph and ph != "." and os.path.exists(ph) else None
        return mrtherm.load_exam(mag, ph, te_s=te, b0_t=b0, frame_time_s=step)

    def start(self, *_):
        """Start the run in a worker thread; returns the worker."""
        import mrtherm
        try:
            exam = self._exam()
            levels = tuple(float(v) for v in self.levels.value.split(",") if v.strip())
        except (mrtherm.MrthermError, ValueError) as exc:
            self.status.value = f"error: {exc}"
            return None
        lab = str(self.labels_file.value)
        kwargs = dict(baseline_frames=self.baseline.value, alpha_ppm_per_c=self.alpha.value,
                      phase_sign=self.phase_sign.value, drift_order=self.drift_order.value,
                      dose_levels_cem43_min=levels,
                      labels=lab if lab and lab != "." and os.path.exists(lab) else None)
        out = str(self.out_dir.value)
        out = out if out and out != "." else None
        self.progress.max = exam.n_frames
        self.progress.value = 0
        self.status.value = "running ..."
        self.run_button.enabled = False
        self.worker = _run_worker(exam, kwargs, out)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.start()
        return self.worker

    def _on_progress(self, done):
        self.progress.value = done

    def _on_done(self, result):
        _add_layers(self.viewer, _model.result_layers(result))
        vols = ", ".join(f"{k:g}: {v:.3f} mL" for k, v in result.lesion_volumes_ml.items())
        self.status.value = f"done: peak {np.nanmax(result.host('tmax_c')):.1f} C; lesions {vols}; " \
                            f"{len(result.alarms)} alarm(s)"
        self.run_button.enabled = True

    def _on_error(self, exc):
        self.status.value = f"error: {exc}"
        self.run_button.enabled = True


@thread_worker
def _run_worker(exam, kwargs, out_dir):
    """Yields frames done while the pipeline runs in a helper thread; returns the result."""
    import mrtherm
    q = queue.Queue()
    box = {}

    def work():
        try:
            box["result"] = mrtherm.process(exam, progress_callback=lambda d, n: q.put(d), **kwargs)
            if out_dir:
                box["result"].save(out_dir)
        except BaseException as exc:  # handed to the GUI thread
            box["error"] = exc
        finally:
            q.put(None)

    threading.Thread(target=work, daemon=True).start()
    while True:
        item = q.get()
        if item is None:
            break
        yield item
    if "error" in box:
        raise box["error"]
    return box["result"]


# --------------------------------------------------------------------------- dose overlay
class DoseOverlayWidget(widgets.Container):
    """Dose levels, opacity, contours on/off, lesion volume per level."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        _model.radiological_view(napari_viewer)
        self.dose_layer = widgets.ComboBox(label="dose layer", choices=self._dose_layers)
        self.levels = widgets.LineEdit(label="levels CEM43",
                                       value=",".join(f"{v:g}" for v in COMMERCIAL_LEVELS_CEM43_MIN))
        self.opacity = widgets.FloatSlider(label="dose opacity", value=0.6, min=0.0, max=1.0)
        self.contours = widgets.CheckBox(label="contours", value=True)
        self.apply_button = widgets.PushButton(text="Apply")
        self.volumes = widgets.Label(value="")
        self.extend([self.dose_layer, self.levels, self.opacity, self.contours, self.apply_button, self.volumes])
        self.apply_button.changed.connect(self.apply)
        self.opacity.changed.connect(self._set_opacity)
        self.contours.changed.connect(self.apply)
        self.viewer.layers.events.inserted.connect(lambda e: self.dose_layer.reset_choices())

    def _dose_layers(self, _w=None):
        return _layers_of_kind(self.viewer, "dose")

    def _set_opacity(self, *_):
        if self.dose_layer.value is not None:
            self.dose_layer.value.opacity = self.opacity.value

    def apply(self, *_):
        """Rebuild lesion contours at the levels; returns {level: mL}."""
        layer = self.dose_layer.value
        if layer is None:
            self.volumes.value = "no mrtherm dose layer"
            return {}
        meta = _mrtherm_meta(layer)
        levels = [float(v) for v in self.levels.value.split(",") if v.strip()]
        for old in [ly for ly in self.viewer.layers if _mrtherm_meta(ly).get("kind") == "lesion"]:
            self.viewer.layers.remove(old)
        if self.contours.value:
            for i, lev in enumerate(levels):
                data, kw, _ = _model.lesion_layer(meta["dose_cem43_min"], lev, meta["nifti_affine"],
                                                  _model.LESION_COLOURS[i % len(_model.LESION_COLOURS)], meta)
                ly = self.viewer.add_labels(data, **kw)
                ly.contour = 1
        vox = meta.get("voxel_volume_ml") or abs(np.linalg.det(meta["nifti_affine"][:3, :3])) / 1000.0
        vols = _model.lesion_volumes_ml(meta["dose_cem43_min"], levels, vox)
        self.volumes.value = "\n".join(f"{lev:g} CEM43: {v:.3f} mL" for lev, v in vols.items())
        self._set_opacity()
        return vols


# --------------------------------------------------------------------------- temperature curve
class TemperatureCurveWidget(widgets.Container):
    """Temperature versus time at a clicked voxel or in a shapes ROI, with 43/45 C lines and alarms."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        _model.radiological_view(napari_viewer)
        self.temperature_layer = widgets.ComboBox(label="temperature", choices=self._temperature_layers)
        self.roi_layer = widgets.ComboBox(label="ROI shapes", choices=self._shapes_layers, nullable=True)
        self.click = widgets.CheckBox(label="curve at clicked voxel", value=True)
        self.roi_button = widgets.PushButton(text="Curve in ROI")
        self.alarms = widgets.Label(value="")
        self.extend([self.temperature_layer, self.roi_layer, self.click, self.roi_button, self.alarms])
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        self.figure = Figure(figsize=(4, 3), dpi=90)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.native.layout().addWidget(self.canvas)
        self.roi_button.changed.connect(self.plot_roi)
        self.viewer.mouse_drag_callbacks.append(self._on_click)
        self.viewer.layers.events.inserted.connect(lambda e: self._refresh())
        self.last_curves = None
        self._refresh()

    def _refresh(self):
        self.temperature_layer.reset_choices()
        self.roi_layer.reset_choices()
        layer = self.temperature_layer.value
        if layer is not None:
            self.alarms.value = alarm_text(_mrtherm_meta(layer).get("report"))

    def _temperature_layers(self, _w=None):
        return _layers_of_kind(self.viewer, "temperature")

    def _shapes_layers(self, _w=None):
        import napari.layers
        return [ly for ly in self.viewer.layers if isinstance(ly, napari.layers.Shapes)]

    def _on_click(self, viewer, event):
        if self.click.value and event.type == "mouse_press":
            self.plot_voxel(event.position)

    def _times(self, layer, n):
        t = _mrtherm_meta(layer).get("frame_times_s")
        return np.asarray(t, float) if t is not None and len(t) == n else np.arange(n, dtype=float)

    def plot_voxel(self, world_position):
        """Curve at the voxel under a world position (napari world coordinates)."""
        layer = self.temperature_layer.value
        if layer is None:
            return None
        temp = _mrtherm_meta(layer)["temperature_c"]
        pos = list(world_position)[-3:]
        data_pos = np.asarray(layer.world_to_data([0.0] + pos))[-3:]
        idx = tuple(int(round(v)) for v in data_pos)
        if any(i < 0 or i >= s for i, s in zip(idx, temp.shape[1:])):
            return None
        curve = np.asarray(temp[(slice(None),) + idx], float)
        self._draw(self._times(layer, temp.shape[0]), curve, curve, f"voxel (z,y,x) {idx}")
        return curve

    def plot_roi(self, *_):
        """Mean and max in the shapes ROI (polygons on the current slice); returns (mean, max)."""
        layer, shapes = self.temperature_layer.value, self.roi_layer.value
        if layer is None or shapes is None or not len(shapes.data):
            return None
        temp = _mrtherm_meta(layer)["temperature_c"]
        mask = np.zeros(temp.shape[1:], bool)
        for verts in shapes.data:
            world = np.asarray([shapes.data_to_world(v) for v in verts])[:, -3:]
            data = np.asarray([layer.world_to_data([0.0] + list(w))[-3:] for w in world])
            z = int(round(float(np.median(data[:, 0]))))
            if 0 <= z < mask.shape[0]:
                mask[z] |= _model.polygon_mask(data[:, 1:], mask.shape[1:])
        mean, mx = _model.roi_curves(temp, mask)
        self._draw(self._times(layer, temp.shape[0]), mean, mx, f"ROI ({int(mask.sum())} voxels)")
        return mean, mx

    def _draw(self, times, mean, mx, title):
        self.last_curves = (times, mean, mx)
        fig = self.figure
        fig.clear()
        ax = fig.add_subplot(111)
        ax.plot(times, mx, color="tab:red", label="max")
        ax.plot(times, mean, color="tab:orange", label="mean")
        layer = self.temperature_layer.value
        report = _mrtherm_meta(layer).get("report") if layer is not None else None
        for row in (report or {}).get("protected_structures", []):
            curve = row.get("max_c_curve")
            if curve:
                ax.plot(times, curve, lw=1, label=row["structure"])
        ax.axhline(43.0, color="grey", ls=":")
        ax.axhline(45.0, color="black", ls=":")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("temperature (C)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        self.canvas.draw_idle()


def alarm_text(report) -> str:
    if not report:
        return ""
    alarms = report.get("alarms") or []
    if not alarms:
        return "alarms: none"
    from mrtherm.thermometry.watch import format_alarm
    return "\n".join(format_alarm(a) for a in alarms)


# --------------------------------------------------------------------------- acoustic window
class AcousticWindowWidget(widgets.Container):
    """Labels layer + transducer file + target point -> rays coloured by status, verdict and rules."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        _model.radiological_view(napari_viewer)
        self.labels_layer = widgets.ComboBox(label="labels", choices=self._labels_layers)
        self.transducer_file = widgets.FileEdit(label="transducer JSON", filter="*.json")
        self.points_layer = widgets.ComboBox(label="target points", choices=self._points_layers)
        self.run_button = widgets.PushButton(text="Check window")
        self.verdict = widgets.Label(value="")
        self.rules = widgets.Label(value="")
        self.extend([self.labels_layer, self.transducer_file, self.points_layer, self.run_button, self.verdict,
                     self.rules])
        self.run_button.changed.connect(self.start)
        self.viewer.layers.events.inserted.connect(lambda e: self._refresh())
        self.worker = None
        self.report = None

    def _refresh(self):
        self.labels_layer.reset_choices()
        self.points_layer.reset_choices()

    def _labels_layers(self, _w=None):
        import napari.layers
        return [ly for ly in self.viewer.layers if isinstance(ly, napari.layers.Labels)
                and _mrtherm_meta(ly).get("kind") not in ("lesion",)]

    def _points_layers(self, _w=None):
        import napari.layers
        return [ly for ly in self.viewer.layers if isinstance(ly, napari.layers.Points)]

    def start(self, *_):
        from mrtherm import MrthermError
        from mrtherm.window.transducer import load_transducer
        from mrtherm.window import Scene
        labels, points = self.labels_layer.value, self.points_layer.value
        try:
            if labels is None or points is None or not len(points.data):
                raise MrthermError("choose a labels layer and a points layer with the target")
            transducer = load_transducer(str(self.transducer_file.value))
            scene = Scene(np.asarray(labels.data), _model.nifti_affine_from_napari(labels.affine.affine_matrix))
            world = np.asarray(points.data_to_world(points.data[-1]))[-3:]
            target_xyz = world[::-1]
        except (MrthermError, ValueError) as exc:
            self.verdict.value = f"error: {exc}"
            return None
        self.verdict.value = "checking ..."
        self.worker = _window_worker(scene, transducer, target_xyz)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(lambda exc: setattr(self.verdict, "value", f"error: {exc}"))
        self.worker.start()
        return self.worker

    def _on_done(self, report):
        self.report = report
        for old in _layers_of_kind(self.viewer, "window"):
            self.viewer.layers.remove(old)
        _add_layers(self.viewer, _model.window_layers(report))
        self.verdict.value = (f"verdict {report['verdict']}: active fraction {report['active_fraction']:.2f}, "
                              f"blocked {report['blocked_fraction']:.2f}")
        self.rules.value = "\n".join(f"{r['result']:4s} {r['rule']}: {r['value']} (threshold {r['threshold']})"
                                     for r in report["rules"])


@thread_worker
def _window_worker(scene, transducer, target_xyz):
    from mrtherm.window import check_window
    return check_window(scene, transducer, target_xyz)
