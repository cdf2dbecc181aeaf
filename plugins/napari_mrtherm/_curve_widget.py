"""Temperature-curve widget: temperature versus time at a clicked voxel or in a shapes ROI."""

from __future__ import annotations

import numpy as np
from magicgui import widgets

from . import _model, _text, _view

CANVAS_HEIGHT_PX = 260
REFERENCE_LINES_C = ((43.0, "43 °C (CEM43 reference)", "grey"), (45.0, "45 °C", "black"))


class TemperatureCurveWidget(widgets.Container):
    """Curves with 43/45 °C lines, protected structures, alarms and a marker at the current frame."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.view = _view.install(napari_viewer)
        self.temperature_layer = widgets.ComboBox(label="temperature", choices=self._temperature_layers)
        self.roi_layer = widgets.ComboBox(label="ROI shapes", choices=self._shapes_layers, nullable=True)
        self.click = widgets.CheckBox(label="curve at clicked voxel", value=True)
        self.roi_button = widgets.PushButton(text="Curve in ROI")
        self.alarms = widgets.Label(value="")
        self.extend([self.temperature_layer, self.roi_layer, self.click, self.roi_button, self.alarms])
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        self.figure = Figure(figsize=(4, 2.9), dpi=90, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(CANVAS_HEIGHT_PX)  # never squeezed to a few pixels by other docks
        self.canvas.setMaximumHeight(CANVAS_HEIGHT_PX + 80)
        self.native.layout().addWidget(self.canvas)
        self.roi_button.changed.connect(self.plot_roi)
        self.viewer.mouse_drag_callbacks.append(self._on_click)
        self.viewer.layers.events.inserted.connect(lambda e: self._refresh())
        self.viewer.dims.events.current_step.connect(lambda e: self._move_marker())
        self.last_curves = None
        self._marker = None
        self._refresh()

    def _refresh(self):
        self.temperature_layer.reset_choices()
        self.roi_layer.reset_choices()
        layer = self.temperature_layer.value
        if layer is not None:
            self.alarms.value = _text.alarm_text(_view.meta(layer).get("report"))

    def _temperature_layers(self, _w=None):
        return _view.layers_of_kind(self.viewer, "temperature")

    def _shapes_layers(self, _w=None):
        import napari.layers
        return [ly for ly in self.viewer.layers if isinstance(ly, napari.layers.Shapes)
                and _view.meta(ly).get("kind") != "window"]

    def _on_click(self, viewer, event):
        if self.click.value and event.type == "mouse_press":
            self.plot_voxel(event.position)

    def plot_voxel(self, world_position):
        """Curve at the voxel under a world position (napari world coordinates); None outside."""
        layer = self.temperature_layer.value
        if layer is None:
            return None
        info = _view.meta(layer)
        temp = info["temperature_c"]
        data_pos = np.asarray(layer.world_to_data([0.0] + list(world_position)[-3:]))[-3:]
        idx = tuple(int(round(float(v))) for v in data_pos)
        if any(i < 0 or i >= s for i, s in zip(idx, temp.shape[1:])):
            return None
        curve = np.asarray(temp[(slice(None),) + idx], float)
        world = np.asarray(layer.data_to_world((0,) + idx))[-3:]
        where = ", ".join(f"{a} {v:.1f}" for a, v in zip("zyx", world))
        self._draw(info["frame_times_s"], [(curve, "voxel", "tab:red", "-")], f"voxel at {where} mm")
        return curve

    def plot_roi(self, *_):
        """Mean and max in the shapes ROI (polygons on their slice); returns (mean, max) or None."""
        layer, shapes = self.temperature_layer.value, self.roi_layer.value
        if layer is None or shapes is None or not len(shapes.data):
            return None
        temp = _view.meta(layer)["temperature_c"]
        mask = np.zeros(temp.shape[1:], bool)
        for verts in shapes.data:
            world = np.asarray([shapes.data_to_world(v) for v in verts])[:, -3:]
            data = np.asarray([layer.world_to_data([0.0] + list(w))[-3:] for w in world])
            z = int(round(float(np.median(data[:, 0]))))
            if 0 <= z < mask.shape[0]:
                mask[z] |= _model.polygon_mask(data[:, 1:], mask.shape[1:])
        try:
            mean, mx = _model.roi_curves(temp, mask)
        except ValueError as exc:
            self.alarms.value = f"error: {exc}"
            return None
        self._draw(_view.meta(layer)["frame_times_s"],
                   [(mx, "ROI max", "tab:red", "-"), (mean, "ROI mean", "tab:orange", "--")],
                   f"ROI ({int(mask.sum())} voxels)")
        return mean, mx

    def _draw(self, times, curves, title):
        times = np.asarray(times, float)
        self.last_curves = (times, curves)
        fig = self.figure
        fig.clear()
        ax = fig.add_subplot(111)
        for values, label, colour, style in curves:
            ax.plot(times, values, style, color=colour, label=label)
        layer = self.temperature_layer.value
        report = _view.meta(layer).get("report") if layer is not None else None
        for row in (report or {}).get("protected_structures", []):
            if row.get("max_c_curve"):
                model = row.get("source") == "model"
                ax.plot(times, row["max_c_curve"], lw=1, ls="--" if model else "-",
                        label=f"{row['structure']}{' MODEL' if model else ''} (max)")
        for value, label, colour in REFERENCE_LINES_C:
            ax.axhline(value, color=colour, ls=":", lw=1)
            ax.annotate(label, (times[0], value), xytext=(2, 2), textcoords="offset points", fontsize=7, color=colour)
        for a in (report or {}).get("alarms") or []:
            ax.axvline(a["time_s"], color="crimson", lw=0.8, alpha=0.6)
        self._marker = ax.axvline(times[self.view.current_frame(layer)] if layer is not None else times[0],
                                  color="tab:blue", lw=1.2, label="current frame")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("temperature (°C)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
        self.canvas.draw_idle()

    def _move_marker(self):
        layer = self.temperature_layer.value
        if self._marker is None or layer is None or self.last_curves is None:
            return
        t = self.last_curves[0][self.view.current_frame(layer)]
        self._marker.set_xdata([t, t])
        self.canvas.draw_idle()

    def marker_time_s(self):
        """Time (s) at which the current-frame marker is drawn, or None before any curve."""
        return None if self._marker is None else float(self._marker.get_xdata()[0])
