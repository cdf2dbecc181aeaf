"""Background noise fits for one magnitude frame: values the scanner blanked, quantisation, the Rayleigh
air background and the chi background of sum-of-squares coil combination (see :mod:`mrtherm.thermometry.noise`
for the decision between them and the tissue estimate)."""

from __future__ import annotations

import functools
import math

import numpy as np

_K = math.sqrt(-2.0 * math.log(0.01))  # 99th percentile of Rayleigh(1)
_TAIL = math.exp(-_K * _K / 2.0)  # = 0.01
_TRUNC_M2 = 2.0 * (1.0 - (_K * _K / 2.0) * _TAIL / (1.0 - _TAIL))  # E[m^2 | m < K] for sigma = 1
MIN_BACKGROUND_VOXELS = 200  # fewer voxels give a sigma too noisy to set a mask by
MIN_BACKGROUND_FRACTION = 0.02  # a "background" under 2 % of the volume is a few dark voxels, not air
REJECT_KS_DISTANCE = 0.25
"""A 'background' farther than this (Kolmogorov-Smirnov) from its model is not a noise background. Real
backgrounds depart from Rayleigh (coil combination, filters): 0.05-0.18 on the vendored Siemens sets."""
REJECT_KS_ALL_BACKGROUND = 0.05
"""When nearly the whole image (> 90 %) would be 'background' it must be Rayleigh noise closely: a smooth
tissue-only image otherwise passes as a broad background."""
WARN_KS_DISTANCE = 0.10  # a background this far from its model is used, with a warning
KS_MAX_VALUES = 20000  # KS distances from every k-th order statistic, at most 20000: within 1e-4 of all
LOWER_TAIL_QUANTILE = 0.05  # the fitted model's 5 % quantile ...
LOWER_TAIL_MIN_RATIO = 0.25
"""... must hold at least 0.25 x its 5 % of the background voxels: air that a scanner blanked below a level
(left truncated) has none there. With 200 voxels noise holds fewer in 0.3 % of images (Poisson 10, <= 2); the
vendored Siemens background, clipped at 0, holds 0.34 x and passes."""

BLANK_MIN_FRACTION = 0.01  # a blank value covers >= 1 % of the voxels: fewer cannot move a robust estimate
BLANK_PLATEAU_FRACTION = 0.25
"""A value is a plateau when >= 25 % of its voxels equal all four in-plane neighbours. Quantised noise does
so with probability p^4 (p: the value's probability), <= 0.21 down to a sigma of 0.7 quantisation steps."""
BLANK_SPIKE_RATIO = 10.0  # or it is held by >= 10 x as many voxels as any other value: no noise histogram spikes so
ZERO_FILL_LEVEL = 1e-5
"""Values in (0, 1e-5 x the 99.9th percentile) are round-off of zero-filled or blanked data: no MR magnitude
has a voxel SNR of 1e5, and Rayleigh noise falls below 1e-5 x its maximum in ~5e-11 of the voxels."""
DITHER_SEED = 20240613  # fixed: the dithered estimate is reproducible bit for bit

CHI_CUT_QUANTILE = 0.99  # the chi fit uses voxels below the 99th percentile of the fitted chi (as K does for Rayleigh)
CHI_MIN_DOF = 1.5  # below: more spread than a one-channel (Rayleigh, 2 dof) background -- not a noise floor
CHI_MAX_DOF = 128.0  # 64 receive channels (the largest clinical arrays) summed in squares
STATIONARY_WINDOW = 7  # in-plane window (voxels) of the local means of the stationarity check
STATIONARY_MAX = 0.45
"""Noise is stationary: the SD of 7 x 7 local means over the SD of the values is 1/7 for white noise and
~0.3 for noise interpolated 2x by k-space zero filling; tissue shading and texture keep most (>= 0.5)."""
BACKGROUND_CONTRAST = 2.0  # the rest of the image has a median >= 2 x the chi background mean (air is dark)



# ---------------------------------------------------------------------------------------------- blanking


