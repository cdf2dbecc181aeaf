"""Fused CUDA engine for the thermometry pipeline (same interface as ``mrtherm.thermometry.engine.ArrayEngine``).

Two kernels per frame (``kernels/thermometry.cu``):

- ``unwrap_accumulate_o{order}``: phase change, temporal unwrap, and the drift
  fit's normal equations reduced per slice as weighted moments (warp shuffles,
  shared and global double atomics). Only ``nz * Q`` doubles (Q <= 22) go to the
  host, where the moments are spread into the packed normal matrix.
  ``accumulate_fallback_o{order}`` gives the same without the outlier exclusion,
  launched only for a frame whose automatic-reference fit falls back.
- ``reanchor``: voxels valid again after a gap (per-frame validity, see
  :mod:`mrtherm.thermometry.engine`) take the 2 pi multiple nearest their
  tracked neighbours' mean.
- ``temperature_dose_o{order}``: drift subtraction, PRF, per-frame validity,
  exact CEM43 increment between valid frames, Tmax, baseline sums and changed
  flags, in one pass.

Frames read from files are copied into pinned host buffers and uploaded on a
separate stream, so the upload of frame t+1 overlaps the kernels of frame t.

The rest of the :class:`mrtherm.thermometry.engine.Engine` protocol -- the
sparse background fit's inputs (:meth:`FusedEngine.fit_inputs`), the drift
region and changed flags, the accumulators -- is read from the engine's own
device buffers with CuPy array operations (no extra kernel, nothing leaves the
device), mirroring ``ArrayEngine`` step by step; so the library, referenceless and
hybrid reference modes run on this engine as the mean reference does.
"""

from __future__ import annotations

import math

import numpy as np

from mrtherm.thermometry.engine import FLAG_MASK, FLAG_REF, EngineConfig

# kernels/thermometry.cu: changed earlier; valid in this frame; tracked since the last frame; re-anchored in it
FLAG_CHANGED, FLAG_VALID, FLAG_TRACKED, FLAG_BACK = 4, 8, 16, 32

from .kernels_loader import load_module

BLOCK = 256
# the kernels' block reductions shuffle with the full warp mask: every warp of a block must be complete
assert BLOCK % 32 == 0, "BLOCK must be a multiple of the warp size (32) for the full-mask shuffles"
PIXELS_PER_THREAD_REDUCE = 4
# the unwrap kernels are compiled with __launch_bounds__(256, ...): a larger block would not launch
assert BLOCK <= 256, "BLOCK must not exceed the unwrap kernels' __launch_bounds__ (256)"

# monomial exponents (of x, y) of the kernels' moments, in their order; the first K are the basis itself
MOMENT_EXPONENTS = ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2),
                    (3, 0), (2, 1), (1, 2), (0, 3), (4, 0), (3, 1), (2, 2), (1, 3), (0, 4))
N_MOMENTS = {1: 1, 3: 6, 6: 15}


def pair_moment_index(k: int) -> np.ndarray:
    """For each packed upper-triangle pair (i, j) of a K-term basis, the index of the moment ``a_i a_j``."""
    index = {e: m for m, e in enumerate(MOMENT_EXPONENTS[:N_MOMENTS[k]])}
    basis = MOMENT_EXPONENTS[:k]
    return np.array([index[(basis[i][0] + basis[j][0], basis[i][1] + basis[j][1])]
                     for i in range(k) for j in range(i, k)])


