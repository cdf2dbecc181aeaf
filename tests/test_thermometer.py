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
