"""GPU (fused CUDA engine) against NumPy: every option branch, same inputs.

Tolerances: temperature within 1e-3 C, dose rtol 1e-4, masks identical.
Skipped where cupy.is_available() is False (see conftest.py).
"""

import numpy as np
import pytest

import mrtherm
from corrupt_samples import corrupt  # tests/, beside the root conftest
from mrtherm.phantom import _encode_phase
from mrtherm.io import niftiio

SMALL = dict(shape_zyx=(4, 64, 64), voxel_mm=(4.0, 3.0, 3.0), n_frames=18, seed=11)


@pytest.fixture(scope="module")
def ph():
    return mrtherm.make_phantom(**SMALL)


def _exam(ph, phase=None, real_imag=False, xp=np):
    kw = dict(te_s=ph.te_s, b0_t=ph.b0_t, frame_times_s=ph.frame_times_s, affine=ph.affine)
    if real_imag:
        s = ph.magnitude * np.exp(1j * ph.phase_rad)
        return mrtherm.load_exam(real=xp.asarray(s.real.astype(np.float32)),
                                 imag=xp.asarray(s.imag.astype(np.float32)), **kw)
    return mrtherm.load_exam(xp.asarray(ph.magnitude), xp.asarray(ph.phase_rad if phase is None else phase), **kw)


