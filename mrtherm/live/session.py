"""A live treatment session: images in (network or folder), frames through the Thermometers, outputs after each.

:meth:`LiveSession.receive` takes one DICOM file's bytes from any thread (a
C-STORE handler, the folder watcher): it checks it, places it in its frame, and
keeps it under ``OUT/received/`` before it returns the success status. One
worker thread processes frames as they complete: Thermometer update, outputs
replaced atomically, checkpoint, alarms. Starting a session on a folder that
holds a checkpoint resumes it: the kept images are replayed, frames already
processed are recognised, and processing continues where it stopped.

What a safety review relies on (each checked by a test against a real pynetdicom client):

- one service per output folder (:mod:`mrtherm.live.lock`); temporary files of killed writes are removed on start;
- an image is acknowledged only once it is kept; an image whose keeping failed (disk full, I/O error) is answered
  with a failure status (0xA700 out of resources, 0xC001 processing failure), taken back from its frame, never
  used, and accepted when the scanner retries it;
- images of another patient, study or frame of reference are refused (:mod:`mrtherm.live.identity`);
- a kept image that is no longer usable is moved to ``received/refused/`` on replay, so it is not replayed again;
- the checkpoint is written while no frame runs, and proves itself on loading
  (:class:`mrtherm.live.state.CheckpointDamaged`): a damaged one is moved aside and the treatment is rebuilt from
  the kept images, never resumed from a torn state.
"""

from __future__ import annotations

import collections
import errno
import io
import json
import logging
import os
import shlex
import shutil
import subprocess
import threading
import time

import numpy as np

from mrtherm.errors import InputFileError, MrthermError
from mrtherm.io.dicom import images
from mrtherm.io.dicom.files import IMAGE_STORAGE, pydicom
from mrtherm.app import outputs
from mrtherm.live import nifti_frames
from mrtherm.io.atomic import remove_leftovers
from mrtherm.live.assembler import (MAX_REPETITIONS_AHEAD, STATUS_NOT_MR, STATUS_TOO_LARGE, STATUS_UNREADABLE,
                                    FrameAssembler, RefusedImage)
from mrtherm.live.identity import TreatmentIdentity
from mrtherm.live.image_log import ImageCounts
from mrtherm.live.lock import ServiceLock
from mrtherm.live.nifti_frames import is_nifti
from mrtherm.live.spool import Spool
from mrtherm.live.state import CheckpointDamaged, TreatmentState
from mrtherm.thermometry.watch import format_alarm

LOG = logging.getLogger("mrtherm.live")
STATE_DIR = ".mrtherm-live"
STATUS_NO_SPACE = 0xA700  # "refused: out of resources": the image could not be kept (disk or quota full)
STATUS_PROCESSING_FAILURE = 0xC001  # the image could not be kept (another I/O error) or an unexpected fault


def decode(data: bytes, where: str):
    """A DICOM file's bytes to ``(sop uid, records, rescaled pixel arrays)``; RefusedImage when unusable.

    Parameters
    ----------
    data : bytes
        A DICOM file (preamble and file meta included).
    where : str
        Named in messages.

    Returns
    -------
    uid : str
    records : list of DicomImage
    arrays : list of ndarray of float32
        One rescaled 2-D image per record.
    """
    pd = pydicom()
    try:
        ds = pd.dcmread(io.BytesIO(data), force=True)
        sop_class, uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    except Exception as exc:  # pydicom raises many types on damaged data
        raise RefusedImage(STATUS_UNREADABLE, f"{where}: not readable DICOM ({type(exc).__name__})") from None
    if sop_class not in IMAGE_STORAGE or str(ds.get("Modality", "MR")).strip().upper() != "MR":
        raise RefusedImage(STATUS_NOT_MR, f"{where}: not an MR image (SOP class {sop_class}, modality "
                           f"{ds.get('Modality', '?')})")
    try:
        recs = images.records(where, ds)
        arrays = _pixels(pd, ds, recs)
    except InputFileError as exc:
        raise RefusedImage(STATUS_UNREADABLE, str(exc)) from None
    except Exception as exc:
        raise RefusedImage(STATUS_UNREADABLE, f"{where}: pixel data not readable ({type(exc).__name__})") from None
    return uid, recs, arrays


