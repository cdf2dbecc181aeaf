"""The treatment target: where it comes from, and whether it (and a margin around it) is measured in each frame.

The target is a point in world RAS+ mm, given as ``--target X,Y,Z``, taken from
a window check (``report.json``'s ``target_world_mm``) or a transducer
description (the geometric focus of its elements: the point nearest, in least
squares, to every element's beam axis), or else the centroid of the TARGET
label (12). With motion registration it is read in the reference position (the
first baseline frame), like the labels.

Per frame :class:`TargetWatch` records whether the target voxel is measured
(finite temperature) and which fraction of the voxels within the margin are,
so report.json shows frame by frame whether the operator's target was seen.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from mrtherm.backend import from_numpy
from mrtherm.errors import InputFileError, ParameterError
from mrtherm.io.labels import TARGET

DEFAULT_TARGET_MARGIN_MM = 5.0
"""Margin around the target whose measurement is reported: the half-width of a typical bone-metastasis
sonication spot (MRgFUS spots are 4-10 mm across)."""


def transducer_focus_mm(elements) -> np.ndarray:
    """The point nearest (least squares) to every element's beam axis: a spherical cap's geometric focus.

    Parameters
    ----------
    elements : sequence of dict
        ``position_mm`` and ``normal`` per element (DESIGN.md's transducer JSON).

    Returns
    -------
    ndarray, shape (3,)
        World mm.

    Examples
    --------
    >>> els = [{"position_mm": [0, 0, -50], "normal": [0, 0, 1]}, {"position_mm": [50, 0, 0], "normal": [-1, 0, 0]}]
    >>> transducer_focus_mm(els).round(6).tolist()
    [0.0, 0.0, 0.0]
    """
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for el in elements:
        p = np.asarray(el["position_mm"], dtype=np.float64)
        n = np.asarray(el["normal"], dtype=np.float64)
        n = n / np.linalg.norm(n)
        proj = np.eye(3) - np.outer(n, n)  # distance of x to the axis: |proj (x - p)|
        a += proj
        b += proj @ p
    return np.linalg.solve(a, b)


def _find_key(doc, key):
    if isinstance(doc, dict):
        if key in doc:
            return doc[key]
        for v in doc.values():
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


def target_from_json(path) -> tuple[tuple, str]:
    """The target of a window check's report.json or a transducer JSON.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    target_mm : tuple of 3 float
    source : str

    Raises
    ------
    InputFileError
        Unreadable, not JSON, or neither a window report nor a transducer.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputFileError(path, f"cannot read the target ({exc.__class__.__name__})") from None
    found = _find_key(doc, "target_world_mm")
    if found is not None:
        return checked_point(found, path), f"window check target ({path})"
    if isinstance(doc, dict) and doc.get("elements"):
        try:
            focus = transducer_focus_mm(doc["elements"])
        except (KeyError, TypeError, ValueError, np.linalg.LinAlgError):
            raise InputFileError(path, "transducer elements need position_mm and normal (3 numbers each)") from None
        return checked_point(focus, path), f"geometric focus of the transducer ({path})"
    raise InputFileError(path, "neither a window report (target_world_mm) nor a transducer (elements)")


def checked_point(values, where) -> tuple:
    """Three finite floats, or a one-line error naming ``where``.

    Parameters
    ----------
    values : sequence
    where : str
        What the values are (the argument or the file), for the error.

    Returns
    -------
    tuple of 3 float

    Raises
    ------
    ParameterError
    """
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ParameterError(f"{where}: the target must be three finite numbers X,Y,Z in world mm")
    return out


def target_from_labels(labels, affine):
    """Centroid of the TARGET label in world mm, or None without one.

    Parameters
    ----------
    labels : ndarray of int, shape (z, y, x), or None
    affine : (4, 4) array

    Returns
    -------
    tuple of 3 float or None
    """
    if labels is None or not np.any(labels == TARGET):
        return None
    zyx = np.argwhere(labels == TARGET).mean(axis=0)
    return tuple(float(v) for v in (np.asarray(affine) @ np.array([zyx[2], zyx[1], zyx[0], 1.0]))[:3])


def resolve_target(target, labels, affine):
    """The target point and its source, or ``(None, None)``.

    Parameters
    ----------
    target : sequence of 3 float, str or PathLike, or None
        World mm, or a JSON file (:func:`target_from_json`).
    labels : ndarray of int, or None
        The TARGET label's centroid is used when ``target`` is None.
    affine : (4, 4) array

    Returns
    -------
    target_mm : tuple of 3 float or None
    source : str or None
    """
    if target is None:
        found = target_from_labels(labels, affine)
        return (found, "centroid of the TARGET label (12)") if found is not None else (None, None)
    if isinstance(target, (str, os.PathLike)):
        return target_from_json(target)
    return checked_point(target, "target"), "given (--target / target_mm)"


class TargetWatch:
    """Per-frame measurement of the target voxel and of the voxels within the margin.

    Parameters
    ----------
    target_mm : tuple of 3 float
        World RAS+ mm.
    margin_mm : float
    affine : (4, 4) array
    shape : tuple of int
        ``(z, y, x)``.
    xp : array namespace
    source : str
        Where the target came from (report.json).

    Raises
    ------
    ParameterError
        The target lies outside the field of view.
    """

    def __init__(self, target_mm, margin_mm, affine, shape, xp, source):
        self.target_mm, self.margin_mm, self.source = tuple(target_mm), float(margin_mm), source
        self.xp = xp
        affine = np.asarray(affine, dtype=np.float64)
        ijk = np.linalg.solve(affine, np.array([*self.target_mm, 1.0]))[:3]
        zyx = tuple(int(v) for v in np.round(ijk[::-1]))
        if any(not 0 <= v < n for v, n in zip(zyx, shape)):
            raise ParameterError(f"target {self.target_mm} mm lies outside the field of view (voxel (z,y,x) {zyx} "
                                 f"of {tuple(shape)})")
        self.voxel_zyx = zyx
        k, j, i = np.indices(shape)
        world = np.tensordot(affine[:3, :3], np.stack([i, j, k]).astype(np.float64), axes=1) + \
            affine[:3, 3, None, None, None]
        dist = np.sqrt(((world - np.asarray(self.target_mm)[:, None, None, None]) ** 2).sum(axis=0))
        self.margin = dist <= self.margin_mm
        self.margin[zyx] = True  # the target voxel itself, whatever the margin
        self._margin_device = from_numpy(self.margin, xp)
        self.measured = []  # per frame: the target voxel measured
        self.margin_measured = []  # per frame: voxels of the margin measured

    def device_stats(self, temp):
        """This frame's two figures on the device, for the Thermometer's one small transfer.

        Parameters
        ----------
        temp : array of float32, shape (z, y, x)
            The frame's temperature, NaN where not measured.

        Returns
        -------
        list of array
            Two float32 arrays of shape (1,): the target voxel measured (0/1), margin voxels measured.
        """
        xp = self.xp
        finite = xp.isfinite(temp)
        at = xp.reshape(xp.astype(finite[self.voxel_zyx], xp.float32), (1,))
        n = xp.reshape(xp.astype(xp.sum(xp.astype(finite & self._margin_device, xp.int64)), xp.float32), (1,))
        return [at, n]

    def record(self, values):
        """Store one frame's figures.

        Parameters
        ----------
        values : sequence of 2 float
            :meth:`device_stats` on the host.
        """
        self.measured.append(bool(values[0] > 0.5))
        self.margin_measured.append(int(values[1]))

    def report(self, mask) -> dict:
        """report.json ``target``.

        Parameters
        ----------
        mask : ndarray of bool, shape (z, y, x)
            Reliable voxels.

        Returns
        -------
        dict
        """
        n = int(self.margin.sum())
        return {"world_mm": list(self.target_mm), "source": self.source, "voxel_zyx": list(self.voxel_zyx),
                "margin_mm": self.margin_mm, "margin_voxels": n,
                "margin_voxels_reliable": int((self.margin & mask).sum()),
                "measured_per_frame": list(self.measured),
                # of every voxel within the margin, bone and voids included (below 1 next to bone)
                "margin_measured_fraction_per_frame": [v / max(n, 1) for v in self.margin_measured],
                "frames_target_not_measured": int(sum(not m for m in self.measured))}

    def state(self) -> dict:
        """Host arrays of the records.

        Returns
        -------
        dict of str to ndarray
        """
        return {"measured": np.asarray(self.measured, dtype=bool),
                "margin_measured": np.asarray(self.margin_measured, dtype=np.int64)}

    def restore(self, state: dict):
        """Continue from :meth:`state`.

        Parameters
        ----------
        state : dict of str to ndarray
        """
        self.measured = [bool(v) for v in state["measured"]]
        self.margin_measured = [int(v) for v in state["margin_measured"]]
