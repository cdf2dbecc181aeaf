"""Self-checks of the independent free-breathing phantom (tests/breathing_phantoms.py): its truth, not mrtherm.

The heat law is re-evaluated here by brute force (point samples, numerical slice average, fine Riemann sums) so
the phantom's separable/erf bookkeeping is checked against the documented law.
"""

import functools
import math
import time

import numpy as np
import pytest

from breathing_phantoms import (GAMMABAR_HZ_PER_T, breathing_displacement_mm, case_id, cem43_linear_min, family,
                                make_breathing_exam)


@functools.lru_cache(maxsize=None)
def _exam(**kw):
    return make_breathing_exam(**kw)


def exam(**kw):
    return _exam(**dict(sorted(kw.items())))


# ---------------------------------------------------------------------------------------------------- CEM43


def test_cem43_of_hand_ramps_is_exact():
    t = np.array([0.0, 60.0])
    assert cem43_linear_min(np.array([43.0, 43.0]), t) == pytest.approx(1.0, rel=1e-12)
    assert cem43_linear_min(np.array([44.0, 44.0]), t) == pytest.approx(2.0, rel=1e-12)
    assert cem43_linear_min(np.array([42.0, 42.0]), t) == pytest.approx(0.25, rel=1e-12)
    assert cem43_linear_min(np.array([37.0, 37.0]), t) == pytest.approx(0.25 ** 6, rel=1e-12)
    # 41 -> 45 C over 120 s: split at 43 C (60 s); closed form per piece
    k = 4.0 / 120.0
    below = (1.0 - 0.25 ** 2) / math.log(4.0) / k
    above = (2.0 ** 2 - 1.0) / math.log(2.0) / k
    want = (below + above) / 60.0
    assert cem43_linear_min(np.array([41.0, 45.0]), np.array([0.0, 120.0])) == pytest.approx(want, rel=1e-12)
    assert cem43_linear_min(np.array([45.0, 41.0]), np.array([0.0, 120.0])) == pytest.approx(want, rel=1e-12)
    # the same ramp as 3 samples (node at 43) and as a dense midpoint sum
    assert cem43_linear_min(np.array([41.0, 43.0, 45.0]), np.array([0.0, 60.0, 120.0])) == pytest.approx(want)
    tt = (np.arange(120000) + 0.5) * 1e-3
    temp = 41.0 + k * tt
    dense = np.sum(np.where(temp >= 43, 0.5, 0.25) ** (43 - temp)) * 1e-3 / 60.0
    assert dense == pytest.approx(want, rel=1e-6)
    # vectorised over other axes, time on axis 0 or -1
    a = np.stack([np.full(3, 43.0), np.array([41.0, 43.0, 45.0])], axis=1)
    got = cem43_linear_min(a, [0.0, 60.0, 120.0], axis=0)
    assert got == pytest.approx([2.0, want])
    assert cem43_linear_min(a.T, [0.0, 60.0, 120.0], axis=-1) == pytest.approx([2.0, want])


# ---------------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("kind", ["rigid", "sliding"])
def test_arrays_units_and_labels(kind):
    e = exam(kind=kind)
    t, z, y, x = e.magnitude.shape
    assert (t, z, y, x) == (44, 3, 64, 64)
    assert e.magnitude.dtype == np.float32 and e.phase_rad.dtype == np.float32
    assert e.phase_rad.min() >= -np.pi and e.phase_rad.max() < np.pi
    assert e.temperature_tissue_c.shape == e.temperature_image_c.shape == (t, z, y, x)
    assert e.labels_ref.dtype == np.int16 and set(np.unique(e.labels_ref)) <= {0, 1, 5, 6, 12}
    assert {0, 1, 5, 6} <= set(np.unique(e.labels_ref))
    assert np.allclose(np.diag(e.affine), [2.0, 2.0, 4.0, 1.0])
    tissue = np.isin(e.labels_ref, (1, 12))
    assert np.all(np.isfinite(e.temperature_tissue_c[:, tissue]))
    assert np.all(np.isnan(e.temperature_tissue_c[:, ~tissue]))
    assert np.all(np.isnan(e.dose_tissue_cem43_min[~tissue])) and np.all(e.dose_tissue_cem43_min[tissue] > 0)
    # baseline exactly unheated; heated frames after the baseline; peak ~72 C
    assert np.all(e.temperature_tissue_c[:e.n_baseline][:, tissue] == 37.0)
    assert e.heated_frames.min() >= e.n_baseline
    assert 66.0 < e.peak_temperature_c < 75.0
    # cortex band: tissue voxels with a cortex voxel in the in-plane 8-neighbourhood
    band = e.cortex_band_ref
    assert band.sum() > 100 and np.all(tissue[band])
    cortex = e.labels_ref == 5
    for zz, yy, xx in zip(*np.nonzero(band)):
        assert cortex[zz, yy - 1:yy + 2, xx - 1:xx + 2].any()
    # noise SD from the air (no signal there)
    from scipy import ndimage
    far_air = ndimage.binary_erosion(e.labels_ref == 0, np.ones((1, 9, 9), bool), border_value=1)  # body moves <= 2 vox
    c = e.complex_image()
    assert np.std(c.real[:, far_air]) == pytest.approx(2.5, rel=0.05)
    # tissue SNR 40
    assert np.median(e.magnitude[:, tissue]) == pytest.approx(100.0, rel=0.03)


