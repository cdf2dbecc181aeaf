"""References for the phase change: the mean of the baseline frames, or a baseline library for breathing patients.

``mean`` (default): ``S_ref`` is the complex mean of the baseline frames.

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

REFERENCE_MODES = ("mean", "library")


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