def _plateau(equal: np.ndarray) -> np.ndarray:
    """Voxels of ``equal`` whose four in-plane neighbours (last two axes) are in ``equal`` too.

    Parameters
    ----------
    equal : ndarray of bool, shape (..., y, x)

    Returns
    -------
    ndarray of bool, same shape; False on the border of the plane.
    """
    inner = np.zeros_like(equal)
    if equal.ndim < 2 or min(equal.shape[-2:]) < 3:
        return inner
    c = equal[..., 1:-1, 1:-1]
    inner[..., 1:-1, 1:-1] = (c & equal[..., :-2, 1:-1] & equal[..., 2:, 1:-1]
                              & equal[..., 1:-1, :-2] & equal[..., 1:-1, 2:])
    return inner


def _grow_in_plane(mask: np.ndarray) -> np.ndarray:
    """``mask`` dilated by one voxel in-plane (3 x 3 square over the last two axes)."""
    from scipy import ndimage
    if mask.ndim < 2:
        return mask.copy()
    structure = np.zeros((3,) * mask.ndim, dtype=bool)
    structure[(1,) * (mask.ndim - 2)] = True
    return ndimage.binary_dilation(mask, structure=structure)


def detect_blanking(frame: np.ndarray):
    """Voxels that a scanner or reconstruction wrote rather than measured (blanked, zero-filled).

    A value is a blank value when it is held by at least ``BLANK_MIN_FRACTION``
    of the finite voxels and either forms plateaus (at least
    ``BLANK_PLATEAU_FRACTION`` of its voxels equal their four in-plane
    neighbours), or is a spike of the histogram (``BLANK_SPIKE_RATIO`` x the
    count of any other value), or is the lowest value and holds more voxels than
    the next (a floor: magnitude noise puts fewer voxels in the lowest
    quantisation bin than in the next; clipped or suppressed backgrounds pile
    up there). Of a spike all voxels are blanked; of a plateau
    value those within one voxel of a plateau (isolated voxels of that value
    are quantised noise). Values in ``(0, ZERO_FILL_LEVEL x 99.9th percentile)``
    (round-off of zero filling) are blanked too.

    Parameters
    ----------
    frame : ndarray, shape (z, y, x) (any shape; plateaus are in-plane over the last two axes)
        One magnitude frame.

    Returns
    -------
    mask : ndarray of bool, same shape
        True where the value is not noise.
    info : dict
        ``values`` (the blank values, floats), ``floor`` (the blank value found by the floor rule: the
        background was clipped there; else None), ``fraction`` (of all voxels), ``near_zero`` (voxels of
        numerical zero, below ``zero_level``), ``unique`` and ``counts`` (the finite values and their counts).
    """
    f = np.asarray(frame, dtype=np.float64)
    finite = np.isfinite(f)
    mask = np.zeros(f.shape, dtype=bool)
    u, counts = np.unique(f[finite], return_counts=True)
    info = {"values": [], "floor": None, "fraction": 0.0, "near_zero": 0, "zero_level": 0.0, "unique": u,
            "counts": counts}
    if u.size == 0:
        return mask, info
    top = np.argpartition(-counts, min(8, u.size - 1))[:8] if u.size > 8 else np.arange(u.size)
    order = top[np.argsort(-counts[top], kind="stable")]
    for rank, i in enumerate(order):  # the 8 most frequent values cover any plausible blank
        if counts[i] < BLANK_MIN_FRACTION * counts.sum():
            break
        equal = f == u[i]
        plateau = _plateau(equal)
        spike = rank == 0 and (u.size == 1 or counts[i] >= BLANK_SPIKE_RATIO * counts[order[1]])
        if spike:
            mask |= equal
        elif np.count_nonzero(plateau) >= BLANK_PLATEAU_FRACTION * counts[i]:
            mask |= equal & _grow_in_plane(plateau)
        else:
            continue
        info["values"].append(float(u[i]))
    if (u[0] not in info["values"] and counts[0] >= BLANK_MIN_FRACTION * counts.sum()
            and (u.size == 1 or counts[0] > counts[1])):
        # The floor: a magnitude density rises from 0 (Rayleigh, chi; flat at worst), so the lowest value,
        # whose quantisation bin is the narrowest, holds fewer voxels than the next one unless it was written.
        mask |= f == u[0]
        info["values"].append(float(u[0]))
        info["floor"] = float(u[0])
    level = ZERO_FILL_LEVEL * float(np.percentile(f[finite], 99.9))
    near_zero = finite & (f > 0) & (f < level)
    info.update(near_zero=int(np.count_nonzero(near_zero)), zero_level=level)
    mask |= near_zero
    info["fraction"] = float(np.count_nonzero(mask) / max(f.size, 1))
    return mask, info