def test_family_covers_every_value():
    fam = family()
    assert 12 <= len(fam) <= 16
    assert {c["heat_distance_mm"] for c in fam} == {0, 2, 4, 8}
    assert {c["motion_mm"] for c in fam} == {2, 4, 8}
    assert {3.0, 6.0} <= {c["period_s"] for c in fam}
    assert {c["kind"] for c in fam} == {"rigid", "sliding"} and {c["resp_b0"] for c in fam} == {True, False}
    for d in (2, 4):
        assert {c["kind"] for c in fam if c["heat_distance_mm"] == d} == {"rigid", "sliding"}
    assert len({case_id(c) for c in fam}) == len(fam)


# ---------------------------------------------------------------------------------------------------- motion


@pytest.mark.parametrize("kind", ["rigid", "sliding"])
def test_shifts_follow_the_breathing_law(kind):
    e = exam(kind=kind, breathing_phase_rad=1.3, n_frames=20)
    info = e.info
    d = breathing_displacement_mm(e.frame_times_s, 4.0, 4.0, 1.3)
    direction = np.array([math.cos(math.radians(30.0)), math.sin(math.radians(30.0))])
    want_mm = (d - d[0])[:, None] * direction[None]
    assert np.allclose(e.shift_vox * np.array([2.0, 2.0]), want_mm, atol=1e-12)
    assert np.abs(e.shift_vox[0]).max() == 0.0
    assert np.ptp(e.shift_vox * 2.0 @ direction) > 3.5  # states spread over the cycle
    axis = np.array(info["bone_axis_yx"])
    cross = abs(axis[0] * direction[1] - axis[1] * direction[0])
    if kind == "sliding":
        assert cross < 1e-12  # tissue slides parallel to the bone edge
    else:
        assert cross > 0.5  # rigid: the motion crosses the edge obliquely
    # the baseline samples many breathing states
    b = np.array(info["breathing_signal"])[:e.n_baseline]
    assert b.min() < 0.15 and b.max() > 0.85 and len(np.unique(np.round(b, 3))) == e.n_baseline


@pytest.mark.parametrize("kind", ["rigid", "sliding"])
def test_integer_shift_moves_tissue_truth_and_anatomy(kind):
    # period 3.4 s, frames 1.7 s apart: odd frames at full inspiration, 4 mm along y = exactly 2 voxels
    e = exam(kind=kind, motion_angle_deg=0.0, period_s=3.4, sigma=0.0, resp_b0=False, n_frames=30)
    assert np.allclose(e.shift_vox[1::2], [2.0, 0.0], atol=1e-9)
    assert np.allclose(e.shift_vox[0::2], 0.0, atol=1e-9)
    f = 27  # heated (near the end of the sonication), at full inspiration
    assert f in e.heated_frames
    img = e.temperature_image_c[f][:, 2:, :]
    tis = e.temperature_tissue_c[f][:, :-2, :]
    both = np.isfinite(img) & np.isfinite(tis)
    fy, fx = e.info["focus_yx_mm"]
    yy, xx = np.meshgrid(np.arange(2, 64) * 2.0, np.arange(64) * 2.0, indexing="ij")
    near = (np.hypot(yy - fy, xx - fx) < 12.0)[None] & both
    assert near.sum() > 50 and np.nanmax(img[near]) > 60.0
    assert np.allclose(img[near], tis[near], atol=1e-9)
    # anatomy: rigid moves the bone with the tissue; sliding leaves it in place
    mag = e.magnitude
    bone = np.isin(e.labels_ref, (5, 6))
    moved = np.roll(bone, 2, axis=1)
    if kind == "rigid":
        assert np.abs(mag[1][moved] - mag[0][bone]).mean() < 0.1 * np.abs(mag[1][bone] - mag[0][bone]).mean()
    else:
        assert np.allclose(mag[1][bone], mag[0][bone], rtol=0.05, atol=1.0)
        assert np.abs(mag[1][moved] - mag[0][bone]).mean() > 5.0


# ---------------------------------------------------------------------------------------------------- heat and dose


