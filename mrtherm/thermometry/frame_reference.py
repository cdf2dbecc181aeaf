"""Per-frame phase reference for the library, referenceless and hybrid modes (used by the Thermometer).

Per frame, before the engine's first pass, :meth:`FrameReference.choose` sets the
engine's complex reference:

- ``library``: the complex mean of the matching entries;
- ``hybrid``: the matching entries blended with the next nearest breathing state
  (:meth:`BaselineLibrary.blend`), kept where the anatomy moves; elsewhere the
  mean of all entries turned by the blend's smooth phase change (the breathing
  B0 state) -- the noise of all entries instead of one or two; a frame no entry
  matches gets the mean of the entries turned by the smooth fit of its own
  phase change (referenceless on the change, so its phase stays continuous for
  temporal unwrapping);
- ``referenceless``: ``exp(i P)`` with ``P`` the smooth background fitted to the
  frame's own phase.

After the first pass, :meth:`FrameReference.background` replaces the drift
fit's outlier rules by the sparsity prior on the heat (``referenceless``,
``hybrid``). :meth:`FrameReference.consistent` is the library's leave-one-out
check behind the mask rule. The choices are recorded for report.json and saved
with the Thermometer's state.
"""

from __future__ import annotations

import math

import numpy as np

from mrtherm.backend import from_numpy, to_numpy
from mrtherm.thermometry.background import smooth_phase_fit, sparse_background_fit
from mrtherm.thermometry.drift import DriftModel, solve_drift
from mrtherm.thermometry.engine import normal_equations_on_host
from mrtherm.thermometry.prf import phase_difference
from mrtherm.thermometry.reference import LIBRARY_MODES, UNMATCHED_RATIO, BaselineLibrary

SPARSE_THRESHOLD_SD = 3.0  # the heat prior's soft threshold: 3 noise SDs of the phase change
LEAVE_ONE_OUT_FACTOR = 3.0  # library consistency: leave-one-out phase RMS within 3 x the noise prediction
FIELD_RESIDUAL_FACTOR = 2.0  # hybrid: the mean of all entries is turned smoothly only where entries differ smoothly
# (2 rather than 3 noise SDs: on the sliding-bone phantoms 3 let a moving bone field through, band error 0.65 -> 0.52 C)


