"""Benchmark: a 16-exam phantom cohort through ``mrtherm batch`` on Dask (printed, not asserted).

Exams: the phantom at 8 x 128 x 128 x 40 frames, 16 seeds. Each scheduler runs every task (``force``) into a fresh
folder: ``sync`` (one after another, the reference), local ``threads`` and ``processes`` with one worker per CPU,
and a dask.distributed ``LocalCluster`` (one single-threaded worker process per CPU). Also checks that every
scheduler gives the same metrics table.

    python benchmarks/bench_cohort.py [--exams 16] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "_work", "cohort")


def write_cohort(n):
    import mrtherm
    rows = []
    for i in range(n):
        folder = os.path.join(WORK, f"exam{i:02d}")
        if not os.path.exists(os.path.join(folder, "phase.nii.gz")):
            mrtherm.write_phantom(folder, shape_zyx=(8, 128, 128), voxel_mm=(3.0, 2.0, 2.0), n_frames=40, seed=100 + i)
        rows.append([f"exam{i:02d}", f"exam{i:02d}/magnitude.nii.gz", f"exam{i:02d}/phase.nii.gz", "8", "true"])
    manifest = os.path.join(WORK, "manifest.csv")
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["exam", "magnitude", "phase", "baseline_frames", "no_figures"])
        w.writerows(rows)
    return manifest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exams", type=int, default=16)
    ap.add_argument("--out")
    args = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    manifest = write_cohort(args.exams)
    from mrtherm.cohort import load_tasks, run_cohort
    tasks = load_tasks(manifest)
    results, tables = {}, {}
    for scheduler in ("sync", "threads", "processes", "LocalCluster"):
        out = os.path.join(WORK, f"out_{scheduler}")
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        if scheduler == "LocalCluster":
            from distributed import Client, LocalCluster
            with LocalCluster(n_workers=os.cpu_count(), threads_per_worker=1, dashboard_address=":0",
                              silence_logs=50) as cluster, Client(cluster) as client:
                started = time.perf_counter()
                rows = run_cohort(tasks, out, client=client, force=True, progress=False)
                results["LocalCluster (start-up excluded)"] = time.perf_counter() - started
        else:
            rows = run_cohort(tasks, out, scheduler=scheduler, force=True, progress=False)
        results[scheduler] = time.perf_counter() - t0
        tables[scheduler] = [(r["exam"], r["status"], r["peak_temperature_c"], r.get("lesion_240_ml")) for r in rows]
    same = all(t == tables["sync"] for t in tables.values())
    lines = [f"host: {platform.machine()}, {os.cpu_count()} CPUs; {args.exams} phantom exams of 128x128x8 x 40 frames",
             f"{'scheduler':34s} {'wall (s)':>9s} {'speed-up':>9s}"]
    for name, wall in results.items():
        lines.append(f"{name:34s} {wall:9.2f} {results['sync'] / wall:9.2f}")
    lines.append(f"every scheduler gave the same metrics (exam, status, peak, lesion volume): {same}")
    print("\n".join(lines))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "cohort_cpu.txt"), "w") as fh:
            fh.write("# python benchmarks/bench_cohort.py\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
