"""Corrupt samples as corrupt slices and reconstruction glitches produce, for the engine parity tests."""

import numpy as np


def corrupt(a, b, frames, rng, zero_both=False):
    """NaN, +inf, -inf or a zero magnitude in 2 % of the voxels of ``frames``, in place; the hit voxels per frame.

    Parameters
    ----------
    a, b : ndarray, shape (t, z, y, x)
        Magnitude and phase (or real and imaginary): a NaN or inf lands in one of the two, a zero in ``a``.
    frames : sequence of int
    rng : numpy.random.Generator
    zero_both : bool
        A zero sets ``b`` to 0 as well (real/imaginary input: a zero signal).

    Returns
    -------
    dict of int to ndarray of bool
    """
    hits = {}
    for t in frames:
        hit = rng.random(a.shape[1:]) < 0.02
        kinds = rng.integers(0, 4, size=hit.shape)
        val = np.choose(kinds, [np.nan, np.inf, -np.inf, 0.0]).astype(a.dtype)
        first = (rng.random(hit.shape) < 0.5) | (kinds == 3)
        a[t] = np.where(hit & first, val, a[t])
        b[t] = np.where(hit & ~first, val, b[t])
        if zero_both:
            b[t] = np.where(hit & (kinds == 3), 0.0, b[t])
        hits[t] = hit
    return hits
