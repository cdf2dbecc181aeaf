"""PRF conversion, phase differences and temporal unwrapping."""

import math

import numpy as np
import pytest

from mrtherm import ParameterError
from mrtherm.thermometry.prf import (celsius_per_wrap, phase_difference, phase_to_delta_celsius, radians_per_celsius,
                         theoretical_sigma_celsius, unwrap_step, unwrap_time)


def test_conversion_factor_value():
    # 2 pi * 42.577478e6 * -0.01e-6 * 3 T * 0.010 s = -0.0802566 rad/C
    assert radians_per_celsius(0.010, 3.0) == pytest.approx(-0.08025666, rel=1e-6)
    # DESIGN: at 3 T and TE 10 ms one wrap (pi) is about 39 C
    assert celsius_per_wrap(0.010, 3.0) == pytest.approx(39.14, abs=0.01)


def test_heating_gives_negative_phase_and_sign_option():
    k = radians_per_celsius(0.012, 3.0)
    assert float(phase_to_delta_celsius(np.float64(k * 10.0), 0.012, 3.0)) == pytest.approx(10.0)
    assert float(phase_to_delta_celsius(np.float64(-k * 10.0), 0.012, 3.0, phase_sign=-1)) == pytest.approx(10.0)
    with pytest.raises(ParameterError, match="phase_sign"):
        phase_to_delta_celsius(np.float64(0.1), 0.012, 3.0, phase_sign=2)


@pytest.mark.parametrize("bad", [dict(te_s=0.0), dict(b0_t=-1.0), dict(alpha_ppm_per_c=0.0)])
def test_bad_physics_parameters_name_argument(bad):
    kw = dict(te_s=0.01, b0_t=3.0, alpha_ppm_per_c=-0.01) | bad
    with pytest.raises(ParameterError, match=next(iter(bad))):
        radians_per_celsius(**kw)


def test_phase_difference(xp):
    a = xp.asarray(np.exp(1j * np.array([3.0, -3.0, 0.5])).astype(np.complex64))
    b = xp.asarray(np.exp(1j * np.array([-3.0, 3.0, 0.2])).astype(np.complex64))
    d = phase_difference(a, b)
    assert d.dtype == xp.float32
    np.testing.assert_allclose(np.asarray(d), [6.0 - 2 * np.pi, -6.0 + 2 * np.pi, 0.3], atol=1e-5)


def test_temperature_rise_beyond_one_wrap_recovered(xp):
    """A 0 -> 80 C rise (more than two wraps at 3 T, TE 12 ms) is followed frame by frame."""
    te, b0 = 0.012, 3.0
    k = radians_per_celsius(te, b0)
    rise = np.concatenate([np.linspace(0, 80, 30), np.linspace(80, 5, 25)])
    true_phase = k * rise
    wrapped = np.angle(np.exp(1j * true_phase))
    assert np.abs(true_phase).max() > 2 * np.pi
    got = unwrap_time(xp.asarray(wrapped[:, None]), axis=0)
    np.testing.assert_allclose(np.asarray(got)[:, 0], true_phase, atol=1e-9)
    step = unwrap_step(xp.asarray(np.array([3.0])), xp.asarray(np.array([-3.0])))
    assert float(step[0]) == pytest.approx(3.0 - 2 * np.pi)


def test_theoretical_sigma():
    # sqrt(1 + 1/4) / (0.0802567 * 20)
    assert theoretical_sigma_celsius(20.0, 4, 0.010, 3.0) == pytest.approx(math.sqrt(1.25) / (0.08025666 * 20), rel=1e-6)


def test_unwrap_time_runs_along_the_first_axis_by_default_and_keeps_the_array_kind(xp):
    """(t, n) series with t != n: the default axis is time (0); the result is in the input's library."""
    steps = np.array([[0.0, 3.0, 6.0, 9.0, 12.0]]).T * np.array([[1.0, -1.0]])  # (5, 2): 3 rad per frame
    wrapped = np.angle(np.exp(1j * steps))
    got = unwrap_time(xp.asarray(wrapped))
    assert type(got) is type(xp.asarray(wrapped))
    np.testing.assert_allclose(np.asarray(got), steps, atol=1e-12)


def test_field_strength_must_be_positive_and_low_fields_are_fine():
    with pytest.raises(ParameterError, match="b0_t must be a positive field strength in tesla, got 0.0"):
        radians_per_celsius(0.01, 0.0)
    # 0.55 T (low-field MR): 2 pi x 42.577478e6 x -0.01e-6 x 0.55 x 0.01
    assert radians_per_celsius(0.01, 0.55) == pytest.approx(2 * math.pi * 42.577478 * -0.01 * 0.55 * 0.01, rel=1e-12)


def test_theoretical_sigma_needs_a_baseline_frame():
    with pytest.raises(ParameterError) as err:
        theoretical_sigma_celsius(20.0, 0, 0.010, 3.0)
    assert str(err.value) == "n_baseline must be >= 1, got 0"
