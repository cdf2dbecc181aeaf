"""Run in a separate process with cudacpu's fakecupy first on sys.path: the fused CUDA engine, unmodified, against
the NumPy array engine on the same frames, for one option branch. Prints one JSON line of maximum differences.

    python kernel_parity_driver.py CUDACPU_DIR ORDER POLAR AUTO HOST_FRAMES
"""

import json
import sys

cudacpu, order, polar, auto, host = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1", \
    sys.argv[5] == "1"
sys.path.insert(0, f"{cudacpu}/fakecupy")
sys.path.insert(0, cudacpu)

import numpy as np  # noqa: E402

import cupy as cp  # noqa: E402  (fakecupy)
from mrtherm.thermometry.drift import DriftModel, solve_drift  # noqa: E402
from mrtherm.thermometry.engine import ArrayEngine, EngineConfig  # noqa: E402
from mrtherm_gpu.thermometry import FusedEngine  # noqa: E402

rng = np.random.default_rng(order * 8 + polar * 4 + auto * 2 + host)
shape = (2, 16, 40)  # 640 pixels per slice: several blocks, a partial last block
nt = 6
yy, xx = np.mgrid[-1:1:16j, -1:1:40j]
mag = 80 + 40 * rng.random((nt,) + shape)
heat = np.zeros((nt,) + shape)
heat[3:, :, 6:10, 15:22] = np.array([0.5, 2.0, 4.5])[:, None, None, None]  # rad, past one wrap at the end
heat[3:, :, 12:15, 2:8] = 1.0  # inside the drift reference: an outlier the automatic fit excludes, every order
phase = (0.1 * xx - 0.07 * yy + 0.03 * xx * yy)[None, None] * np.arange(1, nt + 1)[:, None, None, None] - heat
phase = phase + 0.02 * rng.standard_normal(phase.shape)
phase = np.angle(np.exp(1j * phase))
mask = np.ones(shape, bool)
mask[:, 0, :] = False
ref = mask.copy()
ref[:, 5:11, 13:24] = False
s_ref = (mag[0] * np.exp(1j * phase[0])).astype(np.complex64)
config = EngineConfig(mask=mask, ref=ref, s_ref=s_ref, auto=auto, outlier_rad=0.3, to_celsius=-8.7,
                      body_temp_c=37.0, heated_c=3.0)
engines = {"numpy": ArrayEngine(np, DriftModel(shape, order, np), config),
           "cuda": FusedEngine(None, DriftModel(shape, order, np), config)}
diffs = {"stats": 0.0, "fallback_stats": 0.0, "temperature": 0.0, "dose_rel": 0.0, "tmax": 0.0, "base_sum": 0.0}
temps = {}
for t in range(nt):
    if polar:
        a, b = mag[t], phase[t]
    else:
        s = mag[t] * np.exp(1j * phase[t])
        a, b = s.real, s.imag
    a, b = a.astype(np.float32), b.astype(np.float32)
    out, fallback = {}, {}
    for name, eng in engines.items():
        fa, fb = (a, b) if (name == "numpy" or host) else (cp.asarray(a), cp.asarray(b))
        stats = eng.pass1(fa, fb, polar)
        # the statistics without the outlier exclusion, asked (as the Thermometer asks) before pass2
        fallback[name] = eng.fallback_stats() if auto else None
        coeffs, _ = solve_drift(*stats, eng.model.k if hasattr(eng, "model") else DriftModel(shape, order, np).k)
        temp = eng.pass2(coeffs, None if t == 0 else 0.05, t < 2)
        out[name] = (stats, np.array(cp.asnumpy(temp) if name == "cuda" else temp))
    if auto:
        fa, fb = fallback["numpy"], fallback["cuda"]
        scale = np.maximum(fa[0][:, :1], 1.0)
        diffs["fallback_stats"] = max(diffs["fallback_stats"], float(np.max(np.abs(fa[0] - fb[0]) / scale)),
                                      float(np.max(np.abs(fa[1] - fb[1]) / scale)),
                                      float(np.max(np.abs(fa[2] - fb[2]))))
        # they differ from the fit's own wherever the exclusion removed a voxel (the heated spot)
        differs = not np.array_equal(fa[2], out["numpy"][0][2])
        diffs["fallback_differs"] = bool(diffs.get("fallback_differs") or differs)
    (sa, ta), (sb, tb) = out["numpy"], out["cuda"]
    # normal equations in units of the weight sum: packed / sum(w) is dimensionless, rhs / sum(w) a mean phase (rad)
    scale = np.maximum(sa[0][:, :1], 1.0)
    diffs["stats"] = max(diffs["stats"], float(np.max(np.abs(sa[0] - sb[0]) / scale)),
                         float(np.max(np.abs(sa[1] - sb[1]) / scale)), float(np.max(np.abs(sa[2] - sb[2]))))
    ok = np.isfinite(ta)
    assert np.array_equal(ok, np.isfinite(tb))
    diffs["temperature"] = max(diffs["temperature"], float(np.max(np.abs(ta[ok] - tb[ok]))))
dn, dc = np.asarray(engines["numpy"].dose), cp.asnumpy(engines["cuda"].dose)
diffs["dose_rel"] = float(np.max(np.abs(dn - dc)[mask] / np.maximum(dn[mask], 1e-12)))
diffs["tmax"] = float(np.nanmax(np.abs(np.asarray(engines["numpy"].tmax) - cp.asnumpy(engines["cuda"].tmax))[mask]))
diffs["base_sum"] = float(np.max(np.abs(np.asarray(engines["numpy"].base_sum) - cp.asnumpy(engines["cuda"].base_sum))))
print(json.dumps(diffs))
