"""The Thermometer: per-frame PRF thermometry state, updated one frame at a time, saved and restored whole.

Built from the exam geometry (shape, affine, TE, B0), parameters and the
baseline frames; :meth:`Thermometer.update` then takes every frame in order --
the baseline frames first -- and returns its temperature while it accumulates
exact CEM43 dose, Tmax, the baseline statistics of the uncertainty, and the
protected-structure watch. :func:`mrtherm.process` (files), ``mrtherm live``
(scanner stream) and ``mrtherm batch`` are loops around it.

Per frame ``t``: with motion registration the frame is first resampled into
tissue coordinates (:mod:`mrtherm.thermometry.motion`); then the phase change
against the reference ``S_ref`` (complex mean of the baseline frames, a
library's match, or one given to :meth:`update`), per-frame validity (a voxel
whose signal is gone in this frame is not measured in it), temporal unwrapping
against frame ``t - 1`` (re-anchored to tracked neighbours after a gap), drift
fit (per-slice polynomial, weighted by ``|S_t|^2``, in the reference region;
the automatic region drops voxels that changed more than ``auto_ref_heated_c``
either way and this frame's outliers), PRF conversion, masking, exact CEM43 for
temperature linear between valid frames, Tmax, watch.

:meth:`save_state` writes everything that carries over between frames to one
``.npz`` file (written to a temporary name, then renamed); :meth:`load_state`
continues from it, and the final dose is bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

from mrtherm.backend import (compute_namespace, cupy_module, from_numpy, gpu_plugin, is_cupy_namespace, namespace,
                             resolve_backend, to_numpy)
from mrtherm.errors import ParameterError
from mrtherm.io.atomic import atomic_file
from mrtherm.io import labels as labels_mod
from mrtherm.thermometry import masks
from mrtherm.thermometry.drift import DriftModel, solve_drift
from mrtherm.thermometry.engine import ArrayEngine, EngineConfig, signal_from_parts
from mrtherm.thermometry.params import ThermometryParams
from mrtherm.thermometry.prf import radians_per_celsius
from mrtherm.thermometry.frame_reference import LEAVE_ONE_OUT_FACTOR, FrameReference
from mrtherm.thermometry.motion import MotionRegistration, moving_tissue_weight
from mrtherm.thermometry.reference import MOVING_SD_FACTOR, choose_reference
from mrtherm.thermometry.target import TargetWatch, resolve_target
from mrtherm.thermometry.watch import ProtectedWatch

STATE_VERSION = 2


def _parts(frame):
    """``(a, b, polar)`` of a frame given as such a tuple or as one complex array."""
    if isinstance(frame, tuple):
        return frame
    return frame, None, None


class Thermometer:
    """Per-frame thermometry state (see the module docstring).

    Parameters
    ----------
    shape_zyx : tuple of int
        Frame shape ``(z, y, x)``.
    affine : (4, 4) array
        Voxel (x, y, z) to world RAS+ mm.
    te_s, b0_t : float
        Echo time scaling the phase (s) and field strength (T); with ``params.water_fat`` the echo times
        (sequence of s, increasing).
    baseline : sequence of frames
        The first ``params.baseline_frames`` frames, each a complex ``(z, y, x)``
        array or ``(magnitude, phase_rad, True)`` / ``(real, imag, False)``; with ``params.water_fat`` each of
        shape ``(n_echoes, z, y, x)`` (:mod:`mrtherm.thermometry.waterfat_engine`).
    params : ThermometryParams, optional
    labels, drift_roi : path or ``(z, y, x)`` array, optional
        Anatomy labels (masking, target exclusion, protected structures) and a
        drift reference region; files on another grid are resampled.
    label_table : LabelTable or path, optional
    backend : {"auto", "numpy", "cupy"}
        ``auto``: the baseline arrays' own library for non-NumPy arrays, else CuPy
        when a GPU is usable.

    Examples
    --------
    >>> import mrtherm
    >>> ph = mrtherm.make_phantom(shape_zyx=(2, 32, 32), n_frames=6)
    >>> frames = [(ph.magnitude[t], ph.phase_rad[t], True) for t in range(6)]
    >>> th = mrtherm.Thermometer(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t, frames[:3],
    ...                          mrtherm.ThermometryParams(baseline_frames=3))
    >>> temps = [th.update(f, t) for f, t in zip(frames, ph.frame_times_s)]
    >>> th.frames_processed
    6
    """

    def __init__(self, shape_zyx, affine, te_s, b0_t, baseline, params=None, *, labels=None, drift_roi=None,
                 label_table=None, backend="auto", baseline_respiration=None):
        self.params = dataclasses.replace(params or ThermometryParams()).validate()
        self.shape = tuple(int(s) for s in shape_zyx)
        self.affine = np.asarray(affine, dtype=np.float64)
        self.te_echoes_s = tuple(float(t) for t in np.atleast_1d(te_s)) if self.params.water_fat else None
        self.te_s, self.b0_t = float(np.atleast_1d(te_s)[0]), float(b0_t)
        baseline = list(baseline)
        if len(baseline) != self.params.baseline_frames:
            raise ParameterError(f"baseline has {len(baseline)} frames but baseline_frames = "
                                 f"{self.params.baseline_frames}")
        self.table = labels_mod.LabelTable.from_json(label_table) if isinstance(label_table, (str, os.PathLike)) \
            else (label_table or labels_mod.LabelTable())
        self.xp, self.backend_used = self._choose_namespace(baseline, backend)
        self.labels, self.label_info = labels_mod.load_on_grid(labels, self.shape, self.affine, "labels", self.table)
        roi, self.roi_info = labels_mod.load_on_grid(drift_roi, self.shape, self.affine, "drift ROI")
        signals = [self._signal(f) for f in baseline]  # image position
        if self.params.water_fat:  # multi-echo frames: the water-fat fit is mask, reference and drift
            from mrtherm.thermometry.waterfat_engine import setup_water_fat  # noqa: PLC0415
            fit, s_ref = setup_water_fat(self, signals, self._fit_backend())
            self.k_rad_per_c = radians_per_celsius(self.te_s, self.b0_t, self.params.alpha_ppm_per_c)
            self._make_engine(s_ref, water_fat=fit)
        else:
            tissue = self._setup_masks(signals, roi, baseline_respiration)
            s_ref = tissue[0]
            for sig in tissue[1:]:
                s_ref = s_ref + sig
            self._make_engine(s_ref / len(tissue))
        self.watch = ProtectedWatch(self.labels, self.reliability.mask, self.table, self.xp, self.params)
        self.target = self._make_target(*resolve_target(self.params.target_mm, self.labels, self.affine))
        self.warnings = list(self.reliability.warnings) + list(self.watch.warnings)
        self._reset_history()
        self.bioheat = None
        if self.params.bioheat:  # model-based temperature where PRF is blind (bioheat_track.py)
            from mrtherm.thermometry.bioheat_track import BioheatTrack  # noqa: PLC0415
            self.bioheat = BioheatTrack(self, labels)

    def _make_target(self, target_mm, source):
        if target_mm is None:
            return None
        return TargetWatch(target_mm, self.params.target_margin_mm, self.affine, self.shape, self.xp, source)

    # ------------------------------------------------------------------ construction
    def _choose_namespace(self, baseline, backend):
        a = _parts(baseline[0])[0]
        in_xp = namespace(a)
        if backend == "auto" and not isinstance(a, np.ndarray):
            used = "cupy" if cupy_module() is not None and is_cupy_namespace(in_xp) else "input arrays"
            return in_xp, used
        used = resolve_backend(backend)
        return compute_namespace(used), used

    def _fit_backend(self):
        """Where a water-fat fit runs: on CuPy arrays on the GPU, else NumPy."""
        return "cupy" if is_cupy_namespace(self.xp) else "numpy"

    def _device(self, a):
        return a if namespace(a) is self.xp else from_numpy(to_numpy(a), self.xp)

    def _signal(self, frame):
        a, b, polar = _parts(frame)
        if b is None:
            return self.xp.astype(self._device(a), self.xp.complex64)
        return signal_from_parts(self._device(a), self._device(b), polar, self.xp)

    def _setup_masks(self, signals, roi, respiration=None):
        """Reliability, reference choice, registration and library; returns the baseline frames on the grid the
        thermometry runs on (tissue coordinates with motion registration, else as given)."""
        p = self.params
        image_mags = [self.xp.abs(s) for s in signals]  # the library matches frames on these (registered)
        image_mag = np.stack([to_numpy(m) for m in image_mags]).astype(np.float64)
        image_rel = masks.reliability_mask(image_mag, len(signals), self.te_s, self.b0_t, p, self.labels, self.table)
        used, self.reference_decision = choose_reference(p.reference, image_mag, image_rel.mask, image_rel.sigma)
        self.registration = self._make_registration(signals[0], image_rel)
        tissue, base_mag = signals, image_mag
        self.reliability = image_rel
        if self.registration is not None:
            tissue, base_mag = self._register_baseline(signals, image_mags, image_rel)
        # voxels whose magnitude stays within noise over the baseline frames: no edge slides through them
        self.still = base_mag.std(axis=0, ddof=1) <= MOVING_SD_FACTOR * self.reliability.sigma \
            if len(signals) >= 3 else np.ones(self.shape, dtype=bool)
        self._motion_mask_rules(used)
        registered = self.registration is not None
        self.frame_reference = None if used == "mean" else FrameReference(
            used, tissue, from_numpy(self.reliability.mask, self.xp), self.reliability.sigma, p, self.xp,
            respiration, still=from_numpy(self.still, self.xp),
            match_magnitudes=image_mags if registered else None,
            match_mask=from_numpy(image_rel.mask, self.xp) if registered else None)
        if used != "mean":
            rel = self.reliability
            rel.mask = rel.mask & self.frame_reference.consistent(tissue, respiration)
            what = "the smooth fit of its own phase" if used == "referenceless" else "the library"
            rel.rules.append(f"{used}: leave-one-out phase residual over the baseline frames <= "
                             f"{LEAVE_ONE_OUT_FACTOR:g} x the noise prediction ({what} reproduces the voxel; "
                             "frames where the voxel or its reference lacks signal left out)")
        if not self.reliability.mask.any():
            raise ParameterError("no voxel passes the reliability mask (signal too low or all labels PRF-invalid)")
        self.drift_ref, self.drift_rule, self.auto_ref = masks.drift_reference(
            self.reliability.mask, p, self.affine, self.labels, roi, self.roi_info)
        self.anatomy = base_mag.mean(axis=0).astype(np.float32)
        self.k_rad_per_c = radians_per_celsius(self.te_s, self.b0_t, p.alpha_ppm_per_c)
        return tissue

    def _register_baseline(self, signals, image_mags, image_rel):
        """The baseline frames resampled into tissue coordinates and the reliability drawn from them."""
        xp, p = self.xp, self.params
        shifts = self.registration.register_entries(image_mags)
        tissue = [self.registration.warp(s, d) for s, d in zip(signals, shifts)]
        tissue_mags = [xp.abs(s) for s in tissue]
        self.registration.learn_own_magnitude(tissue_mags, image_rel.sigma)
        base_mag = np.stack([to_numpy(m) for m in tissue_mags]).astype(np.float64)
        self.reliability = masks.reliability_mask(
            base_mag, len(signals), self.te_s, self.b0_t, p, self.labels, self.table,
            noise=image_rel.noise_info)
        self.reliability.rules.insert(0, "tissue coordinates: every baseline frame resampled to the first one's "
                                         "position (in-plane registration) before these rules")
        return tissue, base_mag

    def _motion_mask_rules(self, used):
        rel = self.reliability
        if used == "referenceless" and not self.still.all():
            # Where an edge slides through a voxel, its phase mixes tissues (fat's chemical shift included) in
            # proportions that change per frame; without a matching baseline nothing separates that from heat.
            rel.mask = rel.mask & self.still
            rel.rules.append(f"referenceless: baseline magnitude SD <= {MOVING_SD_FACTOR:g} sigma (no sliding edge)")

    def _make_registration(self, first, image_rel):
        """Registration to the first baseline frame's position when motion is detected (or asked for)."""
        p = self.params
        on = p.register_motion == "on" or (p.register_motion == "auto" and self.reference_decision["motion_detected"])
        if not on:
            return None
        ref = self.xp.abs(first)
        weight = moving_tissue_weight(to_numpy(ref), self.labels, p.snr_threshold * image_rel.sigma)
        return MotionRegistration(ref, weight, self.xp)  # registration runs on the host (motion.py)

    def _make_engine(self, s_ref, saved_engine=None, water_fat=None):
        """The engine: the GPU plugin's on CuPy arrays, for every reference mode (they use only the
        :class:`~mrtherm.thermometry.engine.Engine` protocol), else the array engine; the water-fat engine around
        ``water_fat`` (a WaterFatThermometer). ``saved_engine``: the name of the engine a restored state was saved
        by; a state saved by the array engine on CuPy (before the fused engine served the library-free modes)
        resumes on it."""
        p = self.params
        self.model = DriftModel(self.shape, p.drift_order, self.xp)
        if water_fat is not None:
            from mrtherm.thermometry.waterfat_engine import WaterFatEngine  # noqa: PLC0415
            config = EngineConfig(mask=self.reliability.mask, ref=self.drift_ref, s_ref=s_ref, auto=False,
                                  outlier_rad=0.0, to_celsius=1.0, body_temp_c=p.body_temp_c,
                                  heated_c=p.auto_ref_heated_c)
            self.engine = WaterFatEngine(self.xp, self.model, config, water_fat)
            self.mask_device = from_numpy(self.reliability.mask, self.xp)
            self._neg_inf = self.xp.asarray(-np.inf, dtype=self.xp.float32)
            return
        config = EngineConfig(mask=self.reliability.mask, ref=self.drift_ref, s_ref=s_ref, auto=self.auto_ref,
                              outlier_rad=abs(p.auto_ref_outlier_c * self.k_rad_per_c),
                              to_celsius=p.phase_sign / self.k_rad_per_c, body_temp_c=p.body_temp_c,
                              heated_c=p.auto_ref_heated_c, valid_floor=p.snr_threshold * self.reliability.sigma,
                              valid_fraction=p.min_signal_fraction)
        plugin = gpu_plugin() if is_cupy_namespace(self.xp) and saved_engine != ArrayEngine.name else None
        engine_class = plugin.engine_class if plugin is not None else ArrayEngine
        self.engine = engine_class(self.xp, self.model, config)
        self.mask_device = from_numpy(self.reliability.mask, self.xp)
        self._neg_inf = self.xp.asarray(-np.inf, dtype=self.xp.float32)

    def _reset_history(self):
        self.frames_processed = 0
        self.times_s = []
        self.drift_coefficients = []
        self.reference_voxels = []
        self.fallback_frames = 0
        self.peak_curve_c = []
        self.invalid_voxels = []  # per frame: reliable voxels not measured (signal gone)
        self.reanchored_voxels = []  # per frame: voxels back from a gap, re-anchored
        self._temp_prev = None

    # ------------------------------------------------------------------ per frame
    def to_device(self, frame):
        """Upload a frame's parts ahead of :meth:`update` (pinned, asynchronous on CUDA engines).

        Parameters
        ----------
        frame : tuple of array or complex array, shape (z, y, x)
            As for :meth:`update`.

        Returns
        -------
        tuple
            ``(a, b, polar)`` with ``a`` and ``b`` on the engine's device; pass it to :meth:`update` as the frame.
        """
        a, b, polar = _parts(frame)
        if b is None:
            s = self._signal(a)
            return self.xp.real(s), self.xp.imag(s), False
        return (*self.engine.to_device(a, b), polar)

    def update(self, frame, time_s: float, reference=None, respiration=None):
        """Process the next frame: temperature, then dose, Tmax, baseline statistics and the watch.

        Parameters
        ----------
        frame : complex array, shape (z, y, x), or tuple ``(a, b, polar)``
            See the class.
        time_s : float
            s, strictly after the previous frame's time.
        reference : complex array, shape (z, y, x), optional
            Replaces ``S_ref`` from this frame on (a reference chosen outside; image position: it is registered
            with the frame).
        respiration : float, optional
            The frame's respiratory signal (bellows, navigator): library entries are matched on it when the
            baseline frames' values were given (``baseline_respiration``).

        Returns
        -------
        array of float32, shape (z, y, x)
            Temperature, C, NaN where masked or not measured in this frame (signal gone: per-frame validity).
            With motion registration in tissue coordinates (the first baseline frame's position), like the dose.
            It may live in a buffer the next update reuses (CUDA): copy it to keep it.

        Raises
        ------
        ParameterError
            ``time_s`` is not after the previous frame's.
        """
        t = self.frames_processed
        time_s = float(time_s)
        if self.times_s and not time_s > self.times_s[-1]:
            raise ParameterError(f"frame {t} time {time_s:g} s is not after the previous frame's "
                                 f"{self.times_s[-1]:g} s")
        a, b, polar = self.to_device(frame)  # no copy for frames already uploaded
        fr = self.frame_reference
        match = None
        if self.registration is not None:  # into tissue coordinates before anything else
            match = signal_from_parts(a, b, polar, self.xp)
            signal, shift = self._register(match, t, respiration)
            a, b, polar = self.xp.real(signal), self.xp.imag(signal), False
            if reference is not None:
                reference = self.registration.warp(self._device(reference), shift)
        else:
            signal = signal_from_parts(a, b, polar, self.xp) if fr is not None else None
        if reference is not None:
            self.engine.set_reference(reference)
        elif fr is not None:
            fr.choose(self.engine, signal, t, respiration, match=match)
        coeffs, counts = self._drift(a, b, polar, signal)
        dt_min = (time_s - self.times_s[-1]) / 60.0 if self.times_s else None
        temp = self.engine.pass2(coeffs, dt_min, t < self.params.baseline_frames)
        self._record(temp, coeffs, counts, time_s)
        if self.bioheat is not None:
            self.bioheat.update(to_numpy(temp), self._measurement_sd_c(), time_s, t >= self.params.baseline_frames)
        return temp

    def _measurement_sd_c(self):
        """Each voxel's temperature SD for the bioheat model: the noise prediction, raised to the median empirical
        baseline SD over the reliable voxels once the baseline is in."""
        cached = getattr(self, "_bioheat_sd_c", None)
        if cached is not None:  # fixed once the baseline is in: not rebuilt every frame
            return cached
        theory = self.temperature_sd_theory_c().astype(np.float64)
        if self.frames_processed < self.params.baseline_frames or self.params.baseline_frames < 2:
            return theory
        sd = to_numpy(self.temperature_sd_c())[self.reliability.mask]
        sd = sd[np.isfinite(sd)]
        self._bioheat_sd_c = np.maximum(theory, float(np.median(sd)) if sd.size else 0.0)
        return self._bioheat_sd_c

    def _register(self, image, t, respiration):
        """The frame resampled into tissue coordinates, and its shift; registration starts from the shifts of
        the library entries the frame matches.

        One device boundary: the image magnitude is computed once on the device, the library matches it there
        (its match ratios and blend weights come back as a few numbers, reused by ``choose``), and it goes to the
        host once for the Gauss-Newton registration; the shift comes back as two numbers and the frame is resampled
        on the device."""
        fr, reg = self.frame_reference, self.registration
        magnitude = self.xp.abs(image)
        start = None
        if fr is not None and fr.library is not None:
            chosen, blend = fr.match(t, respiration, magnitude)
            start = reg.start_for(chosen, blend)
        shift = reg.register(magnitude, start)
        return reg.uncovered(reg.warp(image, shift), self.params.min_signal_fraction), shift

    def _drift(self, a, b, polar, signal):
        stats = self.engine.pass1(a, b, polar)
        counts = stats[2].astype(np.int64)
        if not self.params.drift_correction or self.params.water_fat:  # water-fat: the drift is inside the fit
            return np.zeros((self.shape[0], self.model.k)), counts
        if self.frame_reference is not None and self.frame_reference.sparse:
            coeffs, fallback = self.frame_reference.background(self.engine, signal, self.model)
            self.fallback_frames += int(fallback.any())
            return coeffs, counts
        coeffs, fallback = solve_drift(*stats, self.model.k)
        if fallback.any():
            # Too few inliers in some slice (e.g. a sudden B0 jump): those slices use the reference without the
            # outlier exclusion.
            coeffs_all, _ = solve_drift(*self.engine.fallback_stats(), self.model.k)
            coeffs[fallback] = coeffs_all[fallback]
            self.fallback_frames += 1
        return coeffs, counts

    def _record(self, temp, coeffs, counts, time_s):
        xp = self.xp
        dt_s = time_s - self.times_s[-1] if self.times_s else 0.0
        valid, back = self.engine.frame_validity()
        parts = [xp.reshape(xp.max(xp.where(self.mask_device & valid, temp, self._neg_inf)), (1,)),
                 xp.reshape(xp.astype(xp.sum(xp.astype(self.mask_device & ~valid, xp.int64)), xp.float32), (1,)),
                 xp.reshape(xp.astype(xp.sum(xp.astype(back, xp.int64)), xp.float32), (1,))]
        if self.target is not None:
            parts += self.target.device_stats(temp)
        parts += self.watch.device_stats(temp, self._temp_prev, self.engine.dose_cem43_min(), dt_s)
        small = to_numpy(xp.concat(parts)).astype(np.float64)  # one small transfer per frame
        self.peak_curve_c.append(float(small[0]))
        self.invalid_voxels.append(int(small[1]))
        self.reanchored_voxels.append(int(small[2]))
        watch_from = 3
        if self.target is not None:
            self.target.record(small[3:5])
            watch_from = 5
        self.watch.record(small[watch_from:])
        self.drift_coefficients.append(np.asarray(coeffs, dtype=np.float64))
        self.reference_voxels.append(counts)
        self.times_s.append(time_s)
        self._temp_prev = temp
        self.frames_processed += 1

    # ------------------------------------------------------------------ current maps
    @property
    def dose_cem43_min(self):
        """CEM43 minutes so far, ``(z, y, x)`` float64, NaN where masked or never measured.

        Accumulated over the segments between two frames in which the voxel was valid (a lower bound where
        frames were lost: :attr:`measured_frames`). With motion registration in tissue coordinates (the first
        baseline frame's position).
        """
        xp = self.xp
        measured = self.mask_device & (self.engine.measured_frames() > 0)
        return xp.where(measured, self.engine.dose_cem43_min(), xp.asarray(float("nan"), dtype=xp.float64))

    @property
    def measured_frames(self):
        """Frames in which each voxel was measured, ``(z, y, x)`` int32 (0 outside the mask)."""
        return self.engine.measured_frames()

    @property
    def tmax_c(self):
        """Maximum temperature so far over the frames where the voxel was measured, ``(z, y, x)`` float32 C
        (NaN where never measured; None before the first frame); tissue coordinates with motion registration."""
        if not self.frames_processed:
            return None
        return self.engine.tmax_c()

    def temperature_sd_c(self):
        """Empirical temperature SD over the baseline frames x sqrt(1 + 1/N).

        Returns
        -------
        array of float32, shape (z, y, x)
            C, NaN where masked, with one baseline frame, and until every baseline frame is in.
        """
        xp, n = self.xp, self.params.baseline_frames
        if n < 2 or self.frames_processed < n:
            return xp.full(self.shape, float("nan"), dtype=xp.float32)
        # each voxel over the baseline frames in which it was valid (NaN with fewer than 2)
        total, total_sq, count = self.engine.baseline_stats()
        count = xp.astype(count, xp.float64)
        enough = count >= 2
        safe = xp.where(enough, count, 2.0)
        mean = total / safe
        var = xp.maximum(total_sq - safe * mean * mean, 0.0) / (safe - 1.0)
        # sqrt(1 + 1/N): the SD of one frame's temperature once the noisy N-frame reference is subtracted.
        sd = xp.astype(xp.sqrt(var) * math.sqrt(1.0 + 1.0 / n), xp.float32)
        return xp.where(self.mask_device & enough, sd, xp.asarray(float("nan"), dtype=xp.float32))

    def temperature_sd_theory_c(self) -> np.ndarray:
        """Noise-predicted temperature SD.

        Returns
        -------
        ndarray of float32, shape (z, y, x)
            C, NaN where masked (host array).
        """
        return np.where(self.reliability.mask, self.reliability.sd_theory_c, np.nan).astype(np.float32)

    def protected_structures(self):
        """The protected-structure table and the alarms so far.

        Returns
        -------
        rows : list of dict
        alarms : list of dict
            See :meth:`mrtherm.thermometry.watch.ProtectedWatch.rows_and_alarms`.
        """
        rows, alarms = self.watch.rows_and_alarms(self.times_s)
        if self.bioheat is not None:  # the model's watch too, every row and alarm marked "source": "model"
            model_rows, model_alarms = self.bioheat.rows_and_alarms()
            rows, alarms = rows + model_rows, sorted(alarms + model_alarms, key=lambda a: (a["time_s"], a["structure"]))
        return rows, alarms

    # ------------------------------------------------------------------ state
    def save_state(self, path) -> str:
        """Write the complete state to ``path`` (``.npz``; temporary name, then rename).

        Parameters
        ----------
        path : str or PathLike

        Returns
        -------
        str
            ``path``.

        Examples
        --------
        >>> import os, tempfile
        >>> import mrtherm
        >>> ph = mrtherm.make_phantom(shape_zyx=(2, 32, 32), n_frames=6)
        >>> frames = [(ph.magnitude[t], ph.phase_rad[t], True) for t in range(6)]
        >>> th = mrtherm.Thermometer(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t, frames[:3],
        ...                          mrtherm.ThermometryParams(baseline_frames=3))
        >>> for t in range(4):
        ...     _ = th.update(frames[t], ph.frame_times_s[t])
        >>> path = th.save_state(os.path.join(tempfile.mkdtemp(), "state.npz"))
        >>> resumed = mrtherm.Thermometer.load_state(path)
        >>> for t in range(4, 6):
        ...     _ = resumed.update(frames[t], ph.frame_times_s[t])
        >>> resumed.frames_processed
        6
        """
        path = os.fspath(path)
        arrays = {f"engine_{k}": v for k, v in self.engine.state().items()}
        arrays.update({f"watch_state_{k}": v for k, v in self.watch.state().items()})
        arrays.update(mask=self.reliability.mask, snr=self.reliability.snr, sd_theory=self.reliability.sd_theory_c,
                      drift_ref=self.drift_ref, anatomy=self.anatomy, still=self.still,
                      times_s=np.asarray(self.times_s),
                      peak_curve=np.asarray(self.peak_curve_c),
                      invalid_voxels=np.asarray(self.invalid_voxels, dtype=np.int64),
                      reanchored_voxels=np.asarray(self.reanchored_voxels, dtype=np.int64),
                      drift_coefficients=np.asarray(self.drift_coefficients).reshape(-1, self.shape[0], self.model.k),
                      reference_voxels=np.asarray(self.reference_voxels, dtype=np.int64).reshape(-1, self.shape[0]),
                      affine=self.affine)
        if self.labels is not None:
            arrays["labels"] = self.labels
        if self.frame_reference is not None:
            arrays.update({f"frameref_{k}": v for k, v in self.frame_reference.state().items()})
        if self.registration is not None:
            arrays.update({f"motion_{k}": v for k, v in self.registration.state().items()})
        if self.target is not None:
            arrays.update({f"target_{k}": v for k, v in self.target.state().items()})
        if self.bioheat is not None:
            arrays.update({f"bioheat_{k}": v for k, v in self.bioheat.state().items()})
        meta = {"version": STATE_VERSION, "params": dataclasses.asdict(self.params), "shape": self.shape,
                "te_s": self.te_s, "te_echoes_s": self.te_echoes_s, "b0_t": self.b0_t,
                "backend": self.backend_used, "engine": self.engine.name,
                "frames_processed": self.frames_processed, "fallback_frames": self.fallback_frames,
                "sigma": self.reliability.sigma, "sigma_method": self.reliability.sigma_method,
                "noise_info": self.reliability.noise_info,
                "mask_rules": self.reliability.rules,
                "mask_warnings": self.reliability.warnings, "drift_rule": self.drift_rule, "auto_ref": self.auto_ref,
                "label_info": self.label_info, "roi_info": self.roi_info, "table": self.table.to_json(),
                "reference_decision": self.reference_decision,
                "target": None if self.target is None else [list(self.target.target_mm), self.target.source],
                "warnings": self.warnings}
        arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        with atomic_file(path) as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load_state(cls, path, backend=None):
        """A Thermometer continuing from :meth:`save_state`; the final dose is bit-identical to an uninterrupted run.

        Parameters
        ----------
        path : str or PathLike
            A file written by :meth:`save_state`.
        backend : {None, "numpy", "cupy", "auto"}
            None: the backend that saved the state. A state resumes on the same kind of engine (the CUDA engine
            keeps its state in another layout than the array engine).

        Returns
        -------
        Thermometer

        Raises
        ------
        InputFileError
            Not a state file, or one of another version.
        ParameterError
            The state was saved by another engine than ``backend`` gives.
        BackendUnavailableError
            The state needs a GPU and none is usable.
        """
        from mrtherm.errors import InputFileError  # noqa: PLC0415
        try:
            with np.load(os.fspath(path)) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(arrays.pop("meta_json").tobytes().decode("utf-8"))
        except (OSError, ValueError, KeyError) as exc:
            raise InputFileError(path, f"not a Thermometer state file ({exc})") from None
        if meta.get("version") != STATE_VERSION:
            raise InputFileError(path, f"state version {meta.get('version')} is not {STATE_VERSION}")
        saved = "cupy" if meta["backend"] == "cupy" else "numpy"
        self = cls.__new__(cls)
        self._restore_static(meta, arrays, saved if backend is None else backend)
        if self.engine.name != meta["engine"]:
            raise ParameterError(f"the state was saved by the {meta['engine']} engine; resume it with "
                                 f"backend={saved!r}")
        self.engine.restore({k[7:]: v for k, v in arrays.items() if k.startswith("engine_")})
        self.watch.restore({k[12:]: v for k, v in arrays.items() if k.startswith("watch_state_")})
        self._restore_history(meta, arrays)
        self.bioheat = None
        if self.params.bioheat:
            from mrtherm.thermometry.bioheat_track import BioheatTrack  # noqa: PLC0415
            state = {k[8:]: v for k, v in arrays.items() if k.startswith("bioheat_")}
            self.bioheat = BioheatTrack(self, fine_labels=state["fine_labels"])
            self.bioheat.restore(state)
        return self

    def _restore_static(self, meta, arrays, backend):
        params = dict(meta["params"])
        params["dose_levels_cem43_min"] = tuple(params["dose_levels_cem43_min"])
        self.params = ThermometryParams(**params)
        self.shape, self.affine = tuple(meta["shape"]), arrays["affine"]
        self.te_s, self.b0_t = meta["te_s"], meta["b0_t"]
        self.te_echoes_s = None if meta.get("te_echoes_s") is None else tuple(meta["te_echoes_s"])
        self.backend_used = resolve_backend(backend)
        self.xp = compute_namespace(self.backend_used)
        from mrtherm.io.labels import LabelClass  # noqa: PLC0415
        self.table = labels_mod.LabelTable([LabelClass(c["value"], c["name"], c["prf_valid"], c["acoustic_role"],
                                                       None if c.get("thermal") is None
                                                       else tuple(sorted(c["thermal"].items())))
                                            for c in meta["table"]])
        self.labels = arrays.get("labels")
        self.label_info, self.roi_info = meta["label_info"], meta["roi_info"]
        self.reliability = masks.Reliability(arrays["mask"], arrays["snr"], arrays["sd_theory"], meta["sigma"],
                                             meta["sigma_method"], meta["mask_rules"],
                                             list(meta["mask_warnings"]), meta.get("noise_info"))
        self.drift_ref, self.drift_rule, self.auto_ref = arrays["drift_ref"], meta["drift_rule"], meta["auto_ref"]
        self.anatomy = arrays["anatomy"]
        self.still = arrays["still"]
        self.k_rad_per_c = radians_per_celsius(self.te_s, self.b0_t, self.params.alpha_ppm_per_c)
        self.reference_decision = meta["reference_decision"]
        fit = None
        if self.params.water_fat:
            from mrtherm.thermometry.waterfat import WaterFatThermometer  # noqa: PLC0415
            fit = WaterFatThermometer.from_state({k[10:]: v for k, v in arrays.items() if k.startswith("engine_wf_")},
                                                 self._fit_backend())
        self._make_engine(arrays["engine_s_ref"], meta["engine"], water_fat=fit)
        used = self.reference_decision["used"]
        fr_state = {k[9:]: v for k, v in arrays.items() if k.startswith("frameref_")}
        self.frame_reference = FrameReference.from_state(fr_state, used, self.reliability.sigma,
                                                         self.params, self.xp, from_numpy(self.still, self.xp)) \
            if fr_state else None
        motion = {k[7:]: v for k, v in arrays.items() if k.startswith("motion_")}
        self.registration = MotionRegistration.from_state(motion, self.xp) if motion else None
        self.watch = ProtectedWatch(self.labels, self.reliability.mask, self.table, self.xp, self.params)
        self.target = self._make_target(*(meta["target"] or (None, None)))
        if self.target is not None:
            self.target.restore({k[7:]: v for k, v in arrays.items() if k.startswith("target_")})
        self.warnings = list(meta["warnings"])

    def _restore_history(self, meta, arrays):
        self.frames_processed = int(meta["frames_processed"])
        self.fallback_frames = int(meta["fallback_frames"])
        self.times_s = [float(v) for v in arrays["times_s"]]
        self.peak_curve_c = [float(v) for v in arrays["peak_curve"]]
        self.invalid_voxels = [int(v) for v in arrays["invalid_voxels"]]
        self.reanchored_voxels = [int(v) for v in arrays["reanchored_voxels"]]
        self.drift_coefficients = list(arrays["drift_coefficients"])
        self.reference_voxels = list(arrays["reference_voxels"])
        prev = arrays.get("engine_temp_prev")
        self._temp_prev = None if prev is None else from_numpy(prev, self.xp)
