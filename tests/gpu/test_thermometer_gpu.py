"""The Thermometer on the fused CUDA engine: stop after frame k, save, restore, and the same bytes as no stop."""

import numpy as np
import pytest

import mrtherm

SMALL = dict(shape_zyx=(4, 64, 64), voxel_mm=(4.0, 3.0, 3.0), n_frames=14, seed=5)


def _run(ph, frames, stop=None, tmp_path=None, resume_backend="cupy"):
    params = mrtherm.ThermometryParams(baseline_frames=4)
    th = mrtherm.Thermometer(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t, frames[:4], params,
                             labels=ph.labels, backend="cupy")
    assert th.engine.name == "fused CUDA"
    for t, f in enumerate(frames):
        if t == stop:
            th = mrtherm.Thermometer.load_state(th.save_state(tmp_path / "s.npz"), backend=resume_backend)
        th.update(f, ph.frame_times_s[t])
    return th


@pytest.mark.parametrize("k", [1, 4, 9])
def test_gpu_resume_bit_identical(k, tmp_path):
    import cupy as cp
    ph = mrtherm.make_phantom(**SMALL)
    frames = [(ph.magnitude[t], ph.phase_rad[t], True) for t in range(SMALL["n_frames"])]
    ref = _run(ph, frames)
    got = _run(ph, frames, stop=k, tmp_path=tmp_path)
    assert np.array_equal(cp.asnumpy(got.dose_cem43_min), cp.asnumpy(ref.dose_cem43_min), equal_nan=True)
    assert np.array_equal(cp.asnumpy(got.tmax_c), cp.asnumpy(ref.tmax_c), equal_nan=True)
    assert got.protected_structures() == ref.protected_structures()


# ---------------------------------------------------------------- every reference mode on the fused engine

def _breathing_exam():
    """A breathing phantom of tests/breathing_phantoms.py (rigid motion beside bone, respiratory B0, heat)."""
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from breathing_phantoms import make_breathing_exam
    return make_breathing_exam(kind="rigid", heat_distance_mm=8.0, shape_zyx=(3, 64, 64), n_baseline=12, n_frames=30,
                               heat_fwhm_mm=8.0, seed=2)


@pytest.mark.parametrize("mode", ["referenceless", "hybrid"])
def test_sparse_reference_modes_run_on_the_fused_engine_and_match_numpy(mode):
    """Referenceless and hybrid (sparse background fit on the engine's fit inputs) on a breathing patient now run on
    the fused CUDA engine. Tolerances as tests/gpu/test_parity.py: temperature 1e-3 C, dose rtol 1e-4, identical
    masks and entry choices; shifts (registration on the host in both) within 3e-4 mm."""
    import cupy as cp
    ex = _breathing_exam()
    out = {}
    for backend in ("numpy", "cupy"):
        exam = mrtherm.load_exam(magnitude=ex.magnitude, phase=ex.phase_rad, te_s=ex.te_s, b0_t=ex.b0_t,
                                 frame_times_s=ex.frame_times_s, affine=ex.affine)
        out[backend] = mrtherm.process(exam, mrtherm.ThermometryParams(baseline_frames=ex.n_baseline, reference=mode),
                                       labels=ex.labels_ref, backend=backend)
    g = lambda a: cp.asnumpy(a) if isinstance(a, cp.ndarray) else np.asarray(a)  # noqa: E731
    a, b = out["numpy"], out["cupy"]
    assert "fused CUDA" in b.report["parameters"]["backend"]
    ra, rb = a.report["reference"], b.report["reference"]
    assert ra["mode"] == rb["mode"] == mode and rb["registration"]["applied"]
    assert ra.get("entries_per_frame") == rb.get("entries_per_frame")
    assert ra.get("referenceless_frames") == rb.get("referenceless_frames")
    np.testing.assert_array_equal(g(b.mask), g(a.mask))
    np.testing.assert_allclose(g(b.temperature_c), g(a.temperature_c), atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(g(b.tmax_c), g(a.tmax_c), atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(g(b.dose_cem43_min), g(a.dose_cem43_min), rtol=1e-4, atol=1e-8, equal_nan=True)
    np.testing.assert_allclose(g(b.temperature_sd_c), g(a.temperature_sd_c), atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(rb["registration"]["shift_mm_per_frame"], ra["registration"]["shift_mm_per_frame"],
                               atol=3e-4)
    assert np.nanmax(g(b.tmax_c)) > (50.0 if mode == "hybrid" else 38.0)  # referenceless keeps still voxels only


@pytest.mark.parametrize("mode", ["referenceless", "hybrid"])
def test_sparse_reference_modes_resume_bit_identical_on_the_fused_engine(mode, tmp_path):
    import cupy as cp
    ex = _breathing_exam()
    frames = [(ex.magnitude[t], ex.phase_rad[t], True) for t in range(len(ex.frame_times_s))]
    params = mrtherm.ThermometryParams(baseline_frames=ex.n_baseline, reference=mode)

    def run(stop=None):
        th = mrtherm.Thermometer(ex.magnitude.shape[1:], ex.affine, ex.te_s, ex.b0_t, frames[:ex.n_baseline], params,
                                 labels=ex.labels_ref, backend="cupy")
        assert th.engine.name == "fused CUDA" and th.registration is not None
        for t, f in enumerate(frames):
            if t == stop:
                th = mrtherm.Thermometer.load_state(th.save_state(tmp_path / "s.npz"))
                assert th.engine.name == "fused CUDA"
            th.update(f, ex.frame_times_s[t])
        return th

    ref, got = run(), run(stop=20)
    assert np.array_equal(cp.asnumpy(got.dose_cem43_min), cp.asnumpy(ref.dose_cem43_min), equal_nan=True)
    assert np.array_equal(cp.asnumpy(got.tmax_c), cp.asnumpy(ref.tmax_c), equal_nan=True)
