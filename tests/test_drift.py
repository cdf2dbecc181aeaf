"""Weighted polynomial drift fit."""

import numpy as np

import mrtherm
import pytest

from mrtherm import ParameterError
from mrtherm.thermometry.drift import DriftModel, basis, fit_drift, harmonic_basis, solve_drift


@pytest.mark.parametrize("order", [0, 1, 2])
def test_polynomial_recovered_exactly(xp, order):
    nz, ny, nx = 3, 20, 24
    rng = np.random.default_rng(order)
    a = basis(ny, nx, order)
    coeffs = rng.normal(size=(nz, a.shape[1]))
    phase = (coeffs @ a.T).reshape(nz, ny, nx)
    weight = rng.uniform(0.5, 2.0, size=(nz, ny, nx))
    weight[:, :5, :] = 0.0  # part of the slice outside the reference region
    phase_with_heat = phase.copy()
    phase_with_heat[:, :5, :] -= 3.0  # heating where the weight is zero must not matter
    got, drift = fit_drift(xp.asarray(phase_with_heat), xp.asarray(weight), order)
    np.testing.assert_allclose(got, coeffs, atol=1e-10)
    np.testing.assert_allclose(np.asarray(drift), phase, atol=1e-10)
    assert type(drift) is type(xp.asarray(phase))


def test_weighting_follows_magnitude_squared():
    # two voxels groups at different offsets: order-0 fit is their weighted mean
    phase = np.zeros((1, 2, 2))
    phase[0, 0, :] = 1.0
    weight = np.ones((1, 2, 2))
    weight[0, 0, :] = 3.0
    model = DriftModel(phase.shape, 0, np)
    packed, rhs, count = model.normal_equations(phase, weight)
    # 4 reference voxels: exactly enough for an order-0 slice fit (4 per term), so no fallback
    coeffs, fallback = model.solve(packed, rhs, count)
    assert coeffs[0, 0] == pytest.approx(0.75)
    assert not fallback[0]


def test_slice_without_reference_uses_global_offset():
    nz, ny, nx = 2, 16, 16
    phase = np.full((nz, ny, nx), 0.4)
    weight = np.ones_like(phase)
    weight[1] = 0.0
    coeffs, drift = fit_drift(phase, weight, 2)
    np.testing.assert_allclose(drift[1], 0.4)
    np.testing.assert_allclose(drift[0], 0.4, atol=1e-12)


def test_no_reference_anywhere_gives_zero():
    coeffs, fb = solve_drift(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros(2), 2)
    assert np.all(coeffs == 0) and fb.all()


def test_bad_order():
    with pytest.raises(ParameterError, match="order"):
        basis(4, 4, -1)
    with pytest.raises(ParameterError, match="drift order"):
        mrtherm.ThermometryParams(drift_order=3).validate()


def test_higher_order_basis_for_referenceless_by_hand():
    """Order 3 (referenceless background): 10 columns, degree by degree with x powers falling."""
    b = basis(1, 3, 3)  # x = -1, 0, 1; y = 0
    assert b.shape == (3, 10)
    np.testing.assert_array_equal(b[:, 6], [-1.0, 0.0, 1.0])  # x^3
    np.testing.assert_array_equal(b[:, 7:], np.zeros((3, 3)))  # x^2 y, x y^2, y^3


