"""``mrtherm evaluate``: a run's predicted ablation against a non-perfused-volume (NPV) segmentation.

Each prediction is thresholded on the run's own grid first: the dose map for each dose level
(ablated where ``dose >= level``), and for a cryoablation run the minimum-temperature map for each
lethal isotherm (ablated where ``tmin <= isotherm``); voxels the run could not measure (NaN) count
as not predicted. That mask is carried to the NPV grid by fractional occupancy
(:mod:`mrtherm.evaluation.occupancy`): each NPV voxel is sampled by a regular sub-grid of points (an
odd number per axis, at least 5 and two per run voxel its edge spans, so that the occupancy never
ties at one half), each point goes through both affines to the run voxel that contains it (nearest
voxel; outside the run grid counts as not predicted), and the NPV voxel is predicted when at least
half of its points are. This keeps the lesion's volume: the NPV-grid volume is the run-grid volume
(exactly when NPV voxels nest in run voxels, else up to the run voxels' staircase). Interpolating
the dose map and then thresholding does not: the dose is exponential in temperature and changes by
orders of magnitude across a run voxel at the lesion edge, the chord of such a convex profile lies
above it, so the interpolated map crosses the level outside the run's lesion all round and the
lesion grows (+20 to +35 % on NPV grids 2x finer). Per prediction: volumes (mL, on the NPV grid and
on the run's own grid), Dice, HD95 and signed surface distances
(:mod:`mrtherm.evaluation.metrics`), and a map on the NPV grid: 1 predicted and non-perfused, 2
predicted but perfused (under-treatment: the tissue the prediction called ablated survived), 3
non-perfused but not predicted (over-treatment: ablation beyond the prediction).
"""

from __future__ import annotations

import json
import os

import numpy as np

from mrtherm.errors import InputFileError
from mrtherm.evaluation import occupancy
from mrtherm.evaluation.metrics import dice, hd95, signed_surface_distances
from mrtherm.geometry import voxel_size_xyz_mm, voxel_size_zyx_mm, voxel_volume_ml
from mrtherm.io import niftiio

AGREE, UNDER, OVER = 1, 2, 3


def _run_maps(run_dir):
    """``[(name, kind, threshold, map_zyx, affine)]`` of a run folder's predictions."""
    report_path = os.path.join(run_dir, "report.json")
    try:
        with open(report_path, encoding="utf-8") as fh:
            report = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputFileError(report_path, f"not an mrtherm run folder ({exc.__class__.__name__})") from None
    preds = []
    cryo = report.get("cryo")
    if cryo:
        tmin, affine = niftiio.load_3d(os.path.join(run_dir, "tmin.nii.gz"), "minimum temperature")
        for iso in cryo["isotherms_c"]:
            preds.append((f"isotherm_{iso:g}c", "tmin <=", float(iso), tmin.transpose(2, 1, 0), affine))
    else:
        dose, affine = niftiio.load_3d(os.path.join(run_dir, "dose_cem43.nii.gz"), "dose")
        levels = report.get("parameters", {}).get("dose_levels_cem43_min") or [240.0]
        for lev in levels:
            preds.append((f"{float(lev):g}", "dose >=", float(lev), dose.transpose(2, 1, 0), affine))
    return report, preds


