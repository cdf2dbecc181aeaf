"""Documented rules, each against an independent expected value (hand calculation, analytic case or quadrature).

Each test fails when its rule is removed from the code (checked by mutation testing, docs/mutation.md).
"""

import math

import numpy as np
import pytest
from scipy.integrate import quad

import mrtherm
from mrtherm import Thermometer, ThermometryParams
from mrtherm.thermometry.prf import GAMMABAR_HZ_PER_T, radians_per_celsius

TE, B0 = 0.01, 3.0
K = radians_per_celsius(TE, B0)  # rad per C, negative for alpha < 0


def _run(phase_tzyx, times, params, mag=100.0, labels=None, **kw):
    """Noise-free exam through the Thermometer; returns the Thermometer and every temperature frame."""
    nt = phase_tzyx.shape[0]
    frames = [(np.full(phase_tzyx.shape[1:], mag, np.float32), phase_tzyx[t].astype(np.float32), True)
              for t in range(nt)]
    th = Thermometer(phase_tzyx.shape[1:], np.eye(4), TE, B0, frames[:params.baseline_frames], params,
                     labels=labels, **kw)
    temps = [np.array(th.update(f, t)) for f, t in zip(frames, times)]
    return th, np.stack(temps)


def test_radians_per_celsius_by_hand():
    # 2 pi x 42.577478 MHz/T x -0.01 ppm/C x 3 T x 10 ms = -0.0802571 rad/C (hand calculation)
    assert K == pytest.approx(2 * math.pi * 42.577478e6 * -0.01e-6 * 3.0 * 0.01, rel=1e-12)
    assert K == pytest.approx(-0.0802567, rel=1e-6)
    assert GAMMABAR_HZ_PER_T == 42.577478e6
    # alpha is a parameter: -0.00909 (ExAblate) scales by 0.909
    assert radians_per_celsius(TE, B0, -0.00909) == pytest.approx(0.909 * K, rel=1e-12)


def _piecewise_cem43(temps, times):
    """Independent oracle: adaptive quadrature of R**(43 - T(t)) for T linear between samples, minutes."""
    def integrand(t):
        temp = np.interp(t, times, temps)
        return (0.5 if temp >= 43.0 else 0.25) ** (43.0 - temp)
    total = 0.0
    for a, b in zip(times[:-1], times[1:]):
        val, _ = quad(integrand, a, b, epsabs=1e-13, epsrel=1e-11, limit=200)
        total += val / 60.0
    return total


def test_dose_of_a_heated_block_against_quadrature():
    nt = 8
    rise = np.array([0, 0, 0, 10, 20, 30, 45, 50], dtype=float)
    times = np.arange(nt) * 10.0
    phase = np.zeros((nt, 2, 16, 16))
    hot = np.zeros((2, 16, 16), bool)
    hot[:, 6:10, 6:10] = True
    phase[:, hot] = (K * rise)[:, None]
    th, temps = _run(phase, times, ThermometryParams(baseline_frames=3, drift_order=0, snr_threshold=0))
    np.testing.assert_allclose(temps[:, hot][:, 0], 37 + rise, atol=1e-3)
    expected = _piecewise_cem43(37 + rise, times)
    np.testing.assert_allclose(np.asarray(th.dose_cem43_min)[hot], expected, rtol=1e-5)


def test_empirical_sd_carries_the_reference_noise_factor():
    """Baseline deltas +a, -a, +a, -a: sample SD a*sqrt(4/3); reported SD x sqrt(1 + 1/4) (hand calculation)."""
    a_c = 0.5
    nt, shape = 6, (1, 8, 8)
    delta = np.array([a_c, -a_c, a_c, -a_c, 0.0, 0.0])
    phase = np.broadcast_to((K * delta)[:, None, None, None], (nt,) + shape).copy()
    th, _ = _run(phase, np.arange(nt) * 2.0, ThermometryParams(baseline_frames=4, drift_correction=False,
                                                                 snr_threshold=0))
    sd = np.asarray(th.temperature_sd_c())
    # the reference is the mean of the four baseline signals (zero phase), so the deltas are exactly +-a
    np.testing.assert_allclose(sd, a_c * math.sqrt(4.0 / 3.0) * math.sqrt(1.25), rtol=1e-4)


