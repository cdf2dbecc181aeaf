"""NIfTI frames for ``mrtherm live --watch``: one 3-D file per component and repetition, with its JSON sidecar.

Consoles and reconstruction pipelines that export NIfTI write each repetition as
3-D files (magnitude and phase, or real and imaginary) with a dcm2niix/BIDS
sidecar. The sidecar must say the role (``ImageType``), the repetition
(``AcquisitionNumber``), the series (``SeriesNumber``) and, unless given on
the command line, ``EchoTime``, ``MagneticFieldStrength`` and
``AcquisitionTime``. Each slice becomes one image record placed by the NIfTI
affine (RAS+ to DICOM's LPS), so NIfTI frames go through the same frame
assembly, sonication pairing and geometry as DICOM images.
"""

from __future__ import annotations

import hashlib

import numpy as np

from mrtherm.errors import InputFileError
from mrtherm.io import niftiio, sidecar as sidecar_mod
from mrtherm.io.dicom.images import DicomImage
from mrtherm.live.assembler import STATUS_UNREADABLE, RefusedImage

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str) -> bool:
    """True for a ``.nii`` or ``.nii.gz`` name.

    Parameters
    ----------
    path : str

    Returns
    -------
    bool
    """
    return path.lower().endswith(NIFTI_SUFFIXES)


def _volume(data: bytes, path: str):
    import nibabel as nib  # noqa: PLC0415
    raw = data
    if path.lower().endswith(".gz"):
        import gzip  # noqa: PLC0415
        raw = gzip.decompress(data)
    img = nib.Nifti1Image.from_bytes(raw)
    vol = np.asarray(img.dataobj, dtype=np.float64)
    if vol.ndim == 4 and vol.shape[3] == 1:
        vol = vol[..., 0]
    if vol.ndim != 3:
        raise InputFileError(path, f"a NIfTI frame is 3-D, this file is {vol.ndim}-D {vol.shape}")
    return vol, np.asarray(img.affine, dtype=np.float64)


def records(data: bytes, path: str):
    """``(uid, image records, rescaled slices)`` of one NIfTI frame file (its sidecar read beside it).

    Raises
    ------
    RefusedImage
        Not readable, not 3-D, no sidecar, or a sidecar without role or repetition.

    Parameters
    ----------
    data : bytes
        The NIfTI file as it is on disk (``.nii.gz`` still compressed).
    path : str
        Its path; the sidecar is read beside it.

    Returns
    -------
    uid : str
        ``nifti:`` and the SHA-1 of the bytes (re-sent files are recognised).
    records : list of DicomImage
        One per slice, placed by the affine (LPS).
    slices : list of ndarray of float32, shape (y, x)
    """
    try:
        vol, affine = _volume(data, path)
        info = sidecar_mod.load_sidecar(path)
        doc = niftiio.read_sidecar(path)
    except InputFileError as exc:
        raise RefusedImage(STATUS_UNREADABLE, str(exc)) from None
    except Exception as exc:  # nibabel raises many types on damaged data
        raise RefusedImage(STATUS_UNREADABLE, f"{path}: not a readable NIfTI frame ({type(exc).__name__})") from None
    if info is None or doc is None:
        raise RefusedImage(STATUS_UNREADABLE, f"{path}: no JSON sidecar (role, repetition and series come from it)")
    if info.role is None:
        raise RefusedImage(STATUS_UNREADABLE, f"{niftiio.sidecar_path(path)}: no ImageType naming the component")
    rep = doc.get("AcquisitionNumber")
    if not isinstance(rep, int):
        raise RefusedImage(STATUS_UNREADABLE, f"{niftiio.sidecar_path(path)}: no integer AcquisitionNumber (the "
                           "repetition)")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # RAS+ -> LPS
    dc, dr = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    orientation = np.concatenate([lps[:3, 0] / dc, lps[:3, 1] / dr])
    uid = "nifti:" + hashlib.sha1(data).hexdigest()
    te = info.effective_te_s
    clock = info.acquisition_clock_s
    series = f"nifti-series-{info.series_number}"
    recs, slices = [], []
    nx, ny, nz = vol.shape
    for k in range(nz):
        recs.append(DicomImage(
            path=path, frame=k, sop_uid=f"{uid}#{k}", series_uid=series, series_number=info.series_number,
            series_description="NIfTI frames", manufacturer="nifti", role=info.role, role_source=info.role_source,
            echo_number=info.echo_number, te_ms=None if te is None else te * 1e3,
            position=(lps @ [0.0, 0.0, k, 1.0])[:3], orientation=orientation, pixel_spacing=(dr, dc), rows=ny,
            cols=nx, slice_spacing_mm=float(np.linalg.norm(lps[:3, 2])), time_s=clock,
            time_source="sidecar AcquisitionTime" if clock is not None else None, temporal_index=None,
            acquisition_number=rep, instance_number=None, slope=1.0, intercept=0.0, units=None, philips_ss=None,
            b0_t=info.b0_t, sequence_name=""))
        slices.append(np.ascontiguousarray(vol[:, :, k].T, dtype=np.float32))  # (rows = y, cols = x)
    return uid, recs, slices


def sidecar_settled(path: str) -> bool:
    """True when the sidecar of ``path`` exists and parses (a console may write it after the image).

    Parameters
    ----------
    path : str
        The NIfTI file.

    Returns
    -------
    bool
    """
    try:
        return niftiio.read_sidecar(path) is not None
    except Exception:  # half-written JSON: not yet
        return False
