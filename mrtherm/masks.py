"""Reliability masks, noise estimation and the drift reference region.

Decisions recorded here (also in the README):

- **Noise SD** (per channel, sigma): from the temporal SD of the *magnitude*
  over the baseline frames, which B0 drift does not disturb. The median of the
  per-voxel SDs over voxels bright enough to be Gaussian (mean magnitude above
  10x a first estimate) is corrected for the small-sample bias of the SD
  (chi distribution with N-1 degrees of freedom). With one baseline frame the
  noise is taken from the dimmest 5 % of voxels as a Rayleigh background.
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
from scipy import ndimage, stats


def estimate_noise_sigma(baseline_magnitudes: np.ndarray) -> tuple[float, str]:
    """Per-channel noise SD from baseline magnitude frames ``(N, z, y, x)``.

    Returns ``(sigma, method)``.
    """
    mags = np.asarray(baseline_magnitudes, dtype=np.float64)
    sigma, method = _estimate(mags)
    floor = 1e-6 * float(np.max(mags)) if mags.size else 0.0
    if not sigma > floor:
        # Noise-free (synthetic) data: a tiny floor keeps SNR finite.
        return max(floor, np.finfo(np.float32).tiny), method + "; no noise found, floor 1e-6 x max magnitude"
    return sigma, method


def _estimate(mags):
    n = mags.shape[0]
    mean = mags.mean(axis=0)
    if n >= 2:
        sd = mags.std(axis=0, ddof=1)
        # Median of the sample SD of N Gaussian draws is sigma * sqrt(chi2_median(N-1) / (N-1)).
        bias = np.sqrt(stats.chi2.median(n - 1) / (n - 1))
        first = np.median(sd) / bias
        bright = mean > 10.0 * first
        if np.count_nonzero(bright) >= 50:
            return float(np.median(sd[bright]) / bias), f"temporal SD of magnitude over {n} baseline frames (bright voxels)"
        # Background-dominated: magnitude SD of Rayleigh noise is 0.655 sigma.
        return float(first / 0.655), f"temporal SD of magnitude over {n} baseline frames (Rayleigh background)"
    flat = np.sort(mean.ravel())
    dim = flat[: max(1, flat.size // 20)]
    sigma = float(np.median(dim) / np.sqrt(2.0 * np.log(2.0)))
    return sigma, "dimmest 5% of voxels as Rayleigh background (one baseline frame)"


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
