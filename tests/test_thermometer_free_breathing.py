"""The Thermometer's free-breathing rules end to end (README "Free breathing"): masks per reference mode on
exact noise, heat in every mode, fallback counting and registration shifts.

The baseline magnitudes are built so the noise sigma is known exactly (every voxel's sample SD is the same), so
each threshold (3 sigma on the SD, 5 sigma on the minimum) can be straddled on purpose.
"""

import numpy as np
import pytest

from mrtherm.thermometry.params import ThermometryParams
from mrtherm.thermometry.thermometer import Thermometer


def _breathing_exam():
    """Three baseline frames (1, 16, 16): magnitude 100 with noise SD ~1 everywhere, phase 0.3 rad, except
    voxel A (dark, 0.5, in the third frame: an edge slid off it) and voxel B (100, 60, 100: an edge slides
    through, but it never goes dark)."""
    rng = np.random.default_rng(7)
    mag = 100.0 + rng.normal(0.0, 1.0, (3, 1, 16, 16))
    mag[:, 0, 4, 4] = [100.0, 100.0, 0.5]   # A: mean 66.8 (SNR ~67), minimum 0.5 (SNR ~0.5)
    mag[:, 0, 9, 9] = [100.0, 60.0, 100.0]  # B: minimum 60, sample SD 23.1 (~23 noise SDs)
    return [(m * np.exp(0.3j)).astype(np.complex64) for m in mag]


@pytest.mark.parametrize("mode, b_kept", [
    ("mean", True),            # one averaged reference
    ("library", True),         # B matches its own entry
    ("hybrid", True),
    ("referenceless", False),  # no matching baseline: the sliding edge at B goes
])
def test_dark_voxels_are_measured_only_in_frames_with_signal_and_sliding_edges_leave_referenceless(mode, b_kept):
    frames = _breathing_exam()
    th = Thermometer((1, 16, 16), np.eye(4), 0.01, 3.0, frames,
                     ThermometryParams(baseline_frames=3, reference=mode, register_motion="off"))
    sigma = th.reliability.sigma
    assert 0.7 < sigma < 1.3  # the noise added: A's minimum 0.5 < 5 sigma and B's SD 23.1 > 3 sigma
    mask = th.reliability.mask
    # A (dark in one breathing state) stays in the mask: per-frame validity drops it in that frame only
    assert (bool(mask[0, 4, 4]), bool(mask[0, 9, 9])) == (mode != "referenceless", b_kept)  # A moves too
    assert bool(th.still[0, 9, 9]) is False and th.still.sum() == 254  # A's SD (57.4) marks it moving too
    rules = " | ".join(th.reliability.rules)
    assert "in every baseline frame" not in rules
    assert ("baseline magnitude SD <= 3 sigma (no sliding edge)" in rules) == (mode == "referenceless")
    assert ("leave-one-out phase residual" in rules) == (mode != "mean")
    temps = [np.asarray(th.update(f, 10.0 * t)).copy() for t, f in enumerate(frames)]
    if mask[0, 4, 4]:
        # A: 0.5 < 5 sigma in frame 2 -> not measured there (NaN, counted), measured in frames 0 and 1
        assert [bool(np.isfinite(tt[0, 4, 4])) for tt in temps] == [True, True, False]
        assert th.invalid_voxels == [0, 0, 1]
        assert int(np.asarray(th.measured_frames)[0, 4, 4]) == 2


def _exact_noise_exam(extra):
    """Three baseline frames (1, 16, 16), phase 0.3 rad: every voxel 99.8, 100, 100.2 (sample SD 0.2 exactly, so
    the median-based noise sigma is the same for every voxel added), ``extra`` maps a voxel to its magnitudes."""
    mag = np.empty((3, 1, 16, 16))
    mag[:] = np.array([99.8, 100.0, 100.2])[:, None, None, None]
    for (y, x), values in extra.items():
        mag[:, 0, y, x] = values
    return [(m * np.exp(0.3j)).astype(np.complex64) for m in mag]


# C: 99.2, 100, 100.8 -> sample SD 0.8, population SD 0.653; D: dark in one frame at 3.0
_C, _D, _HOT = (3, 12), (12, 3), (8, 8)


