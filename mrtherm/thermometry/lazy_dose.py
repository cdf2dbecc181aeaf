"""The CEM43 dose accumulated up to any frame of a large temperature series, computed on demand.

:class:`CumulativeDose` is the dose up to each frame (the napari dose layer), computed from a series read by
:class:`mrtherm.io.lazy.FrameReader` with checkpoints every ``checkpoint_every`` frames: frame ``t`` costs at most
that many frame reads, and stepping forward one frame costs one. A background pass can lay every checkpoint at once
(a viewer stays responsive meanwhile).
"""

from __future__ import annotations

import os
import threading

import numpy as np

from mrtherm.errors import InputFileError
from mrtherm.io.lazy import _take
from mrtherm.optional import require
from mrtherm.thermometry.dose import cem43_segment


def dose_step(acc, t_prev, t_next, dt_min):
    """Dose accumulated to the next frame: ``acc`` plus the exact CEM43 segment between two frames.

    Parameters
    ----------
    acc : ndarray of float64, shape (z, y, x)
        Dose up to the previous frame, CEM43 min (NaN where masked).
    t_prev, t_next : ndarray, shape (z, y, x)
        Temperatures, C.
    dt_min : float
        Minutes between the frames.

    Returns
    -------
    ndarray of float64
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return acc + cem43_segment(t_prev, t_next, dt_min)


def dose_start(first_frame):
    """Dose at the first frame: 0 where the temperature is finite, NaN where masked.

    Parameters
    ----------
    first_frame : ndarray, shape (z, y, x)

    Returns
    -------
    ndarray of float64
    """
    return np.where(np.isfinite(first_frame), 0.0, np.nan)


def as_display_float32(acc):
    """A float64 dose as float32, capped at float32's largest value (as the eager dose per frame).

    Parameters
    ----------
    acc : ndarray of float64

    Returns
    -------
    ndarray of float32
    """
    return np.minimum(acc, np.finfo(np.float32).max).astype(np.float32)


class CumulativeDose:
    """CEM43 dose accumulated up to each frame of a series, ``(t, z, y, x)`` float32, computed on demand.

    Parameters
    ----------
    reader : FrameReader
        The temperature series (C).
    frame_times_s : sequence of float
        Time of each frame, s.
    checkpoint_every : int, optional
        Frames between kept float64 doses: the most frames one look-up reads.
    """

    def __init__(self, reader, frame_times_s, checkpoint_every: int = 25):
        self.reader = reader
        self.times = np.asarray(frame_times_s, dtype=np.float64)
        if self.times.shape[0] != reader.shape_tzyx[0]:
            raise InputFileError(reader.path, f"{reader.shape_tzyx[0]} frames but {self.times.shape[0]} frame times")
        self.shape, self.dtype, self.ndim = reader.shape_tzyx, np.dtype(np.float32), 4
        self.every = max(1, int(checkpoint_every))
        self._checkpoints = {}  # frame -> float64 dose there (frames that are multiples of ``every``)
        self._last = None  # (frame, float64 dose): stepping forward one frame costs one read
        self._lock = threading.Lock()

    def dose64(self, t: int) -> np.ndarray:
        """Dose up to frame ``t`` in float64.

        Parameters
        ----------
        t : int

        Returns
        -------
        ndarray of float64, shape (z, y, x)
        """
        t = int(t)
        with self._lock:
            start, acc = self._nearest(t)
            for k in range(start + 1, t + 1):
                acc = self._step(acc, k)
                if k % self.every == 0:
                    self._checkpoints.setdefault(k, acc)
            self._last = (t, acc)
            return acc

    def start_background(self):
        """Walk every frame once in a daemon thread, leaving the checkpoints behind: a viewer stays responsive
        meanwhile (the thread holds the lock only to lay a checkpoint), and afterwards any frame is at most
        ``checkpoint_every`` steps away.

        Returns
        -------
        threading.Thread
        """
        def walk():  # its own running sum; the lock only to read and lay checkpoints
            t, acc = 0, dose_start(self.reader.frame(0))
            while t < self.shape[0] - 1:
                with self._lock:
                    ahead = [k for k in self._checkpoints if k > t]
                    if ahead:  # a look-up went further: every checkpoint up to there is laid, continue from it
                        t = max(ahead)
                        acc = self._checkpoints[t]
                        continue
                t += 1
                acc = self._step(acc, t)
                if t % self.every == 0:
                    with self._lock:
                        self._checkpoints.setdefault(t, acc)

        thread = threading.Thread(target=walk, name="mrtherm-dose-checkpoints", daemon=True)
        thread.start()
        return thread

    def _step(self, acc, k):
        """Dose up to frame ``k`` from the dose ``acc`` up to frame ``k - 1``."""
        dt_min = (self.times[k] - self.times[k - 1]) / 60.0
        return dose_step(acc, self.reader.frame(k - 1), self.reader.frame(k), dt_min)

    def _nearest(self, t):
        """The latest known dose at or before frame ``t``: the last one computed, a checkpoint or frame 0."""
        known = [(k, v) for k, v in self._checkpoints.items() if k <= t]
        if self._last is not None and self._last[0] <= t:
            known.append(self._last)
        if known:
            return max(known, key=lambda kv: kv[0])
        return 0, dose_start(self.reader.frame(0))

    def __getitem__(self, key):
        return _take(lambda t: as_display_float32(self.dose64(t)), self.shape, self.dtype, key)


def lazy_cumulative_dose(reader, frame_times_s, checkpoint_every: int = 25, background: bool = False):
    """:class:`CumulativeDose` as a dask array, one chunk per frame.

    Parameters
    ----------
    reader : FrameReader
    frame_times_s : sequence of float
    checkpoint_every : int, optional
    background : bool, optional
        Lay the checkpoints in a background thread at once (:meth:`CumulativeDose.start_background`).

    Returns
    -------
    dask.array.Array
    """
    da = require("dask.array", "a lazy dose series")
    t, z, y, x = reader.shape_tzyx
    dose = CumulativeDose(reader, frame_times_s, checkpoint_every)
    if background:
        dose.start_background()
    return da.from_array(dose, chunks=(1, z, y, x), lock=False, asarray=False,
                         name=f"mrtherm-dose-{os.path.abspath(reader.path)}", meta=np.empty((0, 0, 0, 0), np.float32))
