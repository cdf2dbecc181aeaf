"""GPU benchmark: fused CUDA engine against the NumPy path (printed, not asserted).

Exam: the phantom at 256 x 256 x 16 slices x 200 frames. Figures:

- processing time, in-memory arrays: NumPy path; CuPy path from host (NumPy)
  arrays (frames uploaded per frame); CuPy path from device (CuPy) arrays;
- end to end from files (`mrtherm run`, uncompressed .nii so the disk reader
  is not the only thing measured), --backend numpy and --backend cupy;
- fused kernels: bytes they must move per frame / their device time (CUDA
  events), against the measured device-to-device copy bandwidth (bytes read
  + written / time of a 2 GiB copy).

Run on a machine with a GPU (one command):

    python benchmarks/bench_gpu.py --out benchmarks/results

Without a usable GPU the GPU rows are skipped and said so. ``--small`` runs a
64 x 64 x 4 x 20 smoke version.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# Bytes per voxel and frame that the fused kernels must move (see kernels/thermometry.cu):
# pass 1 reads magnitude, phase, S_ref (8), u (4) and flags (1), writes u (4);
# pass 2 reads u (4), flags (1), the previous temperature (4), dose (8), Tmax (4)
# and writes temperature (4), dose (8), Tmax (4). Baseline frames add the sums (2 x 16).
PASS1_BYTES = 4 + 4 + 8 + 4 + 1 + 4
PASS2_BYTES = 4 + 1 + 4 + 8 + 4 + 4 + 8 + 4


def timed(fn, repeat=1):
    best = None
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, out


def copy_bandwidth(cp, nbytes=2 << 30):
    src = cp.ones(nbytes // 4, dtype=cp.float32)
    dst = cp.empty_like(src)
    cp.copyto(dst, src)
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    reps = 10
    for _ in range(reps):
        cp.copyto(dst, src)
    end.record()
    end.synchronize()
    sec = cp.cuda.get_elapsed_time(start, end) / 1000.0 / reps
    return 2.0 * nbytes / sec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true", help="smoke run: 64x64x4 slices x 20 frames")
    ap.add_argument("--out", help="folder for the results JSON/text (named after the device)")
    ap.add_argument("--skip-files", action="store_true", help="skip the end-to-end file runs")
    args = ap.parse_args()

    import mrtherm
    from mrtherm.backend import cupy_usable

    shape, frames = ((4, 64, 64), 20) if args.small else ((16, 256, 256), 200)
    print(f"building the phantom exam {shape[2]}x{shape[1]}x{shape[0]} slices x {frames} frames ...", flush=True)
    ph = mrtherm.make_phantom(shape_zyx=shape, voxel_mm=(2.0, 1.0, 1.0), n_frames=frames)
    kw = dict(te_s=ph.te_s, b0_t=ph.b0_t, frame_times_s=ph.frame_times_s, affine=ph.affine)
    pkw = dict(baseline_frames=5, labels=ph.labels, drift_order=1)
    voxels = int(np.prod(shape))
    rows = {}
    lines = []

    def say(s):
        print(s, flush=True)
        lines.append(s)

    exam_np = lambda: mrtherm.load_exam(ph.magnitude, ph.phase_rad, **kw)  # noqa: E731
    t_np, res_np = timed(lambda: mrtherm.process(exam_np(), backend="numpy", **pkw))
    rows["numpy_in_memory_s"] = t_np
    device = "no usable GPU"
    if cupy_usable():
        import cupy as cp
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        device = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        mrtherm.process(mrtherm.load_exam(ph.magnitude[:8], ph.phase_rad[:8], **{**kw, "frame_times_s":
                        ph.frame_times_s[:8]}), backend="cupy", **pkw)  # warm-up: kernel compilation
        t_host, _ = timed(lambda: mrtherm.process(exam_np(), backend="cupy", **pkw), repeat=3)
        mag_d, ph_d = cp.asarray(ph.magnitude), cp.asarray(ph.phase_rad)

        def dev_run(profile=False):
            r = mrtherm.process(mrtherm.load_exam(mag_d, ph_d, **kw), profile=profile, **pkw)
            cp.cuda.get_current_stream().synchronize()
            return r
        t_dev, _ = timed(dev_run, repeat=3)
        prof = dev_run(profile=True).report["kernel_seconds"]
        bytes_moved = voxels * (frames * (PASS1_BYTES + PASS2_BYTES) + 5 * 32)
        kernel_s = prof["pass1"] + prof["pass2"]
        achieved = bytes_moved / kernel_s
        copy_bw = copy_bandwidth(cp)
        rows.update({"cupy_from_host_arrays_s": t_host, "cupy_from_device_arrays_s": t_dev,
                     "kernel_pass1_s": prof["pass1"], "kernel_pass2_s": prof["pass2"],
                     "kernel_bytes": bytes_moved, "kernel_bandwidth_Bps": achieved, "copy_bandwidth_Bps": copy_bw,
                     "speedup_host_arrays": t_np / t_host, "speedup_device_arrays": t_np / t_dev,
                     "bandwidth_fraction": achieved / copy_bw})
    say(f"device: {device}; host: {platform.machine()}, {os.cpu_count()} CPUs; exam {shape[2]}x{shape[1]}x"
        f"{shape[0]} x {frames} frames ({voxels * frames / 1e6:.0f} M voxel-frames)")
    say(f"NumPy path, in-memory arrays:          {t_np:8.3f} s")
    if "cupy_from_device_arrays_s" in rows:
        say(f"CuPy path, host arrays (upload/frame): {rows['cupy_from_host_arrays_s']:8.3f} s  "
            f"speed-up {rows['speedup_host_arrays']:.1f}x")
        say(f"CuPy path, device arrays:              {rows['cupy_from_device_arrays_s']:8.3f} s  "
            f"speed-up {rows['speedup_device_arrays']:.1f}x")
        say(f"fused kernels: pass1 {rows['kernel_pass1_s'] * 1e3:.2f} ms + pass2 {rows['kernel_pass2_s'] * 1e3:.2f} ms "
            f"for {rows['kernel_bytes'] / 1e9:.2f} GB -> {rows['kernel_bandwidth_Bps'] / 1e12:.2f} TB/s; "
            f"device-to-device copy {rows['copy_bandwidth_Bps'] / 1e12:.2f} TB/s; "
            f"fraction {rows['bandwidth_fraction']:.2f}")
    else:
        say("GPU rows skipped: cupy.is_available() is False on this machine")

    if not args.skip_files:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            exam_dir = os.path.join(tmp, "exam")
            mrtherm.write_phantom(exam_dir, ph, phase_format="radians")
            for name in ("magnitude", "phase"):  # uncompressed copies for the end-to-end runs
                import nibabel as nib
                img = nib.load(os.path.join(exam_dir, f"{name}.nii.gz"))
                nib.save(img, os.path.join(exam_dir, f"{name}.nii"))
            backends = ["numpy"] + (["cupy"] if cupy_usable() else [])
            for be in backends:
                cmd = [sys.executable, "-m", "mrtherm.cli", "run", "--magnitude", os.path.join(exam_dir, "magnitude.nii"),
                       "--phase", os.path.join(exam_dir, "phase.nii"), "--labels", os.path.join(exam_dir, "labels.nii.gz"),
                       "--baseline-frames", "5", "--out", os.path.join(tmp, f"out_{be}"), "--backend", be,
                       "--quiet", "--no-figures"]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True)
                rows[f"end_to_end_files_{be}_s"] = time.perf_counter() - t0
                say(f"end to end from .nii files, --backend {be}: {rows[f'end_to_end_files_{be}_s']:8.2f} s")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        tag = device.replace(" ", "_").replace("/", "_") + ("_small" if args.small else "")
        with open(os.path.join(args.out, f"gpu_bench_{tag}.json"), "w") as fh:
            json.dump({"device": device, "shape_zyx": shape, "frames": frames, **rows}, fh, indent=2)
        with open(os.path.join(args.out, f"gpu_bench_{tag}.txt"), "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