def _law_rise(info, y, x, z, t):
    """The documented heat law, evaluated pointwise (own code): points (y, x, z) mm broadcast, times ``t`` (nt,)
    -> (nt, *points)."""
    h = info["heat"]
    s0 = h["fwhm_mm"] / (2 * math.sqrt(2 * math.log(2)))
    sz0 = h["fwhm_z_mm"] / (2 * math.sqrt(2 * math.log(2)))
    t_on, t_off = h["t_on_s"], h["t_off_s"]
    t = np.asarray(t, float)
    after = np.maximum(t - t_off, 0.0)
    a = np.where(t <= t_on, 0.0, np.where(
        t <= t_off, (1 - np.exp(-(t - t_on) / h["tau_s"])) / (1 - math.exp(-h["sonication_s"] / h["tau_s"])),
        np.exp(-after / h["perfusion_tau_s"])))
    s2 = s0 ** 2 + 2 * h["diffusivity_mm2_per_s"] * after
    sz2 = sz0 ** 2 + 2 * h["diffusivity_mm2_per_s"] * after
    fy, fx = info["focus_yx_mm"]
    r2 = ((y - fy) ** 2 + (x - fx) ** 2)[None]
    dz2 = ((z - info["focus_z_mm"]) ** 2)[None]
    e = (slice(None),) + (None,) * np.ndim(r2[0])
    return (h["point_peak_rise_c"] * a[e] * s0 ** 2 / s2[e] * np.exp(-r2 / (2 * s2[e])) * sz0 / np.sqrt(sz2[e])
            * np.exp(-dz2 / (2 * sz2[e])))


def _voxel_curve(e, iz, iy, ix, times):
    """Brute-force voxel truth: mean over S x S in-plane sub-samples (all tissue), Gauss-Legendre slice average."""
    S = e.info["supersample"]
    vz, vy, vx = e.info["voxel_mm"]
    off = (np.arange(S) + 0.5) / S - 0.5
    zo, zw = np.polynomial.legendre.leggauss(16)
    z, y, x = np.meshgrid(iz * vz + zo * vz / 2, iy * vy + off * vy, ix * vx + off * vx, indexing="ij")
    w = zw[:, None, None] / 2.0 / (S * S)
    times = np.asarray(times, float)
    out = np.empty(times.size)
    for i in range(0, times.size, 500):
        out[i:i + 500] = np.sum(w[None] * _law_rise(e.info, y, x, z, times[i:i + 500]), axis=(1, 2, 3))
    return out + 37.0


def test_tissue_truth_and_dose_follow_the_heat_law():
    e = exam(kind="rigid", heat_distance_mm=8.0, n_frames=40)
    fz, fy, fx = (int(round(v)) for v in e.info["focus_voxel_zyx"])
    # voxel peak rise at t_off is the calibrated 35 C (the focus voxel is wholly tissue here)
    assert e.labels_ref[fz, fy, fx] == 12
    assert _voxel_curve(e, fz, fy, fx, [e.info["heat"]["t_off_s"]])[0] - 37.0 == pytest.approx(35.0, rel=1e-6)
    t_end = e.frame_times_s[-1]
    fine = (np.arange(int(round(t_end / 0.01))) + 0.5) * 0.01
    checked = 0
    for dz, dy, dx in [(0, 0, 0), (0, 1, 0), (0, 0, -1), (1, 0, 0), (-1, 1, 1), (0, 2, 2), (0, -3, 1)]:
        iz, iy, ix = fz + dz, fy + dy, fx + dx
        if e.labels_ref[iz, iy, ix] not in (1, 12) or e.cortex_band_ref[iz, iy, ix]:
            continue
        # truth temperature at frame times: same law
        want = _voxel_curve(e, iz, iy, ix, e.frame_times_s)
        assert np.allclose(e.temperature_tissue_c[:, iz, iy, ix], want, rtol=0, atol=1e-9)
        # the fine dose: midpoint sum of the law at 0.01 s
        temp = _voxel_curve(e, iz, iy, ix, fine)
        dose = np.sum(np.where(temp >= 43, 0.5, 0.25) ** (43 - temp)) * 0.01 / 60.0
        assert e.dose_tissue_cem43_min[iz, iy, ix] == pytest.approx(dose, rel=5e-3)
        # the framewise dose: exact integral of the linear interpolation of the frame samples
        assert e.dose_tissue_framewise_cem43_min[iz, iy, ix] == pytest.approx(
            cem43_linear_min(want, e.frame_times_s), rel=1e-12)
        checked += 1
    assert checked >= 5
    assert e.dose_tissue_cem43_min[fz, fy, fx] > 240.0
    # far from the focus: 37 C all the way
    tissue = np.isin(e.labels_ref, (1, 12))
    zz, yy, xx = np.nonzero(tissue)
    far = np.argmax((yy - fy) ** 2 + (xx - fx) ** 2)
    assert e.dose_tissue_cem43_min[zz[far], yy[far], xx[far]] == pytest.approx(0.25 ** 6 * t_end / 60.0, rel=1e-12)
    # lesion volume = framewise 240-CEM43 tissue voxels times the voxel volume
    n = np.sum(e.dose_tissue_framewise_cem43_min >= 240.0)
    assert n >= 5
    assert e.lesion_tissue_ml[240] == pytest.approx(n * 4 * 2 * 2 / 1000.0)
    assert set(e.lesion_tissue_ml) == {240}


