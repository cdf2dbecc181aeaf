"""Benchmark: acoustic-window feasibility map, 1024 elements x 32^3 candidate foci (printed, not asserted).

Scene: the phantom's labels (128 x 128 x 32 slices of 2 x 2 x 1 mm) and a
1024-element spherical cap (R 100 mm, aperture 80 mm) aimed at the tumour. Foci: a
32 x 32 x 32 grid at 1 mm spacing centred on the planned focus (32,768 foci,
33.5 M rays). The NumPy traversal is timed on ``--numpy-foci`` foci and
extrapolated (it is stated as such); the compiled CPU traversal (numba, the ``fast`` extra) and the GPU
kernel are timed on all of them.

    python benchmarks/bench_window.py [--numpy-foci 256] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def single_target(scene, tr, focus, rows):
    """Best of 5 single-target checks (every rule and per-element detail, NumPy); the line to print."""
    from mrtherm.window import check_window
    check_window(scene, tr, focus)
    single = []
    for _ in range(5):
        t0 = time.perf_counter()
        check_window(scene, tr, focus)
        single.append(time.perf_counter() - t0)
    rows["single_target_check_s"] = min(single)
    return (f"single-target check (check_window, every rule and per-element detail, NumPy): "
            f"{min(single):.3f} s best of 5, {tr.n_elements} elements")


def compiled_map(scene, tr, foci, sub, frac_np, rows):
    """The whole map by the compiled CPU traversal (numba), against NumPy on the measured foci; the line."""
    from mrtherm.window.trace_compiled import active_fractions_compiled, numba_available
    if not numba_available():
        return "compiled CPU rows skipped: numba is not installed (pip install 'mrtherm[fast]')"
    n_foci = foci.shape[0]
    t0 = time.perf_counter()
    active_fractions_compiled(scene, tr, foci[:1])
    rows["compiled_first_call_s"] = time.perf_counter() - t0  # numba compiles the kernel
    t0 = time.perf_counter()
    frac_c = active_fractions_compiled(scene, tr, foci)
    rows["compiled_s"] = time.perf_counter() - t0
    idx = np.linspace(0, n_foci - 1, sub.shape[0]).astype(int)
    rows["compiled_numpy_max_abs_diff"] = float(np.max(np.abs(frac_c[idx] - frac_np)))
    return (f"compiled CPU traversal (numba, {os.cpu_count()} threads): {rows['compiled_s']:.1f} s for all "
            f"{n_foci} foci ({rows['rays'] / rows['compiled_s'] / 1e6:.2f} M rays/s) after "
            f"{rows['compiled_first_call_s']:.1f} s of compilation on the first call; "
            f"max |compiled - NumPy| on the measured foci {rows['compiled_numpy_max_abs_diff']:.1e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--numpy-foci", type=int, default=256)
    ap.add_argument("--elements", type=int, default=1024)
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--out")
    args = ap.parse_args()
    import mrtherm
    from mrtherm.backend import cupy_usable
    from mrtherm.window.transducer import spherical_cap
    from mrtherm.window import Scene, active_fractions_numpy

    ph = mrtherm.make_phantom(shape_zyx=(32, 128, 128), voxel_mm=(1.0, 2.0, 2.0), n_frames=1)
    scene = Scene(ph.labels, ph.affine)
    sug = ph.info["transducer_suggestion"]
    tr = spherical_cap(sug["radius_mm"], sug["aperture_mm"], args.elements, sug["focus_world_mm"], sug["axis"])
    g = np.arange(args.grid) - (args.grid - 1) / 2.0
    zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
    foci = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1) + np.asarray(sug["focus_world_mm"])
    n_foci = foci.shape[0]
    rows = {"elements": tr.n_elements, "foci": n_foci, "rays": tr.n_elements * n_foci}
    sub = foci[np.linspace(0, n_foci - 1, min(args.numpy_foci, n_foci)).astype(int)]
    t0 = time.perf_counter()
    frac_np = active_fractions_numpy(scene, tr, sub)
    t_np = time.perf_counter() - t0
    rows["numpy_s_measured"] = t_np
    rows["numpy_foci_measured"] = int(sub.shape[0])
    rows["numpy_s_extrapolated"] = t_np * n_foci / sub.shape[0]
    lines = [f"host: {platform.machine()}, {os.cpu_count()} CPUs; {tr.n_elements} elements x {n_foci} foci "
             f"= {rows['rays'] / 1e6:.1f} M rays through a {scene.shape[2]}x{scene.shape[1]}x{scene.shape[0]} "
             "label volume",
             f"NumPy: {t_np:.2f} s for {sub.shape[0]} foci -> {rows['numpy_s_extrapolated']:.0f} s extrapolated to all "
             f"({rows['rays'] / rows['numpy_s_extrapolated'] / 1e6:.2f} M rays/s)"]
    lines.append(single_target(scene, tr, np.asarray(sug["focus_world_mm"]), rows))
    lines.append(compiled_map(scene, tr, foci, sub, frac_np, rows))
    device = "no usable GPU"
    if cupy_usable():
        import cupy as cp
        import mrtherm_gpu
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        device = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        mrtherm_gpu.raymarch.active_fractions(scene, tr, foci[:64])  # compile + upload
        cp.cuda.get_current_stream().synchronize()
        best = None
        for _ in range(3):
            t0 = time.perf_counter()
            frac = mrtherm_gpu.raymarch.active_fractions(scene, tr, foci)
            cp.cuda.get_current_stream().synchronize()
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        rows["gpu_s"] = best
        idx = np.linspace(0, n_foci - 1, sub.shape[0]).astype(int)
        rows["gpu_numpy_max_abs_diff"] = float(np.max(np.abs(frac[idx] - frac_np)))
        lines.append(f"GPU ({device}): {best:.3f} s for all {n_foci} foci ({rows['rays'] / best / 1e9:.2f} G rays/s); "
                     f"max |GPU - NumPy| on the measured foci {rows['gpu_numpy_max_abs_diff']:.2e}")
    else:
        lines.append("GPU rows skipped: cupy.is_available() is False on this machine")
    rows["device"] = device
    for line in lines:
        print(line)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        tag = device.replace(" ", "_")
        with open(os.path.join(args.out, f"window_bench_{tag}.json"), "w") as fh:
            json.dump(rows, fh, indent=2)
        with open(os.path.join(args.out, f"window_bench_{tag}.txt"), "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
