"""One sonication's frames through one Thermometer: the frame loop every mode shares.

``mrtherm run`` (an exam from files or arrays), a DICOM treatment of several sonications and ``mrtherm live``
(frames from the scanner) all feed their frames to a :class:`SonicationRun`. It holds the baseline frames until
the last of them arrives, builds the :class:`mrtherm.Thermometer` from them, then takes every frame in order:
thermometry, the respiratory signal when one is given, and the cryo watch (ice masked out of PRF) when the
treatment is a cryoablation. So respiration and cryo work the same in every mode, and a fix to the loop reaches
every mode at once.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mrtherm.backend import to_numpy
from mrtherm.thermometry.thermometer import Thermometer

__all__ = ["RunOptions", "SonicationRun", "magnitude_of"]


@dataclasses.dataclass
class RunOptions:
    """What a sonication's Thermometer is built with, besides its frames.

    Attributes
    ----------
    params : ThermometryParams
    labels, drift_roi : path or array, optional
        Label volume and drift-reference mask (see :class:`mrtherm.Thermometer`).
    label_table : path or LabelTable, optional
    backend : {"auto", "numpy", "cupy"}
    cryo : CryoParams, optional
        Cryoablation: the ice ball is segmented per frame and masked out of PRF.
    profile : bool
        Time the CUDA kernels.
    keep_model_series : bool
        With ``params.bioheat``: keep every frame's model temperature (the 4-D ``temperature_model``; live keeps
        only the current frame's).
    """

    params: object
    labels: object = None
    drift_roi: object = None
    label_table: object = None
    backend: str = "auto"
    cryo: object = None
    profile: bool = False
    keep_model_series: bool = False


def magnitude_of(parts):
    """Host magnitude of a frame given as ``(a, b, polar)`` or as a complex array.

    Parameters
    ----------
    parts : tuple or array
        ``(magnitude, phase, True)``, ``(real, imag, False)`` or complex, shape (z, y, x).

    Returns
    -------
    ndarray, shape (z, y, x)
    """
    if not isinstance(parts, tuple):
        return np.abs(to_numpy(parts))
    a, b, polar = parts
    return np.abs(to_numpy(a)) if polar else np.hypot(to_numpy(a), to_numpy(b))


class SonicationRun:
    """Frames of one sonication in, temperatures out; the Thermometer is built when the baseline is complete.

    Parameters
    ----------
    shape_zyx : tuple of int
    affine : (4, 4) array
    te_s, b0_t : float
        Echo time (s) and field strength (T); water-fat (``options.params.water_fat``): the echo times, s.
    options : RunOptions
    warnings : sequence of str, optional
        The input's own warnings (they lead the Thermometer's).
    baseline_respiration : bool
        The caller gives a respiratory value with the frames (library entries are matched on it). A frame given
        None is matched on its image; a baseline with a frame given None is matched on images throughout (a
        warning says so).
    """

    def __init__(self, shape_zyx, affine, te_s, b0_t, options: RunOptions, *, warnings=(),
                 baseline_respiration: bool = False):
        self.shape, self.affine = tuple(int(v) for v in shape_zyx), np.asarray(affine, dtype=np.float64)
        self.te_s = [float(t) for t in te_s] if np.ndim(te_s) else float(te_s)  # water-fat: the echo times
        self.b0_t = float(b0_t)
        self.options = options
        self.input_warnings = list(warnings)
        self.with_respiration = bool(baseline_respiration)
        self.pending: list[tuple] = []
        self.th: Thermometer | None = None
        self.cryo_watch = None
        self.respiration_frames = {"signal": 0, "image": 0}  # with a log: frames matched on its signal, on the image
        self.on_signal = False  # the baseline library holds the respiratory signal

    @property
    def baseline_frames(self) -> int:
        """Frames held before the Thermometer starts."""
        return self.options.params.baseline_frames

    @property
    def started(self) -> bool:
        """The baseline is in and the Thermometer built."""
        return self.th is not None

    def to_device(self, parts):
        """``parts`` uploaded ahead of :meth:`feed` once the Thermometer exists (as they are before).

        Parameters
        ----------
        parts : tuple or array

        Returns
        -------
        tuple or array
        """
        return parts if self.th is None else self.th.to_device(parts)

    def feed(self, parts, time_s: float, respiration=None) -> list:
        """Take the next frame.

        Parameters
        ----------
        parts : tuple or complex array
            ``(a, b, polar)`` (see :meth:`mrtherm.Thermometer.update`) or a complex ``(z, y, x)`` frame.
        time_s : float
            s, after the previous frame's.
        respiration : float, optional
            The frame's respiratory value (with ``baseline_respiration``; None: matched on the image).

        Returns
        -------
        list of array
            The temperatures (C, float32, ``(z, y, x)``, NaN where not measured) of the frames processed now, in
            order: none while the baseline fills, all of it when it completes, then one per frame. An array may
            live in a buffer the next frame reuses (CUDA): copy it to keep it.
        """
        if self.th is not None:
            return [self._update(parts, time_s, respiration)]
        self.pending.append((parts, float(time_s), respiration))
        if len(self.pending) < self.baseline_frames:
            return []
        self._start()
        pending, self.pending = self.pending, []
        out = []
        for k, (p, t, r) in enumerate(pending):
            temp = self._update(p, t, r)
            last = k == len(pending) - 1  # an earlier temperature may sit in a buffer the next update reuses
            out.append(temp if last else self.th.xp.astype(temp, temp.dtype, copy=True))
        return out

    def _start(self):
        o = self.options
        resp = [r for _, _, r in self.pending] if self.with_respiration else None
        lacking = resp is not None and any(r is None for r in resp)
        if lacking:  # no signal for every baseline frame: the library cannot be matched on it
            resp = None
        self.th = Thermometer(self.shape, self.affine, self.te_s, self.b0_t, [p for p, _, _ in self.pending],
                              o.params, labels=o.labels, drift_roi=o.drift_roi, label_table=o.label_table,
                              backend=o.backend, baseline_respiration=resp)
        self.th.warnings = self.input_warnings + self.th.warnings
        self.on_signal = self.with_respiration and not lacking
        if lacking:
            self.th.warnings.append("the respiratory log did not cover every baseline frame: library entries are "
                                    "matched on the image for this sonication")
        if o.profile:
            self.th.engine.enable_timing()
        if getattr(self.th, "bioheat", None) is not None:
            self.th.bioheat.keep_series = o.keep_model_series
        self._make_cryo_watch()

    def _make_cryo_watch(self):
        if self.options.cryo is None:
            return
        from mrtherm.cryo import CryoWatch  # noqa: PLC0415 -- cryoablation only
        reliable = np.asarray(self.th.reliability.snr) >= self.th.params.snr_threshold
        self.cryo_watch = CryoWatch(self.options.cryo, self.th.anatomy, reliable, self.th.affine, self.th.labels,
                                    table=self.th.table)

    def not_prf(self):
        """Voxels the run keeps out of PRF altogether (the ice ball and its rim, ever), or None.

        Returns
        -------
        ndarray of bool, shape (z, y, x), or None
        """
        return None if self.cryo_watch is None else self.cryo_watch.masked_extent

    def state(self):
        """The cryo watch's checkpoint (the Thermometer saves its own: :meth:`mrtherm.Thermometer.save_state`).

        Returns
        -------
        tuple or None
            ``(arrays, meta)`` of :meth:`mrtherm.cryo.CryoWatch.state`, None without a cryo watch.
        """
        return None if self.cryo_watch is None else self.cryo_watch.state()

    def restore(self, thermometer: Thermometer, cryo_state=None):
        """Continue with a restored Thermometer (and the cryo watch's :meth:`state`).

        Parameters
        ----------
        thermometer : Thermometer
            From :meth:`mrtherm.Thermometer.load_state`.
        cryo_state : tuple, optional
        """
        self.th, self.pending = thermometer, []
        self._make_cryo_watch()
        if self.cryo_watch is not None and cryo_state is not None:
            self.cryo_watch.restore(*cryo_state)

    def _update(self, parts, time_s, respiration):
        if self.with_respiration:
            self.respiration_frames["signal" if self.on_signal and respiration is not None else "image"] += 1
        temp = self.th.update(parts, time_s, respiration=respiration)
        if self.cryo_watch is not None:
            temp = self.cryo_watch.update(time_s, magnitude_of(parts), to_numpy(temp))
        return temp
