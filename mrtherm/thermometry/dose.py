"""Thermal dose: cumulative equivalent minutes at 43 C (CEM43).

``CEM43 = integral R**(43 - T(t)) dt`` in minutes with ``R = 0.5`` for
``T >= 43 C`` and ``R = 0.25`` below (Sapareto & Dewey 1984). Between two
frames the temperature is taken as *linear in time*, and the integral of the
exponential is evaluated exactly, split at the 43 C crossing. This is exact for
piecewise-linear temperature histories, unlike the common rectangle sum
``sum R**(43 - T_i) dt`` which over- or under-estimates at sparse frame times.
"""

from __future__ import annotations

import math

from mrtherm.backend import namespace
from mrtherm.errors import ParameterError

LN_R_ABOVE = math.log(0.5)
LN_R_BELOW = math.log(0.25)
BREAKPOINT_C = 43.0
DEFAULT_NECROSIS_CEM43_MIN = 240.0
COMMERCIAL_LEVELS_CEM43_MIN = (17.0, 40.0, 100.0, 200.0, 240.0)


def _one_minus_exp_over(d, xp):
    """(1 - exp(-d)) / d, stable near d = 0 (limit 1)."""
    small = xp.abs(d) < 1e-6
    safe = xp.where(small, xp.ones_like(d), d)
    return xp.where(small, 1.0 - 0.5 * d, -xp.expm1(-safe) / safe)


def _regime_piece(t0, t1, dt_min, ln_r, below: bool, xp):
    """Exact integral over the part of a linear segment inside one R regime."""
    if below:
        a0, a1 = xp.minimum(t0, BREAKPOINT_C), xp.minimum(t1, BREAKPOINT_C)
        inside_if_flat = t0 < BREAKPOINT_C
    else:
        a0, a1 = xp.maximum(t0, BREAKPOINT_C), xp.maximum(t1, BREAKPOINT_C)
        inside_if_flat = t0 >= BREAKPOINT_C
    span = t1 - t0
    flat = span == 0
    safe_span = xp.where(flat, xp.ones_like(span), span)
    frac = xp.where(flat, xp.astype(inside_if_flat, span.dtype), (a1 - a0) / safe_span)
    g0 = xp.exp(ln_r * (BREAKPOINT_C - a0))
    d = ln_r * (a1 - a0)  # integrand ratio g(a1)/g(a0) = exp(-d)
    return dt_min * frac * g0 * _one_minus_exp_over(d, xp)


def cem43_segment(t0_c, t1_c, dt_min):
    """CEM43 minutes accrued while temperature goes linearly from ``t0_c`` to ``t1_c``.

    A segment on one side of 43 C costs one ``exp`` and one ``expm1`` (``R`` of that side); only segments
    through 43 C are split there, and on NumPy and CuPy only those voxels are computed twice.

    Parameters
    ----------
    t0_c, t1_c : arrays of temperature in C (computed in float64)
    dt_min : float or array, duration in minutes (>= 0)

    Returns
    -------
    array, float64, CEM43 minutes; NaN where either temperature is NaN.
    """
    xp = namespace(t0_c, t1_c)
    t0, t1 = xp.astype(t0_c, xp.float64), xp.astype(t1_c, xp.float64)
    hi0, hi1 = t0 >= BREAKPOINT_C, t1 >= BREAKPOINT_C
    # Most segments stay on one side of 43 C: one exponential and one expm1 per voxel, with that side's R.
    ln_r = xp.where(hi0, xp.asarray(LN_R_ABOVE, dtype=xp.float64), xp.asarray(LN_R_BELOW, dtype=xp.float64))
    g0 = xp.exp(ln_r * (BREAKPOINT_C - t0))
    out = dt_min * g0 * _one_minus_exp_over(ln_r * (t1 - t0), xp)
    cross = hi0 != hi1
    if not bool(xp.any(cross)):
        return out
    # the few segments through 43 C: split there (both regimes), on those voxels only where the library can
    if _masks_in_place(xp) and getattr(out, "ndim", 0) > 0 and getattr(dt_min, "ndim", 0) == 0:
        a, b = t0[cross], t1[cross]
        out[cross] = _regime_piece(a, b, dt_min, LN_R_BELOW, True, xp) + \
            _regime_piece(a, b, dt_min, LN_R_ABOVE, False, xp)
        return out
    split = _regime_piece(t0, t1, dt_min, LN_R_BELOW, True, xp) + _regime_piece(t0, t1, dt_min, LN_R_ABOVE, False, xp)
    return xp.where(cross, split, out)


def _masks_in_place(xp) -> bool:
    """NumPy and CuPy arrays take boolean-mask assignment; the generic path uses ``where``."""
    import array_api_compat  # noqa: PLC0415
    return array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp)


