"""What the export's modules share: the highdicom guard, the geometry conversion, UIDs, codes and series numbers."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from mrtherm import __version__
from mrtherm.errors import ParameterError
from mrtherm.optional import require

PLACEHOLDER_PATIENT_ID = "MRTHERM-ANONYMOUS"
PLACEHOLDER_PATIENT_NAME = "Anonymous^mrtherm"
LOCAL_SCHEME = "99MRTHERM"
PROTECTED = {10: ("spinal cord", "SpinalCord"), 11: ("nerve root", "Nerve")}
SERIES = {"tmax": 9701, "dose": 9702, "seg": 9703, "sr": 9704, "sc": 9705, "temperature": 9706}
# NIfTI (x, y, z) voxel -> RAS+ becomes highdicom's (slice, row, column) = (z, y, x) index -> LPS
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_ZYX_TO_XYZ = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                        "StudyID", "AccessionNumber", "ReferringPhysicianName")


def highdicom():
    """The highdicom module; a one-line error without it (the ``export`` extra).

    Returns
    -------
    module
    """
    return require("highdicom", "mrtherm export --dicom")


def lps_affine(nifti_affine) -> np.ndarray:
    """highdicom's volume affine: (slice, row, column) = (z, y, x) array index to LPS mm.

    Parameters
    ----------
    nifti_affine : (4, 4) array
        Voxel (x, y, z) to RAS+ mm.

    Returns
    -------
    ndarray, shape (4, 4)
    """
    return _RAS_TO_LPS @ np.asarray(nifti_affine, dtype=np.float64) @ _ZYX_TO_XYZ


def digest_uid(*parts) -> str:
    """A deterministic DICOM UID from text parts (the same run gives the same UIDs).

    Parameters
    ----------
    *parts : str

    Returns
    -------
    str
    """
    import pydicom  # noqa: PLC0415
    return pydicom.uid.generate_uid(entropy_srcs=[hashlib.sha256("|".join(parts).encode()).hexdigest()])


SOFTWARE = f"mrtherm {__version__}"


def host_port(text: str, flag: str = "--send") -> tuple:
    """``HOST:PORT`` to ``(host, port)``; ParameterError naming the flag otherwise.

    Parameters
    ----------
    text : str
    flag : str
        The option it came from, for the message.

    Returns
    -------
    tuple of (str, int)
    """
    host, _, port = str(text).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ParameterError(f"{flag} must be HOST:PORT (e.g. pacs.hospital:104), got {text!r}")
    return host, int(port)


def run_seed(maps) -> str:
    """What identifies a run's results, independent of where its folder lies: when it was made, from what, on which
    grid and frames (two sonications of one live treatment differ in their affine and frame times).

    Parameters
    ----------
    maps : mrtherm.export.dicom_objects.RunMaps

    Returns
    -------
    str
    """
    exam = maps.report.get("exam", {})
    return json.dumps([maps.report.get("created_utc"), maps.report.get("inputs"), exam.get("affine"),
                       exam.get("frame_times_s")], sort_keys=True, default=str)