def predicted_on_run_grid(volume_zyx, kind, threshold):
    """The prediction on the run's own grid: ``dose >= level`` or ``tmin <= isotherm``; NaN is not predicted.

    Parameters
    ----------
    volume_zyx : ndarray, shape (z, y, x)
        Dose (CEM43 min) or minimum temperature (C), NaN where the run could not measure.
    kind : {"dose >=", "tmin <="}
    threshold : float

    Returns
    -------
    ndarray of bool, shape (z, y, x)

    Examples
    --------
    >>> predicted_on_run_grid(np.array([[[300.0, 240.0, 100.0, np.nan]]]), "dose >=", 240.0).tolist()
    [[[True, True, False, False]]]
    """
    vol = np.asarray(volume_zyx, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        pred = vol >= threshold if kind == "dose >=" else vol <= threshold
    return pred & np.isfinite(vol)


def evaluate(run_dir, npv_path):
    """Metrics and maps of every prediction of ``run_dir`` against the NPV.

    Parameters
    ----------
    run_dir : str
        A folder written by ``mrtherm run`` (report.json, dose_cem43.nii.gz; tmin.nii.gz for cryo).
    npv_path : str
        3-D NIfTI, non-zero where not perfused (any grid).

    Returns
    -------
    report : dict
        report.json of the evaluation (``npv_ml``, ``levels``).
    maps : dict of str to ndarray
        ``evaluation_<level>.nii.gz`` maps on the NPV grid, ``(z, y, x)`` uint8.
    figure : dict
        What :func:`write_figure` draws.
    """
    run_report, preds = _run_maps(os.fspath(run_dir))
    npv_xyz, npv_affine = niftiio.load_3d(npv_path, "NPV")
    npv = np.asarray(npv_xyz).transpose(2, 1, 0) > 0.5
    if not npv.any():
        raise InputFileError(npv_path, "the NPV segmentation is empty")
    spacing, vox_ml = voxel_size_zyx_mm(npv_affine), voxel_volume_ml(npv_affine)
    levels, maps, fig_preds = {}, {}, {}
    resampling = None
    for name, kind, threshold, volume, affine in preds:
        on_run = predicted_on_run_grid(volume, kind, threshold)
        n_sub = occupancy.subsamples_per_axis(affine, npv_affine)
        pred = occupancy.mask_on_grid(on_run, affine, npv.shape, npv_affine, n_sub)
        resampling = resampling or _resampling_report(affine, npv_affine, n_sub)
        signed = signed_surface_distances(pred, npv, spacing)
        levels[name] = {
            "prediction": f"{kind} {threshold:g}", "lesion_ml": float(pred.sum() * vox_ml),
            "lesion_ml_run_grid": float(on_run.sum() * voxel_volume_ml(affine)),
            "dice": dice(pred, npv), "hd95_mm": hd95(pred, npv, spacing),
            "signed_surface_distance_mm": _summary(signed),
            "under_treatment_ml": float((pred & ~npv).sum() * vox_ml),
            "over_treatment_ml": float((npv & ~pred).sum() * vox_ml)}
        label = np.zeros(npv.shape, np.uint8)
        label[pred & npv], label[pred & ~npv], label[npv & ~pred] = AGREE, UNDER, OVER
        maps[f"evaluation_{name}.nii.gz"] = label
        fig_preds[name] = pred
    report = {"npv_ml": float(npv.sum() * vox_ml), "levels": levels,
              "map_values": {"1": "predicted and non-perfused", "2": "predicted, perfused (under-treatment)",
                             "3": "non-perfused, not predicted (over-treatment)"},
              "rules": __doc__.split("\n\n", 1)[1].replace("\n", " ").strip(),
              "resampling": resampling,
              "inputs": {"run": os.path.abspath(run_dir), "npv": os.path.abspath(npv_path)},
              "grid": {"shape_zyx": list(npv.shape), "affine": npv_affine.tolist(), "voxel_mm_zyx": list(spacing)},
              "run_mrtherm_version": run_report.get("mrtherm_version")}
    return report, maps, {"npv": npv, "preds": fig_preds, "affine": npv_affine}


def _resampling_report(run_affine, npv_affine, n_sub):
    return {
        "method": "threshold on the run grid, then fractional occupancy onto the NPV grid",
        "rule": ("each NPV voxel is sampled by a regular sub-grid of points; each point is mapped through the NPV "
                 "and run affines to the run voxel containing it (nearest voxel; outside the run grid = not "
                 "predicted); the NPV voxel is predicted when >= 0.5 of its points are"),
        "occupancy_threshold": 0.5,
        "lesion_ml_run_grid": ("the run's own lesion, all of its grid: it exceeds lesion_ml where the lesion "
                               "reaches beyond the NPV's field of view"),
        "subsamples_per_axis_xyz": [int(n) for n in n_sub],
        "run_voxel_mm_xyz": [float(v) for v in voxel_size_xyz_mm(run_affine)],
        "npv_voxel_mm_xyz": [float(v) for v in voxel_size_xyz_mm(npv_affine)],
        "why": ("keeps the predicted volume: lesion_ml (NPV grid) matches lesion_ml_run_grid up to the run voxels' "
                "staircase. Linear interpolation of the dose map followed by the threshold grows the lesion: "
                "CEM43 is exponential in temperature, and the interpolated chord of such a steep convex profile "
                "crosses the level outside the run's own lesion (+20 to +35 % on NPV grids 2x finer)."),
    }


def _summary(d):
    if not d.size:
        return None
    return {"mean": float(d.mean()), "median": float(np.median(d)), "p5": float(np.percentile(d, 5)),
            "p95": float(np.percentile(d, 95)), "min": float(d.min()), "max": float(d.max())}


def write_figure(path, figure):
    """The NPV and each prediction's contour on the slice with the most NPV.

    Parameters
    ----------
    path : str
        PNG path.
    figure : dict
        From :func:`evaluate`.
    """
    from mrtherm.thermometry.figures import new_figure, show_slice, slice_extent_mm  # noqa: PLC0415
    npv, affine = figure["npv"], figure["affine"]
    z = int(np.argmax(npv.sum(axis=(1, 2))))
    fig, ax = new_figure((6, 5.5), dpi=100)
    im = show_slice(ax, npv[z].astype(float), affine, cmap="Greys", vmin=0, vmax=1.5)
    extent = slice_extent_mm(affine, npv[z].shape)
    for i, (name, pred) in enumerate(figure["preds"].items()):
        if pred[z].any():
            ax.contour(pred[z].astype(float), levels=[0.5], colors=[f"C{i}"], origin="lower", extent=extent)
        ax.plot([], [], color=f"C{i}", label=f"predicted {name}")
    ax.set_title(f"NPV (grey) and predicted ablation, slice {z}")
    ax.legend(fontsize=8, loc="upper right")
    fig.colorbar(im, ax=ax, label="non-perfused (1)")
    fig.tight_layout()
    fig.savefig(path)
