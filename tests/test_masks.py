"""The reliability mask and the drift reference region, rule by rule against hand-built inputs."""

import math

import numpy as np
import pytest

from mrtherm import InputFileError, ThermometryParams
from mrtherm.io.labels import LabelTable
from mrtherm.thermometry.masks import air_threshold, drift_reference, reliability_mask
from mrtherm.thermometry.noise import estimate_noise_sigma
from mrtherm.thermometry.prf import GAMMABAR_HZ_PER_T

TE, B0 = 0.01, 3.0


def _frames(mean_zyx, n=4, swing=0.25):
    """n baseline magnitudes alternating mean + swing, mean - swing (exact means in float64)."""
    return np.stack([mean_zyx + (swing if t % 2 == 0 else -swing) for t in range(n)]).astype(np.float64)


def test_snr_and_noise_predicted_sd_by_hand():
    """SNR = mean baseline magnitude / sigma (float32); SD = sqrt(1 + 1/N) / (2 pi gammabar |alpha| B0 TE SNR)
    for every voxel, also below SNR 1 (alpha of ExAblate, -0.00909 ppm/C)."""
    mean = np.linspace(0.1, 300.0, 2 * 8 * 8).reshape(2, 8, 8)
    mags = _frames(mean)
    p = ThermometryParams(baseline_frames=4, alpha_ppm_per_c=-0.00909)
    rel = reliability_mask(mags, 4, TE, B0, p)
    sigma, method, _ = estimate_noise_sigma(mags)
    assert (rel.sigma, rel.sigma_method) == (sigma, method) and isinstance(rel.sigma, float)
    assert rel.snr.dtype == np.float32 and rel.sd_theory_c.dtype == np.float32
    snr = mean / sigma
    np.testing.assert_allclose(rel.snr, snr, rtol=1e-6)
    assert snr.min() < 1.0
    k = 2 * math.pi * GAMMABAR_HZ_PER_T * 0.00909e-6 * B0 * TE
    np.testing.assert_allclose(rel.sd_theory_c, math.sqrt(1.25) / (k * snr), rtol=1e-5)


def test_snr_and_sd_thresholds_are_inclusive():
    mean = np.linspace(1.0, 300.0, 64).reshape(1, 8, 8)
    mags = _frames(mean)
    rel = reliability_mask(mags, 4, TE, B0, ThermometryParams(baseline_frames=4))
    v = (0, 4, 4)
    at_snr = reliability_mask(mags, 4, TE, B0, ThermometryParams(baseline_frames=4, snr_threshold=float(rel.snr[v]),
                                                                 max_sd_theory_c=1e9))
    assert at_snr.mask[v] and not at_snr.mask[0, 4, 3]
    at_sd = reliability_mask(mags, 4, TE, B0, ThermometryParams(baseline_frames=4, snr_threshold=0,
                                                                max_sd_theory_c=float(rel.sd_theory_c[v])))
    assert at_sd.mask[v] and not at_sd.mask[0, 4, 3]


def test_air_floor_is_three_times_the_dark_median_inclusive():
    """A quarter of the slice is air of mean magnitude 4 (the dark class), tissue 400: voxels below 3 x 4 = 12
    are air. A voxel of mean 12.0 stays, one of 11.5 goes."""
    mean = np.full((1, 40, 40), 400.0)
    mean[0, :10] = 4.0
    mean[0, 20, 0], mean[0, 20, 1] = 12.0, 11.5
    rel = reliability_mask(_frames(mean), 4, TE, B0, ThermometryParams(baseline_frames=4))
    assert rel.mask[0, 20, 0] and not rel.mask[0, 20, 1]
    assert not rel.mask[0, :10].any() and rel.mask[0, 10:20].all()
    assert rel.rules[2].startswith("above the air floor: mean magnitude >= 3 x the median of the dark class") \
        and "(12;" in rel.rules[2]


def test_labels_add_to_the_signal_rules():
    """With labels, a voxel must pass the SNR rule and lie in a class where PRF works."""
    mean = np.full((1, 8, 8), 200.0)
    mean[0, 0, 0] = 0.5  # low signal in soft tissue: still masked
    labels = np.ones((1, 8, 8), np.int16)
    labels[0, 7, 7] = 2  # fat: masked whatever its signal
    rel = reliability_mask(_frames(mean), 4, TE, B0, ThermometryParams(baseline_frames=4), labels, LabelTable())
    expected = np.ones((1, 8, 8), bool)
    expected[0, 0, 0] = expected[0, 7, 7] = False
    np.testing.assert_array_equal(rel.mask, expected)
    assert rel.rules[-1] == ("labels where PRF works (excluded: coupling, fat, cortical bone, "
                             "trabecular bone / marrow, gas, metal)")


