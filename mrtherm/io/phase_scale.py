"""Vendor phase encodings and their conversion to radians.

========== ===================================================== ======================
name       stored values                                          radians
========== ===================================================== ======================
radians    already radians (within +-2 pi)                        ``v``
siemens    Siemens, rescale slope 2 / intercept -4096 (DICOM and  ``v * pi / 4096``
           dcm2niix int16), scaled values -4096..4094
siemens-raw  Siemens 12-bit without rescale, 0..4095              ``(v - 2048) * pi / 2048``
mrad       milliradians: GE integer phase (+-3142), Philips       ``v / 1000``
           phase after its rescale / real-world value mapping
           (units ``mrad``)
ge-mrad    the same as ``mrad`` (name kept for GE)                ``v / 1000``
========== ===================================================== ======================

``auto`` uses what the metadata says (DICOM tags, NIfTI header scaling) and
falls back to the value range of the first frame; the choice is reported.
"""

from __future__ import annotations

import math

import numpy as np

from mrtherm.choices import PHASE_SCALES
from mrtherm.errors import InputFileError, ParameterError


def detect_phase_scale(values: np.ndarray, slope: float, inter: float, integer_on_disk: bool, path: str) -> str:
    """Recognise the phase encoding of ``values`` (one frame, after header scaling)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise InputFileError(path, "phase frame is all NaN or infinite")
    lo, hi = float(finite.min()), float(finite.max())
    peak = max(abs(lo), abs(hi))
    if peak <= 2 * math.pi * 1.001:
        return "radians"
    integral = bool(np.all(np.abs(finite - np.round(finite)) < 1e-3))
    if slope == 2.0 and inter == -4096.0:
        return "siemens"
    if integral and lo >= 0 and hi <= 4095 and integer_on_disk:
        return "siemens-raw"
    if integral and peak <= 3142.5:
        return "ge-mrad"
    if integral and lo >= -4096 and hi <= 4095:
        return "siemens"
    raise InputFileError(
        path, f"phase values span {lo:g}..{hi:g}: not radians, Siemens (-4096..4094) or milliradians "
        "(+-3142); pass --phase-scale")


def phase_to_radians(values, scale: str):
    """Stored phase values in encoding ``scale`` to radians."""
    if scale == "radians":
        return values
    if scale == "siemens":
        return values * (math.pi / 4096.0)
    if scale == "siemens-raw":
        return (values - 2048.0) * (math.pi / 2048.0)
    if scale in ("mrad", "ge-mrad"):
        return values * 1e-3
    raise ParameterError(f"phase_scale must be one of {', '.join(PHASE_SCALES)}, got {scale!r}")


def check_scale(scale: str) -> str:
    """``scale`` if it is a known phase encoding, else a one-line ParameterError."""
    if scale not in PHASE_SCALES:
        raise ParameterError(f"phase_scale must be one of {', '.join(PHASE_SCALES)}, got {scale!r}")
    return scale
