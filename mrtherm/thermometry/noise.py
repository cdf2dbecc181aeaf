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

import math

import numpy as np

from mrtherm.thermometry.noise_background import (  # noqa: F401  (detect_blanking re-exported)
    WARN_KS_DISTANCE, chi_background_sigma, dequantise, detect_blanking, lattice_step,
    log_otsu_split, rayleigh_background_sigma, temporal_blanking)

MAD_GAUSS = 0.6744897501960817  # median |N(0, 1)|: median absolute value -> SD
SOS_MIN_DOF = 3.0  # a fitted chi with >= 3 dof (1.5 effective channels) is a coil-combined floor, not Rayleigh
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
    return smooth, valid & (smooth > log_otsu_split(positive)[0])


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
        step = lattice_step(np.unique(m[valid]))
    m, extra_var = dequantise(np.where(valid, m, 0.0), step)
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
        raw = float(np.median(detail[block])) / MAD_GAUSS
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
    blanked = temporal_blanking(mags)
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
    step = lattice_step(u[~np.isin(u, binfo["values"]) & ~((u > 0) & (u < binfo["zero_level"]))])
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
