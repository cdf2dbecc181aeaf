"""Dose overlay widget: lesion levels (outlines per frame), dose opacity, lesion volumes with a colour legend."""

from __future__ import annotations

import numpy as np
from magicgui import widgets

from mrtherm.thermometry.dose import COMMERCIAL_LEVELS_CEM43_MIN

from . import _common, _layers, _model, _view


class DoseOverlayWidget(widgets.Container):
    """Dose levels, opacity, outlines on/off, lesion volume per level at the current frame and at the end."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.view = _view.install(napari_viewer)
        self.dose_layer = widgets.ComboBox(label="dose layer", choices=self._dose_layers)
        self.levels = widgets.LineEdit(label="levels CEM43 min",
                                       value=", ".join(f"{v:g}" for v in COMMERCIAL_LEVELS_CEM43_MIN))
        self.opacity = widgets.FloatSlider(label="dose opacity", value=0.45, min=0.0, max=1.0)
        self.contours = widgets.CheckBox(label="lesion outlines", value=True)
        self.apply_button = widgets.PushButton(text="Apply")
        self.volumes = widgets.Label(value="")
        self.extend([self.dose_layer, self.levels, self.opacity, self.contours, self.apply_button, self.volumes])
        self.apply_button.changed.connect(self.apply)
        self.opacity.changed.connect(self._set_opacity)
        self.contours.changed.connect(self.apply)
        self.viewer.layers.events.inserted.connect(lambda e: self.dose_layer.reset_choices())
        self.viewer.dims.events.current_step.connect(lambda e: self._show_volumes())
        self.last_volumes = None
        self.levels_applied = ()

    def _dose_layers(self, _w=None):
        return _view.layers_of_kind(self.viewer, "dose")

    def _set_opacity(self, *_):
        if self.dose_layer.value is not None:
            self.dose_layer.value.opacity = self.opacity.value

    def apply(self, *_):
        """Rebuild lesion outlines at the levels; returns {level: mL} at the end of the run ({} after an error)."""
        layer = self.dose_layer.value
        if layer is None:
            self.volumes.value = "no mrtherm dose layer: open a run folder first"
            return {}
        try:
            levels = _model.parse_levels(self.levels.value)
        except ValueError as exc:
            self.volumes.value = _common.error_text(exc)
            return {}
        info = _view.meta(layer)
        _common.remove_layers(self.viewer, _view.layers_of_kind(self.viewer, "lesion"))
        if self.contours.value:
            base = {k: v for k, v in info.items() if k not in ("kind", "batch", "nifti_affine")}
            tuples = [_layers.lesion_layer(info["dose_per_frame_cem43_min"], lev, info["nifti_affine"], base,
                                           info["frame_times_s"]) for lev in levels]
            _common.add_layers(self.viewer, tuples)
        self.levels_applied = levels
        self._set_opacity()
        return self._show_volumes()

    def _show_volumes(self):
        layer = self.dose_layer.value
        levels = self.levels_applied
        if layer is None or not levels:
            return {}
        info = _view.meta(layer)
        vox = info.get("voxel_volume_ml") or abs(np.linalg.det(info["nifti_affine"][:3, :3])) / 1000.0
        per_frame = info["dose_per_frame_cem43_min"]
        frame = self.view.current_frame(layer)
        now = _model.lesion_volumes_ml(per_frame[frame], levels, vox)
        final = _model.lesion_volumes_ml(info["dose_cem43_min"], levels, vox)
        t = info["frame_times_s"][frame]
        rows = [f"<span style='color:{_model.level_colour(lev)[0]}'>&#9632;</span> {lev:g} CEM43: "
                f"{now[lev]:.3f} mL at {t:.1f} s, {final[lev]:.3f} mL at the end" for lev in levels]
        self.volumes.value = "<br>".join(rows)
        self.last_volumes = {"now": now, "final": final}
        return final
