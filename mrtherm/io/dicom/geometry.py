"""Slice order and the voxel-to-world affine of a DICOM stack (NIfTI RAS+ convention).

DICOM places pixel (row r, column c) of a slice at
``ImagePositionPatient + c * dc * row_dir + r * dr * col_dir`` in LPS mm, where
``ImageOrientationPatient = (row_dir, col_dir)`` and ``PixelSpacing = (dr, dc)``.
mrtherm's voxel (i, j, k) = (x, y, z) is (column, row, slice), slices sorted
along the normal ``row_dir x col_dir``; RAS+ is LPS with x and y negated. So

``affine = diag(-1, -1, 1, 1) @ [[dc*row_dir, dr*col_dir, slice_step, IPP_first], [0, 0, 0, 1]]``

with ``slice_step = (IPP_last - IPP_first) / (n - 1)``, oblique stacks included.
"""

from __future__ import annotations

import numpy as np

from mrtherm.errors import InputFileError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
POSITION_TOL_MM = 0.01
ORIENTATION_TOL = 1e-4


def geometry_key(img) -> tuple:
    """Images that can share one voxel grid share this key."""
    return (tuple(np.round(img.orientation, 4)), img.rows, img.cols, tuple(np.round(img.pixel_spacing, 4)))


def slice_positions(images) -> np.ndarray:
    """Position of each image along the slice normal, mm."""
    n = images[0].normal
    return np.asarray([float(np.dot(n, im.position)) for im in images])


def distinct_positions(values: np.ndarray) -> np.ndarray:
    """Sorted distinct slice positions (values closer than POSITION_TOL_MM are one)."""
    v = np.sort(values)
    keep = np.concatenate([[True], np.diff(v) > POSITION_TOL_MM])
    return v[keep]


def check_spacing(positions: np.ndarray, example_images):
    """Refuse non-uniform slice spacing (a missing or extra slice).

    Parameters
    ----------
    positions : ndarray, shape (n,)
        Sorted slice positions along the normal, mm.
    example_images : sequence of DicomImage
        One image per position; the error names the file just after the gap.

    Raises
    ------
    InputFileError
        A spacing differs from the median spacing by more than ``max(POSITION_TOL_MM, 0.1 %)``.
    """
    if positions.size < 3:
        return
    d = np.diff(positions)
    step = float(np.median(d))
    bad = np.flatnonzero(np.abs(d - step) > max(POSITION_TOL_MM, 1e-3 * step))
    if bad.size:
        k = int(bad[0])
        raise InputFileError(example_images[k + 1].where,
                             f"slice spacing is not uniform ({d[k]:.3g} mm here, {step:.3g} mm elsewhere): a slice "
                             f"is missing or extra near {positions[k + 1]:.2f} mm along the slice normal")


def stack_affine(first_slice_images, slice_spacing_fallback_mm=None) -> np.ndarray:
    """RAS+ affine of a stack given one image per slice, sorted along the normal.

    Parameters
    ----------
    first_slice_images : sequence of DicomImage, length n
        One image per slice, sorted along the slice normal.
    slice_spacing_fallback_mm : float, optional
        Slice step for a single-slice stack; otherwise SpacingBetweenSlices, else 1 mm.

    Returns
    -------
    ndarray, shape (4, 4)
        Voxel (i, j, k) -> RAS+ world mm; columns are column, row and slice steps (DICOM LPS flipped to RAS).

    Raises
    ------
    InputFileError
        The slice positions do not lie on one line (more than ``10 * POSITION_TOL_MM`` off).
    """
    im0 = first_slice_images[0]
    row_dir, col_dir = im0.orientation[:3], im0.orientation[3:]
    dr, dc = im0.pixel_spacing
    n = len(first_slice_images)
    if n > 1:
        step = (first_slice_images[-1].position - im0.position) / (n - 1)
        expected = im0.position + np.outer(np.arange(n), step)
        actual = np.stack([im.position for im in first_slice_images])
        worst = float(np.max(np.linalg.norm(actual - expected, axis=1)))
        if worst > 10 * POSITION_TOL_MM:
            k = int(np.argmax(np.linalg.norm(actual - expected, axis=1)))
            raise InputFileError(first_slice_images[k].where, f"slices do not lie on one line ({worst:.3g} mm off): "
                                 "not a regular stack")
    else:
        thick = slice_spacing_fallback_mm or im0.slice_spacing_mm or 1.0
        step = im0.normal * thick
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = step
    lps[:3, 3] = im0.position
    return LPS_TO_RAS @ lps
