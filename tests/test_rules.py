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
    """A uniform jump of 6 C-equivalent at frame 5 and back at frame 7: every voxel is an outlier of the previous
    drift in those two frames, so the fit falls back to the reference without the outlier cut (counted once per
    frame), and the jumps are removed as drift."""
    nt, shape = 8, (2, 16, 16)
    jump = np.zeros(nt)
    jump[5:7] = 6.0
    phase = np.broadcast_to((K * jump)[:, None, None, None], (nt,) + shape).copy()
    th, temps = _run(phase, np.arange(nt) * 3.0, ThermometryParams(baseline_frames=3, drift_order=0,
                                                                    snr_threshold=0))
    np.testing.assert_allclose(temps[5:], 37.0, atol=1e-3)
    assert th.fallback_frames == 2


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


def test_a_clean_exam_has_no_fallback_frames_and_integer_reference_counts():
    phase = np.zeros((5, 2, 8, 8))
    th, _ = _run(phase, np.arange(5) * 1.0, ThermometryParams(baseline_frames=2, drift_order=0, snr_threshold=0))
    assert th.fallback_frames == 0
    assert all(c.dtype == np.int64 and c.tolist() == [64, 64] for c in th.reference_voxels)


def test_drift_fit_weights_by_magnitude_squared():
    """User reference over the whole slice, order 0. Absolute phase 1 rad at baseline; later half the slice
    (magnitude 1) moves +0.3 rad, the other half (magnitude 3) +0.1 rad. Weighted mean drift with |S|^2 weights:
    (1 x 0.3 + 9 x 0.1) / 10 = 0.12 rad; temperatures 37 + (0.3 - 0.12) / k and 37 + (0.1 - 0.12) / k."""
    shape = (1, 8, 8)
    left = np.zeros(shape, bool)
    left[:, :, :4] = True
    mag = np.where(left, 1.0, 3.0).astype(np.float32)
    moved = np.where(left, 1.3, 1.1).astype(np.float32)
    frames = [(mag, np.full(shape, 1.0, np.float32), True)] * 2 + [(mag, moved, True)]
    th = Thermometer(shape, np.eye(4), TE, B0, frames[:2], ThermometryParams(baseline_frames=2, drift_order=0,
                                                                              snr_threshold=0),
                     drift_roi=np.ones(shape, np.int16))
    temps = [np.asarray(th.update(f, float(t))) for t, f in enumerate(frames)]
    np.testing.assert_allclose(temps[2][left], 37 + (0.3 - 0.12) / K, atol=1e-4)
    np.testing.assert_allclose(temps[2][~left], 37 + (0.1 - 0.12) / K, atol=1e-4)


def test_alpha_scales_the_thermometer_temperature():
    """alpha -0.00909 ppm/C (ExAblate): a phase of 10 C at the default alpha reads 10 / 0.909 C."""
    phase = np.zeros((4, 1, 4, 4))
    phase[3] = K * 10.0
    _, temps = _run(phase, np.arange(4) * 1.0, ThermometryParams(baseline_frames=2, drift_correction=False,
                                                                   snr_threshold=0, alpha_ppm_per_c=-0.00909))
    np.testing.assert_allclose(temps[3], 37.0 + 10.0 / 0.909, atol=1e-3)


def test_peak_curve_is_the_hottest_reliable_voxel_of_each_frame():
    """Masked voxels (here fat) never count, even when their phase says hotter."""
    shape = (1, 6, 6)
    rise = np.array([0.0, 0.0, 5.0, 12.0])
    phase = np.zeros((4,) + shape)
    phase[:, 0, 2, 2] = K * rise
    phase[:, 0, 5, 5] = K * 3 * rise
    labels = np.ones(shape, np.int16)
    labels[0, 5, 5] = 2
    frames = [(np.full(shape, 100.0, np.float32), phase[t].astype(np.float32), True) for t in range(4)]
    th = Thermometer(shape, np.eye(4), TE, B0, frames[:2], ThermometryParams(baseline_frames=2, snr_threshold=0,
                                                                              drift_correction=False), labels=labels)
    for t, f in enumerate(frames):
        th.update(f, float(t))
    np.testing.assert_allclose(th.peak_curve_c, 37.0 + rise, atol=1e-3)


