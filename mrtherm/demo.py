"""The demonstration run: phantom, thermometry, errors against the ground truth, acoustic window.

One runner for ``mrtherm demo``, the napari sample data and the notebooks.
"""

from __future__ import annotations

import json
import os

import numpy as np


def truth_comparison(result, truth_temperature_c, truth_dose) -> dict:
    """Errors of a run against the phantom's ground truth, over reliable voxels (every frame).

    Parameters
    ----------
    result : ThermometryResult
        The run; its temperature is read back from ``temperature.nii.gz`` when not held in memory.
    truth_temperature_c : ndarray, shape (t, z, y, x)
        Phantom's true temperature, C.
    truth_dose : ndarray, shape (z, y, x)
        Phantom's true CEM43 dose, min.

    Returns
    -------
    dict
        ``rmse_c``, ``bias_c``, ``rmse_heated_c`` (voxels > 5 C above body temperature; None when none),
        ``predicted_sd_c_median``, ``peak_c``, ``truth_peak_reliable_c`` (C) and the 240 CEM43 lesion volume
        measured and true (``lesion_240_ml``, ``truth_lesion_240_ml`` over reliable voxels, mL) and the true lesion
    over every voxel (``truth_lesion_240_all_ml``: includes bone and fat, where PRF cannot measure).
    """
    import nibabel as nib  # noqa: PLC0415
    temp = result.temperature_c
    if temp is None:
        temp = np.asarray(nib.load(result.temperature_path).dataobj, dtype=np.float32).transpose(3, 2, 1, 0)
    mask = result.host("mask").astype(bool)
    err = temp[:, mask] - truth_temperature_c[:, mask]
    heated = truth_temperature_c[:, mask] - result.params.body_temp_c > 5.0
    vox_ml = result.report["exam"]["voxel_volume_ml"]
    return {
        "rmse_c": float(np.sqrt(np.mean(err ** 2))),
        "bias_c": float(np.mean(err)),
        "rmse_heated_c": float(np.sqrt(np.mean(err[heated] ** 2))) if heated.any() else None,
        "predicted_sd_c_median": float(np.nanmedian(result.host("temperature_sd_theory_c")[mask])),
        "peak_c": float(np.nanmax(result.host("tmax_c"))),
        "truth_peak_reliable_c": float(truth_temperature_c[:, mask].max()),
        "lesion_240_ml": result.lesion_volumes_ml.get(240.0),
        "truth_lesion_240_ml": float(((truth_dose >= 240.0) & mask).sum() * vox_ml),
        "truth_lesion_240_all_ml": float((truth_dose >= 240.0).sum() * vox_ml),
    }


def run_demo(out, *, backend="auto", progress=False, dose_levels_cem43_min=(240.0,), n_elements=None,
             window_dir=None, figures=True, log=None) -> dict:
    """Write the phantom under ``out/exam``, process it into ``out/run`` and check its acoustic window.

    Parameters
    ----------
    out : path
    backend : {"auto", "numpy", "cupy"}
    dose_levels_cem43_min : tuple of float, lesion levels of the run
    n_elements : int, optional; transducer elements (default: the phantom's suggestion)
    window_dir : path, optional; where the window outputs go (default ``out/window``)
    figures : bool, write the run's figures
    log : callable, optional; receives progress lines (``print`` for the command line)

    Returns
    -------
    dict with ``paths`` (phantom files), ``info`` (phantom.json), ``exam``, ``result``, ``comparison``
    (:func:`truth_comparison`), ``window`` (the window report) and ``run_dir``, ``window_dir``.
    """
    import nibabel as nib  # noqa: PLC0415
    from mrtherm.io.exam import load_exam  # noqa: PLC0415
    from mrtherm.phantom import write_phantom  # noqa: PLC0415
    from mrtherm.thermometry.params import ThermometryParams  # noqa: PLC0415
    from mrtherm.app.process import process_to_folder  # noqa: PLC0415
    log = log or (lambda *_a: None)
    out = os.path.abspath(os.fspath(out))
    log("1/2 writing the synthetic lumbar bone-ablation exam ...")
    paths = write_phantom(os.path.join(out, "exam"), phase_format="siemens")
    with open(paths["info"], encoding="utf-8") as fh:
        info = json.load(fh)
    log(f"    {info['shape_tzyx'][0]} frames of {info['shape_tzyx'][1:]} (z, y, x), TE {info['te_s'] * 1e3:g} ms, "
        f"B0 {info['b0_t']:g} T, SNR {info['snr_muscle']:g} (muscle), one wrap = {info['celsius_per_wrap']:.1f} C, "
        "phase stored as Siemens int16 (slope 2, intercept -4096)")
    log("2/2 thermometry (baseline, temporal unwrap, drift, PRF, CEM43) ...")
    exam = load_exam(paths["magnitude"])  # phase partner, TE and B0 from the sidecars
    params = ThermometryParams(baseline_frames=info["baseline_frames"], dose_levels_cem43_min=tuple(dose_levels_cem43_min))
    run_dir = os.path.join(out, "run")
    result = process_to_folder(exam, run_dir, params, labels=paths["labels"], backend=backend, progress=progress,
                               figures=figures)
    truth_t = np.asarray(nib.load(paths["truth_temperature"]).dataobj, dtype=np.float32).transpose(3, 2, 1, 0)
    truth_d = np.asarray(nib.load(paths["truth_dose"]).dataobj, dtype=np.float64).transpose(2, 1, 0)
    window, window_dir = _window(paths, info, out, n_elements, window_dir)
    return {"paths": paths, "info": info, "exam": exam, "result": result, "run_dir": run_dir,
            "comparison": truth_comparison(result, truth_t, truth_d), "window": window, "window_dir": window_dir}


def _window(paths, info, out, n_elements, window_dir):
    from mrtherm.window import check_window, load_labels, spherical_cap  # noqa: PLC0415
    from mrtherm.window.outputs import write_window_outputs  # noqa: PLC0415
    sug = info["transducer_suggestion"]
    transducer = spherical_cap(sug["radius_mm"], sug["aperture_mm"], n_elements or sug["n_elements"],
                               sug["focus_world_mm"], sug["axis"], sug["frequency_hz"], "phantom plan")
    transducer.save(os.path.join(out, "exam", "transducer.json"))
    window = check_window(load_labels(paths["labels"]), transducer, sug["focus_world_mm"])
    window_dir = window_dir or os.path.join(out, "window")
    os.makedirs(window_dir, exist_ok=True)
    write_window_outputs(window_dir, window, transducer=transducer)
    return window, window_dir
