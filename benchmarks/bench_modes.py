"""Milliseconds per frame of each phase-reference mode, as a live treatment runs it: one Thermometer.update per frame.

    python benchmarks/bench_modes.py [--size 128x128x12] [--frames 24] [--backends numpy,cupy] [--json FILE]

The exam is the breathing phantom (4 mm motion, 4.5 s period, 0.6 rad breathing B0) at the given frame size, 12
baseline frames; every mode (mean, library, hybrid, referenceless) runs the same frames. The figure is the median
and the 95th percentile of the wall time of ``update`` after the baseline (the device synchronised, the temperature
on the host, as a live service needs it). Without a usable GPU the CuPy rows are skipped and said so.
"""

import argparse
import json
import os
import platform
import time

import numpy as np

import mrtherm
from mrtherm.backend import cupy_usable, to_numpy

MODES = ("mean", "library", "hybrid", "referenceless")


def per_frame_ms(ph, mode, backend, n_base=12):
    """Wall ms of each post-baseline update (median, p95) and the engine that ran."""
    frames = [(ph.magnitude[t], ph.phase_rad[t], True) for t in range(ph.magnitude.shape[0])]
    params = mrtherm.ThermometryParams(baseline_frames=n_base, reference=mode)
    th = mrtherm.Thermometer(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t, frames[:n_base], params,
                             labels=ph.labels, backend=backend)
    times = []
    for t, frame in enumerate(frames):
        t0 = time.perf_counter()
        temp = th.update(frame, ph.frame_times_s[t])
        to_numpy(temp)  # on the host: what a live frame needs (and a device synchronisation)
        if t >= n_base:
            times.append(1e3 * (time.perf_counter() - t0))
    return {"median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)),
            "frames": len(times), "engine": th.engine.name}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="128x128x12", help="XxYxZ")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--backends", default="numpy,cupy")
    p.add_argument("--json")
    args = p.parse_args()
    nx, ny, nz = (int(v) for v in args.size.split("x"))
    ph = mrtherm.make_phantom(shape_zyx=(nz, ny, nx), n_frames=args.frames, baseline_frames=12,
                              sonication_s=(40.0, 60.0), motion_mm=4.0, breath_period_s=4.5, b0_breath_rad=0.6)
    out = {"size": args.size, "frames": args.frames, "machine": {"cpu": platform.machine(), "cores": os.cpu_count()},
           "rows": []}
    for backend in args.backends.split(","):
        if backend == "cupy" and not cupy_usable():
            print("cupy: no usable GPU, skipped")
            continue
        for mode in MODES:
            row = {"backend": backend, "mode": mode, **per_frame_ms(ph, mode, backend)}
            out["rows"].append(row)
            print(f"{args.size} {backend:5s} {mode:13s}: median {row['median_ms']:7.1f} ms, p95 {row['p95_ms']:7.1f} ms "
                  f"per frame over {row['frames']} frames ({row['engine']})", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