def temporal_blanking(mags: np.ndarray) -> np.ndarray:
    """Voxels exactly constant over the frames that form in-plane plateaus of one value, and numerical zeros.

    Parameters
    ----------
    mags : ndarray, shape (N, z, y, x)

    Returns
    -------
    ndarray of bool, shape (z, y, x)
    """
    first = mags[0]
    const = np.all(mags == first, axis=0)
    equal = np.zeros_like(const)
    if first.ndim >= 2 and min(first.shape[-2:]) >= 3:
        c = first[..., 1:-1, 1:-1]
        equal[..., 1:-1, 1:-1] = ((first[..., :-2, 1:-1] == c) & (first[..., 2:, 1:-1] == c)
                                  & (first[..., 1:-1, :-2] == c) & (first[..., 1:-1, 2:] == c))
    plateau = _plateau(const) & equal
    blanked = const & _grow_in_plane(plateau)
    mean = mags.mean(axis=0)
    finite = np.isfinite(mean)
    if finite.any():
        level = ZERO_FILL_LEVEL * float(np.percentile(mean[finite], 99.9))
        blanked |= finite & (mean > 0) & (mean < level)
    return blanked


# ---------------------------------------------------------------------------------------------- quantisation


def lattice_step(unique_sorted: np.ndarray) -> float:
    """Quantisation step of values stored as ``offset + integer x step``; 0 when they are not.

    Parameters
    ----------
    unique_sorted : ndarray, shape (n,)
        The distinct finite values, ascending.

    Returns
    -------
    float
        The step (same unit as the values), or 0.0 for continuous values.
    """
    if unique_sorted.size < 3:
        return 0.0
    span = float(unique_sorted[-1] - unique_sorted[0])
    step = float(np.min(np.diff(unique_sorted)))
    if not step > 0 or span / step > 1e6:  # a million levels: continuous for any estimate here
        return 0.0
    step = span / round(span / step)  # the stored step, from the whole span (float32 round-off in one diff)
    r = (unique_sorted - unique_sorted[0]) / step
    return step if float(np.max(np.abs(r - np.round(r)))) <= 0.05 else 0.0


def dequantise(values: np.ndarray, step: float):
    """Spread quantised values uniformly over their quantisation interval (a fixed-seed dither).

    The result has the histogram density of the data, continuous, so medians and
    moments are not stuck on the lattice; each value gains a variance of about
    ``step^2 / 6`` (rounding, Sheppard's correction, plus the dither), which the
    estimators subtract. Exact zeros are spread over their upper half interval
    only, so magnitudes stay >= 0.

    Parameters
    ----------
    values : ndarray, any shape
        Magnitudes (non-finite values stay as they are).
    step : float
        Quantisation step (0: returned unchanged).

    Returns
    -------
    dithered : ndarray of float64, same shape
    extra_var : float
        Variance added per value, squared magnitude units.
    """
    f = np.asarray(values, dtype=np.float64)
    if not step > 0:
        return f, 0.0
    d = np.random.default_rng(DITHER_SEED).uniform(-0.5, 0.5, f.shape) * step
    zero = f == 0
    d[zero] = np.abs(d[zero])
    return f + d, step * step / 6.0


def _less_dither(mean_square: float, extra_var: float) -> float:
    """A mean square less the dither variance, once it is well above it (the first iterations may not be)."""
    return mean_square - extra_var if mean_square > 4.0 * extra_var else mean_square


