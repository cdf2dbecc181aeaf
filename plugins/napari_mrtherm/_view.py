"""The operator view: viewer-wide settings and the on-canvas status for mrtherm layers (no Qt code).

Installed once per viewer by the reader, the sample and every widget (:func:`install`). It
- orients the view (radiological by default: one constant, :data:`ORIENTATION`);
- shows a scale bar in mm, colour bars on temperature and dose, lesion layers as locked outlines;
- writes the frame time in seconds, the frame's peak, active alarms (in red), the lesion legend
  and a cursor readout (°C, CEM43 min, tissue name) on the canvas, updated with the sliders;
- opens a run at its hottest frame and slice.
"""

from __future__ import annotations

import contextlib
import weakref

import numpy as np

from . import _layers, _model, _text

ORIENTATION = ("up", "left")  # radiological: anterior (+Y) up, patient's right (+X) on the screen's left
NEUROLOGICAL = ("up", "right")
_VIEWS: dict = {}


def meta(layer) -> dict:
    """The mrtherm metadata of a layer ({} for other layers)."""
    return (getattr(layer, "metadata", None) or {}).get("mrtherm", {})


def layers_of_kind(viewer, kind) -> list:
    """The viewer's mrtherm layers of one kind (temperature, dose, lesion, labels, window, ...)."""
    return [ly for ly in viewer.layers if meta(ly).get("kind") == kind]


def install(viewer):
    """The :class:`OperatorView` of ``viewer`` (created on first use); None without a viewer."""
    if viewer is None:
        return None
    view = _VIEWS.get(id(viewer))
    if view is None or view.viewer is not viewer:
        view = OperatorView(viewer)
        _VIEWS[id(viewer)] = view
        weakref.finalize(viewer, _VIEWS.pop, id(viewer), None)
    return view


def install_current():
    """Install on napari's current viewer (readers and sample data have no viewer argument)."""
    import napari
    return install(napari.current_viewer())


@contextlib.contextmanager
def keep_position(viewer):
    """Keep the slice and frame (world point) while layers are added or removed."""
    point, ndim = tuple(viewer.dims.point), viewer.dims.ndim
    try:
        yield
    finally:
        if viewer.dims.ndim == ndim:
            for axis, value in enumerate(point):
                viewer.dims.set_point(axis, value)


def camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9 on, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _overlay(viewer, name, legacy):
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)
    return getattr(overlays, name) if overlays is not None and hasattr(overlays, name) else getattr(viewer, legacy)


def text_overlay(viewer):
    """The canvas text overlay (``viewer.canvas.overlays.text`` from napari 0.9 on)."""
    return _overlay(viewer, "text", "text_overlay")


def scale_bar(viewer):
    """The canvas scale bar (``viewer.canvas.overlays.scale_bar`` from napari 0.9 on)."""
    return _overlay(viewer, "scale_bar", "scale_bar")


def set_orientation(viewer, orientation=ORIENTATION):
    """Apply the 2-D orientation (radiological unless told otherwise)."""
    camera(viewer).orientation2d = orientation


