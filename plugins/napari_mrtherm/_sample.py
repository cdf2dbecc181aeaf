"""Sample data: the phantom exam processed end to end (thermometry and acoustic window)."""

from __future__ import annotations

import os
import tempfile

from . import _model

_CACHE = {}


def build_sample(folder) -> str:
    """Write the phantom, run thermometry and the window check into ``folder``; returns the run folder."""
    import mrtherm
    from mrtherm.cli.window import write_window_outputs
    from mrtherm.window.transducer import spherical_cap
    from mrtherm.window import check_window, load_labels
    paths = mrtherm.write_phantom(os.path.join(folder, "exam"))
    ph_info = __import__("json").load(open(paths["info"], encoding="utf-8"))
    exam = mrtherm.load_exam(paths["magnitude"])
    run_dir = os.path.join(folder, "run")
    result = mrtherm.process(exam, baseline_frames=ph_info["baseline_frames"], labels=paths["labels"],
                             dose_levels_cem43_min=(40.0, 240.0))
    result.save(run_dir, figures=False)
    sug = ph_info["transducer_suggestion"]
    tr = spherical_cap(sug["radius_mm"], sug["aperture_mm"], 128, sug["focus_world_mm"], sug["axis"],
                       sug["frequency_hz"], "phantom plan")
    report = check_window(load_labels(paths["labels"]), tr, sug["focus_world_mm"])
    os.makedirs(os.path.join(run_dir, "window"), exist_ok=True)
    write_window_outputs(os.path.join(run_dir, "window"), report)
    return run_dir


def sample_folder() -> str:
    if "run" not in _CACHE or not os.path.exists(_CACHE["run"]):
        _CACHE["run"] = build_sample(tempfile.mkdtemp(prefix="mrtherm-sample-"))
    return _CACHE["run"]


def phantom_sample():
    """napari sample: anatomy, labels, temperature, dose, lesions and window rays of the phantom."""
    return _model.run_layers(sample_folder())
