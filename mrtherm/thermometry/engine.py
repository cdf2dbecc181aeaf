"""Per-frame thermometry work behind one interface, so a fused GPU engine can replace it.

:class:`ArrayEngine` is the reference implementation in array-API operations
(NumPy, CuPy, array-api-strict). ``mrtherm_gpu.FusedEngine`` implements the same
two passes as two CUDA kernels. Per frame the pipeline calls

1. :meth:`pass1` -- phase change against the baseline, temporal unwrapping,
   and the drift fit's per-slice normal equations (returned to the host);
   :meth:`fallback_stats` gives them without the outlier exclusion, for
   slices where too few inliers remain;
2. :meth:`pass2` -- drift subtraction with the solved coefficients, PRF
   conversion, masking, exact CEM43 increment, Tmax, baseline statistics and
   the "already changed" flags of the automatic drift reference.

**Per-frame validity.** A reliable voxel is measured in a frame only while its
signal is there: ``|S_t| >= valid_floor`` (the SNR threshold times the noise
SD), ``|S_t| >= valid_fraction |S_ref|`` (a gas pocket or a signal void that
slides in darkens it far below its reference) and ``|S_ref| >= valid_floor``
(the reference itself holds signal: a library entry in another breathing state
may not). An invalid voxel is NaN in that frame's temperature, adds no dose
(CEM43 accrues only over segments between two valid frames) and leaves Tmax as
it was. Its wrap count does not cross the gap: a voxel valid again after one
or more invalid frames (or valid for the first time) is *re-anchored*: it takes
the multiple of 2 pi that brings its phase change nearest the mean of the
continuously tracked voxels next to it in-plane (3 x 3), or, without any, within
two voxels (5 x 5), or none when no such neighbour exists. Re-anchored voxels
are counted per frame; they and invalid voxels stay out of that frame's drift
fit.

Every engine satisfies the :class:`Engine` protocol, which declares everything its
callers use: besides the two passes it uploads frames (:meth:`~Engine.to_device`),
accepts a new complex reference per frame (:meth:`~Engine.set_reference`, for
baseline libraries and referenceless references), gives the inputs of the
sparse background fit (:meth:`~Engine.fit_inputs`, :meth:`~Engine.drift_candidates`,
:meth:`~Engine.changed_flags`), its accumulators (:meth:`~Engine.dose_cem43_min`,
:meth:`~Engine.tmax_c`, :meth:`~Engine.measured_frames`, :meth:`~Engine.baseline_stats`)
and exports / restores its whole state as host arrays (:meth:`~Engine.state`,
:meth:`~Engine.restore`) so a run resumes bit-identically. So every reference mode
runs on every engine. The drift model is the caller's (the Thermometer passes it
where it is needed), not read off the engine. The CUDA engine keeps its flags in
one byte per voxel (bit 1 reliable, 2 drift-reference candidate, 4 changed
earlier, 8 valid in this frame, 16 tracked continuously, 32 re-anchored in this
frame); this one keeps arrays.
"""

from __future__ import annotations

import math

import numpy as np

from mrtherm.backend import from_numpy, namespace, to_numpy
from mrtherm.io.signal import signal_from_parts  # noqa: F401 -- re-exported (the Thermometer's import)
from mrtherm.thermometry.dose import cem43_segment
from mrtherm.thermometry.engine_protocol import Engine, EngineConfig, protocol_members  # noqa: F401 -- re-exported
from mrtherm.thermometry.motion import shift_whole_voxels
from mrtherm.thermometry.prf import phase_difference, unwrap_step

FLAG_MASK, FLAG_REF = 1, 2
ANCHOR_RADII_VOX = (1, 2)
"""Re-anchoring windows, in-plane half-widths: the 3 x 3 neighbours when any is tracked (1-1.4 voxels away, so a
heat gradient below ~28 C per voxel keeps their mean within half a wrap, 39 C at 3 T and TE 10 ms, of the voxel),
else 5 x 5 (a voxel inside a small gas pocket reaches the tissue around it)."""


