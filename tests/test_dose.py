"""CEM43 against reference values and the analytic integral."""

import math

import numpy as np
import pytest
from scipy import integrate

from mrtherm import cem43, ParameterError
from mrtherm.thermometry.dose import cem43_segment, time_above_segment


@pytest.mark.parametrize("temp_c, minutes, expected", [
    (43.0, 240.0, 240.0),   # definition of the threshold
    (44.0, 120.0, 240.0),   # R = 0.5 above 43 C
    (42.0, 60.0, 15.0),     # R = 0.25 below 43 C
    (37.0, 60.0, 60 * 0.25 ** 6),
])
def test_constant_temperature_reference_values(xp, temp_c, minutes, expected):
    temps = xp.asarray([temp_c, temp_c], dtype=xp.float64)
    got = cem43(temps, [0.0, minutes * 60.0])
    assert float(got) == pytest.approx(expected, rel=1e-12)


def _numerical(t0, t1, dt_min):
    f = lambda s: (0.5 if t0 + (t1 - t0) * s / dt_min >= 43 else 0.25) ** (43 - (t0 + (t1 - t0) * s / dt_min))
    brk = [dt_min * (43 - t0) / (t1 - t0)] if (t0 - 43) * (t1 - 43) < 0 else None
    return integrate.quad(f, 0, dt_min, points=brk, epsabs=1e-13, epsrel=1e-13)[0]


@pytest.mark.parametrize("t0, t1", [(40.0, 50.0), (50.0, 40.0), (42.0, 43.0), (43.0, 60.0), (30.0, 42.9),
                                    (60.0, 60.000001), (80.0, 43.0)])
def test_linear_ramp_is_exact(t0, t1):
    """A ramp across (or to) 43 C: the split exact integral equals adaptive quadrature."""
    dt_min = 2.0
    got = float(cem43_segment(np.array(t0), np.array(t1), dt_min))
    assert got == pytest.approx(_numerical(t0, t1, dt_min), rel=1e-9)


def test_ramp_closed_form_across_43():
    # 41 -> 45 C over 4 min: 2 min below (R=0.25) and 2 min above (R=0.5), each exact.
    below = 2.0 * (0.25 ** 2 - 1.0) / (math.log(0.25) * (43 - 41))  # int_0^2 0.25^(2 - s) ds
    below = (1 - 0.25 ** 2) / -math.log(0.25)
    above = (2 ** 2 - 1) / math.log(2)
    got = float(cem43(np.array([41.0, 45.0]), np.array([0.0, 240.0])))
    assert got == pytest.approx(below + above, rel=1e-12)


def test_exact_beats_rectangle_sum_at_sparse_frames():
    """Sparse sampling of a true ramp: the exact integral is the ramp's dose, the rectangle sum is not.

    Analytic truth: for T rising linearly from 43 to 55 C over 60 s (R = 0.5 throughout), the dose is
    integral 2**(T-43) dt/60 = (2**12 - 1) / (12 ln 2) min; the falling half gives the same again.
    """
    times = np.array([0.0, 60.0, 120.0])
    temps = np.array([43.0, 55.0, 43.0])
    exact = float(cem43(temps, times))
    reference = 2 * (2.0 ** 12 - 1) / (12 * math.log(2))
    assert exact == pytest.approx(reference, rel=1e-12)
    rectangle = sum(0.5 ** (43 - T) * 1.0 for T in temps[:-1])
    assert abs(rectangle - reference) / reference > 0.5


def test_axis_and_nan(xp):
    temps = xp.asarray(np.array([[43.0, float("nan")], [43.0, 50.0]]).T)  # time along axis 1
    got = cem43(temps, [0.0, 60.0], axis=1)
    assert float(got[0]) == pytest.approx(1.0)
    assert math.isnan(float(got[1]))


def test_result_kind_follows_input(xp):
    temps = xp.asarray(np.full((3, 2, 2), 44.0))
    got = cem43(temps, np.array([0.0, 30.0, 60.0]))
    assert type(got) is type(temps)
    assert got.dtype == xp.float64


@pytest.mark.parametrize("times", [[0.0, 0.0, 1.0], [0.0, 2.0, 1.0], [0.0, float("nan"), 3.0], [0.0, 1.0]])
def test_bad_times(times):
    with pytest.raises(ParameterError):
        cem43(np.full(3, 44.0), times)


def test_time_above_threshold():
    # 40 -> 50 C over 10 s: above 45 C for 5 s
    assert float(time_above_segment(np.array(40.0), np.array(50.0), 10.0, 45.0)) == pytest.approx(5.0)
    assert float(time_above_segment(np.array(46.0), np.array(46.0), 10.0, 45.0)) == pytest.approx(10.0)
    assert float(time_above_segment(np.array(44.0), np.array(44.0), 10.0, 45.0)) == 0.0


