"""Noise SD (per channel, sigma) of magnitude images, with the reason for the estimate.

The reliability mask is ``SNR = mean baseline magnitude / sigma >= threshold``,
so a sigma that is too low admits air, whose phase is random, and a sigma that
is too high masks tissue. The sigma that matters is the per-channel noise SD of
the complex signal, which is the SD of the magnitude in bright tissue (the phase
noise is ``sigma / |S|``). :func:`noise_estimate` returns it with the method,
the reason (for report.json), every candidate and the warnings;
:func:`estimate_noise_sigma` is its short form ``(sigma, method, warnings)``.

**Several baseline frames** (N >= 2): temporal statistics decide. The median
of the per-voxel temporal SDs over voxels bright enough to be Gaussian, divided
by the median of the sample SD of N Gaussian draws
(``sqrt(chi2_median(N-1) / (N-1))``); B0 drift does not enter. Voxels that
are exactly constant over the frames *and* form plateaus of equal neighbours
(a blanked background) are set aside first: their SD of 0 is not noise.

**One baseline frame.** First what is not noise is set aside
(:func:`detect_blanking`): a value that the scanner wrote into a large part of
the image (a constant background, exact zeros of a zero-filled band, a clipped
floor) -- a value held by at least ``BLANK_MIN_FRACTION`` of the voxels that
forms plateaus (its voxels equal their four in-plane neighbours), is a spike of
the histogram, or is the lowest value and more frequent than the next -- and
values that are numerically zero (round-off of zero filling). Repeated values
of quantised noise are none of these and stay. Integer-stored (quantised) magnitudes are then dithered within
their quantisation step so that rank statistics are continuous (the added
variance is subtracted). Three estimators are cross-checked:

1. ``rayleigh_background``: the air of a one-channel (or adaptively combined)
   magnitude is Rayleigh with scale sigma. A fixed point finds it: voxels below
   ``K sigma`` (the 99th percentile of Rayleigh(sigma)) are the background and
   sigma is re-estimated from their second moment, corrected for the
   truncation; it is rejected when the population is not Rayleigh
   (Kolmogorov-Smirnov distance).
2. ``chi_background``: the air of a sum-of-squares combination over n channels
   is central chi with 2n degrees of freedom, its mean far above Rayleigh
   (~ sqrt(2n) sigma). Degrees of freedom and scale are fitted to the
   truncated first two moments of the dark population; it is rejected unless
   the population fits (KS), is spatially stationary like noise (local means
   vary little), and is clearly darker than the rest of the image.
3. ``tissue_wavelet``: the median absolute finest-scale diagonal detail of the
   tissue / 0.6745 (Donoho & Johnstone 1994), with the separable 3 x 3 second
   difference ``[1, -2, 1] (x) [1, -2, 1] / 6`` (Immerkaer 1996) as the
   detail: it cancels levels, gradients, shading that is linear along either
   axis, and smooth texture far better than the 2 x 2 Haar diagonal (1.04
   against 1.35 sigma on the tests' textured phantom), where plain neighbour
   differences are inflated by any texture (2.4 sigma there). Tissue: blocks
   whose smoothed magnitude is at least ``TISSUE_MIN_SNR`` sigma, the flattest
   ``TISSUE_FLAT_FRACTION`` of them (anatomy at the voxel scale reads as
   noise). It underestimates spatially correlated noise (k-space zero filling
   interpolates) and overestimates where fine structure remains.

Decision: the background fit is the chi fit when it fits better than Rayleigh
with at least ``SOS_MIN_DOF`` degrees of freedom (a coil-combined floor), else
the Rayleigh fit. It is taken when the tissue estimate agrees with it within
``DISAGREE_FACTOR``; when they disagree the larger is taken (conservative: more
voxels masked) and a warning says so -- a blanked, filtered or clipped
background reads low, interpolated tissue noise reads low. A background clipped
at its floor (the floor rule of :func:`detect_blanking`: an offset subtracted
and the negatives set to 0) cannot be checked by its fit, so there the larger is
taken whatever the ratio. Without a background
the tissue estimate stands alone (with a warning); without tissue the
background fit does; with neither, neighbour differences (a warning).
"""

from __future__ import annotations

import functools
import math

import numpy as np

