"""Model-based temperature in bone (``--bioheat``) against the independent phantom of tests/bioheat_phantom.py.

    python benchmarks/bench_bioheat.py [--refinement] [--speed] [--json FILE]

The phantom: a lumbar-like bone (cortical shell 1.2 mm over marrow) under muscle and fat, a focused beam along +y
with its focus on the bone surface, 24 s of power then cooling, its truth from its own Pennes solver converged at
0.25 x 0.5 mm, tissue properties off by up to +-20 % from the model's table, PRF (noise 0.6 C) only in pure muscle.

Accuracy table (default): through ``mrtherm.process(..., bioheat=True)`` with the planning labels on their own
0.5 mm grid and with the image-grid labels only: RMSE in unmeasured voxels within 5 mm of the focus, peak error in
bone, median SD there and the fraction of voxel-frames with the truth inside +-2 SD, RMSE in unmeasured tissue more
than 15 mm away, RMSE in measured voxels against the raw PRF's, and the 240-CEM43 volume over all tissue (PRF alone
for comparison).

``--refinement``: the model alone with the truth's own properties and the known power (nothing fitted), at 2, 1,
0.5 and 0.25 mm: the discretisation error at the bone surface. ``--speed``: ms per frame of the Thermometer with the
model on a 128 x 128 x 12 exam.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import bioheat_phantom  # noqa: E402
import mrtherm  # noqa: E402
from mrtherm.io.labels import LabelTable  # noqa: E402
from mrtherm.thermometry.bioheat import BioheatModel  # noqa: E402
from mrtherm.thermometry.dose import cem43  # noqa: E402

INTENSITY = 4.0e5  # W/m^2 at the focus: true peak 109 C on the fine grid, 81 C on the image grid
WAIST_MM = 3.0  # a wide bone spot (the phantom's beam waist, set before make())
FOCUS, AXIS = (48.0, 48.0, 12.0), (0.0, 1.0, 0.0)


def make_phantom(**kw):
    """The phantom with a 3 mm beam waist and :data:`INTENSITY`."""
    saved, bioheat_phantom.WAIST_MM = bioheat_phantom.WAIST_MM, WAIST_MM
    try:
        return bioheat_phantom.make(focal_intensity_w_m2=INTENSITY, **kw)
    finally:
        bioheat_phantom.WAIST_MM = saved


def save_labels(ph, folder):
    """The phantom's labels as NIfTI files: on the image grid and on their own 0.5 mm grid."""
    import nibabel as nib
    paths = {}
    for name, lab, aff in (("image", ph.labels, ph.affine), ("fine", ph.labels_fine, ph.affine_fine)):
        paths[name] = os.path.join(folder, f"labels_{name}.nii.gz")
        nib.save(nib.Nifti1Image(np.transpose(lab, (2, 1, 0)).astype(np.int16), aff), paths[name])
    return paths


def run_model(ph, labels, **params):
    """``mrtherm.process`` with the model; returns the result and its seconds."""
    exam = mrtherm.load_exam(ph.magnitude, ph.phase_rad, te_s=ph.te_s, b0_t=ph.b0_t, frame_times_s=ph.times_s,
                             affine=ph.affine)
    t0 = time.perf_counter()
    result = mrtherm.process(exam, baseline_frames=ph.n_baseline, labels=labels, bioheat=True,
                             bioheat_beam_axis=AXIS, target_mm=FOCUS, bioheat_focal_radius_mm=WAIST_MM, **params)
    return result, time.perf_counter() - t0


def figures(ph, result):
    """The accuracy figures of one run (module docstring)."""
    model = result.extra_maps["temperature_model.nii.gz"]
    sd = result.extra_maps["temperature_model_sd.nii.gz"]
    prf = np.asarray(result.temperature_c)
    post = slice(ph.n_baseline, None)
    k, j, i = np.indices(ph.labels.shape)
    dist = np.sqrt((2.0 * i - FOCUS[0]) ** 2 + (2.0 * j - FOCUS[1]) ** 2 + (3.0 * k - FOCUS[2]) ** 2)
    body = ph.labels > 0
    measured = np.isfinite(prf[post]).all(axis=0)
    modelled = np.isfinite(model).all(axis=0)
    near, far = body & ~measured & (dist <= 5.0), body & ~measured & modelled & (dist > 15.0)
    bone = np.isin(ph.labels, (5, 6))
    err = (model - ph.truth_c)[post]
    rms = lambda e: float(np.sqrt(np.mean(e ** 2)))  # noqa: E731
    voxel_ml = float(abs(np.linalg.det(ph.affine[:3, :3]))) / 1000.0
    volume = lambda dose: float((np.nan_to_num(dose) >= 240.0).sum() * voxel_ml)  # noqa: E731
    return {"rmse_unmeasured_within_5mm_c": rms(err[:, near]), "voxels_within_5mm": int(near.sum()),
            "peak_error_bone_c": float(np.nanmax(model[:, bone]) - ph.truth_c[:, bone].max()),
            "median_sd_within_5mm_c": float(np.median(sd[post][:, near])),
            "within_2sd_within_5mm": float(np.mean(np.abs(err[:, near]) <= 2 * sd[post][:, near])),
            "within_2sd_modelled": float(np.mean(np.abs(err[:, body & modelled]) <= 2 * sd[post][:, body & modelled])),
            "voxels_beyond_15mm_modelled": int(far.sum()),
            "rmse_unmeasured_beyond_15mm_c": rms(err[:, far]),
            "rmse_measured_model_c": rms(err[:, measured]),
            "rmse_measured_prf_c": rms((prf - ph.truth_c)[post][:, measured]),
            "lesion_240_ml": {"truth": volume(cem43(ph.truth_c, ph.times_s)),
                              "model": volume(result.extra_maps["dose_cem43_model.nii.gz"]),
                              "prf_only": volume(np.asarray(result.dose_cem43_min))},
            "bone_factor": result.report["bioheat"]["fitted_source"]["bone_factor"]}


