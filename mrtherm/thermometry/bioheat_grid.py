"""The bioheat model's internal grid: a box of image voxels around the focus, each split into finer voxels.

Why finer: a cortex about 1 mm thick absorbing ten times more than muscle makes temperature gradients over fractions
of a millimetre; a Pennes solve on a 2 mm image grid spreads the cortex over whole voxels (or, where the labels mark
every voxel the cortex touches, deposits the cortex's heat in 2 mm of bone) and runs far too hot there. The model
therefore runs on image voxels split ``factors`` times along (z, y, x) (default about 1.0 x 0.5 x 0.5 mm), inside a
box of half-size ``half_mm`` around the focus, with Dirichlet (body temperature) faces far enough from the heat that
they do not matter during a sonication and its cooling (checked by the refinement study in
``benchmarks/bench_bioheat.py``). Outputs go back to the image grid as means over each image voxel's fine voxels
(:meth:`ModelGrid.coarsen`), so they stay on the image grid.

Tissue on the fine grid: a label map given on its own finer grid (a planning CT's segmentation) is sampled at the
fine voxel centres (nearest); labels on the image grid are repeated into the fine voxels, and a cortex that then
fills whole image voxels is thinned to ``cortical_thickness_mm`` from the bone's outer surface (the rest of those
voxels become marrow), the equivalent of the thin cortex the image grid cannot draw.

The beam (:func:`beam_intensity`): a focused Gaussian beam along ``axis`` through ``focus`` (waist radius ``w0``,
Rayleigh length ``zR``), attenuated by the absorption integrated along the axis from the box face (so bone shadows
what lies behind it) and, before the box, along the axis through the focus on the image grid's labels (common to
the focal region).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from mrtherm.errors import ParameterError

__all__ = ["ModelGrid", "beam_intensity"]


class ModelGrid:
    """Image voxels ``box`` (index ranges) split into ``factors`` fine voxels each.

    Parameters
    ----------
    shape_zyx : tuple of int
        Image grid.
    affine : (4, 4) array
        Image voxel (x, y, z) to world mm.
    focus_mm : (3,) world mm
    half_mm : (3,) float
        Box half-size along (z, y, x), mm.
    resolution_mm : (3,) float
        Wanted fine spacing along (z, y, x), mm (each image voxel is split into ``round(voxel / resolution)``).
    """

    def __init__(self, shape_zyx, affine, focus_mm, half_mm=(12.0, 16.0, 16.0), resolution_mm=(1.0, 0.5, 0.5)):
        self.image_shape = tuple(int(v) for v in shape_zyx)
        self.affine = np.asarray(affine, dtype=np.float64)
        self.voxel_mm = np.linalg.norm(self.affine[:3, :3], axis=0)[::-1]  # (z, y, x)
        centre_xyz = np.linalg.solve(self.affine, np.append(np.asarray(focus_mm, dtype=np.float64), 1.0))[:3]
        centre = centre_xyz[::-1]
        if np.any(centre < -0.5) or np.any(centre > np.asarray(self.image_shape) - 0.5):
            raise ParameterError(f"the focus {tuple(round(float(v), 1) for v in focus_mm)} mm lies outside the image")
        half_vox = np.asarray(half_mm, dtype=np.float64) / self.voxel_mm
        lo = np.maximum(np.floor(centre - half_vox).astype(int), 0)
        hi = np.minimum(np.ceil(centre + half_vox).astype(int) + 1, self.image_shape)
        self.box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        self.factors = tuple(max(1, int(round(v / r))) for v, r in zip(self.voxel_mm, resolution_mm))
        self.coarse_shape = tuple(int(b - a) for a, b in zip(lo, hi))
        self.shape = tuple(n * f for n, f in zip(self.coarse_shape, self.factors))
        self.spacing_m = tuple(float(v / f) * 1e-3 for v, f in zip(self.voxel_mm, self.factors))
        # fine voxel (x, y, z) index -> image voxel index -> world
        scale = np.diag([1.0 / self.factors[2], 1.0 / self.factors[1], 1.0 / self.factors[0], 1.0])
        scale[:3, 3] = [lo[2] - 0.5 + 0.5 / self.factors[2], lo[1] - 0.5 + 0.5 / self.factors[1],
                        lo[0] - 0.5 + 0.5 / self.factors[0]]
        self.fine_affine = self.affine @ scale

    def coarsen(self, fine):
        """Means over each image voxel's fine voxels (fine shape -> box shape).

        Parameters
        ----------
        fine : array, shape :attr:`shape` (leading axes allowed)

        Returns
        -------
        array, shape :attr:`coarse_shape`
        """
        (nz, ny, nx), (fz, fy, fx) = self.coarse_shape, self.factors
        lead = fine.shape[:-3]
        return fine.reshape(*lead, nz, fz, ny, fy, nx, fx).mean(axis=(-5, -3, -1))

    def refine(self, coarse, xp=np):
        """Each image voxel's value repeated into its fine voxels (box shape -> fine shape).

        Parameters
        ----------
        coarse : array, shape :attr:`coarse_shape`
        xp : array module

        Returns
        -------
        array, shape :attr:`shape`
        """
        out = coarse
        for axis, f in zip((-3, -2, -1), self.factors):
            out = xp.repeat(out, f, axis=axis)
        return out

    def world_points(self):
        """World mm of every fine voxel centre, shape (3, z, y, x) (x, y, z components).

        Returns
        -------
        ndarray of float64
        """
        idx = np.indices(self.shape, dtype=np.float64)[::-1]  # (x, y, z) index
        pts = np.tensordot(self.fine_affine[:3, :3], idx, axes=1) + self.fine_affine[:3, 3][:, None, None, None]
        return pts

    def fine_labels(self, image_labels, table, native=None, cortical_thickness_mm=1.2):
        """Tissue label of every fine voxel (module docstring).

        Parameters
        ----------
        image_labels : ndarray of int, shape image (z, y, x)
        table : LabelTable
        native : tuple (labels, affine), optional
            A label map on its own grid (finer than the image's), sampled at the fine voxel centres.
        cortical_thickness_mm : float
            Cortex kept when the labels are the image grid's.

        Returns
        -------
        ndarray of int16, shape :attr:`shape`
        """
        if native is not None:
            labels, aff = native
            pts = self.world_points().reshape(3, -1)
            ijk = np.linalg.solve(np.asarray(aff, dtype=np.float64), np.vstack([pts, np.ones(pts.shape[1])]))[:3]
            idx = np.rint(ijk[::-1]).astype(int)  # (z, y, x)
            lab = np.asarray(labels)
            inside = np.all((idx >= 0) & (idx < np.asarray(lab.shape)[:, None]), axis=0)
            flat = np.zeros(idx.shape[1], dtype=np.int16)
            flat[inside] = lab[tuple(i[inside] for i in idx)]
            return flat.reshape(self.shape)
        fine = self.refine(np.asarray(image_labels)[self.box]).astype(np.int16)
        return _thin_cortex(fine, table, self.spacing_m, cortical_thickness_mm, 0.5 * float(min(self.voxel_mm[1:])))


def _thin_cortex(fine, table, spacing_m, thickness_mm, surface_shift_mm=0.0):
    """Cortex farther than ``thickness_mm`` inside the bone's smoothed outer surface becomes marrow."""
    cortex = table.values_named("cortical bone")
    marrow = table.values_named("trabecular bone / marrow")
    if not cortex or not marrow:
        return fine
    bone = np.isin(fine, cortex + marrow)
    if not bone.any():
        return fine
    spacing_mm = [s * 1e3 for s in spacing_m]
    # the blocky image-grid outline smoothed in-plane before measuring depth
    sigma = [0.0, 1.0 / spacing_mm[1], 1.0 / spacing_mm[2]]  # 1 mm in-plane
    smooth = ndimage.gaussian_filter(bone.astype(np.float64), sigma) >= 0.5
    depth_mm = ndimage.distance_transform_edt(smooth, sampling=spacing_mm)
    out = fine.copy()
    if surface_shift_mm > 0:  # the outline drawn through every voxel the cortex touches lies outside the surface
        outside = bone & (depth_mm <= surface_shift_mm)
        _, nearest = ndimage.distance_transform_edt(bone, sampling=spacing_mm, return_indices=True)
        out[outside] = fine[tuple(n[outside] for n in nearest)]
    deep = np.isin(fine, cortex) & (depth_mm > thickness_mm + surface_shift_mm)
    out[deep] = marrow[0]
    return out


def beam_intensity(grid: ModelGrid, absorption_np_m, focus_mm, axis, w0_mm, rayleigh_mm, cutoff=4.0,
                   image_absorption_np_m=None):
    """Relative intensity of a focused Gaussian beam on the fine grid, attenuated inside the box (module docstring).

    ``I = (w0 / w)^2 exp(-2 rho^2 / w^2) exp(-2 tau)``, ``w = w0 sqrt(1 + (s / zR)^2)``, ``s`` the distance along the
    axis from the focus, ``rho`` from the axis, ``tau`` the absorption integrated along the axis from the box face.

    Parameters
    ----------
    grid : ModelGrid
    absorption_np_m : ndarray, shape grid.shape
        Np/m.
    focus_mm, axis : (3,) world mm and direction of propagation
    w0_mm, rayleigh_mm : float
    cutoff : float
        Voxels farther than ``cutoff * w`` from the axis get 0 (exp(-32)).
    image_absorption_np_m : ndarray, shape image (z, y, x), optional
        Absorption on the image grid, for the path before the box.

    Returns
    -------
    ndarray of float64, shape grid.shape
        1 at the focus in a lossless medium.
    """
    d = np.asarray(axis, dtype=np.float64)
    d = d / np.linalg.norm(d)
    rel = grid.world_points() - np.asarray(focus_mm, dtype=np.float64)[:, None, None, None]
    s = np.tensordot(d, rel, axes=1)
    rho2 = np.maximum(np.sum(rel * rel, axis=0) - s * s, 0.0)
    w2 = w0_mm ** 2 * (1.0 + (s / rayleigh_mm) ** 2)
    lit = rho2 < (cutoff ** 2) * w2
    intensity = np.zeros(grid.shape)
    intensity[lit] = (w0_mm ** 2 / w2[lit]) * np.exp(-2.0 * rho2[lit] / w2[lit])
    tau = _optical_depth(grid, absorption_np_m, d, lit)
    if image_absorption_np_m is not None:
        tau = tau + _depth_before_box(grid, image_absorption_np_m, np.asarray(focus_mm, dtype=np.float64), d)
    intensity[lit] *= np.exp(-2.0 * tau)
    return intensity


def _depth_before_box(grid, mu_image, focus, d, step_mm=0.25):
    """Absorption along the axis through the focus, backwards from the box to the image's edge (image labels)."""
    inv = np.linalg.inv(grid.affine)
    shape = np.asarray(grid.image_shape)
    lo = np.asarray([s.start for s in grid.box]) - 0.5
    hi = np.asarray([s.stop for s in grid.box]) - 0.5
    tau, j = 0.0, 0
    while True:
        j += 1
        pos = (inv @ np.append(focus - (j - 0.5) * step_mm * d, 1.0))[:3][::-1]  # image (z, y, x) index
        if np.any(pos < -0.5) or np.any(pos > shape - 0.5):
            return tau
        if np.any(pos < lo) or np.any(pos > hi):
            idx = tuple(np.clip(np.rint(pos).astype(int), 0, shape - 1))
            tau += float(mu_image[idx]) * step_mm * 1e-3


def _optical_depth(grid, absorption_np_m, d, lit):
    """Absorption integrated backwards along ``d`` from every lit fine voxel to the box face (mid-point rule)."""
    step_mm = 0.5 * min(s * 1e3 for s in grid.spacing_m)
    inv = np.linalg.inv(grid.fine_affine)
    d_idx = (inv[:3, :3] @ d)[::-1] * step_mm  # one step in fine (z, y, x) index units
    start = np.argwhere(lit).astype(np.float64)  # (n, 3) fine (z, y, x) indices
    extent = np.asarray(grid.shape, dtype=np.float64)
    n_steps = int(math.ceil(np.linalg.norm(extent * np.asarray(grid.spacing_m) * 1e3) / step_mm)) + 1
    tau = np.zeros(len(start))
    alive = np.ones(len(start), dtype=bool)
    for j in range(n_steps):
        pos = start - (j + 0.5) * d_idx
        alive &= np.all((pos > -0.5) & (pos < extent - 0.5), axis=1)
        if not alive.any():
            break
        idx = np.rint(pos[alive]).astype(int)
        tau[alive] += absorption_np_m[idx[:, 0], idx[:, 1], idx[:, 2]] * step_mm * 1e-3
    return tau
