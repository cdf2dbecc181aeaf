"""A live sonication: DICOM frames from the scanner turned into the frames of a :class:`SonicationRun`.

The sonication's geometry and acquisition (echo time, field strength, phase encoding) come from its first frame,
by the same functions the DICOM loader uses for a whole series; its frames then go through the frame loop every mode
shares (:mod:`mrtherm.app.sonication`). The treatment around it (cumulative dose on the treatment grid) is
:mod:`mrtherm.app.treatment`.
"""

from __future__ import annotations

import numpy as np

from mrtherm.app.sonication import RunOptions, SonicationRun
from mrtherm.backend import to_numpy
from mrtherm.errors import InputFileError
from mrtherm.io.dicom import assemble, geometry, loader
from mrtherm.io.exam_data import polar_parts


def _stack(role, images):
    return assemble.Stack(role=role, frames=[list(images)], times_s=None,
                          positions_mm=geometry.slice_positions(images))


def mean_time_s(images):
    """A frame's acquisition time: the mean over its slices (as the batch loader), None if a slice has none.

    Parameters
    ----------
    images : list of DicomImage

    Returns
    -------
    float or None
        s.
    """
    if any(im.time_s is None for im in images):
        return None
    return float(np.array([[im.time_s for im in images]]).mean(axis=1)[0])


def echo_times(frame, options, provenance):
    """A water-fat frame's echo times, s: ``options["echo_times_s"]`` when given, else each echo's EchoTime.

    Parameters
    ----------
    frame : Frame
        With ``echo_times_ms``.
    options : dict
    provenance : dict
        Gets ``te_source``.

    Returns
    -------
    list of float

    Raises
    ------
    InputFileError
        Unknown, not increasing, or another count than given.
    """
    where = frame.images_b[0].where
    given = options.get("echo_times_s")
    n = len(frame.echo_times_ms)
    if given is not None:
        if len(given) != n:
            raise InputFileError(where, f"--echo-times-ms gives {len(given)} echo times but the frame has {n} echoes")
        provenance["te_source"] = "argument"
        te = [float(v) for v in given]
    elif any(t is None for t in frame.echo_times_ms):
        raise InputFileError(where, "echo time unknown: an echo has no EchoTime in the DICOM; pass --echo-times-ms")
    else:
        provenance["te_source"] = "DICOM echo time of each echo"
        te = [t / 1e3 for t in frame.echo_times_ms]
    if n < 3 or any(b <= a for a, b in zip(te, te[1:])) or te[0] <= 0:
        raise InputFileError(where, f"water-fat needs at least 3 echoes at increasing positive echo times, got "
                                    f"{[round(1e3 * t, 3) for t in te]} ms")
    return te


