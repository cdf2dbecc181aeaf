"""Motion-robust modes on CuPy against NumPy: matching, blends, referenceless fits, sparse solve, registration.

The reference choice of library / referenceless / hybrid is array-API code run on CuPy arrays; the per-frame
thermometry runs on the fused CUDA engine in every mode (it answers the Engine protocol's reads of its flags and
unwrapped phase). Tolerances:
temperature 1e-3 C, dose rtol 1e-4, identical entry choices, shifts within 1e-4 voxel.
"""

import numpy as np
import pytest

import mrtherm

MOVING = dict(shape_zyx=(4, 64, 64), voxel_mm=(4.0, 3.0, 3.0), n_frames=20, baseline_frames=8,
              sonication_s=(27.0, 45.0), motion_mm=4.0, b0_breath_rad=0.6, seed=5)


@pytest.fixture(scope="module")
def ph():
    return mrtherm.make_phantom(**MOVING)


@pytest.mark.parametrize("mode", ["library", "referenceless", "hybrid"])
@pytest.mark.parametrize("respiration", [False, True])
def test_mode_on_the_gpu_matches_numpy(ph, mode, respiration):
    import cupy as cp
    params = mrtherm.ThermometryParams(baseline_frames=8, reference=mode, register_motion="on")
    out = {}
    for backend in ("numpy", "cupy"):
        exam = mrtherm.load_exam(ph.magnitude, ph.phase_rad, te_s=ph.te_s, b0_t=ph.b0_t,
                                 frame_times_s=ph.frame_times_s, affine=ph.affine)
        out[backend] = mrtherm.process(exam, params, labels=ph.labels, backend=backend,
                                       respiration=ph.respiration if respiration else None)
    g = lambda a: cp.asnumpy(a) if isinstance(a, cp.ndarray) else np.asarray(a)  # noqa: E731
    a, b = out["numpy"], out["cupy"]
    assert "cupy" in b.report["parameters"]["backend"]
    ra, rb = a.report["reference"], b.report["reference"]
    assert ra.get("entries_per_frame") == rb.get("entries_per_frame")
    assert ra.get("referenceless_frames") == rb.get("referenceless_frames")
    np.testing.assert_array_equal(g(b.mask), g(a.mask))
    np.testing.assert_allclose(g(b.temperature_c), g(a.temperature_c), atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(g(b.dose_cem43_min), g(a.dose_cem43_min), rtol=1e-4, atol=1e-8, equal_nan=True)
    np.testing.assert_allclose(rb["registration"]["shift_mm_per_frame"], ra["registration"]["shift_mm_per_frame"],
                               atol=3e-4)


def test_building_blocks_on_the_gpu_match_numpy():
    import cupy as cp
    from mrtherm.thermometry.background import smooth_phase_fit, sparse_background_fit
    from mrtherm.thermometry.drift import DriftModel
    from mrtherm.thermometry.motion import estimate_shift, shift_volume
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[-1:1:64j, -1:1:64j]
    phase = (2.0 + 5.0 * xx - 3.0 * yy + xx * yy)[None] - 2.0 * (np.hypot(xx, yy) < 0.2)[None]
    s = (np.exp(1j * phase) + 0.02 * (rng.standard_normal(phase.shape) + 1j * rng.standard_normal(phase.shape)))
    s = s.astype(np.complex64)
    w = np.ones(s.shape)
    for xp, conv in ((np, np.asarray), (cp, cp.asarray)):
        model = DriftModel(s.shape, 2, xp)
        c, _ = smooth_phase_fit(conv(s), conv(w), model)
        u = conv(np.angle(s * np.exp(-1j * 2.0)).astype(np.float32))
        sc, _, it = sparse_background_fit(model, u, conv(w), 0.06, -1.0)
        mag = conv(np.abs(s).astype(np.float32) * (1 + xx[None]))
        d = estimate_shift(shift_volume(mag, -0.7, 0.4, xp), mag, conv(w), xp)
        if xp is np:
            want = (c, sc, it, d)
        else:
            np.testing.assert_allclose(c, want[0], atol=1e-6)
            np.testing.assert_allclose(sc, want[1], atol=1e-6)
            assert it == want[2]
            np.testing.assert_allclose(d, want[3], atol=1e-6)
