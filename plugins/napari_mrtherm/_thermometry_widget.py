"""Thermometry widget: run the pipeline on files or image layers in a worker thread."""

from __future__ import annotations

import queue
import threading

import numpy as np
from magicgui import widgets
from napari.qt.threading import thread_worker

from mrtherm.thermometry.reference import REFERENCE_MODES

from . import _common, _layers, _model, _view

RESULT_KINDS = ("anatomy", "labels", "temperature", "dose", "lesion")


def _row(*items):
    return widgets.Container(widgets=list(items), layout="horizontal", labels=True)


class ThermometryWidget(widgets.Container):
    """Run the thermometry pipeline on files or on magnitude/phase image layers, in a worker thread."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        _view.install(napari_viewer)
        self.magnitude_file = widgets.FileEdit(label="magnitude", filter="*.nii*")
        self.phase_file = widgets.FileEdit(label="phase (optional)", filter="*.nii*")
        self.magnitude_layer = widgets.ComboBox(label="or magnitude layer", choices=self._image_layers, nullable=True)
        self.phase_layer = widgets.ComboBox(label="phase layer (rad)", choices=self._image_layers, nullable=True)
        self.labels_file = widgets.FileEdit(label="labels (optional)", filter="*.nii*")
        self.te_ms = widgets.FloatSpinBox(label="TE ms", value=0.0, min=0.0, max=1000.0, step=0.1,
                                          tooltip="0: from the sidecar or DICOM")
        self.b0_t = widgets.FloatSpinBox(label="B0 T", value=0.0, min=0.0, max=20.0, step=0.1,
                                         tooltip="0: from the sidecar or DICOM")
        self.frame_time_s = widgets.FloatSpinBox(label="frame s", value=0.0, min=0.0, max=600.0,
                                                 tooltip="0: from the NIfTI header or sidecar")
        self.alpha = widgets.FloatSpinBox(label="alpha ppm/°C", value=-0.01, min=-1.0, max=1.0, step=0.0001)
        self.phase_sign = widgets.ComboBox(label="phase sign", choices=[1, -1], value=1)
        self.baseline = widgets.SpinBox(label="baseline frames", value=3, min=1, max=1000)
        self.drift_order = widgets.ComboBox(label="drift order", choices=[0, 1, 2], value=2)
        self.reference = widgets.ComboBox(label="reference", choices=list(REFERENCE_MODES), value="auto",
                                          tooltip="auto: hybrid (baseline library + smooth correction + sparse "
                                                  "heat) when the baseline frames move (breathing), else mean")
        self.levels = widgets.LineEdit(label="dose levels CEM43 min", value="240")
        self.target = widgets.LineEdit(label="target X,Y,Z mm", value="",
                                       tooltip="world mm (optional; default: the TARGET label's centroid); the "
                                               "canvas then says per frame whether it is measured")
        self.out_dir = widgets.FileEdit(label="save to (optional)", mode="d")
        self.run_button = widgets.PushButton(text="Run thermometry")
        self.progress = widgets.ProgressBar(label="frames", value=0, min=0, max=1)
        self.status = widgets.Label(value="")
        self.extend([self.magnitude_file, self.phase_file, self.magnitude_layer, self.phase_layer, self.labels_file,
                     _row(self.te_ms, self.b0_t, self.frame_time_s), _row(self.alpha, self.phase_sign),
                     _row(self.baseline, self.drift_order), self.reference, self.levels, self.target, self.out_dir,
                     self.run_button,
                     self.progress, self.status])
        self.run_button.changed.connect(self.start)
        self.viewer.layers.events.inserted.connect(lambda e: self._refresh())
        self.viewer.layers.events.removed.connect(lambda e: self._refresh())
        self.worker = None

    def _refresh(self):
        self.magnitude_layer.reset_choices()
        self.phase_layer.reset_choices()

    def _image_layers(self, _widget=None):
        import napari.layers
        return [ly for ly in self.viewer.layers if isinstance(ly, napari.layers.Image) and ly.data.ndim == 4
                and _view.meta(ly).get("kind") in (None, "dicom")]

    def _exam(self):
        import mrtherm
        te = self.te_ms.value / 1000.0 or None
        b0 = self.b0_t.value or None
        step = self.frame_time_s.value or None
        if self.magnitude_layer.value is not None and self.phase_layer.value is not None:
            mag, ph = self.magnitude_layer.value, self.phase_layer.value
            return mrtherm.load_exam(np.asarray(mag.data), np.asarray(ph.data), te_s=te, b0_t=b0,
                                     frame_time_s=step or 1.0, affine=_model.layer_nifti_affine(mag))
        mag = _common.chosen_path(self.magnitude_file)
        if not _common.existing_file(mag):
            raise mrtherm.MrthermError("choose a magnitude file, or magnitude and phase layers")
        ph = _common.chosen_path(self.phase_file)
        return mrtherm.load_exam(mag, ph if _common.existing_file(ph) else None, te_s=te, b0_t=b0, frame_time_s=step)

    def start(self, *_):
        """Start the run in a worker thread; returns the worker (None after an input error, shown inline)."""
        import mrtherm
        try:
            exam = self._exam()
            levels = _model.parse_levels(self.levels.value)
            target = _model.parse_target(self.target.value)
        except (mrtherm.MrthermError, ValueError) as exc:
            self.status.value = _common.error_text(exc)
            return None
        lab = _common.chosen_path(self.labels_file)
        kwargs = dict(baseline_frames=self.baseline.value, alpha_ppm_per_c=self.alpha.value,
                      phase_sign=self.phase_sign.value, drift_order=self.drift_order.value,
                      reference=self.reference.value, dose_levels_cem43_min=levels, target_mm=target,
                      labels=lab if _common.existing_file(lab) else None)
        self.progress.max = exam.n_frames
        self.progress.value = 0
        self.status.value = "running ..."
        self.run_button.enabled = False
        self.worker = _run_worker(exam, kwargs, _common.chosen_path(self.out_dir))
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.start()
        return self.worker

    def _on_progress(self, done):
        self.progress.value = done

    def _on_done(self, result_and_layers):
        """Replace earlier result layers (no 'anatomy [1]' over the overlays), anatomy at the bottom.

        Layers are added, then the old ones removed, one per event-loop turn, so the viewer stays responsive
        while napari builds and tears down their visuals.
        """
        self._result, pending = result_and_layers
        old = [ly for kind in RESULT_KINDS for ly in _view.layers_of_kind(self.viewer, kind)]
        self._pending = [("add", t) for t in pending] + [("remove", ly) for ly in old]
        self._added = []
        self._add_next()

    def _add_next(self):
        from qtpy.QtCore import QTimer
        if self._pending:
            action, item = self._pending.pop(0)
            if action == "add":
                self._added += [(ly, item[1]["name"]) for ly in _common.add_layers(self.viewer, [item])]
            else:
                _common.remove_layers(self.viewer, [item])
            QTimer.singleShot(0, self._add_next)
            return
        for layer, name in self._added:  # napari named them 'anatomy [1]' while the old ones were there
            layer.name = name
        result = self._result
        vols = ", ".join(f"{k:g} CEM43: {v:.3f} mL" for k, v in result.lesion_volumes_ml.items())
        trust = result.report.get("trust", {}).get("warnings") or []
        self.status.value = (f"done: peak {np.nanmax(result.host('tmax_c')):.1f} °C; lesions {vols}; "
                             f"{len(result.alarms)} alarm(s)" + (f"; {len(trust)} warning(s) on the canvas" if trust
                                                                   else ""))
        self.run_button.enabled = True

    def _on_error(self, exc):
        self.status.value = _common.error_text(exc)
        self.run_button.enabled = True


@thread_worker
def _run_worker(exam, kwargs, out_dir):
    """Yields frames done while the pipeline runs in a helper thread; returns (result, layer tuples)."""
    import mrtherm
    q = queue.Queue()
    box = {}

    def work():
        try:
            result = mrtherm.process(exam, progress_callback=lambda d, n: q.put(d), **kwargs)
            if out_dir:
                result.save(out_dir)
            box["result"] = (result, _layers.result_layers(result))  # dose per frame built here, not in the GUI
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


__all__ = ["ThermometryWidget"]
