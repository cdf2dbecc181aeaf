"""A binary mask carried to another grid by fractional occupancy, so that its volume is kept.

The rule: each destination voxel is cut into a regular sub-grid of ``nx * ny * nz`` points (the
centres of equal sub-cells, offsets ``(s + 0.5) / n - 0.5`` voxel along each axis). Each point goes
through the destination affine to world mm and through the inverse source affine to a source voxel
index, rounded to the nearest voxel (``floor(c + 0.5)``, the voxel whose cell contains the point; a
point on a boundary, to :data:`TIE_TOLERANCE`, goes to the higher index).
The occupancy is the fraction of the points that land in a source voxel of the mask; points outside
the source grid count as outside the mask. The destination voxel is in the mask when its occupancy
is >= 0.5. The default sub-grid (:func:`subsamples_per_axis`) has an odd number of points per axis,
so the occupancy never ties at 0.5 (with an even number given explicitly, a tie is in). Any affines
(oblique, flipped, permuted axes) work.

When destination voxels nest exactly in source voxels (a grid 2x or 3x finer, aligned), every
sub-point of a destination voxel falls in the same source voxel: the result is the source mask
repeated, with the same volume. A linear interpolation of a continuous map followed by a threshold
does not keep the volume of a steep (log-scale) map such as a CEM43 dose; this rule does.

Speed: only destination voxels near the mask's boundary need their sub-points. A destination
voxel's sub-points lie within ``r_k = 0.5 * sum_a |M[k, a]|`` source voxels of its centre along source
axis ``k`` (``M`` the destination-to-source index map), so their nearest source voxels lie within
``R_k = floor(r_k) + 1`` voxels of the centre's. Where every source voxel within that box has the
same mask value (a max/min filter of the zero-padded mask), the centre's value is the exact
occupancy (0 or 1). In the others (the band), a voxel whose sub-points' bounding box rounds to one
source voxel along every axis (all of them when the grids nest) takes that voxel's value; only the
rest evaluate their sub-points, one vectorised pass per sub-point offset. The result is the same as
evaluating every sub-point of every voxel (tests/test_evaluate.py checks it against loops).
"""

from __future__ import annotations

import numpy as np

#: Sub-points per destination axis: at least this many, and two per source voxel a destination voxel
#: edge spans, rounded up to an odd number (below) ...
MIN_SUBSAMPLES = 5
#: ... and at most this many.
MAX_SUBSAMPLES = 15
#: A point this close (source voxels) below the boundary between two source voxels goes to the upper
#: one, as a point exactly on it does: ties are broken the same way whatever the rounding of the
#: affines (NIfTI stores them as float32, about 1e-5 voxel of error at 100-300 mm from the origin).
TIE_TOLERANCE = 1e-4
_ROUND = 0.5 + TIE_TOLERANCE
#: Destination voxels per chunk (memory bound of the vectorised lookups).
_CHUNK = 1 << 20


def index_map(src_affine, dst_affine) -> np.ndarray:
    """The map of destination voxel indices (i, j, k) to source voxel indices (x, y, z order).

    Parameters
    ----------
    src_affine, dst_affine : array_like, shape (4, 4)
        Voxel (i, j, k) to world RAS+ mm of the source and of the destination grid.

    Returns
    -------
    ndarray of float64, shape (4, 4)
        ``inv(src_affine) @ dst_affine``.

    Examples
    --------
    >>> index_map(np.diag([2.0, 2.0, 2.0, 1.0]), np.diag([1.0, 1.0, 1.0, 1.0]))[:3, :3].diagonal().tolist()
    [0.5, 0.5, 0.5]
    """
    return np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)


