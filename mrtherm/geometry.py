"""Voxel geometry shared by every module: voxel sizes from an affine and nearest-neighbour regridding.

Affines map voxel (i, j, k) = (x, y, z) to world RAS+ mm (NIfTI); arrays are ``(z, y, x)``.
"""

from __future__ import annotations

import numpy as np


def voxel_size_xyz_mm(affine) -> np.ndarray:
    """Voxel edge lengths (x, y, z) in mm: the norms of the affine's first three columns.

    Parameters
    ----------
    affine : array_like, shape (4, 4)
        Voxel (i, j, k) to world RAS+ mm.

    Returns
    -------
    ndarray of float64, shape (3,)
        Edge lengths along x, y, z, mm (oblique affines included).

    Examples
    --------
    >>> voxel_size_xyz_mm(np.diag([2.0, 2.0, 4.0, 1.0])).tolist()
    [2.0, 2.0, 4.0]
    """
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def voxel_size_zyx_mm(affine) -> tuple:
    """Voxel edge lengths in ``(z, y, x)`` order, mm (the ``sampling`` of a ``(z, y, x)`` array).

    Parameters
    ----------
    affine : array_like, shape (4, 4)
        Voxel (i, j, k) to world RAS+ mm.

    Returns
    -------
    tuple of float
        ``(dz, dy, dx)``, mm.
    """
    return tuple(float(v) for v in voxel_size_xyz_mm(affine)[::-1])


def voxel_volume_ml(affine) -> float:
    """Volume of one voxel, mL (|det| of the 3x3 part, mm^3, / 1000).

    Parameters
    ----------
    affine : array_like, shape (4, 4)
        Voxel (i, j, k) to world RAS+ mm.

    Returns
    -------
    float
        mL (cm^3).

    Examples
    --------
    >>> round(voxel_volume_ml(np.diag([2.0, 2.0, 4.0, 1.0])), 6)
    0.016
    """
    return abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


def resample_nearest(volume_xyz: np.ndarray, src_affine, dst_shape_zyx, dst_affine, fill=0) -> np.ndarray:
    """Nearest-neighbour resampling of a label/mask volume ``(x, y, z)`` onto another grid; ``(z, y, x)`` out.

    Parameters
    ----------
    volume_xyz : ndarray, shape (x, y, z)
        Labels or mask as nibabel gives them.
    src_affine, dst_affine : array_like, shape (4, 4)
        Voxel to world RAS+ mm of the source and of the destination grid.
    dst_shape_zyx : tuple of int
        Destination shape ``(z, y, x)``.
    fill : int or float
        Value outside the source volume.

    Returns
    -------
    ndarray, shape dst_shape_zyx
        The volume on the destination grid, C-contiguous, the source's dtype (values are never interpolated).
    """
    from scipy import ndimage  # noqa: PLC0415 - only when a volume is regridded
    dst_xyz = tuple(dst_shape_zyx[::-1])
    if volume_xyz.shape[:3] == dst_xyz and np.allclose(src_affine, dst_affine, atol=1e-3):
        out = volume_xyz
    else:
        mat = np.linalg.inv(src_affine) @ dst_affine
        out = ndimage.affine_transform(volume_xyz, mat[:3, :3], offset=mat[:3, 3], output_shape=dst_xyz,
                                       order=0, mode="constant", cval=fill)
    return np.ascontiguousarray(np.asarray(out).transpose(2, 1, 0))


class TreatmentGrid:
    """The grid a treatment's cumulative maps live on: shape ``(z, y, x)``, affine and where they came from.

    Parameters
    ----------
    shape_zyx : tuple of int
    affine : (4, 4) array
        Voxel (i, j, k) = (x, y, z) to world RAS+ mm.
    source : str
        Where the grid came from (report.json), e.g. ``"grid of sonication 1"`` or ``"file planning.nii.gz"``.
    """

    def __init__(self, shape_zyx, affine, source):
        self.shape = tuple(int(v) for v in shape_zyx)
        self.affine = np.asarray(affine, dtype=np.float64)
        self.source = source

    def describe(self) -> dict:
        """For report.json.

        Returns
        -------
        dict
        """
        return {"shape_zyx": list(self.shape), "affine": self.affine.tolist(), "source": self.source,
                "voxel_volume_ml": voxel_volume_ml(self.affine)}

    def resampler(self, shape_zyx, affine):
        """``f(volume_zyx, order, fill)``: a volume of grid (``shape_zyx``, ``affine``) on this grid.

        The identity (the array itself) when the grids coincide; else scipy's ``affine_transform`` with
        interpolation ``order`` (1 linear, 0 nearest) and ``fill`` outside the source.

        Parameters
        ----------
        shape_zyx : tuple of int
        affine : (4, 4) array
            Of the source grid.

        Returns
        -------
        callable
        """
        if tuple(shape_zyx) == self.shape and np.allclose(affine, self.affine, atol=1e-4):
            return lambda vol, order, fill: vol
        mat = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ self.affine
        out_xyz = self.shape[::-1]

        def resample(vol, order, fill):
            from scipy import ndimage  # noqa: PLC0415
            out = ndimage.affine_transform(np.asarray(vol).transpose(2, 1, 0), mat[:3, :3], offset=mat[:3, 3],
                                           output_shape=out_xyz, order=order, mode="constant", cval=fill)
            return np.ascontiguousarray(out.transpose(2, 1, 0))
        return resample
