"""Water-fat separated multi-echo thermometry against single-echo PRF on the same multi-echo exam (printed table).

    python benchmarks/bench_waterfat.py [--speed] [--json FILE]

The exam is tests/waterfat_phantom.py (fat fraction 0-1 in columns, heat centred on the 0.5 column, a 6 Hz local
field bump in the 0.7 column, SNR 60 per echo, 6 echoes 1.2-7.2 ms at 3 T). Single-echo: ``mrtherm.process`` on
each echo's magnitude and phase alone (drift order 1, default reference). Figures over the frames after the
baseline: fraction of water-fraction >= 0.3 voxels reported, RMSE there and in mixed voxels (0.3-0.8), mean error in
heated mixed voxels, peak error, 240-CEM43 lesion voxels over the truth's (on the voxels each method reports).
``--speed`` (``--speed-only``: only that): also ms per frame at 128x128x12 with 6 echoes through
:class:`mrtherm.Thermometer` (the water-fat fit, dose, Tmax and watch: what every mode runs per frame), on
``--backend`` (numpy or cupy; the temperature is copied to the host inside the timing, so a GPU figure includes the
synchronisation).
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import waterfat_phantom  # noqa: E402
import mrtherm  # noqa: E402
from mrtherm.thermometry.dose import cem43  # noqa: E402
from mrtherm.thermometry.waterfat import WaterFatThermometer  # noqa: E402


def figures(ph, temps):
    """The table's figures of one method's (t, z, y, x) temperatures."""
    wf = 1.0 - ph.fat_fraction
    err = (temps - ph.truth_c)[ph.n_baseline:]
    water, mixed = wf >= 0.3, (wf >= 0.3) & (wf <= 0.8)
    heated = ph.truth_c[-1] > 40.0
    rep = np.isfinite(temps[-1])
    truth_lesion = cem43(ph.truth_c, ph.times_s) >= 240
    est_lesion = cem43(np.where(np.isfinite(temps), temps, 37.0), ph.times_s) >= 240
    rms = lambda sel: float(np.sqrt(np.nanmean(err[:, sel & rep] ** 2))) if (sel & rep).any() else None  # noqa: E731
    return {"reported_fraction_wf_ge_0_3": float(rep[water].mean()), "rmse_c": rms(water), "rmse_mixed_c": rms(mixed),
            "bias_heated_mixed_c": float(np.nanmean(err[:, mixed & heated & rep])) if (mixed & heated & rep).any()
            else None,
            "peak_error_c": float(np.nanmax(temps) - ph.truth_c.max()),
            "lesion_ratio": float(est_lesion[rep].sum() / max(truth_lesion[rep].sum(), 1))}


def single_echo(ph, n):
    """``mrtherm.process`` on echo ``n`` alone."""
    ex = mrtherm.load_exam(np.abs(ph.echoes[:, n]).astype(np.float32), np.angle(ph.echoes[:, n]).astype(np.float32),
                           te_s=float(ph.te_s[n]), b0_t=ph.b0_t, frame_time_s=3.0,
                           affine=np.diag([ph.voxel_mm[2], ph.voxel_mm[1], ph.voxel_mm[0], 1.0]))
    res = mrtherm.process(ex, baseline_frames=ph.n_baseline)
    return np.asarray(res.temperature_c)


def speed(backend="numpy"):
    """ms per frame at 128x128x12, 6 echoes, through the Thermometer on ``backend``."""
    ph = waterfat_phantom.make(shape=(12, 128, 128), n_frames=10, n_baseline=4)
    aff = np.diag([ph.voxel_mm[2], ph.voxel_mm[1], ph.voxel_mm[0], 1.0])
    params = mrtherm.ThermometryParams(baseline_frames=4, water_fat=True)
    t0 = time.perf_counter()
    th = mrtherm.Thermometer(ph.echoes.shape[2:], aff, ph.te_s, ph.b0_t, list(ph.echoes[:4]), params,
                             backend=backend)
    base = time.perf_counter() - t0
    times = []
    for t in range(len(ph.echoes)):
        frame = th.to_device(ph.echoes[t])  # the upload is the receiver's (live: while the next frame arrives)
        t1 = time.perf_counter()
        mrtherm.backend.to_numpy(th.update(frame, ph.times_s[t]))
        times.append(1e3 * (time.perf_counter() - t1))
    return {"backend": th.backend_used, "baseline_fit_s": base, "per_frame_ms_median": float(np.median(times[4:]))}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--speed", action="store_true")
    p.add_argument("--json")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy", help="--speed: where the fits run")
    p.add_argument("--speed-only", action="store_true", help="only the per-frame cost (no accuracy table)")
    args = p.parse_args()
    if args.speed_only:
        result = speed(args.backend)
        print("speed 128x128x12, 6 echoes:", result)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump({"speed_128x128x12_6_echoes": result, "machine": {"cores": os.cpu_count()}}, fh, indent=1)
        return
    ph = waterfat_phantom.make()
    th = WaterFatThermometer(list(ph.echoes[:ph.n_baseline]), ph.te_s, ph.b0_t, ph.voxel_mm)
    rows = {"water-fat (6 echoes)": figures(ph, np.stack([th.update(e) for e in ph.echoes]))}
    rows["water-fat (6 echoes)"]["fat_fraction_max_error"] = float(np.abs(th.base.fat_fraction - ph.fat_fraction).max())
    for n in range(len(ph.te_s)):
        rows[f"single echo {n + 1} (TE {1e3 * ph.te_s[n]:.1f} ms)"] = figures(ph, single_echo(ph, n))
    out = {"rows": rows, "machine": {"cpu": platform.machine(), "cores": os.cpu_count()}}
    if args.speed:
        out["speed_128x128x12_6_echoes"] = speed(args.backend)
    keys = ["reported_fraction_wf_ge_0_3", "rmse_c", "rmse_mixed_c", "bias_heated_mixed_c", "peak_error_c",
            "lesion_ratio"]
    print("| method | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for name, f in rows.items():
        print(f"| {name} | " + " | ".join(fmt(f[k]) for k in keys) + " |")
    if args.speed:
        print("speed:", out["speed_128x128x12_6_echoes"])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