AFF = np.diag([2.0, 1.0, 3.0, 1.0])  # x 2 mm, y 1 mm, z 3 mm


def _auto_text(p, target=True):
    text = (f"automatic: reliable voxels; minus voxels that rose more than {p.auto_ref_heated_c:g} C in earlier "
            f"frames; minus voxels departing from the previous frame's drift by more than {p.auto_ref_outlier_c:g} C")
    return text + (f"; minus the target lesion and {p.auto_ref_target_margin_mm:g} mm around it" if target else "")


def test_automatic_reference_leaves_out_the_target_and_its_margin_in_millimetres():
    """Target voxel (0, 10, 10); margin 4 mm: 2 voxels along x (2 mm), 4 along y (1 mm), none along z (3 mm)."""
    mask = np.ones((3, 21, 21), bool)
    mask[:, 0, :] = False
    labels = np.ones(mask.shape, np.int16)
    labels[1, 10, 10] = 12
    p = ThermometryParams(auto_ref_target_margin_mm=4.0)
    ref, rule, automatic = drift_reference(mask, p, AFF, labels)
    z, y, x = np.meshgrid(np.arange(3) - 1, np.arange(21) - 10, np.arange(21) - 10, indexing="ij")
    expected = mask & (np.sqrt((3.0 * z) ** 2 + y ** 2 + (2.0 * x) ** 2) > 4.0)
    np.testing.assert_array_equal(ref, expected)
    assert automatic and rule == {"mode": "automatic", "source": None, "rule": _auto_text(p),
                                  "voxels": int(expected.sum())}


def test_automatic_reference_without_a_target_label():
    mask = np.ones((1, 6, 6), bool)
    mask[0, 0, 0] = False
    p = ThermometryParams()
    for labels in (None, np.ones(mask.shape, np.int16)):
        ref, rule, automatic = drift_reference(mask, p, AFF, labels)
        np.testing.assert_array_equal(ref, mask)
        assert automatic and rule == {"mode": "automatic", "source": None, "rule": _auto_text(p, target=False),
                                      "voxels": 35}


def test_user_roi_is_intersected_with_the_mask():
    mask = np.ones((1, 6, 6), bool)
    mask[0, :, :2] = False
    roi = np.zeros(mask.shape, np.int16)
    roi[0, :3, :] = 1
    ref, rule, automatic = drift_reference(mask, ThermometryParams(), AFF, None, roi, {"path": "roi.nii.gz"})
    np.testing.assert_array_equal(ref, mask & (roi != 0))
    assert not automatic
    assert rule == {"mode": "user", "source": "roi.nii.gz", "voxels": 12,
                    "rule": "user drift ROI intersected with the reliability mask"}
    with pytest.raises(InputFileError) as err:
        drift_reference(mask, ThermometryParams(), AFF, None, (~mask).astype(np.int16), {"path": "roi.nii.gz"})
    assert str(err.value) == "roi.nii.gz: drift ROI contains no reliable voxel"


def _two_classes(n_dark, n_bright, dark=4.0, bright=400.0):
    return np.concatenate([np.full(n_dark, dark), np.full(n_bright, bright)])


def test_air_threshold_by_hand():
    """Dark class 4, bright 400 (100 x apart; Otsu on the log histogram, 256 bins): the floor is the dark median
    and the threshold 3 x 4 = 12. The bin centres sit half a bin inside the extremes, so the class means are
    4 and 400 each moved by (ln 400 - ln 4) / 512: ratio 100 x exp(-ln 100 / 256) = 98.2."""
    thr, info = air_threshold(_two_classes(100, 900))
    assert thr == 12.0 and info == {"applied": True, "class_ratio": pytest.approx(100 * 100 ** (-1 / 256), rel=1e-9),
                                    "floor": 4.0}
    # dark values below 1 (any unit), non-finite, zero and negative samples ignored
    values = np.concatenate([_two_classes(100, 900, 0.04, 4.0), [0.0, -3.0, np.nan, np.inf]])
    thr, info = air_threshold(values)
    assert thr == pytest.approx(0.12) and info["applied"]


@pytest.mark.parametrize("n_dark, n_bright, applied", [(100, 900, True), (99, 901, False), (199, 9801, False),
                                                       (200, 9800, True)])
def test_air_floor_needs_100_dark_voxels_and_two_percent(n_dark, n_bright, applied):
    thr, info = air_threshold(_two_classes(n_dark, n_bright))
    assert info["applied"] is applied and (thr == 12.0 if applied else thr is None)


def test_air_floor_needs_classes_ten_times_apart():
    assert air_threshold(_two_classes(500, 500, 100.0, 900.0))[0] is None  # 9 x apart: tissue contrast, not air
    assert air_threshold(_two_classes(500, 500, 100.0, 1200.0))[0] == 300.0
