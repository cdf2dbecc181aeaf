"""B0 drift correction: a weighted low-order polynomial per slice.

The unwrapped phase change inside a reference region of unheated tissue is
modelled per slice as a polynomial in the in-plane coordinates,

- order 0: ``c0``
- order 1: ``c0 + c1 x + c2 y``
- order 2: ``c0 + c1 x + c2 y + c3 x^2 + c4 x y + c5 y^2``

with ``x, y`` the voxel indices scaled to [-1, 1] across the slice (for a
well-conditioned fit), and fitted by least squares weighted by the magnitude
squared. The fit is split in two steps so it can stream and run on a GPU:
:func:`normal_equations` reduces a frame to the small per-slice matrices
``A^T W A`` and ``A^T W u``; :func:`solve_drift` solves them on the host.
"""

from __future__ import annotations

import numpy as np

from mrtherm.backend import namespace, from_numpy, to_numpy
from mrtherm.errors import ParameterError

N_TERMS = {0: 1, 1: 3, 2: 6}
MIN_VOXELS_PER_TERM = 4
"""A slice needs at least this many reference voxels per polynomial term for its own fit."""


def check_order(order: int) -> int:
    """The drift polynomial order, checked.

    Parameters
    ----------
    order : int
        0 (offset), 1 (plane) or 2 (quadratic) in the in-plane coordinates.

    Returns
    -------
    int

    Raises
    ------
    ParameterError
        Any other value.
    """
    if order not in N_TERMS:
        raise ParameterError(f"drift order must be 0, 1 or 2, got {order!r}")
    return int(order)


def basis(ny: int, nx: int, order: int) -> np.ndarray:
    """Polynomial basis of one slice.

    Parameters
    ----------
    ny, nx : int
        Slice size in voxels.
    order : int
        0, 1 or 2 for the drift; any order >= 0 for the referenceless background.

    Returns
    -------
    ndarray of float64, shape (ny * nx, n_terms)
        Columns ``1, x, y, x^2, x y, y^2, x^3, x^2 y, ...`` (``(order + 1) (order + 2) / 2`` of them) with
        x, y the voxel indices scaled to [-1, 1] (0 along an axis of one voxel); rows in C order of (y, x).

    Examples
    --------
    >>> basis(1, 3, 1).tolist()
    [[1.0, -1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    """
    if int(order) != order or order < 0:
        raise ParameterError(f"polynomial order must be a non-negative integer, got {order!r}")
    y = np.linspace(-1.0, 1.0, ny) if ny > 1 else np.zeros(1)
    x = np.linspace(-1.0, 1.0, nx) if nx > 1 else np.zeros(1)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    xx, yy = xx.ravel(), yy.ravel()
    # degree by degree, x powers falling: 1 | x, y | x^2, x y, y^2 | x^3, x^2 y, ... (the drift's orders 0-2 and
    # the referenceless fit's higher orders share one layout)
    cols = [xx ** (d - b) * yy ** b for d in range(int(order) + 1) for b in range(d + 1)]
    return np.stack(cols, axis=1)


def harmonic_basis(ny: int, nx: int, order: int) -> np.ndarray:
    """Harmonic polynomials of one slice, for the near-harmonic referenceless background.

    A background field with no susceptibility source inside the region solves Laplace's equation there; in the
    slice plane its harmonic part is spanned by ``Re (x + i y)^n`` and ``Im (x + i y)^n`` (Salomir et al. 2012,
    near-harmonic reconstruction of the background phase).

    Parameters
    ----------
    ny, nx : int
        Slice size in voxels.
    order : int
        Highest degree n (>= 0).

    Returns
    -------
    ndarray of float64, shape (ny * nx, 2 order + 1)
        Columns ``1, Re z, Im z, Re z^2, Im z^2, ...`` with ``z = x + i y`` (x, y scaled to [-1, 1] as in
        :func:`basis`).

    Examples
    --------
    >>> harmonic_basis(1, 3, 2).tolist()  # y = 0: Re z = x, Im z = 0, Re z^2 = x^2, Im z^2 = 0
    [[1.0, -1.0, 0.0, 1.0, -0.0], [1.0, 0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0, 0.0]]
    """
    b = basis(ny, nx, 1)
    z = b[:, 1] + 1j * b[:, 2]
    cols = [np.ones(ny * nx)]
    for n in range(1, int(order) + 1):
        cols += [(z ** n).real, (z ** n).imag]
    return np.stack(cols, axis=1)


def pair_products(basis_np: np.ndarray) -> np.ndarray:
    """Products of basis columns for the packed normal matrix.

    Parameters
    ----------
    basis_np : ndarray, shape (n_pixels, k)

    Returns
    -------
    ndarray, shape (n_pixels, k (k + 1) / 2)
        ``A_i * A_j`` for i <= j in ``numpy.triu_indices(k)`` order.
    """
    k = basis_np.shape[1]
    iu, ju = np.triu_indices(k)
    return basis_np[:, iu] * basis_np[:, ju]


