"""Benchmark: `mrtherm run` end to end against a whole-array NumPy script.

Exam: the phantom at 128 x 128 x 12 slices x 100 frames (Siemens int16 phase,
float32 magnitude, .nii.gz). Each contender runs in its own process; the figures
are wall time and peak resident memory (ru_maxrss of that process), best of
``--repeat`` runs. Prints a table; asserts nothing.

    python benchmarks/bench_run.py [--repeat 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "_work")

RUNNER = r"""
import resource, sys, time, runpy
t0 = time.perf_counter()
kind = sys.argv[1]
if kind == "mrtherm":
    from mrtherm.cli import main
    code = main(sys.argv[2:])
else:
    sys.argv = [sys.argv[2]] + sys.argv[3:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    code = 0
wall = time.perf_counter() - t0
print("RESULT", wall, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, code)
"""


def measure(args):
    proc = subprocess.run([sys.executable, "-c", RUNNER] + args, capture_output=True, text=True)
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"benchmark run failed: {proc.stderr[-2000:]}")
    _, wall, rss_mb, code = line[-1].split()
    return float(wall), float(rss_mb)


def io_floor(mag, pha, shape, frames):
    """Seconds to read both inputs whole, and to write the 4-D float32 temperature as .nii and as .nii.gz (level
    1, the default): the floor any implementation pays for the chosen output format (``shape`` and ``frames`` name
    the exam)."""
    import time
    import nibabel as nib
    import numpy as np
    from mrtherm.io import niftiio
    t = time.perf_counter()
    for path in (mag, pha):
        np.asarray(nib.load(path).dataobj)
    read_zlib = time.perf_counter() - t
    read = read_zlib
    if niftiio._isal_igzip() is not None:  # the fast extra: the same files gunzipped by ISA-L
        t = time.perf_counter()
        for path in (mag, pha):
            np.asarray(niftiio.load_nifti(path).dataobj)
        read = min(read_zlib, time.perf_counter() - t)
    # mrtherm's own temperature series (NaN where masked, noise elsewhere): compresses as a real one does
    data = np.asarray(nib.load(os.path.join(WORK, "out_mrtherm", "temperature.nii.gz")).dataobj).transpose(3, 2, 1, 0)
    out = {"read both inputs (nibabel, zlib)": read_zlib, "read both inputs (fastest reader here)": read}
    for name, level in (("write temperature .nii", None), ("write temperature .nii.gz stored (level 0)", 0),
                        ("write temperature .nii.gz level 1", 1)):
        path = os.path.join(WORK, "floor.nii" if level is None else "floor.nii.gz")
        t = time.perf_counter()
        with niftiio.gzip_level(1 if level is None else level):
            niftiio.save_volume(data, np.eye(4), path)
        out[name] = time.perf_counter() - t
        os.remove(path)
    out["floor (.nii.gz level 1)"] = read + out["write temperature .nii.gz level 1"]
    out["floor (.nii.gz stored, --compress 0)"] = read + out["write temperature .nii.gz stored (level 0)"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shape", default="12,128,128")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--keep", action="store_true", help="keep the generated exam in benchmarks/_work")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    import mrtherm
    shape = tuple(int(v) for v in args.shape.split(","))
    exam_dir = os.path.join(WORK, f"exam_{'x'.join(map(str, shape))}x{args.frames}")
    if not os.path.exists(os.path.join(exam_dir, "phantom.json")):
        print(f"writing the benchmark exam {shape} x {args.frames} frames ...", flush=True)
        mrtherm.write_phantom(exam_dir, shape_zyx=shape, voxel_mm=(3.0, 2.0, 2.0), n_frames=args.frames)
    info = json.load(open(os.path.join(exam_dir, "phantom.json")))
    mag, pha = os.path.join(exam_dir, "magnitude.nii.gz"), os.path.join(exam_dir, "phase.nii.gz")
    nb = str(info["baseline_frames"])
    rows = {}
    contenders = {
        "naive NumPy script": ["naive", os.path.join(HERE, "naive_numpy.py"), mag, pha,
                               os.path.join(WORK, "out_naive"), str(info["te_s"]), str(info["b0_t"]), nb],
        "mrtherm run (no figures)": ["mrtherm", "run", "--magnitude", mag, "--phase", pha, "--out",
                                     os.path.join(WORK, "out_mrtherm"), "--baseline-frames", nb, "--drift-order", "1",
                                     "--quiet", "--no-figures", "--backend", "numpy"],
        "mrtherm run (with figures)": ["mrtherm", "run", "--magnitude", mag, "--phase", pha, "--out",
                                       os.path.join(WORK, "out_mrtherm_fig"), "--baseline-frames", nb, "--quiet",
                                       "--backend", "numpy"],
    }
    contenders["mrtherm run (with figures, --compress 0)"] = (
        contenders["mrtherm run (with figures)"][:7] + [os.path.join(WORK, "out_mrtherm_c0")]
        + contenders["mrtherm run (with figures)"][8:] + ["--compress", "0"])
    for name, cmd in contenders.items():
        best = None
        for _ in range(args.repeat):
            wall, rss = measure(cmd)
            best = (wall, rss) if best is None else (min(best[0], wall), min(best[1], rss))
        rows[name] = best
    floor = io_floor(mag, pha, shape, args.frames)
    ref_wall, ref_rss = rows["naive NumPy script"]
    print(f"\nexam: {shape[2]}x{shape[1]}x{shape[0]} slices x {args.frames} frames, "
          f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{'contender':40s} {'wall (s)':>9s} {'peak RSS (MiB)':>15s} {'time ratio':>11s} {'memory ratio':>13s}"
          f" {'x I/O floor':>12s}")
    for name, (wall, rss) in rows.items():
        fl = floor["floor (.nii.gz stored, --compress 0)" if "compress 0" in name else "floor (.nii.gz level 1)"]
        mark = "" if name.startswith("mrtherm") else "-"
        print(f"{name:40s} {wall:9.2f} {rss:15.0f} {wall / ref_wall:11.2f} {rss / ref_rss:13.2f}"
              f" {mark or f'{wall / fl:12.2f}':>12s}")
    for name, seconds in floor.items():
        print(f"{'I/O floor: ' + name:52s} {seconds:6.2f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"shape_zyx": shape, "frames": args.frames, "cpus": os.cpu_count(), "io_floor_s": floor,
                       "rows": {k: {"wall_s": v[0], "peak_rss_mib": v[1]} for k, v in rows.items()}}, fh, indent=2)
    if not args.keep:
        for d in ("out_naive", "out_mrtherm", "out_mrtherm_fig", "out_mrtherm_c0"):
            shutil.rmtree(os.path.join(WORK, d), ignore_errors=True)


if __name__ == "__main__":
    main()