_K = math.sqrt(-2.0 * math.log(0.01))  # 99th percentile of Rayleigh(1)
_TAIL = math.exp(-_K * _K / 2.0)  # = 0.01
_TRUNC_M2 = 2.0 * (1.0 - (_K * _K / 2.0) * _TAIL / (1.0 - _TAIL))  # E[m^2 | m < K] for sigma = 1
_MAD_GAUSS = 0.6744897501960817  # median |N(0, 1)|: median absolute value -> SD
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
SOS_MIN_DOF = 3.0  # a fitted chi with >= 3 dof (1.5 effective channels) is a coil-combined floor, not Rayleigh
STATIONARY_WINDOW = 7  # in-plane window (voxels) of the local means of the stationarity check
STATIONARY_MAX = 0.45
"""Noise is stationary: the SD of 7 x 7 local means over the SD of the values is 1/7 for white noise and
~0.3 for noise interpolated 2x by k-space zero filling; tissue shading and texture keep most (>= 0.5)."""
BACKGROUND_CONTRAST = 2.0  # the rest of the image has a median >= 2 x the chi background mean (air is dark)

TISSUE_MIN_SNR = 10.0  # tissue blocks: smoothed magnitude >= 10 sigma, where Rician / chi bias of the SD is < 1 %
TISSUE_FLAT_FRACTION = 0.5
"""The flattest half of the tissue blocks sets the tissue estimate: on the vendored Siemens and Philips head
sets anatomy at the voxel scale made the estimate over all tissue 1.25-1.8 x the flattest half's."""
FLAT_SMOOTHING = 1.5  # voxels: Gaussian scale of the gradient that finds edges and folds (noise averaged ~7 x)
MIN_TISSUE_BLOCKS = 200  # fewer 3 x 3 tissue blocks: no tissue estimate (as MIN_BACKGROUND_VOXELS)
DISAGREE_FACTOR = 1.3
"""Background fit and tissue estimate agree when within 1.3 x: on the tests' phantoms (every background kind)
and the vendored Siemens head the two are within 7 % when both are right (texture the detail leaves, shading,
sampling). Beyond, one model is wrong -- a filtered, blanked or clipped background (an offset-subtracted
background clipped at 0 fits Rayleigh at 0.72 sigma), interpolated noise, fine texture -- and the larger
sigma is taken."""


def chi_sd_median_factor(n: int) -> float:
    """Median of the sample SD (ddof=1) of ``n`` Gaussian draws of unit SD.

    Parameters
    ----------
    n : int
        Draws, >= 2.

    Returns
    -------
    float
        ``sqrt(chi2_{n-1} median / (n - 1))``.
    """
    from scipy.special import gammaincinv  # lighter than scipy.stats
    dof = n - 1
    return math.sqrt(2.0 * float(gammaincinv(dof / 2.0, 0.5)) / dof)


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


def _temporal_blanking(mags: np.ndarray) -> np.ndarray:
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


def _lattice_step(unique_sorted: np.ndarray) -> float:
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


def _dequantise(values: np.ndarray, step: float):
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
        step = _lattice_step(np.unique(v))
    return np.sort(_dequantise(v, step)[0]), zeros, m.size, step


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
    n = int(np.searchsorted(v, _otsu_log_threshold(pos), side="right"))
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


def _otsu_log_threshold(values: np.ndarray) -> float:
    """Otsu threshold of the log of positive ``values`` (256 bins), returned in value units."""
    lv = np.log(values)
    hist, edges = np.histogram(lv, bins=256)
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    k = int(np.argmax(w0 * w1 * (m0 - m1) ** 2))
    return float(np.exp(edges[k + 1]))


# ---------------------------------------------------------------------------------------------- tissue


def _diagonal_detail(frame: np.ndarray) -> np.ndarray:
    """Finest-scale diagonal detail with two vanishing moments per axis, at the centre of every 3 x 3 block.

    The separable second difference ``[1, -2, 1] (x) [1, -2, 1] / 6`` over the
    last two axes (Immerkaer 1996): unit gain for white noise (the squared
    weights sum to 1), zero on any image that is linear along y or along x
    (constants, gradients, ``a(y) + b(x)`` shading, bilinear terms), and a
    response that grows as the fourth power of the spatial frequency, so smooth
    texture leaves little. The 2 x 2 Haar diagonal ``(a - b - c + d) / 2``
    cancels the same levels and gradients but only the second power of the
    frequency: on the textured tissue of the tests' phantom (SNR >= 10) it reads
    1.35 sigma, this 1.04 (1.01 on the flattest half), neighbour differences 2.4.

    Parameters
    ----------
    frame : ndarray, shape (..., y, x)

    Returns
    -------
    ndarray, shape (..., y - 2, x - 2)
        Element ``[..., j, i]`` belongs to the block centred on ``[..., j + 1, i + 1]``.
    """
    d = frame[..., :-2, :] - 2.0 * frame[..., 1:-1, :] + frame[..., 2:, :]
    return (d[..., :-2] - 2.0 * d[..., 1:-1] + d[..., 2:]) / 6.0