@pytest.mark.parametrize("mode", ["mean", "library", "hybrid", "referenceless"])
def test_free_breathing_thresholds_use_the_sample_sd_and_sigma_and_every_mode_measures_heat(mode):
    frames = _exact_noise_exam({_C: [99.2, 100.0, 100.8], _D: [100.0, 100.0, 3.0]})
    params = ThermometryParams(baseline_frames=3, reference=mode, register_motion="off")
    th = Thermometer((1, 16, 16), np.eye(4), 0.01, 3.0, frames, params)
    sigma = th.reliability.sigma
    # 3 sigma lies between C's population SD (0.653) and its sample SD (0.8); 5 sigma (1.2) below D's 3.0
    assert 0.653 / 3 < sigma < 0.8 / 3 and 5 * sigma < 3.0
    assert (bool(th.still[0][_C]), bool(th.still[0][_D])) == (False, False)
    assert th.still.sum() == 254
    mask = th.reliability.mask[0]
    assert (bool(mask[_C]), bool(mask[_D])) == ((mode != "referenceless"),) * 2
    assert mask.sum() == (254 if mode == "referenceless" else 256)
    # a frame like the second baseline frame, with +0.4 rad at one voxel: 0.4 / |2 pi 42.577 MHz/T
    # x -0.01 ppm/C x 3 T x 10 ms| = 4.984 C of heat there, none elsewhere
    dyn = frames[1].copy()
    dyn[0][_HOT] *= np.exp(0.4j)
    for t, f in enumerate(frames + [dyn]):
        temp = np.asarray(th.update(f, 10.0 * t))
    dyn_polar = (np.abs(dyn), np.angle(dyn), True)  # the same frame as (magnitude, phase rad)
    np.testing.assert_allclose(np.asarray(th.update(dyn_polar, 40.0)), temp, atol=1e-4)
    rise = np.abs(temp[0] - 37.0)
    k = 2 * np.pi * 42.577478e6 * 0.01e-6 * 3.0 * 0.01
    assert rise[_HOT] == pytest.approx(0.4 / k, abs=0.02)
    rise[_HOT] = 0.0
    assert np.nanmax(rise) < 0.02


def test_referenceless_frames_whose_slice_is_too_small_for_the_background_fit_are_counted():
    # a drift ROI of 2 voxels in slice 1: fewer than the fit's minimum, so every frame falls back there
    frames = _exact_noise_exam({})
    frames = [np.concatenate([f, f]) for f in frames]
    roi = np.zeros((2, 16, 16), np.uint8)
    roi[0] = 1
    roi[1, 8, 8:10] = 1
    params = ThermometryParams(baseline_frames=3, reference="referenceless", register_motion="off")
    th = Thermometer((2, 16, 16), np.eye(4), 0.01, 3.0, frames, params, drift_roi=roi)
    for t, f in enumerate(frames + [frames[1]]):
        th.update(f, 10.0 * t)
    assert th.fallback_frames == 4


def test_two_baseline_frames_mark_no_voxel_as_moving():
    # the SD of two frames says little: with fewer than 3 every voxel counts as still (B: 100 then 60)
    frames = _exact_noise_exam({(9, 9): [100.0, 60.0, 100.0]})[:2]
    params = ThermometryParams(baseline_frames=2, reference="referenceless", register_motion="off")
    th = Thermometer((1, 16, 16), np.eye(4), 0.01, 3.0, frames, params)
    assert th.still.all() and th.reliability.mask[0, 9, 9]


def test_registration_measures_each_library_entry_and_frame_shift():
    # a bright blob on a 20 background, moved 0, 1.5 and 3 voxels along y in the three baseline frames
    yy, xx = np.mgrid[0:32, 0:32]
    rng = np.random.default_rng(0)

    def frame(dy):
        mag = 20.0 + 80.0 * np.exp(-(((yy - 16 - dy) / 5.0) ** 2 + ((xx - 16) / 6.0) ** 2))
        return ((mag + rng.normal(0.0, 0.3, mag.shape)) * np.exp(0.3j)).astype(np.complex64)[None]

    frames = [frame(dy) for dy in (0.0, 1.5, 3.0)]
    params = ThermometryParams(baseline_frames=3, reference="library", register_motion="on")
    th = Thermometer((1, 32, 32), np.eye(4), 0.01, 3.0, frames, params)
    np.testing.assert_allclose(th.registration.entry_shifts, [[0.0, 0.0], [1.5, 0.0], [3.0, 0.0]], atol=0.05)
    # the maps sit on frame 0: the anatomy is the mean of the baseline frames moved back there (noise SD 0.3)
    inner = np.s_[0, 3:26, 3:29]  # frame 2 moved back by 3 voxels leaves the top rows empty
    assert np.abs(th.anatomy[inner] - np.abs(frames[0][inner])).max() < 1.5
    for t, f in enumerate(frames + [frames[2]]):
        th.update(f, 10.0 * t)
    np.testing.assert_allclose(th.registration.shifts_vox, [(0.0, 0.0), (1.5, 0.0), (3.0, 0.0), (3.0, 0.0)],
                               atol=0.05)
    # a mean reference has no library to match: the baseline frames are registered (and averaged in tissue
    # coordinates), each later frame starts from the previous frame's shift
    still = Thermometer((1, 32, 32), np.eye(4), 0.01, 3.0, frames,
                        ThermometryParams(baseline_frames=3, reference="mean", register_motion="on"))
    np.testing.assert_allclose(still.registration.entry_shifts, th.registration.entry_shifts, atol=1e-9)
    for t, f in enumerate(frames):
        still.update(f, 10.0 * t)
    np.testing.assert_allclose(still.registration.shifts_vox, [(0.0, 0.0), (1.5, 0.0), (3.0, 0.0)], atol=0.05)


