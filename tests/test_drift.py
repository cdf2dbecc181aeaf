"""Weighted polynomial drift fit."""

import numpy as np
import pytest

from mrtherm import ParameterError
from mrtherm.thermometry.drift import DriftModel, basis, fit_drift, solve_drift


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
        basis(4, 4, 3)
