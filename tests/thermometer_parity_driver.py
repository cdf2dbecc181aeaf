"""Run in a separate process with cudacpu's fakecupy first on sys.path: a whole Thermometer on the fused CUDA engine
(unmodified, on the CPU) against the array engine, on a phantom whose frames carry corrupt samples. Prints one JSON
line per frame kind (polar, complex) of maximum differences.

    python thermometer_parity_driver.py CUDACPU_DIR REPO_ROOT

2 % of the voxels of a baseline frame and of two consecutive dynamic frames carry NaN, +inf, -inf (in magnitude or
phase; real or imaginary part) or a zero magnitude.
"""

import json
import sys

cudacpu, root = sys.argv[1], sys.argv[2]
sys.path[:0] = [cudacpu + "/fakecupy", cudacpu, root + "/tests", root + "/gpu"]

import numpy as np  # noqa: E402

import cupy as cp  # noqa: E402  (fakecupy)
import mrtherm  # noqa: E402
from corrupt_samples import corrupt  # noqa: E402  (tests/, on the path above)
from mrtherm.thermometry import thermometer as thermo  # noqa: E402
from mrtherm_gpu.thermometry import FusedEngine  # noqa: E402


def host(x):
    """A fakecupy array as NumPy."""
    return x.view(np.ndarray) if isinstance(x, cp.ndarray) else x


for _name in ("isfinite", "where", "abs"):  # the CuPy functions the fused engine's protocol reads use
    if not hasattr(cp, _name):
        setattr(cp, _name, lambda *a, f=getattr(np, _name): np.asarray(f(*[host(x) for x in a])).view(cp.ndarray))


class Plugin:
    """The GPU plug-in, serving the fused engine."""

    @staticmethod
    def engine_class(xp, model, config):
        return FusedEngine(xp, model, config)


def corrupt_frames(ph, polar, rng):
    """The phantom's frames with corrupt samples in frames 1, 7 and 8; the corrupt voxels per frame."""
    mag, phase = ph.magnitude.astype(np.float32).copy(), ph.phase_rad.astype(np.float32).copy()
    hits = corrupt(mag, phase, (1, 7, 8), rng)
    if polar:
        return [(mag[t], phase[t], True) for t in range(len(mag))], hits
    with np.errstate(invalid="ignore"):
        s = mag.astype(np.float64) * np.exp(1j * phase.astype(np.float64))
    return [(s[t].real.astype(np.float32), s[t].imag.astype(np.float32), False) for t in range(len(mag))], hits


def run(frames, ph, kind):
    """The Thermometer over every frame on the array or the fused engine."""
    thermo.gpu_plugin = (lambda: Plugin) if kind == "fused" else (lambda: None)
    thermo.is_cupy_namespace = lambda xp: kind == "fused"
    th = thermo.Thermometer(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t, frames[:4],
                            mrtherm.ThermometryParams(baseline_frames=4), backend="numpy")
    temps = np.stack([np.array(host(th.update(f, t))) for f, t in zip(frames, ph.frame_times_s)])
    return th.engine.name, temps, np.array(host(th.dose_cem43_min)), np.array(host(th.tmax_c))


ph = mrtherm.make_phantom(shape_zyx=(2, 32, 32), n_frames=14)
for polar in (True, False):
    frames, hits = corrupt_frames(ph, polar, np.random.default_rng(3))
    (na, ta, da, xa), (nb, tb, db, xb) = run(frames, ph, "array"), run(frames, ph, "fused")
    ok = np.isfinite(ta)
    print(json.dumps({"polar": polar, "engines": [na, nb], "finite_mismatch": int(np.sum(ok != np.isfinite(tb))),
                      "tmax_nan_mismatch": int(np.sum(np.isnan(xa) != np.isnan(xb))),
                      "temperature": float(np.nanmax(np.abs(ta - tb))), "tmax": float(np.nanmax(np.abs(xa - xb))),
                      "dose_rel": float(np.nanmax(np.abs(da - db) / np.maximum(da, 1e-8))),
                      "corrupt_unmeasured": int(sum(np.sum(h & ~np.isfinite(ta[t])) for t, h in hits.items()
                                                    if t >= 4)),
                      "peak_c": float(np.nanmax(xa))}))