def subsamples_per_axis(src_affine, dst_affine) -> tuple:
    """Sub-points per destination axis (x, y, z): two per source voxel an edge spans, odd, in [5, 15].

    Odd, so that the occupancy is never exactly 0.5: a tie would need a rule, and "ties are in" moves
    the edge outward. With 4 points per axis a plane cutting a destination voxel gives a tie (2 of 4)
    for a quarter of its positions, so the edge moves out by 1/8 voxel all round (+3 % on an 8 mm
    sphere at 0.8 mm); with ``n`` odd a plane cutting one axis gives ``(n + 1) / 2`` points or more
    exactly when more than half of the voxel lies in the mask.

    Parameters
    ----------
    src_affine, dst_affine : array_like, shape (4, 4)

    Returns
    -------
    tuple of int
        ``(nx, ny, nz)``.

    Examples
    --------
    >>> subsamples_per_axis(np.diag([1.0, 1.0, 1.0, 1.0]), np.diag([0.5, 0.5, 3.0, 1.0]))
    (5, 5, 7)
    """
    m = index_map(src_affine, dst_affine)[:3, :3]
    span = np.abs(m).max(axis=0)  # source voxels along the most-crossed source axis, per destination edge
    out = []
    for s in span:
        n = int(np.clip(np.ceil(2.0 * s - 1e-9), MIN_SUBSAMPLES, MAX_SUBSAMPLES))
        out.append(n + 1 - n % 2)
    return tuple(out)


def _coded(mask, a):
    """The mask zero-padded, its code (1 inside, 0 outside, 2 near the boundary: sub-points needed) and the
    padding per source axis (x, y, z)."""
    # source voxels a destination voxel's sub-points can reach from its centre's, per source axis (x, y, z)
    reach = np.floor(0.5 * np.abs(a).sum(axis=1) + 1e-9).astype(np.int64) + 1
    # zero padding: the band (below) of a voxel that touches the mask lies within `reach` of the grid, and
    # its sub-points within `reach` of that, so they never leave the padded array
    pad_xyz = 2 * reach + 1
    from scipy import ndimage  # noqa: PLC0415
    padded = np.pad(mask, [(int(p), int(p)) for p in pad_xyz[::-1]])
    size = tuple(int(2 * r + 1) for r in reach[::-1])
    band = ndimage.maximum_filter(padded, size=size, mode="constant", cval=0) != \
        ndimage.minimum_filter(padded, size=size, mode="constant", cval=0)
    code = padded.astype(np.uint8)
    code[band] = 2
    return padded, code.ravel(), pad_xyz


