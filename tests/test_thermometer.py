"""The Thermometer: per-frame updates, current maps, and save/restore that resumes bit-identically."""

import numpy as np
import pytest

import mrtherm
from mrtherm import ParameterError, Thermometer, ThermometryParams


def _frames(ph):
    return [(ph.magnitude[t], ph.phase_rad[t], True) for t in range(ph.magnitude.shape[0])]


def _thermometer(ph, params):
    frames = _frames(ph)
    return Thermometer(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t, frames[:params.baseline_frames], params,
                       labels=ph.labels), frames


@pytest.fixture(scope="module")
def params(small_phantom):
    return ThermometryParams(baseline_frames=small_phantom.info["baseline_frames"])


@pytest.fixture(scope="module")
def uninterrupted(small_phantom, params):
    th, frames = _thermometer(small_phantom, params)
    temps = [np.array(th.update(f, t)) for f, t in zip(frames, small_phantom.frame_times_s)]
    return th, temps


def test_loop_equals_process(small_phantom, params, uninterrupted, phantom_result):
    th, temps = uninterrupted
    np.testing.assert_array_equal(np.asarray(th.dose_cem43_min), phantom_result.dose_cem43_min)
    np.testing.assert_array_equal(np.stack(temps), phantom_result.temperature_c)
    rows, alarms = th.protected_structures()
    assert alarms == phantom_result.alarms


@pytest.mark.parametrize("k", [1, 4, 5, 11, 22, 29])
def test_stop_after_frame_k_and_resume_bit_identically(small_phantom, params, uninterrupted, tmp_path, k):
    """Stop after k frames (k baseline frames included), save, restore, finish: the same bytes."""
    ref, ref_temps = uninterrupted
    th, frames = _thermometer(small_phantom, params)
    times = small_phantom.frame_times_s
    for t in range(k):
        th.update(frames[t], times[t])
    path = th.save_state(tmp_path / "state.npz")
    del th
    resumed = Thermometer.load_state(path)
    assert resumed.frames_processed == k
    temps = [np.array(resumed.update(frames[t], times[t])) for t in range(k, len(frames))]
    assert np.array_equal(np.asarray(resumed.dose_cem43_min), np.asarray(ref.dose_cem43_min), equal_nan=True)
    assert np.array_equal(np.asarray(resumed.tmax_c), np.asarray(ref.tmax_c), equal_nan=True)
    assert np.array_equal(np.asarray(resumed.temperature_sd_c()), np.asarray(ref.temperature_sd_c()), equal_nan=True)
    for a, b in zip(temps, ref_temps[k:]):
        assert np.array_equal(a, b, equal_nan=True)
    assert resumed.protected_structures() == ref.protected_structures()
    assert np.array_equal(np.stack(resumed.drift_coefficients), np.stack(ref.drift_coefficients))
    result = mrtherm.ThermometryResult.from_thermometer(resumed)
    assert result.lesion_volumes_ml == mrtherm.ThermometryResult.from_thermometer(ref).lesion_volumes_ml


def test_update_refuses_time_going_back(small_phantom, params):
    th, frames = _thermometer(small_phantom, params)
    th.update(frames[0], 10.0)
    with pytest.raises(ParameterError, match="not after the previous frame"):
        th.update(frames[1], 10.0)


def test_complex_frames_and_reference_override(small_phantom, params):
    """Complex frames work like (magnitude, phase); a new reference shifts the phase change by exactly its phase."""
    ph = small_phantom
    signal = [(ph.magnitude[t] * np.exp(1j * ph.phase_rad[t])).astype(np.complex64) for t in range(6)]
    a = Thermometer(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t, signal[:5], params)
    b = Thermometer(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t, signal[:5], params)
    for t in range(5):
        a.update(signal[t], t)
        b.update(signal[t], t)
    ta = np.asarray(a.update(signal[5], 5.0))
    # a reference rotated by +0.05 rad everywhere: the drift fit removes a uniform phase, temperatures stay
    rotated = (np.mean(signal[:5], axis=0) * np.exp(1j * 0.05)).astype(np.complex64)
    tb = np.asarray(b.update(signal[5], 5.0, reference=rotated))
    m = np.isfinite(ta)
    assert np.max(np.abs(ta[m] - tb[m])) < 0.05