def test_basis_coordinates_span_minus_one_to_one_by_hand():
    """Columns 1, x, y, x^2, x y, y^2 with x, y the voxel indices scaled to [-1, 1]; a single row or column sits at 0.

    The coordinates are part of the report (drift coefficients per slice are in these units).
    """
    a = basis(3, 2, 2)  # rows in C order of (y, x): y in (-1, 0, 1), x in (-1, 1)
    expected = [[1, x, y, x * x, x * y, y * y] for y in (-1.0, 0.0, 1.0) for x in (-1.0, 1.0)]
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(basis(1, 3, 1), [[1, -1, 0], [1, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(basis(3, 1, 1), [[1, 0, -1], [1, 0, 0], [1, 0, 1]])


def test_fit_drift_defaults_to_a_plane():
    phase = np.zeros((2, 8, 8))
    coeffs, _ = fit_drift(phase, np.ones_like(phase))
    assert coeffs.shape == (2, 3)  # order 1: c0 + c1 x + c2 y


@pytest.mark.parametrize("order, n_needed", [(0, 4), (1, 12)])
def test_a_slice_needs_four_reference_voxels_per_term(order, n_needed):
    """Slice 0 has n_needed - 1 or n_needed reference voxels on a tilted phase; slice 1 is flat at 0.4 rad and
    fully in the reference. Too few: slice 0 takes the volume-wide weighted mean (order 0) and is flagged."""
    ny = nx = 8
    y, x = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    phase = np.stack([0.2 + 0.1 * x, np.full((ny, nx), 0.4)])
    for n_ref, expect_fallback in ((n_needed - 1, True), (n_needed, False)):
        weight = np.zeros((2, ny, nx))
        weight[1] = 1.0
        weight[0].flat[np.linspace(0, ny * nx - 1, n_ref).astype(int)] = 1.0
        model = DriftModel(phase.shape, order, np)
        coeffs, fallback = model.solve(*model.normal_equations(phase, weight))
        assert fallback.tolist() == [expect_fallback, False]
        if expect_fallback:
            total = weight.sum()
            assert coeffs[0, 0] == pytest.approx((phase * weight).sum() / total, rel=1e-12)
            assert np.all(coeffs[0, 1:] == 0)


def test_small_weights_are_fitted_like_large_ones():
    """Weights are |S|^2 in whatever units the scanner uses: 1e-6 fits exactly as 1 (a plane in slice 0; slice 1
    without reference takes the global weighted mean)."""
    ny = nx = 8
    y, x = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    phase = np.stack([0.2 + 0.1 * x - 0.05 * y, np.zeros((ny, nx))])
    weight = np.zeros_like(phase)
    weight[0] = 1e-6
    coeffs, drift = fit_drift(phase, weight, 1)
    np.testing.assert_allclose(coeffs[0], [0.2, 0.1, -0.05], atol=1e-12)
    np.testing.assert_allclose(coeffs[1], [0.2, 0.0, 0.0], atol=1e-12)  # the mean of the plane over the slice


def test_an_ill_conditioned_slice_falls_back():
    """Reference voxels on one row (16, more than the 12 an order-1 fit needs) plus one voxel off it with weight
    1e-14: the system is not singular but its condition number exceeds 1e12, so the slice takes the global
    offset."""
    phase = np.full((1, 8, 16), 0.3)
    weight = np.zeros_like(phase)
    weight[0, 3, :] = 1.0
    weight[0, 6, 2] = 1e-14
    model = DriftModel(phase.shape, 1, np)
    packed, rhs, count = model.normal_equations(phase, weight)
    m = np.zeros((3, 3))
    m[np.triu_indices(3)] = packed[0]
    m[np.tril_indices(3)] = m.T[np.tril_indices(3)]
    assert np.isfinite(np.linalg.cond(m)) and np.linalg.cond(m) > 1e12
    coeffs, fallback = model.solve(packed, rhs, count)
    assert fallback[0] and coeffs[0].tolist() == pytest.approx([0.3, 0.0, 0.0])


def test_a_singular_slice_falls_back():
    """Order 1 with every reference voxel on the centre row (y = 0): the y column is zero, the system singular."""
    phase = np.full((1, 9, 16), 0.3)
    weight = np.zeros_like(phase)
    weight[0, 4, :] = 1.0
    coeffs, fallback = solve_drift(*DriftModel(phase.shape, 1, np).normal_equations(phase, weight), 3)
    assert fallback[0] and coeffs[0].tolist() == pytest.approx([0.3, 0.0, 0.0])


def test_harmonic_basis_columns_are_the_real_and_imaginary_parts_of_powers_of_x_plus_iy():
    b = harmonic_basis(3, 3, 2)  # rows in C order of (y, x), both scaled to -1, 0, 1
    assert b.shape == (9, 5)  # 1 + 2 x order columns
    # corner y = 1, x = 1: z = 1 + i, z^2 = 2i; corner y = -1, x = 1: z = 1 - i, z^2 = -2i
    np.testing.assert_allclose(b[8], [1.0, 1.0, 1.0, 0.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(b[2], [1.0, 1.0, -1.0, 0.0, -2.0], atol=1e-12)
    # edge y = 1, x = 0: z = i, z^2 = -1
    np.testing.assert_allclose(b[7], [1.0, 0.0, 1.0, -1.0, 0.0], atol=1e-12)
    assert harmonic_basis(4, 5, 3).shape == (20, 7)
