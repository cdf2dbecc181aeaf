"""The live treatment's state: sonications, cumulative dose, alarms, and the checkpoint that brings it back.

The checkpoint is ``OUT/.mrtherm-live/checkpoint.json`` plus the arrays it
names (the current sonication's :meth:`mrtherm.Thermometer.save_state` file
and the cumulative maps), all numbered by checkpoint: the arrays are written
first, the JSON replaced last, older files removed after. A crash at any
moment leaves the previous checkpoint whole.

A checkpoint proves itself: the JSON carries a digest of every array file (its
size and its zip directory's CRC-32s, which :func:`numpy.load` verifies as it
reads), the frame counter of the Thermometer state it names, and its own
checksum. On
loading, a missing, truncated or altered file, a JSON edited or out of step
with its arrays is :class:`CheckpointDamaged` -- never a silent resume from a
torn state (the session then replays its kept images from the start).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import zipfile

import numpy as np

from mrtherm.errors import MrthermError
from mrtherm.io.atomic import atomic_file
from mrtherm.app import outputs
from mrtherm.app.treatment import CumulativeDose, Treatment, grid_from_file, sonication_figures
from mrtherm.geometry import TreatmentGrid
from mrtherm.live.probes import LiveProbes, summarise
from mrtherm.live.respiration import LiveRespiration
from mrtherm.live.treatment import Sonication
from mrtherm.thermometry.thermometer import Thermometer

CHECKPOINT_VERSION = 3  # 3: checksums and the frame counter; 2: the cryo watch, the cryo options in the fingerprint


class CheckpointDamaged(MrthermError):
    """A checkpoint whose files are missing, truncated, altered or out of step with each other."""


def npz_digest(path) -> str:
    """A SHA-256 over an ``.npz`` file's size and its zip directory (each member's name, size and CRC-32).

    The zip format already carries a CRC-32 of every member, which :func:`numpy.load` verifies as it reads: a
    damaged member fails there. This digest binds the checkpoint's JSON to the exact version of each file (a
    member's content change changes its CRC), at the cost of reading the directory at the file's end, not the
    80 MB of a 256x256x16 Thermometer state (a SHA-256 of the whole file took 90 ms per frame).

    Parameters
    ----------
    path : str

    Returns
    -------
    str
        Hex digest.

    Raises
    ------
    CheckpointDamaged
        The file is no zip archive (truncated, overwritten).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            members = sorted((i.filename, i.CRC, i.file_size, i.compress_size) for i in zf.infolist())
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointDamaged(f"{path}: not a whole array file ({type(exc).__name__}: {exc})") from None
    text = json.dumps([os.path.getsize(path), members])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_sha256(entries: dict) -> str:
    """SHA-256 of a JSON object's canonical text (sorted keys), its ``checksum`` entry left out.

    Parameters
    ----------
    entries : dict

    Returns
    -------
    str
    """
    body = {k: v for k, v in entries.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=True).encode("utf-8")).hexdigest()


