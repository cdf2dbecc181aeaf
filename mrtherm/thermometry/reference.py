"""References for the phase change: the mean of the baseline frames, a baseline library, referenceless, hybrid.

``auto`` (default): ``hybrid`` when the baseline frames move, ``mean`` otherwise (:func:`choose_reference`).

``mean``: ``S_ref`` is the complex mean of the baseline frames.

``library``: the baseline frames, acquired during free breathing, are kept as a
library; each frame is paired with the entries whose magnitude images match it
best (least sum of squared magnitude differences over the reliable voxels),
and its phase change is taken against their complex mean. Every entry within
statistical reach of the best (its ratio no more than ``3 sqrt(4 / n)`` above
it, ``n`` reliable voxels: three SDs of the difference of two such ratios for
noise alone) is averaged, because with periodic breathing several baseline
frames catch the same breathing state, and averaging M of them lowers the
reference's noise from ``sigma`` to ``sigma / sqrt(M)``. With a respiratory
signal (bellows or navigator, one value per frame) the entries nearest in that
signal are used instead (within 3 % of its baseline range). A baseline frame
is paired with *other* entries only (leave-one-out), so the baseline
temperature SD measures what the matching leaves. The match ratio -- the sum
over the one two noisy images of the same object would give, ``2 sigma^2`` per
voxel -- is reported per frame: about 1 for a match as good as the noise
allows.

``referenceless``: no baseline phase at all; each frame's own phase is
fitted by a smooth polynomial (:mod:`mrtherm.thermometry.background`) and the
phase change is taken against that fit.

``hybrid``: the library, then per frame a smooth (drift-model) correction
fitted with a sparsity prior on the heat (:func:`mrtherm.thermometry.background.sparse_background_fit`);
frames no entry matches (best ratio above ``UNMATCHED_RATIO``) fall back to
referenceless for that frame.
"""

from __future__ import annotations

import math

import numpy as np

from mrtherm.backend import from_numpy, to_numpy
from mrtherm.choices import REFERENCES

REFERENCE_MODES = REFERENCES  # the one list (mrtherm.choices)
LIBRARY_MODES = ("library", "hybrid")  # modes that keep the baseline frames as a library
UNMATCHED_RATIO = 2.0  # hybrid: a frame whose best entry leaves twice the noise SSD goes referenceless
NAVIGATOR_TOLERANCE = 0.03  # entries within 3 % of the baseline respiratory range count as the same state
MOVING_SD_FACTOR = 3.0  # a voxel moves when its baseline magnitude SD exceeds 3 x the noise SD
MOVING_FRACTION = 0.01  # auto picks the library when more than 1 % of the reliable voxels move


def choose_reference(mode, base_mag, mask, sigma):
    """The reference to use and why (report.json ``reference``).

    ``auto``: the hybrid reconstruction (library + smooth correction + sparse heat) when the baseline
    frames differ beyond noise -- more than ``MOVING_FRACTION`` of the reliable voxels have a magnitude
    SD over the baseline frames above ``MOVING_SD_FACTOR`` x sigma (for noise alone the chance is below
    1e-6 per voxel from 3 frames on) -- else the mean. Magnitude is used because a B0 drift changes the
    phase of a static exam but not its magnitude. The decision also says whether motion was detected
    (registration follows it).

    Parameters
    ----------
    mode : {"auto", "mean", "library", "referenceless", "hybrid"}
    base_mag : ndarray, shape (n, z, y, x)
        Baseline magnitudes (host).
    mask : ndarray of bool, shape (z, y, x)
        Reliable voxels.
    sigma : float
        Noise SD per channel.

    Returns
    -------
    used : {"mean", "library", "referenceless", "hybrid"}
    decision : dict

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> still = 100 + rng.standard_normal((8, 1, 20, 20))
    >>> choose_reference("auto", still, np.ones((1, 20, 20), bool), 1.0)[0]
    'mean'
    >>> moving = still.copy(); moving[::2, 0, :5] += 50.0
    >>> choose_reference("auto", moving, np.ones((1, 20, 20), bool), 1.0)[0]
    'hybrid'
    """
    n = base_mag.shape[0]
    moving = moving_fraction(base_mag, mask, sigma)
    common = {"moving_voxel_fraction": moving, "motion_detected": bool(moving > MOVING_FRACTION)}
    if mode != "auto":
        return mode, {"asked": mode, "used": mode, "why": "asked for", **common}
    if n < 3:
        return "mean", {"asked": "auto", "used": "mean", "why": f"{n} baseline frame(s): a library needs 3 or more",
                        **common}
    used = "hybrid" if common["motion_detected"] else "mean"
    why = (f"{moving:.2%} of the reliable voxels have a baseline magnitude SD above {MOVING_SD_FACTOR:g} x the noise "
           f"({'more' if used == 'hybrid' else 'not more'} than {MOVING_FRACTION:.0%}): "
           f"{'the baseline frames move (breathing): hybrid' if used == 'hybrid' else 'a still exam'}")
    return used, {"asked": "auto", "used": used, "why": why, **common}


