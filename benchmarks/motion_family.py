"""The breathing-bone phantom family (tests/breathing_phantoms.py, written independently of mrtherm) through every
reference mode: coverage of the tissue at the cortex, peak error, lesion ratio in tissue coordinates, warnings.

    python benchmarks/motion_family.py [--modes auto,library,hybrid,referenceless] [--cases 0,1,...] [--labels]
                                       [--out benchmarks/results]

Figures (per case and mode):
- ``cover``: fraction of (cortex-band voxel, heated frame) pairs with a finite temperature in tissue
  coordinates (the band: soft tissue within one voxel of the cortex in the reference position);
- ``peak_err_c``: max Tmax - truth peak, C (signed);
- ``lesion_ratio``: 240-CEM43 volume over the truth's (framewise exact CEM43, tissue coordinates);
- ``band_err_c``: RMS temperature error on the measured band voxels in heated frames;
- ``warnings``: how many blind-spot warnings report.json gives (``trust``: heating next to unmeasured voxels,
  the target or its margin not measured).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import mrtherm  # noqa: E402
from breathing_phantoms import case_id, family, make_breathing_exam  # noqa: E402


def figures(ex, res):
    """The per-run figures against the phantom truth (see the module docstring)."""
    temp = np.asarray(res.temperature_c)
    heated = np.asarray(ex.heated_frames)
    band = np.asarray(ex.cortex_band_ref)
    measured = np.isfinite(temp[heated])[:, band]
    err = (temp[heated] - ex.temperature_tissue_c[heated])[:, band]
    tmax = np.asarray(res.tmax_c)
    dose = np.nan_to_num(np.asarray(res.dose_cem43_min))
    lesion_ml = float((dose >= 240).sum() * ex.voxel_ml)
    truth_ml = float(ex.lesion_tissue_ml[240])
    warn = res.report["trust"]["blind_spots"]
    return {"cover": float(measured.mean()), "peak_err_c": float(np.nanmax(tmax) - ex.peak_temperature_c),
            "lesion_ratio": lesion_ml / truth_ml if truth_ml else float("nan"), "lesion_ml": lesion_ml,
            "truth_ml": truth_ml, "band_err_c": float(np.sqrt(np.nanmean(err[measured] ** 2))) if measured.any()
            else float("nan"), "warnings": len(warn),
            "used": res.report["reference"]["decision"]["used"],
            "registered": res.report["reference"]["registration"]["applied"]}


def run_case(params, mode, labels, **extra):
    ex = make_breathing_exam(**params, **extra)
    exam = mrtherm.load_exam(magnitude=ex.magnitude, phase=ex.phase_rad, te_s=ex.te_s, b0_t=ex.b0_t,
                             frame_times_s=ex.frame_times_s, affine=ex.affine)
    t0 = time.perf_counter()
    res = mrtherm.process(exam, mrtherm.ThermometryParams(baseline_frames=ex.n_baseline, reference=mode),
                          labels=ex.labels_ref if labels else None)
    out = figures(ex, res)
    out["seconds"] = time.perf_counter() - t0
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="auto,library,hybrid,referenceless")
    ap.add_argument("--cases", default=None, help="indices into family() (default all)")
    ap.add_argument("--labels", action="store_true", help="give the reference-position labels to the run")
    ap.add_argument("--heat-fwhm-mm", type=float, default=8.0, help="in-plane FWHM of the heating (8 mm: a lesion "
                    "of about 1 mL as in the exams that found the problem)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    fam = family()
    idx = range(len(fam)) if args.cases is None else [int(v) for v in args.cases.split(",")]
    rows = []
    for i in idx:
        for mode in args.modes.split(","):
            f = run_case(fam[i], mode, args.labels, heat_fwhm_mm=args.heat_fwhm_mm)
            rows.append({"case": case_id(fam[i]), "mode": mode, **f})
            print(f"{case_id(fam[i]):28s} {mode:13s} used={f['used']:13s} cover={f['cover']:.3f} "
                  f"peak_err={f['peak_err_c']:+.2f} C lesion={f['lesion_ml']:.3f}/{f['truth_ml']:.3f} mL "
                  f"({f['lesion_ratio']:.2f}) band_rms={f['band_err_c']:.2f} C warn={f['warnings']} "
                  f"{f['seconds']:.1f} s", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "motion_family.json"), "w") as fh:
            json.dump(rows, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