class FrameReference:
    """Reference choice and background fit per frame (see the module docstring).

    Parameters
    ----------
    mode : {"library", "referenceless", "hybrid"}
    signals : sequence of complex arrays, shape (z, y, x)
        Baseline frames on the device.
    mask : bool array, shape (z, y, x)
        Reliable voxels, on the device.
    sigma : float
        Noise SD per channel.
    params : ThermometryParams
    xp : array namespace
    respiration : sequence of float, optional
        Respiratory signal of the baseline frames (library matching on it).
    still : bool array, shape (z, y, x), optional
        Voxels whose magnitude stays within noise over the baseline frames. A referenceless frame fits its
        background only there: where an edge slides through a voxel (tissue against fat, whose chemical
        shift adds its own phase) the voxel's phase is not the smooth background's.
    match_magnitudes : sequence of arrays, shape (z, y, x), optional
        With motion registration: the baseline frames' image-position magnitudes, which the library matches
        frames on (``signals`` are then the registered entries, in tissue coordinates).
    match_mask : bool array, shape (z, y, x), optional
        The image-position voxels compared in matching (default ``mask``).
    """

    def __init__(self, mode, signals, mask, sigma, params, xp, respiration=None, still=None, match_magnitudes=None,
                 match_mask=None):
        self.mode, self.xp, self.sigma, self.mask = mode, xp, float(sigma), mask
        self.registered = match_magnitudes is not None  # the library's magnitudes are then the image-position ones
        self.match_mask = mask if match_mask is None else match_mask
        self.floor2 = (params.snr_threshold * float(sigma)) ** 2
        self.fraction2 = float(params.min_signal_fraction) ** 2
        self.library = BaselineLibrary(signals, self.match_mask, sigma, xp, respiration, match_magnitudes) \
            if mode in LIBRARY_MODES else None
        self.sparse = mode in ("referenceless", "hybrid")
        self.baseline_frames = params.baseline_frames
        self.still = xp.ones(tuple(mask.shape), dtype=xp.float64) if still is None else xp.astype(still, xp.float64)
        self.basis_kind = params.referenceless_basis
        self.model = DriftModel(tuple(mask.shape), params.referenceless_order, xp,
                                harmonic=params.referenceless_basis == "harmonic")
        if signals:
            total = signals[0]
            for sig in signals[1:]:
                total = total + sig
            self._set_mean(xp.astype(total / len(signals), xp.complex64))
            if mode == "hybrid":
                self._smooth_here = (self.still > 0) & self._field_is_smooth(signals)
        self._referenceless_now = False
        self._matched = None  # (frame, match ratios, hybrid blend or None) from match(), for choose()
        self.choices = []  # per frame: library entries averaged ([] for a referenceless frame)
        self.ratios = []  # per frame: best entry's match ratio (NaN for pure referenceless)
        self.iterations = []  # per frame: sparse-fit iterations (sparse modes)
        self.blends = []  # per frame: (second group of entries, its weight) of the hybrid interpolation

    def _set_mean(self, mean_ref):
        """The complex mean of the baseline frames and the fit weights drawn from it."""
        xp = self.xp
        self.mean_ref = mean_ref
        self.mean_weight = xp.astype(xp.abs(self.mean_ref), xp.float64) ** 2 * xp.astype(self.mask, xp.float64)
        self._still_weight = self.mean_weight * self.still

    def _field_is_smooth(self, signals):
        """Voxels where every entry's phase departs from the mean of all entries by a smooth field only.

        The hybrid reference turns the mean of all entries by a smooth fit of the matched state's phase change;
        that holds for the breathing B0 change but not where a localised field moves past the voxel (the
        susceptibility field of a bone the tissue slides along, in tissue coordinates): there each entry's
        residual after the smooth fit exceeds noise (RMS above ``FIELD_RESIDUAL_FACTOR`` x the noise of a phase
        difference against the mean, ``sqrt(1 + 1/N) sigma / |S|``), and the library's own phase is kept.
        """
        xp = self.xp
        sumsq = xp.zeros(tuple(self.mask.shape), dtype=xp.float64)
        for sig in signals:
            turn = phase_difference(sig, self.mean_ref)
            coeffs, _ = solve_drift(*normal_equations_on_host(self.model, turn, self._still_weight), self.model.k)
            sumsq = sumsq + (xp.astype(turn, xp.float64) - self.model.evaluate(coeffs)) ** 2
        rms = xp.sqrt(sumsq / len(signals))
        mag = xp.astype(xp.abs(self.mean_ref), xp.float64)
        noise = math.sqrt(1.0 + 1.0 / len(signals)) * self.sigma / xp.where(mag > 0, mag, 1e-30)
        return rms <= FIELD_RESIDUAL_FACTOR * noise

    def match(self, t: int, respiration=None, match=None):
        """The library entries frame ``t`` matches, before :meth:`choose` (a starting point for registration).

        Parameters
        ----------
        t : int
        respiration : float, optional
        match : complex or real array, shape (z, y, x)
            The frame in image position (its magnitude is compared).

        Returns
        -------
        chosen : list of int
        blend : (list of int, float)
            The hybrid blend's second group and weight (empty and 0 otherwise).
        """
        if self.library is None:
            return [], ([], 0.0)
        exclude = t if t < self.baseline_frames else None
        ratios = self.library.ratios(match)
        chosen, _ = self.library.match(match, exclude=exclude, respiration=respiration, ratios=ratios)
        if self.mode != "hybrid":
            self._matched = (t, ratios, None)  # choose() takes them for the same frame
            return chosen, ([], 0.0)
        blended = self.library.blend(match, chosen, exclude, ratios)
        self._matched = (t, ratios, blended)
        return chosen, (blended[1], blended[2])

    def choose(self, engine, signal, t: int, respiration=None, match=None):
        """Set frame ``t``'s reference on ``engine``.

        Parameters
        ----------
        engine : mrtherm.thermometry.engine.Engine
            Its drift-reference region and changed flags weigh a referenceless fit; its reference is set.
        signal : complex array, shape (z, y, x)
            The frame (in tissue coordinates with motion registration).
        t : int
            Frame index (baseline frames match other entries only).
        respiration : float, optional
            The frame's respiratory signal.
        match : complex or real array, shape (z, y, x), optional
            The frame in image position, for the library matching (default ``signal``). After :meth:`match` for
            the same frame its ratios and blend are reused (the same values, computed once).
        """
        exclude = t if t < self.baseline_frames else None
        cached = self._matched[1:] if self._matched is not None and self._matched[0] == t else (None, None)
        self._matched = None
        reference, chosen, ratio, other, weight = self._library_reference(
            signal if match is None else match, exclude, respiration, *cached)
        if reference is None:
            xp = self.xp
            region = xp.astype(engine.drift_candidates() & ~engine.changed_flags(), xp.float64)
            fit_weight = xp.astype(xp.real(signal) ** 2 + xp.imag(signal) ** 2, xp.float64) * region * self.still
            if self.library is None:  # referenceless: the frame's own smooth phase
                _, bg = smooth_phase_fit(signal, fit_weight, self.model)
                # the baseline magnitude under the fitted phase: the validity rule compares |S_t| with |S_ref|
                reference = xp.astype(xp.abs(self.mean_ref) * xp.exp(1j * xp.astype(bg, xp.float32)), xp.complex64)
            else:
                # hybrid, no entry matches: the same fit on the change against the mean of the entries, so the
                # phase stays continuous with the library frames around it (temporal unwrapping)
                _, bg = smooth_phase_fit(signal * xp.conj(self.mean_ref), fit_weight, self.model)
                reference = xp.astype(self.mean_ref * xp.exp(1j * xp.astype(bg, xp.float32)), xp.complex64)
        engine.set_reference(reference)
        self._referenceless_now = not chosen
        self.choices.append([int(k) for k in chosen])
        self.ratios.append(ratio)
        self.blends.append(([int(k) for k in other], float(weight)))

    def _library_reference(self, signal, exclude, respiration, ratios=None, blended=None):
        """``(reference or None, chosen, ratio, other, weight)`` from the library; None: referenceless.
        ``ratios`` and ``blended`` (the library's blend) reuse what :meth:`match` found for the same frame."""
        if self.library is None:
            return None, [], float("nan"), [], 0.0
        ratios = self.library.ratios(signal) if ratios is None else ratios
        chosen, ratio = self.library.match(signal, exclude=exclude, respiration=respiration, ratios=ratios)
        if self.mode != "hybrid":
            return self.library.reference(chosen), chosen, ratio, [], 0.0
        reference, other, weight, ratio = self.library.blend(signal, chosen, exclude, ratios) \
            if blended is None else blended
        if ratio > UNMATCHED_RATIO and not self.registered:
            # no entry matches this frame: referenceless for it. Not with motion registration: the entries are
            # already on the frame's tissue points, only the fields differ, and the blend with the smooth
            # correction follows them; referenceless erred by 6-8 C next to bone on the sliding phantoms.
            return None, [], ratio, [], 0.0
        return self._compose(reference), chosen, ratio, other, weight

    def _compose(self, library_ref):
        """Hybrid: the library's phase where the anatomy or a localised field moves; elsewhere the mean of all
        entries, turned by the smooth part of the library's phase change against it (the breathing B0 state),
        which is ``sqrt(M)`` times less noisy than M matched entries."""
        xp = self.xp
        turn = phase_difference(library_ref, self.mean_ref)
        # Both are baseline frames: the turn is the breathing B0 change plus noise, well inside (-pi, pi), so a
        # direct weighted fit needs no wrap-free detour.
        coeffs, _ = solve_drift(*normal_equations_on_host(self.model, turn, self._still_weight), self.model.k)
        rel = xp.where(self._smooth_here, xp.astype(self.model.evaluate(coeffs), xp.float32), turn)
        return xp.astype(self.mean_ref * xp.exp(1j * rel), xp.complex64)

    def consistent(self, signals, respiration=None):
        """Voxels whose phase the library (or, referenceless, the smooth fit) reproduces within noise, by
        leave-one-out over the baseline frames.

        Referenceless: each baseline frame's own phase against its smooth fit; a localised field (a bone's
        susceptibility) that no low-order polynomial follows fails here, so referenceless masks the tissue next
        to bone rather than report it many degrees off.

        Each baseline frame is referenced as a dynamic frame would be, from the *other* entries; after a
        smooth per-slice fit (drift and breathing B0) is removed, the RMS of the phase residual over the
        frames must stay within ``LEAVE_ONE_OUT_FACTOR`` x the noise-predicted ``sqrt(2) sigma / |S|``.
        Where a sliding edge puts tissues of different phase in one voxel (fat against water), a frame between
        sampled breathing states has a phase no entry holds: such voxels fail and are masked.

        Only frames where the voxel holds signal in the frame and in its reference count (the per-frame
        validity of :mod:`mrtherm.thermometry.engine`); a voxel needs two such frames (one, referenceless).

        Parameters
        ----------
        signals : sequence of complex arrays, shape (z, y, x)
            The baseline frames (the library's entries).
        respiration : sequence of float, optional

        With motion registration the frames are matched on the image-position magnitudes given to the
        constructor (``match_magnitudes``).

        Returns
        -------
        ndarray of bool, shape (z, y, x)
            Host mask.
        """
        xp = self.xp
        sumsq = xp.zeros(tuple(self.still.shape), dtype=xp.float64)
        count = xp.zeros(tuple(self.still.shape), dtype=xp.float64)
        for i, s in enumerate(signals):
            if self.library is None:  # referenceless: the frame's own phase against its smooth fit
                prod, ref, weight = s, self.mean_ref, self._still_weight
            else:
                r_i = None if respiration is None else respiration[i]
                match = self.library.mags[i, ...] if self.registered else s
                ref = self._library_reference(match, i, r_i)[0]
                if ref is None:
                    ref = self.mean_ref
                prod, weight = s * xp.conj(ref), self.mean_weight
            _, bg = smooth_phase_fit(prod, weight, self.model)
            r = phase_difference(prod, xp.astype(xp.exp(1j * bg), prod.dtype))
            ok = xp.astype(self._valid_pair(s, ref), xp.float64)
            sumsq = sumsq + ok * xp.astype(r, xp.float64) ** 2
            count = count + ok
        rms = to_numpy(xp.sqrt(sumsq / xp.where(count > 0, count, 1.0)))
        mag = np.maximum(to_numpy(xp.sqrt(self.mean_weight)), 1e-30)
        needed = 1 if self.library is None else 2  # a smooth fit checks one frame; leaving one out needs two
        return (rms <= LEAVE_ONE_OUT_FACTOR * math.sqrt(2.0) * self.sigma / mag) & (to_numpy(count) >= needed)

    def _valid_pair(self, signal, ref):
        """Voxels with signal in the frame and in its reference (the engines' per-frame validity)."""
        xp = self.xp
        m2 = xp.astype(xp.real(signal) ** 2 + xp.imag(signal) ** 2, xp.float64)
        r2 = xp.astype(xp.real(ref) ** 2 + xp.imag(ref) ** 2, xp.float64)
        return (m2 >= self.floor2) & (r2 >= self.floor2) & (m2 >= self.fraction2 * r2)

    def background(self, engine, signal, drift_model):  # signal: in tissue coordinates with motion registration
        """Drift-model coefficients from the sparse-heat fit of the engine's last phase change.

        Parameters
        ----------
        engine : mrtherm.thermometry.engine.Engine
            After its ``pass1`` of this frame (:meth:`~mrtherm.thermometry.engine.Engine.fit_inputs` is read).
        signal : complex array, shape (z, y, x)
        drift_model : mrtherm.thermometry.drift.DriftModel
            The drift polynomial the engine subtracts (the Thermometer's), in the engine's array library.

        Returns
        -------
        coeffs : ndarray of float64, shape (z, k)
        fallback : ndarray of bool, shape (z,)
        """
        xp = self.xp
        u, weight = engine.fit_inputs()
        if self._referenceless_now:
            weight = weight * self.still
        mag2 = xp.astype(xp.real(signal) ** 2 + xp.imag(signal) ** 2, xp.float64)
        # noise SD of the phase change ~ sigma sqrt(1/|S_t|^2 + 1/|S_ref|^2) ~ sqrt(2) sigma / |S_t|
        tau = SPARSE_THRESHOLD_SD * math.sqrt(2.0) * self.sigma / xp.sqrt(xp.where(mag2 > 0, mag2, 1e-30))
        # two-signed: a region that cools below its baseline is kept out of the background as heat is
        coeffs, fallback, iterations = sparse_background_fit(drift_model, u, weight, tau, 0)
        self.iterations.append(iterations)
        return coeffs, fallback

    def report(self) -> dict:
        """report.json's per-frame record.

        Returns
        -------
        dict
        """
        ratios = np.asarray(self.ratios, dtype=np.float64)
        out = {"mode": self.mode}
        if self.library is not None:
            out.update(entries=len(self.library), navigator=self.library.respiration is not None,
                       entries_per_frame=self.choices,
                       entry_per_frame=[c[0] if c else None for c in self.choices],
                       match_ratio_per_frame=[float(v) for v in ratios],
                       median_match_ratio=float(np.nanmedian(ratios)) if np.isfinite(ratios).any() else None)
        if self.sparse:
            out.update(second_entries_per_frame=[b[0] for b in self.blends],
                       second_weight_per_frame=[b[1] for b in self.blends],
                       referenceless_frames=[t for t, c in enumerate(self.choices) if not c],
                       referenceless_order=self.model.order, referenceless_basis=self.basis_kind,
                       sparse_iterations_per_frame=list(self.iterations))
        return out

    def state(self) -> dict:
        """Host arrays of the library and the records.

        Returns
        -------
        dict of str to ndarray
        """
        out = {"mask": to_numpy(self.mask), "match_mask": to_numpy(self.match_mask),
               "ratios": np.asarray(self.ratios, dtype=np.float64),
               "iterations": np.asarray(self.iterations, dtype=np.int64), "mean_ref": to_numpy(self.mean_ref),
               "choices_json": np.frombuffer(repr([self.choices, self.blends]).encode("ascii"), dtype=np.uint8)}
        if self.library is not None:
            out["library"] = to_numpy(self.library.entries)
            if self.registered:
                out["match_magnitudes"] = to_numpy(self.library.mags)
            if self.library.respiration is not None:
                out["respiration"] = self.library.respiration
        return out

    @classmethod
    def from_state(cls, state: dict, mode, sigma, params, xp, still=None):
        """Continue from :meth:`state`.

        Parameters
        ----------
        state : dict of str to ndarray
        mode, sigma, params, xp, still
            As for the constructor; the mask is the one saved in ``state``.

        Returns
        -------
        FrameReference
        """
        import ast  # noqa: PLC0415
        signals = [from_numpy(e, xp) for e in state["library"]] if "library" in state else []
        match = [from_numpy(m, xp) for m in state["match_magnitudes"]] if "match_magnitudes" in state else None
        self = cls(mode, signals, from_numpy(state["mask"], xp), sigma, params, xp, state.get("respiration"), still,
                   match_magnitudes=match, match_mask=from_numpy(state["match_mask"], xp))
        self._set_mean(from_numpy(state["mean_ref"], xp))
        self.ratios = [float(v) for v in state["ratios"]]
        self.iterations = [int(v) for v in state["iterations"]]
        self.choices, self.blends = ast.literal_eval(state["choices_json"].tobytes().decode("ascii"))
        return self