def decode_any(data: bytes, where: str, kind: str):
    """:func:`decode` for DICOM, :func:`mrtherm.live.nifti_frames.records` for NIfTI frames.

    Parameters
    ----------
    data : bytes
    where : str
    kind : {"dicom", "nifti"}

    Returns
    -------
    tuple
        ``(uid, records, arrays)``.
    """
    return decode(data, where) if kind == "dicom" else nifti_frames.records(data, where)


def _sidecar_bytes(path):
    from mrtherm.io.niftiio import sidecar_path  # noqa: PLC0415
    with open(sidecar_path(path), "rb") as fh:
        return fh.read()


def _pixels(pd, ds, recs):
    if len(recs) == 1 and recs[0].frame is None:
        stacked = [ds.pixel_array]
    else:
        stacked = [pd.pixels.pixel_array(ds, index=r.frame) for r in recs]
    out = []
    for rec, arr in zip(recs, stacked):
        if arr.shape != (rec.rows, rec.cols):
            raise InputFileError(rec.where, f"pixel data shape {arr.shape}, expected ({rec.rows}, {rec.cols})")
        out.append(images.rescaled(rec, arr, rec.role))
    return out


class AlarmCommand:
    """Runs ``--alarm-command`` with one alarm as JSON on its stdin, in the background (never blocks frames)."""

    def __init__(self, command):
        self.argv = shlex.split(command) if command else None

    def __call__(self, alarm):
        if self.argv:
            threading.Thread(target=self._run, args=(alarm,), daemon=True, name="mrtherm-alarm").start()

    def _run(self, alarm):
        try:
            proc = subprocess.run(self.argv, input=json.dumps(alarm), text=True, capture_output=True, timeout=30)
            if proc.returncode:
                LOG.error("alarm command exited %d: %s", proc.returncode, proc.stderr.strip()[:200])
        except (OSError, subprocess.TimeoutExpired) as exc:
            LOG.error("alarm command failed: %s", exc)


