"""References for the phase change: the mean of the baseline frames, or a baseline library for breathing patients.

``auto`` (default): ``library`` when the baseline frames move, ``mean`` otherwise (:func:`choose_reference`).

``mean``: ``S_ref`` is the complex mean of the baseline frames.

``library``: the baseline frames, acquired during free breathing, are kept as a
library; each frame is paired with the entry whose magnitude image matches it
best (least sum of squared magnitude differences over the reliable voxels),
and its phase change is taken against that entry. A baseline frame is paired
with the best *other* entry (leave-one-out), so the baseline temperature SD
measures what the matching leaves. The match ratio -- that sum over the one
two noisy images of the same object would give, ``2 sigma^2`` per voxel -- is
reported per frame: about 1 for a match as good as the noise allows.
"""

from __future__ import annotations

import numpy as np

from mrtherm.backend import to_numpy

REFERENCE_MODES = ("auto", "mean", "library")
MOVING_SD_FACTOR = 3.0  # a voxel moves when its baseline magnitude SD exceeds 3 x the noise SD
MOVING_FRACTION = 0.01  # auto picks the library when more than 1 % of the reliable voxels move


def choose_reference(mode, base_mag, mask, sigma):
    """The reference to use and why (report.json ``reference``).

    ``auto``: the library when the baseline frames differ beyond noise -- more than
    ``MOVING_FRACTION`` of the reliable voxels have a magnitude SD over the baseline frames above
    ``MOVING_SD_FACTOR`` x sigma (for noise alone the chance is below 1e-6 per voxel from 3 frames
    on) -- else the mean. Magnitude is used because a B0 drift changes the phase of a static exam
    but not its magnitude.

    Parameters
    ----------
    mode : {"auto", "mean", "library"}
    base_mag : ndarray, shape (n, z, y, x)
        Baseline magnitudes (host).
    mask : ndarray of bool, shape (z, y, x)
        Reliable voxels.
    sigma : float
        Noise SD per channel.

    Returns
    -------
    used : {"mean", "library"}
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
    'library'
    """
    n = base_mag.shape[0]
    if mode != "auto":
        return mode, {"asked": mode, "used": mode, "why": "asked for"}
    if n < 3:
        return "mean", {"asked": "auto", "used": "mean", "why": f"{n} baseline frame(s): a library needs 3 or more"}
    sd = base_mag.std(axis=0, ddof=1)
    moving = float(np.mean(sd[mask] > MOVING_SD_FACTOR * sigma)) if mask.any() else 0.0
    used = "library" if moving > MOVING_FRACTION else "mean"
    why = (f"{moving:.2%} of the reliable voxels have a baseline magnitude SD above {MOVING_SD_FACTOR:g} x the noise "
           f"({'more' if used == 'library' else 'not more'} than {MOVING_FRACTION:.0%}): "
           f"{'the baseline frames move (breathing)' if used == 'library' else 'a still exam'}")
    return used, {"asked": "auto", "used": used, "why": why, "moving_voxel_fraction": moving}


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
    """

    def __init__(self, signals, mask, sigma, xp):
        self.xp = xp
        self.entries = xp.stack([xp.astype(s, xp.complex64) for s in signals])
        self.mags = xp.abs(self.entries)
        self.mask = mask
        n_mask = int(to_numpy(xp.sum(xp.astype(mask, xp.int64))))
        self.noise_ssd = max(2.0 * float(sigma) ** 2 * n_mask, np.finfo(np.float64).tiny)

    def __len__(self):
        return int(self.entries.shape[0])

    def match(self, signal, exclude=None):
        """The entry that matches ``signal`` best.

        Parameters
        ----------
        signal : complex array, shape (z, y, x)
        exclude : int, optional
            An entry not to choose (the frame itself, for baseline frames).

        Returns
        -------
        index : int
        ratio : float
            Its sum of squared magnitude differences over the noise expectation (about 1 at best).

        Examples
        --------
        >>> import numpy as np
        >>> lib = BaselineLibrary([np.ones((1, 2, 2)), 2 * np.ones((1, 2, 2))], np.ones((1, 2, 2), bool), 1.0, np)
        >>> lib.match(1.9 * np.ones((1, 2, 2), np.complex64))[0]
        1
        >>> lib.match(1.9 * np.ones((1, 2, 2), np.complex64), exclude=1)[0]
        0
        """
        xp = self.xp
        diff = self.mags - xp.abs(signal)[None, ...]
        ssd = to_numpy(xp.sum(xp.where(self.mask[None, ...], diff * diff, 0.0), axis=(1, 2, 3))).astype(np.float64)
        if exclude is not None and len(self) > 1:
            ssd[int(exclude)] = np.inf
        k = int(np.argmin(ssd))
        return k, float(ssd[k] / self.noise_ssd)

    def entry(self, index: int):
        """Entry ``index`` (complex64 on the device).

        Parameters
        ----------
        index : int

        Returns
        -------
        complex array, shape (z, y, x)
        """
        return self.entries[index]