def test_lesion_shrinks_when_half_the_focus_falls_on_bone():
    on_bone = exam(kind="rigid", heat_distance_mm=0.0, n_frames=40)
    clear = exam(kind="rigid", heat_distance_mm=8.0, n_frames=40)
    assert 0 < on_bone.lesion_tissue_ml[240] < clear.lesion_tissue_ml[240]
    # the focus sits on the outer cortex surface
    info = on_bone.info
    c = np.array(info["bone_centre_yx_mm"])
    f = np.array(info["focus_yx_mm"])
    along = np.dot(f - c, info["bone_axis_yx"])
    assert abs(abs(np.dot(f - c, info["bone_normal_yx"])) - info["bone_radius_mm"]) < 1e-9
    assert abs(along) < info["bone_half_length_mm"]


# ---------------------------------------------------------------------------------------------------- signal


def test_partial_volume_keeps_complex_sums_and_prf_sign():
    e = exam(kind="rigid", motion_mm=0.0, resp_b0=False, drift_rad=0.0, sigma=0.0, n_frames=32)
    sc = e.scene
    S = sc.S
    f = int(np.argmax(np.nanmax(e.temperature_tissue_c, axis=(1, 2, 3))))
    img, temp_img, sub, cls = sc.render_frame(f, with_subsamples=True)
    # noise-free voxels are the complex mean of their sub-samples
    assert np.allclose(sub.reshape(3, 64, S, 64, S).mean(axis=(2, 4)), img)
    c = e.complex_image()[f]
    assert np.allclose(c, img, atol=1e-3 * 150)
    # an edge voxel (tissue + marrow / cortex) holds the complex mean, not the magnitude mean
    mixed = (cls.reshape(64, S, 64, S)[:, :, :, :, None] == np.arange(4)).any(axis=(1, 3)).sum(axis=-1) >= 2
    mag_mean = np.abs(sub).reshape(3, 64, S, 64, S).mean(axis=(2, 4))
    assert np.any(np.abs(img)[1][mixed] < 0.8 * mag_mean[1][mixed])
    assert np.all(np.abs(img) <= mag_mean + 1e-9)
    # PRF: phase change = 2 pi gammabar alpha B0 TE dT (negative for heating) in tissue
    k = 2 * np.pi * GAMMABAR_HZ_PER_T * -0.01e-6 * 3.0 * 0.01
    assert e.info["prf_rad_per_c"] == pytest.approx(k)
    dphi = np.angle(e.complex_image()[f] * np.conj(e.complex_image()[0]))
    pure = np.isfinite(e.temperature_image_c[f]) & ~e.cortex_band_ref
    want = k * (e.temperature_image_c[f] - 37.0)
    assert np.abs(dphi[pure] - want[pure]).max() < 0.05
    fz, fy, fx = (int(round(v)) for v in e.info["focus_voxel_zyx"])
    assert dphi[fz, fy, fx] < -1.5
    # marrow carries the fat phase and no PRF; baseline frames are identical without motion, resp and drift
    assert np.allclose(e.complex_image()[1], e.complex_image()[0], atol=1e-3)


def test_respiratory_b0_follows_the_breathing_signal():
    on = exam(kind="sliding", resp_b0=True, drift_rad=0.0, sigma=0.0, motion_mm=0.0, n_frames=20)
    off = exam(kind="sliding", resp_b0=False, drift_rad=0.0, sigma=0.0, motion_mm=0.0, n_frames=20)
    b = np.array(on.info["breathing_signal"])
    tissue = on.labels_ref == 1
    for f in range(1, on.n_baseline):
        d = np.angle(on.complex_image()[f] * np.conj(off.complex_image()[f]))[tissue]
        assert np.abs(d).max() <= 0.5 * b[f] + 1e-3
        assert np.abs(d).max() >= 0.3 * b[f] - 1e-3


def test_generation_is_fast():
    t0 = time.perf_counter()
    e = make_breathing_exam(kind="sliding", seed=5)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0
    assert e.info["generation_s"] <= elapsed