def moving_fraction(base_mag, mask, sigma) -> float:
    """Fraction of the reliable voxels whose baseline magnitude SD exceeds ``MOVING_SD_FACTOR`` x sigma.

    Parameters
    ----------
    base_mag : ndarray, shape (n, z, y, x)
    mask : ndarray of bool, shape (z, y, x)
    sigma : float

    Returns
    -------
    float
        0 with fewer than 3 frames (no SD to judge) or an empty mask.
    """
    if base_mag.shape[0] < 3 or not mask.any():
        return 0.0
    sd = base_mag.std(axis=0, ddof=1)
    return float(np.mean(sd[mask] > MOVING_SD_FACTOR * sigma))


class BaselineLibrary:
    """Baseline frames as a library (see the module docstring).

    Parameters
    ----------
    signals : sequence of complex arrays, shape (z, y, x)
        The baseline frames, on the engine's device.
    mask : bool array, shape (z, y, x)
        Voxels compared (the reliability mask), on the same device.
    sigma : float
        Noise SD of the magnitude (per channel), for the match ratio.
    xp : array namespace
    respiration : sequence of float, optional
        Respiratory signal (bellows, navigator) of each baseline frame: entries are then matched on it.
    match_magnitudes : sequence of arrays, shape (z, y, x), optional
        Magnitudes the matching compares, one per entry, when they are not the entries' own: with motion
        registration the entries are resampled into tissue coordinates (:mod:`mrtherm.thermometry.motion`)
        while the breathing state is read from the image-position magnitudes. ``mask`` is then the
        image-position mask of the compared voxels.
    """

    def __init__(self, signals, mask, sigma, xp, respiration=None, match_magnitudes=None):
        self.xp = xp
        self.entries = xp.stack([xp.astype(s, xp.complex64) for s in signals])
        self.mags = xp.abs(self.entries) if match_magnitudes is None else \
            xp.stack([xp.astype(m, xp.float32) for m in match_magnitudes])
        self.mask = mask
        # (entries, reliable voxels): matching touches only these (integer indices work in every array library)
        self._voxels = from_numpy(np.flatnonzero(to_numpy(mask)).astype(np.int64), xp)
        self._mags_in_mask = xp.take(xp.reshape(self.mags, (self.mags.shape[0], -1)), self._voxels, axis=1)
        n_mask = int(to_numpy(xp.sum(xp.astype(mask, xp.int64))))
        self.noise_ssd = max(2.0 * float(sigma) ** 2 * n_mask, np.finfo(np.float64).tiny)
        # Three SDs of the difference of two match ratios for noise alone (each ratio ~ chi2_n / n, SD sqrt(2 / n)).
        self.ratio_tolerance = 3.0 * math.sqrt(4.0 / max(n_mask, 1))
        self.respiration = None if respiration is None else np.asarray(respiration, dtype=np.float64)

    def __len__(self):
        return int(self.entries.shape[0])

    def ratios(self, signal):
        """Match ratio of every entry: SSD of magnitudes over the reliable voxels, over the noise expectation.

        Parameters
        ----------
        signal : complex or real array, shape (z, y, x)
            The frame (its magnitude is compared; a real array is taken as the magnitude).

        Returns
        -------
        ndarray of float64, shape (n_entries,)
        """
        xp = self.xp
        diff = self._mags_in_mask - xp.take(xp.reshape(xp.abs(signal), (-1,)), self._voxels)[None, :]
        ssd = to_numpy(xp.sum(diff * diff, axis=1))
        return ssd.astype(np.float64) / self.noise_ssd

    def match(self, signal, exclude=None, respiration=None, ratios=None):
        """The entries that match ``signal``: the best and those as good within noise (or in respiration).

        Parameters
        ----------
        signal : complex array, shape (z, y, x)
        exclude : int, optional
            An entry not to choose (the frame itself, for baseline frames).
        respiration : float, optional
            The frame's respiratory signal; used when the library has one per entry.
        ratios : ndarray, optional
            :meth:`ratios` of ``signal``, when already computed.

        Returns
        -------
        chosen : list of int
            Entries to average, best first.
        ratio : float
            The best chosen entry's match ratio (about 1 at best).

        Examples
        --------
        >>> import numpy as np
        >>> one = np.ones((1, 20, 20))
        >>> lib = BaselineLibrary([one, 2 * one, 2.01 * one], one > 0, 0.5, np)
        >>> lib.match(1.9 * one)[0]  # entries 1 and 2 differ by far less than the noise: both
        [1, 2]
        >>> lib.match(1.9 * one, exclude=1)[0]
        [2]
        >>> lib.match(1.2 * one)[0]
        [0]
        """
        ratios = self.ratios(signal) if ratios is None else ratios
        allowed = np.ones(len(self), dtype=bool)
        if exclude is not None and len(self) > 1:
            allowed[int(exclude)] = False
        if self.respiration is not None and respiration is not None:
            gap = np.where(allowed, np.abs(self.respiration - float(respiration)), np.inf)
            spread = float(np.ptp(self.respiration)) or 1.0
            near = gap <= max(gap.min(), NAVIGATOR_TOLERANCE * spread)
            chosen = sorted(np.flatnonzero(near), key=lambda k: gap[k])
        else:
            score = np.where(allowed, ratios, np.inf)
            best = float(score.min())
            chosen = sorted(np.flatnonzero(score <= best + self.ratio_tolerance), key=lambda k: score[k])
        chosen = [int(k) for k in chosen]
        return chosen, float(ratios[chosen[0]])

    def blend(self, signal, chosen, exclude=None, ratios=None):
        """Interpolate between the matched breathing state and the next nearest one (hybrid mode).

        With continuous breathing a frame often falls between two sampled states. The entries nearest after the
        matched group ``A`` (the best outside it, with those within noise of it) form ``B``; the weight ``w`` in
        [0, 1] minimises ``sum (|S_t| - (1 - w) |A| - w |B|)^2`` over the reliable voxels (closed form), and the
        reference is ``(1 - w) A + w B`` in complex values -- what partial volume does to a voxel an edge
        crosses.

        Parameters
        ----------
        signal : complex array, shape (z, y, x)
        chosen : sequence of int
            Group ``A`` from :meth:`match`.
        exclude : int, optional
            An entry not to use.
        ratios : ndarray, optional
            :meth:`ratios` of ``signal``, when already computed.

        Returns
        -------
        reference : complex array, shape (z, y, x)
        other : list of int
            Group ``B`` (empty when ``w`` is 0 or no entry is left).
        weight : float
            ``w``.
        ratio : float
            Match ratio of the blend.
        """
        xp = self.xp
        ratios = self.ratios(signal) if ratios is None else ratios
        left = np.ones(len(self), dtype=bool)
        left[list(chosen)] = False
        if exclude is not None:
            left[int(exclude)] = False
        ref_a = self.reference(chosen)
        if not left.any():
            return ref_a, [], 0.0, float(ratios[chosen[0]])
        score = np.where(left, ratios, np.inf)
        other = [int(k) for k in np.flatnonzero(score <= score.min() + self.ratio_tolerance)]
        mag_t, mag_a, mag_b = xp.abs(signal), self._mean_mag(chosen), self._mean_mag(other)
        step, off = mag_b - mag_a, mag_t - mag_a
        sums = xp.stack([xp.sum(xp.where(self.mask, off * step, 0.0)), xp.sum(xp.where(self.mask, step * step, 0.0))])
        num, den = (float(v) for v in to_numpy(sums))
        w = min(max(num / den, 0.0), 1.0) if den > 0 else 0.0
        resid = off - w * step
        ratio = float(to_numpy(xp.sum(xp.where(self.mask, resid * resid, 0.0)))) / self.noise_ssd
        if w == 0.0:
            return ref_a, [], 0.0, ratio
        ref = xp.astype((1.0 - w) * ref_a + w * self.reference(other), xp.complex64)
        return ref, other, w, ratio

    def _mean_mag(self, entries):
        return self._mean_over(self.mags, entries)

    def _mean_over(self, stack, entries):
        """Mean of ``stack[entries]`` along the entry axis (the entry itself for one)."""
        if len(entries) == 1:
            return stack[entries[0], ...]
        idx = from_numpy(np.asarray(entries, dtype=np.int64), self.xp)
        return self.xp.mean(self.xp.take(stack, idx, axis=0), axis=0)

    def reference(self, chosen):
        """Complex mean of the chosen entries (complex64 on the device).

        Parameters
        ----------
        chosen : sequence of int

        Returns
        -------
        complex array, shape (z, y, x)
        """
        return self.xp.astype(self._mean_over(self.entries, chosen), self.xp.complex64, copy=False)
