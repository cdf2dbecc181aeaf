"""Smooth background phase without a baseline (referenceless) and with a sparsity prior on the heat (hybrid).

Referenceless (Rieke et al. 2004; Kuroda's and Grissom's later variants): the
background phase of one frame is modelled per slice as a polynomial ``P`` in the
in-plane coordinates (same basis as the drift, any order) and the temperature
comes from ``angle(S e^{-iP})``. The frame's own phase is wrapped, so ``P`` is
not fitted to it directly: the phase differences of neighbouring voxels,
``angle(S[x+1] conj S[x])``, carry no wraps while the background changes by less
than pi per voxel, and they equal the *exact* differences of the polynomial's
basis columns between the two voxels (no derivative approximation). So the
non-constant coefficients come from one weighted least-squares fit to the x
and y neighbour differences (weight ``w1 w2 / (w1 + w2)``: the inverse variance
of a difference of two phases whose variances go as ``1 / |S|^2``), refitted
once without the differences beyond 4 robust SDs (the heated spot's steep
edges). The constant is the angle of ``sum w S e^{-iP'}`` over the voxels
within 4 robust SDs of the median phase (tissue that slid in, heat).

Sparsity prior (Grissom et al. 2010, hybrid multibaseline and referenceless):
per slice, ``u = A c + theta + noise`` with ``theta`` the heat, sparse and of one
sign (heating lowers the phase for ``alpha < 0`` and ``phase_sign = 1``).
:func:`sparse_background_fit` minimises ``sum w (u - A c - theta)^2 + lambda |theta|_1``
with ``theta`` of the heating sign by alternating a one-sided soft threshold
for ``theta`` (at ``tau``, per voxel) and weighted least squares for ``c``;
residuals beyond ``4/3 tau`` (4 noise SDs for ``tau`` = 3) against the heating
sign are not heat and not background (tissue that slid in): they leave the fit. The
background is refitted once without the heat's support (debiasing: otherwise
the ``tau`` the soft threshold leaves in each heated voxel pulls the fit), and
the temperature is the whole residual ``u - A c``: ``theta`` only keeps the
heat out of the background fit, so the l1 shrinkage does not bias the
temperature.

Two-signed (``sign = 0``, what the reference modes use): ``theta`` may take
either sign (a two-sided soft threshold, no anti-heat outliers), so a region
that cools below its baseline -- cryoablation, or tissue heated before the
baseline cooling back -- is kept out of the background as heat is, instead of
being absorbed into it.

Both functions work in the array library of their inputs (NumPy or CuPy: the
GPU twin is the same code on CuPy arrays). Only per-slice scalars cross to the
host -- the normal equations of a few unknowns, the robust scales and medians
(``nz`` numbers each) -- never a volume.
"""

from __future__ import annotations

import numpy as np

from mrtherm.backend import from_numpy, to_numpy
from mrtherm.thermometry.drift import pair_products, solve_drift
from mrtherm.thermometry.engine import normal_equations_on_host, stats_to_host
from mrtherm.thermometry.prf import phase_difference

ROBUST_CUT_SD = 4.0  # neighbour differences beyond 4 robust SDs (heat edges, vessels) leave the refit
SPARSE_ITERATIONS = 12
ANTI_HEAT_CUT = 4.0 / 3.0  # x tau (3 noise SDs): a residual beyond 4 noise SDs against the heating sign is an outlier
SPARSE_TOLERANCE_RAD = 1e-4  # stop when no coefficient moves the background by more than this


def _differences(model):
    """Basis differences between x and between y neighbours (no constant column), with their pair products, on
    the model's device; computed once per model."""
    cached = getattr(model, "_neighbour_differences", None)
    if cached is None:
        b = to_numpy(model.basis).reshape(model.ny, model.nx, model.k)[..., 1:]
        dx = (b[:, 1:] - b[:, :-1]).reshape(-1, model.k - 1)
        dy = (b[1:, :] - b[:-1, :]).reshape(-1, model.k - 1)
        cached = [(from_numpy(d, model.xp), from_numpy(pair_products(d), model.xp), d) for d in (dx, dy)]
        model._neighbour_differences = cached
    return cached


