"""Noise SD (per channel, sigma) of magnitude images.

The reliability mask is ``SNR = mean baseline magnitude / sigma >= threshold``,
so a sigma that is too low admits air, whose phase is random, and a sigma that
is too high masks tissue. Three estimators, chosen by what the data allow:

1. **Several baseline frames**: the temporal SD of the magnitude, which B0
   drift does not disturb. The median of the per-voxel SDs over voxels bright
   enough to be Gaussian, divided by the median of the sample SD of N Gaussian
   draws (``sqrt(chi2_median(N-1) / (N-1))``).
2. **One frame with an air background**: the background of a magnitude image
   is Rayleigh distributed with scale sigma. The background is found by a
   fixed point: voxels below ``K sigma`` (``K = sqrt(-2 ln 0.01)``, the 99th
   percentile of Rayleigh(sigma)) are taken as background, and sigma is
   re-estimated from their second moment, corrected for the truncation
   (``E[m^2 | m < K sigma] = 2 sigma^2 (1 - (K^2/2) e^(-K^2/2) / (1 - e^(-K^2/2)))``).
   Started below the noise level the iteration grows geometrically and stops at
   the background scale; tissue far above it does not enter. Exact zeros
   (background blanked by the scanner) are not noise and are left out.
   (The first mrtherm took the median of the dimmest 5 % of voxels over the
   Rayleigh median factor: that is the lower tail, not the distribution, and on
   a pure Rayleigh background of sigma 10 it returned 1.9.)
3. **One frame without background** (the field of view filled with tissue):
   the robust SD (1.4826 x median absolute deviation) of differences of
   neighbouring voxels along x, divided by sqrt(2). Edges are outliers the
   median ignores; on strongly textured tissue it overestimates (a safe side:
   more voxels masked).

Each estimate comes with a method string for ``report.json`` and, where the
data did not fit the model, a warning.
"""

from __future__ import annotations

import math

import numpy as np

_K = math.sqrt(-2.0 * math.log(0.01))  # 99th percentile of Rayleigh(1)
_TAIL = math.exp(-_K * _K / 2.0)  # = 0.01
_TRUNC_M2 = 2.0 * (1.0 - (_K * _K / 2.0) * _TAIL / (1.0 - _TAIL))  # E[m^2 | m < K] for sigma = 1
MIN_BACKGROUND_VOXELS = 200
MIN_BACKGROUND_FRACTION = 0.02
REJECT_KS_DISTANCE = 0.25
"""A 'background' farther than this (Kolmogorov-Smirnov) from Rayleigh is not an air background. Real
backgrounds depart from Rayleigh (coil combination, filters): 0.05-0.18 on the vendored Siemens sets."""
REJECT_KS_ALL_BACKGROUND = 0.05
"""When nearly the whole image (> 90 %) would be 'background' it must be Rayleigh noise closely: a smooth
tissue-only image otherwise passes as a broad background."""
WARN_KS_DISTANCE = 0.10


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