def test_absurd_temperatures_give_a_capped_dose_and_no_warning():
    """A ramp to 1100 C (float64 R**(43 - T) overflows above ~1067 C) in steps under half a wrap: no
    RuntimeWarning reaches the user, and the dose map holds no inf (README)."""
    import warnings
    rise = np.concatenate([[0.0, 0.0], np.linspace(0.0, 1063.0, 40)])
    phase = np.angle(np.exp(1j * K * rise))[:, None, None, None] * np.ones((1, 1, 2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        th, temps = _run(phase, np.arange(rise.size) * 1.0, ThermometryParams(baseline_frames=2, snr_threshold=0,
                                                                                drift_correction=False))
        result = mrtherm.ThermometryResult.from_thermometer(th)
    assert temps[-1].max() == pytest.approx(1100.0, abs=0.01)
    assert np.all(np.isfinite(result.dose_cem43_min))


def test_baseline_statistics_use_only_the_baseline_frames():
    """Baseline deltas +a and -a, then a frame at +3a: the empirical SD stays sqrt(2) a (x sqrt(1.5))."""
    a = 0.5
    phase = np.broadcast_to((K * np.array([a, -a, 3 * a]))[:, None, None, None], (3, 1, 4, 4)).copy()
    th, _ = _run(phase, np.arange(3) * 1.0, ThermometryParams(baseline_frames=2, drift_correction=False,
                                                                snr_threshold=0))
    np.testing.assert_allclose(np.asarray(th.temperature_sd_c()), math.sqrt(2) * a * math.sqrt(1.5), rtol=1e-4)


def test_nothing_reliable_is_a_one_line_error():
    frames = [(np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 4), np.float32), True)] * 2
    with pytest.raises(mrtherm.ParameterError) as err:
        Thermometer((1, 4, 4), np.eye(4), TE, B0, frames, ThermometryParams(baseline_frames=2))
    assert str(err.value) == "no voxel passes the reliability mask (signal too low or all labels PRF-invalid)"


def test_anatomy_is_the_mean_baseline_magnitude():
    shape = (2, 3, 4)
    mags = [np.full(shape, v, np.float32) for v in (90.0, 110.0)]
    mags[1][1, 2, 3] = 130.0
    frames = [(m, np.zeros(shape, np.float32), True) for m in mags]
    th = Thermometer(shape, np.eye(4), TE, B0, frames, ThermometryParams(baseline_frames=2, snr_threshold=0,
                                                                          max_sd_theory_c=1e9))
    expected = np.full(shape, 100.0, np.float32)
    expected[1, 2, 3] = 110.0
    assert th.anatomy.dtype == np.float32
    np.testing.assert_allclose(th.anatomy, expected, rtol=1e-6)


def test_frames_from_another_array_library_are_brought_to_the_backend():
    """array-api-strict frames with backend="numpy": computed with NumPy, returned as NumPy arrays."""
    xps = pytest.importorskip("array_api_strict")
    shape = (1, 4, 4)
    frames = [(xps.asarray(np.full(shape, 100.0, np.float32)), xps.asarray(np.full(shape, v, np.float32)), True)
              for v in (0.0, 0.0, K * 5.0)]
    th = Thermometer(shape, np.eye(4), TE, B0, frames[:2], ThermometryParams(baseline_frames=2, snr_threshold=0,
                                                                              drift_correction=False),
                     backend="numpy")
    temps = [th.update(f, float(t)) for t, f in enumerate(frames)]
    assert isinstance(temps[2], np.ndarray)
    np.testing.assert_allclose(temps[2], 42.0, atol=1e-4)