def _ks_distance(values_sorted: np.ndarray, cdf, step: float) -> float:
    """Kolmogorov-Smirnov distance of ``values_sorted`` to ``cdf``; on the bin edges for quantised data.

    Dithered quantised values have the exact empirical CDF only at the edges
    ``(j + 1/2) step`` of the quantisation bins, so that is where they are
    compared (quantisation alone does not count as misfit).
    """
    n = values_sorted.size
    if step > 0:
        lo, hi = math.floor(values_sorted[0] / step), math.ceil(values_sorted[-1] / step)
        edges = (np.arange(lo, hi + 1) + 0.5) * step
        emp = np.searchsorted(values_sorted, edges, side="right") / n
        return float(np.max(np.abs(emp - cdf(edges))))
    if n > KS_MAX_VALUES:  # every k-th value of the sorted array: the empirical CDF within 1 / KS_MAX_VALUES
        values_sorted = values_sorted[n // KS_MAX_VALUES // 2::n // KS_MAX_VALUES]
        n = values_sorted.size
    c = cdf(values_sorted)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - c), np.max(c - (i - 1) / n)))


# ---------------------------------------------------------------------------------------------- background fits


def _background_values(magnitude, exclude, step):
    """Values of one frame for the background fits.

    Returns
    -------
    values : ndarray, shape (n,)
        Finite, non-excluded (blanking detected when ``exclude`` is None), non-negative values, dithered
        when quantised, ascending.
    zeros : int
        Exact zeros among all voxels.
    total : int
        Voxels of the frame.
    step : float
        The quantisation step (detected when ``step`` is None).
    """
    m = np.asarray(magnitude, dtype=np.float64)
    if exclude is None:
        exclude, _ = detect_blanking(m)
    keep = np.isfinite(m) & ~exclude & (m >= 0)
    zeros = int(np.count_nonzero(np.isfinite(m) & (m == 0)))
    v = m[keep]
    if step is None:
        step = lattice_step(np.unique(v))
    return np.sort(dequantise(v, step)[0]), zeros, m.size, step


