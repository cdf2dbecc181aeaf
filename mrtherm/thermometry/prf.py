"""Proton-resonance-frequency (PRF) shift physics.

Conventions (fixed by DESIGN.md):

- phase change ``dphi = angle(S_t * conj(S_ref))`` in rad, ``S_ref`` the complex
  mean of the baseline frames;
- ``delta_T = phase_sign * dphi / (2*pi * gammabar * alpha * B0 * TE)`` in C, with
  ``gammabar = 42.577478 MHz/T`` and ``alpha`` in ppm/C (default -0.01). With the
  default sign and a negative alpha, heating gives *negative* ``dphi``;
- theoretical noise ``sigma_T = sqrt(1 + 1/N) / (2*pi*gammabar*|alpha|*B0*TE*SNR)``
  for ``N`` baseline frames.
"""

from __future__ import annotations

import math

from mrtherm.backend import namespace
from mrtherm.errors import ParameterError

GAMMABAR_HZ_PER_T = 42.577478e6
"""Proton gyromagnetic ratio over 2 pi, Hz/T (CODATA 2018: 42.577 478 518 MHz/T)."""

DEFAULT_ALPHA_PPM_PER_C = -0.01
"""PRF thermal coefficient, ppm/C, for water protons in aqueous tissue (Ishihara 1995; Peters 1998)."""

DEFAULT_BODY_TEMP_C = 37.0


def radians_per_celsius(te_s: float, b0_t: float, alpha_ppm_per_c: float = DEFAULT_ALPHA_PPM_PER_C) -> float:
    """Phase change per degree, ``2*pi*gammabar*alpha*B0*TE`` in rad/C (negative for alpha < 0).

    Parameters
    ----------
    te_s : float
        Echo time in seconds (> 0).
    b0_t : float
        Main field strength in tesla (> 0).
    alpha_ppm_per_c : float
        PRF coefficient in ppm/C (non-zero).

    Returns
    -------
    float
        rad/C.

    Raises
    ------
    ParameterError
        A non-positive or non-finite TE or B0, or a zero alpha (named).

    Examples
    --------
    >>> round(radians_per_celsius(0.010, 3.0), 6)
    -0.080257
    """
    if not (te_s > 0 and math.isfinite(te_s)):
        raise ParameterError(f"te_s must be a positive echo time in seconds, got {te_s!r}")
    if not (b0_t > 0 and math.isfinite(b0_t)):
        raise ParameterError(f"b0_t must be a positive field strength in tesla, got {b0_t!r}")
    if not (alpha_ppm_per_c != 0 and math.isfinite(alpha_ppm_per_c)):
        raise ParameterError(f"alpha_ppm_per_c must be non-zero, got {alpha_ppm_per_c!r}")
    return 2.0 * math.pi * GAMMABAR_HZ_PER_T * alpha_ppm_per_c * 1e-6 * b0_t * te_s


def celsius_per_wrap(te_s: float, b0_t: float, alpha_ppm_per_c: float = DEFAULT_ALPHA_PPM_PER_C) -> float:
    """Temperature change that moves the phase by pi (one wrap of the (-pi, pi] range).

    Parameters
    ----------
    te_s : float
        Echo time (or echo-time difference), s.
    b0_t : float
        Main field, T.
    alpha_ppm_per_c : float, optional
        PRF coefficient, ppm/C (negative, -0.01 by default).

    Returns
    -------
    float
        C per pi rad, positive.

    Examples
    --------
    >>> round(celsius_per_wrap(0.010, 3.0), 2)
    39.14
    """
    return math.pi / abs(radians_per_celsius(te_s, b0_t, alpha_ppm_per_c))


def phase_difference(signal, reference):
    """``angle(signal * conj(reference))`` in rad, float32 for complex64 input.

    Parameters
    ----------
    signal, reference : complex arrays, broadcastable

    Returns
    -------
    array of float, rad in (-pi, pi]
        In the inputs' array library.
    """
    xp = namespace(signal, reference)
    prod = signal * xp.conj(reference)
    return xp.atan2(xp.imag(prod), xp.real(prod))