def time_above_segment(t0_c, t1_c, dt_s, threshold_c):
    """Seconds of a linear segment spent strictly above ``threshold_c``.

    Parameters
    ----------
    t0_c, t1_c : array, C
        Temperatures at the start and end of the segment (same shape or broadcastable).
    dt_s : float
        Segment duration, s.
    threshold_c : float
        C.

    Returns
    -------
    array, s
        Time above the threshold, temperature linear in time (exact crossing); a segment resting exactly at
        the threshold adds nothing.

    Examples
    --------
    >>> import numpy as np
    >>> float(time_above_segment(np.array(40.0), np.array(50.0), 10.0, 45.0))
    5.0
    """
    xp = namespace(t0_c, t1_c)
    span = t1_c - t0_c
    flat = span == 0
    safe = xp.where(flat, xp.ones_like(span), span)
    hi0 = xp.maximum(t0_c, threshold_c)
    hi1 = xp.maximum(t1_c, threshold_c)
    frac = xp.where(flat, xp.astype(t0_c > threshold_c, span.dtype), xp.abs(hi1 - hi0) / xp.abs(safe))
    return dt_s * frac


def cem43(temperature_c, times_s, axis: int = 0):
    """CEM43 in minutes by the exact integral of a piecewise-linear temperature history.

    Parameters
    ----------
    temperature_c : array, C
        Temperatures sampled at ``times_s`` along ``axis``; NaN propagates.
    times_s : 1-D array, s
        Strictly increasing sample times, one per sample along ``axis``.
    axis : int
        Time axis of ``temperature_c``.

    Returns
    -------
    array, float64, CEM43 minutes, the shape of ``temperature_c`` without ``axis``,
    in the array library of ``temperature_c``.

    Examples
    --------
    43 C held for 240 min gives 240 CEM43; 44 C for 120 min also gives 240.

    >>> import numpy as np
    >>> float(cem43(np.array([44.0, 44.0]), np.array([0.0, 7200.0])))
    240.0
    """
    xp = namespace(temperature_c)
    temps = xp.moveaxis(xp.asarray(temperature_c), axis, 0)
    times = [float(v) for v in _to_list(times_s)]
    if len(times) != temps.shape[0]:
        raise ParameterError(
            f"times_s has {len(times)} samples but temperature_c has {temps.shape[0]} along axis {axis}"
        )
    if any(not math.isfinite(t) for t in times):
        raise ParameterError("times_s must be finite")
    if any(b <= a for a, b in zip(times, times[1:])):
        raise ParameterError("times_s must be strictly increasing")
    total = xp.zeros(temps.shape[1:], dtype=xp.float64)
    for i in range(len(times) - 1):
        total = total + cem43_segment(temps[i, ...], temps[i + 1, ...], (times[i + 1] - times[i]) / 60.0)
    return total


def _to_list(values):
    try:
        return list(values.tolist())
    except AttributeError:
        return list(values)


def lesion_masks(dose_cem43_min, levels_cem43_min) -> dict:
    """``{level: mask}``: voxels whose dose reached each level (the one definition of a lesion).

    Parameters
    ----------
    dose_cem43_min : ndarray, shape (z, y, x)
        CEM43 min; NaN (not measured) counts as no dose.
    levels_cem43_min : sequence of float

    Returns
    -------
    dict of float to ndarray of bool
    """
    import numpy as np  # noqa: PLC0415 -- the scalar functions above work without NumPy arrays
    dose = np.asarray(dose_cem43_min)
    return {float(lev): dose >= lev for lev in levels_cem43_min}  # NaN compares False: not measured, no lesion


def lesion_volumes_ml(dose_cem43_min, levels_cem43_min, voxel_volume_ml: float) -> dict:
    """``{level: mL}``: the volume of :func:`lesion_masks` at each level.

    Examples
    --------
    >>> import numpy as np
    >>> lesion_volumes_ml(np.array([[[10.0, 300.0, np.nan, 240.0]]]), [240.0], 0.5)
    {240.0: 1.0}

    Parameters
    ----------
    dose_cem43_min : ndarray, shape (z, y, x)
        CEM43 min; NaN counts as no dose.
    levels_cem43_min : sequence of float
    voxel_volume_ml : float
        mL per voxel.

    Returns
    -------
    dict of float to float
    """
    return {lev: float(mask.sum() * voxel_volume_ml) for lev, mask in
            lesion_masks(dose_cem43_min, levels_cem43_min).items()}


def map_figures(dose_cem43_min, tmax_c, voxel_volume_ml: float, levels_cem43_min) -> dict:
    """The figures of a dose and a Tmax map every report states: peak, maximum dose and lesion volumes.

    Parameters
    ----------
    dose_cem43_min, tmax_c : ndarray, shape (z, y, x)
        NaN where not measured.
    voxel_volume_ml : float
    levels_cem43_min : sequence of float

    Returns
    -------
    dict
        ``peak_temperature_c`` and ``max_dose_cem43_min`` (None when nothing is measured), and
        ``lesion_volumes_ml`` keyed as report.json writes the levels (``"240"``).
    """
    import numpy as np  # noqa: PLC0415
    dose, tmax = np.asarray(dose_cem43_min), np.asarray(tmax_c)
    volumes = lesion_volumes_ml(dose, levels_cem43_min, voxel_volume_ml)
    return {"peak_temperature_c": float(np.nanmax(tmax)) if np.isfinite(tmax).any() else None,
            "max_dose_cem43_min": float(np.nanmax(dose)) if np.isfinite(dose).any() else None,
            "lesion_volumes_ml": {f"{lev:g}": v for lev, v in volumes.items()}}
