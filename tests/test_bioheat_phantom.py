"""Self-checks of the independent Pennes bioheat phantom (tests/bioheat_phantom.py): energy, beam, conduction.

The phantom is the truth other tests hold the bioheat model to, so its own solver is checked here against
conservation and closed-form results, never against ``mrtherm``.
"""
import math

import numpy as np
import pytest

import bioheat_phantom as bp

NO_PERFUSION = {tissue: {"omega": 0.0} for tissue in bp.NOMINAL}
COARSE = (0.5, 1.0)  # (h_xy, h_z) mm: enough for the checks that do not need the converged field


@pytest.fixture(scope="module")
def default_phantom():
    """The default phantom, built once for this module."""
    # the one default run (~25 s on 2 cores) shared by the checks of the converged field
    return bp.make()


def test_energy_balance_without_perfusion():
    """Without perfusion the stored heat equals the deposited energy within 2 %."""
    # 5 s of power from t = 0: heat has spread ~1 mm, so the faces (where T = 37 is imposed) take almost nothing
    ph = bp.make(n_frames=3, n_baseline=1, sonication_s=(0.0, 5.0), perturbation=NO_PERFUSION, h_fine_mm=COARSE)
    sol = ph.solution
    deposited = float(np.sum(sol.q_w_m3 * sol.volume_m3)) * 5.0
    stored = sol.energy_j[-1] - sol.energy_j[0]
    assert stored == pytest.approx(deposited, rel=0.02)
    assert stored <= deposited  # the faces can only take heat out
    # half-way, half the energy (the source is constant)
    assert sol.energy_j[1] == pytest.approx(deposited / 2, rel=0.02)


def test_beam_power_is_the_same_through_every_plane():
    """The unattenuated beam carries ``I0 pi w0^2 / 2`` through every plane y = const (within 2 %)."""
    grid = bp.make_grid()
    zc, _, xc = grid.centres_mm
    zc, xc = zc[grid.core[0]], xc[grid.core[2]]
    hz, hx = zc[1] - zc[0], xc[1] - xc[0]
    expected = math.pi * bp.WAIST_MM ** 2 / 2
    for s in (-14.0, -5.0, 0.0, 0.3, 10.0, 24.0):
        plane = bp.beam_shape(xc[None, :], bp.FOCUS_XYZ_MM[1] + s, zc[:, None])
        assert plane.sum() * hx * hz == pytest.approx(expected, rel=0.02), s


def test_attenuation_along_the_axis_matches_the_layers():
    """The source on the beam axis before the bone matches the layered attenuation exactly."""
    # before the bone the ray crosses 10 mm of fat, then muscle: A = exp(-2 (mu_fat 10 mm + mu_muscle (y - 10)));
    # the default grid (1 mm cells there) has a cell face at the fat-muscle boundary y = 10 mm
    grid = bp.make_grid()
    zc, yc, xc = grid.centres_mm
    labels = bp.tissue_label(xc[None, None, :], yc[None, :, None], zc[:, None, None])
    factors = bp.full_factors()
    mu = bp.property_maps(labels, factors)["mu"]
    q = bp.heat_source(grid, mu, 1.0)
    props = bp.true_properties(factors)
    k, i = np.argmin(abs(zc - 12.25)), np.argmin(abs(xc - 48.125))
    for j in np.flatnonzero((yc > 12) & (yc < 47)):
        path_m = (props["fat"]["mu"] * 10.0 + props["muscle"]["mu"] * (yc[j] - 10.0)) * 1e-3
        expected = 2 * mu[k, j, i] * bp.beam_shape(xc[i], yc[j], zc[k]) * math.exp(-2 * path_m)
        assert q[k, j, i] == pytest.approx(expected, rel=1e-9)