class DriftModel:
    """Per-slice polynomial drift model for a ``(z, y, x)`` grid in one array namespace.

    Parameters
    ----------
    shape_zyx : tuple of int
    order : int
        0, 1 or 2 for the drift (checked by the parameters); higher for the referenceless background.
    xp : array namespace in which frames will arrive
    harmonic : bool
        Harmonic polynomials (:func:`harmonic_basis`) instead of all monomials (near-harmonic referenceless).
    """

    def __init__(self, shape_zyx, order: int, xp, harmonic: bool = False):
        self.order = int(order)
        self.nz, self.ny, self.nx = (int(s) for s in shape_zyx)
        self.xp = xp
        a = harmonic_basis(self.ny, self.nx, self.order) if harmonic else basis(self.ny, self.nx, self.order)
        self.k = a.shape[1]
        self.basis = from_numpy(a, xp)  # (p, k) float64
        self.pairs = from_numpy(pair_products(a), xp)  # (p, k(k+1)/2)

    def normal_equations(self, phase, weight):
        """Reduce one frame to per-slice normal equations.

        Parameters
        ----------
        phase : (z, y, x) real array, rad (unwrapped phase change)
        weight : (z, y, x) real array, >= 0, zero outside the reference region

        Returns
        -------
        packed : (z, n_pairs) float64 ``sum w A_i A_j`` (upper triangle)
        rhs : (z, k) float64 ``sum w A_i u``
        count : (z,) float64 number of voxels with non-zero weight
        """
        xp = self.xp
        p = self.ny * self.nx
        w = xp.reshape(xp.astype(weight, xp.float64), (self.nz, p))
        u = xp.reshape(xp.astype(phase, xp.float64), (self.nz, p))
        packed = w @ self.pairs
        rhs = (w * u) @ self.basis
        count = xp.sum(xp.astype(w > 0, xp.float64), axis=1)
        return packed, rhs, count

    def solve(self, packed, rhs, count):
        """Solve the per-slice normal equations on the host; see :func:`solve_drift`.

        Parameters
        ----------
        packed : array, shape (z, k(k+1)/2)
            Upper triangle of each slice's normal matrix.
        rhs : array, shape (z, k)
            Right-hand sides.
        count : array, shape (z,)
            Reference voxels per slice.

        Returns
        -------
        ndarray of float64, shape (z, k)
            Coefficients per slice (rad); see :func:`solve_drift` for the fallback on slices with too few voxels.
        """
        return solve_drift(to_numpy(packed), to_numpy(rhs), to_numpy(count), self.k)

    def evaluate(self, coeffs_np: np.ndarray):
        """Drift phase of every voxel.

        Parameters
        ----------
        coeffs_np : ndarray, shape (z, k)
            Coefficients per slice, rad.

        Returns
        -------
        array of float64, shape (z, y, x)
            rad, in this model's array library.
        """
        xp = self.xp
        c = from_numpy(np.ascontiguousarray(coeffs_np, dtype=np.float64), xp)
        return xp.reshape(c @ self.basis.T, (self.nz, self.ny, self.nx))


def solve_drift(packed: np.ndarray, rhs: np.ndarray, count: np.ndarray, k: int):
    """Per-slice weighted least-squares coefficients from packed normal equations.

    A slice with fewer than ``MIN_VOXELS_PER_TERM * k`` reference voxels, or a
    singular or ill-conditioned system (condition number 1e12 or more), falls
    back to the volume-wide weighted mean (order 0) of the slices that do have
    reference voxels; with no reference voxel anywhere the drift is zero.

    Parameters
    ----------
    packed : ndarray, shape (z, k (k + 1) / 2)
        Upper triangle of each slice's ``A^T W A``.
    rhs : ndarray, shape (z, k)
        Each slice's ``A^T W u``, rad.
    count : ndarray, shape (z,)
        Reference voxels per slice.
    k : int
        Number of polynomial terms.

    Returns
    -------
    coeffs : ndarray of float64, shape (z, k)
        rad.
    fallback : ndarray of bool, shape (z,)
        Slices that took the volume-wide offset.
    """
    nz = packed.shape[0]
    iu, ju = np.triu_indices(k)
    coeffs = np.zeros((nz, k))
    fallback = np.zeros(nz, dtype=bool)
    # packed[:, 0] is sum(w) and rhs[:, 0] is sum(w u): the order-0 statistics.
    total_w = packed[:, 0].sum()
    global_offset = rhs[:, 0].sum() / total_w if total_w > 0 else 0.0
    for z in range(nz):
        ok = count[z] >= MIN_VOXELS_PER_TERM * k and packed[z, 0] > 0
        if ok:
            m = np.zeros((k, k))
            m[iu, ju] = packed[z]
            m[ju, iu] = packed[z]
            try:
                c = np.linalg.solve(m, rhs[z])
                ok = bool(np.all(np.isfinite(c))) and np.linalg.cond(m) < 1e12
            except np.linalg.LinAlgError:
                ok = False
        if ok:
            coeffs[z] = c
        else:
            fallback[z] = True
            coeffs[z, 0] = global_offset
    return coeffs, fallback


def fit_drift(phase, weight, order: int = 1):
    """Fit the drift of one frame.

    Parameters
    ----------
    phase : array, shape (z, y, x)
        Unwrapped phase change, rad.
    weight : array, shape (z, y, x)
        Fit weights (magnitude squared), 0 outside the reference region.
    order : {0, 1, 2}

    Returns
    -------
    coeffs : ndarray of float64, shape (z, k)
        rad (see :func:`basis` for the terms).
    drift : array of float64, shape (z, y, x)
        rad, in the array library of ``phase``.
    """
    xp = namespace(phase, weight)
    model = DriftModel(phase.shape, order, xp)
    coeffs, _ = model.solve(*model.normal_equations(phase, weight))
    return coeffs, model.evaluate(coeffs)
