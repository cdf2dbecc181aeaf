"""Anatomy label table (DESIGN.md) and label-derived masks.

The default table can be replaced by a JSON file of the form
``{"labels": [{"value": 0, "name": "coupling", "prf_valid": false,
"acoustic_role": "transparent"}, ...]}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from mrtherm.backend import to_numpy
from mrtherm.errors import InputFileError, ParameterError
from mrtherm.geometry import resample_nearest


@dataclass(frozen=True)
class LabelClass:
    """One row of the label table: value, name, PRF validity, acoustic role and thermal overrides."""
    value: int
    name: str
    prf_valid: bool | None  # None: not a tissue (user-drawn zone), PRF not judged
    acoustic_role: str
    thermal: tuple | None = None  # (key, value) pairs overriding the bioheat defaults (tissue_properties.py)


DEFAULT_TABLE = (
    LabelClass(0, "coupling", False, "transparent"),
    LabelClass(1, "soft tissue", True, "pass"),
    LabelClass(2, "fat", False, "attenuating"),
    LabelClass(3, "muscle", True, "pass"),
    LabelClass(4, "skin", True, "entry"),
    LabelClass(5, "cortical bone", False, "bone_cortical"),
    LabelClass(6, "trabecular bone / marrow", False, "bone_trabecular"),
    LabelClass(7, "gas", False, "block_gas"),
    LabelClass(8, "metal", False, "block_metal"),
    LabelClass(9, "scar", True, "block_scar"),
    LabelClass(10, "spinal cord", True, "critical"),
    LabelClass(11, "nerve root", True, "critical"),
    LabelClass(12, "target lesion", True, "target"),
    LabelClass(13, "no-pass zone", None, "block_no_pass"),
)

SPINAL_CORD = 10
NERVE_ROOT = 11
TARGET = 12
PROTECTED = (SPINAL_CORD, NERVE_ROOT)

# Class names (DESIGN.md) by which code finds a class in any table, whatever its value there
COUPLING_NAME = "coupling"
FAT_NAME = "fat"
SKIN_NAME = "skin"
SPINAL_CORD_NAME = "spinal cord"
NERVE_ROOT_NAME = "nerve root"
TARGET_NAME = "target lesion"
PROTECTED_NAMES = (SPINAL_CORD_NAME, NERVE_ROOT_NAME)


class LabelTable:
    """Lookup of label classes by value."""

    def __init__(self, classes=DEFAULT_TABLE):
        self.classes = {c.value: c for c in classes}

    @classmethod
    def from_json(cls, path):
        """A table from a JSON file ``{"labels": [{"value", "name", "prf_valid", "acoustic_role"}]}``; one-line errors."""
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
            entries = doc["labels"] if isinstance(doc, dict) else doc
            classes = []
            for e in entries:
                pv = e.get("prf_valid", True)
                thermal = e.get("thermal")
                classes.append(LabelClass(int(e["value"]), str(e["name"]),
                                          None if pv is None else bool(pv),
                                          str(e.get("acoustic_role", "pass")),
                                          None if thermal is None else tuple(sorted(dict(thermal).items()))))
        except FileNotFoundError:
            raise InputFileError(path, "label table not found") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputFileError(path, f"not a valid label table JSON ({exc})") from None
        if not classes:
            raise InputFileError(path, "label table has no labels")
        return cls(classes)

    def name(self, value: int) -> str:
        """Class name of a label value (``label N`` when unknown)."""
        c = self.classes.get(int(value))
        return c.name if c else f"label {value}"

    def values_named(self, *names: str) -> list[int]:
        """The values of the classes called ``names`` (case and surrounding spaces ignored), sorted.

        Parameters
        ----------
        *names : str
            Class names, e.g. :data:`SKIN_NAME`.

        Returns
        -------
        list of int
            Empty when the table has no such class.

        Examples
        --------
        >>> LabelTable().values_named("Spinal cord", NERVE_ROOT_NAME)
        [10, 11]
        """
        wanted = {n.strip().lower() for n in names}
        return sorted(v for v, c in self.classes.items() if c.name.strip().lower() in wanted)

    def prf_invalid_values(self):
        """Label values where PRF thermometry fails (fat, bone, gas, metal, coupling)."""
        return sorted(v for v, c in self.classes.items() if c.prf_valid is False)

    def unknown_values(self, values) -> list[int]:
        """The values absent from the table, sorted.

        Parameters
        ----------
        values : iterable of int
            Label values found in a label map.

        Returns
        -------
        list of int
        """
        return sorted(int(v) for v in values if int(v) not in self.classes)

    def to_json(self):
        """The table as JSON-ready dicts."""
        return [{"value": c.value, "name": c.name, "prf_valid": c.prf_valid, "acoustic_role": c.acoustic_role,
                 **({} if c.thermal is None else {"thermal": dict(c.thermal)})} for c in self.classes.values()]


def prf_valid_mask(labels_zyx: np.ndarray, table: LabelTable) -> np.ndarray:
    """True where the label allows PRF thermometry.

    Parameters
    ----------
    labels_zyx : ndarray of int, shape (z, y, x)
    table : LabelTable
        Decides which classes (fat, bone, gas, metal, ice, ...) make PRF invalid.

    Returns
    -------
    ndarray of bool, shape (z, y, x)
    """
    return ~np.isin(labels_zyx, table.prf_invalid_values())


def load_on_grid(src, shape_zyx, affine, what: str, table: LabelTable | None = None):
    """Labels or a ROI mask as a ``(z, y, x)`` int16 array on an exam grid, and where it came from.

    Parameters
    ----------
    src : path to a 3-D NIfTI, ``(z, y, x)`` array, or None
        A file on another grid is resampled by nearest neighbour through the affines.
    shape_zyx : tuple of int
    affine : (4, 4) array, the exam's voxel-to-world affine
    what : str, ``"labels"`` or ``"drift ROI"`` (for messages)
    table : LabelTable, optional; with ``what="labels"``, unknown values are refused

    Returns
    -------
    volume : (z, y, x) int16 ndarray or None
    info : dict ``{"path", "resampled"}`` or None

    Raises
    ------
    InputFileError, ParameterError
        Non-finite or non-integer labels, unknown label values, a wrong array shape.
    """
    from mrtherm.io import niftiio  # noqa: PLC0415 - nibabel only when a file is read
    if src is None:
        return None, None
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        data, src_affine = niftiio.load_3d(path, what)
        if not np.all(np.isfinite(data)):
            raise InputFileError(path, f"{what} contain NaN or infinite values")
        if what == "labels" and not np.all(data == np.round(data)):
            raise InputFileError(path, "labels are not integers")
        data = np.round(data).astype(np.int16)
        same_grid = data.shape == tuple(shape_zyx[::-1]) and np.allclose(src_affine, affine, atol=1e-3)
        vol = resample_nearest(data, src_affine, shape_zyx, affine)
        info = {"path": path, "resampled": not same_grid}
    else:
        vol = to_numpy(src)
        if vol.shape != tuple(shape_zyx):
            raise ParameterError(f"{what} array shape {vol.shape} does not match the exam grid {tuple(shape_zyx)}")
        if what == "labels" and not np.all(vol == np.round(vol)):
            raise ParameterError("labels array is not integer-valued")
        vol = np.round(vol).astype(np.int16)
        path, info = f"<{what} array>", {"path": f"<{what} array>", "resampled": False}
    if what == "labels" and table is not None:
        unknown = table.unknown_values(np.unique(vol))
        if unknown:
            raise InputFileError(path, f"unknown label values {unknown} (not in the label table)")
    return vol, info
