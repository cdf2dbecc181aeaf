"""dcm2niix / BIDS JSON sidecars: what a NIfTI file is and how it was acquired.

A sidecar is read once per file into :class:`SidecarInfo`. Fields used:

- ``ImageType`` (and ``Units``: ``Hz``): the role, see :mod:`mrtherm.io.roles`;
- ``EchoTime`` (s); ``EchoTime1`` and ``EchoTime2`` (s) mark a *phase-difference*
  image (dcm2niix writes them for Siemens field-mapping phase, which is
  ``phi(TE2) - phi(TE1)``): its effective echo time is ``EchoTime2 - EchoTime1``;
- ``MagneticFieldStrength`` (T), ``Manufacturer``, ``EchoNumber``, ``SeriesNumber``;
- ``AcquisitionTime`` (``HH:MM:SS.ffffff``, clock time of the acquisition).
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
from dataclasses import dataclass

from mrtherm.io import niftiio
from mrtherm.errors import InputFileError
from mrtherm.io import roles


@dataclass
class SidecarInfo:
    """What a dcm2niix/BIDS sidecar says about one NIfTI file (see the module docstring)."""
    path: str
    role: str | None
    role_source: str | None
    te_s: float | None
    te1_s: float | None
    te2_s: float | None
    b0_t: float | None
    manufacturer: str | None
    echo_number: int | None
    series_number: int | None
    acquisition_clock_s: float | None
    repetition_time_s: float | None
    image_type: list | None

    @property
    def phase_difference(self) -> bool:
        """True when the sidecar gives EchoTime1 and EchoTime2 (a phase-difference image)."""
        return self.te1_s is not None and self.te2_s is not None

    @property
    def effective_te_s(self) -> float | None:
        """Echo time that scales this image's phase: TE2 - TE1 for a phase difference."""
        if self.phase_difference:
            return self.te2_s - self.te1_s
        return self.te_s


def parse_clock(value) -> float:
    """``HH:MM:SS[.ffffff]`` (dcm2niix AcquisitionTime) to seconds after midnight."""
    t = _dt.time.fromisoformat(str(value))
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond * 1e-6


def _number(doc, key, path, kind=float):
    if key not in doc or doc[key] is None:
        return None
    try:
        return kind(doc[key])
    except (TypeError, ValueError):
        raise InputFileError(path, f"{key} is not a number: {doc[key]!r}") from None


def load_sidecar(nifti_path) -> SidecarInfo | None:
    """The sidecar of a NIfTI file, interpreted; None when there is none.

    Cached on the sidecar's name, modification time and size: partner finding reads
    the sidecars of a whole folder once for every frame of a list.
    """
    try:
        st = os.stat(niftiio.sidecar_path(nifti_path))
    except OSError:
        return None
    return _load(os.fspath(nifti_path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4096)
def _load(nifti_path: str, _mtime_ns: int, _size: int) -> SidecarInfo | None:
    doc = niftiio.read_sidecar(nifti_path)
    if doc is None:
        return None
    path = niftiio.sidecar_path(nifti_path)
    image_type = doc.get("ImageType")
    role = roles.role_from_units(doc.get("Units"))
    source = f"sidecar Units {doc.get('Units')!r}" if role else None
    if role is None and image_type is not None:
        role = roles.role_from_image_type(image_type)
        source = f"sidecar ImageType {list(image_type) if isinstance(image_type, list) else image_type}" \
            if role else None
    clock = None
    if doc.get("AcquisitionTime") is not None:
        try:
            clock = parse_clock(doc["AcquisitionTime"])
        except ValueError:
            raise InputFileError(path, f"AcquisitionTime {doc['AcquisitionTime']!r} is not HH:MM:SS") from None
    info = SidecarInfo(
        path=path, role=role, role_source=source, te_s=_number(doc, "EchoTime", path),
        te1_s=_number(doc, "EchoTime1", path), te2_s=_number(doc, "EchoTime2", path),
        b0_t=_number(doc, "MagneticFieldStrength", path), manufacturer=doc.get("Manufacturer"),
        echo_number=_number(doc, "EchoNumber", path, int), series_number=_number(doc, "SeriesNumber", path, int),
        acquisition_clock_s=clock, repetition_time_s=_number(doc, "RepetitionTime", path),
        image_type=list(image_type) if isinstance(image_type, list) else None)
    if info.phase_difference and not info.te2_s > info.te1_s:
        raise InputFileError(path, f"EchoTime2 {info.te2_s} s is not after EchoTime1 {info.te1_s} s")
    return info