def rayleigh_background_sigma(magnitude: np.ndarray, max_iter: int = 200, exclude=None, step=None):
    """Sigma of the Rayleigh background of one magnitude image (any shape).

    Parameters
    ----------
    magnitude : ndarray
        One magnitude frame.
    max_iter : int
        Fixed-point iterations at most.
    exclude : ndarray of bool, same shape, optional
        Voxels that are not noise (blanked); :func:`detect_blanking` decides when omitted.
    step : float, optional
        Quantisation step of stored values (0: continuous; detected when omitted). Quantised values are
        dithered and the dither variance is subtracted from the second moment.

    Returns
    -------
    sigma : float or None
        None when no Rayleigh background population was found.
    info : dict
        ``background_voxels``, ``background_fraction``, ``ks_distance`` (to the
        truncated Rayleigh distribution), ``lower_tail`` (voxels below the fit's 5 % quantile over
        5 %: rejected below ``LOWER_TAIL_MIN_RATIO``), ``zeros`` (exact zeros in the frame),
        ``iterations`` and ``rejected`` (reason or None).
    """
    m, zeros, total, step = _background_values(magnitude, exclude, step)
    extra_var = step * step / 6.0
    m = m[m > 0]
    info = {"zeros": zeros, "background_voxels": 0, "background_fraction": 0.0,
            "ks_distance": None, "lower_tail": None, "iterations": 0, "rejected": "too few voxels"}
    if m.size < MIN_BACKGROUND_VOXELS:
        return None, info
    sq_cumsum = np.cumsum(m * m)
    sigma = max(float(m[min(m.size - 1, m.size // 1000)]) / 3.0, 1e-12 * float(m[-1]))
    for it in range(1, max_iter + 1):
        n = int(np.searchsorted(m, _K * sigma, side="left"))
        if n == 0:
            sigma *= 2.0
            continue
        new = math.sqrt(_less_dither(sq_cumsum[n - 1] / n, extra_var) / _TRUNC_M2)
        info["iterations"] = it
        if abs(new - sigma) <= 1e-6 * new:
            sigma = new
            break
        sigma = new
    n = int(np.searchsorted(m, _K * sigma, side="left"))
    info["background_voxels"] = n
    info["background_fraction"] = n / total
    if n < MIN_BACKGROUND_VOXELS or info["background_fraction"] < MIN_BACKGROUND_FRACTION:
        info["rejected"] = "too few background voxels"
        return None, info
    info["ks_distance"] = _rayleigh_ks_distance(m[:n], sigma, step)
    low = sigma * math.sqrt(-2.0 * math.log(1.0 - LOWER_TAIL_QUANTILE * (1.0 - _TAIL)))
    info["lower_tail"] = _lower_tail_ratio(m[:n], low)
    limit = REJECT_KS_ALL_BACKGROUND if info["background_fraction"] > 0.9 else REJECT_KS_DISTANCE
    if info["ks_distance"] > limit:  # what the iteration settled on is not a Rayleigh population (e.g. all tissue)
        info["rejected"] = f"Kolmogorov-Smirnov distance {info['ks_distance']:.2f} to Rayleigh"
    elif info["lower_tail"] < LOWER_TAIL_MIN_RATIO:
        info["rejected"] = (f"left truncated (lower tail {info['lower_tail']:.2f} x the model's): "
                            "blanked below a level")
    else:
        info["rejected"] = None
    return (None if info["rejected"] else sigma), info


def _lower_tail_ratio(values_sorted: np.ndarray, quantile_value: float) -> float:
    """Fraction of ``values_sorted`` below the model's ``LOWER_TAIL_QUANTILE`` quantile, over that quantile."""
    return float(np.searchsorted(values_sorted, quantile_value) / values_sorted.size / LOWER_TAIL_QUANTILE)


def _rayleigh_ks_distance(values_sorted: np.ndarray, sigma: float, step: float = 0.0) -> float:
    """Kolmogorov-Smirnov distance of ``values_sorted`` to Rayleigh(sigma) truncated at ``K sigma``."""
    def cdf(x):
        x = np.clip(x, 0.0, _K * sigma)
        return (1.0 - np.exp(-x * x / (2.0 * sigma * sigma))) / (1.0 - _TAIL)

    return _ks_distance(values_sorted, cdf, step)


def _chi_truncated(dof):
    """Cut ``c`` (chi-square units, the ``CHI_CUT_QUANTILE`` quantile) and the truncated moments below it.

    Parameters
    ----------
    dof : float or ndarray
        Degrees of freedom ``k`` of ``X = m^2 / sigma^2 ~ chi2_k``.

    Returns
    -------
    c, mean_root, mean_x : same shape as ``dof``
        ``E[sqrt X | X < c]`` and ``E[X | X < c]``.
    """
    from scipy.special import gammainc, gammaincinv, gammaln
    k = np.asarray(dof, dtype=np.float64)
    c = 2.0 * gammaincinv(k / 2.0, CHI_CUT_QUANTILE)
    mean_root = (math.sqrt(2.0) * np.exp(gammaln((k + 1.0) / 2.0) - gammaln(k / 2.0))
                 * gammainc((k + 1.0) / 2.0, c / 2.0) / CHI_CUT_QUANTILE)
    mean_x = k * gammainc(k / 2.0 + 1.0, c / 2.0) / CHI_CUT_QUANTILE
    return c, mean_root, mean_x


@functools.lru_cache(maxsize=1)
def _dof_curve():
    """``(k, ratio(k))`` on a log grid of k from 1 to 256: ``E[m]^2 / E[m^2]`` of chi_k truncated at its cut."""
    grid = np.exp(np.linspace(0.0, math.log(2.0 * CHI_MAX_DOF), 400))
    _, root, x = _chi_truncated(grid)
    return grid, root * root / x


def _solve_dof(ratio: float):
    """Degrees of freedom whose truncated chi has ``E[m]^2 / E[m^2] == ratio``; None outside [1, 256].

    The ratio rises monotonically with ``k`` (a narrower distribution relative
    to its level); it is inverted by interpolation on a log grid of ``k``.
    """
    grid, curve = _dof_curve()
    if not curve[0] <= ratio <= curve[-1]:
        return None
    return float(np.exp(np.interp(ratio, curve, np.log(grid))))


def chi_background_sigma(magnitude: np.ndarray, exclude=None, step=None, max_iter: int = 100):
    """Scale sigma and degrees of freedom of a central-chi background (sum of squares over channels).

    Starting from the dark class of the log-magnitude histogram (Otsu), the
    voxels below the ``CHI_CUT_QUANTILE`` quantile of the current fit are kept
    and ``k`` and ``sigma`` are refitted to their truncated mean and mean square,
    until the cut stops moving. A Rayleigh background fits ``k`` ~ 2.

    Parameters
    ----------
    magnitude : ndarray, shape (z, y, x) (any shape; stationarity is checked in-plane)
        One magnitude frame.
    exclude : ndarray of bool, same shape, optional
        Blanked voxels; :func:`detect_blanking` decides when omitted.
    step : float, optional
        Quantisation step (0: continuous; detected when omitted): as in :func:`rayleigh_background_sigma`.
    max_iter : int

    Returns
    -------
    sigma : float or None
        Per-channel noise SD; None when rejected (see ``info["rejected"]``).
    info : dict
        ``dof``, ``channels`` (dof / 2), ``background_voxels``, ``background_fraction``, ``ks_distance``,
        ``lower_tail`` (as in :func:`rayleigh_background_sigma`), ``stationarity``, ``contrast``,
        ``iterations`` and ``rejected`` (reason or None).
    """
    m = np.asarray(magnitude, dtype=np.float64)
    v, _, total, step = _background_values(m, exclude, step)
    extra_var = step * step / 6.0
    info = {"dof": None, "channels": None, "background_voxels": 0, "background_fraction": 0.0, "ks_distance": None,
            "lower_tail": None, "stationarity": None, "contrast": None, "iterations": 0, "rejected": None}
    pos = v[v > 0]
    if pos.size < MIN_BACKGROUND_VOXELS:
        info["rejected"] = "too few voxels"
        return None, info
    n = int(np.searchsorted(v, log_otsu_split(pos)[0], side="right"))
    csum, csq = np.cumsum(v), np.cumsum(v * v)
    k = sigma = None
    converged = False
    for it in range(1, max_iter + 1):
        info["iterations"] = it
        if n < MIN_BACKGROUND_VOXELS:
            break
        msq = _less_dither(csq[n - 1] / n, extra_var)
        ratio = min((csum[n - 1] / n) ** 2 / msq, 1.0)
        k = _solve_dof(ratio)
        if k is None and ratio < _dof_curve()[1][0]:  # more spread than any chi: dim tissue in the dark class
            n = int(0.7 * n)
            continue
        if k is None:
            break
        c, _, mean_x = _chi_truncated(k)
        sigma = math.sqrt(msq / float(mean_x))
        new = int(np.searchsorted(v, sigma * math.sqrt(float(c)), side="left"))
        converged = new == n
        if converged:
            break
        n = new
    if not converged:
        k = None  # the cut never settled: no chi population
    return _chi_gates(m, v, n, (k, sigma, step), total, exclude, info)


def _chi_gates(m, v, n, fit, total, exclude, info):
    """Accept or reject the chi fit ``fit = (k, sigma, step)`` of :func:`chi_background_sigma`; ``(sigma, info)``."""
    k, sigma, step = fit
    info.update(background_voxels=int(n), background_fraction=n / total)
    if k is None or sigma is None:
        info["rejected"] = "the dark population is not a chi distribution of 1-256 degrees of freedom"
        return None, info
    info.update(dof=k, channels=k / 2.0)
    if n < MIN_BACKGROUND_VOXELS or n / total < MIN_BACKGROUND_FRACTION:
        info["rejected"] = "too few background voxels"
        return None, info
    if not CHI_MIN_DOF <= k <= CHI_MAX_DOF:
        info["rejected"] = f"{k:.3g} degrees of freedom (accepted: {CHI_MIN_DOF:g}-{CHI_MAX_DOF:g})"
        return None, info
    cut = v[n - 1]
    info["ks_distance"] = _chi_ks_distance(v[:n], k, sigma, step)
    from scipy.special import gammaincinv
    low = sigma * math.sqrt(2.0 * float(gammaincinv(k / 2.0, LOWER_TAIL_QUANTILE * CHI_CUT_QUANTILE)))
    info["lower_tail"] = _lower_tail_ratio(v[:n], low)
    valid = np.isfinite(m) & (m >= 0) if exclude is None else np.isfinite(m) & (m >= 0) & ~exclude
    background = valid & (m <= cut)
    info["stationarity"] = _stationarity(m, background)
    rest = m[valid & (m > cut)]
    info["contrast"] = float(np.median(rest) / np.mean(v[:n])) if rest.size else None
    if info["ks_distance"] > REJECT_KS_DISTANCE:
        info["rejected"] = f"Kolmogorov-Smirnov distance {info['ks_distance']:.2f} to the fitted chi"
    elif info["lower_tail"] < LOWER_TAIL_MIN_RATIO:
        info["rejected"] = f"left truncated (lower tail {info['lower_tail']:.2f} x the model's): blanked below a level"
    elif info["stationarity"] is None or info["stationarity"] > STATIONARY_MAX:
        info["rejected"] = "not stationary like noise (local means vary: shading or texture)"
    elif info["contrast"] is not None and info["contrast"] < BACKGROUND_CONTRAST:
        info["rejected"] = f"not darker than the rest of the image ({info['contrast']:.2f} x)"
    return (None if info["rejected"] else sigma), info


def _chi_ks_distance(values_sorted: np.ndarray, dof: float, sigma: float, step: float = 0.0) -> float:
    """Kolmogorov-Smirnov distance of ``values_sorted`` to chi(dof, sigma) truncated at its cut quantile."""
    from scipy.special import gammainc

    def cdf(x):
        return np.minimum(gammainc(dof / 2.0, x * x / (2.0 * sigma * sigma)) / CHI_CUT_QUANTILE, 1.0)

    return _ks_distance(values_sorted, cdf, step)


def _stationarity(frame: np.ndarray, background: np.ndarray):
    """SD of in-plane local means over the background / SD of its values (~1/window for white noise).

    Parameters
    ----------
    frame : ndarray, shape (..., y, x)
    background : ndarray of bool, same shape

    Returns
    -------
    float or None
        None with fewer than ``MIN_BACKGROUND_VOXELS`` windows half inside the background.
    """
    from scipy import ndimage
    if frame.ndim < 2:
        return None
    size = (1,) * (frame.ndim - 2) + (STATIONARY_WINDOW, STATIONARY_WINDOW)
    w = background.astype(np.float64)
    cover = ndimage.uniform_filter(w, size, mode="constant")
    total = ndimage.uniform_filter(np.where(background, frame, 0.0), size, mode="constant")
    ok = background & (cover >= 0.5)
    if np.count_nonzero(ok) < MIN_BACKGROUND_VOXELS:
        return None
    spread = float(np.std(frame[background]))
    return float(np.std(total[ok] / cover[ok]) / spread) if spread > 0 else None


def log_otsu_split(values):
    """Otsu's two-class split of the log-magnitude histogram (256 bins).

    Parameters
    ----------
    values : ndarray
        Positive finite magnitudes.

    Returns
    -------
    split : float
        Magnitude at the upper edge of the dark class.
    class_ratio : float
        Ratio of the classes' geometric means.
    """
    lv = np.log(np.asarray(values, dtype=np.float64))
    hist, edges = np.histogram(lv, bins=256)
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    k = int(np.argmax(w0 * w1 * (m0 - m1) ** 2))
    return float(np.exp(edges[k + 1])), float(np.exp(m1[k] - m0[k]))