def _tissue_class(m: np.ndarray, valid: np.ndarray):
    """3 x 3 in-plane mean of the valid voxels, and the voxels whose mean is in the bright Otsu class (or None)."""
    from scipy import ndimage
    size = (1,) * (m.ndim - 2) + (3, 3)
    cover = ndimage.uniform_filter(valid.astype(np.float64), size, mode="constant")
    total = ndimage.uniform_filter(np.where(valid, m, 0.0), size, mode="constant")
    smooth = np.where(valid & (cover > 0), total / np.maximum(cover, 1e-12), 0.0)
    positive = smooth[valid & (smooth > 0)]
    if positive.size < MIN_TISSUE_BLOCKS:
        return smooth, None
    return smooth, valid & (smooth > _otsu_log_threshold(positive))


def _flat_blocks(m: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """The ``TISSUE_FLAT_FRACTION`` of ``blocks`` where the smoothed image is flattest (relative gradient).

    Edges, vessels and folds sit where the Gaussian-smoothed image (sigma
    ``FLAT_SMOOTHING`` voxels, in-plane) has gradients. The gradient filters are
    odd and the detail filter even about the block centre, so for Gaussian
    noise the choice is independent of the noise the detail measures.

    Parameters
    ----------
    m : ndarray, shape (..., y, x)
    blocks : ndarray of bool, shape (..., y - 2, x - 2)
        Candidate blocks (centres ``[..., 1:-1, 1:-1]`` of ``m``).

    Returns
    -------
    ndarray of bool, shape of ``blocks``
    """
    from scipy import ndimage
    sigma = (0.0,) * (m.ndim - 2) + (FLAT_SMOOTHING, FLAT_SMOOTHING)
    level = ndimage.gaussian_filter(m, sigma)
    grad2 = np.zeros_like(m)
    for axis in (m.ndim - 2, m.ndim - 1):
        order = [0] * m.ndim
        order[axis] = 1
        grad2 += ndimage.gaussian_filter(m, sigma, order=order) ** 2
    rel = (np.sqrt(grad2) / np.maximum(np.abs(level), 1e-300))[..., 1:-1, 1:-1]
    return blocks & (rel <= np.quantile(rel[blocks], TISSUE_FLAT_FRACTION))


def wavelet_tissue_sigma(magnitude: np.ndarray, exclude=None, step=None):
    """Noise SD from the finest diagonal detail of the tissue, median absolute value / 0.6745.

    The robust estimator of Donoho & Johnstone (1994) on the detail of
    :func:`_diagonal_detail` (Immerkaer's 3 x 3 mask), over 3 x 3 blocks wholly
    inside the tissue. Tissue: voxels whose 3 x 3 in-plane mean lies in the
    bright class of the log histogram (Otsu) for a first pass, then every voxel
    whose mean is at least ``TISSUE_MIN_SNR`` x that pass's sigma; of those
    blocks the flattest ``TISSUE_FLAT_FRACTION`` (:func:`_flat_blocks`: anatomy
    at the voxel scale otherwise reads as noise). Selections are made on
    smoothed images, which the detail is blind to, so they do not select noise.

    Parameters
    ----------
    magnitude : ndarray, shape (z, y, x) (any shape with ndim >= 2; blocks in the last two axes)
        One magnitude frame.
    exclude : ndarray of bool, same shape, optional
        Blanked voxels.
    step : float, optional
        Quantisation step (0: continuous; detected when omitted). Quantised values are dithered and the
        dither variance is subtracted.

    Returns
    -------
    sigma : float or None
        None with fewer than ``MIN_TISSUE_BLOCKS`` tissue blocks.
    info : dict
        ``tissue_blocks`` (used in the estimate) and ``tissue_fraction`` (of the voxels, SNR >= the minimum).
    """
    from scipy import ndimage
    m = np.asarray(magnitude, dtype=np.float64)
    info = {"tissue_blocks": 0, "tissue_fraction": 0.0}
    if m.ndim < 2 or min(m.shape[-2:]) < 5:
        return None, info
    valid = np.isfinite(m) if exclude is None else np.isfinite(m) & ~exclude
    if step is None:
        step = _lattice_step(np.unique(m[valid]))
    m, extra_var = _dequantise(np.where(valid, m, 0.0), step)
    smooth, tissue = _tissue_class(m, valid)
    if tissue is None:
        return None, info
    detail = np.abs(_diagonal_detail(m))
    structure = np.zeros((3,) * m.ndim, dtype=bool)
    structure[(1,) * (m.ndim - 2)] = True  # 3 x 3 in-plane
    sigma = None
    for final in (False, True):  # first pass: bright class; second: SNR >= TISSUE_MIN_SNR, flattest part
        block = ndimage.binary_erosion(tissue, structure=structure)[..., 1:-1, 1:-1]
        if final and np.count_nonzero(block) >= 2 * MIN_TISSUE_BLOCKS:
            block = _flat_blocks(m, block)
        if np.count_nonzero(block) < MIN_TISSUE_BLOCKS:
            return None, info
        raw = float(np.median(detail[block])) / _MAD_GAUSS
        sigma = math.sqrt(max(raw * raw - extra_var, 0.0))
        info.update(tissue_blocks=int(np.count_nonzero(block)), tissue_fraction=float(tissue.mean()))
        tissue = valid & (smooth >= TISSUE_MIN_SNR * sigma)
    return sigma, info


def difference_sigma(magnitude: np.ndarray) -> float:
    """Robust noise SD from differences of neighbours along the last axis (last resort, one frame).

    Parameters
    ----------
    magnitude : ndarray
        One magnitude frame.

    Returns
    -------
    float
        1.4826 x MAD of the differences / sqrt(2); 0 without any finite difference.
    """
    m = np.asarray(magnitude, dtype=np.float64)
    d = np.diff(m, axis=-1).ravel()
    d = d[np.isfinite(d)]
    if d.size == 0:
        return 0.0
    mad = float(np.median(np.abs(d - np.median(d))))
    return 1.4826 * mad / math.sqrt(2.0)


# ---------------------------------------------------------------------------------------------- temporal


def temporal_sigma(mags: np.ndarray, exclude=None):
    """Sigma from the temporal SD of magnitude frames.

    Parameters
    ----------
    mags : ndarray, shape (N, ...)
        N >= 2 magnitude frames.
    exclude : ndarray of bool, shape ``mags.shape[1:]``, optional
        Voxels left out (blanked: constant over the frames); none when omitted.

    Returns
    -------
    sigma : float
        0.0 when no voxel is left.
    method : str
        Which voxels set it (bright voxels, or a Rayleigh background), for report.json.

    Notes
    -----
    Values are not dithered here (synthetic series on coarse lattices must keep
    their exact SDs): integer-stored magnitudes with sigma ~1 step give per-voxel
    SDs of few distinct values, and with 2-3 frames the median can be off by
    ~20 % (sigma 1.3 steps: 0.81 x with 2 frames, 1.07 x with 3).
    """
    n = mags.shape[0]
    keep = np.ones(mags.shape[1:], dtype=bool) if exclude is None else ~exclude
    mean = mags.mean(axis=0)[keep]
    sd = mags.std(axis=0, ddof=1)[keep]
    label = f"temporal SD of magnitude over {n} baseline frames"
    if sd.size == 0:
        return 0.0, f"{label} (no voxel outside the blanked background)"
    bias = chi_sd_median_factor(n)
    first = float(np.median(sd)) / bias
    bright = mean > 10.0 * first
    if np.count_nonzero(bright) >= 50:
        return float(np.median(sd[bright])) / bias, f"{label} (bright voxels)"
    # Background-dominated: the SD of Rayleigh noise is sqrt(2 - pi/2) sigma = 0.655 sigma.
    return first / math.sqrt(2.0 - math.pi / 2.0), f"{label} (Rayleigh background)"


# ---------------------------------------------------------------------------------------------- decision


def noise_estimate(baseline_magnitudes) -> dict:
    """Per-channel noise SD of the baseline magnitudes, with the method, the reason and the alternatives.

    Parameters
    ----------
    baseline_magnitudes : array_like, shape (N, z, y, x)
        Magnitudes of the N baseline frames (any unit; sigma comes out in it).

    Returns
    -------
    dict
        ``sigma`` (float, magnitude units, > 0), ``method`` (``temporal``, ``rayleigh_background``,
        ``chi_background``, ``tissue_wavelet``, ``neighbour_differences``, or ``floor`` for noise-free
        data), ``why`` (str, for report.json), ``candidates`` (name -> sigma or None, every estimator
        that applied), ``blanked_fraction`` (of the voxels set aside as not noise), ``warnings`` (list
        of str), ``description`` (the method in words) and, for one frame, ``details`` (blank values,
        quantisation step and what each estimator saw, with its reason for rejecting: JSON-ready).
    """
    mags = np.asarray(baseline_magnitudes, dtype=np.float64)
    if mags.shape[0] >= 2:
        out = _temporal_estimate(mags)
    else:
        out = _one_frame_estimate(mags[0])
    floor = 1e-6 * float(np.nanmax(mags)) if mags.size and np.isfinite(mags).any() else 0.0
    if not out["sigma"] > floor:
        # Noise-free (synthetic) data: a tiny floor keeps SNR finite.
        out.update(sigma=max(floor, float(np.finfo(np.float32).tiny)), method="floor",
                   why=out["why"] + "; no noise found: floor 1e-6 x max magnitude")
    out["sigma"] = float(out["sigma"])
    return out


def _empty_candidates():
    return {"temporal": None, "rayleigh_background": None, "chi_background": None, "tissue_wavelet": None}


def _temporal_estimate(mags: np.ndarray) -> dict:
    """:func:`noise_estimate` for N >= 2 frames: temporal statistics decide."""
    blanked = _temporal_blanking(mags)
    sigma, text = temporal_sigma(mags, blanked)
    why = f"{mags.shape[0]} baseline frames: temporal statistics decide (per-voxel SD; B0 drift does not enter)"
    fraction = float(blanked.mean()) if blanked.size else 0.0
    warnings = []  # blanking is reported (why, blanked_fraction), not warned about: nothing for the user to do
    if fraction > 0:
        why += f"; {100 * fraction:.1f}% of the voxels are constant plateaus over the frames (blanked) and left out"
    return {"sigma": sigma, "method": "temporal", "why": why, "description": text,
            "candidates": {**_empty_candidates(), "temporal": sigma}, "blanked_fraction": fraction,
            "warnings": warnings, "details": {"frames": int(mags.shape[0])}}


def _one_frame_estimate(frame: np.ndarray) -> dict:
    """:func:`noise_estimate` for one frame: blanking set aside, then background fits cross-checked with tissue."""
    blanked, binfo = detect_blanking(frame)
    valid = np.isfinite(frame) & ~blanked
    u = binfo["unique"]
    step = _lattice_step(u[~np.isin(u, binfo["values"]) & ~((u > 0) & (u < binfo["zero_level"]))])
    ray, rinfo = rayleigh_background_sigma(frame, exclude=blanked, step=step)
    chi, cinfo = chi_background_sigma(frame, exclude=blanked, step=step)
    tis, tinfo = wavelet_tissue_sigma(frame, exclude=blanked, step=step)
    details = {"blank_values": binfo["values"], "clipped_floor": binfo["floor"],
               "near_zero_voxels": binfo["near_zero"], "quantisation_step": step,
               "rayleigh": rinfo, "chi": cinfo, "tissue": tinfo}
    cands = {**_empty_candidates(), "rayleigh_background": ray, "chi_background": chi, "tissue_wavelet": tis}
    out = _decide(cands, details)
    if binfo["fraction"] > 0:
        what = ", ".join(f"{v:.6g}" for v in binfo["values"]) or "none"
        note = (f"{100 * binfo['fraction']:.1f}% of the voxels set aside as blanked (not noise: blank values "
                f"{what}; {binfo['near_zero']} numerically zero voxels)")
        out["why"] = note + "; " + out["why"]
    if step > 0:
        out["why"] += f"; values quantised in steps of {step:.6g} (dithered, variance step^2/6 subtracted)"
    if out["method"] == "none":
        out.update(sigma=difference_sigma(np.where(valid, frame, np.nan)), method="neighbour_differences",
                   description="neighbour differences in one baseline frame")
        out["candidates"]["neighbour_differences"] = out["sigma"]
        out["warnings"].append("one baseline frame with neither a noise background nor enough tissue: noise "
                               "estimated from neighbour differences, which texture inflates (more voxels masked)")
    return {**out, "blanked_fraction": binfo["fraction"], "details": details}


def _decide(cands: dict, details: dict) -> dict:
    """The one-frame decision between the background fits and the tissue estimate (rules in the module doc)."""
    ray, chi, tis = cands["rayleigh_background"], cands["chi_background"], cands["tissue_wavelet"]
    cinfo, rinfo = details["chi"], details["rayleigh"]
    warnings = []
    if chi is not None and (ray is None or (cinfo["dof"] >= SOS_MIN_DOF
                                            and cinfo["ks_distance"] < rinfo["ks_distance"])):
        bg, bg_name = chi, "chi_background"
        kind = "a coil-combined magnitude" if cinfo["dof"] >= SOS_MIN_DOF else "one baseline frame"
        bg_text = (f"chi background of {kind} ({cinfo['dof']:.1f} degrees of freedom, "
                   f"{cinfo['channels']:.1f} effective channels; {cinfo['background_voxels']} voxels)")
    elif ray is not None:
        bg, bg_name = ray, "rayleigh_background"
        bg_text = (f"Rayleigh background of one baseline frame ({rinfo['background_voxels']} voxels, "
                   f"{100 * rinfo['background_fraction']:.0f}% of the volume)")
        if rinfo["ks_distance"] > WARN_KS_DISTANCE:
            warnings.append(f"the air background of the baseline magnitude departs from Rayleigh noise "
                            f"(Kolmogorov-Smirnov distance {rinfo['ks_distance']:.2f}): the noise estimate and the "
                            "SNR mask may be off")
    else:
        bg = None
    tis_text = (f"median absolute second-difference diagonal detail of the tissue (3 x 3 blocks: "
                f"{details['tissue']['tissue_blocks']})")
    if bg is None and tis is None:
        return {"sigma": 0.0, "method": "none", "why": "no noise background and no tissue found",
                "description": "no estimator applied", "candidates": cands, "warnings": warnings}
    if bg is None:
        rejected = f"Rayleigh: {rinfo['rejected']}; chi: {cinfo['rejected']}"
        warnings.append(f"one baseline frame and no noise background ({rejected}): noise estimated from the "
                        "tissue alone; fine texture inflates it (more voxels masked), noise correlated by "
                        "interpolation (k-space zero filling) deflates it")
        return {"sigma": tis, "method": "tissue_wavelet", "description": tis_text, "candidates": cands,
                "why": f"no noise background found ({rejected}): the tissue estimate is the only one",
                "warnings": warnings}
    if tis is None:
        return {"sigma": bg, "method": bg_name, "description": bg_text, "candidates": cands, "warnings": warnings,
                "why": "no tissue bright enough to cross-check: the background fit stands alone"}
    ratio = max(bg, tis) / min(bg, tis)
    clipped = details["clipped_floor"] is not None
    if ratio <= DISAGREE_FACTOR and not clipped:
        return {"sigma": bg, "method": bg_name, "description": bg_text, "candidates": cands, "warnings": warnings,
                "why": f"background fit {bg:.4g}, tissue estimate {tis:.4g}: within {DISAGREE_FACTOR:g} x, "
                       "the background fit (no texture in it) is taken"}
    name, value, text = (bg_name, bg, bg_text) if bg >= tis else ("tissue_wavelet", tis, tis_text)
    why = (f"background fit ({bg_name}) {bg:.4g} and tissue estimate {tis:.4g} disagree by {ratio:.2f} x "
           f"(> {DISAGREE_FACTOR:g}): the larger is taken (conservative: more voxels masked)")
    if clipped and ratio <= DISAGREE_FACTOR:
        return {"sigma": value, "method": name, "description": text, "candidates": cands, "warnings": warnings,
                "why": f"background fit {bg:.4g}, tissue estimate {tis:.4g}: the background was clipped at "
                       f"{details['clipped_floor']:.6g} (its fit cannot be checked): the larger is taken"}
    warnings.append("noise estimates disagree: " + why)
    return {"sigma": value, "method": name, "description": text, "why": why, "candidates": cands,
            "warnings": warnings}


def estimate_noise_sigma(baseline_magnitudes: np.ndarray):
    """Per-channel noise SD from baseline magnitude frames (short form of :func:`noise_estimate`).

    Parameters
    ----------
    baseline_magnitudes : ndarray, shape (N, z, y, x)

    Returns
    -------
    sigma : float
        Magnitude units.
    method : str
        How it was estimated and why (for report.json).
    warnings : list of str
    """
    out = noise_estimate(baseline_magnitudes)
    return out["sigma"], f"{out['description']}: {out['why']}", list(out["warnings"])
