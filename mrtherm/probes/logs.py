"""Probe log and probe position files.

Log: CSV with a header ``time_s,probe,temperature_c`` (any column order, one row
per reading, probes interleaved in any order). Positions: JSON
``{"probes": [{"name": ..., "position_mm": [x, y, z], "watch": true|false}]}``
in world RAS+ mm (``watch`` defaults to false); an entry with ``"kind":
"cryoprobe"`` is a cryoprobe tip (``--modality cryo``) and needs no readings.
Bad files give one-line
:class:`~mrtherm.errors.InputFileError` messages naming the file, the row or the
probe.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os

import numpy as np

from mrtherm.errors import InputFileError

LOG_COLUMNS = ("time_s", "probe", "temperature_c")


@dataclasses.dataclass
class Probe:
    """One probe: its readings and, when known, its position.

    Attributes
    ----------
    name : str
    times_s : ndarray of float64
        Reading times on the log's clock, s, increasing.
    temperature_c : ndarray of float64
    position_mm : ndarray of float64, shape (3,), or None
        World RAS+ mm.
    watch : bool
        A watched probe (next to a nerve root or the cord) raises alarms.
    """

    name: str
    times_s: np.ndarray
    temperature_c: np.ndarray
    position_mm: np.ndarray | None = None
    watch: bool = False


def _log_rows(path):
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"cannot read the probe log ({exc.__class__.__name__})") from None
    if not rows:
        raise InputFileError(path, "the probe log is empty")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in LOG_COLUMNS if c not in header]
    if missing:
        raise InputFileError(path, f"missing column(s) {', '.join(missing)} (expected {','.join(LOG_COLUMNS)})")
    return header, rows[1:]


def read_probe_log(path, time_offset_s: float = 0.0) -> dict:
    """Readings per probe.

    Parameters
    ----------
    path : str or PathLike
    time_offset_s : float
        Added to every reading time (the probe clock's offset to the MR frame times, s).

    Returns
    -------
    dict of str to Probe
        In order of first appearance; positions unset.

    Raises
    ------
    InputFileError
        Missing columns, a non-numeric or non-finite value (row named), repeated times for one probe, or no rows.
    """
    path = os.fspath(path)
    header, rows = _log_rows(path)
    it, ip, ic = (header.index(c) for c in LOG_COLUMNS)
    readings: dict = {}
    for n, row in enumerate(rows, start=2):
        try:
            t, name, temp = float(row[it]), row[ip].strip(), float(row[ic])
        except (ValueError, IndexError):
            raise InputFileError(path, f"row {n}: expected time_s, probe, temperature_c, got {row}") from None
        if not (math.isfinite(t) and math.isfinite(temp)) or not name:
            raise InputFileError(path, f"row {n}: non-finite value or empty probe name")
        readings.setdefault(name, []).append((t + float(time_offset_s), temp))
    if not readings:
        raise InputFileError(path, "the probe log has no readings")
    probes = {}
    for name, values in readings.items():
        arr = np.array(sorted(values))
        if np.any(np.diff(arr[:, 0]) <= 0):
            raise InputFileError(path, f"probe {name!r} has two readings at one time")
        probes[name] = Probe(name, arr[:, 0], arr[:, 1])
    return probes


def read_probe_positions(path, probes: dict | None = None) -> dict:
    """Probe positions (and watch flags), optionally attached to the probes of a log.

    Parameters
    ----------
    path : str or PathLike
    probes : dict of str to Probe, optional
        From :func:`read_probe_log`; every probe in the positions file must be in the log.

    Returns
    -------
    dict of str to Probe
        ``probes`` with positions set (probes without a position keep None), or position-only probes.

    Raises
    ------
    InputFileError
        Not the documented JSON, a position that is not three finite numbers, or a probe absent from the log.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            entries = json.load(fh)["probes"]
        parsed = [(str(e["name"]), np.asarray(e["position_mm"], dtype=np.float64), bool(e.get("watch", False)))
                  for e in entries if e.get("kind") != "cryoprobe" or (probes is not None and e["name"] in probes)]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(path, f'not a probe positions file {{"probes": [{{"name", "position_mm", "watch"}}]}} '
                                   f"({exc.__class__.__name__})") from None
    out = dict(probes) if probes is not None else {}
    for name, pos, watch in parsed:
        if pos.shape != (3,) or not np.all(np.isfinite(pos)):
            raise InputFileError(path, f"probe {name!r}: position_mm must be three finite numbers (x, y, z mm)")
        if probes is not None and name not in probes:
            raise InputFileError(path, f"probe {name!r} is not in the probe log (log probes: {', '.join(probes)})")
        base = out.get(name) or Probe(name, np.zeros(0), np.zeros(0))
        out[name] = dataclasses.replace(base, position_mm=pos, watch=watch)
    return out