def test_state_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "state.npz"
    bad.write_bytes(b"not a state")
    with pytest.raises(mrtherm.InputFileError, match="not a Thermometer state file"):
        Thermometer.load_state(bad)


def test_resume_from_before_the_first_frame(small_phantom, params, uninterrupted, tmp_path):
    """A state saved right after construction (nothing carried over yet) resumes to the same bytes."""
    ref, _ = uninterrupted
    th, frames = _thermometer(small_phantom, params)
    resumed = Thermometer.load_state(th.save_state(tmp_path / "state.npz"))
    assert resumed.frames_processed == 0 and resumed.tmax_c is None
    for f, t in zip(frames, small_phantom.frame_times_s):
        resumed.update(f, t)
    assert np.array_equal(np.asarray(resumed.dose_cem43_min), np.asarray(ref.dose_cem43_min), equal_nan=True)


def test_resume_keeps_every_parameter_and_the_exam_description(small_phantom, tmp_path):
    """Non-default alpha and phase sign survive the round trip (they scale every later frame), as do the mask's
    description, the label table, the anatomy and the backend."""
    ph = small_phantom
    p = ThermometryParams(baseline_frames=ph.info["baseline_frames"], alpha_ppm_per_c=-0.00909, phase_sign=-1)
    ref, frames = _thermometer(ph, p)
    th, _ = _thermometer(ph, p)
    times = ph.frame_times_s
    for t in range(len(frames)):
        ref.update(frames[t], times[t])
    for t in range(7):
        th.update(frames[t], times[t])
    resumed = Thermometer.load_state(th.save_state(tmp_path / "state.npz"))
    assert resumed.k_rad_per_c == th.k_rad_per_c and resumed.backend_used == "numpy"
    for name in ("sigma", "sigma_method", "rules", "warnings"):
        assert getattr(resumed.reliability, name) == getattr(th.reliability, name), name
    assert resumed.table.to_json() == th.table.to_json()
    np.testing.assert_array_equal(resumed.anatomy, th.anatomy)
    for t in range(7, len(frames)):
        resumed.update(frames[t], times[t])
    assert np.array_equal(np.asarray(resumed.dose_cem43_min), np.asarray(ref.dose_cem43_min), equal_nan=True)
    again = Thermometer.load_state(resumed.save_state(tmp_path / "again.npz"))
    assert again.backend_used == "numpy" and again.frames_processed == len(frames)


def _tampered_state(th, tmp_path, **meta_changes):
    import json
    path = th.save_state(tmp_path / "state.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta_json"].tobytes().decode("utf-8"))
    meta.update(meta_changes)
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    out = tmp_path / "tampered.npz"
    np.savez(out, **arrays)
    return out


def test_state_from_another_version_or_engine_is_refused_in_one_line(small_phantom, params, tmp_path):
    th, frames = _thermometer(small_phantom, params)
    th.update(frames[0], 0.0)
    path = _tampered_state(th, tmp_path, version=99)
    with pytest.raises(mrtherm.InputFileError) as err:
        Thermometer.load_state(path)
    assert str(err.value) == f"{path}: state version 99 is not 2"
    path = _tampered_state(th, tmp_path, engine="cuda-fused")
    with pytest.raises(ParameterError) as err:
        Thermometer.load_state(path)
    assert str(err.value) == "the state was saved by the cuda-fused engine; resume it with backend='numpy'"


@pytest.mark.skipif(mrtherm.backend.cupy_usable(), reason="a GPU is usable here")
def test_state_resumes_on_the_backend_that_saved_it(small_phantom, params, tmp_path):
    """A GPU state needs the GPU (it is not silently resumed on NumPy); an explicit backend overrides the saved one."""
    th, frames = _thermometer(small_phantom, params)
    th.update(frames[0], 0.0)
    with pytest.raises(mrtherm.BackendUnavailableError, match="backend 'cupy'"):
        Thermometer.load_state(_tampered_state(th, tmp_path, backend="cupy"))
    with pytest.raises(mrtherm.BackendUnavailableError, match="backend 'cupy'"):
        Thermometer.load_state(th.save_state(tmp_path / "numpy.npz"), backend="cupy")


