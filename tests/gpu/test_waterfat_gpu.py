"""Water-fat thermometry on the GPU (the per-frame fits on CuPy arrays) against NumPy, same inputs, and against the
independent phantom's truth (tests/waterfat_phantom.py).

Tolerances: temperature and its fit SD within 1e-3 C, dose rtol 1e-4, drift map within 1e-3 Hz, masks identical.
Skipped where cupy.is_available() is False (see conftest.py).
"""

import numpy as np
import pytest

import mrtherm
from waterfat_phantom import make  # tests/, beside the root conftest


@pytest.fixture(scope="module")
def ph():
    return make(shape=(4, 64, 64), n_frames=14)


def _run(ph, backend, labels=None):
    aff = np.diag([ph.voxel_mm[2], ph.voxel_mm[1], ph.voxel_mm[0], 1.0])
    p = mrtherm.ThermometryParams(baseline_frames=ph.n_baseline, water_fat=True)
    th = mrtherm.Thermometer(ph.echoes.shape[2:], aff, ph.te_s, ph.b0_t, list(ph.echoes[:ph.n_baseline]), p,
                             backend=backend, labels=labels)
    temps, sds, drifts = [], [], []
    for t in range(len(ph.echoes)):
        temps.append(np.asarray(mrtherm.backend.to_numpy(th.update(ph.echoes[t], ph.times_s[t]))).copy())
        sds.append(mrtherm.backend.to_numpy(th.engine.fit.sd_c).copy())
        drifts.append(mrtherm.backend.to_numpy(th.engine.fit.drift_hz).copy())
    return th, np.stack(temps), np.stack(sds), np.stack(drifts)


def test_gpu_matches_numpy_and_the_truth(ph):
    cpu, t_cpu, sd_cpu, dr_cpu = _run(ph, "numpy")
    gpu, t_gpu, sd_gpu, dr_gpu = _run(ph, "cupy")
    assert gpu.engine.name == "water-fat" and gpu.backend_used == "cupy"
    np.testing.assert_array_equal(gpu.reliability.mask, cpu.reliability.mask)
    np.testing.assert_allclose(t_gpu, t_cpu, atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(sd_gpu, sd_cpu, atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(dr_gpu, dr_cpu, atol=1e-3)
    dose = lambda th: mrtherm.backend.to_numpy(th.dose_cem43_min)  # noqa: E731
    np.testing.assert_allclose(dose(gpu), dose(cpu), rtol=1e-4, atol=1e-8, equal_nan=True)
    water = (1.0 - ph.fat_fraction) >= 0.3
    err = (t_gpu - ph.truth_c)[ph.n_baseline:][:, water]
    assert np.isfinite(err).all() and np.sqrt(np.mean(err ** 2)) <= 1.0


def test_a_gpu_checkpoint_resumes_on_the_gpu(ph, tmp_path):
    whole, _, _, _ = _run(ph, "cupy")
    aff = np.diag([ph.voxel_mm[2], ph.voxel_mm[1], ph.voxel_mm[0], 1.0])
    p = mrtherm.ThermometryParams(baseline_frames=ph.n_baseline, water_fat=True)
    part = mrtherm.Thermometer(ph.echoes.shape[2:], aff, ph.te_s, ph.b0_t, list(ph.echoes[:ph.n_baseline]), p,
                               backend="cupy")
    for t in range(7):
        part.update(ph.echoes[t], ph.times_s[t])
    resumed = mrtherm.Thermometer.load_state(part.save_state(tmp_path / "state.npz"))
    assert resumed.backend_used == "cupy"
    for t in range(7, len(ph.echoes)):
        resumed.update(ph.echoes[t], ph.times_s[t])
    h = mrtherm.backend.to_numpy
    np.testing.assert_array_equal(h(resumed.dose_cem43_min), h(whole.dose_cem43_min))
