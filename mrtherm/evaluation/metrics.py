"""Overlap and surface metrics of two binary masks on one grid, distances in mm.

- Dice: ``2 |A & B| / (|A| + |B|)``.
- Surface: the voxels of a mask with a 6-neighbour outside it. The distance of
  a surface voxel of A to B's surface is the Euclidean distance transform of B's
  non-surface (anisotropic voxel sizes, scipy ``distance_transform_edt``).
- HD95: ``max(P95(d(A -> B)), P95(d(B -> A)))`` (the usual symmetric 95th
  percentile Hausdorff distance).
- Signed surface distance of the predicted surface to the NPV boundary:
  positive outside the NPV (prediction beyond the ablated tissue), negative
  inside.
"""

from __future__ import annotations

import numpy as np


def surface(mask):
    """Boundary voxels of a mask (6-connectivity).

    Parameters
    ----------
    mask : ndarray of bool, shape (z, y, x)

    Returns
    -------
    ndarray of bool, shape (z, y, x)
    """
    from scipy import ndimage  # noqa: PLC0415
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def _distance_to(mask_surface, spacing_zyx):
    from scipy import ndimage  # noqa: PLC0415
    return ndimage.distance_transform_edt(~mask_surface, sampling=spacing_zyx)


def dice(a, b) -> float:
    """Dice coefficient (NaN when both are empty).

    Parameters
    ----------
    a, b : ndarray of bool

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> dice(np.array([1, 1, 0, 0], bool), np.array([0, 1, 1, 0], bool))
    0.5
    """
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum() + b.sum())
    return float(2.0 * (a & b).sum() / total) if total else float("nan")


def surface_distances(a, b, spacing_zyx):
    """Distances (mm) from each surface voxel of ``a`` to the surface of ``b``.

    Parameters
    ----------
    a, b : ndarray of bool, shape (z, y, x)
    spacing_zyx : sequence of float
        Voxel size, mm.

    Returns
    -------
    ndarray of float64
        Empty when either mask is empty.
    """
    sa, sb = surface(a), surface(b)
    if not sa.any() or not sb.any():
        return np.zeros(0)
    return _distance_to(sb, spacing_zyx)[sa]


def hd95(a, b, spacing_zyx) -> float:
    """Symmetric 95th-percentile Hausdorff distance, mm (NaN when a mask is empty).

    Parameters
    ----------
    a, b : ndarray of bool, shape (z, y, x)
    spacing_zyx : sequence of float

    Returns
    -------
    float
    """
    d_ab, d_ba = surface_distances(a, b, spacing_zyx), surface_distances(b, a, spacing_zyx)
    if not d_ab.size or not d_ba.size:
        return float("nan")
    return float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))


def signed_surface_distances(predicted, npv, spacing_zyx):
    """Signed distance (mm) of each predicted-surface voxel to the NPV boundary, positive outside the NPV.

    Parameters
    ----------
    predicted, npv : ndarray of bool, shape (z, y, x)
    spacing_zyx : sequence of float

    Returns
    -------
    ndarray of float64
    """
    d = surface_distances(predicted, npv, spacing_zyx)
    if not d.size:
        return d
    inside = np.asarray(npv, bool)[surface(predicted)]
    return np.where(inside, -d, d)