def refinement(resolutions=(2.0, 1.0, 0.5, 0.25)):
    """The model with the truth's properties and the known power at each resolution: bone peak error (C)."""
    ph = make_phantom(perturbation={})
    native = (ph.labels_fine, ph.affine_fine)
    on = ph.sonication_s
    rows = {}
    for res in resolutions:
        params = mrtherm.ThermometryParams(bioheat=True, bioheat_beam_axis=AXIS, target_mm=FOCUS,
                                           bioheat_resolution_mm=res, bioheat_focal_radius_mm=WAIST_MM).validate()
        model = BioheatModel(ph.labels.shape, ph.affine, ph.labels, LabelTable(), params, native_labels=native)
        temps, t0 = [], time.perf_counter()
        for n, t in enumerate(ph.times_s):
            a, b = (ph.times_s[n - 1], t) if n else (t, t)
            overlap = max(0.0, min(b, on[1]) - max(a, on[0])) / max(b - a, 1e-9)
            temps.append(model.update(np.full(ph.labels.shape, np.nan), 1.0, t, fit=False,
                                      power=INTENSITY / 1e6 * overlap)[0])
        temps = np.stack(temps)
        bone = np.isin(ph.labels, (5, 6))
        rows[f"{res:g} mm"] = {"peak_error_bone_c": float(np.nanmax(temps[:, bone]) - ph.truth_c[:, bone].max()),
                               "rmse_bone_c": float(np.sqrt(np.nanmean((temps - ph.truth_c)[:, bone] ** 2))),
                               "grid": list(model.grid.shape), "seconds": time.perf_counter() - t0}
    return rows


def speed():
    """ms per frame of the Thermometer with the model at 128 x 128 x 12 (bone in the middle)."""
    shape, aff = (12, 128, 128), np.diag([2.0, 2.0, 3.0, 1.0])
    k, j, i = np.indices(shape)
    r = np.hypot(2.0 * i - 128.0, 2.0 * j - 140.0)
    labels = np.full(shape, 3, np.int16)
    labels[r <= 12.0], labels[r < 10.0] = 5, 6
    rng = np.random.default_rng(0)
    frames = [((np.where(labels == 5, 0.0, 100.0) + rng.normal(0, 1, shape)).astype(np.float32),
               rng.normal(0, 0.01, shape).astype(np.float32), True) for _ in range(10)]
    params = mrtherm.ThermometryParams(baseline_frames=3, bioheat=True, bioheat_beam_axis=AXIS,
                                       target_mm=(128.0, 128.0, 18.0))
    th = mrtherm.Thermometer(shape, aff, 0.012, 3.0, frames[:3], params, labels=labels, backend="numpy")
    times = []
    for n, f in enumerate(frames):
        t0 = time.perf_counter()
        th.update(f, 2.5 * n)
        times.append(1e3 * (time.perf_counter() - t0))
    return {"per_frame_ms_median": float(np.median(times[3:])), "model_grid": list(th.bioheat.model.grid.shape)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--refinement", action="store_true")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--json")
    args = p.parse_args()
    out = {"machine": {"cpu": platform.machine(), "cores": os.cpu_count()}}
    ph = make_phantom()
    with tempfile.TemporaryDirectory() as tmp:
        paths = save_labels(ph, tmp)
        for name, path in (("planning labels (0.5 mm)", paths["fine"]), ("image-grid labels", paths["image"])):
            result, seconds = run_model(ph, path)
            out[name] = {**figures(ph, result), "seconds": seconds}
            print(name, json.dumps(out[name], indent=1))
    if args.refinement:
        out["refinement_known_source"] = refinement()
        print("refinement (truth's properties, known power):", json.dumps(out["refinement_known_source"], indent=1))
    if args.speed:
        out["speed_128x128x12"] = speed()
        print("speed:", out["speed_128x128x12"])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
