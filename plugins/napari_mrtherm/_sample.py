"""Sample data: the phantom exam processed end to end (thermometry and acoustic window)."""

from __future__ import annotations

import os
import tempfile

from . import _layers, _view

_CACHE = {}


def build_sample(folder) -> str:
    """Write the phantom, run thermometry and the window check into ``folder``; returns the run folder."""
    from mrtherm.demo import run_demo
    run_dir = os.path.join(folder, "run")
    run_demo(folder, dose_levels_cem43_min=(40.0, 240.0), n_elements=128, window_dir=os.path.join(run_dir, "window"),
             figures=False)
    return run_dir


def sample_folder() -> str:
    """The sample's run folder, built once per session in a temporary folder."""
    if "run" not in _CACHE or not os.path.exists(_CACHE["run"]):
        _CACHE["run"] = build_sample(tempfile.mkdtemp(prefix="mrtherm-sample-"))
    return _CACHE["run"]


def phantom_sample():
    """napari sample: anatomy, labels, temperature, dose, lesions and window rays of the phantom."""
    layers = _layers.run_layers(sample_folder())
    _view.install_current()
    return layers