class FusedEngine:
    """CUDA engine (the :class:`mrtherm.thermometry.engine.Engine` protocol); arguments as ``ArrayEngine``.

    The temperature frame returned by :meth:`pass2` lives in one of two
    rotating device buffers: copy it if it must outlive the next frame.
    """

    name = "fused CUDA"

    def __init__(self, xp, model, config: EngineConfig):
        import cupy as cp
        import cupyx

        self.cp = cp
        self.xp = xp
        mask, ref = config.mask, config.ref
        nz, ny, nx = (int(v) for v in mask.shape)
        self.shape = (nz, ny, nx)
        self.k = model.k
        self.n_moments = N_MOMENTS[self.k]
        self.q = self.n_moments + self.k + 1
        self.n_pairs = self.k * (self.k + 1) // 2
        self._pair_moment = pair_moment_index(self.k)
        flags = (np.asarray(mask, bool).astype(np.uint8) * FLAG_MASK) | (np.asarray(ref, bool).astype(np.uint8) * FLAG_REF)
        self.flags = cp.asarray(np.ascontiguousarray(flags))
        self.set_reference(config.s_ref)
        self.auto = bool(config.auto)
        self.outlier_rad = float(config.outlier_rad)
        self.to_celsius = float(config.to_celsius)
        self.body_temp_c = float(config.body_temp_c)
        self.heated_c = float(config.heated_c)
        self.floor2 = float(config.valid_floor) ** 2
        self.fraction2 = float(config.valid_fraction) ** 2
        self.u = cp.zeros(self.shape, dtype=cp.float32)
        self.temp_buffers = [cp.empty(self.shape, dtype=cp.float32) for _ in range(2)]
        self.current = 0
        self.dose = cp.zeros(self.shape, dtype=cp.float64)
        self.tmax = cp.empty(self.shape, dtype=cp.float32)
        self.base_sum = cp.zeros(self.shape, dtype=cp.float64)
        self.base_sumsq = cp.zeros(self.shape, dtype=cp.float64)
        self.base_count = cp.zeros(self.shape, dtype=cp.int32)
        self.valid_frames = cp.zeros(self.shape, dtype=cp.int32)
        self.stats = cp.zeros((nz, self.q), dtype=cp.float64)
        self.prev_coeffs = cp.zeros((nz, self.k), dtype=cp.float64)
        self.coeffs = cp.zeros((nz, self.k), dtype=cp.float64)
        self.has_prev_phase = False
        self.has_prev_temp = False
        mod = load_module("thermometry")
        self._pass1 = mod.get_function(f"unwrap_accumulate_o{model.order}")
        self._fallback = mod.get_function(f"accumulate_fallback_o{model.order}")
        self._fallback_args = None  # the last pass1's arguments (the fallback pass re-reads its frame)
        self._frame = None  # the last pass1's (a, b, polar) on the device, for fit_inputs
        self._first_frame = True  # the last pass1 had no previous phase (its fit takes every valid voxel)
        self._pass2 = mod.get_function(f"temperature_dose_o{model.order}")
        self._reanchor = mod.get_function("reanchor")
        npix = ny * nx
        self.grid1 = (max(1, math.ceil(npix / (BLOCK * PIXELS_PER_THREAD_REDUCE))), nz)
        self.grid2 = (max(1, math.ceil(npix / BLOCK)), nz)
        self.dims = (np.int32(nz), np.int32(ny), np.int32(nx))
        # double-buffered pinned staging for host frames
        self.copy_stream = cp.cuda.Stream(non_blocking=True)
        self._pinned = [(cupyx.empty_pinned(self.shape, np.float32), cupyx.empty_pinned(self.shape, np.float32))
                        for _ in range(2)]
        self._staged = [(cp.empty(self.shape, cp.float32), cp.empty(self.shape, cp.float32)) for _ in range(2)]
        self._copied = [None, None]
        self._consumed = [None, None]  # per staged slot: the compute stream has finished reading it (pass1)
        self._slot = 0
        self._last_slot = None
        self._events = None

    # ------------------------------------------------------------------ reference and state
    def set_reference(self, s_ref):
        """Use ``s_ref`` (complex (z, y, x), host or device) as the reference from the next frame on."""
        cp = self.cp
        self.s_ref = cp.ascontiguousarray(cp.asarray(s_ref).astype(cp.complex64, copy=False))

    def state(self) -> dict:
        """Host copies of everything that carries over between frames (flags hold the changed and validity bits)."""
        cp = self.cp
        out = {"s_ref": self.s_ref, "flags": self.flags, "u": self.u, "dose": self.dose,
               "base_sum": self.base_sum, "base_sumsq": self.base_sumsq, "base_count": self.base_count,
               "valid_frames": self.valid_frames, "prev_coeffs": self.prev_coeffs}
        out = {k: cp.asnumpy(v) for k, v in out.items()}
        if self.has_prev_temp:
            out["tmax"] = cp.asnumpy(self.tmax)
            out["temp_prev"] = cp.asnumpy(self.temp_buffers[1 - self.current])
        out["has_prev_phase"] = np.asarray(self.has_prev_phase)
        return out

    def restore(self, state: dict):
        """Continue from :meth:`state` of an engine built with the same configuration."""
        cp = self.cp
        for k in ("s_ref", "flags", "u", "dose", "base_sum", "base_sumsq", "base_count", "valid_frames",
                  "prev_coeffs"):
            getattr(self, k)[...] = cp.asarray(state[k])
        self.has_prev_phase = bool(state["has_prev_phase"])
        self.has_prev_temp = "temp_prev" in state
        self.current = 0
        self._frame, self._first_frame = None, not self.has_prev_phase
        if self.has_prev_temp:
            self.tmax[...] = cp.asarray(state["tmax"])
            self.temp_buffers[1][...] = cp.asarray(state["temp_prev"])

    def frame_validity(self):
        """The last frame's validity: ``(valid, reanchored)`` bool (z, y, x) device arrays (see ``Engine``)."""
        return (self.flags & FLAG_VALID) != 0, (self.flags & FLAG_BACK) != 0

    # ------------------------------------------------------------------ protocol reads of the device buffers
    def drift_candidates(self):
        """The drift-reference region: flag bit 2 (see ``Engine.drift_candidates``).

        Returns
        -------
        cupy.ndarray of bool, shape (z, y, x)
        """
        return (self.flags & FLAG_REF) != 0

    def changed_flags(self):
        """Voxels changed by more than ``heated_c`` in an earlier frame: flag bit 4 (see ``Engine.changed_flags``).

        Returns
        -------
        cupy.ndarray of bool, shape (z, y, x)
        """
        return (self.flags & FLAG_CHANGED) != 0

    def dose_cem43_min(self):
        """CEM43 minutes accumulated so far (the kernels' float64 buffer; see ``Engine.dose_cem43_min``).

        Returns
        -------
        cupy.ndarray of float64, shape (z, y, x)
        """
        return self.dose

    def tmax_c(self):
        """Maximum temperature over the valid frames so far, C (see ``Engine.tmax_c``).

        Returns
        -------
        cupy.ndarray of float32, shape (z, y, x), or None
            None before the first :meth:`pass2` (the buffer is not written yet).
        """
        return self.tmax if self.has_prev_temp else None

    def measured_frames(self):
        """Frames in which each voxel was valid (see ``Engine.measured_frames``).

        Returns
        -------
        cupy.ndarray of int32, shape (z, y, x)
        """
        return self.valid_frames

    def baseline_stats(self):
        """Baseline sums of the temperature change and its square and their counts (see ``Engine.baseline_stats``).

        Returns
        -------
        total, total_sq : cupy.ndarray of float64, shape (z, y, x)
        count : cupy.ndarray of int32, shape (z, y, x)
        """
        return self.base_sum, self.base_sumsq, self.base_count

    def fit_inputs(self):
        """The last :meth:`pass1`'s unwrapped phase change and its drift-fit weights (see ``Engine.fit_inputs``).

        ``u`` is the kernels' own buffer (unwrapped and re-anchored). The weight is ``ArrayEngine``'s: ``|S|^2`` in
        float64 -- the magnitude squared for a polar frame (0 where the frame or the reference is 0 or not finite),
        ``re^2 + im^2`` of the float32 parts otherwise (0 where either is not finite) -- on drift-reference voxels
        tracked since the previous frame (valid ones in the first frame), voxels changed earlier left out in
        automatic mode, 0 elsewhere.

        Returns
        -------
        u : cupy.ndarray of float32, shape (z, y, x)
            rad; read it before the next :meth:`pass1`.
        weight : cupy.ndarray of float64, shape (z, y, x), or None
            None before the first :meth:`pass1` (or after :meth:`restore`).
        """
        if self._frame is None:
            return self.u, None
        cp = self.cp
        a, b, polar = self._frame
        finite = cp.isfinite(a) & cp.isfinite(b)
        if polar:
            live = finite & (a != 0) & (cp.abs(self.s_ref) > 0)
            m64 = cp.where(live, a, 0).astype(cp.float64)
            w = m64 * m64
        else:
            re = cp.where(finite, a, 0).astype(cp.float64)
            im = cp.where(finite, b, 0).astype(cp.float64)
            w = re * re + im * im
        flags = self.flags
        fit = (flags & (FLAG_VALID if self._first_frame else FLAG_TRACKED)) != 0
        fit &= (flags & FLAG_REF) != 0
        if self.auto:
            fit &= (flags & FLAG_CHANGED) == 0
        weight = cp.where(fit, w, 0.0)
        slot = self._staged_slot_of(a)
        if slot is not None:  # this read of the staged frame must finish before an upload reuses its slot
            self._consumed[slot] = cp.cuda.get_current_stream().record()
        return self.u, weight

    # ------------------------------------------------------------------ timing
    def enable_timing(self):
        """Record CUDA events around every kernel launch (for benchmarks)."""
        self._events = {"pass1": [], "pass2": []}

    def kernel_seconds(self) -> dict:
        """Device time of each kernel summed over frames, s (after :meth:`enable_timing`)."""
        self.cp.cuda.get_current_stream().synchronize()
        out = {}
        for name, pairs in (self._events or {}).items():
            out[name] = sum(self.cp.cuda.get_elapsed_time(a, b) for a, b in pairs) / 1000.0
        return out

    def _launch(self, name, kernel, grid, args):
        if self._events is None:
            kernel(grid, (BLOCK,), args)
            return
        start = self.cp.cuda.get_current_stream().record()
        kernel(grid, (BLOCK,), args)
        self._events[name].append((start, self.cp.cuda.get_current_stream().record()))

    # ------------------------------------------------------------------ frames in
    def to_device(self, a, b):
        """Put one frame's two components on the device; host arrays go through pinned memory asynchronously."""
        cp = self.cp
        if isinstance(a, cp.ndarray) and isinstance(b, cp.ndarray):
            return (cp.ascontiguousarray(a, dtype=cp.float32), cp.ascontiguousarray(b, dtype=cp.float32))
        slot = self._slot
        self._slot ^= 1
        if self._copied[slot] is not None:
            self._copied[slot].synchronize()  # the pinned slot's previous upload has finished
        pa, pb = self._pinned[slot]
        np.copyto(pa, np.asarray(a, dtype=np.float32))
        np.copyto(pb, np.asarray(b, dtype=np.float32))
        da, db = self._staged[slot]
        if self._consumed[slot] is not None:
            # the kernels that read this device slot two frames ago must be done before it is overwritten; today
            # pass1 also ends in a blocking copy to the host, but that must not be what keeps frames intact
            self.copy_stream.wait_event(self._consumed[slot])
        da.set(pa, stream=self.copy_stream)
        db.set(pb, stream=self.copy_stream)
        ev = self.copy_stream.record()
        self._copied[slot] = ev
        cp.cuda.get_current_stream().wait_event(ev)  # kernels on the compute stream wait for the upload
        self._last_slot = slot
        return da, db

    # ------------------------------------------------------------------ passes
    def pass1(self, a, b, polar: bool):
        """Phase change, unwrapping and the drift fit's per-slice normal equations, in one kernel.

        Parameters and return as :meth:`mrtherm.thermometry.engine.Engine.pass1`: ``a``, ``b`` are one frame's
        (z, y, x) magnitude/phase (``polar``) or real/imaginary parts; returns ``(packed, rhs, count)`` of the
        drift fit's normal equations on the host.
        """
        cp = self.cp
        a, b = self.to_device(a, b)
        self.stats.fill(0)
        args = (a, b, np.int32(bool(polar)), self.s_ref, self.u, self.flags, self.prev_coeffs,
                np.int32(self.has_prev_phase), np.int32(self.auto), np.float64(self.outlier_rad),
                np.float64(self.floor2), np.float64(self.fraction2), *self.dims, self.stats)
        self._launch("pass1", self._pass1, self.grid1, args)
        self._frame, self._first_frame = (a, b, bool(polar)), not self.has_prev_phase
        if self.has_prev_phase:  # voxels back from a gap, once every tracked voxel's phase is written
            self._launch("pass1", self._reanchor, self.grid2, (self.u, self.flags, *self.dims))
        self._release_staged()
        self.has_prev_phase = True
        self._host_stats = cp.asnumpy(self.stats)  # (nz, Q): the only per-frame transfer to the host
        self._fallback_args = args if self.auto else None
        self._fallback_slot = self._staged_slot_of(a)
        return self._unpack(self._host_stats)

    def fallback_stats(self):
        """The last frame's statistics without the outlier exclusion: the same as :meth:`pass1`'s outside
        automatic mode; in automatic mode one more pass over the frame (rare: a slice with too few inliers)."""
        if self._fallback_args is None:
            return self._unpack(self._host_stats)
        cp = self.cp
        slot = self._fallback_slot
        self.stats.fill(0)
        self._fallback((self.grid1[0], self.grid1[1]), (BLOCK,), self._fallback_args)
        if slot is not None:  # the fallback re-read the staged frame: its slot is free only after this pass
            self._consumed[slot] = cp.cuda.get_current_stream().record()
        return self._unpack(cp.asnumpy(self.stats))

    def _release_staged(self):
        """Mark the staged slot of the frame just read as free once the compute stream is past this point."""
        if self._last_slot is not None:
            self._consumed[self._last_slot] = self.cp.cuda.get_current_stream().record()
            self._last_slot = None

    def _staged_slot_of(self, a):
        """The staging slot whose device buffer ``a`` is, or None (frames given on the device)."""
        for slot, (da, _) in enumerate(self._staged):
            if a is da:
                return slot
        return None

    def _unpack(self, st):
        """``(packed, rhs, count)`` from the kernels' ``(nz, Q)`` moments, as the drift model's normal equations."""
        m, k = self.n_moments, self.k
        return (np.ascontiguousarray(st[:, self._pair_moment]), np.ascontiguousarray(st[:, m:m + k]),
                np.ascontiguousarray(st[:, -1]))

    def pass2(self, coeffs, dt_min, is_baseline: bool):
        """Drift subtraction, PRF, mask, dose and Tmax in one kernel; returns the frame's temperature in °C.

        As :meth:`mrtherm.thermometry.engine.Engine.pass2`: ``coeffs`` (z, P) drift coefficients, ``dt_min`` the
        minutes since the previous frame (None for the first), ``is_baseline`` adds the frame to the baseline
        statistics. The (z, y, x) float32 result stays on the device.
        """
        self.coeffs.set(np.ascontiguousarray(coeffs, dtype=np.float64))
        out = self.temp_buffers[self.current]
        prev = self.temp_buffers[1 - self.current]
        self._launch("pass2", self._pass2, self.grid2, (
            self.u, self.flags, self.coeffs, np.float64(self.to_celsius), np.float32(self.body_temp_c),
            np.float32(self.heated_c), out, prev, np.int32(self.has_prev_temp),
            np.float64(dt_min if dt_min is not None else 0.0), self.dose, self.tmax,
            np.int32(not self.has_prev_temp), np.int32(bool(is_baseline)), self.base_sum, self.base_sumsq,
            self.base_count, self.valid_frames, *self.dims))
        self.has_prev_temp = True
        self.current ^= 1
        # this frame's coefficients become the outlier reference of the next frame
        self.prev_coeffs, self.coeffs = self.coeffs, self.prev_coeffs
        return out