def _compare(cpu, gpu):
    import cupy as cp
    g = lambda a: cp.asnumpy(a) if isinstance(a, cp.ndarray) else np.asarray(a)  # noqa: E731
    assert "fused CUDA" in gpu.report["parameters"]["backend"]
    np.testing.assert_array_equal(g(gpu.mask), g(cpu.mask))
    np.testing.assert_array_equal(g(gpu.drift_reference), g(cpu.drift_reference))
    np.testing.assert_allclose(g(gpu.temperature_c), g(cpu.temperature_c), atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(g(gpu.tmax_c), g(cpu.tmax_c), atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(g(gpu.dose_cem43_min), g(cpu.dose_cem43_min), rtol=1e-4, atol=1e-8, equal_nan=True)
    np.testing.assert_allclose(g(gpu.temperature_sd_c), g(cpu.temperature_sd_c), atol=1e-3, equal_nan=True)
    for level in cpu.lesions:
        np.testing.assert_array_equal(g(gpu.lesions[level]), g(cpu.lesions[level]))
    np.testing.assert_allclose(gpu.drift_coefficients, cpu.drift_coefficients, rtol=1e-5, atol=1e-7)
    assert [a["frame"] for a in gpu.alarms] == [a["frame"] for a in cpu.alarms]


@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("reference", ["auto", "roi"])
def test_drift_orders_and_reference(ph, order, reference):
    roi = None
    if reference == "roi":
        roi = np.zeros(ph.labels.shape, np.uint8)
        roi[:, :, :20] = 1
    kw = dict(baseline_frames=5, labels=ph.labels, drift_order=order, drift_roi=roi)
    cpu = mrtherm.process(_exam(ph), backend="numpy", **kw)
    gpu = mrtherm.process(_exam(ph), backend="cupy", **kw)
    _compare(cpu, gpu)


@pytest.mark.parametrize("labels", [True, False])
@pytest.mark.parametrize("sign", [1, -1])
def test_phase_sign_and_label_masks(ph, labels, sign):
    phase = ph.phase_rad if sign == 1 else -ph.phase_rad
    kw = dict(baseline_frames=5, labels=ph.labels if labels else None, phase_sign=sign,
              dose_levels_cem43_min=(17.0, 40.0, 100.0, 200.0, 240.0))
    cpu = mrtherm.process(_exam(ph, phase), backend="numpy", **kw)
    gpu = mrtherm.process(_exam(ph, phase), backend="cupy", **kw)
    _compare(cpu, gpu)


def test_real_imag_input(ph):
    cpu = mrtherm.process(_exam(ph, real_imag=True), backend="numpy", baseline_frames=3)
    gpu = mrtherm.process(_exam(ph, real_imag=True), backend="cupy", baseline_frames=3)
    _compare(cpu, gpu)


@pytest.mark.parametrize("fmt", ["siemens", "ge-mrad", "radians"])
def test_vendor_phase_files_streamed(tmp_path, ph, fmt):
    stored, scaling = _encode_phase(ph.phase_rad, fmt)
    step = float(ph.frame_times_s[1])
    niftiio.save_volume(ph.magnitude, ph.affine, tmp_path / "m.nii.gz", frame_time_s=step)
    if stored.dtype.kind == "i":
        niftiio.save_stored_integers(stored, ph.affine, tmp_path / "p.nii.gz", *(scaling or (1.0, 0.0)),
                                     frame_time_s=step)
    else:
        niftiio.save_volume(stored, ph.affine, tmp_path / "p.nii.gz", frame_time_s=step)
    exam = lambda: mrtherm.load_exam(tmp_path / "m.nii.gz", tmp_path / "p.nii.gz", te_s=ph.te_s, b0_t=ph.b0_t)  # noqa
    cpu = mrtherm.process(exam(), backend="numpy", baseline_frames=5)
    gpu = mrtherm.process(exam(), backend="cupy", baseline_frames=5, temperature_path=tmp_path / "t.nii.gz")
    assert isinstance(gpu.tmax_c, np.ndarray)  # file inputs give NumPy maps
    _compare(cpu, gpu)


def test_random_inputs(ph):
    rng = np.random.default_rng(5)
    shape = (12, 3, 40, 48)
    mag = rng.uniform(0, 100, size=shape).astype(np.float32)
    phase = rng.uniform(-np.pi, np.pi, size=shape).astype(np.float32)
    # baseline frames steady (random per-voxel signal, 1 % noise) so every voxel passes the reliability rules;
    # after them arbitrary magnitudes and phases: wraps, frames below the validity floor (about a quarter) and
    # returns from them, in both engines
    mag[:4] = rng.uniform(60, 100, size=shape[1:]) + rng.normal(0, 1, size=(4,) + shape[1:])
    phase[:4] = rng.uniform(-np.pi, np.pi, size=shape[1:]) + rng.normal(0, 0.01, size=(4,) + shape[1:])
    phase = np.angle(np.exp(1j * phase)).astype(np.float32)
    mk = lambda: mrtherm.load_exam(mag, phase, te_s=0.01, b0_t=1.5, frame_time_s=2.0)  # noqa: E731
    for order in (0, 1, 2):
        cpu = mrtherm.process(mk(), backend="numpy", baseline_frames=4, drift_order=order, snr_threshold=1.0)
        gpu = mrtherm.process(mk(), backend="cupy", baseline_frames=4, drift_order=order, snr_threshold=1.0)
        assert cpu.mask.all() and np.isnan(cpu.temperature_c[4:]).mean() > 0.1  # both validity branches ran
        _compare(cpu, gpu)


def test_cupy_in_cupy_out(ph):
    import cupy as cp
    gpu = mrtherm.process(_exam(ph, xp=cp), baseline_frames=5, labels=ph.labels)
    assert isinstance(gpu.temperature_c, cp.ndarray) and isinstance(gpu.dose_cem43_min, cp.ndarray)
    cpu = mrtherm.process(_exam(ph), baseline_frames=5, labels=ph.labels)
    assert isinstance(cpu.temperature_c, np.ndarray)
    _compare(cpu, gpu)


@pytest.mark.parametrize("real_imag", [False, True], ids=["polar", "complex"])
@pytest.mark.parametrize("order", [0, 1, 2])
def test_corrupt_samples(ph, real_imag, order):
    """NaN, +-inf and zero samples in 2 % of the voxels of a baseline frame and two consecutive dynamic frames
    (magnitude or phase; real or imaginary part): the same temperature, Tmax, dose and NaN pattern as NumPy."""
    rng = np.random.default_rng(7 + order)
    mag, phase = ph.magnitude.astype(np.float32).copy(), ph.phase_rad.astype(np.float32).copy()
    if real_imag:
        s = mag * np.exp(1j * phase)
        mag, phase = s.real.astype(np.float32), s.imag.astype(np.float32)
    corrupt(mag, phase, (2, 9, 10), rng, zero_both=real_imag)
    kw = dict(te_s=ph.te_s, b0_t=ph.b0_t, frame_times_s=ph.frame_times_s, affine=ph.affine)
    mk = (lambda: mrtherm.load_exam(real=mag, imag=phase, **kw)) if real_imag else \
        (lambda: mrtherm.load_exam(mag, phase, **kw))
    cpu = mrtherm.process(mk(), backend="numpy", baseline_frames=5, labels=ph.labels, drift_order=order)
    gpu = mrtherm.process(mk(), backend="cupy", baseline_frames=5, labels=ph.labels, drift_order=order)
    assert np.isnan(np.asarray(cpu.temperature_c)[9]).sum() > np.isnan(np.asarray(cpu.temperature_c)[8]).sum()
    _compare(cpu, gpu)
