"""Live dock widget: follows a ``mrtherm live`` output folder; layers update within a second of each frame.

Reading happens in a napari worker thread (the UI never waits on the disk); the
GUI thread only swaps layer data and the canvas text.
"""

from __future__ import annotations

import time

from magicgui.widgets import Container, FileEdit, Label, PushButton

from . import _layers, _model as m
from ._live import LiveFolder, status_text
from ._view import text_overlay

POLL_S = 0.25
LAYER_NAMES = {"anatomy.nii.gz": "live anatomy", "temperature.nii.gz": "live temperature (C)",
               "dose_cem43.nii.gz": "live CEM43 dose (log10 min)"}


def follow(folder, poll_s=POLL_S):
    """Generator for the worker thread: yields each poll's snapshot of ``folder`` (None when nothing is new).

    Yielding every poll lets the worker see a quit request within ``poll_s``.
    """
    live = LiveFolder(folder)
    while True:
        snap = live.poll()
        yield snap
        if snap is None:
            time.sleep(poll_s)


class LiveWidget(Container):
    """Folder chooser, Follow / Stop, and a status line."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.folder = FileEdit(mode="d", label="live folder")
        self.button = PushButton(text="Follow")
        self.status = Label(value="not following")
        self.extend([self.folder, self.button, self.status])
        self.button.clicked.connect(self._toggle)
        self.worker = None
        self.snapshots = 0

    def _toggle(self):
        if self.worker is not None:
            self.stop()
        else:
            self.start(str(self.folder.value))

    def start(self, folder):
        """Follow ``folder`` in a worker thread."""
        from napari.qt.threading import create_worker  # noqa: PLC0415
        self.stop()
        self.worker = create_worker(follow, folder)
        self.worker.yielded.connect(self.show)
        self.worker.start()
        self.button.text = "Stop"
        self.status.value = f"following {folder}"

    def stop(self):
        """Stop following (layers stay): the worker thread ends within one poll."""
        if self.worker is not None:
            self.worker.quit()
            self.worker = None
        self.button.text = "Follow"

    def show(self, snap):
        """Put a snapshot on the canvas (GUI thread); None (nothing new) changes nothing."""
        if snap is None:
            return
        self.snapshots += 1
        maps = snap["maps"]
        for name, (data, affine) in maps.items():
            self._update(name, data, affine)
        text, alarm = status_text(snap["report"])
        overlay = text_overlay(self.viewer)
        overlay.visible = True
        overlay.text = text
        overlay.color = (1.0, 0.2, 0.2, 1.0) if alarm else (1.0, 1.0, 1.0, 1.0)
        self.status.value = text.splitlines()[0]

    def _update(self, name, data, affine):
        layer_name = LAYER_NAMES.get(name) or f"live {name[:-7].replace('_', ' ')} CEM43"
        layer = next((lay for lay in self.viewer.layers if lay.name == layer_name), None)
        if name == "dose_cem43.nii.gz":
            data = m.display_dose(data)
        elif name == "temperature.nii.gz":
            data = m.display_temperature(data)
        if layer is not None and layer.data.shape == data.shape:
            layer.data = data
            layer.affine = m.napari_affine(affine)
            return
        if layer is not None:
            self.viewer.layers.remove(layer)
        self._add(name, layer_name, data, affine)

    def _add(self, name, layer_name, data, affine):
        if name == "anatomy.nii.gz":
            data_, kw, kind = _layers.anatomy_layer(data, affine)
        elif name == "temperature.nii.gz":
            kw, kind = {"colormap": m.temperature_colormap(), "contrast_limits": m.TEMPERATURE_RANGE_C,
                        "blending": "translucent", "opacity": 0.9, **m.placement(affine)}, "image"
        elif name == "dose_cem43.nii.gz":
            kw, kind = {"colormap": m.dose_colormap(), "contrast_limits": m.DOSE_LOG10_RANGE,
                        "blending": "translucent", "opacity": 0.45, **m.placement(affine)}, "image"
        else:
            level = float(name[len("lesion_"):-7].replace("p", "."))
            colour, _ = m.level_colour(level)
            kw, kind = {"colormap": m.lesion_colormap(colour), "opacity": 1.0, **m.placement(affine)}, "labels"
            data = data.astype("uint8")
        kw = {k: v for k, v in kw.items() if k != "name"}
        layer = getattr(self.viewer, f"add_{kind}")(data, name=layer_name, **kw)
        if kind == "labels":
            layer.contour = 1
        if name == "anatomy.nii.gz":
            self.viewer.layers.move(self.viewer.layers.index(layer), 0)
