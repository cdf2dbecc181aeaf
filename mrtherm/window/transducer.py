"""Phased-array transducer description (DESIGN.md JSON) and a spherical-cap generator.

JSON format::

    {"name": "...", "frequency_hz": 1.0e6,
     "elements": [{"position_mm": [x, y, z], "normal": [nx, ny, nz], "area_mm2": a}, ...]}

Positions are world RAS+ mm; normals are unit vectors pointing into the body
(towards the geometric focus for a spherical cap).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from mrtherm.errors import InputFileError, ParameterError
from mrtherm.io.atomic import atomic_file

GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


@dataclass
class Transducer:
    """A phased-array transducer: element positions (world RAS+ mm), normals, areas and frequency."""
    name: str
    frequency_hz: float
    positions_mm: np.ndarray  # (n, 3)
    normals: np.ndarray       # (n, 3), unit
    areas_mm2: np.ndarray     # (n,)

    @property
    def n_elements(self) -> int:
        """Number of elements."""
        return int(self.positions_mm.shape[0])

    @property
    def centre_mm(self) -> np.ndarray:
        """Area-weighted centroid of the elements."""
        w = self.areas_mm2 / self.areas_mm2.sum()
        return (self.positions_mm * w[:, None]).sum(axis=0)

    def to_json(self) -> dict:
        """The transducer in DESIGN.md's JSON format.

        Returns
        -------
        dict
            ``name``, ``frequency_hz`` and ``elements`` (``position_mm``, ``normal``, ``area_mm2``).
        """
        return {"name": self.name, "frequency_hz": float(self.frequency_hz),
                "elements": [{"position_mm": [float(v) for v in p], "normal": [float(v) for v in n],
                              "area_mm2": float(a)}
                             for p, n, a in zip(self.positions_mm, self.normals, self.areas_mm2)]}

    def save(self, path):
        """Write the JSON to ``path`` (temporary name, then rename).

        Parameters
        ----------
        path : str or PathLike
        """
        with atomic_file(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_json(), fh, indent=1)


def load_transducer(path) -> Transducer:
    """Read and validate a transducer JSON (DESIGN.md format).

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    Transducer
        Normals normalised to unit length.

    Raises
    ------
    InputFileError
        Missing file, invalid JSON, or a field missing or out of range (one line naming it).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise InputFileError(path, "transducer file not found") from None
    except (OSError, ValueError) as exc:
        raise InputFileError(path, f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InputFileError(path, "transducer JSON must be an object")
    try:
        freq = float(doc["frequency_hz"])
    except (KeyError, TypeError, ValueError):
        raise InputFileError(path, "frequency_hz missing or not a number") from None
    if not (freq > 0 and math.isfinite(freq)):
        raise InputFileError(path, f"frequency_hz must be positive, got {doc['frequency_hz']!r}")
    elements = doc.get("elements")
    if not isinstance(elements, list) or not elements:
        raise InputFileError(path, "elements missing or empty")
    pos, nor, area = [], [], []
    for i, e in enumerate(elements):
        try:
            p = [float(v) for v in e["position_mm"]]
            n = [float(v) for v in e["normal"]]
            a = float(e["area_mm2"])
        except (KeyError, TypeError, ValueError):
            raise InputFileError(path, f"element {i}: needs position_mm [x,y,z], normal [nx,ny,nz], area_mm2") from None
        if len(p) != 3 or len(n) != 3 or not all(map(math.isfinite, p + n + [a])):
            raise InputFileError(path, f"element {i}: position_mm and normal must be 3 finite numbers")
        norm = math.sqrt(sum(v * v for v in n))
        if norm < 1e-9:
            raise InputFileError(path, f"element {i}: normal is zero")
        if not a > 0:
            raise InputFileError(path, f"element {i}: area_mm2 must be positive")
        pos.append(p)
        nor.append([v / norm for v in n])
        area.append(a)
    return Transducer(str(doc.get("name", os.path.basename(path))), freq, np.asarray(pos, float),
                      np.asarray(nor, float), np.asarray(area, float))


def _orthonormal(axis: np.ndarray):
    helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(axis, e1)


def spherical_cap(radius_mm: float, aperture_mm: float, n_elements: int, focus_mm, axis,
                  frequency_hz: float = 1.0e6, name: str = "spherical cap") -> Transducer:
    """Spherical-cap phased array placed by its geometric focus and beam axis.

    Parameters
    ----------
    radius_mm : radius of curvature (= geometric focal length), mm
    aperture_mm : diameter of the cap's rim, mm (<= 2 * radius_mm)
    n_elements : number of equal-area elements (Fibonacci pattern on the cap)
    focus_mm : (3,) geometric focus in world mm
    axis : (3,) beam direction, from the transducer towards the focus

    Returns
    -------
    Transducer
        Normals point at the geometric focus; areas equal, summing to the cap's area.
    """
    if not radius_mm > 0:
        raise ParameterError(f"radius_mm must be positive, got {radius_mm}")
    if not 0 < aperture_mm <= 2 * radius_mm:
        raise ParameterError(f"aperture_mm must be in (0, 2*radius_mm], got {aperture_mm}")
    if int(n_elements) < 1:
        raise ParameterError(f"n_elements must be >= 1, got {n_elements}")
    axis = np.asarray(axis, float)
    if axis.shape != (3,) or np.linalg.norm(axis) < 1e-9:
        raise ParameterError("axis must be a non-zero 3-vector")
    axis = axis / np.linalg.norm(axis)
    focus = np.asarray(focus_mm, float)
    e1, e2 = _orthonormal(axis)
    theta_max = math.asin(aperture_mm / (2.0 * radius_mm))
    n = int(n_elements)
    i = np.arange(n)
    cos_t = 1.0 - (i + 0.5) / n * (1.0 - math.cos(theta_max))  # equal-area bands
    sin_t = np.sqrt(np.maximum(0.0, 1.0 - cos_t ** 2))
    phi = i * GOLDEN_ANGLE
    back = cos_t[:, None] * axis + sin_t[:, None] * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
    positions = focus - radius_mm * back
    normals = back  # unit, from the element towards the focus
    cap_area = 2.0 * math.pi * radius_mm ** 2 * (1.0 - math.cos(theta_max))
    return Transducer(name, float(frequency_hz), positions, normals, np.full(n, cap_area / n))