def normal_equations_on_host(model, phase, weight) -> tuple:
    """``model.normal_equations(phase, weight)`` on the host, in one transfer from a device.

    Parameters
    ----------
    model : mrtherm.thermometry.drift.DriftModel
    phase : real array, shape (z, y, x)
        rad, in the model's array library.
    weight : real array, shape (z, y, x)
        >= 0, in the model's array library.

    Returns
    -------
    packed, rhs, count : ndarray of float64, shapes (z, n_pairs), (z, k), (z,)
        The model's values (see :func:`stats_to_host`).
    """
    return stats_to_host(*model.normal_equations(phase, weight), model.xp)


def stats_to_host(packed, rhs, count, xp) -> tuple:
    """Per-slice normal equations on the host: one concatenated download instead of three (NumPy: as they are).

    Parameters
    ----------
    packed, rhs : float64 arrays, shapes (z, n_pairs), (z, k)
    count : float64 array, shape (z,)
    xp : array namespace of the three

    Returns
    -------
    packed, rhs, count : ndarray of float64
        The same values on the host.
    """
    if isinstance(packed, np.ndarray):
        return packed, rhs, count
    n, k = packed.shape[1], rhs.shape[1]
    host = to_numpy(xp.concat([packed, rhs, xp.reshape(count, (-1, 1))], axis=1))
    return (np.ascontiguousarray(host[:, :n]), np.ascontiguousarray(host[:, n:n + k]),
            np.ascontiguousarray(host[:, n + k]))


