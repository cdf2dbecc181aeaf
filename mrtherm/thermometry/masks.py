"""Reliability masks, noise estimation and the drift reference region.

Decisions recorded here (also in the README):

- **Noise SD** (per channel, sigma): see :mod:`mrtherm.thermometry.noise` (temporal SD of
  the magnitude over several baseline frames; the Rayleigh air background of
  one frame; neighbour differences when one frame has no background).
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

import numpy as np
from scipy import ndimage

from mrtherm.thermometry.noise import estimate_noise_sigma  # noqa: F401  (re-exported: the mask's noise model)


AIR_CLASS_RATIO = 10.0
AIR_FLOOR_FACTOR = 3.0


def air_threshold(mean_magnitude: np.ndarray):
    """Magnitude below which a voxel is air, from the noise floor; ``(threshold or None, info)``.

    The SNR rule assumes a Rayleigh air background (mean 1.25 sigma), but coil
    combination (sum of squares over many channels) and vendor filters lift the
    air to a floor many sigma high, where air passes ``SNR >= 5``. When the
    log-magnitude histogram splits (Otsu) into a dark and a bright class whose
    geometric means differ at least ``AIR_CLASS_RATIO`` times (air against
    tissue; tissue-only images do not split so), voxels below
    ``AIR_FLOOR_FACTOR`` x the dark class's median are air. On a Rayleigh
    background this is ~3.5 sigma, below the SNR rule, so it changes nothing there.
    """
    v = np.asarray(mean_magnitude, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < 100:
        return None, {"applied": False}
    lv = np.log(v)
    hist, edges = np.histogram(lv, bins=256)
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    k = int(np.argmax(w0 * w1 * (m0 - m1) ** 2))
    dark = v[lv <= edges[k + 1]]
    ratio = float(np.exp(m1[k] - m0[k]))
    info = {"applied": False, "class_ratio": ratio, "dark_fraction": dark.size / v.size}
    if ratio < AIR_CLASS_RATIO or dark.size < max(100, 0.02 * v.size):
        return None, info
    info.update(applied=True, floor=float(np.median(dark)))
    return AIR_FLOOR_FACTOR * info["floor"], info


def target_exclusion(labels_zyx: np.ndarray, target_value: int, margin_mm: float, zooms_zyx) -> np.ndarray:
    """True within ``margin_mm`` of the target label (inclusive)."""
    target = labels_zyx == target_value
    if not target.any():
        return np.zeros(labels_zyx.shape, dtype=bool)
    dist = ndimage.distance_transform_edt(~target, sampling=zooms_zyx)
    return dist <= margin_mm


def zooms_zyx(affine: np.ndarray):
    """Voxel sizes in mm in (z, y, x) order from an affine."""
    return tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[::-1])


def resample_nearest(volume_xyz: np.ndarray, src_affine: np.ndarray, dst_shape_zyx, dst_affine: np.ndarray, fill=0):
    """Nearest-neighbour resampling of a label/mask volume onto another grid, ``(z, y, x)`` out."""
    dst_xyz = tuple(dst_shape_zyx[::-1])
    if volume_xyz.shape[:3] == dst_xyz and np.allclose(src_affine, dst_affine, atol=1e-3):
        out = volume_xyz
    else:
        mat = np.linalg.inv(src_affine) @ dst_affine
        out = ndimage.affine_transform(volume_xyz, mat[:3, :3], offset=mat[:3, 3], output_shape=dst_xyz,
                                       order=0, mode="constant", cval=fill)
    return np.ascontiguousarray(np.asarray(out).transpose(2, 1, 0))