def test_uncertainty_maps_before_and_after_the_baseline(small_phantom):
    """The empirical SD needs every baseline frame and at least two; then it is the sample SD x sqrt(1 + 1/N).

    Two baseline frames of uniform phase a and 3a rad with magnitudes 100 and 300: the reference (their complex
    mean) has a phase between, so the two deltas have a non-zero mean, but they differ by 2a rad: sample SD
    sqrt(2) a / |k| C whatever the reference (hand calculation), reported x sqrt(1.5).
    """
    shape = (1, 8, 8)
    a = 0.04
    frames = [(np.full(shape, m, np.float32), np.full(shape, s * a, np.float32), True)
              for m, s in ((100.0, 1), (300.0, 3), (100.0, 0))]
    te, b0 = 0.01, 3.0
    th = Thermometer(shape, np.eye(4), te, b0, frames[:2], ThermometryParams(baseline_frames=2, snr_threshold=0,
                                                                              max_sd_theory_c=1e9,
                                                                              drift_correction=False))
    k = abs(mrtherm.thermometry.prf.radians_per_celsius(te, b0))
    th.update(frames[0], 0.0)
    early = np.asarray(th.temperature_sd_c())
    assert early.shape == shape and early.dtype == np.float32 and np.isnan(early).all()
    th.update(frames[1], 1.0)
    assert abs(float(np.asarray(th.engine.base_sum).mean())) > 0.1  # the deltas' mean is not zero
    sd = np.asarray(th.temperature_sd_c())
    assert sd.dtype == np.float32
    np.testing.assert_allclose(sd, np.sqrt(2) * a / k * np.sqrt(1.5), rtol=1e-4)
    one = Thermometer(shape, np.eye(4), te, b0, frames[:1], ThermometryParams(baseline_frames=1, snr_threshold=0))
    for t in range(3):
        one.update(frames[t], float(t))
    sd = np.asarray(one.temperature_sd_c())
    assert sd.shape == shape and sd.dtype == np.float32 and np.isnan(sd).all()


def test_noise_predicted_sd_is_float32_and_nan_where_masked(small_phantom, params):
    th, _ = _thermometer(small_phantom, params)
    sd = th.temperature_sd_theory_c()
    assert sd.dtype == np.float32
    assert np.isnan(sd[~th.reliability.mask]).all() and np.isfinite(sd[th.reliability.mask]).all()


def test_a_reference_given_per_frame_is_stored_as_complex64(small_phantom, params):
    """DESIGN.md: complex data are complex64; a complex128 reference gives the same bytes as its complex64 copy."""
    ph = small_phantom
    signal = [(ph.magnitude[t] * np.exp(1j * ph.phase_rad[t])).astype(np.complex64) for t in range(6)]
    ref64 = np.mean(signal[:5], axis=0).astype(np.complex128) * np.exp(1j * 0.05)
    out = []
    for reference in (ref64, ref64.astype(np.complex64)):
        th = Thermometer(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t, signal[:5], params)
        for t in range(5):
            th.update(signal[t], t)
        out.append(np.asarray(th.update(signal[5], 5.0, reference=reference)))
        assert th.engine.s_ref.dtype == np.complex64
    assert np.array_equal(out[0], out[1], equal_nan=True)


def _flat_frames(make, n=3, shape=(1, 4, 4)):
    return [make(np.full(shape, 100.0, np.float32)) for _ in range(n)]