def test_theoretical_sd_formula():
    # sqrt(1 + 1/N) / (|2 pi gammabar alpha B0 TE| SNR), N = 4, SNR = 20
    from mrtherm.thermometry.prf import theoretical_sigma_celsius
    assert theoretical_sigma_celsius(20.0, 4, TE, B0) == pytest.approx(math.sqrt(1.25) / (abs(K) * 20.0), rel=1e-12)
    assert theoretical_sigma_celsius(20.0, 1, TE, B0) == pytest.approx(math.sqrt(2.0) / (abs(K) * 20.0), rel=1e-12)


def test_heated_voxels_leave_the_automatic_reference_for_good():
    """40 % of a slice heats to +12 C and cools back to +2 C, within the 3 C outlier cut of the drift: having risen
    more than 3 C it stays out of the reference, so the (order-0) drift stays 0 and unheated tissue reads 37 C
    (had it come back, the drift would absorb 0.4 x 2 C)."""
    shape = (1, 20, 20)
    hot = np.zeros(shape, bool)
    hot[:, :8, :] = True  # 40 %
    rise = np.array([0, 0, 0, 2, 4, 8, 12, 8, 5, 3, 2, 2, 2], dtype=float)
    nt = rise.size
    phase = np.zeros((nt,) + shape)
    phase[:, hot] = (K * rise)[:, None]
    _, temps = _run(phase, np.arange(nt) * 3.0, ThermometryParams(baseline_frames=3, drift_order=0,
                                                                    snr_threshold=0))
    np.testing.assert_allclose(temps[-1][~hot], 37.0, atol=0.05)
    np.testing.assert_allclose(temps[-1][hot], 39.0, atol=0.05)


def test_sudden_b0_jump_uses_the_fallback_fit():
    """A uniform jump of 6 C-equivalent at frame 5: every voxel is an outlier of the previous drift, so the fit
    falls back to the reference without the outlier cut, and the jump is removed as drift."""
    nt, shape = 8, (2, 16, 16)
    jump = np.zeros(nt)
    jump[5:] = 6.0
    phase = np.broadcast_to((K * jump)[:, None, None, None], (nt,) + shape).copy()
    th, temps = _run(phase, np.arange(nt) * 3.0, ThermometryParams(baseline_frames=3, drift_order=0,
                                                                    snr_threshold=0))
    np.testing.assert_allclose(temps[5:], 37.0, atol=1e-3)
    assert th.fallback_frames >= 1


def test_target_and_its_margin_leave_the_automatic_reference():
    """Reference = reliable voxels minus the target label and 10 mm around it (brute-force distance here)."""
    shape = (3, 24, 24)
    labels = np.full(shape, 3, np.int16)  # muscle
    labels[1, 10:13, 10:13] = 12  # target
    nt = 4
    phase = np.zeros((nt,) + shape)
    th, _ = _run(phase, np.arange(nt) * 1.0, ThermometryParams(baseline_frames=2, snr_threshold=0), labels=labels)
    target = np.argwhere(labels == 12)
    grid = np.argwhere(np.ones(shape, bool))
    dist = np.min(np.linalg.norm(grid[:, None, :] - target[None, :, :], axis=2), axis=1).reshape(shape)  # 1 mm voxels
    expected = dist > 10.0
    np.testing.assert_array_equal(th.drift_ref, expected)
    assert th.drift_rule["voxels"] == int(expected.sum())


def test_time_above_threshold_is_summed_over_frames():
    """Nerve root warms linearly 40 -> 50 C over 20 s, holds 10 s, cools to 40 C over 20 s: time above 45 C is
    10 s + 10 s + 10 s = 30 s (hand calculation); the alarm fires at the first frame at or above 45 C."""
    times = np.array([0.0, 5.0, 10.0, 30.0, 40.0, 60.0])
    temp = np.array([37.0, 37.0, 40.0, 50.0, 50.0, 40.0])
    shape = (1, 12, 12)
    labels = np.full(shape, 3, np.int16)
    labels[0, 4:8, 4:8] = 11  # nerve root
    phase = np.zeros((len(times),) + shape)
    phase[:, labels == 11] = (K * (temp - 37.0))[:, None]
    params = ThermometryParams(baseline_frames=2, drift_order=0, snr_threshold=0)
    th, _ = _run(phase, times, params, labels=labels, drift_roi=(labels != 11).astype(np.int16))
    rows, alarms = th.protected_structures()
    root = next(r for r in rows if r["structure"] == "nerve root")
    assert root["max_time_above_45c_s"] == pytest.approx(30.0, abs=1e-3)
    assert root["max_temperature_c"] == pytest.approx(50.0, abs=1e-3)
    first = next(a for a in alarms if a["quantity"] == "temperature")
    assert first["frame"] == 3 and first["time_s"] == 30.0


