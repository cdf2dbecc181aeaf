"""Finding DICOM files in a folder tree and reading them (gzip-compressed files included).

A file is DICOM when it has the ``DICM`` marker at byte 128 (Part 10), or, for
old files without the preamble, when pydicom can read an SOP Class and a pixel
matrix from it. Everything else (sidecars, notes, hidden files) is skipped and
counted. Files ending ``.gz`` are decompressed in memory.
"""

from __future__ import annotations

import gzip
import io
import os

from mrtherm.errors import InputFileError
from mrtherm.optional import require

IMAGE_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
}


def pydicom():
    """The pydicom module; a one-line error when it is not installed (the ``dicom`` extra)."""
    return require("pydicom", "reading DICOM")


def _open_bytes(path: str):
    if path.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as fh:
                return io.BytesIO(fh.read())
        except (OSError, EOFError) as exc:
            raise InputFileError(path, f"not a readable gzip file ({exc})") from None
    return path


def read_bytes(path: str) -> bytes:
    """The whole file (decompressed for ``.gz``)."""
    src = _open_bytes(path)
    if isinstance(src, io.BytesIO):
        return src.getvalue()
    with open(src, "rb") as fh:
        return fh.read()


def read_dataset(path: str, header_only: bool = True):
    """Read one DICOM file with pydicom (gzip-compressed files too).

    Parameters
    ----------
    path : str
        File to read.
    header_only : bool, optional
        Stop before the pixel data (default), for sorting and metadata.

    Returns
    -------
    pydicom.dataset.FileDataset

    Raises
    ------
    InputFileError
        The file is not readable DICOM; the message names the file and pydicom's complaint.
    """
    pd = pydicom()
    try:
        return pd.dcmread(_open_bytes(path), stop_before_pixels=header_only, force=True)
    except Exception as exc:  # pydicom raises many types for damaged files
        raise InputFileError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None


def _looks_like_part10(path: str) -> bool:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                head = fh.read(132)
        else:
            with open(path, "rb") as fh:
                head = fh.read(132)
    except (OSError, EOFError):
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def walk(folder: str):
    """Regular, non-hidden files under ``folder`` in sorted order."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield os.path.join(root, name)


def scan(folder: str):
    """Headers of every image file under ``folder``.

    Returns
    -------
    datasets : list of (path, pydicom Dataset)
        MR image storage files (classic and enhanced), headers only.
    skipped : dict
        ``{"not_dicom": n, "not_mr_image": {sop class name: n}}``.
    """
    if not os.path.exists(folder):
        raise InputFileError(folder, "folder not found")
    if not os.path.isdir(folder):
        raise InputFileError(folder, "not a folder (--dicom takes a folder of DICOM files)")
    out, not_dicom, other = [], 0, {}
    for path in walk(folder):
        if not _looks_like_part10(path):
            if os.path.splitext(path)[1].lower() in (".json", ".txt", ".nii", ".gz", ".csv", ".md", ".pdf", ".png"):
                not_dicom += 1
                continue
            try:
                ds = pydicom().dcmread(_open_bytes(path), stop_before_pixels=True, force=True)
            except Exception:
                not_dicom += 1
                continue
            if "SOPClassUID" not in ds or "Rows" not in ds:
                not_dicom += 1
                continue
        else:
            ds = read_dataset(path)
        sop = str(ds.get("SOPClassUID", ""))
        if sop not in IMAGE_STORAGE:
            name = getattr(ds.get("SOPClassUID"), "name", sop) or "unknown"
            other[name] = other.get(name, 0) + 1
            continue
        out.append((path, ds))
    return out, {"not_dicom": not_dicom, "not_mr_image": other}
