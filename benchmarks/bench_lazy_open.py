"""Benchmark: opening a large run in napari's layer builder, lazily (printed, not asserted).

A run folder with a 256 x 256 x 32 x 400-frame temperature series (float32, 3.4 GB in memory; noise with a heated
spot, NaN outside a body mask, .nii.gz written with mrtherm's writer) plus its dose, anatomy and report. In a fresh
process: the time and peak memory to build every layer (``napari_mrtherm._layers.run_layers``, what the reader
does), then to read frame 0, the last frame (first time: indexed_gzip decompresses up to it once), a middle frame
(back: from a seek point), and the dose accumulated up to the last frame.

    python benchmarks/bench_lazy_open.py [--frames 400] [--shape 32,256,256] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "_work")

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
sys.path.insert(0, sys.argv[2])
from napari_mrtherm import _layers
import dask.array, napari.utils.colormaps  # what a running napari has imported already
imports = time.perf_counter() - t0
t0 = time.perf_counter()
layers = _layers.run_layers(sys.argv[1])
opened = time.perf_counter() - t0
rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
temp = next(l for l in layers if l[1]["metadata"]["mrtherm"]["kind"] == "temperature")
dose = next(l for l in layers if l[1]["metadata"]["mrtherm"]["kind"] == "dose")
out = {"open_s": opened, "imports_s": imports, "rss_after_open_mib": rss_open, "lazy": hasattr(temp[0], "dask")}
n = temp[0].shape[0]
for name, k in (("frame_0_s", 0), ("last_frame_first_time_s", n - 1), ("middle_frame_s", n // 2),
                ("last_frame_again_s", n - 1)):
    t = time.perf_counter(); np.asarray(temp[0][k]); out[name] = time.perf_counter() - t
t = time.perf_counter(); np.asarray(dose[0][n - 1]); out["dose_up_to_last_frame_s"] = time.perf_counter() - t
t = time.perf_counter(); np.asarray(dose[0][n // 2 + 7]); out["dose_middle_after_s"] = time.perf_counter() - t
t = time.perf_counter(); np.asarray(dose[0][n // 2 + 8]); out["dose_next_frame_s"] = time.perf_counter() - t
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print("RESULT " + json.dumps(out))
"""


def write_run(folder, shape, frames):
    """A run folder with a large temperature series (written frame by frame: memory stays flat)."""
    import numpy as np
    from mrtherm.io import niftiio
    os.makedirs(folder, exist_ok=True)
    nz, ny, nx = shape
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    zz, yy, xx = np.mgrid[:nz, :ny, :nx]
    body = ((yy - ny / 2) ** 2 + (xx - nx / 2) ** 2) < (0.45 * ny) ** 2
    spot = np.exp(-((yy - ny / 2) ** 2 + (xx - nx / 2) ** 2) / 40.0 - (zz - nz / 2) ** 2 / 8.0)
    rng = np.random.default_rng(0)
    times = [3.0 * t for t in range(frames)]
    path = os.path.join(folder, "temperature.nii.gz")
    w = niftiio.FrameWriter(path, shape, frames, aff, frame_time_s=3.0)
    for t in range(frames):
        heat = 40.0 * spot * min(1.0, max(0.0, (t - 20) / 100.0))
        frame = np.where(body, 37.0 + heat + 0.5 * rng.standard_normal(shape), np.nan).astype(np.float32)
        w.write(frame)
    w.close()
    niftiio.save_volume(np.zeros(shape, np.float32), aff, os.path.join(folder, "anatomy.nii.gz"))
    niftiio.save_volume(np.zeros(shape), aff, os.path.join(folder, "dose_cem43.nii.gz"))
    report = {"mrtherm_version": "bench", "results": {"hottest_voxel_zyx": [nz // 2, ny // 2, nx // 2],
                                                     "time_of_peak_s": times[-1]},
              "exam": {"frame_times_s": times, "voxel_volume_ml": 0.012},
              "parameters": {"dose_levels_cem43_min": [240.0]}, "alarms": []}
    with open(os.path.join(folder, "report.json"), "w") as fh:
        json.dump(report, fh)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--shape", default="32,256,256")
    ap.add_argument("--out")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    folder = os.path.join(WORK, f"lazy_{'x'.join(map(str, shape))}x{args.frames}")
    if not os.path.exists(os.path.join(folder, "report.json")):
        print(f"writing the benchmark run {shape} x {args.frames} frames ...", flush=True)
        write_run(folder, shape, args.frames)
    size_gb = os.path.getsize(os.path.join(folder, "temperature.nii.gz")) / 1e9
    proc = subprocess.run([sys.executable, "-c", CHILD, folder, os.path.join(HERE, "..", "plugins")],
                          capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"benchmark failed: {proc.stderr[-2000:]}")
    r = json.loads(line[-1][7:])
    nz, ny, nx = shape
    lines = [f"host: {platform.machine()}, {os.cpu_count()} CPUs; series {nx}x{ny}x{nz} x {args.frames} frames "
             f"float32 = {nx * ny * nz * args.frames * 4 / 1e9:.1f} GB in memory, {size_gb:.1f} GB .nii.gz",
             f"open (every layer built, lazy={r['lazy']}): {r['open_s']:.2f} s, after {r['imports_s']:.2f} s of "
             f"imports a running napari has already done (numpy, dask.array, napari colormaps); "
             f"peak RSS {r['rss_after_open_mib']:.0f} MiB",
             f"frame 0: {r['frame_0_s']:.3f} s; last frame, first time: {r['last_frame_first_time_s']:.2f} s; "
             f"middle frame after it: {r['middle_frame_s']:.3f} s; last frame again: {r['last_frame_again_s']:.3f} s",
             f"dose accumulated up to the last frame, asked at once (the background pass laying checkpoints "
             f"runs meanwhile): {r['dose_up_to_last_frame_s']:.2f} s; then a middle frame: "
             f"{r['dose_middle_after_s']:.2f} s, the next one: {r['dose_next_frame_s']:.2f} s; "
             f"peak RSS at the end {r['peak_rss_mib']:.0f} MiB"]
    print("\n".join(lines))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "lazy_open_cpu.txt"), "w") as fh:
            fh.write("# python benchmarks/bench_lazy_open.py\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
