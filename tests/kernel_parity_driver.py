"""Run in a separate process with cudacpu's fakecupy first on sys.path: the fused CUDA engine, unmodified, against
the NumPy array engine on the same frames, for one option branch. Prints one JSON line of maximum differences.

    python kernel_parity_driver.py CUDACPU_DIR ORDER POLAR AUTO HOST_FRAMES [CORRUPT]

With CORRUPT = 1, 2 % of the voxels of a baseline frame and of two consecutive dynamic frames carry a corrupt
sample (NaN, +inf, -inf in magnitude or phase -- in the real or imaginary part for complex frames -- or a zero
magnitude), as corrupt slices and reconstruction glitches produce: no measurement in that frame, for both engines.
"""

import json
import sys

cudacpu, order, polar, auto, host = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1", \
    sys.argv[5] == "1"
corrupt = len(sys.argv) > 6 and sys.argv[6] == "1"
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
# per-frame validity: a patch inside the heated spot goes dark (below the floor) in frames 3-4 and comes back in
# frame 5 past a wrap (re-anchored to its tracked neighbours); a patch drops to a fifth of its reference (the
# fraction rule) in frame 2; a patch is dark in the reference itself (never valid); a patch with no tracked
# neighbour in its 5 x 5 window goes dark and comes back (re-anchored to no wrap)
mag[3:5, :, 7:9, 17:19] = 4.0
mag[2, :, 2:4, 30:33] *= 0.2
mag[4, :, 0:6, 34:40] = 2.0
mag[5, :, 2:3, 36:37] = 90.0
mask = np.ones(shape, bool)
mask[:, 0, :] = False
ref = mask.copy()
ref[:, 5:11, 13:24] = False
s_ref = (mag[0] * np.exp(1j * phase[0])).astype(np.complex64)
s_ref[:, 13:15, 30:34] *= 0.05  # dark reference: never valid
CORRUPT_FRAMES = (1, 3, 4)  # a baseline frame, then two consecutive dynamic frames
crng = np.random.default_rng(99 + order)
hits = {t: crng.random(shape) < (0.02 if corrupt else 0.0) for t in CORRUPT_FRAMES}
kinds = {t: crng.integers(0, 4, size=shape) for t in CORRUPT_FRAMES}  # NaN, +inf, -inf, zero magnitude
in_first = {t: crng.random(shape) < 0.5 for t in CORRUPT_FRAMES}  # magnitude (real part) or phase (imaginary)


def corrupted(t, a, b):
    """Frame t's parts with its corrupt samples."""
    if t not in hits:
        return a, b
    val = np.choose(kinds[t], [np.nan, np.inf, -np.inf, 0.0]).astype(np.float32)
    zero = kinds[t] == 3
    a = np.where(hits[t] & (in_first[t] | zero), val, a).astype(np.float32)
    if not polar:  # complex: a zero "magnitude" is a zero signal
        b = np.where(hits[t] & zero, 0.0, b)
    b = np.where(hits[t] & ~in_first[t] & ~zero, val, b).astype(np.float32)
    return a, b


config = EngineConfig(mask=mask, ref=ref, s_ref=s_ref, auto=auto, outlier_rad=0.3, to_celsius=-8.7,
                      body_temp_c=37.0, heated_c=3.0, valid_floor=10.0, valid_fraction=0.3)
engines = {"numpy": ArrayEngine(np, DriftModel(shape, order, np), config),
           "cuda": FusedEngine(None, DriftModel(shape, order, np), config)}
diffs = {"stats": 0.0, "fallback_stats": 0.0, "temperature": 0.0, "dose_rel": 0.0, "tmax": 0.0, "base_sum": 0.0,
         "validity_mismatch": 0, "invalid_voxel_frames": 0, "reanchored_voxel_frames": 0}
temps = {}
for t in range(nt):
    if polar:
        a, b = mag[t], phase[t]
    else:
        s = mag[t] * np.exp(1j * phase[t])
        a, b = s.real, s.imag
    a, b = corrupted(t, a.astype(np.float32), b.astype(np.float32))
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
    (va, ra), (vb, rb) = (engines["numpy"].frame_validity(),
                          tuple(cp.asnumpy(v) for v in engines["cuda"].frame_validity()))
    diffs["validity_mismatch"] += int(np.sum(np.asarray(va) != vb) + np.sum(np.asarray(ra) != rb))
    diffs["invalid_voxel_frames"] += int(np.sum(mask & ~np.asarray(va)))
    diffs["reanchored_voxel_frames"] += int(np.sum(np.asarray(ra)))
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
tn, tc = np.asarray(engines["numpy"].tmax), cp.asnumpy(engines["cuda"].tmax)
assert np.array_equal(np.isnan(tn), np.isnan(tc))
diffs["tmax"] = float(np.nanmax(np.abs(tn - tc)[mask]))
diffs["never_valid"] = int(np.sum(mask & np.isnan(tn)))
for name in ("valid_frames", "base_count"):
    diffs[f"{name}_mismatch"] = int(np.sum(np.asarray(getattr(engines["numpy"], name))
                                           != cp.asnumpy(getattr(engines["cuda"], name))))
# the dark patch came back past a wrap: its final temperature agrees with its tracked neighbours'
final = np.asarray(out["numpy"][1])
diffs["patch_vs_neighbours_c"] = float(abs(np.mean(final[:, 7:9, 17:19]) - np.mean(final[:, 6:10, 15:17])))
# the voxels corrupt in the last corrupt frame and measured again after it: back at the temperature of the
# uncorrupted voxels with the same heat (re-anchored to their tracked neighbours, never a whole wrap, 55 C, off)
last_heat = heat[-1]
back = hits[CORRUPT_FRAMES[-1]] & mask & np.isfinite(final)
special = np.zeros(shape, bool)
for zs, ys, xs in ((slice(None), slice(7, 9), slice(17, 19)), (slice(None), slice(2, 4), slice(30, 33)),
                   (slice(None), slice(0, 6), slice(34, 40)), (slice(None), slice(2, 3), slice(36, 37)),
                   (slice(None), slice(13, 15), slice(30, 34))):
    special[zs, ys, xs] = True
diffs["corrupt_voxels"] = int(sum(int(np.sum(h & mask)) for h in hits.values()))
errors = [0.0]
clean = mask & ~special & np.isfinite(final)
for h in hits.values():
    clean &= ~h
for z, y, x in zip(*np.nonzero(back & ~special)):  # against the clean voxels of the same heat in its 3 x 3 window
    ys, xs = slice(max(y - 1, 0), y + 2), slice(max(x - 1, 0), x + 2)
    near = clean[z, ys, xs] & (last_heat[z, ys, xs] == last_heat[z, y, x])
    if near.any():
        errors.append(float(abs(final[z, y, x] - np.mean(final[z, ys, xs][near]))))
diffs["corrupt_back_error_c"] = max(errors)
diffs["base_sum"] = float(np.max(np.abs(np.asarray(engines["numpy"].base_sum) - cp.asnumpy(engines["cuda"].base_sum))))
print(json.dumps(diffs))
