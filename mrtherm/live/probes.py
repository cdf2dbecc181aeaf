"""Probe readings followed live: a thermometry log written while the treatment runs, against MR at each probe.

The log is the CSV of ``mrtherm run --probes`` (``time_s,probe,temperature_c``), its ``time_s`` plus
``--probe-time-offset-s`` on the frames' clock -- the DICOM acquisition time, seconds since 1970 -- and the
positions come from ``--probe-positions``. The log is read again whenever it has grown (a last line still being
written waits for the next read; a log that cannot be read is reported once and its readings kept). At every frame,
for each positioned probe: MR at its position (trilinear, masked corners dropped, as the batch analysis), the
reading interpolated at the frame's time when the log covers it, and their difference; a sonication's bias and RMSE
are over those frames. Watched probes raise the batch analysis' alarms (temperature, dose of the readings, and the
cold alarm of a cryoablation) as soon as the readings cross them.
"""

from __future__ import annotations

import os

import numpy as np

from mrtherm.live.growing_log import GrowingLog
from mrtherm.probes.analysis import corners, probe_alarms, sample_volume
from mrtherm.probes.logs import read_probe_log, read_probe_positions

__all__ = ["LiveProbes"]


class LiveProbes:
    """Probe readings of a growing log and MR at the probes, frame by frame.

    Parameters
    ----------
    log_path, positions_path : str
        ``positions_path`` may be None (readings and alarms only, no MR comparison).
    time_offset_s : float
        Added to the log's times.
    params : ThermometryParams
        Alarm thresholds.
    cold_alarm_c : float, optional
    """

    def __init__(self, log_path, positions_path, time_offset_s, params, cold_alarm_c=None):
        self.positions_path = None if positions_path is None else os.path.abspath(os.fspath(positions_path))
        self.offset_s, self.params, self.cold_alarm_c = float(time_offset_s), params, cold_alarm_c
        self.log = GrowingLog(log_path, "probe log", self._read, "the readings read before are kept")
        self.log_path = self.log.path

    def _read(self, path):
        """The probes with their positions and their alarms (computed once per read, not once per frame)."""
        probes = read_probe_log(path, self.offset_s)
        if self.positions_path is not None:
            probes = read_probe_positions(self.positions_path, probes)
        alarms = [a for p in probes.values() for a in probe_alarms(p, self.params, self.cold_alarm_c)]
        return probes, alarms

    @property
    def probes(self) -> dict:
        """The probes of the last readable log (``{}`` before any)."""
        content = self.log.latest()
        return {} if content is None else content[0]

    def frame(self, time_s: float, temperature_zyx, affine) -> list[dict]:
        """MR and the reading at each positioned probe at one frame.

        Parameters
        ----------
        time_s : float
            The frame's acquisition time, s since 1970.
        temperature_zyx : ndarray, shape (z, y, x)
            The frame's temperature, C (NaN where not measured).
        affine : (4, 4) array
            Its grid.

        Returns
        -------
        list of dict
            ``probe``, ``time_s``, ``mr_c`` (None off the grid or unmeasured), ``probe_c`` (None outside the log),
            ``mr_minus_probe_c``.
        """
        rows = []
        for probe in self.probes.values():
            if probe.position_mm is None:
                continue
            mr = _mr_at(temperature_zyx, affine, probe.position_mm)
            t = probe.times_s
            reading = float(np.interp(time_s, t, probe.temperature_c)) if t.size >= 2 and t[0] <= time_s <= t[-1] \
                else None
            rows.append({"probe": probe.name, "time_s": float(time_s), "mr_c": mr, "probe_c": reading,
                         "mr_minus_probe_c": None if mr is None or reading is None else mr - reading})
        return rows

    def alarms(self) -> list[dict]:
        """The watched probes' alarms from the readings so far (each threshold's first crossing).

        Returns
        -------
        list of dict
        """
        content = self.log.latest()
        return [] if content is None else list(content[1])


def _mr_at(temperature_zyx, affine, position_mm):
    """Trilinear MR temperature at a world position (masked corners dropped), or None."""
    placed = corners(affine, position_mm, np.shape(temperature_zyx))
    if placed is None:
        return None
    value = sample_volume(temperature_zyx, *placed)
    return None if not np.isfinite(value) else value


def summarise(rows) -> dict:
    """A sonication's probe comparison: per probe, frames compared, bias and RMSE of MR - probe, the last row.

    Parameters
    ----------
    rows : list of dict
        :meth:`LiveProbes.frame` rows of the sonication's frames.

    Returns
    -------
    dict of str to dict
    """
    out = {}
    for name in dict.fromkeys(r["probe"] for r in rows):
        mine = [r for r in rows if r["probe"] == name]
        diffs = np.array([r["mr_minus_probe_c"] for r in mine if r["mr_minus_probe_c"] is not None], dtype=float)
        out[name] = {"frames_compared": int(diffs.size),
                     "bias_c": float(diffs.mean()) if diffs.size else None,
                     "rmse_c": float(np.sqrt(np.mean(diffs ** 2))) if diffs.size else None,
                     "last": mine[-1]}
    return out
