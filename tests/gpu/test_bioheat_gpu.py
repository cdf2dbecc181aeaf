"""The bioheat model's steps on the GPU (CuPy arrays) against NumPy: same scene, same PRF frames, every output.

Tolerances: model temperature and SD within 1e-3 C, model dose rtol 1e-4, fitted powers within 1e-6.
Skipped where cupy.is_available() is False (see conftest.py).
"""

import numpy as np

import mrtherm
from bioheat_scene import small_scene as _scene  # tests/, beside the root conftest


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