def test_protected_structure_table_and_alarms_by_hand():
    """Two spinal-cord voxels, A: 37 37 47 47 41 C and B: 37 37 43 49 45 C at 0 10 20 40 50 s, and a nerve root
    without signal (not watched). Per frame the cord's max is 37 37 47 49 45 and its mean 37 37 45 48 43.
    Time above 45 C, temperature linear between frames: A 2 + 20 + 3.333 = 25.333 s, B 0 + 13.333 + 10 = 23.333 s.
    Alarms: 45 C first reached at frame 2 (47 C); 1 CEM43 first reached by the max dose (quadrature oracle)."""
    from mrtherm.thermometry.watch import format_alarm
    times = np.array([0.0, 10.0, 20.0, 40.0, 50.0])
    a_c = np.array([37.0, 37.0, 47.0, 47.0, 41.0])
    b_c = np.array([37.0, 37.0, 43.0, 49.0, 45.0])
    shape = (1, 6, 6)
    labels = np.ones(shape, np.int16)
    labels[0, 1, 1:3] = 10
    labels[0, 4, 4] = 11
    mag = np.full(shape, 100.0, np.float32)
    mag[0, 4, 4] = 0.0
    phase = np.zeros((times.size,) + shape, np.float32)
    phase[:, 0, 1, 1], phase[:, 0, 1, 2] = K * (a_c - 37), K * (b_c - 37)
    frames = [(mag, phase[t], True) for t in range(times.size)]
    th = Thermometer(shape, np.eye(4), TE, B0, frames[:2], ThermometryParams(baseline_frames=2,
                                                                              drift_correction=False),
                     labels=labels)
    for f, t in zip(frames, times):
        th.update(f, t)
    rows, alarms = th.protected_structures()
    dose_a = [_piecewise_cem43(a_c[:k + 1], times[:k + 1]) if k else 0.0 for k in range(times.size)]
    dose_b = [_piecewise_cem43(b_c[:k + 1], times[:k + 1]) if k else 0.0 for k in range(times.size)]
    max_dose = np.maximum(dose_a, dose_b)
    cord, root = rows
    assert root == {"label": 11, "structure": "nerve root", "voxels": 1, "reliable_voxels": 0}
    assert th.warnings == ["nerve root: no voxel with reliable phase; temperature not watched"]
    assert (cord["label"], cord["structure"], cord["voxels"], cord["reliable_voxels"]) == (10, "spinal cord", 2, 2)
    assert cord["max_temperature_c"] == pytest.approx(49.0, abs=1e-3) and cord["time_of_max_s"] == 40.0
    assert cord["max_c_curve"] == pytest.approx([37, 37, 47, 49, 45], abs=1e-3)
    assert cord["mean_c_curve"] == pytest.approx([37, 37, 45, 48, 43], abs=1e-3)
    assert cord["max_time_above_45c_s"] == pytest.approx(2 + 20 + 10 / 3, abs=1e-3)
    assert cord["max_dose_cem43_min"] == pytest.approx(max_dose[-1], rel=1e-4)
    first_dose = int(np.flatnonzero(max_dose >= 1.0)[0])
    assert [(a["quantity"], a["frame"]) for a in alarms] == sorted(
        [("temperature", 2), ("dose", first_dose)], key=lambda q: (times[q[1]], q[0] != "temperature"))
    temp_alarm = next(a for a in alarms if a["quantity"] == "temperature")
    assert temp_alarm == {"structure": "spinal cord", "label": 10, "quantity": "temperature", "threshold": 45.0,
                          "unit": "C", "value": pytest.approx(47.0, abs=1e-3), "frame": 2, "time_s": 20.0}
    assert format_alarm(temp_alarm) == "ALARM spinal cord: temperature 47 C >= 45 C at t = 20.0 s"
    assert format_alarm(temp_alarm, celsius="°C") == "ALARM spinal cord: temperature 47 °C >= 45 °C at t = 20.0 s"
    assert format_alarm(dose_alarm := next(a for a in alarms if a["quantity"] == "dose")).startswith(
        "ALARM spinal cord: dose ") and " CEM43 min >= 1 CEM43 min at t = " in format_alarm(dose_alarm)
    cold = {"structure": "nerve root", "quantity": "temperature", "value": 9.6, "threshold": 10.0, "unit": "C",
            "time_s": 84.0, "comparison": "<="}  # a cryoablation cold alarm
    assert format_alarm(cold) == "ALARM nerve root: temperature 9.6 C <= 10 C at t = 84.0 s"
    dose_alarm = next(a for a in alarms if a["quantity"] == "dose")
    assert dose_alarm["unit"] == "CEM43 min" and dose_alarm["threshold"] == 1.0
    assert dose_alarm["value"] == pytest.approx(max_dose[first_dose], rel=1e-4)


def test_alarm_fires_when_the_threshold_is_reached_exactly():
    """README: an alarm when the structure's maximum *reaches* 45 C; here the threshold is set to the maximum the
    nerve root reaches, and the alarm fires at that frame."""
    times = np.array([0.0, 5.0, 10.0, 15.0])
    shape = (1, 6, 6)
    labels = np.full(shape, 3, np.int16)
    labels[0, 2:4, 2:4] = 11
    phase = np.zeros((4,) + shape)
    phase[:, labels == 11] = (K * np.array([0.0, 0.0, 5.0, 9.0]))[:, None]
    params = ThermometryParams(baseline_frames=2, drift_correction=False, snr_threshold=0)
    th, _ = _run(phase, times, params, labels=labels)
    reached = th.protected_structures()[0][0]["max_c_curve"][3]
    import dataclasses
    th, _ = _run(phase, times, dataclasses.replace(params, alarm_temperature_c=reached), labels=labels)
    alarm = next(a for a in th.protected_structures()[1] if a["quantity"] == "temperature")
    assert alarm["frame"] == 3 and alarm["value"] == reached == alarm["threshold"]
