"""npe2 reader: mrtherm output folders, their report.json, window reports, single mrtherm maps and DICOM
thermometry folders (magnitude and phase, placed in world mm, read lazily).

Every reader also installs the operator view (:mod:`._view`) on the viewer that opens the path.
Returns None for paths that are not mrtherm's, so napari can try other readers.
"""

from __future__ import annotations

import os

from . import _layers, _view


def get_reader(path):
    """A reader function for mrtherm paths; None for anything else (napari then tries other readers)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = os.fspath(path)
    if os.path.isdir(path):
        kind = _layers.is_mrtherm_report(os.path.join(path, "report.json"))
        if kind == "run":
            return _with_view(lambda p: _layers.run_layers(p))
        if kind == "window":
            return _with_view(lambda p: _layers.window_layers(os.path.join(p, "report.json")))
        if kind == "evaluation":
            return _with_view(_layers.evaluation_layers)
        if _layers.looks_like_dicom_folder(path):
            return _with_view(_layers.dicom_layers)
        return None
    name = os.path.basename(path)
    if name.endswith(".json"):
        kind = _layers.is_mrtherm_report(path)
        if kind == "run":
            return _with_view(lambda p: _layers.run_layers(os.path.dirname(p)))
        if kind == "window":
            return _with_view(_layers.window_layers)
        if kind == "evaluation":
            return _with_view(lambda p: _layers.evaluation_layers(os.path.dirname(p)))
        return None
    if name in _layers.m.MRTHERM_MAPS or (name.startswith(("lesion_", "evaluation_")) and name.endswith(".nii.gz")):
        return _with_view(_layers.map_layer)
    return None


def _with_view(read):
    def reader(path):
        layers = read(os.fspath(path[0] if isinstance(path, (list, tuple)) else path))
        _view.install_current()
        return layers
    return reader