class Sonication:
    """One sonication fed frame by frame: its geometry and acquisition from its first frame, then a Thermometer.

    The first ``baseline_frames`` frames are held until the last of them arrives; then the Thermometer is built
    from them and takes them, and every later frame, in order.
    """

    def __init__(self, index, frame, options, respiration=None, probes=None):
        self.index = index
        self.options = options
        self.respiration, self.probes, self.probe_rows = respiration, probes, []
        self.roles = frame.roles
        self.series = sorted({im.series_uid for im in frame.images_a + frame.images_b})
        self.source_paths = [im.path for im in frame.images_b]  # the kept images of the first frame (export)
        self.affine = geometry.stack_affine(frame.images_a)
        self.shape = frame.a.shape[-3:]  # water-fat frames are (n_echoes, z, y, x)
        self.provenance, self.warnings = {}, []
        a_stack, b_stack = _stack(self.roles[0], frame.images_a), _stack(self.roles[1], frame.images_b)
        te = echo_times(frame, options, self.provenance) if frame.echo_times_ms is not None else \
            loader.echo_time(b_stack, options.get("te_s"), self.provenance, self.warnings)
        b0 = loader.field_strength(a_stack, b_stack, options.get("b0_t"), self.provenance)
        from mrtherm.io import acquisition  # noqa: PLC0415
        if frame.echo_times_ms is None:
            self.te_s, self.b0_t = acquisition.validate_te_b0(te, b0)
        else:  # each echo time checked like a single one
            self.te_s, self.b0_t = [acquisition.validate_te_b0(t, b0)[0] for t in te], float(b0)
        self.phase_scale = loader.phase_scale_of(lambda: frame.b, b_stack, options.get("phase_scale", "auto"),
                                                 self.provenance)
        self.first_rep = frame.rep
        self.t0 = self._clock(frame)
        self.last_temperature = None
        self._make_run()
        self.next_rep = frame.rep
        self.finished = False

    def _clock(self, frame):
        dt = self.options.get("frame_time_s")
        if dt is not None:
            return (frame.rep - self.first_rep) * float(dt)
        for images in (frame.images_b, frame.images_a):
            t = mean_time_s(images)
            if t is not None:
                return t
        raise InputFileError(frame.images_b[0].where, "frame times unknown: no AcquisitionTime in the DICOM; "
                             "pass --frame-time-s")

    def time_of(self, frame) -> float:
        """Frame time, s after the sonication's first frame.

        Parameters
        ----------
        frame : Frame

        Returns
        -------
        float
        """
        if self.options.get("frame_time_s") is not None:
            return self._clock(frame)
        return self._clock(frame) - self.t0

    def parts(self, frame):
        """``(a, b, polar)`` for the Thermometer: phase to radians with the sonication's phase encoding.

        Parameters
        ----------
        frame : Frame

        Returns
        -------
        tuple
        """
        if self.phase_scale is None:
            return frame.a, frame.b, False
        return polar_parts(frame.a, frame.b, self.phase_scale, frame.images_b[0].where, frame.rep)

    def feed(self, frame) -> int:
        """Take the next frame; returns how many frames the Thermometer took (0 while the baseline fills).

        Parameters
        ----------
        frame : Frame

        Returns
        -------
        int
        """
        resp = None if self.respiration is None else self.respiration.value_at(self._clock(frame))
        temps = self.run.feed(self.parts(frame), self.time_of(frame), respiration=resp)
        self.next_rep = frame.rep + 1
        if temps:
            self.last_temperature = to_numpy(temps[-1]).copy()
        if temps and self.probes is not None:  # each frame processed now, at its acquisition time
            for temp, t in zip(temps, self.run.th.times_s[-len(temps):]):
                self.probe_rows += self.probes.frame(t + self.t0, to_numpy(temp), self.run.th.affine)
        return len(temps)

    @property
    def th(self):
        """The sonication's Thermometer (None while its baseline fills)."""
        return self.run.th

    def _make_run(self):
        o = self.options
        self.run = SonicationRun(self.shape, self.affine, self.te_s, self.b0_t,
                                 RunOptions(o["params"], labels=o.get("labels"), drift_roi=o.get("drift_roi"),
                                            label_table=o.get("label_table"), backend=o.get("backend", "auto"),
                                            cryo=o.get("cryo")),
                                 baseline_respiration=self.respiration is not None)

    @classmethod
    def from_meta(cls, meta, options, respiration=None, probes=None):
        """A sonication back from :meth:`meta` (without its Thermometer, which the caller restores).

        Parameters
        ----------
        meta : dict
        options : dict
        respiration : LiveRespiration, optional
        probes : LiveProbes, optional

        Returns
        -------
        Sonication
        """
        self = cls.__new__(cls)
        self.index, self.options, self.respiration, self.probes = meta["sonication"] - 1, options, respiration, probes
        self.probe_rows = list(meta.get("probe_rows") or [])
        self.roles, self.series = tuple(meta["components"]), list(meta["series_instance_uids"])
        self.source_paths = list(meta.get("source_images") or [])
        self.affine, self.shape = np.asarray(meta["affine"]), tuple(meta["shape_zyx"])
        self.te_s, self.b0_t, self.phase_scale = meta["te_s"], meta["b0_t"], meta["phase_scale"]
        self.provenance, self.warnings = meta["provenance"], []
        self.first_rep, self.next_rep = meta["first_repetition"], meta["next_repetition"]
        self.t0 = meta["time_origin_s"]
        self.finished, self.last_temperature = meta["finished"], None
        self._make_run()
        resp = meta.get("respiration")
        if resp is not None:
            self.run.on_signal = resp["on_signal"]
            self.run.respiration_frames = {"signal": resp["frames_matched_on_signal"],
                                           "image": resp["frames_matched_on_image"]}
        return self

    def meta(self) -> dict:
        """JSON-able description (report.json and the checkpoint).

        Returns
        -------
        dict
        """
        return {"sonication": self.index + 1, "series_instance_uids": self.series, "components": list(self.roles),
                "shape_zyx": list(self.shape), "affine": self.affine.tolist(), "te_s": self.te_s, "b0_t": self.b0_t,
                "phase_scale": self.phase_scale, "provenance": self.provenance, "first_repetition": self.first_rep,
                "next_repetition": self.next_rep, "time_origin_s": self.t0, "finished": self.finished,
                "respiration": None if self.respiration is None else
                {"log": self.respiration.path, "on_signal": self.run.on_signal,
                 "frames_matched_on_signal": self.run.respiration_frames["signal"],
                 "frames_matched_on_image": self.run.respiration_frames["image"]},
                "probe_rows": self.probe_rows if self.probes is not None else None,
                "source_images": self.source_paths}
