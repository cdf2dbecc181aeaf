"""What an image is: magnitude, phase, real, imaginary, or a B0 field map in Hz.

DICOM ``ImageType`` (0008,0008) carries the component as a value from its third
entry on: Siemens ``ORIGINAL\\PRIMARY\\M|P|R|I\\...``, Philips
``ORIGINAL\\PRIMARY\\M_FFE\\M|P|R|I\\FFE`` (or ``PHASE MAP``); dcm2niix copies it
into the sidecar and appends ``MAGNITUDE``, ``PHASE``, ``REAL``, ``IMAGINARY``
or ``FIELDMAPHZ``. Enhanced DICOM has ``ComplexImageComponent`` (0008,9208)
per frame; GE has the private image type (0043,102F) 0/1/2/3.
"""

from __future__ import annotations

MAGNITUDE, PHASE, REAL, IMAG, FIELDMAP_HZ = "magnitude", "phase", "real", "imag", "fieldmap_hz"
COMPONENTS = (MAGNITUDE, PHASE, REAL, IMAG)

ROLE_TEXT = {MAGNITUDE: "a magnitude image", PHASE: "a phase image", REAL: "a real-part image",
             IMAG: "an imaginary-part image", FIELDMAP_HZ: "a B0 field map in Hz"}

_TOKENS = {"M": MAGNITUDE, "MAGNITUDE": MAGNITUDE, "P": PHASE, "PHASE": PHASE, "PHASE MAP": PHASE,
           "R": REAL, "REAL": REAL, "I": IMAG, "IMAGINARY": IMAG, "FIELDMAPHZ": FIELDMAP_HZ}

_COMPLEX_COMPONENT = {"MAGNITUDE": MAGNITUDE, "PHASE": PHASE, "REAL": REAL, "IMAGINARY": IMAG}

GE_IMAGE_TYPE = {0: MAGNITUDE, 1: PHASE, 2: REAL, 3: IMAG}
"""GE private image type (0043,102F)."""


def role_from_image_type(image_type) -> str | None:
    """Role named by an ``ImageType`` value list, or None when it names none or several.

    A field map (``FIELDMAPHZ``, or Philips ``B0`` with ``MAP``) wins over
    everything else: such images are never phase.
    """
    if image_type is None:
        return None
    if isinstance(image_type, str):
        image_type = image_type.replace("\\", "_").split("_") if "\\" in image_type else [image_type]
    tokens = [str(t).strip().upper() for t in image_type]
    if "FIELDMAPHZ" in tokens or ("B0" in tokens and any("MAP" in t for t in tokens)):
        return FIELDMAP_HZ
    found = {_TOKENS[t] for t in tokens[2:] if t in _TOKENS}
    return found.pop() if len(found) == 1 else None


def role_from_complex_component(value) -> str | None:
    """Role of an enhanced-DICOM ``ComplexImageComponent`` (``MIXED`` and unknown values: None)."""
    return _COMPLEX_COMPONENT.get(str(value).strip().upper()) if value is not None else None


def role_from_units(units) -> str | None:
    """``Hz`` (sidecar ``Units``, DICOM real-world value units) marks a field map."""
    return FIELDMAP_HZ if units is not None and str(units).strip().lower() == "hz" else None