def occupancy_counts(mask_zyx, src_affine, shape_zyx, dst_affine, n_sub_xyz=None):
    """How many of each destination voxel's sub-points land in the mask.

    Parameters
    ----------
    mask_zyx : ndarray of bool, shape (z, y, x)
        The mask on the source grid.
    src_affine : array_like, shape (4, 4)
        Voxel to world RAS+ mm of the source grid.
    shape_zyx : tuple of int
        Destination shape ``(z, y, x)``.
    dst_affine : array_like, shape (4, 4)
        Voxel to world RAS+ mm of the destination grid.
    n_sub_xyz : tuple of int, optional
        Sub-points per destination axis; :func:`subsamples_per_axis` by default.

    Returns
    -------
    counts : ndarray of int32, shape ``shape_zyx``
        Sub-points in the mask, ``0 .. total``.
    total : int
        Sub-points per destination voxel, ``nx * ny * nz``.
    """
    mask = np.ascontiguousarray(np.asarray(mask_zyx, dtype=bool))
    shape_zyx = tuple(int(s) for s in shape_zyx)
    n_sub = tuple(int(n) for n in (n_sub_xyz or subsamples_per_axis(src_affine, dst_affine)))
    total = n_sub[0] * n_sub[1] * n_sub[2]
    m = index_map(src_affine, dst_affine)
    a, t = m[:3, :3], m[:3, 3]
    counts = np.zeros(shape_zyx, dtype=np.int32)
    if not mask.any():
        return counts, total
    padded, code_flat, pad_xyz = _coded(mask, a)
    table = padded.ravel()
    pshape_xyz = np.array(padded.shape[::-1], dtype=np.int64)
    stride_y, stride_z = float(padded.shape[2]), float(padded.shape[2] * padded.shape[1])

    half = [(np.arange(n) + 0.5) / n - 0.5 for n in n_sub]  # sub-point offsets, destination voxels
    offsets = np.stack(np.meshgrid(*half, indexing="ij"), axis=0).reshape(3, -1)  # (3, total)
    src_offsets = a @ offsets
    # half-extent of the sub-points around the centre, source voxels per source axis
    spread = np.abs(a) @ np.array([h.max() for h in half])
    nz, ny, nx = shape_zyx
    slab = max(1, _CHUNK // max(1, ny * nx))
    jj, ii = np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64), indexing="ij")
    for z0 in range(0, nz, slab):
        kk = np.arange(z0, min(nz, z0 + slab), dtype=np.float64)
        centres = (a[:, 0, None, None, None] * ii + a[:, 1, None, None, None] * jj
                   + a[:, 2, None, None, None] * kk[:, None, None] + t[:, None, None, None]).reshape(3, -1)
        ijk = np.floor(centres + _ROUND).astype(np.int64) + pad_xyz[:, None]
        inside = np.all((ijk >= 0) & (ijk < pshape_xyz[:, None]), axis=0)
        flat = ijk[0] + ijk[1] * int(stride_y) + ijk[2] * int(stride_z)
        c = np.where(inside, code_flat[np.where(inside, flat, 0)], 0)
        out = np.where(c == 1, total, 0).astype(np.int32)
        hit = np.flatnonzero(c == 2)
        if hit.size:
            pts = centres[:, hit]
            # all sub-points in the centre's source voxel: the occupancy is that voxel's value
            one = np.all(np.floor(pts - spread[:, None] + _ROUND) == np.floor(pts + spread[:, None] + _ROUND), axis=0)
            out[hit[one]] = table[flat[hit[one]]].astype(np.int32) * total
            hit, base = hit[~one], pts[:, ~one] + _ROUND + pad_xyz[:, None]
            acc = np.zeros(hit.size, dtype=np.int32)
            fx, fy, fz = (np.empty(hit.size) for _ in range(3))
            for s in range(total):
                np.floor(np.add(base[0], src_offsets[0, s], out=fx), out=fx)
                np.floor(np.add(base[1], src_offsets[1, s], out=fy), out=fy)
                np.floor(np.add(base[2], src_offsets[2, s], out=fz), out=fz)
                fx += fy * stride_y
                fx += fz * stride_z
                acc += table[fx.astype(np.intp)]
            out[hit] = acc
        counts[z0:z0 + kk.size] = out.reshape(kk.size, ny, nx)
    return counts, total


def mask_on_grid(mask_zyx, src_affine, shape_zyx, dst_affine, n_sub_xyz=None):
    """The mask on the destination grid: occupancy >= 0.5 (see the module's rule).

    Parameters
    ----------
    mask_zyx : ndarray of bool, shape (z, y, x)
    src_affine : array_like, shape (4, 4)
    shape_zyx : tuple of int
    dst_affine : array_like, shape (4, 4)
    n_sub_xyz : tuple of int, optional

    Returns
    -------
    ndarray of bool, shape ``shape_zyx``

    Examples
    --------
    >>> coarse = np.zeros((2, 2, 2), bool); coarse[0, 0, 0] = True
    >>> fine = np.diag([0.5, 0.5, 0.5, 1.0]); fine[:3, 3] = -0.25  # 2x finer, nested in the coarse voxels
    >>> int(mask_on_grid(coarse, np.eye(4), (4, 4, 4), fine).sum())
    8
    """
    counts, total = occupancy_counts(mask_zyx, src_affine, shape_zyx, dst_affine, n_sub_xyz)
    return 2 * counts >= total

