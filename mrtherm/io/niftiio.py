"""NIfTI input/output helpers: careful loading, frame streaming, atomic writing.

Axis convention: NIfTI stores ``(x, y, z[, t])``; in memory mrtherm uses
``(z, y, x)`` and ``(t, z, y, x)`` C-contiguous. A 3-D frame in NIfTI F order
has the same bytes as the ``(z, y, x)`` C-order array, so frames stream to and
from disk without reordering the file.
"""

from __future__ import annotations

import contextlib
import contextvars
import gzip
import json
import os
import queue
import threading
import zlib

import nibabel as nib
import numpy as np
from nibabel.openers import Opener

from mrtherm.errors import InputFileError
from mrtherm.geometry import voxel_size_xyz_mm
from mrtherm.optional import optional

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def strip_nifti_suffix(path: str) -> str:
    """``path`` without ``.nii.gz`` or ``.nii``."""
    for suf in NIFTI_SUFFIXES:
        if path.endswith(suf):
            return path[: -len(suf)]
    return path


def sidecar_path(path) -> str:
    """``name.json`` beside ``name.nii[.gz]`` (dcm2niix / BIDS sidecar)."""
    return strip_nifti_suffix(os.fspath(path)) + ".json"


def read_sidecar(path) -> dict | None:
    """The JSON sidecar of a NIfTI file, or None when there is none."""
    sc = sidecar_path(path)
    if not os.path.exists(sc):
        return None
    try:
        with open(sc, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputFileError(sc, f"sidecar is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InputFileError(sc, "sidecar JSON is not an object")
    return doc


def load_nifti(path, random_access: bool = False) -> nib.Nifti1Image:
    """Load a NIfTI header lazily, turning every failure into a one-line error.

    ``.nii.gz`` frames stream through ISA-L when the ``fast`` extra is installed (in order: one forward pass). With
    ``random_access`` they go through ``indexed_gzip`` when installed instead: it keeps seek points, so going back
    to an earlier frame does not decompress from the start.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputFileError(path, "file not found")
    if os.path.isdir(path):
        raise InputFileError(path, "is a folder, expected a NIfTI file")
    try:
        img = _load_gzip_stream(path, random_access) if path.endswith(".gz") else None
        # keep_file_open: frames are read in order through one open (gzip) stream
        img = img or nib.load(path, keep_file_open=True)
    except Exception as exc:  # nibabel raises several types for non-NIfTI or short files
        raise InputFileError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputFileError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    if not path.endswith(".gz"):
        # An uncompressed file can be checked for truncation without reading it.
        need = int(img.header.get_data_offset()) + int(np.prod(img.shape)) * img.get_data_dtype().itemsize
        if os.path.getsize(path) < need:
            raise InputFileError(path, f"truncated: {os.path.getsize(path)} bytes, header needs {need}")
    return img


def _load_gzip_stream(path, random_access):
    """A ``.nii.gz`` image reading lazily from one open stream: ``indexed_gzip`` (``random_access``) or ISA-L's
    ``igzip`` (the ``fast`` extra; about 1.8x zlib's speed), or None without them (nibabel's own gzip reader then).
    """
    fh = None
    if random_access:
        indexed_gzip = optional("indexed_gzip")
        if indexed_gzip is not None:
            fh = indexed_gzip.IndexedGzipFile(path, spacing=4 * 1024 * 1024)
    if fh is None:
        igzip = _isal_igzip()
        if igzip is None:
            return None
        fh = igzip.open(path, "rb")
    try:
        sizeof_hdr = int.from_bytes(fh.read(4), "little")
        fh.seek(0)
        # 348: NIfTI-1, 540: NIfTI-2 (either byte order; anything else is left to nibabel's own checks)
        klass = nib.Nifti2Image if sizeof_hdr in (540, 0x1C020000) else nib.Nifti1Image
        img = klass.from_stream(fh)
    except BaseException:
        fh.close()
        raise
    # no explicit close: the array proxy holds ``fh`` (and may outlive ``img``); the stream closes itself when
    # the last reference goes, as io objects do
    return img


def load_3d(path, what: str):
    """A 3-D NIfTI (or 4-D with one frame) as its ``(x, y, z)`` array and affine; one-line errors."""
    path = os.fspath(path)
    img = load_nifti(path)
    if img.ndim == 4 and img.shape[3] == 1:
        data = np.asanyarray(img.dataobj)[..., 0]
    elif img.ndim == 3:
        data = np.asanyarray(img.dataobj)
    else:
        raise InputFileError(path, f"{what} must be a 3-D volume, got shape {img.shape}")
    return np.asarray(data), np.asarray(img.affine, dtype=np.float64)


def read_volume(img, path, index=None) -> np.ndarray:
    """Read one 3-D volume (``index`` along t for 4-D files) as ``(z, y, x)`` float32 after scaling."""
    try:
        if index is None:
            data = np.asanyarray(img.dataobj)
            if data.ndim == 4 and data.shape[3] == 1:
                data = data[..., 0]
        else:
            data = img.dataobj[..., index]
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError, *_isal_errors()) as exc:
        raise InputFileError(path, f"truncated or corrupt data ({type(exc).__name__}: {exc})") from None
    if data.ndim != 3:
        raise InputFileError(path, f"expected a 3-D volume per frame, got shape {data.shape}")
    return np.ascontiguousarray(np.asarray(data, dtype=np.float32).transpose(2, 1, 0))


def scaling_of(img) -> tuple[float, float]:
    """Header slope and intercept as nibabel applies them (NaN in the header after load)."""
    slope = getattr(img.dataobj, "slope", 1.0)
    inter = getattr(img.dataobj, "inter", 0.0)
    return float(slope), float(inter)


def time_step_s(img) -> float | None:
    """The NIfTI time step in seconds, or None when absent or non-positive."""
    zooms = img.header.get_zooms()
    if len(zooms) < 4:
        return None
    step = float(zooms[3])
    if not np.isfinite(step) or step <= 0:
        return None
    unit = img.header.get_xyzt_units()[1]
    return step * {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)


def make_header(shape_xyz_t, affine, dtype, frame_time_s=None) -> nib.Nifti1Header:
    """A NIfTI-1 header for shape ``(x, y, z[, t])``, ``affine`` (sform and qform), mm and s units."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape_xyz_t)
    hdr.set_data_dtype(dtype)
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm", "sec")
    zooms = [float(v) for v in voxel_size_xyz_mm(affine)]
    if len(shape_xyz_t) == 4:
        zooms.append(float(frame_time_s) if frame_time_s else 1.0)
    hdr.set_zooms(zooms)
    hdr.set_slope_inter(1.0, 0.0)
    return hdr


def volume_image(array_zyx, affine, frame_time_s=None) -> nib.Nifti1Image:
    """A ``(z, y, x)`` or ``(t, z, y, x)`` array as a NIfTI image with ``affine`` unchanged (bool as uint8)."""
    arr = np.asarray(array_zyx)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    data = arr.transpose(tuple(range(arr.ndim))[::-1])  # (x, y, z[, t]) view, F-contiguous
    hdr = make_header(data.shape, affine, data.dtype, frame_time_s)
    return nib.Nifti1Image(data, affine, hdr)


DEFAULT_GZIP_LEVEL = 1  # nibabel's own default: most of the size gain of gzip at a fraction of level 6's time
_gzip_level = contextvars.ContextVar("mrtherm_gzip_level", default=DEFAULT_GZIP_LEVEL)


@contextlib.contextmanager
def gzip_level(level: int):
    """Compression level (0-9) of the ``.nii.gz`` files this context writes.

    0 stores the data uncompressed inside a valid gzip stream (as fast as writing ``.nii``, readable by every
    NIfTI reader); 1 is the default; 9 the smallest and slowest.

    Parameters
    ----------
    level : int

    Yields
    ------
    None
    """
    if int(level) != level or not 0 <= level <= 9:
        raise ValueError(f"gzip level must be an integer 0-9, got {level!r}")
    token = _gzip_level.set(int(level))
    try:
        yield
    finally:
        _gzip_level.reset(token)


def _isal_igzip():
    """``isal.igzip`` (Intel ISA-L gzip, the ``fast`` extra) or None: the one place the optional import is guarded."""
    return optional("isal.igzip")


def _isal_errors() -> tuple:
    """ISA-L's decompression error class (not a ``zlib.error``), when the ``fast`` extra is installed."""
    igzip = _isal_igzip()
    return (igzip.isal_zlib.error,) if igzip is not None and hasattr(igzip, "isal_zlib") else ()


def gzip_writer_name(level=None) -> str:
    """Which implementation writes ``.nii.gz`` at ``level`` (default: the current :func:`gzip_level`).

    Parameters
    ----------
    level : int, optional

    Returns
    -------
    str
    """
    level = _gzip_level.get() if level is None else level
    if level >= 1 and _isal_igzip() is not None:
        return f"isal igzip level {_ISAL_LEVEL[level]} (for zlib level {level})"
    return f"zlib level {level}"


# zlib levels to ISA-L's 0-3: ISA-L level 1 compresses as well as zlib level 1 (58 % of a temperature series)
# about 8x faster; 2 and 3 trade a little more time for a few per cent of size
_ISAL_LEVEL = {1: 1, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 3, 8: 3, 9: 3}


def _open_for_writing(path):
    path = os.fspath(path)
    if not path.endswith(".gz"):
        return Opener(path, "wb")
    level = _gzip_level.get()
    igzip = _isal_igzip() if level >= 1 else None
    if igzip is not None:  # same gzip format, any reader opens it
        return igzip.open(path, "wb", compresslevel=_ISAL_LEVEL[level])
    return Opener(path, "wb", compresslevel=level)


def save_volume(array_zyx, affine, path, frame_time_s=None):
    """Write a ``(z, y, x)`` or ``(t, z, y, x)`` array as NIfTI with ``affine`` unchanged (gzip at the level of
    :func:`gzip_level`)."""
    img = volume_image(array_zyx, affine, frame_time_s)
    with _open_for_writing(path) as fh:
        fh.write(img.to_bytes())


def save_stored_integers(stored_zyx, affine, path, slope, inter, frame_time_s=None):
    """Write integer data with header scaling exactly as given (as dcm2niix does for vendor phase).

    nibabel's own writer picks its own scaling for the data; this writes the
    stored integers and ``scl_slope`` / ``scl_inter`` untouched.
    """
    arr = np.asarray(stored_zyx)
    shape_xyz_t = arr.shape[::-1]
    hdr = make_header(shape_xyz_t, affine, arr.dtype, frame_time_s)
    hdr.set_slope_inter(slope, inter)
    hdr.set_data_offset(352)
    with _open_for_writing(path) as fh:
        hdr.write_to(fh)
        fh.write(b"\x00" * (352 - fh.tell()))
        fh.write(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())


class FrameWriter:
    """Stream ``(z, y, x)`` float32 frames into a 4-D NIfTI file, one at a time.

    The header is written first; each frame's C-order bytes are appended, which
    is exactly NIfTI's F order for ``(x, y, z, t)``. Memory does not grow with
    the number of frames: a writer thread compresses and writes while the caller
    computes the next frame (zlib releases the GIL), with at most
    ``QUEUE_FRAMES`` frames waiting.
    """

    QUEUE_FRAMES = 4

    def __init__(self, path, shape_zyx, n_frames, affine, frame_time_s=None, raw_copy=None):
        self.path = os.fspath(path)
        # an uncompressed copy of the frames beside the file, for reading a voxel's history without gunzipping
        # the whole series (removed by the caller)
        self.raw_copy = None if raw_copy is None else os.fspath(raw_copy)
        self._raw = None if raw_copy is None else open(self.raw_copy, "wb")
        nz, ny, nx = shape_zyx
        self.n_frames = int(n_frames)
        self.frame_shape = (nz, ny, nx)
        self.written = 0
        hdr = make_header((nx, ny, nz, self.n_frames), affine, np.float32, frame_time_s)
        hdr.set_data_offset(352)
        self._fh = _open_for_writing(self.path)
        hdr.write_to(self._fh)
        self._fh.write(b"\x00" * (352 - self._fh.tell()))
        self._queue = queue.Queue(maxsize=self.QUEUE_FRAMES)
        self._error = None
        self._thread = threading.Thread(target=self._drain, name="mrtherm-frame-writer", daemon=True)
        self._thread.start()

    def _drain(self):
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            if self._error is None:
                try:
                    if self._raw is not None:
                        self._raw.write(chunk)
                    self._fh.write(chunk)
                except BaseException as exc:  # handed to the caller at the next write or at close
                    self._error = exc

    def write(self, frame_zyx: np.ndarray):
        """Append one ``(z, y, x)`` frame (queued; compressed and written by the writer thread)."""
        frame = np.ascontiguousarray(frame_zyx, dtype="<f4")
        if frame.shape != self.frame_shape:
            raise ValueError(f"frame shape {frame.shape} != {self.frame_shape}")
        if self._error is not None:
            raise self._error
        self._queue.put(frame.tobytes())
        self.written += 1

    def _finish(self):
        if self._fh is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._fh.close()
        self._fh = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def abort(self):
        """Close without the completeness check (the caller discards the file)."""
        self._finish()

    def close(self):
        """Close the file; refuses a series with missing frames or a failed write."""
        self._finish()
        if self._error is not None:
            raise self._error
        if self.written != self.n_frames:
            raise RuntimeError(f"{self.path}: wrote {self.written} of {self.n_frames} frames")
