"""Watch on protected structures (spinal cord, nerve roots): maxima, dose, time above threshold, alarms.

Per frame, over each structure's reliable voxels: maximum and mean temperature,
maximum CEM43 dose, and per voxel the time spent above ``time_above_threshold_c``
(temperature linear between frames, exact crossing). An alarm is raised at the
first frame where the structure's maximum reaches ``alarm_temperature_c`` or its
maximum dose reaches ``alarm_dose_cem43_min``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mrtherm.backend import from_numpy, to_numpy
from mrtherm.io import labels as labels_mod
from mrtherm.thermometry.dose import time_above_segment


def format_alarm(alarm: dict, celsius: str = "C") -> str:
    """One line for an alarm: the one formatter of the terminal summary, the napari canvas and the docks.

    Parameters
    ----------
    alarm : dict
        ``structure``, ``quantity``, ``value``, ``threshold``, ``unit`` and ``time_s`` (report.json's alarms);
        ``comparison`` (default ``">="``; ``"<="`` for cold alarms); ``source`` ``"model"`` for the bioheat
        model's alarms (marked in the line).
    celsius : str
        How to write the temperature unit (``"°C"`` where the display has the glyph).

    Returns
    -------
    str
        With the time of the frame (frame numbers are counted from 0 in report.json but from 1 on the canvas, so
        the line names neither).

    Examples
    --------
    >>> format_alarm({"structure": "spinal cord", "quantity": "temperature", "value": 47.04, "threshold": 45.0,
    ...               "unit": "C", "frame": 2, "time_s": 20.0})
    'ALARM spinal cord: temperature 47 C >= 45 C at t = 20.0 s'
    """
    unit = celsius if alarm["unit"] == "C" else alarm["unit"]
    op = alarm.get("comparison", ">=")  # "<=" for cold alarms (cryoablation)
    model = " (MODEL, bioheat)" if alarm.get("source") == "model" else ""  # never mistaken for a measurement
    return (f"ALARM {alarm['structure']}{model}: {alarm['quantity']} {alarm['value']:.3g} {unit} {op} "
            f"{alarm['threshold']:g} {unit} at t = {alarm['time_s']:.1f} s")


@dataclasses.dataclass(frozen=True)
class StructureResult:
    """One protected structure's figures over a run: report.json's ``protected_structures`` rows are
    :meth:`as_report` of these, and every reader gets them back with :meth:`from_report`, so writer and readers
    share one set of names.

    Attributes
    ----------
    label : int
    structure : str
        Its name in the label table.
    voxels, reliable_voxels : int
        Voxels of the structure, and those PRF measures.
    max_temperature_c, time_of_max_s, max_dose_cem43_min : float or None
        None when no voxel of the structure is measured.
    time_above_threshold_c : float
        The threshold of :attr:`max_time_above_s` (``ThermometryParams.time_above_threshold_c``).
    max_time_above_s : float or None
        The longest time one voxel spent above it, s.
    max_c_curve, mean_c_curve : tuple of float
        Per frame, C.
    """

    label: int
    structure: str
    voxels: int
    reliable_voxels: int
    max_temperature_c: float | None = None
    time_of_max_s: float | None = None
    max_dose_cem43_min: float | None = None
    time_above_threshold_c: float = 45.0
    max_time_above_s: float | None = None
    max_c_curve: tuple = ()
    mean_c_curve: tuple = ()

    def as_report(self) -> dict:
        """The report.json row (the time above is also keyed by its threshold, ``max_time_above_45c_s``).

        Returns
        -------
        dict
        """
        row = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
        if self.max_temperature_c is None:  # nothing measured: the row says only what the structure is
            return {k: row[k] for k in ("label", "structure", "voxels", "reliable_voxels")}
        row[f"max_time_above_{self.time_above_threshold_c:g}c_s"] = self.max_time_above_s
        return row

    @classmethod
    def from_report(cls, row: dict) -> "StructureResult":
        """Back from :meth:`as_report` (fields missing from an older report are None).

        Parameters
        ----------
        row : dict

        Returns
        -------
        StructureResult
        """
        kw = {f.name: row[f.name] for f in dataclasses.fields(cls) if f.name in row}
        for name in ("max_c_curve", "mean_c_curve"):
            kw[name] = tuple(kw.get(name) or ())
        return cls(**kw)


class ProtectedWatch:
    """Running statistics of the protected structures of a label volume.

    Parameters
    ----------
    labels : (z, y, x) int array or None (no structure watched)
    mask : (z, y, x) bool, reliable voxels
    table : LabelTable
    xp : array namespace of the temperature frames
    params : ThermometryParams (alarm thresholds, time-above threshold)
    """

    def __init__(self, labels, mask, table, xp, params):
        self.xp, self.params = xp, params
        self.structures = []
        self.warnings = []
        if labels is None:
            return
        for value in table.values_named(*labels_mod.PROTECTED_NAMES):
            sel = labels == value
            if not sel.any():
                continue
            idx = np.flatnonzero((sel & mask).ravel())
            self.structures.append({"label": int(value), "name": table.name(value), "voxels": int(sel.sum()),
                                    "idx": from_numpy(idx.astype(np.int64), xp), "n": int(idx.size),
                                    "max_c": [], "mean_c": [], "max_dose": [], "time_above_s": None})
            if idx.size == 0:
                self.warnings.append(f"{table.name(value)}: no voxel with reliable phase; temperature not watched")

    @property
    def watched(self):
        """The structures with at least one reliable voxel."""
        return [s for s in self.structures if s["n"]]

    def device_stats(self, temp, temp_prev, dose, dt_s):
        """Per-structure statistics of one frame; updates each structure's time above threshold.

        Parameters
        ----------
        temp : array of float32, shape (z, y, x)
            This frame's temperature, C.
        temp_prev : array or None
            The previous frame's temperature, C; None for the first frame.
        dose : array of float64, shape (z, y, x)
            Accumulated CEM43, min.
        dt_s : float
            Seconds since the previous frame.

        Returns
        -------
        list of array
            Per structure three 1-element device arrays (max C, mean C, max dose CEM43 min), so that one
            transfer brings them all to the host.
        """
        xp = self.xp
        flat_t, flat_d = xp.reshape(temp, (-1,)), xp.reshape(dose, (-1,))
        parts = []
        for s in self.watched:
            vals = xp.take(flat_t, s["idx"])
            parts += [xp.reshape(xp.max(vals), (1,)), xp.reshape(xp.mean(vals), (1,)),
                      xp.reshape(xp.astype(xp.max(xp.take(flat_d, s["idx"])), xp.float32), (1,))]
            if temp_prev is not None:
                prev = xp.take(xp.reshape(temp_prev, (-1,)), s["idx"])
                seg = time_above_segment(prev, vals, dt_s, self.params.time_above_threshold_c)
                s["time_above_s"] = seg if s["time_above_s"] is None else s["time_above_s"] + seg
        return parts

    def record(self, host_values):
        """Store this frame's statistics.

        Parameters
        ----------
        host_values : sequence of float, length 3 x n_watched
            Max C, mean C and max dose (CEM43 min) per watched structure, as :meth:`device_stats` ordered them.
        """
        for i, s in enumerate(self.watched):
            s["max_c"].append(float(host_values[3 * i]))
            s["mean_c"].append(float(host_values[3 * i + 1]))
            s["max_dose"].append(float(host_values[3 * i + 2]))

    def rows_and_alarms(self, times_s):
        """The structure table (report.json) and the alarms, sorted by time.

        Parameters
        ----------
        times_s : sequence of float
            Frame times, s.

        Returns
        -------
        rows : list of dict
            Per structure: label, name, voxels, reliable voxels, max temperature (C) and its time (s), max dose,
            time above the threshold (s) and the max/mean curves.
        alarms : list of dict
            First frame at which a structure's max temperature or max dose reaches its alarm threshold.
        """
        p = self.params
        rows, alarms = [], []
        for s in self.structures:
            row = {"label": s["label"], "structure": s["name"], "voxels": s["voxels"], "reliable_voxels": s["n"]}
            if s["n"] and s["max_c"]:
                maxc, maxd = np.asarray(s["max_c"]), np.asarray(s["max_dose"])
                tab = s["time_above_s"]
                row.update({"max_temperature_c": float(maxc.max()), "time_of_max_s": float(times_s[int(maxc.argmax())]),
                            "max_dose_cem43_min": float(maxd.max()), "time_above_threshold_c": p.time_above_threshold_c,
                            "max_time_above_s": float(to_numpy(self.xp.max(tab))) if tab is not None else 0.0,
                            "max_c_curve": tuple(float(v) for v in maxc),
                            "mean_c_curve": tuple(float(v) for v in s["mean_c"])})
                alarms += self._alarms(s, maxc, maxd, times_s)
            rows.append(StructureResult(**row).as_report())
        alarms.sort(key=lambda a: (a["time_s"], a["structure"]))
        return rows, alarms

    def _alarms(self, s, maxc, maxd, times_s) -> list:
        """The first frame at which the structure's max temperature, and its max dose, reach their thresholds."""
        p, alarms = self.params, []
        for quantity, curve, thr, unit in (("temperature", maxc, p.alarm_temperature_c, "C"),
                                           ("dose", maxd, p.alarm_dose_cem43_min, "CEM43 min")):
            hit = np.flatnonzero(curve >= thr)
            if hit.size:
                f = int(hit[0])
                alarms.append({"structure": s["name"], "label": s["label"], "quantity": quantity,
                               "threshold": float(thr), "unit": unit, "value": float(curve[f]), "frame": f,
                               "time_s": float(times_s[f])})
        return alarms

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        """The watch's curves and time-above arrays, as host arrays.

        Returns
        -------
        dict of str to ndarray
            ``watch_<label>_curves`` (3, frames) and ``watch_<label>_time_above_s`` (reliable voxels,).
        """
        out = {}
        for s in self.structures:
            key = f"watch_{s['label']}"
            out[key + "_curves"] = np.asarray([s["max_c"], s["mean_c"], s["max_dose"]], dtype=np.float64)
            if s["time_above_s"] is not None:
                out[key + "_time_above_s"] = to_numpy(s["time_above_s"])
        return out

    def restore(self, state: dict):
        """Continue from :meth:`state`.

        Parameters
        ----------
        state : dict of str to ndarray
            Curves and times above threshold saved by :meth:`state`.
        """
        for s in self.structures:
            key = f"watch_{s['label']}"
            curves = state[key + "_curves"]
            s["max_c"], s["mean_c"], s["max_dose"] = (list(map(float, c)) for c in curves)
            if key + "_time_above_s" in state:
                s["time_above_s"] = from_numpy(np.asarray(state[key + "_time_above_s"]), self.xp)
