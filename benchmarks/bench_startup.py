"""Start-up cost: importing mrtherm over its own dependencies, and ``mrtherm --help``.

    python benchmarks/bench_startup.py [--repeats 7]

Each figure is the median wall time of fresh interpreter processes (so nothing is cached in the process; the OS
file cache is warm after the first). "deps" imports numpy, scipy.ndimage and nibabel; "deps + mrtherm" then
touches ``mrtherm.process`` (which loads the thermometry core); "mrtherm" alone is the lazy package import.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

CASES = {
    "python (empty)": [sys.executable, "-c", "pass"],
    "deps (numpy, scipy.ndimage, nibabel)": [sys.executable, "-c", "import numpy, scipy.ndimage, nibabel"],
    "deps + mrtherm.process": [sys.executable, "-c",
                               "import numpy, scipy.ndimage, nibabel, mrtherm; mrtherm.process"],
    "import mrtherm (lazy)": [sys.executable, "-c", "import mrtherm"],
    "mrtherm --help": [sys.executable, "-m", "mrtherm.cli.main", "--help"],
    "mrtherm run --help": [sys.executable, "-m", "mrtherm.cli.main", "run", "--help"],
}


def timed(cmd, repeats):
    subprocess.run(cmd, capture_output=True, check=True)  # warm the file cache
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    res = {name: timed(cmd, a.repeats) for name, cmd in CASES.items()}
    for name, s in res.items():
        print(f"{name:40s} {s * 1e3:7.0f} ms")
    extra = res["deps + mrtherm.process"] - res["deps (numpy, scipy.ndimage, nibabel)"]
    print(f"{'mrtherm over its dependencies':40s} {extra * 1e3:7.0f} ms  (goal <= 150 ms)")
    print(f"{'mrtherm --help over bare python':40s} {(res['mrtherm --help'] - res['python (empty)']) * 1e3:7.0f} ms"
          f"  (goal: --help < 300 ms)")
    print("machine:", {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "python": platform.python_version()})


if __name__ == "__main__":
    main()