def test_conduction_spreads_a_gaussian_like_the_heat_kernel():
    """A Gaussian in homogeneous muscle gains variance 2 kappa t per axis (within 3 %)."""
    # homogeneous muscle, no source or perfusion: the variance grows by 2 kappa t along each axis
    h = (0.5e-3, 0.25e-3, 0.25e-3)
    shape = (32, 64, 64)
    muscle = bp.true_properties(bp.full_factors())["muscle"]
    k = np.full(shape, muscle["k"])
    rho_c = np.full(shape, muscle["rho"] * muscle["c"])
    kappa = muscle["k"] / (muscle["rho"] * muscle["c"])
    solver = bp.PennesADI(tuple(np.full(n, d) for n, d in zip(shape, h)), k, rho_c, np.zeros(shape))
    axes = [(np.arange(n) - (n - 1) / 2) * d for n, d in zip(shape, h)]
    r2 = sum(a.reshape([-1 if i == d else 1 for i in range(3)]) ** 2 for d, a in enumerate(axes))
    u0 = 10.0 * np.exp(-r2 / (2 * 1.0e-3 ** 2))
    t = 5.0
    u = np.array(next(iter(bp.march(solver, u0, None, [t], ()))))
    assert u.sum() == pytest.approx(u0.sum(), rel=1e-4)  # the tails never reach the faces
    for d, a in enumerate(axes):
        shaped = a.reshape([-1 if i == d else 1 for i in range(3)])
        var0 = float(np.sum(u0 * shaped ** 2) / u0.sum())
        var1 = float(np.sum(u * shaped ** 2) / u.sum())
        assert var1 - var0 == pytest.approx(2 * kappa * t, rel=0.03), d


def test_small_variants_are_deterministic_and_consistent():
    """Same seed, same frames; NaN outside the mask; phase = PRF of truth + noise; label grids."""
    kw = dict(n_frames=5, h_fine_mm=COARSE, seed=7)
    a, b = bp.make(**kw), bp.make(**kw)
    np.testing.assert_array_equal(a.phase_rad, b.phase_rad)
    np.testing.assert_array_equal(a.magnitude, b.magnitude)
    assert np.all(np.isnan(a.measured_c[:, ~a.measured_mask]))
    assert not np.any(np.isnan(a.measured_c[:, a.measured_mask]))
    # phase is the PRF shift of truth + the same noise that measured_c carries
    per_c = 2 * np.pi * bp.GAMMA_BAR_HZ_T * bp.PRF_ALPHA_PER_C * a.b0_t * a.te_s
    expected = bp.wrap(per_c * (a.measured_c[:, a.measured_mask] - 37.0))
    np.testing.assert_allclose(a.phase_rad[:, a.measured_mask], expected, atol=1e-5)
    assert np.all((a.phase_rad > -np.pi) & (a.phase_rad <= np.float32(np.pi)))
    # partial-volume voxels: every voxel the cortex touches is cortical bone; the mask is pure muscle
    assert set(np.unique(a.labels[a.measured_mask])) == {3}
    assert a.labels_fine.shape == (16, 192, 192)
    np.testing.assert_allclose(a.affine_fine @ [0, 0, 0, 1], [-0.75, -0.75, -0.75, 1])


def test_default_run_faces_peak_and_shadow(default_phantom):
    """Default run: peak 65-75 C on the beam-side cortex, faces < 0.2 C (skin aside), shadow < 10 %."""
    ph = default_phantom
    rise = ph.peak_fine_c.max() - 37.0
    assert 28.0 < rise < 38.0  # peak 65-75 C
    # every face but the skin side (y = -1 mm, the 37 C coupling water the beam enters through) stays < 0.2 C
    faces = dict(zip(bp.FACES, ph.solution.face_rise_c.max(axis=0)))
    assert max(v for f, v in faces.items() if f != "y-") < 0.2, faces
    # the peak sits on or next to the beam-side cortex
    t, kz, jy, ix = np.unravel_index(np.argmax(ph.truth_fine_c), ph.truth_fine_c.shape)
    aff = ph.fine_box_affine
    x, y, z = aff[0, 0] * ix + aff[0, 3], aff[1, 1] * jy + aff[1, 3], aff[2, 2] * kz + aff[2, 3]
    step = np.array([-1, 0, 1])
    near = bp.tissue_label(x + aff[0, 0] * step[None, None, :], y + aff[1, 1] * step[None, :, None],
                           z + aff[2, 2] * step[:, None, None])
    assert np.any(near == bp.LABELS["cortical bone"]) and y < 52.0, (x, y, z)
    # behind the bone on the beam axis, the rise stays under 10 % of the peak rise (the bone shadows the beam)
    xs = aff[0, 0] * np.arange(ph.truth_fine_c.shape[3]) + aff[0, 3]
    ys = aff[1, 1] * np.arange(ph.truth_fine_c.shape[2]) + aff[1, 3]
    zs = aff[2, 2] * np.arange(ph.truth_fine_c.shape[1]) + aff[2, 3]
    on_axis = ph.truth_fine_c[:, np.abs(zs - 12.0) < 0.5][:, :, ys > 72.0][..., np.abs(xs - 48.0) < 0.25]
    assert on_axis.size and on_axis.max() - 37.0 < 0.1 * rise