def test_the_backend_follows_the_input_arrays():
    """auto: NumPy frames on NumPy (no GPU here) whatever their form, other array libraries in their own library
    ("input arrays"); a named backend converts the frames."""
    xps = pytest.importorskip("array_api_strict")
    p = ThermometryParams(baseline_frames=1, snr_threshold=0, drift_correction=False)
    forms = {"polar": lambda m: (m, np.zeros_like(m), True), "complex": lambda m: m.astype(np.complex64)}
    for form, make in forms.items():
        frames = _flat_frames(make)
        th = Thermometer((1, 4, 4), np.eye(4), 0.01, 3.0, frames[:1], p)
        assert th.backend_used == ("cupy" if mrtherm.backend.cupy_usable() else "numpy"), form
    frames = _flat_frames(lambda m: (xps.asarray(m), xps.asarray(np.zeros_like(m)), True))
    th = Thermometer((1, 4, 4), np.eye(4), 0.01, 3.0, frames[:1], p)
    assert th.backend_used == "input arrays" and th.xp is xps
    temp = th.update(frames[0], 0.0)
    assert type(temp) is type(xps.asarray(np.zeros(1)))
    th = Thermometer((1, 4, 4), np.eye(4), 0.01, 3.0, frames[:1], p, backend="numpy")
    assert th.backend_used == "numpy" and isinstance(th.update(frames[0], 0.0), np.ndarray)


