"""Latency of ``mrtherm live``: last image of a frame received over DICOM -> its outputs and checkpoint written.

A real pynetdicom client sends a synthetic Siemens treatment to an in-process storage service on 127.0.0.1,
one frame at a time (the next frame after the previous one is written, as at 3-5 s per clinical frame), and
the service's own per-frame latency figures (report.json ``latency_ms``) are printed. Also the memory (RSS) of
the process every 100 frames of a long small-frame run (``--soak N``).

    python benchmarks/bench_live.py [--sizes 128x128x12,256x256x16] [--frames 15] [--soak 0] [--json FILE]
"""

import argparse
import json
import os
import platform
import sys
import tempfile

import pydicom

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from live_tools import (associate, free_port, make_treatment, report, rss_mb, scanner_order, start_live,  # noqa: E402
                        stop_live, wait_frames)



def run(shape_zyx, n_frames, backend, soak=False):
    """Send a one-sonication treatment frame by frame to ``mrtherm live`` (own process); its latency figures."""
    with tempfile.TemporaryDirectory() as tmp:
        src, _ = make_treatment(os.path.join(tmp, "dicom"), n_sonications=1, shape_zyx=shape_zyx, n_frames=n_frames,
                                oblique=False)
        datasets = [pydicom.dcmread(p) for p in scanner_order(src)]
        per_frame = 2 * shape_zyx[0]
        out, port = os.path.join(tmp, "out"), free_port()
        proc = start_live(port, out, "--backend", backend, "--baseline-frames", "3", "--slices", str(shape_zyx[0]),
                          "--quiet")
        assoc = associate(port)
        rss = []
        for k in range(n_frames):
            for ds in datasets[k * per_frame:(k + 1) * per_frame]:
                assert int(assoc.send_c_store(ds).Status) == 0
            if k + 1 >= 3:
                wait_frames(out, k + 1, poll_s=0.002)
            if soak and (k + 1) % 100 == 0:
                rss.append((k + 1, round(rss_mb(proc.pid), 1)))
        assoc.release()
        r = report(out)
        stop_live(proc)
    lat = r["latency_ms"]
    return {"shape_zyx": list(shape_zyx), "frames": n_frames, "backend": r["parameters"].get("backend", backend),
            "latency_ms": {k: lat[k] for k in ("median", "p95", "max")}, "frames_measured": lat["frames"],
            "latency_definition": lat["definition"], "rss_mb": rss}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="128x128x12,256x256x16", help="XxYxZ frame sizes")
    p.add_argument("--frames", type=int, default=15)
    p.add_argument("--backend", default="numpy")
    p.add_argument("--soak", type=int, default=0, help="also N frames of 16x16x1, RSS every 100 frames")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()
    results = []
    for size in a.sizes.split(","):
        x, y, z = (int(v) for v in size.split("x"))
        r = run((z, y, x), a.frames, a.backend)
        results.append(r)
        lat = r["latency_ms"]
        print(f"{size} ({a.backend}): latency median {lat['median']:.1f} ms, p95 {lat['p95']:.1f} ms, max "
              f"{lat['max']:.1f} ms over {r['frames_measured']} frames")
    if a.soak:
        r = run((1, 16, 16), a.soak, a.backend, soak=True)
        results.append(r)
        print(f"soak 16x16x1, {a.soak} frames: RSS MB every 100 frames {r['rss_mb']}")
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "python": platform.python_version()}
    print("machine:", machine)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"machine": machine, "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