class LiveSession:
    """Frames from a stream of DICOM images to outputs updated after each (see the module docstring).

    Parameters
    ----------
    out_dir : str
        Output folder (created); a folder holding a checkpoint is resumed.
    options : dict
        Treatment options (see :class:`mrtherm.live.state.TreatmentState`) plus ``slices``, ``frame_timeout_s``,
        ``echo``, ``alarm_command``, ``max_image_bytes``.
    """

    def __init__(self, out_dir, options):
        self.out = os.path.abspath(os.fspath(out_dir))
        self.state_dir = os.path.join(self.out, STATE_DIR)
        self.service_lock = ServiceLock(self.state_dir, self.out, {"port": options.get("port"),
                                                                   "watch": options.get("watch")})
        try:
            self._start(options)
        except BaseException:
            self.service_lock.release()
            raise

    def _start(self, options):
        removed = remove_leftovers(self.out)  # ours alone now: the lock is held
        if removed:
            LOG.info("removed %d temporary files left by an interrupted write", removed)
        self.options = options
        self.rebuilt_from = None
        self.pacs = None
        if options.get("export_to"):
            from mrtherm.live.pacs import PacsExport  # noqa: PLC0415
            self.pacs = PacsExport(options["export_to"], options.get("export_called_ae") or "ANY-SCP",
                                   options.get("export_calling_ae") or "MRTHERM", self.out)
        self.listeners = []  # callables(FrameOutputs) after every frame's outputs (the OpenIGTLink server)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.seen: set[str] = set()
        self.latencies_ms = collections.deque(maxlen=2000)
        self.alarm_command = AlarmCommand(options.get("alarm_command"))
        self.writer = outputs.BackgroundWriter()  # the session's own map and checkpoint threads (closed by close())
        state, cp = self._load_checkpoint(options)
        self.state = state or TreatmentState(options)
        self.seq = cp.get("seq", 0)
        self.skipped = list(cp.get("skipped_frames", []))
        self.resumed = state is not None
        self.identity = TreatmentIdentity(options.get("new_study", False))
        self.assembler = FrameAssembler(options.get("slices"), options.get("frame_timeout_s", 30.0),
                                        options.get("echo"), self.state.resume_reps(),
                                        options.get("max_repetitions_ahead", MAX_REPETITIONS_AHEAD),
                                        water_fat=options["params"].water_fat,
                                        n_echoes=None if options.get("echo_times_s") is None
                                        else len(options["echo_times_s"]))
        self.spool = Spool(os.path.join(self.out, "received"))
        self._replay()
        self.image_counts = ImageCounts(self.state_dir, len(self.spool.paths()))  # after images were set aside
        self.worker = threading.Thread(target=self._work, name="mrtherm-live-frames", daemon=True)
        self.worker.start()

    def _load_checkpoint(self, options):
        """The checkpoint's state, or a fresh start after moving a damaged one aside (the kept images rebuild it)."""
        try:
            return TreatmentState.load(self.state_dir, options)
        except CheckpointDamaged as exc:
            aside = os.path.join(self.state_dir, f"damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            os.makedirs(aside, exist_ok=True)
            for name in os.listdir(self.state_dir):
                if name == "checkpoint.json" or name.endswith(".npz"):
                    shutil.move(os.path.join(self.state_dir, name), os.path.join(aside, name))
            LOG.warning("checkpoint damaged (%s): moved to %s; the treatment is rebuilt from the kept images", exc,
                        aside)
            self.rebuilt_from = {"reason": str(exc), "moved_to": aside}
            return None, {}

    @property
    def counts(self) -> dict:
        """Images received, duplicates, refusals by status (since the treatment began).

        Returns
        -------
        dict
        """
        with self.lock:
            return self.image_counts.as_dict()

    # ------------------------------------------------------------------ images in
    def receive(self, data: bytes, where: str, kind: str = "dicom") -> int:
        """Take one file's bytes (any thread): DICOM, or a NIfTI frame whose sidecar lies beside ``where``.

        Returns the DICOM status (0 success). Success means kept: an image that could not be kept is answered with
        a failure status and taken back from its frame, and its retry is accepted.

        Parameters
        ----------
        data : bytes
            The file's bytes.
        where : str
            Its path or the C-STORE peer, for messages (a NIfTI frame's sidecar is read beside it).
        kind : {"dicom", "nifti"}

        Returns
        -------
        int
        """
        try:
            limit = self.options.get("max_image_bytes")
            if limit and len(data) > limit:
                raise RefusedImage(STATUS_TOO_LARGE, f"{where}: {len(data)} bytes, over the {limit}-byte image limit")
            uid, recs, arrays = decode_any(data, where, kind)
            keep = {} if kind == "dicom" else {"suffix": ".nii.gz" if where.lower().endswith(".gz") else ".nii",
                                               "sidecar": _sidecar_bytes(where)}
            with self.lock:
                if uid in self.seen:
                    self.image_counts.duplicate()
                    LOG.debug("%s: SOP Instance UID %s already received: ignored", where, uid)
                    return 0
                self._keep(uid, recs, arrays, data, keep, where)
        except RefusedImage as exc:
            self.refused(exc.status, str(exc))
            return exc.status
        except OSError as exc:  # the sidecar of a NIfTI frame could not be read
            self.refused(STATUS_PROCESSING_FAILURE, f"{where}: not readable ({exc.strerror or exc})")
            return STATUS_PROCESSING_FAILURE
        except Exception as exc:  # never pynetdicom's own status for a handler fault: a line saying what happened
            LOG.debug("unexpected fault taking %s", where, exc_info=True)
            self.refused(STATUS_PROCESSING_FAILURE, f"{where}: unexpected fault ({type(exc).__name__}: {exc})")
            return STATUS_PROCESSING_FAILURE
        self.wake.set()
        return 0

    def _keep(self, uid, recs, arrays, data, keep, where):
        """Place one image in its frame and keep it on disk (under the lock); RefusedImage when either fails."""
        ident = self.identity.check(recs[0])
        now = time.monotonic()
        try:
            for rec, arr in zip(recs, arrays):
                self.assembler.add(rec, arr, now)
            kept = self.spool.write(data, uid, **keep)
        except OSError as exc:
            self.assembler.withdraw(recs)  # the scanner is told it failed: never used, accepted when retried
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise RefusedImage(STATUS_NO_SPACE if full else STATUS_PROCESSING_FAILURE,
                               f"{where}: not kept ({'disk full' if full else 'I/O error'}: "
                               f"{exc.strerror or exc}); the scanner may retry it") from None
        except BaseException:  # refused, or any fault: nothing of an image that was not kept stays in a frame
            self.assembler.withdraw(recs)
            raise
        for rec in recs:
            rec.path = kept  # vendor readers (Siemens protocol) read the file itself
        if self.identity.accept(ident, where):
            LOG.warning("%s: the treatment continues in study %s (--new-study)", where, ident.study_uid)
        self.seen.add(uid)
        self.image_counts.received += 1

    def refused(self, status: int, message: str):
        """Count and log one refused image (any thread).

        Parameters
        ----------
        status : int
            The DICOM status it is answered.
        message : str
        """
        key = f"0x{status:04X}"
        with self.lock:
            self.image_counts.refusal(status)
        LOG.warning("refused (status %s): %s", key, message)

    def _replay(self):
        paths = self.spool.paths()
        for path in paths:
            with open(path, "rb") as fh:
                data = fh.read()
            try:
                uid, recs, arrays = decode_any(data, path, "nifti" if is_nifti(path) else "dicom")
                now = time.monotonic()
                try:
                    for rec, arr in zip(recs, arrays):
                        self.assembler.add(rec, arr, now)
                except RefusedImage:
                    self.assembler.withdraw(recs)
                    raise
                self.identity.adopt(recs[0], path)  # it was accepted when it came (into a new study, possibly)
                self.seen.add(uid)
            except (RefusedImage, OSError) as exc:  # unusable now (or its NIfTI sidecar is gone): never again
                moved = self.spool.set_aside(path)
                LOG.warning("kept image %s no longer usable (%s): moved to %s, not replayed again", path, exc, moved)
        if paths:
            LOG.info("resumed: %d kept images replayed, %d frames already processed", len(paths),
                     self.state.frames_processed)

    # ------------------------------------------------------------------ frames
    def _work(self):
        from mrtherm.backend import single_threaded_blas  # noqa: PLC0415
        with single_threaded_blas():  # small per-slice products: BLAS threads would only spin (see there)
            while not self.stopping.is_set():
                self.wake.wait(0.25)
                self.wake.clear()
                try:
                    self._process(final=False)
                except Exception:  # the service outlives any one failure (e.g. a full disk); the log says what
                    LOG.exception("frame processing failed; retrying with the next frame")

    def _process(self, final):
        with self.lock:
            frames = self.assembler.ready(time.monotonic(), final)
            self.skipped = self.skipped + self.assembler.skipped
            self.assembler.skipped = []
        for frame in frames:
            try:
                taken, finished = self.state.feed(frame)
            except Exception as exc:  # a bad frame never stops the service; the log says why
                if not isinstance(exc, MrthermError):
                    LOG.exception("sonication %d repetition %d: unexpected error", frame.sonication + 1, frame.rep)
                LOG.error("sonication %d repetition %d: %s: frame skipped", frame.sonication + 1, frame.rep, exc)
                self.skipped.append({"sonication": frame.sonication + 1, "repetition": frame.rep, "reason": str(exc)})
                continue
            try:
                if finished is not None:
                    self._write_sonication(finished)
                if taken:
                    self._publish(frame, measure=taken == 1)
            except OSError as exc:  # outputs not written this time; the next frame writes them again
                LOG.error("sonication %d repetition %d: outputs not written: %s", frame.sonication + 1, frame.rep,
                          exc)

    def _publish(self, frame, measure=True):
        st = self.state
        dose, tmax = st.maps()
        sonications = st.sonication_entries()
        alarms = st.alarms(sonications, dose)
        maps = outputs.treatment_maps(dose, tmax, st.grid, st.params.dose_levels_cem43_min)
        son = st.sonications[st.current]
        if son.last_temperature is not None:  # None while the current sonication's baseline fills
            maps["temperature.nii.gz"] = (son.last_temperature, son.affine)
        model = None if son.th is None else son.th.bioheat
        if model is not None and model.temperature_c is not None:  # --bioheat: the model's current frame beside it
            maps["temperature_model.nii.gz"] = (model.temperature_c, son.affine)
            maps["temperature_model_sd.nii.gz"] = (model.sd_c, son.affine)
        anatomy = None if st.anatomy_written else st.first_anatomy_on_grid()
        if anatomy is not None:
            maps["anatomy.nii.gz"] = (anatomy, st.grid.affine)
        # The checkpoint is written alongside the maps and always completed (or failed) before the next frame
        # runs, whatever happens to the maps: it must never read a state the next frame is changing. A crash before
        # it lands resumes from the previous checkpoint and processes this frame again from the kept images.
        self.seq += 1
        checkpoint = self.writer.start_task(st.save, self.state_dir, self.seq, {"skipped_frames": list(self.skipped)})
        try:
            failed = self._write_maps(maps)
            st.anatomy_written = st.anatomy_written or ("anatomy.nii.gz" in maps and "anatomy.nii.gz" not in failed)
            report = self._report(sonications, alarms, dose, tmax, sorted(maps), frame)
            report["outputs_not_written"] = failed  # the operator's view says which maps are stale
            outputs.replace_json(report, os.path.join(self.out, "report.json"))
            latency_ms = (time.monotonic() - frame.received_s) * 1e3  # the operator's view is current from here
        finally:
            checkpoint.result()
        for listener in self.listeners:  # e.g. the OpenIGTLink server: never allowed to stop the frames
            try:
                listener(son.last_temperature, son.affine, dose, st.grid.affine, alarms)
            except Exception as exc:
                LOG.error("live stream %s failed: %s", getattr(listener, "__qualname__", listener), exc)
        if measure:  # not the frame that completes a baseline (all baseline frames are processed then)
            self.latencies_ms.append(latency_ms)
        target = son.th.target
        if target is not None and target.measured and not target.measured[-1] and \
                (len(target.measured) == 1 or target.measured[-2]):  # once, when it stops being measured
            LOG.warning("sonication %d frame %d: the target at %s mm is not measured from this frame on (no signal "
                        "there)",
                        son.index + 1, son.th.frames_processed, tuple(round(v, 1) for v in target.target_mm))
        for alarm in st.new_alarms(alarms):
            LOG.warning("sonication %d: %s", alarm.get("sonication", 0), format_alarm(alarm))
            self.alarm_command(alarm)
        th = son.th
        LOG.info("sonication %d frame %d (t = %.1f s): peak %.1f C, max dose %.3g CEM43, %.0f ms", son.index + 1,
                 th.frames_processed, th.times_s[-1], th.peak_curve_c[-1],
                 float(np.nanmax(dose)) if np.isfinite(dose).any() else 0.0, latency_ms)

    def _write_maps(self, maps) -> dict:
        """Write the maps (in parallel); ``{name: error}`` of those that could not be written (each logged)."""
        futures = self.writer.start_maps(self.out, maps)
        failed = {}
        for name, future in zip(maps, futures):
            try:
                future.result()
            except OSError as exc:
                failed[name] = exc.strerror or str(exc)
        if failed:
            LOG.error("outputs not written: %s", "; ".join(f"{k}: {v}" for k, v in failed.items()))
        return failed

    def _report(self, sonications, alarms, dose, tmax, names, frame):
        st = self.state
        son = st.sonications[st.current]
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(0)
        with self.lock:
            counts = self.image_counts.as_dict()
            ignored, pending = dict(self.assembler.ignored), self.assembler.pending()
            identity = self.identity.report()
        current = {"sonication": son.index + 1, "repetition": frame.rep, **_measured_now(son.th)}
        extra = {"current": current, "images": {**counts, "ignored": ignored}, "incomplete_frames": pending,
                 "skipped_frames": self.skipped, "resumed": self.resumed, "identity": identity,
                 "rebuilt_from_kept_images": self.rebuilt_from,
                 "latency_ms": {"frames": int(lat.size), "median": float(np.median(lat)) if lat.size else None,
                                "p95": float(np.percentile(lat, 95)) if lat.size else None,
                                "max": float(lat.max()) if lat.size else None,
                                "definition": "last image of a frame received -> its maps and report.json written "
                                              "(the checkpoint is written alongside and completed before the next "
                                              "frame)"},
                 "outputs": sorted(set(names) | {"report.json", "anatomy.nii.gz"})}
        return outputs.treatment_report(mode="live", params=st.params, grid=st.grid, sonications=sonications,
                                        cumulative=st.cumulative_entry(dose, tmax), alarms=alarms,
                                        frames_processed=st.frames_processed, extra=extra)

    def _write_sonication(self, son):
        """The full outputs of one sonication under ``sonication_<k>/`` (complete or not at all)."""
        from mrtherm.io import atomic  # noqa: PLC0415
        from mrtherm.thermometry.result import ThermometryResult  # noqa: PLC0415
        folder = os.path.join(self.out, f"sonication_{son.index + 1:02d}")
        with atomic.staged(folder) as stage:
            ThermometryResult.from_thermometer(son.th).write_into(stage, figures=False)
        LOG.info("sonication %d: outputs written to %s", son.index + 1, folder)
        if self.pacs is not None:
            self.pacs.submit(folder, son.index, son.source_paths)

    # ------------------------------------------------------------------ end
    def close(self):
        """Stop after the frames already complete; write the current sonication's outputs and the last report."""
        self.stopping.set()
        self.wake.set()
        self.worker.join()
        try:
            self._process(final=True)
            th = self.state.current_thermometer
            if th is not None:
                self._write_sonication(self.state.sonications[self.state.current])
        except OSError as exc:  # the checkpoint and the kept images still hold everything: a restart writes them
            LOG.error("outputs of the current sonication not written at shutdown: %s", exc)
        finally:
            self.writer.close()
            if self.pacs is not None:
                self.pacs.close()
            self.service_lock.release()
        pending = self.assembler.pending()
        if pending:
            LOG.warning("%d incomplete frames at shutdown (kept in received/; a restart completes them if the rest "
                        "arrives)", len(pending))
        LOG.info("stopped: %d frames processed", self.state.frames_processed)


def _measured_now(th) -> dict:
    """The current frame's per-frame validity and target coverage (report.json ``current``)."""
    if th is None or not th.frames_processed:  # the current sonication's baseline is filling
        return {"frame": 0, "time_s": None, "peak_temperature_c": None, "reliable_voxels_not_measured": 0}
    out = {"frame": th.frames_processed, "time_s": th.times_s[-1], "peak_temperature_c": th.peak_curve_c[-1],
           "reliable_voxels_not_measured": th.invalid_voxels[-1] if th.invalid_voxels else 0}
    target = th.target
    if target is not None and target.measured:
        out["target"] = {"world_mm": list(target.target_mm), "source": target.source, "measured": target.measured[-1],
                         "margin_mm": target.margin_mm,
                         "margin_measured_fraction": target.margin_measured[-1] / max(int(target.margin.sum()), 1)}
    return out