class TreatmentState(Treatment):
    """Sonications fed frame by frame, the cumulative maps (:class:`mrtherm.app.treatment.Treatment`), and the alarms
    raised so far.

    Parameters
    ----------
    options : dict
        ``params`` (ThermometryParams) and the optional ``labels``, ``drift_roi``, ``label_table``, ``backend``,
        ``te_s``, ``b0_t``, ``frame_time_s``, ``phase_scale``, ``treatment_grid`` (path).
    """

    def __init__(self, options):
        super().__init__(options["params"], options,
                         grid_from_file(options["treatment_grid"]) if options.get("treatment_grid") else None)
        self.sonications: dict[int, Sonication] = {}
        self.current: int | None = None
        self.respiration = LiveRespiration(options["respiration"]) if options.get("respiration") else None
        self.probes = LiveProbes(options["probes"], options.get("probe_positions"), options.get("probe_time_offset_s", 0.0),
                                 self.params, options.get("probe_cold_alarm_c")) if options.get("probes") else None
        self.alarms_sent: set = set()
        self.frames_processed = 0
        self.anatomy_written = False

    # ------------------------------------------------------------------ frames
    def feed(self, frame):
        """Take one frame; returns ``(frames the Thermometer took, the sonication finished by it or None)``.

        Parameters
        ----------
        frame : Frame

        Returns
        -------
        taken : int
            Frames the Thermometer took (0 while a baseline fills, all of it when it completes).
        finished : Sonication or None
            The previous sonication, when this frame began a new one.
        """
        finished = None
        son = self.sonications.get(frame.sonication)
        if son is not None and son.finished:  # a later sonication closed it: its dose is already summed
            raise MrthermError(f"a frame of sonication {frame.sonication + 1}, which sonication "
                               f"{self.current + 1} closed")
        if son is None:
            if self.current is not None and frame.sonication > self.current:
                finished = self.close_sonication(self.current)
            son = Sonication(frame.sonication, frame, self.options, self.respiration, self.probes)
            self.sonications[frame.sonication] = son
            self.current = frame.sonication
            self.ensure_grid(son.shape, son.affine, son.index)
        taken = son.feed(frame)
        self.frames_processed += taken
        return taken, finished

    def close_sonication(self, index):
        """Close sonication ``index``: its dose joins the cumulative sum; returns it (None if it never started).

        Parameters
        ----------
        index : int

        Returns
        -------
        Sonication or None
        """
        son = self.sonications[index]
        if son.finished:
            return None
        son.finished = True
        if son.th is None:
            return None
        self.finish(index, son.th, son.run.cryo_watch)
        return son

    @property
    def current_thermometer(self):
        """The Thermometer of the sonication in progress (None before its baseline is in)."""
        son = self.sonications.get(self.current)
        return None if son is None or son.finished else son.th

    # ------------------------------------------------------------------ maps and report
    def maps(self):
        """Cumulative ``(dose, tmax)`` on the treatment grid, the current sonication included.

        Returns
        -------
        dose : ndarray of float64
            CEM43 min, NaN where no sonication measured.
        tmax : ndarray of float32
            C.
        """
        th = self.current_thermometer
        return super().maps(th, None if th is None else self.sonications[self.current].run.not_prf())

    def sonication_entries(self):
        """report.json's per-sonication list.

        Returns
        -------
        list of dict
        """
        out = []
        for index in sorted(self.sonications):
            son = self.sonications[index]
            entry = son.meta()
            entry["state"] = "finished" if son.finished else ("baseline" if son.th is None else "running")
            entry["baseline_frames_received"] = len(son.run.pending)
            figures = self.finished_figures.get(index)
            if figures is None and son.th is not None:
                figures = sonication_figures(son.th, index, son.run.cryo_watch)
            entry.update(figures or {"frames_processed": 0})
            if self.probes is not None:
                entry["probes"] = summarise(entry.pop("probe_rows") or [])
            else:
                entry.pop("probe_rows", None)
            out.append(entry)
        return out

    def alarms(self, sonications, dose):
        """Every alarm so far: the sonications' own and those of the cumulative dose, in time order.

        Parameters
        ----------
        sonications : list of dict
            From :meth:`sonication_entries`.
        dose : ndarray
            The cumulative dose on the treatment grid.

        Returns
        -------
        list of dict
        """
        alarms = [a for s in sonications for a in s.get("alarms", [])]
        th = self.current_thermometer
        if th is not None:
            alarms += self.cumulative_alarms(dose, th.times_s[-1] if th.times_s else 0.0, self.current + 1)
        if self.probes is not None:  # the readings' alarms belong to the treatment, not to one sonication
            alarms += [{**a, "sonication": 0} for a in self.probes.alarms()]
        alarms.sort(key=lambda a: (a.get("sonication", 0), a["time_s"], a["structure"]))
        return alarms

    def new_alarms(self, alarms):
        """Alarms not announced before (each structure and quantity once per sonication).

        Parameters
        ----------
        alarms : list of dict

        Returns
        -------
        list of dict
        """
        fresh = []
        for a in alarms:
            key = (a.get("sonication"), a["structure"], a["quantity"], a.get("source"))
            if key not in self.alarms_sent:
                self.alarms_sent.add(key)
                fresh.append(a)
        return fresh

    def first_anatomy_on_grid(self):
        """The first sonication's mean baseline magnitude on the treatment grid.

        Returns
        -------
        ndarray of float32 or None
        """
        son = self.sonications[min(self.sonications)]
        return None if son.th is None else self.anatomy_on_grid(son.th)

    # ------------------------------------------------------------------ checkpoint
    def save(self, folder, seq, extra):
        """Write checkpoint ``seq`` into ``folder`` (arrays first, JSON last, older checkpoints removed).

        Parameters
        ----------
        folder : str
        seq : int
            Checkpoint number.
        extra : dict
            More JSON entries (the session's skipped frames).
        """
        th = self.current_thermometer
        th_name = f"thermometer-{seq:08d}.npz" if th is not None else None
        cryo = self.sonications[self.current].run.state() if th is not None else None
        cryo_name = f"cryo-{seq:08d}.npz" if cryo is not None else None
        if th is not None:
            th.save_state(os.path.join(folder, th_name))
        if cryo is not None:  # the ice ball so far: a resumed sonication keeps masking it
            with atomic_file(os.path.join(folder, cryo_name)) as fh:
                np.savez(fh, **cryo[0])
        cum_name = f"cumulative-{seq:08d}.npz"
        with atomic_file(os.path.join(folder, cum_name)) as fh:
            np.savez(fh, **self.cumulative.state())
        kept = {s.index: s for s in self.sonications.values() if s.finished or s.th is not None}
        names = [n for n in (th_name, cum_name, cryo_name) if n is not None]
        state = {"version": CHECKPOINT_VERSION, "seq": seq, "fingerprint": fingerprint(self.options),
                 "grid": self.grid.describe(), "current": self.current, "thermometer": th_name,
                 "thermometer_frames": None if th is None else th.frames_processed,
                 "digests": {n: npz_digest(os.path.join(folder, n)) for n in names},
                 "cumulative": cum_name, "frames_processed": self.frames_processed,
                 "cryo": None if cryo is None else {"arrays": cryo_name, **cryo[1]},
                 "sonications": [{**s.meta(), "figures": self.finished_figures.get(i)}
                                 for i, s in sorted(kept.items())],
                 "alarms_sent": [list(k) for k in sorted(self.alarms_sent, key=str)],
                 "anatomy_written": self.anatomy_written, **extra}
        state = json.loads(json.dumps(outputs.finite_json(state), default=outputs.json_default))  # as it will read
        state["checksum"] = json_sha256(state)
        outputs.replace_json(state, os.path.join(folder, "checkpoint.json"))
        for old in glob.glob(os.path.join(folder, "*-*.npz")):
            if os.path.basename(old) not in (th_name, cum_name, cryo_name):
                os.remove(old)

    @classmethod
    def load(cls, folder, options):
        """The state of ``folder``'s checkpoint and its extra entries, or ``(None, {})`` without one.

        Parameters
        ----------
        folder : str
        options : dict
            Must match the checkpoint's (else MrthermError).

        Returns
        -------
        state : TreatmentState or None
        checkpoint : dict
        """
        path = os.path.join(folder, "checkpoint.json")
        if not os.path.exists(path):
            return None, {}
        cp = _verified(folder, path)
        if cp["fingerprint"] != fingerprint(options):
            raise MrthermError(f"{path}: the folder holds a live treatment run with other options; resume with the "
                               "same options or choose another --out")
        try:
            self = cls._restored(folder, cp, options)
        except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
            raise CheckpointDamaged(f"{path}: its arrays do not load ({type(exc).__name__}: {exc})") from None
        th = self.current_thermometer
        if (None if th is None else th.frames_processed) != cp["thermometer_frames"]:
            raise CheckpointDamaged(f"{path}: names a Thermometer state of {cp['thermometer_frames']} frames, the "
                                    f"file holds {None if th is None else th.frames_processed}")
        return self, cp

    @classmethod
    def _restored(cls, folder, cp, options):
        self = cls(options)
        g = cp["grid"]
        self.grid = TreatmentGrid(g["shape_zyx"], g["affine"], g["source"])
        self.cumulative = CumulativeDose(self.grid)
        with np.load(os.path.join(folder, cp["cumulative"])) as z:
            self.cumulative.restore({k: z[k] for k in z.files})
        for meta in cp["sonications"]:
            son = Sonication.from_meta(meta, options, self.respiration, self.probes)
            self.sonications[son.index] = son
            if meta.get("figures") is not None:
                self.finished_figures[son.index] = meta["figures"]
        self.current = cp["current"]
        if cp["thermometer"]:
            self.sonications[self.current].run.restore(Thermometer.load_state(os.path.join(folder, cp["thermometer"])),
                                                       _cryo_state(folder, cp.get("cryo")))
        if self.sonications:
            first = self.sonications[min(self.sonications)]
            self.ensure_grid(first.shape, first.affine, first.index)
        self.frames_processed = cp["frames_processed"]
        self.alarms_sent = {tuple(k) for k in cp["alarms_sent"]}
        self.anatomy_written = cp["anatomy_written"]
        return self

    def resume_reps(self) -> dict:
        """``{sonication index: (first repetition not yet processed, slices)}`` for the frame assembler.

        Returns
        -------
        dict
        """
        return {i: (s.next_rep, s.shape[0]) for i, s in self.sonications.items()}


