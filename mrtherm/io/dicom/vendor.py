"""Vendor conventions in MR DICOM: image component, value units, phase scaling, phase differences.

Facts used (each checked on the vendored test data, see ../shared/data/dcm_qa_dicom/PROVENANCE.md):

- **Siemens** classic and XA enhanced: ``ImageType`` third value ``M``/``P``/``R``/``I``;
  phase stored 0..4095 with ``RescaleSlope 2``, ``RescaleIntercept -4096``, so
  rescaled values -4096..4094 span -pi..pi (``v * pi / 4096``). Field-mapping
  sequences (``SequenceName`` ``*fm...``, protocol ``gre_field_mapping``) store
  the *phase difference* of two echoes; their echo times are ``alTE[0]`` and
  ``alTE[1]`` (us) of the ASCII protocol (``### ASCCONV BEGIN ###``) that Siemens
  embeds in a private element (CSA series header, or the XA ``SIEMENS MR SDS``
  element).
- **GE**: the private image type (0043,102F) is 0/1/2/3 for magnitude/phase/real/
  imaginary; phase is stored as integer milliradians (+-3142). Pulse sequences
  ``B0map`` / ``3db0map`` (0019,109C / 0019,109E) reconstruct a field map in Hz with
  its magnitude, not phase.
- **Philips**: ``ImageType`` fourth value ``M``/``P`` (``PHASE MAP``); phase has a
  rescale (and Real World Value Mapping) in ``mrad``; magnitudes carry the private
  scale slope (2005,100E): the floating value is ``(SV * RS + RI) / (RS * SS)``,
  as dcm2niix computes it. Real World Value Mapping units ``Hz`` mark B0 maps.
"""

from __future__ import annotations

import re

from mrtherm.io import roles

GE_B0MAP_SEQUENCES = ("b0map", "3db0map")
_ALTE = re.compile(rb"alTE\[(\d+)\]\s*=\s*(\d+)")
_SEQFILE = re.compile(rb"tSequenceFileName\s*=\s*\"+([^\"\n]*)\"+")


def manufacturer_key(value) -> str:
    """``siemens``, ``philips``, ``ge`` or the lower-case Manufacturer value."""
    v = str(value or "").lower()
    for key in ("siemens", "philips", "ge"):
        if v.startswith(key) or (key == "ge" and "general electric" in v):
            return key
    return v or "unknown"


def _private(ds, group, element):
    tag = (group, element)
    return ds[tag].value if tag in ds else None


def ge_role(ds):
    """``(role, source)`` from GE private tags, or ``(None, None)``."""
    seq = " ".join(str(_private(ds, 0x0019, e) or "") for e in (0x109C, 0x109E)).lower()
    if any(name in seq for name in GE_B0MAP_SEQUENCES):
        return roles.FIELDMAP_HZ, f"GE pulse sequence {seq.strip()!r} (a direct B0 field map in Hz)"
    value = _private(ds, 0x0043, 0x102F)
    try:
        kind = int(value)
    except (TypeError, ValueError):
        return None, None
    role = roles.GE_IMAGE_TYPE.get(kind)
    return role, (f"GE private image type (0043,102F) = {kind}" if role else None)


def philips_scale_slope(item) -> float | None:
    """Philips private scale slope (2005,100E) of a dataset or per-frame private item."""
    value = _private(item, 0x2005, 0x100E)
    try:
        ss = float(value)
    except (TypeError, ValueError):
        return None
    return ss if ss > 0 else None


def siemens_protocol(path: str):
    """``(echo times in ms, sequence file name)`` from the embedded ASCII protocol of one file."""
    from mrtherm.io.dicom.files import read_bytes  # noqa: PLC0415
    data = read_bytes(path)
    start = data.find(b"### ASCCONV BEGIN")
    end = data.find(b"### ASCCONV END", start)
    block = data[start:end] if start >= 0 and end > start else b""
    tes = {int(i): int(v) / 1000.0 for i, v in _ALTE.findall(block)}
    te_list = [tes[i] for i in sorted(tes)]
    m = _SEQFILE.search(block)
    return te_list, m.group(1).decode("latin-1") if m else ""


def siemens_phase_difference(sequence_name: str, path: str):
    """``(TE1 ms, TE2 ms, source)`` when a Siemens phase image is a two-echo phase difference, else None.

    Raises nothing: an undetermined TE1 returns ``(None, None, reason)``.
    """
    tes, seq_file = siemens_protocol(path)
    is_fieldmap = str(sequence_name).lstrip("*").startswith("fm") or "field_mapping" in seq_file
    if not is_fieldmap:
        return None
    if len(tes) >= 2:
        return tes[0], tes[1], f"Siemens protocol alTE[0], alTE[1] ({seq_file or sequence_name})"
    return None, None, f"Siemens field-mapping phase ({sequence_name}) without echo times in its protocol"


def phase_scale_from_tags(manufacturer: str, slope: float, intercept: float, units: str | None):
    """``(scale name, source)`` of a phase image from its tags, or ``(None, None)`` when they do not say."""
    u = (units or "").strip().lower()
    if u == "mrad":
        return "mrad", f"rescale units mrad (slope {slope:g}, intercept {intercept:g})"
    if u in ("rad", "radian", "radians"):
        return "radians", f"rescale units rad (slope {slope:g}, intercept {intercept:g})"
    if manufacturer == "siemens":
        if slope == 2.0 and intercept == -4096.0:
            return "siemens", "Siemens rescale slope 2, intercept -4096 (-4096..4094 is -pi..pi)"
        if slope == 1.0 and intercept == 0.0:
            return "siemens-raw", "Siemens phase without rescale (0..4095 is -pi..pi)"
    if manufacturer == "ge":
        return "ge-mrad", "GE phase convention: integer milliradians"
    return None, None
