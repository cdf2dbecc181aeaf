"""Respiratory signal logs (bellows, navigator) for matching baseline-library entries.

Accepted: a tab- or comma-separated text file with a header naming a time
column (``time_s``) and a signal column (``respiration``, ``resp``, ``bellows``
or ``navigator``; the first other column otherwise), one row per sample; the
signal is linearly interpolated at the frame times (the log's clock and the
frames' must agree; samples need not fall on frames). A file without a time
column gives one value per frame, in order. ``mrtherm phantom --motion``
writes ``respiration.tsv`` in this format.

A BIDS physiological recording (``*_physio.tsv.gz`` with its ``*_physio.json``:
``SamplingFrequency`` in Hz, ``StartTime`` in s relative to the first volume,
``Columns`` naming a ``respiratory`` column) is read with those times.
"""

from __future__ import annotations

import csv
import gzip
import json
import os

import numpy as np

from mrtherm.errors import InputFileError

SIGNAL_NAMES = ("respiratory", "respiration", "resp", "bellows", "navigator")


def _bids_sidecar(path):
    """The BIDS physio JSON beside ``path`` (``x_physio.tsv[.gz]`` -> ``x_physio.json``), or None."""
    stem = path[:-7] if path.endswith(".tsv.gz") else (path[:-4] if path.endswith(".tsv") else None)
    side = None if stem is None else stem + ".json"
    return side if side is not None and os.path.isfile(side) else None


def _bids_physio(path, side):
    """Sample times and the respiratory column of a BIDS physio recording."""
    try:
        with open(side, encoding="utf-8") as fh:
            meta = json.load(fh)
        columns = [str(c).lower() for c in meta["Columns"]]
        fs, start = float(meta["SamplingFrequency"]), float(meta.get("StartTime", 0.0))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(side, f"not a BIDS physio sidecar ({exc.__class__.__name__}: {exc})") from None
    col = next((columns.index(n) for n in SIGNAL_NAMES if n in columns), None)
    if col is None or not fs > 0:
        raise InputFileError(side, "needs a respiratory column in Columns and a positive SamplingFrequency")
    rows = _rows(path, header=False)
    try:
        sig = np.array([float(r[col]) for r in rows])
    except (ValueError, IndexError):
        raise InputFileError(path, "a row has a missing or non-numeric value") from None
    return start + np.arange(sig.size) / fs, sig


def _rows(path, header=True, complete_lines=False):
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise InputFileError(path, f"cannot read the respiration log ({exc.__class__.__name__})") from None
    if complete_lines:  # a log being written: its last line may be half written
        text = text[:text.rfind("\n") + 1]
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputFileError(path, "the respiration log is empty")
    dialect = "excel-tab" if "\t" in lines[0] or not header else "excel"
    return [[c.strip() for c in row] for row in csv.reader(lines, dialect=dialect)]


def _columns(path, header):
    names = [h.lower() for h in header]
    time_col = names.index("time_s") if "time_s" in names else None
    sig = [i for i, n in enumerate(names) if n in SIGNAL_NAMES]
    others = [i for i in range(len(names)) if i != time_col]
    if not sig and not others:
        raise InputFileError(path, "no signal column (expected one of " + ", ".join(SIGNAL_NAMES) + ")")
    return time_col, (sig or others)[0]


def read_respiration(path, frame_times_s):
    """The respiratory signal at each frame.

    Parameters
    ----------
    path : str or PathLike
        The log (see the module docstring).
    frame_times_s : sequence of float
        Frame times, s.

    Returns
    -------
    ndarray of float64, shape (n_frames,)

    Raises
    ------
    InputFileError
        Unreadable, no signal column, non-numeric values, frames outside the log's time span, or (without a
        time column) a count other than the number of frames.
    """
    path = os.fspath(path)
    times = np.asarray(frame_times_s, dtype=np.float64)
    side = _bids_sidecar(path)
    if side is not None:
        return _interpolate(path, *_bids_physio(path, side), times)
    t_log, sig = _samples(path)
    if t_log is None:
        if sig.size != times.size:
            raise InputFileError(path, f"{sig.size} values for {times.size} frames (no time_s column to "
                                       f"interpolate on)")
        return sig
    return _interpolate(path, t_log, sig, times)


def _samples(path, complete_lines=False):
    """``(times or None, signal)`` of a text log."""
    rows = _rows(path, complete_lines=complete_lines)
    has_header = any(c.lower() in SIGNAL_NAMES + ("time_s",) for c in rows[0])
    header, body = (rows[0], rows[1:]) if has_header else (["respiration"], rows)
    time_col, sig_col = _columns(path, header)
    try:
        sig = np.array([float(r[sig_col]) for r in body])
        t_log = np.array([float(r[time_col]) for r in body]) if time_col is not None else None
    except (ValueError, IndexError):
        raise InputFileError(path, "a row has a missing or non-numeric value") from None
    if not np.isfinite(sig).all():
        raise InputFileError(path, "the signal has non-finite values")
    return t_log, sig


def read_timed_log(path, complete_lines=False):
    """The samples of a log with a ``time_s`` column, in time order.

    Parameters
    ----------
    path : str or PathLike
    complete_lines : bool
        Ignore a last line without its newline (a log still being written).

    Returns
    -------
    times_s, signal : ndarray of float64

    Raises
    ------
    InputFileError
        Unreadable, no time column, or non-numeric values.
    """
    path = os.fspath(path)
    t_log, sig = _samples(path, complete_lines)
    if t_log is None:
        raise InputFileError(path, "a live respiration log needs a time_s column (on the frames' clock)")
    order = np.argsort(t_log, kind="stable")
    return t_log[order], sig[order]


def _interpolate(path, t_log, sig, times):
    order = np.argsort(t_log, kind="stable")
    t_log, sig = t_log[order], sig[order]
    if times.size and (times.min() < t_log[0] - 1e-6 or times.max() > t_log[-1] + 1e-6):
        raise InputFileError(path, f"the log spans {t_log[0]:g}-{t_log[-1]:g} s but the frames "
                                   f"{times.min():g}-{times.max():g} s")
    return np.interp(times, t_log, sig)