def _verified(folder, path):
    """checkpoint.json, its own checksum and its files' checksums verified; CheckpointDamaged otherwise."""
    try:
        with open(path, encoding="utf-8") as fh:
            cp = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CheckpointDamaged(f"{path}: not a readable live checkpoint ({exc})") from None
    if not isinstance(cp, dict) or cp.get("version") != CHECKPOINT_VERSION:
        version = cp.get("version") if isinstance(cp, dict) else None
        raise MrthermError(f"{path}: checkpoint version {version} is not {CHECKPOINT_VERSION} (written by another "
                           "mrtherm); resume with that version or choose another --out")
    if cp.get("checksum") != json_sha256(cp):
        raise CheckpointDamaged(f"{path}: its checksum does not match its content (altered or torn)")
    for name, digest in cp["digests"].items():
        file = os.path.join(folder, name)
        if not os.path.exists(file):
            raise CheckpointDamaged(f"{path}: names {name}, which is missing")
        if npz_digest(file) != digest:
            raise CheckpointDamaged(f"{file}: differs from the version the checkpoint names (altered or replaced)")
    return cp


def _cryo_state(folder, entry):
    """The cryo watch's checkpoint ``(arrays, meta)``, or None."""
    if not entry:
        return None
    with np.load(os.path.join(folder, entry["arrays"])) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, {k: v for k, v in entry.items() if k != "arrays"}


def fingerprint(options) -> dict:
    """The options a resumed run must share with the first (JSON-able).

    Parameters
    ----------
    options : dict

    Returns
    -------
    dict
    """
    keys = ("labels", "drift_roi", "label_table", "te_s", "echo_times_s", "b0_t", "frame_time_s", "phase_scale",
            "treatment_grid", "respiration", "probes", "probe_positions", "probe_time_offset_s", "probe_cold_alarm_c")
    out = {k: (os.path.abspath(options[k]) if isinstance(options.get(k), str) and k in ("labels", "drift_roi",
                                                                                        "label_table", "respiration",
                                                                                        "probes", "probe_positions",
                                                                                        "treatment_grid")
               else options.get(k)) for k in keys}
    out["params"] = {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in dataclasses.asdict(options["params"]).items()}
    cryo = options.get("cryo")
    out["cryo"] = None if cryo is None else {k: (list(v) if isinstance(v, tuple) else v)
                                             for k, v in dataclasses.asdict(cryo).items()}
    return json.loads(json.dumps(out))
