"""Anatomy label table (DESIGN.md) and label-derived masks.

The default table can be replaced by a JSON file of the form
``{"labels": [{"value": 0, "name": "coupling", "prf_valid": false,
"acoustic_role": "transparent"}, ...]}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from mrtherm.errors import InputFileError


@dataclass(frozen=True)
class LabelClass:
    value: int
    name: str
    prf_valid: bool | None  # None: not a tissue (user-drawn zone), PRF not judged
    acoustic_role: str


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


class LabelTable:
    """Lookup of label classes by value."""

    def __init__(self, classes=DEFAULT_TABLE):
        self.classes = {c.value: c for c in classes}

    @classmethod
    def from_json(cls, path):
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
            entries = doc["labels"] if isinstance(doc, dict) else doc
            classes = []
            for e in entries:
                pv = e.get("prf_valid", True)
                classes.append(LabelClass(int(e["value"]), str(e["name"]),
                                          None if pv is None else bool(pv),
                                          str(e.get("acoustic_role", "pass"))))
        except FileNotFoundError:
            raise InputFileError(path, "label table not found") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputFileError(path, f"not a valid label table JSON ({exc})") from None
        if not classes:
            raise InputFileError(path, "label table has no labels")
        return cls(classes)

    def name(self, value: int) -> str:
        c = self.classes.get(int(value))
        return c.name if c else f"label {value}"

    def prf_invalid_values(self):
        """Label values where PRF thermometry fails (fat, bone, gas, metal, coupling)."""
        return sorted(v for v, c in self.classes.items() if c.prf_valid is False)

    def unknown_values(self, values) -> list[int]:
        return sorted(int(v) for v in values if int(v) not in self.classes)

    def to_json(self):
        return [{"value": c.value, "name": c.name, "prf_valid": c.prf_valid,
                 "acoustic_role": c.acoustic_role} for c in self.classes.values()]


def prf_valid_mask(labels_zyx: np.ndarray, table: LabelTable) -> np.ndarray:
    """True where the label allows PRF thermometry."""
    return ~np.isin(labels_zyx, table.prf_invalid_values())