def _neighbour_terms(signal, weight, axis, xp):
    """Wrap-free neighbour phase differences along ``axis`` (2: x, 1: y) and their inverse-variance weights."""
    n = signal.shape[axis]
    hi = [slice(None)] * 3
    lo = [slice(None)] * 3
    hi[axis], lo[axis] = slice(1, n), slice(0, n - 1)
    g = phase_difference(signal[tuple(hi)], signal[tuple(lo)])
    w1, w2 = weight[tuple(hi)], weight[tuple(lo)]
    total = w1 + w2
    w = xp.where(total > 0, w1 * w2 / xp.where(total > 0, total, 1.0), 0.0)
    nz = signal.shape[0]
    return xp.reshape(xp.astype(g, xp.float64), (nz, -1)), xp.reshape(xp.astype(w, xp.float64), (nz, -1))


def _slice_medians(values, keep, xp) -> np.ndarray:
    """Per-slice median of ``values`` (shape (z, ...)) over the voxels where ``keep``, on the device; NaN for a
    slice without one. The median of an even count is the mean of the two middle values, as :func:`numpy.median`.

    Parameters
    ----------
    values : real array, shape (z, ...)
    keep : bool array, the same shape
    xp : array namespace

    Returns
    -------
    ndarray of float64, shape (z,)
        On the host (``z`` numbers).
    """
    out = []
    for z in range(values.shape[0]):
        v = xp.sort(xp.reshape(values[z, ...], (-1,))[xp.reshape(keep[z, ...], (-1,))])
        n = int(v.shape[0])
        out.append(xp.full((1,), float("nan"), dtype=xp.float64) if n == 0 else
                   xp.reshape(xp.astype((v[(n - 1) // 2] + v[n // 2]) / 2, xp.float64), (1,)))
    return np.asarray(to_numpy(xp.concat(out)), dtype=np.float64)


def _solve_slices(terms, n_unknowns, xp):
    """Per-slice weighted least squares from [(g, w, (D, D pairs, D host))] terms (one download); slices with too
    little data get zeros."""
    packed = sum(w @ d[1] for g, w, d in terms)
    rhs = sum((w * g) @ d[0] for g, w, d in terms)
    count = sum(xp.sum(xp.astype(w > 0, xp.float64), axis=1) for g, w, d in terms)
    coeffs, fallback = solve_drift(*stats_to_host(packed, rhs, count, xp), n_unknowns)
    coeffs[fallback] = 0.0  # the drift solver's fallback is an offset; here column 0 is a slope
    return coeffs


def smooth_phase_fit(signal, weight, model):
    """Referenceless background phase of one frame (see the module docstring).

    Parameters
    ----------
    signal : complex array, shape (z, y, x)
        The frame.
    weight : real array, shape (z, y, x)
        ``|S|^2`` in the fit region (unheated reliable tissue), 0 elsewhere.
    model : mrtherm.thermometry.drift.DriftModel
        The polynomial (order >= 1) in the frame's array library.

    Returns
    -------
    coeffs : ndarray of float64, shape (z, k)
        Per-slice coefficients, rad.
    background : array of float64, shape (z, y, x)
        ``A coeffs``, rad, in the array library of ``signal``.

    Examples
    --------
    >>> import numpy as np
    >>> from mrtherm.thermometry.drift import DriftModel
    >>> yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    >>> phase = (7.0 * xx - 5.0 * yy + 2.0)[None]  # more than one wrap across the slice
    >>> s = np.exp(1j * phase).astype(np.complex64)
    >>> coeffs, bg = smooth_phase_fit(s, np.ones(s.shape), DriftModel(s.shape, 1, np))
    >>> np.round(coeffs, 3).tolist()
    [[2.0, 7.0, -5.0]]
    """
    xp = model.xp
    dx, dy = _differences(model)
    gx, wx = _neighbour_terms(signal, weight, 2, xp)
    gy, wy = _neighbour_terms(signal, weight, 1, xp)
    terms = [(gx, wx, dx), (gy, wy, dy)]
    slopes = _solve_slices(terms, model.k - 1, xp)
    kept = []
    for g, w, d in terms:  # one robust refit: drop differences far from the fit (heat edges)
        r = g - from_numpy(slopes, xp) @ d[0].T
        scale = np.nan_to_num(1.4826 * _slice_medians(xp.abs(r), w > 0, xp), nan=np.inf)
        kept.append((g, xp.where(xp.abs(r) <= from_numpy(ROBUST_CUT_SD * scale[:, None], xp), w, 0.0), d))
    slopes = _solve_slices(kept, model.k - 1, xp)
    coeffs = np.concatenate([np.zeros((model.nz, 1)), slopes], axis=1)
    rotated = signal * xp.astype(xp.exp(-1j * model.evaluate(coeffs)), signal.dtype)
    w = xp.astype(weight, signal.dtype)
    # The constant, robustly: the median phase about the weighted mean direction (a quarter of the weight may sit
    # on tissue that slid in or on heat), then the weighted mean without the voxels beyond 4 robust SDs from it.
    mean_dir = np.angle(to_numpy(xp.sum(xp.reshape(rotated * w, (model.nz, -1)), axis=1)))
    turn = xp.astype(xp.exp(1j * from_numpy(mean_dir[:, None, None], xp)), signal.dtype)
    r = phase_difference(rotated, turn)
    used = weight > 0
    centre = np.nan_to_num(_slice_medians(r, used, xp), nan=0.0)
    off = xp.astype(r, xp.float64) - from_numpy(centre[:, None, None], xp)
    dev = xp.abs(xp.atan2(xp.sin(off), xp.cos(off)))  # wrapped into (-pi, pi]
    cut = np.nan_to_num(ROBUST_CUT_SD * 1.4826 * _slice_medians(dev, used, xp), nan=np.inf)
    keep = xp.where(dev <= from_numpy(cut[:, None, None], xp), w, 0)
    coeffs[:, 0] = np.angle(to_numpy(xp.sum(xp.reshape(rotated * keep, (model.nz, -1)), axis=1)))
    return coeffs, model.evaluate(coeffs)


def _heat_and_weight(r, weight, tau, sign, xp):
    """Soft threshold of the residual (the heat: one-sided, or two-sided for ``sign`` 0) and the weights without
    the anti-heat outliers (one-sided only)."""
    if sign == 0:
        return xp.sign(r) * xp.maximum(xp.abs(r) - tau, 0.0), weight
    theta = sign * xp.maximum(sign * r - tau, 0.0)
    outlier = sign * r < -ANTI_HEAT_CUT * tau
    return theta, xp.where(outlier, 0.0, weight)


def sparse_background_fit(model, u, weight, tau, sign):
    """Smooth background of ``u`` with a sparse heat kept out of the fit (see the module docstring).

    Parameters
    ----------
    model : mrtherm.thermometry.drift.DriftModel
    u : real array, shape (z, y, x)
        Unwrapped phase change, rad.
    weight : real array, shape (z, y, x)
        Fit weights (``|S|^2`` in the reference region), 0 elsewhere.
    tau : real array, shape (z, y, x), or float
        Soft threshold per voxel, rad (a few noise SDs of ``u``).
    sign : {1, -1, 0}
        Sign of the phase change of heating; 0: either sign (heating and cooling).

    Returns
    -------
    coeffs : ndarray of float64, shape (z, k)
        rad.
    fallback : ndarray of bool, shape (z,)
        Slices with too few reference voxels (see :func:`mrtherm.thermometry.drift.solve_drift`).
    iterations : int

    Examples
    --------
    >>> import numpy as np
    >>> from mrtherm.thermometry.drift import DriftModel
    >>> yy, xx = np.mgrid[-1:1:40j, -1:1:40j]
    >>> u = (0.3 + 0.2 * xx)[None] - 2.0 * (np.hypot(xx - 0.2, yy) < 0.2)[None]  # background and a hot spot
    >>> model = DriftModel(u.shape, 1, np)
    >>> coeffs, _, _ = sparse_background_fit(model, u, np.ones(u.shape), 0.05, -1)
    >>> np.round(coeffs, 4).tolist()
    [[0.3, 0.2, 0.0]]
    """
    xp = model.xp
    coeffs, fallback = solve_drift(*normal_equations_on_host(model, u, weight), model.k)
    for iteration in range(1, SPARSE_ITERATIONS + 1):
        theta, w = _heat_and_weight(u - model.evaluate(coeffs), weight, tau, sign, xp)
        new, fallback = solve_drift(*normal_equations_on_host(model, u - theta, w), model.k)
        # basis values lie in [-1, 1]: the sum of |coefficient changes| bounds the background change
        moved = float(np.max(np.abs(new - coeffs).sum(axis=1))) if new.size else 0.0
        coeffs = new
        if moved < SPARSE_TOLERANCE_RAD:
            break
    # Debias: the l1 prior found the heat's support; refit without it, so the residual tau that the soft
    # threshold leaves in every heated voxel does not pull the background.
    theta, w = _heat_and_weight(u - model.evaluate(coeffs), weight, tau, sign, xp)
    coeffs, fallback = solve_drift(*normal_equations_on_host(model, u, xp.where(theta != 0, 0.0, w)), model.k)
    return coeffs, fallback, iteration