def test_short_ramp_is_exact_where_the_series_expansion_would_not_be():
    """44 -> 45 C in 1 min: integral of 0.5**(43 - 44 - t) over t in [0, 1] = 2 (2 - 1) / ln 2 = 2.885390 min."""
    got = float(cem43_segment(np.array(44.0), np.array(45.0), 1.0))
    assert got == pytest.approx(2.0 / math.log(2.0), rel=1e-12)
    # below 43 C: 41 -> 42 C in 1 min, integral of 0.25**(2 - t) = (1/16) (4 - 1) / ln 4
    got = float(cem43_segment(np.array(41.0), np.array(42.0), 1.0))
    assert got == pytest.approx(3.0 / 16.0 / math.log(4.0), rel=1e-12)


def test_segment_is_computed_in_float64_for_float32_maps():
    """Temperature maps are float32; the dose of a segment is computed from their float64 values."""
    t0 = np.array([43.3, 50.7, 38.1], dtype=np.float32)
    t1 = np.array([47.9, 44.2, 61.3], dtype=np.float32)
    got = cem43_segment(t0, t1, 0.1)
    assert got.dtype == np.float64
    assert np.array_equal(got, cem43_segment(t0.astype(np.float64), t1.astype(np.float64), 0.1))


def test_time_above_is_strictly_above():
    # README: time above 45 C counts time *strictly above*; a voxel resting exactly at 45 C adds nothing
    assert float(time_above_segment(np.array(45.0), np.array(45.0), 10.0, 45.0)) == 0.0


def _segments_by_hand():
    """Five one-minute ramps and their doses: integral of R**(43 - T(t)) dt, R = 0.25 below, 0.5 above 43 C."""
    ln2, ln4 = math.log(2.0), math.log(4.0)
    t0 = np.array([40.0, 42.5, 44.0, 41.0, 30.0])
    t1 = np.array([41.0, 43.5, 46.0, 45.0, 31.0])
    dose = [3.0 / (64.0 * ln4),                                     # 0.25^3 int_0^1 4^t dt
            0.5 / ln4 + (math.sqrt(2.0) - 1.0) / ln2,               # 0.5 min each side; span exactly 1 C
            3.0 / ln2,                                              # int_0^1 2^(1 + 2t) dt
            0.25 * (1.0 - 0.0625) / ln4 + 0.75 / ln2,               # 41 -> 43 in 0.5 min, then 43 -> 45
            0.25 ** 13 * 3.0 / ln4]
    return t0, t1, np.array(dose)


def test_only_segments_through_43_are_split_and_durations_may_vary_per_voxel(monkeypatch):
    import array_api_strict

    import mrtherm.thermometry.dose as dose_mod
    sizes, real = [], dose_mod._regime_piece

    def spy(t0, t1, *args):
        sizes.append(int(np.prod(t0.shape)))
        return real(t0, t1, *args)

    monkeypatch.setattr(dose_mod, "_regime_piece", spy)
    t0, t1, expected = _segments_by_hand()
    np.testing.assert_allclose(cem43_segment(t0, t1, 1.0), expected, rtol=1e-12)
    assert sizes == [2, 2]  # NumPy: only the two segments through 43 C are split (both regimes)
    sizes.clear()
    np.testing.assert_allclose(cem43_segment(t0, t1, np.full(5, 1.0)), expected, rtol=1e-12)
    assert sizes == [5, 5]  # a duration per voxel: the general path (where) over every voxel
    sizes.clear()
    np.testing.assert_allclose(cem43_segment(t0[:, None], t1[:, None], 1.0)[:, 0], expected, rtol=1e-12)
    assert sizes == [2, 2]  # any number of dimensions
    sizes.clear()
    got = cem43_segment(array_api_strict.asarray(t0), array_api_strict.asarray(t1), 1.0)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12)
    assert sizes == [5, 5]  # no boolean-mask assignment in the array API: where over every voxel


def test_lesion_masks_and_volumes_by_hand():
    """A voxel exactly at a level is in its lesion; an unmeasured (NaN) voxel is in none, however low the level."""
    from mrtherm.thermometry.dose import lesion_masks, lesion_volumes_ml
    dose = np.array([[[240.0, 239.999, np.nan, 0.75, 1e6]]])
    masks = lesion_masks(dose, [240, 0.5])
    assert list(masks) == [240.0, 0.5] and all(isinstance(k, float) for k in masks)
    np.testing.assert_array_equal(masks[240.0], [[[True, False, False, False, True]]])
    np.testing.assert_array_equal(masks[0.5], [[[True, True, False, True, True]]])
    assert lesion_volumes_ml(dose, [240, 0.5], 0.25) == {240.0: 0.5, 0.5: 1.0}


def test_map_figures_by_hand():
    from mrtherm.thermometry.dose import map_figures
    dose = np.array([[[np.nan, 30.0, 300.0], [0.0, 240.0, np.nan]]])
    tmax = np.array([[[np.nan, 44.5, 61.25], [37.0, 52.0, np.nan]]])
    assert map_figures(dose, tmax, 0.5, [240, 30]) == {
        "peak_temperature_c": 61.25, "max_dose_cem43_min": 300.0, "lesion_volumes_ml": {"240": 1.0, "30": 1.5}}
    nothing = np.full((1, 1, 2), np.nan)
    assert map_figures(nothing, nothing, 0.5, [240]) == {
        "peak_temperature_c": None, "max_dose_cem43_min": None, "lesion_volumes_ml": {"240": 0.0}}
