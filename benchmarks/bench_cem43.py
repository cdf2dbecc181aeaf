"""Exact CEM43 per frame: the two-regime formulation against the one-regime fast path (issue 15).

    python benchmarks/bench_cem43.py [--repeats 20]

128 x 128 x 12 voxels in float64, 3 s frames. "all below 43 C": a frame with no heating (most frames of an exam);
"1 % crossing 43 C": a heating frame. Before: every voxel evaluated both regimes (2 exp + 2 expm1 + masks);
after: one regime per voxel (1 exp + 1 expm1), the split only for voxels whose segment crosses 43 C.
The results are compared bit for bit.
"""

import argparse
import os
import platform
import time

import numpy as np

from mrtherm.thermometry.dose import LN_R_ABOVE, LN_R_BELOW, _regime_piece, cem43_segment


def two_regime(t0, t1, dt_min):
    return _regime_piece(t0, t1, dt_min, LN_R_BELOW, True, np) + _regime_piece(t0, t1, dt_min, LN_R_ABOVE, False, np)


def timed(f, args, repeats):
    f(*args)
    t = time.perf_counter()
    for _ in range(repeats):
        out = f(*args)
    return (time.perf_counter() - t) / repeats, out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    shape = (12, 128, 128)
    cold0, cold1 = 37 + 0.4 * rng.standard_normal(shape), 37 + 0.4 * rng.standard_normal(shape)
    hot0, hot1 = cold0.copy(), cold1.copy()
    n = int(0.01 * cold0.size)
    hot0.ravel()[:n], hot1.ravel()[:n] = 41.0, 55.0
    for name, (t0, t1) in {"all below 43 C": (cold0, cold1), "1 % crossing 43 C": (hot0, hot1)}.items():
        s_old, r_old = timed(two_regime, (t0, t1, 0.05), a.repeats)
        s_new, r_new = timed(cem43_segment, (t0, t1, 0.05), a.repeats)
        print(f"{name:20s} two-regime {s_old * 1e3:6.1f} ms  one-regime {s_new * 1e3:6.1f} ms  "
              f"x{s_old / s_new:4.1f}  identical: {np.array_equal(r_old, r_new)}")
    print("per frame of", shape, "float64; machine:", {"cpu": platform.processor() or platform.machine(),
                                                       "cores": os.cpu_count()})


if __name__ == "__main__":
    main()