def test_lesion_volume_counts_voxels_at_or_above_the_level():
    """Two voxels of 1 x 2 x 3 mm (6 uL each) reach 240 CEM43 (hand: 1 h held at 47 C gives 60 x 2^4 = 960)."""
    times = np.array([0.0, 1.0, 2.0, 3602.0])
    temp = np.array([37.0, 37.0, 47.0, 47.0])
    shape = (1, 6, 6)
    hot = np.zeros(shape, bool)
    hot[0, 2, 2:4] = True
    phase = np.zeros((4,) + shape)
    phase[:, hot] = (K * (temp - 37.0))[:, None]
    frames = [(np.full(shape, 100.0, np.float32), phase[t].astype(np.float32), True) for t in range(4)]
    aff = np.diag([1.0, 2.0, 3.0, 1.0])
    params = ThermometryParams(baseline_frames=2, drift_correction=False, snr_threshold=0)
    th = Thermometer(shape, aff, TE, B0, frames[:2], params)
    for f, t in zip(frames, times):
        th.update(f, t)
    result = mrtherm.ThermometryResult.from_thermometer(th)
    assert np.asarray(th.dose_cem43_min)[hot].min() > 960.0  # plus the 1 s ramp
    assert result.lesion_volumes_ml[240.0] == pytest.approx(2 * 6e-3, rel=1e-12)


def test_phase_sign_flips_the_temperature():
    nt, shape = 5, (1, 8, 8)
    delta = np.array([0, 0, 0, 5.0, 10.0])
    phase = np.broadcast_to((K * delta)[:, None, None, None], (nt,) + shape).copy()
    params = ThermometryParams(baseline_frames=3, drift_correction=False, snr_threshold=0, phase_sign=-1)
    _, temps = _run(phase, np.arange(nt) * 1.0, params)
    np.testing.assert_allclose(temps[:, 0, 0, 0], 37.0 - delta, atol=1e-4)


def test_temporal_unwrap_follows_more_than_two_wraps():
    """A ramp to 100 C rise (about 2.6 wraps at TE 10 ms, 3 T) in steps under half a wrap is followed exactly."""
    rise = np.linspace(0, 100, 41)
    rise = np.concatenate([[0, 0], rise])
    phase = np.angle(np.exp(1j * K * rise))[:, None, None, None] * np.ones((1, 1, 4, 4))
    _, temps = _run(phase, np.arange(len(rise)) * 1.0, ThermometryParams(baseline_frames=2, drift_correction=False,
                                                                          snr_threshold=0))
    np.testing.assert_allclose(temps[:, 0, 0, 0], 37.0 + rise, atol=1e-3)


def test_alpha_is_used_by_every_prf_conversion():
    """Hand values: at 3 T, TE 10 ms, gammabar 42.577478 MHz/T, alpha -0.02 ppm/C the phase moves
    2 pi * 42.577478e6 * 3 * 0.01 * -0.02e-6 rad per C; one wrap (pi) is then 19.57 C, half the default's."""
    from mrtherm.thermometry.prf import celsius_per_wrap, phase_to_delta_celsius
    k = 2 * math.pi * 42.577478e6 * 3.0 * 0.010 * -0.02e-6
    assert celsius_per_wrap(0.010, 3.0, -0.02) == pytest.approx(math.pi / abs(k), rel=1e-6)
    assert phase_to_delta_celsius(1.0, 0.010, 3.0, -0.02) == pytest.approx(1.0 / k, rel=1e-6)


@pytest.mark.parametrize("times, message", [([0.0, float("nan"), 3.0], "times_s must be finite"),
                                            ([0.0, 2.0, 1.0], "times_s must be strictly increasing"),
                                            ([0.0, 1.0], "times_s has 2 samples but temperature_c has 3 along axis 0")])
def test_dose_time_errors_say_what_is_wrong(times, message):
    from mrtherm import ParameterError, cem43
    with pytest.raises(ParameterError, match=f"^{message}$"):
        cem43(np.full(3, 44.0), times)