@pytest.mark.parametrize("polar", [True, False])
def test_frame_parts_become_complex64_and_non_finite_samples_zero(polar):
    """DESIGN.md: complex data are complex64, whatever the parts' precision; NaN/inf samples carry no signal."""
    import warnings
    from mrtherm.thermometry.engine import signal_from_parts
    a = np.array([2.0, np.nan, 3.0])
    b = np.array([np.pi / 2 if polar else 0.5, 1.0, np.inf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from the non-finite samples
        s = signal_from_parts(a, b, polar, np)
    assert s.dtype == np.complex64
    expected = [2j, 0, 0] if polar else [2 + 0.5j, 0, 0]
    np.testing.assert_allclose(s, expected, atol=1e-6)


def test_exam_files_and_tables_for_the_thermometer(tmp_path):
    """Labels from a NIfTI on a finer grid are resampled through the affines; a label table from a JSON file;
    a drift ROI array of the wrong shape and a baseline of the wrong length are one-line errors."""
    import json
    import nibabel as nib
    shape = (2, 4, 6)
    frames = [(np.full(shape, 100.0, np.float32), np.zeros(shape, np.float32), True)] * 2
    affine = np.diag([2.0, 2.0, 4.0, 1.0])
    fine = np.ones((12, 8, 4), np.int16)  # (x, y, z) at 1 x 1 x 2 mm: each exam voxel holds 2 x 2 x 2
    fine[6:, :, :] = 2  # fat from x = 6 mm on: exam columns 3, 4, 5
    nib.save(nib.Nifti1Image(fine, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "labels.nii.gz")
    (tmp_path / "table.json").write_text(json.dumps({"labels": [
        {"value": 1, "name": "tissue", "prf_valid": True, "acoustic_role": "pass"},
        {"value": 2, "name": "fat", "prf_valid": False, "acoustic_role": "pass"}]}))
    p = ThermometryParams(baseline_frames=2, snr_threshold=0)
    th = Thermometer(shape, affine, 0.01, 3.0, frames, p, labels=tmp_path / "labels.nii.gz",
                     label_table=tmp_path / "table.json")
    expected = np.ones(shape, bool)
    expected[:, :, 3:] = False
    np.testing.assert_array_equal(th.reliability.mask, expected)
    assert th.label_info == {"path": str(tmp_path / "labels.nii.gz"), "resampled": True}
    assert th.table.name(1) == "tissue"
    roi = np.zeros((12, 8, 4), np.int16)
    roi[:4] = 1  # x < 4 mm: exam columns 0 and 1
    nib.save(nib.Nifti1Image(roi, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "roi.nii.gz")
    th = Thermometer(shape, affine, 0.01, 3.0, frames, p, drift_roi=tmp_path / "roi.nii.gz")
    assert th.drift_ref.sum() == 2 * 4 * 2 and th.drift_ref[:, :, :2].all()
    assert th.drift_rule["source"] == str(tmp_path / "roi.nii.gz")
    with pytest.raises(ParameterError) as err:
        Thermometer(shape, affine, 0.01, 3.0, frames, p, drift_roi=np.ones((2, 4, 5)))
    assert str(err.value) == "drift ROI array shape (2, 4, 5) does not match the exam grid (2, 4, 6)"
    with pytest.raises(ParameterError) as err:
        Thermometer(shape, affine, 0.01, 3.0, frames[:1], p)
    assert str(err.value) == "baseline has 1 frames but baseline_frames = 2"


def test_structure_table_before_and_after_the_first_frame(small_phantom, params):
    """Before any frame the table lists the structures without statistics; after one frame there is no time
    above threshold yet (0 s) and every watched structure has its own curve."""
    th, frames = _thermometer(small_phantom, params)
    rows, alarms = th.protected_structures()
    assert alarms == [] and all(set(r) == {"label", "structure", "voxels", "reliable_voxels"} for r in rows)
    temp = np.asarray(th.update(frames[0], 0.0))
    rows, _ = th.protected_structures()
    watched = [r for r in rows if r["reliable_voxels"]]
    assert len(watched) >= 2
    for r in watched:
        assert r["max_time_above_45c_s"] == 0.0
        inside = temp[small_phantom.labels == r["label"]]  # NaN where not reliable
        assert r["max_c_curve"] == [pytest.approx(float(np.nanmax(inside)))]
        assert r["mean_c_curve"] == [pytest.approx(float(np.nanmean(inside)), rel=1e-5)]


def _engine_voxels():
    """One slice of six voxels: reference magnitude 1, 0.5, 0, 1, 1, 1 (phase -3 rad at voxel 3, else 0) and a
    frame of magnitude 2, 3, 1, 1.5, 0, 2 and phase 0.5, -0.25, 1, 3, 0.7, NaN rad."""
    from mrtherm.thermometry.drift import DriftModel
    from mrtherm.thermometry.engine import ArrayEngine, EngineConfig
    ref_mag = np.array([1.0, 0.5, 0.0, 1.0, 1.0, 1.0])
    ref_phase = np.array([0.0, 0.0, 0.0, -3.0, 0.0, 0.0])
    s_ref = (ref_mag * np.exp(1j * ref_phase)).astype(np.complex64).reshape(1, 1, 6)
    ones = np.ones((1, 1, 6), bool)
    config = EngineConfig(mask=ones, ref=ones, s_ref=s_ref, auto=False, outlier_rad=1.0, to_celsius=1.0,
                          body_temp_c=37.0, heated_c=10.0)
    engine = ArrayEngine(np, DriftModel((1, 1, 6), 0, np), config)
    mag = np.array([2.0, 3.0, 1.0, 1.5, 0.0, 2.0], np.float32).reshape(1, 1, 6)
    phase = np.array([0.5, -0.25, 1.0, 3.0, 0.7, np.nan], np.float32).reshape(1, 1, 6)
    return engine, mag, phase


def test_drift_fit_inputs_by_hand_for_polar_and_complex_frames():
    # phase change wrapped into [-pi, pi): voxel 3 is 3 - (-3) = 6 rad -> 6 - 2 pi; 0 where the frame is 0 or
    # not finite (voxels 4, 5) and, for polar frames, where the reference is 0 (voxel 2); weight |S|^2
    wrapped = 6.0 - 2.0 * np.pi
    engine, mag, phase = _engine_voxels()
    packed, rhs, count = engine.pass1(mag, phase, True)
    u, weight = engine.fit_inputs()
    np.testing.assert_allclose(u.ravel(), [0.5, -0.25, 0.0, wrapped, 0.0, 0.0], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(weight.ravel(), [4.0, 9.0, 0.0, 2.25, 0.0, 0.0])
    assert (packed.ravel()[0], count.ravel()[0]) == (15.25, 3.0)  # order 0: sum of the weights, voxels in the fit
    assert rhs.ravel()[0] == pytest.approx(4 * 0.5 - 9 * 0.25 + 2.25 * wrapped, rel=1e-6)

    engine, mag, phase = _engine_voxels()
    s = (mag * np.exp(1j * phase.astype(np.float64))).astype(np.complex64)
    engine.pass1(np.real(s), np.imag(s), False)
    u, weight = engine.fit_inputs()
    keep = [0, 1, 3, 4, 5]  # voxel 2: the complex path weighs |S|^2 whatever the reference
    np.testing.assert_allclose(u.ravel()[keep], [0.5, -0.25, wrapped, 0.0, 0.0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(weight.ravel()[keep], [4.0, 9.0, 2.25, 0.0, 0.0], rtol=1e-6)