def unwrap_step(wrapped, previous_unwrapped):
    """Temporal unwrapping of one frame against the previous unwrapped frame.

    Adds the multiple of 2 pi that brings ``wrapped`` closest to
    ``previous_unwrapped``, so a phase that changes by less than pi between
    consecutive frames is followed through any number of wraps.

    Parameters
    ----------
    wrapped : real array, rad, values in (-pi, pi]
    previous_unwrapped : real array, rad, same shape

    Returns
    -------
    array, rad
        ``wrapped + 2 pi k`` with k the rounded ``(previous_unwrapped - wrapped) / 2 pi``.
    """
    xp = namespace(wrapped, previous_unwrapped)
    two_pi = 2.0 * math.pi
    k = xp.round((previous_unwrapped - wrapped) / two_pi)
    return wrapped + k * two_pi


def unwrap_time(wrapped, axis: int = 0):
    """Unwrap a phase series along ``axis`` (time) frame by frame; see :func:`unwrap_step`.

    Parameters
    ----------
    wrapped : array, shape (..., t, ...)
        Phase, rad, in (-pi, pi].
    axis : int
        Time axis.

    Returns
    -------
    array, same shape
        Unwrapped phase, rad, in the input's array library; the first frame is kept as it is.
    """
    xp = namespace(wrapped)
    moved = xp.moveaxis(wrapped, axis, 0)
    frames = [moved[0, ...]]
    for i in range(1, moved.shape[0]):
        frames.append(unwrap_step(moved[i, ...], frames[-1]))
    return xp.moveaxis(xp.stack(frames, axis=0), 0, axis)


def phase_to_delta_celsius(dphi, te_s, b0_t, alpha_ppm_per_c=DEFAULT_ALPHA_PPM_PER_C, phase_sign=1):
    """Temperature change from a (drift-corrected, unwrapped) phase change.

    Parameters
    ----------
    dphi : array, shape (...)
        Phase change, rad.
    te_s : float
        Echo time (or echo-time difference), s.
    b0_t : float
        Main field, T.
    alpha_ppm_per_c : float, optional
        PRF coefficient, ppm/C.
    phase_sign : {1, -1}, optional
        -1 for scanners whose phase turns the other way (see DESIGN.md).

    Returns
    -------
    array, shape (...)
        Temperature change, C: ``phase_sign * dphi / (2 pi gammabar alpha B0 TE)``.

    Raises
    ------
    ParameterError
        ``phase_sign`` is not +1 or -1.
    """
    if phase_sign not in (1, -1):
        raise ParameterError(f"phase_sign must be +1 or -1, got {phase_sign!r}")
    scale = phase_sign / radians_per_celsius(te_s, b0_t, alpha_ppm_per_c)
    return dphi * scale


def theoretical_sigma_celsius(snr, n_baseline: int, te_s, b0_t, alpha_ppm_per_c=DEFAULT_ALPHA_PPM_PER_C):
    """Noise-predicted temperature SD in C: ``sqrt(1+1/N) / (|2 pi gammabar alpha B0 TE| * SNR)``.

    Parameters
    ----------
    snr : array or float
        Magnitude signal-to-noise ratio (signal over per-channel noise SD).
    n_baseline : int
        Number of baseline frames averaged into the reference.
    te_s, b0_t, alpha_ppm_per_c : float
        As :func:`radians_per_celsius`.

    Returns
    -------
    array or float, C

    Raises
    ------
    ParameterError
        ``n_baseline`` < 1.
    """
    if n_baseline < 1:
        raise ParameterError(f"n_baseline must be >= 1, got {n_baseline}")
    k = abs(radians_per_celsius(te_s, b0_t, alpha_ppm_per_c))
    return math.sqrt(1.0 + 1.0 / n_baseline) / (k * snr)
