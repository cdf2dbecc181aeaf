"""Phase references on free-breathing and still phantoms: accuracy against the truth and CPU cost per frame.

    python benchmarks/bench_reference.py [--json FILE]

For each phantom and mode (mean, library, auto): RMSE in PRF tissue during heating, peak-temperature error,
240-CEM43 lesion volume over the truth at image positions (measurable voxels), the same over the truth in
tissue coordinates, false-lesion volume (lesion voxels where the truth dose is below 1 CEM43), and ms per frame
of :func:`mrtherm.process` (NumPy engine, setup included).
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


def figures(ph, res, seconds):
    heating = ph.frame_times_s >= ph.info["sonication_s"][0]
    temp = np.asarray(res.temperature_c)[heating]
    truth = ph.truth_temperature_c[heating]
    sel = np.isfinite(temp) & np.isin(ph.labels, TISSUE)[None]
    vox_ml = float(abs(np.linalg.det(ph.affine[:3, :3]))) / 1000.0
    dose = np.asarray(res.dose_cem43_min)
    measurable = np.isfinite(dose)
    lesion = np.nan_to_num(dose) >= 240
    tissue_truth = ph.truth_dose_tissue_cem43_min if ph.truth_dose_tissue_cem43_min is not None \
        else ph.truth_dose_cem43_min
    return {"rmse_c": float(np.sqrt(np.mean((temp[sel] - truth[sel]) ** 2))),
            "peak_error_c": float(np.nanmax(res.tmax_c) - ph.truth_temperature_c.max()),
            "lesion_over_image_truth": float(lesion.sum() / max(((ph.truth_dose_cem43_min >= 240) & measurable).sum(), 1)),
            "lesion_over_tissue_truth": float(lesion.sum() / max((tissue_truth >= 240).sum(), 1)),
            "false_lesion_ml": float((lesion & (ph.truth_dose_cem43_min < 1.0)).sum() * vox_ml),
            "ms_per_frame": 1e3 * seconds / ph.magnitude.shape[0],
            "reference_used": res.report["reference"]["mode"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json")
    a = p.parse_args()
    rows = []
    for name, kw in PHANTOMS.items():
        ph = mrtherm.make_phantom(**kw)
        exam = mrtherm.load_exam(magnitude=ph.magnitude, phase=ph.phase_rad, te_s=ph.te_s, b0_t=ph.b0_t,
                                 frame_times_s=ph.frame_times_s, affine=ph.affine)
        for mode in ("mean", "library", "auto"):
            t = time.perf_counter()
            res = mrtherm.process(exam, mrtherm.ThermometryParams(baseline_frames=16, reference=mode),
                                  labels=ph.labels, backend="numpy")
            f = figures(ph, res, time.perf_counter() - t)
            rows.append({"phantom": name, "mode": mode, "sigma_t_c": ph.info["predicted_sd_muscle_c"], **f})
            print(f"{name:24s} {mode:8s} ({f['reference_used']:7s}) RMSE {f['rmse_c']:6.2f} C "
                  f"({f['rmse_c'] / ph.info['predicted_sd_muscle_c']:4.1f} sigma_T)  peak err {f['peak_error_c']:+8.2f} C  "
                  f"lesion x{f['lesion_over_image_truth']:5.2f} (image) x{f['lesion_over_tissue_truth']:5.2f} (tissue)  "
                  f"false {f['false_lesion_ml']:6.3f} mL  {f['ms_per_frame']:5.1f} ms/frame")
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    print("machine:", machine)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"machine": machine, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