def rayleigh_background_sigma(magnitude: np.ndarray, max_iter: int = 200):
    """Sigma of the Rayleigh background of one magnitude image (any shape).

    Parameters
    ----------
    magnitude : ndarray
        One magnitude frame.
    max_iter : int
        Fixed-point iterations at most.

    Returns
    -------
    sigma : float or None
        None when no background population was found.
    info : dict
        ``background_voxels``, ``background_fraction``, ``ks_distance`` (to the
        truncated Rayleigh distribution), ``zeros`` and ``iterations``.
    """
    m = np.asarray(magnitude, dtype=np.float64).ravel()
    m = m[np.isfinite(m)]
    zeros = int(np.count_nonzero(m == 0))
    m = np.sort(m[m > 0])
    info = {"zeros": zeros, "background_voxels": 0, "background_fraction": 0.0,
            "ks_distance": None, "iterations": 0}
    if m.size < MIN_BACKGROUND_VOXELS:
        return None, info
    sq_cumsum = np.cumsum(m * m)
    sigma = max(float(m[min(m.size - 1, m.size // 1000)]) / 3.0, 1e-12 * float(m[-1]))
    for it in range(1, max_iter + 1):
        n = int(np.searchsorted(m, _K * sigma, side="left"))
        if n == 0:
            sigma *= 2.0
            continue
        new = math.sqrt(sq_cumsum[n - 1] / n / _TRUNC_M2)
        info["iterations"] = it
        if abs(new - sigma) <= 1e-6 * new:
            sigma = new
            break
        sigma = new
    n = int(np.searchsorted(m, _K * sigma, side="left"))
    info["background_voxels"] = n
    info["background_fraction"] = n / (m.size + zeros)
    if n < MIN_BACKGROUND_VOXELS or info["background_fraction"] < MIN_BACKGROUND_FRACTION:
        return None, info
    info["ks_distance"] = _rayleigh_ks_distance(m[:n], sigma)
    limit = REJECT_KS_ALL_BACKGROUND if info["background_fraction"] > 0.9 else REJECT_KS_DISTANCE
    if info["ks_distance"] > limit:
        return None, info  # what the iteration settled on is not a Rayleigh population (e.g. all tissue)
    return sigma, info


def _rayleigh_ks_distance(values_sorted: np.ndarray, sigma: float) -> float:
    """Kolmogorov-Smirnov distance of ``values_sorted`` to Rayleigh(sigma) truncated at ``K sigma``.

    Integer-valued data (stored magnitudes) are compared with the CDF of the
    rounded distribution, so quantisation alone does not count as misfit.
    """
    u, counts = np.unique(values_sorted, return_counts=True)
    half = 0.5 if np.all(u == np.round(u)) else 0.0
    emp_hi = np.cumsum(counts) / values_sorted.size
    emp_lo = emp_hi - counts / values_sorted.size

    def cdf(x):
        x = np.clip(x, 0.0, _K * sigma)
        return (1.0 - np.exp(-x * x / (2.0 * sigma * sigma))) / (1.0 - _TAIL)

    return float(max(np.max(np.abs(emp_hi - cdf(u + half))), np.max(np.abs(emp_lo - cdf(u - half)))))


def difference_sigma(magnitude: np.ndarray) -> float:
    """Robust noise SD from differences of neighbours along the last axis (one frame, no background).

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


def temporal_sigma(mags: np.ndarray):
    """Sigma from the temporal SD of magnitude frames.

    Parameters
    ----------
    mags : ndarray, shape (N, ...)
        N >= 2 magnitude frames.

    Returns
    -------
    sigma : float
    method : str
        Which voxels set it (bright voxels, or a Rayleigh background), for report.json.
    """
    n = mags.shape[0]
    mean = mags.mean(axis=0)
    sd = mags.std(axis=0, ddof=1)
    bias = chi_sd_median_factor(n)
    first = float(np.median(sd)) / bias
    bright = mean > 10.0 * first
    if np.count_nonzero(bright) >= 50:
        return float(np.median(sd[bright])) / bias, f"temporal SD of magnitude over {n} baseline frames (bright voxels)"
    # Background-dominated: the SD of Rayleigh noise is sqrt(2 - pi/2) sigma = 0.655 sigma.
    return first / math.sqrt(2.0 - math.pi / 2.0), \
        f"temporal SD of magnitude over {n} baseline frames (Rayleigh background)"


def estimate_noise_sigma(baseline_magnitudes: np.ndarray):
    """Per-channel noise SD from baseline magnitude frames.

    Parameters
    ----------
    baseline_magnitudes : ndarray, shape (N, z, y, x)

    Returns
    -------
    sigma : float
    method : str
        How it was estimated (for report.json).
    warnings : list of str
    """
    mags = np.asarray(baseline_magnitudes, dtype=np.float64)
    warnings = []
    if mags.shape[0] >= 2:
        sigma, method = temporal_sigma(mags)
    else:
        sigma, info = rayleigh_background_sigma(mags[0])
        if sigma is not None:
            method = (f"Rayleigh background of one baseline frame ({info['background_voxels']} voxels, "
                      f"{100 * info['background_fraction']:.0f}% of the volume)")
            if info["ks_distance"] > WARN_KS_DISTANCE:
                warnings.append(f"the air background of the baseline magnitude departs from Rayleigh noise "
                                f"(Kolmogorov-Smirnov distance {info['ks_distance']:.2f}): the noise estimate and the "
                                "SNR mask may be off")
        else:
            sigma = difference_sigma(mags[0])
            method = "neighbour differences in one baseline frame (no air background found)"
            warnings.append("one baseline frame and no air background: noise estimated from neighbour "
                            "differences, which tissue texture inflates (more voxels masked)")
    floor = 1e-6 * float(np.max(mags)) if mags.size else 0.0
    if not sigma > floor:
        # Noise-free (synthetic) data: a tiny floor keeps SNR finite.
        return max(floor, float(np.finfo(np.float32).tiny)), method + "; no noise found, floor 1e-6 x max magnitude", \
            warnings
    return float(sigma), method, warnings
