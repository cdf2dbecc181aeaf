"""Reliability masks, noise estimation and the drift reference region.

Decisions recorded here (also in the README):

- **Noise SD** (per channel, sigma): see :mod:`mrtherm.thermometry.noise` (temporal SD of
  the magnitude over several baseline frames; for one frame a Rayleigh or chi
  background fit cross-checked against a tissue estimate, blanked backgrounds set
  aside, the larger taken when they disagree).
- **Reliable voxels**: SNR (mean baseline magnitude / sigma) at or above
  ``snr_threshold`` and, with labels, a class where PRF works.
- **Automatic drift reference** (no ``drift_roi``): reliable voxels, minus the
  target lesion (label 12) and everything within ``auto_ref_target_margin_mm``
  of it. Per frame the pipeline further drops voxels that already rose more
  than ``auto_ref_heated_c`` and voxels whose phase departs from the previous
  frame's drift by more than ``auto_ref_outlier_c`` (equivalent C), so heating
  that starts anywhere leaves the reference at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mrtherm.errors import InputFileError
from mrtherm.geometry import voxel_size_zyx_mm
from mrtherm.io.labels import TARGET, prf_valid_mask
from mrtherm.thermometry.noise import noise_estimate
from mrtherm.thermometry.noise_background import log_otsu_split
from mrtherm.thermometry.prf import theoretical_sigma_celsius


AIR_CLASS_RATIO = 10.0
AIR_FLOOR_FACTOR = 3.0


def air_threshold(mean_magnitude: np.ndarray):
    """Magnitude below which a voxel is air, from the noise floor.

    The SNR rule assumes a Rayleigh air background (mean 1.25 sigma), but coil
    combination (sum of squares over many channels) and vendor filters lift the
    air to a floor many sigma high, where air passes ``SNR >= 5``. When the
    log-magnitude histogram splits (Otsu) into a dark and a bright class whose
    geometric means differ at least ``AIR_CLASS_RATIO`` times (air against
    tissue; tissue-only images do not split so), voxels below
    ``AIR_FLOOR_FACTOR`` x the dark class's median are air. On a Rayleigh
    background this is ~3.5 sigma, below the SNR rule, so it changes nothing there.

    Parameters
    ----------
    mean_magnitude : array_like, any shape
        Mean baseline magnitude; non-finite and non-positive values are ignored.

    Returns
    -------
    threshold : float or None
        Air below this magnitude; None when the histogram does not split into air and tissue.
    info : dict
        ``applied``; with a split also ``class_ratio`` (geometric means of the classes) and, when applied,
        ``floor`` (the dark class's median).
    """
    v = np.asarray(mean_magnitude, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    split, ratio = log_otsu_split(v)  # fewer than 100 values never split: the dark class needs 100
    dark = v[v <= split]
    info = {"applied": False, "class_ratio": ratio}
    if ratio < AIR_CLASS_RATIO or dark.size < max(100, 0.02 * v.size):
        return None, info
    info.update(applied=True, floor=float(np.median(dark)))
    return AIR_FLOOR_FACTOR * info["floor"], info


def target_exclusion(labels_zyx: np.ndarray, target_value: int, margin_mm: float, zooms_zyx) -> np.ndarray:
    """Voxels within ``margin_mm`` of the target label (inclusive), the target included.

    Parameters
    ----------
    labels_zyx : ndarray of int, shape (z, y, x)
    target_value : int
        Label value of the target (12 in the default table).
    margin_mm : float
        Distance between voxel centres, mm.
    zooms_zyx : sequence of float
        Voxel size ``(dz, dy, dx)``, mm.

    Returns
    -------
    ndarray of bool, shape (z, y, x)
        All False when no voxel has the target label.
    """
    target = labels_zyx == target_value
    if not target.any():
        return np.zeros(labels_zyx.shape, dtype=bool)
    dist = ndimage.distance_transform_edt(~target, sampling=zooms_zyx)
    return dist <= margin_mm


@dataclass
class Reliability:
    """The reliability mask of an exam and how it was made.

    Attributes
    ----------
    mask : (z, y, x) bool, True where temperature is reported
    snr : (z, y, x) float32, mean baseline magnitude / sigma
    sd_theory_c : (z, y, x) float32, noise-predicted temperature SD, C (every voxel)
    sigma : float, noise SD per channel; sigma_method : str
    rules : list of str (report.json); warnings : list of str
    noise_info : dict, :func:`mrtherm.thermometry.noise.noise_estimate` (method, why, candidates, blanked fraction)
    """

    mask: np.ndarray
    snr: np.ndarray
    sd_theory_c: np.ndarray
    sigma: float
    sigma_method: str
    rules: list
    warnings: list
    noise_info: dict | None = None


def reliability_mask(baseline_magnitudes, n_baseline, te_s, b0_t, params, labels=None, table=None,
                     noise=None) -> Reliability:
    """Voxels where PRF temperature is reliable.

    Rules (all must hold): SNR >= ``params.snr_threshold``; noise-predicted SD <=
    ``params.max_sd_theory_c``; above the air floor (:func:`air_threshold`); and,
    with ``labels``, a class where PRF works (``table``).

    Parameters
    ----------
    baseline_magnitudes : ndarray, shape (N, z, y, x)
        Magnitudes of the baseline frames.
    n_baseline : int
        Frames averaged into the reference (the sqrt(1 + 1/N) factor of the predicted SD).
    te_s, b0_t : float
        Echo time, s, and field, T.
    params : ThermometryParams
    labels : ndarray of int, shape (z, y, x), optional
    table : LabelTable, optional
        Needed with ``labels``.
    noise : dict, optional
        :func:`mrtherm.thermometry.noise.noise_estimate` of other frames (the image-position frames, when these
        magnitudes are resampled into tissue coordinates and interpolation has smoothed their noise); estimated
        from ``baseline_magnitudes`` when omitted.

    Returns
    -------
    Reliability
        Mask, SNR, predicted SD (C), noise sigma and method, the rules applied (report.json) and warnings.
    """
    noise = noise_estimate(baseline_magnitudes) if noise is None else noise
    sigma, method, warnings = noise["sigma"], f"{noise['description']}: {noise['why']}", list(noise["warnings"])
    mean_mag = np.asarray(baseline_magnitudes).mean(axis=0)
    snr = (mean_mag / sigma).astype(np.float32)
    theory = theoretical_sigma_celsius(np.maximum(snr, 1e-12), n_baseline, te_s, b0_t,
                                       params.alpha_ppm_per_c).astype(np.float32)
    mask = (snr >= params.snr_threshold) & np.isfinite(snr) & (theory <= params.max_sd_theory_c)
    rules = [f"baseline SNR >= {params.snr_threshold:g} (noise sigma {sigma:.4g}: {method})",
             f"noise-predicted temperature SD <= {params.max_sd_theory_c:g} C"]
    air_level, air_info = air_threshold(mean_mag)
    if air_level is not None:
        mask &= mean_mag >= air_level
        rules.append(f"above the air floor: mean magnitude >= {AIR_FLOOR_FACTOR:g} x the median of the dark class "
                     f"of the log-magnitude histogram ({air_level:.4g}; classes {air_info['class_ratio']:.3g} x apart)")
    if labels is not None:
        mask &= prf_valid_mask(labels, table)
        rules.append("labels where PRF works (excluded: " +
                     ", ".join(table.name(v) for v in table.prf_invalid_values()) + ")")
    return Reliability(mask, snr, theory, float(sigma), method, rules, list(warnings), noise)


def drift_reference(mask, params, affine, labels=None, roi=None, roi_info=None):
    """The static drift reference region.

    A user ROI is intersected with the mask; otherwise the reference is every
    reliable voxel minus the target lesion and ``auto_ref_target_margin_mm``
    around it (the per-frame exclusions are applied by the engines).

    Parameters
    ----------
    mask : ndarray of bool, shape (z, y, x)
        Reliable voxels.
    params : ThermometryParams
    affine : array_like, shape (4, 4)
        Voxel to world mm (voxel size of the margin).
    labels : ndarray of int, shape (z, y, x), optional
    roi : ndarray, shape (z, y, x), optional
        User drift ROI (non-zero inside); ``roi_info["path"]`` names it in errors and the report.
    roi_info : dict, optional

    Returns
    -------
    ref : ndarray of bool, shape (z, y, x)
    rule : dict
        ``mode`` (``user``/``automatic``), ``source``, ``rule`` (text) and ``voxels``.
    automatic : bool
        True when the engines must also apply the per-frame exclusions.

    Raises
    ------
    InputFileError
        The user ROI contains no reliable voxel.
    """
    if roi is not None:
        ref = (roi != 0) & mask
        if not ref.any():
            raise InputFileError(roi_info["path"], "drift ROI contains no reliable voxel")
        rule = {"mode": "user", "source": roi_info["path"], "rule": "user drift ROI intersected with the reliability mask"}
        return ref, {**rule, "voxels": int(ref.sum())}, False
    ref = mask.copy()
    text = ("automatic: reliable voxels; minus voxels that rose more than "
            f"{params.auto_ref_heated_c:g} C in earlier frames; minus voxels departing from the previous "
            f"frame's drift by more than {params.auto_ref_outlier_c:g} C")
    if labels is not None and np.any(labels == TARGET):
        ref &= ~target_exclusion(labels, TARGET, params.auto_ref_target_margin_mm, voxel_size_zyx_mm(affine))
        text += f"; minus the target lesion and {params.auto_ref_target_margin_mm:g} mm around it"
    return ref, {"mode": "automatic", "source": None, "rule": text, "voxels": int(ref.sum())}, True