class OperatorView:
    """Settings and status text of one viewer; see the module docstring."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.readout = ""
        self._focus_pending = None
        set_orientation(viewer)
        scale_bar(viewer).visible = True
        text = text_overlay(viewer)
        text.visible = True
        text.font_size = 11
        text.position = "top_left"
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(lambda e: self.update())
        viewer.dims.events.current_step.connect(lambda e: self.update())
        viewer.mouse_move_callbacks.append(self._on_move)
        for layer in list(viewer.layers):
            self.configure(layer)
        self.update()

    # ------------------------------------------------------------------ layers
    def configure(self, layer):
        """Colour bars, locked outlines and non-editable labels for an mrtherm layer."""
        kind = meta(layer).get("kind")
        if kind in ("temperature", "dose"):
            layer.colorbar.visible = True
            layer.colorbar.position = "bottom_left"  # the status text is at the top left, the scale bar bottom right
        if kind == "lesion":
            layer.contour = 1
            layer.editable = False
        if kind == "labels":
            layer.editable = False
        if kind == "temperature" and meta(layer).get("batch"):
            self._focus_pending = (meta(layer)["batch"], self._hottest_point(layer))

    def _on_inserted(self, event):
        """Configure the layer; while the layers of one opened run arrive, keep its hottest frame and slice."""
        layer = event.value
        self.configure(layer)
        pending = self._focus_pending
        if pending is not None and pending[1] is not None and meta(layer).get("batch") == pending[0]:
            for axis, value in pending[1]:
                if axis < self.viewer.dims.ndim:
                    self.viewer.dims.set_point(axis, value)
        self.update()

    @staticmethod
    def _hottest_point(layer):
        hottest = meta(layer).get("hottest_tzyx")
        if hottest is None:
            return None
        world = np.asarray(layer.data_to_world(tuple(hottest)))
        return [(0, float(world[0])), (1, float(world[1]))]

    def temperature_layer(self):
        """The first mrtherm temperature layer, or None."""
        found = layers_of_kind(self.viewer, "temperature")
        return found[0] if found else None

    # ------------------------------------------------------------------ status
    def current_frame(self, layer=None) -> int:
        """Frame index of ``layer`` (default: the temperature layer) at the slider position."""
        layer = layer or self.temperature_layer()
        if layer is None or layer.ndim < 4:
            return 0
        data_pos = layer.world_to_data(tuple(self.viewer.dims.point)[-layer.ndim:])
        return int(np.clip(round(float(data_pos[0])), 0, layer.data.shape[0] - 1))

    def status(self) -> tuple[str, bool]:
        """The on-canvas text and whether an alarm is active."""
        layer = self.temperature_layer()
        if layer is None:
            return self.readout, False
        info = meta(layer)
        frame = self.current_frame(layer)
        times = info["frame_times_s"]
        report = info.get("report") or {}
        levels = [meta(ly)["level"] for ly in layers_of_kind(self.viewer, "lesion") if ly.visible]
        legend = _model.legend_text(levels) if levels else ""
        return _text.status_lines(frame, len(times), float(times[frame]), info["frame_peak_c"][frame],
                                  report.get("alarms"), legend, self.readout,
                                  trust=(report.get("trust") or {}).get("warnings"), target=report.get("target"))

    def update(self):
        """Refresh the canvas text and the probe readouts (called on slider moves, layer changes, mouse moves)."""
        frame = self.current_frame() if self.temperature_layer() is not None else None
        for layer in layers_of_kind(self.viewer, "probes"):
            texts = [_layers.probe_readout(e, frame) for e in meta(layer)["entries"]]
            if list(layer.features["readout"]) != texts:
                layer.features = {"readout": texts}
        text, alarm = self.status()
        overlay = text_overlay(self.viewer)
        overlay.text = text
        overlay.color = (1.0, 0.25, 0.25, 1.0) if alarm else (1.0, 1.0, 1.0, 1.0)

    def _on_move(self, viewer, event):
        self.readout = self.readout_at(event.position)
        self.update()

    def readout_at(self, world_position) -> str:
        """Temperature, dose accumulated so far and tissue name under a world position."""
        temp_c = dose = name = None
        layer = self.temperature_layer()
        frame = self.current_frame(layer)
        for ly in list(self.viewer.layers):
            info = meta(ly)
            kind = info.get("kind")
            if kind not in ("temperature", "dose", "labels"):
                continue
            idx = _index(ly, world_position, frame)
            if idx is None:
                continue
            if kind == "temperature" and temp_c is None:
                temp_c = float(info["temperature_c"][idx])
            elif kind == "dose" and dose is None:
                dose = float(info["dose_per_frame_cem43_min"][idx])
            elif kind == "labels" and name is None:
                value = int(ly.data[idx])
                name = info["label_names"].get(value) if value else None
        return _text.readout_line(temp_c, dose, name)


def _index(layer, world_position, frame):
    """Integer data index of ``layer`` under a world position (time axis = ``frame``), or None outside."""
    pos = list(world_position)[-3:]
    lead = [0.0] * (layer.ndim - 3)
    data = np.asarray(layer.world_to_data(lead + pos))[-3:]
    idx = tuple(int(round(float(v))) for v in data)
    shape = layer.data.shape[-3:]
    if any(i < 0 or i >= s for i, s in zip(idx, shape)):
        return None
    return ((frame,) if layer.ndim == 4 else ()) + idx
