"""Acoustic-window check: trace every transducer element to the focus through the labels.

Each element-to-focus segment is followed by exact voxel traversal (Amanatides &
Woo 1987) in the label volume's voxel space, so no voxel the segment crosses is
skipped; crossings of zero length (a corner touched at a point) are ignored.
Along the path:

- ``GAS``, ``METAL``, ``NO_PASS_ZONE``: the element is blocked;
- ``CRITICAL_STRUCTURE``: crossing the spinal cord or a nerve root blocks; passing
  closer than ``critical_min_distance_mm`` (and closer than the focus itself is)
  degrades;
- ``SCAR``: blocks by default, degrades with ``scar_blocks=False``;
- ``BONE_PREFOCAL``: bone met farther than ``target_surface_mm`` before the focus;
  bone within that distance is the target surface;
- ``CRITICAL_ANGLE``: at the first bone interface (target surface), the angle
  between the ray and the bone normal (gradient of the Gaussian-smoothed bone
  mask) exceeds the critical angle (default from Snell's law, about 27 degrees);
- ``OUT_OF_VOLUME``: part of the path lies outside the labelled volume; taken as
  coupling water and reported (does not change the status).

An element is ``blocked`` with any blocking reason, ``degraded`` with a
degrading one, else ``clear``. Active fraction = area of non-blocked elements /
total area. The same rules run in NumPy here and in the CUDA kernel
``gpu/mrtherm_gpu/kernels/raymarch.cu``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from scipy import ndimage

from mrtherm.errors import InputFileError
from mrtherm.geometry import voxel_size_zyx_mm
from mrtherm.io.labels import LabelTable
from mrtherm.window import acoustics

# reason bits (shared with the CUDA kernel)
GAS, METAL, BONE_PREFOCAL, CRITICAL_ANGLE, SCAR, NO_PASS_ZONE, CRITICAL_CROSS, OUT_OF_VOLUME, CRITICAL_NEAR = (
    1, 2, 4, 8, 16, 32, 64, 128, 256)
REASON_CODES = [(GAS, "GAS"), (METAL, "METAL"), (BONE_PREFOCAL, "BONE_PREFOCAL"), (CRITICAL_ANGLE, "CRITICAL_ANGLE"),
                (SCAR, "SCAR"), (NO_PASS_ZONE, "NO_PASS_ZONE"), (CRITICAL_CROSS, "CRITICAL_STRUCTURE"),
                (CRITICAL_NEAR, "CRITICAL_STRUCTURE"), (OUT_OF_VOLUME, "OUT_OF_VOLUME")]
# voxel roles (shared with the CUDA kernel)
ROLE_PASS, ROLE_GAS, ROLE_METAL, ROLE_BONE, ROLE_SCAR, ROLE_CRITICAL, ROLE_NOPASS = range(7)
_ROLE_OF = {"transparent": ROLE_PASS, "pass": ROLE_PASS, "attenuating": ROLE_PASS, "entry": ROLE_PASS,
            "target": ROLE_PASS, "bone_cortical": ROLE_BONE, "bone_trabecular": ROLE_BONE, "block_gas": ROLE_GAS,
            "block_metal": ROLE_METAL, "block_scar": ROLE_SCAR, "critical": ROLE_CRITICAL,
            "block_no_pass": ROLE_NOPASS}
STATUS_CLEAR, STATUS_DEGRADED, STATUS_BLOCKED = 0, 1, 2
STATUS_NAMES = {STATUS_CLEAR: "clear", STATUS_DEGRADED: "degraded", STATUS_BLOCKED: "blocked"}
# crossings shorter than this (a voxel corner or edge touched at a point) are not crossings; numerical tolerance
ZERO_SEGMENT_MM = 1e-6

# ---------------------------------------------------------------------------- rule defaults (WindowConfig)
# Source of every threshold below: project choice. No published guideline or paper figure giving these numbers
# was found; they are defaults for the treating team to set (README, "Rules and defaults"), each with the reason
# for its value.

# Bone met within this distance before the focus is the target surface (treated), farther it blocks.
# Project choice, reason: bone-metastasis foci sit on or just inside the cortex, so the cortex the beam meets in
# the last few millimetres before the focus is the one being treated, not an obstacle in the path.
TARGET_SURFACE_MM = 5.0
# An element passing closer than this to the spinal cord or a nerve root (and closer than the focus is) degrades.
# Project choice, reason: the same margin as FOCUS_CRITICAL_FAIL_MM: room for the width of the beam around a ray,
# targeting error and heat conducted from tissue on the path.
CRITICAL_MIN_DISTANCE_MM = 5.0
# Gaussian sigma smoothing the bone mask before its gradient gives the surface normal (incidence angle).
# Project choice, reason: about one voxel of a 1-2 mm label map, so the normal follows the bone surface rather
# than the staircase of voxel faces.
NORMAL_SMOOTHING_MM = 1.5
# Verdict from the active fraction (area of non-blocked elements / total area): PASS at or above, WARN at or above.
# Project choice, reason: a coherent array's focal pressure scales with the active area, its intensity with the
# square, so 0.68 keeps about half (0.68^2 = 0.46) of the full-aperture focal intensity and 0.49 about a quarter
# (0.49^2 = 0.24); below that the power needed for ablation heats the near field.
PASS_ACTIVE_AREA_FRACTION = 0.68
WARN_ACTIVE_AREA_FRACTION = 0.49
# Focus to the nearest spinal-cord or nerve-root voxel: WARN below the first, FAIL below the second.
# Project choice, reason: FAIL keeps the margin of CRITICAL_MIN_DISTANCE_MM between the focal spot and a structure
# whose injury is irreversible; WARN at twice that tells the operator before a focus reaches the FAIL band.
FOCUS_CRITICAL_WARN_MM = 10.0
FOCUS_CRITICAL_FAIL_MM = 5.0
# Length of the beam axis behind the focus that is sampled and reported (classes met there), and the distance
# within which a critical structure there warns.
# Project choice, reason: energy not absorbed at the focus diverges behind it; a cord or root within 30 mm still
# lies in the far-field cone of a wide-aperture array, and sampling 10 mm farther shows what lies just beyond.
BEYOND_FOCUS_MM = 40.0
BEYOND_FOCUS_CRITICAL_WARN_MM = 30.0
# A ray is "closer than the focus" to a critical structure only when its minimum distance is smaller than the
# focus's by more than this. Project choice, reason: floating-point tolerance, so that a ray whose closest point
# is its own focus (equal distances) is not flagged.
CLOSER_THAN_FOCUS_TOLERANCE_MM = 1e-6


@dataclasses.dataclass
class WindowConfig:
    """Thresholds of the acoustic-window check (all configurable).

    Defaults are the module constants above (each with its source: a project choice with its reason), and the
    sound speeds of :mod:`mrtherm.window.acoustics`.
    """

    critical_angle_deg: float | None = None  # None: asin(c_soft / c_bone)
    c_soft_m_s: float = acoustics.SPEED_SOFT_TISSUE_M_S
    c_bone_m_s: float = acoustics.SPEED_CORTICAL_BONE_M_S
    target_surface_mm: float = TARGET_SURFACE_MM
    scar_blocks: bool = True
    critical_min_distance_mm: float = CRITICAL_MIN_DISTANCE_MM
    normal_smoothing_mm: float = NORMAL_SMOOTHING_MM
    active_fraction_pass: float = PASS_ACTIVE_AREA_FRACTION
    active_fraction_warn: float = WARN_ACTIVE_AREA_FRACTION
    focus_critical_warn_mm: float = FOCUS_CRITICAL_WARN_MM
    focus_critical_fail_mm: float = FOCUS_CRITICAL_FAIL_MM
    beyond_focus_mm: float = BEYOND_FOCUS_MM
    beyond_focus_critical_warn_mm: float = BEYOND_FOCUS_CRITICAL_WARN_MM

    def angle_deg(self) -> float:
        """The critical angle in degrees (configured, or asin(c_soft / c_bone)).

        Returns
        -------
        float
        """
        if self.critical_angle_deg is not None:
            return float(self.critical_angle_deg)
        return acoustics.critical_angle_deg(self.c_soft_m_s, self.c_bone_m_s)

    def blocking_bits(self) -> int:
        """Reason bits that block an element under this configuration.

        Returns
        -------
        int
            Gas, metal, pre-focal bone, critical angle, no-pass zone, crossing a critical structure, and scar
            unless scars only degrade.
        """
        bits = GAS | METAL | BONE_PREFOCAL | CRITICAL_ANGLE | NO_PASS_ZONE | CRITICAL_CROSS
        return bits | SCAR if self.scar_blocks else bits

    def degrading_bits(self) -> int:
        """Reason bits that degrade an element under this configuration.

        Returns
        -------
        int
            Passing near a critical structure, and scar when scars only degrade.
        """
        return CRITICAL_NEAR | (0 if self.scar_blocks else SCAR)


class Scene:
    """Label volume prepared for ray marching.

    Parameters
    ----------
    labels_zyx : (z, y, x) integer array
    affine : (4, 4) voxel (x, y, z) -> world mm
    table : LabelTable
    config : WindowConfig
    """

    def __init__(self, labels_zyx: np.ndarray, affine: np.ndarray, table: LabelTable | None = None,
                 config: WindowConfig | None = None, source: str = "<labels array>"):
        self.table = table or LabelTable()
        self.config = config or WindowConfig()
        lab = np.asarray(labels_zyx)
        if lab.ndim != 3:
            raise InputFileError(source, f"labels must be 3-D, got shape {lab.shape}")
        if not np.issubdtype(lab.dtype, np.integer):
            if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
                raise InputFileError(source, "labels are not integers")
        unknown = self.table.unknown_values(np.unique(lab))
        if unknown:
            raise InputFileError(source, f"unknown label values {unknown} (not in the label table)")
        if lab.min() < 0 or lab.max() > 255:
            raise InputFileError(source, "label values must lie in 0..255")
        self.labels = np.ascontiguousarray(lab.astype(np.uint8))
        self.affine = np.asarray(affine, dtype=np.float64)
        self.inv_affine = np.linalg.inv(self.affine)
        self.shape = self.labels.shape  # (z, y, x)
        self.source = source
        lut = np.zeros(256, dtype=np.uint8)
        for value, cls in self.table.classes.items():
            lut[value] = _ROLE_OF.get(cls.acoustic_role, ROLE_PASS)
        self.role_lut = lut
        self.zooms_zyx = voxel_size_zyx_mm(self.affine)
        critical = lut[self.labels] == ROLE_CRITICAL
        self.critical_mask = critical
        if critical.any():
            self.critical_edt_mm = ndimage.distance_transform_edt(~critical, sampling=self.zooms_zyx).astype(np.float32)
        else:
            self.critical_edt_mm = np.full(self.shape, np.inf, dtype=np.float32)
        self.bone_normals = self._bone_normals()

    def _bone_normals(self) -> np.ndarray:
        """Outward unit normals of bone (world frame), ``(z, y, x, 3)`` float32; zero where undefined."""
        bone = (self.role_lut[self.labels] == ROLE_BONE).astype(np.float32)
        sigma_vox = [self.config.normal_smoothing_mm / z for z in self.zooms_zyx]
        smooth = ndimage.gaussian_filter(bone, sigma=sigma_vox, mode="nearest")
        gz, gy, gx = np.gradient(smooth)  # per voxel index
        g_index = np.stack([gx, gy, gz], axis=-1)  # d/di, d/dj, d/dk
        # world gradient = inv(A)^T applied to the index gradient
        g_world = g_index @ self.inv_affine[:3, :3]
        norm = np.linalg.norm(g_world, axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            n = np.where(norm > 1e-6, -g_world / norm, 0.0)
        return np.ascontiguousarray(n.astype(np.float32))

    def voxels_of_world(self, points_mm):
        """Voxel of each world point (nearest voxel centre) and whether it lies inside the volume.

        Parameters
        ----------
        points_mm : array_like, shape (n, 3) or (3,)
            World RAS+ points, mm.

        Returns
        -------
        idx : ndarray of int64, shape (n, 3)
            ``(z, y, x)`` indices (outside the volume too).
        inside : ndarray of bool, shape (n,)
        """
        pts = np.asarray(points_mm, float).reshape(-1, 3)
        idx = np.floor(pts @ self.inv_affine[:3, :3].T + self.inv_affine[:3, 3] + 0.5).astype(np.int64)[:, ::-1]
        inside = np.all((idx >= 0) & (idx < np.asarray(self.shape)), axis=1)
        return idx, inside

    def voxel_of_world(self, point_mm) -> tuple[int, int, int] | None:
        """(z, y, x) index of the voxel containing a world point, or None outside.

        Parameters
        ----------
        point_mm : sequence of float, length 3
            RAS+ world point, mm.

        Returns
        -------
        tuple of int or None
        """
        idx, inside = self.voxels_of_world(point_mm)
        return tuple(int(v) for v in idx[0]) if inside[0] else None

    def edt_at(self, points_mm):
        """Critical-structure distance at the voxel of each world point.

        Parameters
        ----------
        points_mm : array_like, shape (3,) or (n, 3)
            World RAS+ points, mm.

        Returns
        -------
        float or ndarray of float, shape (n,)
            Distance from the voxel centre to the nearest spinal-cord or nerve-root voxel centre, mm; inf outside
            the volume or without critical structures. A float for one point.
        """
        idx, inside = self.voxels_of_world(points_mm)
        out = np.full(idx.shape[0], np.inf)
        k = idx[inside]
        out[inside] = self.critical_edt_mm[k[:, 0], k[:, 1], k[:, 2]]
        return float(out[0]) if np.ndim(points_mm) == 1 else out


# --------------------------------------------------------------------------- traversal


def load_labels(path, table: LabelTable | None = None, config: WindowConfig | None = None) -> Scene:
    """A labels NIfTI as a :class:`Scene`.

    Parameters
    ----------
    path : str or path
        3-D integer label map.
    table : LabelTable, optional
        Label meanings; the default table of DESIGN.md otherwise.
    config : WindowConfig, optional
        Rule thresholds.

    Returns
    -------
    Scene

    Raises
    ------
    InputFileError
        Not a 3-D integer image, or values absent from the table.
    """
    from mrtherm.io import niftiio
    data, affine = niftiio.load_3d(path, "labels")
    return Scene(np.ascontiguousarray(data.transpose(2, 1, 0)), affine, table, config, source=os.fspath(path))