def _blob_frames():
    yy, xx = np.mgrid[0:32, 0:32]
    rng = np.random.default_rng(1)

    def frame(dy):
        mag = 20.0 + 80.0 * np.exp(-(((yy - 16 - dy) / 5.0) ** 2 + ((xx - 16) / 6.0) ** 2))
        return ((mag + rng.normal(0.0, 0.3, mag.shape)) * np.exp(0.3j)).astype(np.complex64)[None]
    return [frame(dy) for dy in (0.0, 1.5, 3.0)]


def test_registered_masks_keep_the_labels_the_noise_and_say_they_are_in_tissue_coordinates(tmp_path):
    labels = np.ones((1, 32, 32), np.int16)  # muscle, PRF-valid
    labels[0, 10:14, 10:14] = 5  # cortical bone: no PRF, whatever the registration
    params = ThermometryParams(baseline_frames=3, reference="library", register_motion="on", target_mm=(16.0, 16.0, 0.0))
    th = Thermometer((1, 32, 32), np.eye(4), 0.01, 3.0, _blob_frames(), params, labels=labels)
    assert th.registration is not None
    assert th.reliability.rules[0] == ("tissue coordinates: every baseline frame resampled to the first one's "
                                       "position (in-plane registration) before these rules")
    assert not th.reliability.mask[0, 10:14, 10:14].any() and th.reliability.mask[0, 20:24, 12:20].all()
    assert th.reliability.noise_info["method"] == "temporal" and th.reliability.noise_info["details"] == {"frames": 3}
    for t, f in enumerate(_blob_frames()):
        th.update(f, 10.0 * t)
    back = Thermometer.load_state(th.save_state(str(tmp_path / "th.npz")))
    assert back.reliability.noise_info == th.reliability.noise_info
    assert back.target is not None and tuple(back.target.target_mm) == tuple(th.target.target_mm)
    assert back.target.source == th.target.source


@pytest.mark.parametrize("mode, what", [("library", "the library"), ("hybrid", "the library"),
                                        ("referenceless", "the smooth fit of its own phase")])
def test_the_leave_one_out_rule_is_stated_for_the_mode_that_applied_it(mode, what):
    th = Thermometer((1, 16, 16), np.eye(4), 0.01, 3.0, _breathing_exam(),
                     ThermometryParams(baseline_frames=3, reference=mode, register_motion="off"))
    assert th.reliability.rules[-1] == (f"{mode}: leave-one-out phase residual over the baseline frames <= 3 x the "
                                        f"noise prediction ({what} reproduces the voxel; frames where the voxel or "
                                        "its reference lacks signal left out)")


def test_the_temperature_sd_is_nan_outside_the_mask_and_before_the_baseline_is_in():
    frames = _breathing_exam()
    labels = np.ones((1, 16, 16), np.int16)
    labels[0, 0:3, :] = 5  # cortical bone: out of the mask
    th = Thermometer((1, 16, 16), np.eye(4), 0.01, 3.0, frames,
                     ThermometryParams(baseline_frames=3, reference="mean", register_motion="off"), labels=labels)
    assert np.isnan(th.temperature_sd_c()).all()  # no frame processed yet: no baseline statistics
    for t, f in enumerate(frames):
        th.update(f, 10.0 * t)
    sd = th.temperature_sd_c()
    assert (~th.reliability.mask).any() and np.isnan(sd[~th.reliability.mask]).all()
    assert np.isfinite(sd[th.reliability.mask]).all()
    one = Thermometer((1, 16, 16), np.eye(4), 0.01, 3.0, frames[:1],
                      ThermometryParams(baseline_frames=1, reference="mean", register_motion="off"))
    one.update(frames[0], 0.0)
    assert np.isnan(one.temperature_sd_c()).all()  # one baseline frame: no SD


def test_the_target_label_gives_the_target_when_none_is_given():
    labels = np.ones((1, 16, 16), np.int16)
    labels[0, 10:12, 4:6] = 12  # TARGET ("target lesion"): centroid voxel (x, y, z) = (4.5, 10.5, 0)
    th = Thermometer((1, 16, 16), np.eye(4), 0.01, 3.0, _breathing_exam(),
                     ThermometryParams(baseline_frames=3, reference="mean", register_motion="off"), labels=labels)
    assert th.target is not None and np.allclose(th.target.target_mm, (4.5, 10.5, 0.0))
    assert th.target.source
