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
