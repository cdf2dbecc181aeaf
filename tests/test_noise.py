"""Noise SD estimators against known sigma, and the air-floor mask rule."""

import numpy as np
import pytest

import mrtherm
from mrtherm.thermometry.masks import air_threshold
from mrtherm.thermometry.noise import estimate_noise_sigma, rayleigh_background_sigma

RNG = np.random.default_rng(11)


def _complex_noise(shape, sigma):
    return RNG.normal(0, sigma, shape) + 1j * RNG.normal(0, sigma, shape)


def _anatomy(shape=(8, 64, 64)):
    """Tissue of varied brightness (50..900) in the centre, air around it."""
    s = np.zeros(shape)
    s[:, 16:48, 16:48] = np.linspace(50, 900, 32)[None, None, :]
    return s


@pytest.mark.parametrize("sigma", [3.0, 10.0, 250.0])
def test_one_frame_pure_rayleigh_background(sigma):
    # The case: a pure Rayleigh background of sigma 10 gave 1.9 with the old estimator.
    mag = np.abs(_complex_noise((1, 8, 64, 64), sigma))
    if sigma == 3.0:
        mag = np.round(mag)  # stored integers
    est, method, warnings = estimate_noise_sigma(mag)
    assert abs(est / sigma - 1) < 0.10, est
    assert "Rayleigh background" in method and not warnings


def test_one_frame_tissue_and_air():
    mag = np.abs(_anatomy() + _complex_noise((8, 64, 64), 10.0))[None]
    est, method, _ = estimate_noise_sigma(mag)
    assert abs(est / 10.0 - 1) < 0.10 and "Rayleigh background" in method


def test_one_frame_tissue_only_uses_the_tissue_detail():
    # Changed with the background-aware estimator: without a background the estimate now comes from the
    # tissue's diagonal detail (neighbour differences, the old method, are inflated by texture).
    y, x = np.mgrid[:64, :64]
    smooth = 300 + 200 * np.sin(x / 20.0) * np.cos(y / 15.0)
    for truth in (np.full((8, 64, 64), 500.0), np.broadcast_to(smooth, (8, 64, 64))):
        mag = np.abs(truth + _complex_noise((8, 64, 64), 10.0))[None]
        est, method, warnings = estimate_noise_sigma(mag)
        assert abs(est / 10.0 - 1) < 0.10, (est, method)
        assert "diagonal detail of the tissue" in method and "no noise background" in method and warnings


@pytest.mark.parametrize("n", [2, 3, 8])
def test_several_frames_gaussian_tissue(n):
    base = _anatomy() + 400.0 * (_anatomy() > 0)
    mags = np.abs(base[None] + _complex_noise((n, 8, 64, 64), 7.0))
    est, method, _ = estimate_noise_sigma(mags)
    assert abs(est / 7.0 - 1) < 0.10 and "bright voxels" in method


def test_several_frames_background_only():
    mags = np.abs(_complex_noise((4, 8, 64, 64), 5.0))
    est, method, _ = estimate_noise_sigma(mags)
    assert abs(est / 5.0 - 1) < 0.10 and "Rayleigh background" in method


def test_blanked_background_zeros_are_not_noise():
    mag = np.abs(_anatomy() + _complex_noise((8, 64, 64), 10.0))
    mag[:, :4, :] = 0.0  # the scanner blanked these rows
    sigma, info = rayleigh_background_sigma(mag)
    assert info["zeros"] == 8 * 4 * 64 and abs(sigma / 10.0 - 1) < 0.10


def test_air_floor_rule_on_sum_of_squares_background():
    # Sum of squares over 32 coils: air is a noncentral-chi floor ~ sqrt(64) sigma high, where SNR >= 5 admits it.
    coils, sigma = 32, 4.0
    tissue = _anatomy()
    sos = np.sqrt(sum(np.abs(tissue / np.sqrt(coils) + _complex_noise(tissue.shape, sigma)) ** 2
                      for _ in range(coils)))
    air = tissue == 0
    assert np.mean(sos[air] / sigma >= 5) > 0.9  # the SNR rule alone would keep the air
    thr, info = air_threshold(sos)
    assert info["applied"] and np.mean(sos[air] < thr) > 0.999
    assert np.mean(sos[tissue >= 300] >= thr) == 1.0  # tissue well above the floor stays


def test_air_floor_rule_is_silent_without_air():
    y, x = np.mgrid[:64, :64]
    mag = np.abs(300 + 100 * np.sin(x / 9.0) + _complex_noise((8, 64, 64), 10.0))
    thr, info = air_threshold(mag)
    assert thr is None and not info["applied"]


def _exam_from_magnitude(mag_tzyx, te_s):
    ph = RNG.uniform(-0.01, 0.01, mag_tzyx.shape).astype(np.float32)
    return mrtherm.load_exam(mag_tzyx.astype(np.float32), ph, te_s=te_s, b0_t=3.0, frame_time_s=2.0)


def test_pipeline_masks_coil_combined_air():
    """Air of a 32-coil sum of squares passes SNR >= 5 and, at TE 20 ms, the SD rule: the air floor removes it."""
    coils, sigma, nt = 32, 4.0, 3
    tissue = _anatomy()
    sos = np.stack([np.sqrt(sum(np.abs(tissue / np.sqrt(coils) + _complex_noise(tissue.shape, sigma)) ** 2
                                for _ in range(coils))) for _ in range(nt)])
    result = mrtherm.process(_exam_from_magnitude(sos, 0.020), baseline_frames=2)
    air = tissue == 0
    assert result.mask[air].mean() < 0.001
    assert result.mask[tissue >= 300].all()
    assert any("air floor" in r for r in result.report["mask"]["rules"])


def test_pipeline_masks_imprecise_voxels():
    """At TE 2.5 ms a voxel of SNR 20 has a noise-predicted SD of ~3 C: above 2 C it is masked, whatever its SNR."""
    mag = np.abs(_anatomy()[None] + _complex_noise((3, 8, 64, 64), 10.0))  # tissue SNR 5..90
    result = mrtherm.process(_exam_from_magnitude(mag, 0.0025), baseline_frames=2)
    snr, sd = result.host("snr"), result.host("temperature_sd_theory_c")
    kept = result.mask
    assert np.all(sd[kept] <= 2.0)
    assert np.any((snr >= 5) & ~kept & (_anatomy() > 0))  # bright enough for the SNR rule, still masked
    loose = mrtherm.process(_exam_from_magnitude(mag, 0.0025), baseline_frames=2, max_sd_theory_c=np.inf)
    assert loose.mask.sum() > kept.sum()


def test_target_exclusion_margin_is_in_millimetres():
    """Voxels 2 mm in x, 1 mm in y: a 4 mm margin reaches 2 voxels along x, 4 along y (inclusive)."""
    from mrtherm.thermometry.masks import target_exclusion
    lab = np.zeros((1, 11, 11), dtype=np.int16)
    lab[0, 5, 5] = 12
    got = target_exclusion(lab, 12, 4.0, (3.0, 1.0, 2.0))
    dy, dx = np.meshgrid(np.arange(11) - 5, (np.arange(11) - 5) * 2.0, indexing="ij")
    np.testing.assert_array_equal(got[0], np.hypot(dy, dx) <= 4.0)
    assert got[0, 5, 7] and not got[0, 5, 8] and got[0, 9, 5] and not got[0, 10, 5]
    none = target_exclusion(np.ones((2, 3, 4), dtype=np.int16), 12, 4.0, (1.0, 1.0, 1.0))
    assert none.shape == (2, 3, 4) and none.dtype == bool and not none.any()
