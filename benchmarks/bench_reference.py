"""Phase references on free-breathing and still phantoms: accuracy against the truth and CPU cost per frame.

    python benchmarks/bench_reference.py [--json FILE]

For each phantom and mode (mean, library, referenceless, hybrid, auto; library also matched on the bellows
signal): RMSE in PRF tissue during heating, in C and over the noise-predicted sigma_T of each voxel
(``sqrt(1 + 1/N) sigma / (|S| k)`` from the phantom's noise SD and the hand formula for k, N = 16), peak-temperature
error, 240-CEM43 lesion volume over the truth (in tissue coordinates, the first frame's position, for the
breathing phantoms; on the voxels the output measures), false-lesion volume (lesion voxels where the truth dose is
below 1 CEM43), inf count, and ms per frame of :func:`mrtherm.process` (NumPy engine, setup included).
"""

import argparse
import json
import os
import platform
import time

import numpy as np

import mrtherm

TISSUE = (1, 3, 4, 12)
PHANTOMS = {
    "still 128x128x8": dict(n_frames=50, baseline_frames=16, sonication_s=(51.0, 71.0)),
    "breathing 4 mm, 4.5 s": dict(n_frames=50, baseline_frames=16, sonication_s=(51.0, 71.0), motion_mm=4.0,
                                  breath_period_s=4.5, b0_breath_rad=0.6),
    "breathing 2 mm, 4.0 s": dict(n_frames=50, baseline_frames=16, sonication_s=(51.0, 71.0), motion_mm=2.0,
                                  breath_period_s=4.0, b0_breath_rad=0.3),
    "breathing 6 mm, 5.2 s": dict(n_frames=50, baseline_frames=16, sonication_s=(51.0, 71.0), motion_mm=6.0,
                                  breath_period_s=5.2, b0_breath_rad=0.8),
}


MODES = ("mean", "library", "library+bellows", "referenceless", "hybrid", "auto")


def sigma_t_truth(ph, n_base=16):
    """Noise-predicted temperature SD per voxel, from the phantom's noise SD and the PRF constant by hand."""
    k = 2 * np.pi * 42.577478e6 * 0.01e-6 * ph.b0_t * ph.te_s  # rad per C
    return np.sqrt(1 + 1 / n_base) * ph.info["noise_sigma"] / (k * np.maximum(ph.magnitude.mean(axis=0), 1e-9))


def figures(ph, res, seconds):
    heating = ph.frame_times_s >= ph.info["sonication_s"][0]
    temp = np.asarray(res.temperature_c)[heating]
    registered = res.report["reference"]["registration"]["applied"]  # then every map is in tissue coordinates
    truth_t = ph.truth_temperature_tissue_c if registered else ph.truth_temperature_c
    truth = truth_t[heating]
    sel = np.isfinite(temp) & np.isin(ph.labels, TISSUE)[None]
    err = temp - truth
    vox_ml = float(abs(np.linalg.det(ph.affine[:3, :3]))) / 1000.0
    dose = np.asarray(res.dose_cem43_min)
    measured = np.isfinite(dose)
    lesion = np.nan_to_num(dose) >= 240
    tissue_truth = ph.truth_dose_tissue_cem43_min if ph.truth_dose_tissue_cem43_min is not None \
        else ph.truth_dose_cem43_min
    return {"rmse_c": float(np.sqrt(np.mean(err[sel] ** 2))),
            "rmse_over_sigma_t": float(np.sqrt(np.mean((err / sigma_t_truth(ph)[None])[sel] ** 2))),
            "peak_error_c": float(np.nanmax(res.tmax_c) - truth_t.max()),
            "lesion_ratio": float(lesion.sum() / max(((tissue_truth >= 240) & measured).sum(), 1)),
            "lesion_ml": float(lesion.sum() * vox_ml),
            "false_lesion_ml": float((lesion & (tissue_truth < 1.0)).sum() * vox_ml),
            "inf_voxels": int(np.isinf(dose).sum()),
            "ms_per_frame": 1e3 * seconds / ph.magnitude.shape[0],
            "reference_used": res.report["reference"]["mode"],
            "registered": bool(res.report["reference"]["registration"]["applied"])}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json")
    p.add_argument("--modes", help="comma-separated subset of " + ",".join(MODES))
    a = p.parse_args()
    rows = []
    for name, kw in PHANTOMS.items():
        ph = mrtherm.make_phantom(**kw)
        exam = mrtherm.load_exam(magnitude=ph.magnitude, phase=ph.phase_rad, te_s=ph.te_s, b0_t=ph.b0_t,
                                 frame_times_s=ph.frame_times_s, affine=ph.affine)
        for mode in MODES if a.modes is None else a.modes.split(","):
            resp = ph.respiration if mode.endswith("+bellows") else None
            if resp is None and mode.endswith("+bellows"):
                continue
            t = time.perf_counter()
            res = mrtherm.process(exam, mrtherm.ThermometryParams(baseline_frames=16, reference=mode.split("+")[0]),
                                  labels=ph.labels, backend="numpy", respiration=resp)
            f = figures(ph, res, time.perf_counter() - t)
            rows.append({"phantom": name, "mode": mode, **f})
            print(f"{name:22s} {mode:16s} ({f['reference_used']:13s}) RMSE {f['rmse_c']:6.2f} C "
                  f"{f['rmse_over_sigma_t']:5.2f} sigma_T  peak err {f['peak_error_c']:+8.2f} C  "
                  f"lesion x{f['lesion_ratio']:5.2f} ({f['lesion_ml']:.3f} mL)  false {f['false_lesion_ml']:6.3f} mL  "
                  f"inf {f['inf_voxels']}  {f['ms_per_frame']:6.1f} ms/frame", flush=True)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    print("machine:", machine)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"machine": machine, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
