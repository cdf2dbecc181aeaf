"""Acoustic-window widget: labels layer + transducer file + target point -> rays by status, verdict and rules."""

from __future__ import annotations

import os

import numpy as np
from magicgui import widgets
from napari.qt.threading import thread_worker

from . import _common, _layers, _model, _text, _view


class AcousticWindowWidget(widgets.Container):
    """Check the acoustic window in a worker thread; the slice and frame stay where they are."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        _view.install(napari_viewer)
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
        self._refresh()

    def _refresh(self):
        self.labels_layer.reset_choices()
        self.points_layer.reset_choices()
        if _common.chosen_path(self.transducer_file) is None:
            found = self.known_transducer()
            if found:
                self.transducer_file.value = found

    def known_transducer(self) -> str | None:
        """transducer.json saved beside an opened window check (``mrtherm window``, the demo), if any."""
        for layer in _view.layers_of_kind(self.viewer, "window"):
            path = _view.meta(layer).get("report_path")
            cand = os.path.join(os.path.dirname(path), "transducer.json") if path else None
            if cand and os.path.isfile(cand):
                return cand
        return None

    def _labels_layers(self, _w=None):
        import napari.layers
        return [ly for ly in self.viewer.layers if isinstance(ly, napari.layers.Labels)
                and _view.meta(ly).get("kind") != "lesion"]

    def _points_layers(self, _w=None):
        import napari.layers
        return [ly for ly in self.viewer.layers if isinstance(ly, napari.layers.Points)]

    def start(self, *_):
        """Start the check in a worker thread; returns the worker (None after an input error, shown inline)."""
        from mrtherm import MrthermError
        from mrtherm.window import Scene
        from mrtherm.window.transducer import load_transducer
        labels, points = self.labels_layer.value, self.points_layer.value
        try:
            if labels is None or points is None or not len(points.data):
                raise MrthermError("choose a labels layer and a points layer holding the target")
            path = _common.chosen_path(self.transducer_file)
            if not _common.existing_file(path):
                raise MrthermError("choose a transducer JSON file (mrtherm window transducer writes one)")
            transducer = load_transducer(path)
            self._grid = (_model.layer_nifti_affine(labels), np.asarray(labels.data).shape)
            scene = Scene(np.asarray(labels.data), self._grid[0])
            target_xyz = np.asarray(points.data_to_world(points.data[-1]))[-3:][::-1]
        except (MrthermError, ValueError) as exc:
            self.verdict.value = _common.error_text(exc)
            return None
        self.verdict.value = "checking ..."
        self.worker = _window_worker(scene, transducer, target_xyz)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(lambda exc: setattr(self.verdict, "value", _common.error_text(exc)))
        self.worker.start()
        return self.worker

    def _on_done(self, report):
        aff, shape = self._grid
        _common.remove_layers(self.viewer, [ly for ly in _view.layers_of_kind(self.viewer, "window")
                                            if not ly.name.startswith("target")])
        rays = _layers.window_layers(report, _model.volume_bounds_zyx(aff, shape), _model.voxel_sizes_zyx(aff))[:1]
        _common.add_layers(self.viewer, rays)
        self.verdict.value = _text.verdict_line(report)
        self.rules.value = "\n".join(_text.rule_line(r) for r in report["rules"])
        self.report = report


@thread_worker
def _window_worker(scene, transducer, target_xyz):
    from mrtherm.window import check_window
    return check_window(scene, transducer, target_xyz)
