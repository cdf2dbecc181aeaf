"""The bioheat model's steps on the GPU (CuPy arrays) against NumPy: same scene, same PRF frames, every output.

Tolerances: model temperature and SD within 1e-3 C, model dose rtol 1e-4, fitted powers within 1e-6.
Skipped where cupy.is_available() is False (see conftest.py).
"""

import numpy as np

import mrtherm


def _scene():
    shape, aff = (6, 40, 40), np.diag([2.0, 2.0, 3.0, 1.0])
    k, j, i = np.indices(shape)
    r = np.hypot(2.0 * i - 40.0, 2.0 * j - 52.0)
    labels = np.full(shape, 3, np.int16)
    labels[2.0 * j < 8.0] = 2
    labels[r <= 12.0], labels[r < 10.8] = 5, 6
    rng = np.random.default_rng(1)
    frames = []
    for n in range(16):
        rise = 12.0 * np.exp(-((2.0 * i - 40.0) ** 2 + (2.0 * j - 38.0) ** 2 + (3.0 * k - 9.0) ** 2) / 40.0) \
            * (3 <= n <= 10)
        phase = 2 * np.pi * 42.577478e6 * (-0.01e-6) * 3.0 * 0.012 * (rise + rng.normal(0, 0.5, shape))
        frames.append((np.where(labels == 5, 0.0, 100.0).astype(np.float32), phase.astype(np.float32), True))
    params = mrtherm.ThermometryParams(baseline_frames=3, bioheat=True, bioheat_beam_axis=(0, 1, 0),
                                       target_mm=(40.0, 40.0, 9.0))
    return shape, aff, labels, frames, params


def _run(backend):
    shape, aff, labels, frames, params = _scene()
    th = mrtherm.Thermometer(shape, aff, 0.012, 3.0, frames[:3], params, labels=labels, backend=backend)
    temps, sds = [], []
    for n, f in enumerate(frames):
        th.update(f, 2.5 * n)
        temps.append(th.bioheat.temperature_c.copy())
        sds.append(th.bioheat.sd_c.copy())
    return th, np.stack(temps), np.stack(sds)


def test_the_model_on_the_gpu_matches_numpy():
    cpu, t_cpu, sd_cpu = _run("numpy")
    gpu, t_gpu, sd_gpu = _run("cupy")
    assert type(gpu.bioheat.model.fields).__module__.startswith("cupy")
    np.testing.assert_allclose(t_gpu, t_cpu, atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(sd_gpu, sd_cpu, atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(gpu.bioheat.model.powers, cpu.bioheat.model.powers, atol=1e-6)
    np.testing.assert_allclose(gpu.bioheat.dose_cem43_min, cpu.bioheat.dose_cem43_min, rtol=1e-4, atol=1e-8,
                               equal_nan=True)
