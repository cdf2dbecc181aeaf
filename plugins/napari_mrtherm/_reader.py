"""npe2 reader: mrtherm output folders, their report.json, window reports, single mrtherm maps and DICOM
thermometry folders (magnitude and phase, placed in world mm, read lazily)."""

from __future__ import annotations

import os

from . import _model


def get_reader(path):
    """A reader function for mrtherm paths; None for anything else (napari then tries other readers)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = os.fspath(path)
    if os.path.isdir(path):
        if _model.is_mrtherm_report(os.path.join(path, "report.json")) == "run":
            return _read_run
        if _model.is_mrtherm_report(os.path.join(path, "report.json")) == "window":
            return _read_window
        if _model.looks_like_dicom_folder(path):
            return _read_dicom
        return None
    name = os.path.basename(path)
    if name.endswith(".json"):
        kind = _model.is_mrtherm_report(path)
        if kind == "run":
            return lambda p: _read_run(os.path.dirname(_first(p)))
        if kind == "window":
            return _read_window
        return None
    if name in _model.MRTHERM_MAPS or (name.startswith("lesion_") and name.endswith(".nii.gz")):
        return _read_map
    return None


def _first(p):
    return p[0] if isinstance(p, (list, tuple)) else p


def _read_run(path):
    return _model.run_layers(_first(path))


def _read_window(path):
    p = _first(path)
    if os.path.isdir(p):
        p = os.path.join(p, "report.json")
    return _model.window_layers(p)


def _read_dicom(path):
    return _model.dicom_layers(_first(path))


def _read_map(path):
    return _model.map_layer(_first(path))
