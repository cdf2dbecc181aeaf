"""Large 4-D series read on demand: frames as dask chunks.

A run's temperature series can be far larger than memory is comfortable with (256 x 256 x 32 x 400 float32 is
3.4 GB). :func:`lazy_series` opens it as a dask array of one chunk per frame: opening reads the header only, and a
frame is read when it is looked at. ``.nii`` files are memory-mapped; ``.nii.gz`` files are read through
``indexed_gzip`` when it is installed (the napari extra), which remembers seek points as it decompresses, so going
back to an earlier frame does not decompress from the start again; without it, nibabel's gzip stream is used
(going back re-reads from the start). The last few frames are kept (hovering over the frame on screen reads
nothing).

The CEM43 dose accumulated up to any frame of such a series is :mod:`mrtherm.thermometry.lazy_dose` (the physics
lives in thermometry; this module only reads).
"""

from __future__ import annotations

import collections
import os
import threading

import numpy as np

from mrtherm.errors import InputFileError
from mrtherm.optional import require


class FrameReader:
    """Frames of a 4-D NIfTI as ``(z, y, x)`` float32 arrays, read on demand, the last ``keep`` kept.

    Parameters
    ----------
    path : str or PathLike
        4-D NIfTI (``.nii`` or ``.nii.gz``).
    keep : int, optional
        Frames kept in memory.

    Raises
    ------
    InputFileError
        Not a readable 4-D NIfTI.
    """

    def __init__(self, path, keep: int = 4):
        from mrtherm.io import niftiio  # noqa: PLC0415
        self.path = os.fspath(path)
        self.image = niftiio.load_nifti(self.path, random_access=True)
        if self.image.ndim != 4:
            raise InputFileError(self.path, f"expected a 4-D series, got shape {self.image.shape}")
        x, y, z, t = self.image.shape
        self.shape_tzyx = (t, z, y, x)
        self.affine = np.asarray(self.image.affine, dtype=np.float64)
        self.time_step_s = niftiio.time_step_s(self.image)
        self._keep = max(1, int(keep))
        self._cache = collections.OrderedDict()
        self._lock = threading.Lock()  # one file position: frames are read one at a time

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` as ``(z, y, x)`` float32 (read-only; do not modify).

        Parameters
        ----------
        t : int

        Returns
        -------
        ndarray of float32, shape (z, y, x)
        """
        from mrtherm.io import niftiio  # noqa: PLC0415
        t = int(t)
        with self._lock:
            if t in self._cache:
                self._cache.move_to_end(t)
                return self._cache[t]
            data = niftiio.read_volume(self.image, self.path, t)
            data.setflags(write=False)
            self._cache[t] = data
            while len(self._cache) > self._keep:
                self._cache.popitem(last=False)
            return data


def _take(frame, shape, dtype, key):
    """``array[key]`` of a ``(t, z, y, x)`` array given frame by frame by ``frame(t)`` (what dask asks of a chunk)."""
    key = key if isinstance(key, tuple) else (key,)
    ts, rest = range(shape[0])[key[0]], key[1:]
    if isinstance(ts, int):
        return frame(ts)[rest]
    if len(ts) == 0:
        return np.empty((0,) + np.empty(shape[1:])[rest].shape, dtype)
    return np.stack([frame(t)[rest] for t in ts])


class _Frames:
    """Array-like ``(t, z, y, x)`` view of a :class:`FrameReader` for ``dask.array.from_array``."""

    def __init__(self, frame, shape, dtype):
        self.frame, self.shape, self.dtype, self.ndim = frame, tuple(shape), np.dtype(dtype), 4

    def __getitem__(self, key):
        return _take(self.frame, self.shape, self.dtype, key)


def lazy_series(path, keep: int = 4):
    """A 4-D NIfTI as a dask array ``(t, z, y, x)`` float32, one chunk per frame, read on demand.

    Parameters
    ----------
    path : str or PathLike
    keep : int, optional
        Frames kept in memory by the reader.

    Returns
    -------
    dask.array.Array
        (:class:`FrameReader` gives the affine and the time step.)
    """
    return series_from_reader(FrameReader(path, keep=keep))


def series_from_reader(reader):
    """The dask array of a :class:`FrameReader` (see :func:`lazy_series`).

    Parameters
    ----------
    reader : FrameReader

    Returns
    -------
    dask.array.Array
    """
    da = require("dask.array", "a lazy series")
    t, z, y, x = reader.shape_tzyx
    frames = _Frames(reader.frame, reader.shape_tzyx, np.float32)
    return da.from_array(frames, chunks=(1, z, y, x), lock=False, asarray=False,
                         name=f"mrtherm-series-{os.path.abspath(reader.path)}",
                         meta=np.empty((0, 0, 0, 0), np.float32))