class ArrayEngine:
    """Reference engine in array-API operations.

    Parameters
    ----------
    xp : array namespace of the computation
    model : mrtherm.thermometry.drift.DriftModel
    config : EngineConfig
    """

    name = "array-api"

    def __init__(self, xp, model, config: EngineConfig):
        self.xp, self.model = xp, model
        c = config
        self.shape = tuple(c.mask.shape)
        self.mask = from_numpy(np.ascontiguousarray(c.mask), xp)
        self.ref = from_numpy(np.ascontiguousarray(c.ref, dtype=np.float64), xp)
        self._candidates = from_numpy(np.ascontiguousarray(c.ref, dtype=bool), xp)
        self.s_ref = self._on_device(c.s_ref, xp.complex64)
        self._ref_phase = None
        self._ref_mag2 = None
        self.auto, self.outlier_rad = bool(c.auto), float(c.outlier_rad)
        self.to_celsius, self.body_temp_c, self.heated_c = float(c.to_celsius), float(c.body_temp_c), float(c.heated_c)
        self.floor2, self.fraction2 = float(c.valid_floor) ** 2, float(c.valid_fraction) ** 2
        self.changed = xp.zeros(self.shape, dtype=xp.bool)
        self.dose = xp.zeros(self.shape, dtype=xp.float64)
        self.tmax = None
        self.base_sum = xp.zeros(self.shape, dtype=xp.float64)
        self.base_sumsq = xp.zeros(self.shape, dtype=xp.float64)
        self.base_count = xp.zeros(self.shape, dtype=xp.int32)
        self.valid_frames = xp.zeros(self.shape, dtype=xp.int32)
        self.u = None
        self.valid = None  # this frame's validity
        self.reanchored = None
        self.fit_valid = None  # voxels this frame's drift fit may use: tracked continuously (or valid, first frame)
        self.temp_prev = None
        self.drift_prev = xp.zeros(self.shape, dtype=xp.float64)
        self._fallback_weight = None
        self._nan = xp.asarray(float("nan"), dtype=xp.float32)

    def _on_device(self, a, dtype=None):
        """``a`` in this engine's namespace (host arrays copied in; same-namespace arrays as they are)."""
        xp = self.xp
        out = a if namespace(a) is xp else from_numpy(to_numpy(a), xp)
        return out if dtype is None else xp.astype(out, dtype)

    def to_device(self, a, b):
        """The two frame components on the engine's device.

        Parameters
        ----------
        a, b : array, shape (z, y, x)

        Returns
        -------
        tuple of array
            Both arrays in the engine's array library.
        """
        return self._on_device(a), self._on_device(b)

    def set_reference(self, s_ref):
        """Use ``s_ref`` as the reference from the next frame on.

        Parameters
        ----------
        s_ref : complex array, shape (z, y, x)
            Any array library; stored as complex64 in this engine's library. Its magnitude is the voxel's
            reference signal for the validity rule (module docstring).
        """
        self.s_ref = self._on_device(s_ref, self.xp.complex64)
        self._ref_phase = None  # recomputed from the new reference on the next polar frame
        self._ref_mag2 = None

    def enable_timing(self):
        """Kernel timing exists only for CUDA engines."""

    def kernel_seconds(self) -> dict:
        """Kernel time per pass, s (empty without CUDA timing).

        Returns
        -------
        dict
            Always empty for this engine.
        """
        return {}

    _STATE = ("s_ref", "changed", "dose", "tmax", "base_sum", "base_sumsq", "base_count", "valid_frames", "u",
              "valid", "temp_prev", "drift_prev")

    def state(self) -> dict:
        """Every array that carries over between frames, as host arrays.

        Returns
        -------
        dict of str to ndarray
            Reference, changed flags, dose, Tmax, baseline sums and counts, valid-frame counts, last unwrapped phase
            and validity, temperature and drift; arrays not yet set (before the first frame) are absent.
        """
        return {k: to_numpy(getattr(self, k)) for k in self._STATE if getattr(self, k) is not None}

    def restore(self, state: dict):
        """Continue from :meth:`state` of an engine built with the same configuration.

        Parameters
        ----------
        state : dict of str to ndarray
            Accumulators (dose, Tmax, baseline sums, previous temperature and drift); missing keys become None.
        """
        for k in self._STATE:
            setattr(self, k, from_numpy(np.asarray(state[k]), self.xp) if k in state else None)
        self._ref_phase = None
        self._ref_mag2 = None
        self.reanchored = None if self.valid is None else self.xp.zeros(self.shape, dtype=self.xp.bool)

    def frame_validity(self):
        """The last frame's validity (see :class:`Engine`).

        Returns
        -------
        valid, reanchored : bool arrays, shape (z, y, x)
        """
        return self.valid, self.reanchored

    def drift_candidates(self):
        """The drift-reference region (see :meth:`Engine.drift_candidates`).

        Returns
        -------
        bool array, shape (z, y, x)
        """
        return self._candidates

    def changed_flags(self):
        """Voxels changed by more than ``heated_c`` in an earlier frame (see :meth:`Engine.changed_flags`).

        Returns
        -------
        bool array, shape (z, y, x)
        """
        return self.changed

    def dose_cem43_min(self):
        """CEM43 minutes accumulated so far (see :meth:`Engine.dose_cem43_min`).

        Returns
        -------
        array of float64, shape (z, y, x)
        """
        return self.dose

    def tmax_c(self):
        """Maximum temperature over the valid frames so far, C (see :meth:`Engine.tmax_c`).

        Returns
        -------
        array of float32, shape (z, y, x), or None
            None before the first frame.
        """
        return self.tmax

    def measured_frames(self):
        """Frames in which each voxel was valid (see :meth:`Engine.measured_frames`).

        Returns
        -------
        array of int32, shape (z, y, x)
        """
        return self.valid_frames

    def baseline_stats(self):
        """Baseline sums of the temperature change and its square, and their frame counts (see
        :meth:`Engine.baseline_stats`).

        Returns
        -------
        total, total_sq : arrays of float64, shape (z, y, x)
        count : array of int32, shape (z, y, x)
        """
        return self.base_sum, self.base_sumsq, self.base_count

    def pass1(self, a, b, polar: bool):
        """Phase change, validity, unwrapping (re-anchoring after gaps) and the drift fit's normal equations.

        In automatic mode the reference excludes this frame's outliers; see
        :meth:`fallback_stats` for the statistics without that exclusion.

        Parameters
        ----------
        a, b : array, shape (z, y, x)
            (magnitude, phase rad) when ``polar``, else (real, imag).
        polar : bool

        Returns
        -------
        tuple of ndarray
            ``(packed, rhs, count)`` on the host, shapes (z, n_pairs), (z, k), (z,).
        """
        xp = self.xp
        if polar:
            dphi, w = self._polar_change(a, b)
        else:
            s = signal_from_parts(a, b, polar, xp)
            dphi = phase_difference(s, self.s_ref)
            w = xp.astype(xp.real(s), xp.float64) ** 2 + xp.astype(xp.imag(s), xp.float64) ** 2
        valid = self._validity(w)
        self._unwrap(dphi, valid)
        fit = w * self.ref * xp.astype(self.fit_valid, xp.float64)
        if self.auto:
            self._fallback_weight = fit * xp.astype(~self.changed, xp.float64)
            inlier = xp.astype(xp.abs(xp.astype(self.u, xp.float64) - self.drift_prev) < self.outlier_rad, xp.float64)
            return normal_equations_on_host(self.model, self.u, self._fallback_weight * inlier)
        self._fallback_weight = fit
        return normal_equations_on_host(self.model, self.u, self._fallback_weight)

    def _validity(self, mag2):
        """Reliable voxels whose signal is there in this frame (module docstring); ``mag2`` is ``|S_t|^2``."""
        xp = self.xp
        if self._ref_mag2 is None:  # in float64, as the CUDA kernel (no float32 rounding at the floor)
            self._ref_mag2 = xp.astype(xp.real(self.s_ref), xp.float64) ** 2 + \
                xp.astype(xp.imag(self.s_ref), xp.float64) ** 2
        return self.mask & (mag2 >= self.floor2) & (mag2 >= self.fraction2 * self._ref_mag2) & \
            (self._ref_mag2 >= self.floor2)

    def _unwrap(self, dphi, valid):
        """Temporal unwrapping of voxels tracked since the last frame; re-anchoring of voxels back from a gap."""
        xp = self.xp
        if self.u is None:  # first frame: the phase change itself
            self.u, self.valid, self.fit_valid = dphi, valid, valid
            self.reanchored = xp.zeros(self.shape, dtype=xp.bool)
            return
        tracked = valid & self.valid
        back = valid & ~self.valid
        u = xp.where(tracked, unwrap_step(dphi, self.u), dphi)
        if bool(xp.any(back)):
            u = xp.where(back, self._anchor(dphi, u, tracked), u)
        self.u, self.valid, self.fit_valid, self.reanchored = xp.astype(u, xp.float32), valid, tracked, back

    def _anchor(self, dphi, u, tracked):
        """``dphi`` plus the multiple of 2 pi nearest the mean ``u`` of the tracked voxels in the 3 x 3 window, or
        the 5 x 5 one without any (``dphi`` itself where neither holds one)."""
        xp = self.xp
        weight = xp.astype(tracked, xp.float64)
        values = xp.where(tracked, xp.astype(u, xp.float64), 0.0)
        near, far = (box_sum_inplane(values, r, xp) for r in ANCHOR_RADII_VOX)
        n_near, n_far = (box_sum_inplane(weight, r, xp) for r in ANCHOR_RADII_VOX)
        total, n = xp.where(n_near > 0, near, far), xp.where(n_near > 0, n_near, n_far)
        mean = total / xp.where(n > 0, n, 1.0)
        two_pi = 2.0 * math.pi
        k = xp.where(n > 0, xp.round((mean - xp.astype(dphi, xp.float64)) / two_pi), 0.0)
        return xp.astype(xp.astype(dphi, xp.float64) + two_pi * k, xp.float32)

    def _polar_change(self, mag, phase):
        """Phase change and ``|S|^2`` of a (magnitude, phase) frame without forming complex numbers.

        ``angle(S conj(S_ref))`` is the phase difference wrapped into [-pi, pi); where ``S`` or ``S_ref`` is 0 or
        not finite the product is 0 and so is its angle (as :func:`signal_from_parts` would give).
        """
        xp = self.xp
        if self._ref_phase is None:
            self._ref_phase = xp.atan2(xp.imag(self.s_ref), xp.real(self.s_ref))
            self._ref_live = xp.abs(self.s_ref) > 0
        live = xp.isfinite(mag) & xp.isfinite(phase) & (mag != 0) & self._ref_live
        mag = xp.where(live, mag, xp.zeros_like(mag))
        d = xp.where(live, phase - self._ref_phase, xp.zeros_like(phase))
        two_pi = 2.0 * math.pi
        dphi = xp.astype(d - two_pi * xp.floor((d + math.pi) / two_pi), xp.float32)
        m64 = xp.astype(mag, xp.float64)
        return dphi, m64 * m64

    def fit_inputs(self):
        """The last :meth:`pass1`'s unwrapped phase change and its fit weights (no outlier exclusion).

        Returns
        -------
        u : array of float, shape (z, y, x)
            rad.
        weight : array of float64, shape (z, y, x)
            ``|S|^2`` in the drift reference region on voxels tracked since the last frame (changed voxels out
            in automatic mode), 0 elsewhere.
        """
        return self.u, self._fallback_weight

    def fallback_stats(self):
        """Statistics of the last :meth:`pass1` without the outlier exclusion (computed only when asked).

        Returns
        -------
        tuple of ndarray
            ``(packed, rhs, count)`` on the host, as :meth:`pass1`.
        """
        return normal_equations_on_host(self.model, self.u, self._fallback_weight)

    def pass2(self, coeffs: np.ndarray, dt_min: float | None, is_baseline: bool):
        """Temperature frame after updating the accumulators.

        Parameters
        ----------
        coeffs : ndarray of float64, shape (z, k)
            Drift coefficients per slice, rad.
        dt_min : float or None
            Minutes since the previous frame; None for the first frame.
        is_baseline : bool
            Add this frame's temperature change to the baseline sums (temporal SD).

        Returns
        -------
        array of float32, shape (z, y, x)
            Temperature, C, NaN where not valid in this frame. Dose (exact piecewise-linear CEM43 over the
            segment from the previous frame, where both ends are valid), Tmax (over valid frames) and the
            changed flags are updated.
        """
        xp = self.xp
        drift = self.model.evaluate(coeffs)
        delta = xp.astype((xp.astype(self.u, xp.float64) - drift) * self.to_celsius, xp.float32)
        temp = xp.where(self.valid, delta + self.body_temp_c, self._nan)
        if self.temp_prev is not None:
            with np.errstate(over="ignore", invalid="ignore"):  # R**(43-T) overflows only above ~1067 C (capped)
                seg = cem43_segment(self.temp_prev, temp, float(dt_min))
            self.dose = self.dose + xp.where(xp.isnan(seg), 0.0, seg)  # no dose across an invalid frame
        self.tmax = temp if self.tmax is None else \
            xp.where(xp.isnan(self.tmax), temp, xp.where(xp.isnan(temp), self.tmax, xp.maximum(self.tmax, temp)))
        self.changed = self.changed | (self.valid & (xp.abs(delta) > self.heated_c))
        self.valid_frames = self.valid_frames + xp.astype(self.valid, xp.int32)
        if is_baseline:
            d64 = xp.where(self.valid, xp.astype(delta, xp.float64), 0.0)
            self.base_sum = self.base_sum + d64
            self.base_sumsq = self.base_sumsq + d64 * d64
            self.base_count = self.base_count + xp.astype(self.valid, xp.int32)
        self.temp_prev = temp
        self.drift_prev = drift
        return temp


def box_sum_inplane(vol, radius: int, xp):
    """Sum over the ``(2 radius + 1)^2`` in-plane window around every voxel (zero outside the slice).

    Parameters
    ----------
    vol : real array, shape (z, y, x)
    radius : int
        Half-width, voxels.
    xp : array namespace

    Returns
    -------
    array, shape (z, y, x), the dtype of ``vol``

    Examples
    --------
    >>> import numpy as np
    >>> box_sum_inplane(np.ones((1, 3, 4)), 1, np)[0].tolist()
    [[4.0, 6.0, 6.0, 4.0], [6.0, 9.0, 9.0, 6.0], [4.0, 6.0, 6.0, 4.0]]
    """
    taps = range(-radius, radius + 1)
    rows = sum(shift_whole_voxels(vol, 0, k, xp, 0) for k in taps)  # along x, then y: separable
    return sum(shift_whole_voxels(rows, k, 0, xp, 0) for k in taps)
