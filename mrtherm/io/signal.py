"""The complex MR signal of a frame from its two stored parts (magnitude and phase, or real and imaginary)."""

from __future__ import annotations

__all__ = ["signal_from_parts"]


def signal_from_parts(a, b, polar: bool, xp):
    """Complex64 signal from (magnitude, phase rad) or (real, imag); non-finite samples become 0.

    Parameters
    ----------
    a, b : array, shape (...)
        Magnitude and phase (rad) when ``polar``, else real and imaginary parts.
    polar : bool
    xp : array namespace
        Array library of ``a`` and ``b``.

    Returns
    -------
    array of complex64, shape (...)
    """
    # zero non-finite samples first: cos(inf) or 1j * inf would warn (and give NaN) further down
    finite = xp.isfinite(a) & xp.isfinite(b)
    a, b = xp.where(finite, a, xp.zeros_like(a)), xp.where(finite, b, xp.zeros_like(b))
    if polar:
        return xp.astype(a * xp.cos(b), xp.complex64) + 1j * xp.astype(a * xp.sin(b), xp.complex64)
    return xp.astype(a, xp.complex64) + 1j * xp.astype(b, xp.complex64)
