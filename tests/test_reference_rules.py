"""The reference rules of README "Free breathing" (mrtherm.thermometry.reference) on hand-made cases.

Every expected value is worked out by hand in the comments: magnitude SDs, match ratios, the tolerance
3 sqrt(4 / n), the navigator window of 3 % of the baseline range and the blend's closed-form weight.
"""

import math

import numpy as np
import pytest

from mrtherm.thermometry.frame_reference import FrameReference
from mrtherm.thermometry.params import ThermometryParams
from mrtherm.thermometry.reference import BaselineLibrary, choose_reference, moving_fraction


def _frames(values, shape=(1, 1, 4)):
    """Baseline magnitudes (n, z, y, x): voxel 0 takes ``values`` over the frames, the others stay at 10."""
    base = np.full((len(values),) + shape, 10.0)
    base[:, 0, 0, 0] = values
    return base


# ---------------------------------------------------------------- moving voxels and the auto choice

def test_a_voxel_moves_when_its_sample_sd_exceeds_three_noise_sds():
    mask = np.ones((1, 1, 4), bool)
    # [0, 0, 6]: mean 2, squares 4 + 4 + 16 = 24, sample SD sqrt(24 / 2) = 3.46 > 3: 1 voxel of 4 moves
    assert moving_fraction(_frames([0.0, 0.0, 6.0]), mask, 1.0) == 0.25
    # [0, 0, 5]: mean 5/3, squares 25/9 + 25/9 + 100/9 = 150/9, SD sqrt(75/9) = 2.89 < 3: none
    # ([0, 0, 6] with the population SD, sqrt(24 / 3) = 2.83, would not move either)
    assert moving_fraction(_frames([0.0, 0.0, 5.0]), mask, 1.0) == 0.0
    assert moving_fraction(_frames([0.0, 0.0, 6.0]), mask, 1.2) == 0.0  # 3.46 < 3 x 1.2 = 3.6


def test_moving_fraction_counts_reliable_voxels_only_and_needs_three_frames():
    mask = np.array([[[True, True, False, False]]])
    assert moving_fraction(_frames([0.0, 0.0, 6.0]), mask, 1.0) == 0.5  # 1 of the 2 reliable voxels
    assert moving_fraction(_frames([0.0, 0.0, 6.0]), ~mask, 1.0) == 0.0  # the moving voxel is not reliable
    assert moving_fraction(_frames([0.0, 60.0]), np.ones((1, 1, 4), bool), 1.0) == 0.0  # 2 frames: no SD
    assert moving_fraction(_frames([0.0, 0.0, 6.0]), np.zeros((1, 1, 4), bool), 1.0) == 0.0


def test_auto_takes_hybrid_above_one_percent_moving_and_the_mean_at_or_below():
    # 100 reliable voxels; moving ones alternate 0 / 60 over 4 frames (sample SD 34.6 >> 3)
    def exam(n_moving):
        base = np.full((4, 1, 10, 10), 100.0)
        base[::2, 0, 0, :n_moving] += 60.0
        return base
    mask = np.ones((1, 10, 10), bool)
    used, why = choose_reference("auto", exam(1), mask, 1.0)  # 1 % exactly: not more than 1 %
    assert used == "mean" and why["motion_detected"] is False and why["moving_voxel_fraction"] == 0.01
    assert why["why"].startswith("1.00% of the reliable voxels") and "not more than 1%" in why["why"]
    used, why = choose_reference("auto", exam(2), mask, 1.0)
    assert (used, why["used"], why["asked"], why["motion_detected"]) == ("hybrid", "hybrid", "auto", True)
    assert "2.00%" in why["why"] and "above 3 x the noise" in why["why"] and why["why"].endswith("hybrid")


def test_auto_with_two_baseline_frames_keeps_the_mean_and_an_asked_mode_is_kept():
    base = np.zeros((2, 1, 10, 10))
    base[1] = 60.0
    used, why = choose_reference("auto", base, np.ones((1, 10, 10), bool), 1.0)
    # 2 frames: no sample SD, so no motion either (moving fraction 0)
    assert (used, why) == ("mean", {"asked": "auto", "used": "mean", "moving_voxel_fraction": 0.0,
                                    "motion_detected": False,
                                    "why": "2 baseline frame(s): a library needs 3 or more"})
    # 3 frames are enough for a library: [0, 60, 0] has sample SD 34.6 > 3 in every voxel
    three = np.zeros((3, 1, 10, 10))
    three[1] = 60.0
    used, why = choose_reference("auto", three, np.ones((1, 10, 10), bool), 1.0)
    assert (used, why["asked"], why["used"], why["moving_voxel_fraction"]) == ("hybrid", "auto", "hybrid", 1.0)
    assert why["why"] == ("100.00% of the reliable voxels have a baseline magnitude SD above 3 x the noise "
                          "(more than 1%): the baseline frames move (breathing): hybrid")
    used, why = choose_reference("auto", np.full((3, 1, 10, 10), 50.0), np.ones((1, 10, 10), bool), 1.0)
    assert (used, why["why"]) == ("mean", "0.00% of the reliable voxels have a baseline magnitude SD above 3 x "
                                          "the noise (not more than 1%): a still exam")
    moving = np.full((4, 1, 10, 10), 100.0)
    moving[::2] += 60.0
    used, why = choose_reference("library", moving, np.ones((1, 10, 10), bool), 1.0)
    assert used == "library"
    assert why == {"asked": "library", "used": "library", "why": "asked for", "moving_voxel_fraction": 1.0,
                   "motion_detected": True}


# ---------------------------------------------------------------- the library's match

def _library(levels, n_vox=4, sigma=0.5, respiration=None, outside=None):
    """Entries of constant magnitude ``levels[k]`` (phase k/10 rad) on ``n_vox`` reliable voxels of 5;
    the fifth voxel, outside the mask, takes ``outside[k]`` when given."""
    shape = (1, 1, n_vox + 1)
    mask = np.zeros(shape, bool)
    mask[..., :n_vox] = True
    entries = []
    for k, level in enumerate(levels):
        e = np.full(shape, level * np.exp(1j * k / 10), dtype=np.complex64)
        if outside is not None:
            e[..., -1] = outside[k]
        entries.append(e)
    return BaselineLibrary(entries, mask, sigma, np, respiration), shape


def test_match_ratio_is_the_ssd_over_twice_sigma_squared_per_reliable_voxel():
    lib, shape = _library([1.0, 2.0, 4.0], outside=[100.0, -50.0, 7.0])
    assert lib.noise_ssd == pytest.approx(2 * 0.25 * 4)  # 2 sigma^2 n = 2
    assert lib.ratio_tolerance == pytest.approx(3 * math.sqrt(4 / 4))  # 3
    assert _library([1.0, 2.0], n_vox=1)[0].ratio_tolerance == pytest.approx(6.0)  # 3 sqrt(4 / 1)
    frame = np.full(shape, 1.5, dtype=np.complex64)
    frame[..., -1] = 1e6  # outside the mask: not compared
    # SSD per entry: 4 x 0.5^2 = 1, 4 x 0.5^2 = 1, 4 x 2.5^2 = 25; over 2
    np.testing.assert_allclose(lib.ratios(frame), [0.5, 0.5, 12.5], rtol=1e-6)


def test_match_keeps_every_entry_within_the_tolerance_of_the_best_and_leaves_the_frame_itself_out():
    lib, shape = _library([1.0, 1.2, 2.0, 4.0], n_vox=64, sigma=0.5)
    # n = 64: noise SSD 2 x 0.25 x 64 = 32, tolerance 3 sqrt(4 / 64) = 0.75
    frame = np.full(shape, 1.0, dtype=np.complex64)
    # ratios: 0, 64 x 0.04 / 32 = 0.08, 64 / 32 = 2, 64 x 9 / 32 = 18
    chosen, ratio = lib.match(frame)
    assert chosen == [0, 1] and ratio == 0.0
    chosen, ratio = lib.match(frame, exclude=0)  # best is now 0.08: 2 is 1.92 above, beyond 0.75
    assert chosen == [1] and ratio == pytest.approx(0.08, rel=1e-6)
    chosen, _ = lib.match(np.full(shape, 1.55, dtype=np.complex64))
    # ratios 64 x (0.3025, 0.1225, 0.2025, 6.0025) / 32 = 0.605, 0.245, 0.405, 12.005: within 0.75 of 0.245,
    # best first
    assert chosen == [1, 2, 0]


def test_a_one_entry_library_matches_its_only_entry_even_when_it_is_excluded():
    lib, shape = _library([3.0])
    assert lib.match(np.full(shape, 3.0, dtype=np.complex64), exclude=0)[0] == [0]


def test_a_two_entry_library_pairs_a_baseline_frame_with_the_other_entry():
    lib, shape = _library([3.0, 8.0])
    assert lib.match(np.full(shape, 3.0, dtype=np.complex64), exclude=0)[0] == [1]


def test_a_library_without_a_respiratory_signal_matches_images_even_when_the_frame_has_one():
    lib, shape = _library([1.0, 2.0, 4.0])
    assert lib.match(np.full(shape, 3.9, dtype=np.complex64), respiration=0.5)[0] == [2]


def test_navigator_matching_takes_entries_within_three_percent_of_the_baseline_range():
    lib, shape = _library([1.0, 1.0, 1.0, 1.0, 1.0], respiration=[0.0, 10.0, 10.2, 10.4, 20.0])
    frame = np.full(shape, 1.0, dtype=np.complex64)
    # range 20: window 0.6; gaps to 10.1 are 10.1, 0.1, 0.1, 0.3, 9.9 -> all three within 0.6, nearest first
    assert lib.match(frame, respiration=10.1)[0] == [1, 2, 3]
    # gaps to 10.9: 0.9, 0.7, 0.5, -- the nearest (0.5) is beyond 0.6? no: 0.5, 0.7 and 0.9 -> only <= 0.6
    assert lib.match(frame, respiration=10.9)[0] == [3]
    # gaps to 10.35: 0.35, 0.15, 0.05 -> all within 0.6, the nearest first (it names the frame's entry)
    assert lib.match(frame, respiration=10.35)[0] == [3, 2, 1]
    # far from every entry: the nearest one still (gap 4.6 > window)
    assert lib.match(frame, respiration=15.4)[0] == [4]
    # a baseline frame leaves itself out
    assert lib.match(frame, respiration=10.2, exclude=2)[0] == [1, 3]
    # no respiratory value for the frame: image matching
    assert sorted(lib.match(frame)[0]) == [0, 1, 2, 3, 4]  # equal magnitudes: every entry


def test_navigator_with_a_flat_signal_keeps_the_nearest_entries():
    lib, shape = _library([1.0, 1.0, 1.0], respiration=[5.0, 5.0, 5.0])
    # range 0 counts as 1 (window 0.03); every gap to 5.02 is 0.02
    assert lib.match(np.full(shape, 1.0, dtype=np.complex64), respiration=5.02)[0] == [0, 1, 2]


# ---------------------------------------------------------------- the hybrid blend

def test_blend_weight_is_the_closed_form_least_squares_fraction():
    lib, shape = _library([2.0, 6.0, 18.0], outside=[50.0, -20.0, 3.0])
    a, b = 2.0, 6.0 * np.exp(0.1j)
    frame = np.full(shape, 3.0, dtype=np.complex64)
    frame[..., -1] = 1000.0
    # A = entry 0 (|A| = 2), B = entry 1 (|B| = 6, ratio 4 x 9 / 2 = 18 vs entry 2's 4 x 225 / 2 = 450):
    # w = sum (3 - 2)(6 - 2) / sum (6 - 2)^2 = 0.25 over the reliable voxels; residual 0
    ref, other, w, ratio = lib.blend(frame, [0])
    assert other == [1] and w == pytest.approx(0.25) and ratio == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(ref[..., :4], 0.75 * a + 0.25 * b, rtol=1e-6)
    assert ref.dtype == np.complex64


def test_blend_with_a_small_magnitude_step():
    lib, shape = _library([1.0, 1.2])
    # step 0.2: sum of squares 4 x 0.04 = 0.16 (below 1); |S| = 1.1: w = 4 x 0.1 x 0.2 / 0.16 = 0.5
    _, other, w, _ = lib.blend(np.full(shape, 1.1, dtype=np.complex64), [0])
    assert other == [1] and w == pytest.approx(0.5, rel=1e-5)


def test_no_blend_between_entries_of_equal_magnitude():
    shape = (1, 1, 4)
    # magnitude exactly 2 for both (2 and 2j): the magnitudes cannot place the frame between them
    lib = BaselineLibrary([np.full(shape, 2.0, np.complex64), np.full(shape, 2.0j, np.complex64)],
                          np.ones(shape, bool), 0.5, np)
    ref, other, w, ratio = lib.blend(np.full(shape, 2.5, dtype=np.complex64), [0])
    assert (other, w) == ([], 0.0) and ratio == pytest.approx(4 * 0.25 / 2)  # residual 0.5 per voxel, SSD 2
    np.testing.assert_allclose(ref, np.full(shape, 2.0), rtol=1e-6)


def test_blend_weight_is_clamped_to_zero_and_one():
    lib, shape = _library([1.0, 3.0])
    # |S| = 5: w = (4 x 2) / (4 x 4)... unclamped 2 -> 1; residual 5 - 3 = 2 per voxel: 4 x 4 / 2 = 8
    ref, other, w, ratio = lib.blend(np.full(shape, 5.0, dtype=np.complex64), [0])
    assert (other, w) == ([1], 1.0) and ratio == pytest.approx(8.0)
    np.testing.assert_allclose(ref, 3.0 * np.exp(0.1j) * np.ones(shape), rtol=1e-6)
    # |S| = 0.5: unclamped -0.25 -> 0, the matched group alone; residual 0.5: 4 x 0.25 / 2 = 0.5
    ref, other, w, ratio = lib.blend(np.full(shape, 0.5, dtype=np.complex64), [0])
    assert (other, w) == ([], 0.0) and ratio == pytest.approx(0.5)
    np.testing.assert_allclose(ref, np.ones(shape), rtol=1e-6)


def test_blend_with_no_entry_left_returns_the_match_and_its_ratio():
    lib, shape = _library([1.0, 3.0])
    frame = np.full(shape, 1.5, dtype=np.complex64)
    ref, other, w, ratio = lib.blend(frame, [0], exclude=1)
    assert (other, w) == ([], 0.0) and ratio == pytest.approx(0.5)  # 4 x 0.25 / 2
    np.testing.assert_allclose(ref, np.ones(shape), rtol=1e-6)


def test_the_reference_of_several_entries_is_their_complex_mean():
    lib, shape = _library([1.0, 3.0, 5.0])
    want = (1.0 + 3.0 * np.exp(0.1j) + 5.0 * np.exp(0.2j)) / 3
    got = lib.reference([0, 1, 2])
    np.testing.assert_allclose(got, np.full(shape, want), rtol=1e-6)
    assert got.dtype == np.complex64
    np.testing.assert_allclose(lib.reference([2]), np.full(shape, 5.0 * np.exp(0.2j)), rtol=1e-6)


# ---------------------------------------------------------------- the hybrid composition

def test_hybrid_keeps_the_library_phase_where_tissue_moves_and_its_smooth_turn_elsewhere():
    ny = nx = 8
    entries = [np.full((1, ny, nx), 10.0, dtype=np.complex64)] * 2  # mean reference: 10, phase 0
    still = np.ones((1, ny, nx), bool)
    still[0, 3, 3] = False  # an edge slides through this voxel
    y, x = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    turn = 0.2 + 0.05 * x - 0.03 * y  # the breathing B0 state: a plane
    turn[3, 3] = 1.0  # the moving voxel's own phase
    turn[5, 6] += 0.04  # noise on a still voxel: the fit smooths it away
    fr = FrameReference("hybrid", entries, np.ones((1, ny, nx), bool), 1.0,
                        ThermometryParams(baseline_frames=2, referenceless_order=1), np, still=still)
    out = fr._compose((10.0 * np.exp(1j * turn))[None].astype(np.complex64))
    # the least-squares plane through the still voxels (equal weights |S_mean|^2 = 100), by hand with lstsq
    keep = still[0].ravel()
    design = np.stack([np.ones(ny * nx), x.ravel(), y.ravel()], axis=1)
    coef = np.linalg.lstsq(design[keep], turn.ravel()[keep], rcond=None)[0]
    want = (design @ coef).reshape(ny, nx)
    want[3, 3] = 1.0
    assert abs(want[5, 6] - turn[5, 6]) > 0.03  # the still voxel's noise is not kept
    np.testing.assert_allclose(np.angle(out[0]), want, atol=2e-6)
    np.testing.assert_allclose(np.abs(out[0]), 10.0, rtol=1e-6)


# ---------------------------------------------------------------- FrameReference: record, consistency, heat fit

def _frame_reference(mode, entries, sigma=0.1, still=None, **params):
    mask = np.ones(entries[0].shape, bool)
    return FrameReference(mode, entries, mask, sigma, ThermometryParams(baseline_frames=len(entries), **params), np,
                          still=still)


def test_report_records_every_frame_choice():
    entries = [np.full((1, 4, 4), 10.0, np.complex64)] * 4
    fr = _frame_reference("hybrid", entries, referenceless_order=3, referenceless_basis="harmonic")
    fr.choices, fr.ratios = [[1, 2], [0], []], [0.9, 1.3, float("nan")]
    fr.blends, fr.iterations = [([3], 0.25), ([], 0.0), ([], 0.0)], [2, 3, 5]
    assert fr.report() == {
        "mode": "hybrid", "entries": 4, "navigator": False, "entries_per_frame": [[1, 2], [0], []],
        "entry_per_frame": [1, 0, None], "match_ratio_per_frame": [0.9, 1.3, pytest.approx(float("nan"), nan_ok=True)],
        "median_match_ratio": pytest.approx(1.1), "second_entries_per_frame": [[3], [], []],
        "second_weight_per_frame": [0.25, 0.0, 0.0], "referenceless_frames": [2], "referenceless_order": 3,
        "referenceless_basis": "harmonic", "sparse_iterations_per_frame": [2, 3, 5]}


def test_report_of_the_library_and_referenceless_modes():
    entries = [np.full((1, 4, 4), 10.0, np.complex64)] * 3
    lib = FrameReference("library", entries, np.ones((1, 4, 4), bool), 0.1, ThermometryParams(baseline_frames=3),
                         np, respiration=[0.0, 0.5, 1.0])
    lib.choices, lib.ratios = [[2]], [float("nan")]
    assert lib.report() == {"mode": "library", "entries": 3, "navigator": True, "entries_per_frame": [[2]],
                            "entry_per_frame": [2], "match_ratio_per_frame": [pytest.approx(float("nan"), nan_ok=True)],
                            "median_match_ratio": None}
    free = _frame_reference("referenceless", entries)
    free.choices, free.ratios, free.blends, free.iterations = [[], []], [float("nan")] * 2, [([], 0.0)] * 2, [1, 4]
    assert free.report() == {"mode": "referenceless", "second_entries_per_frame": [[], []],
                             "second_weight_per_frame": [0.0, 0.0], "referenceless_frames": [0, 1],
                             "referenceless_order": 2, "referenceless_basis": "polynomial",
                             "sparse_iterations_per_frame": [1, 4]}


# 4 entries of magnitude 10, sigma 0.1: the limit is 3 sqrt(2) 0.1 / 10 = 0.0424 rad. A voxel whose phase alternates
# +a, -a over the entries is referenced from the mean of the other three, (2 e^-ia + e^ia) / 3 for a +a entry:
# residual a + atan(tan(a) / 3), about 4a/3, in every frame (the smooth fit over 16 x 16 voxels takes a few % of it)
_LIMIT = 3 * math.sqrt(2) * 0.1 / 10
_A_OUT = 1.15 * _LIMIT * 0.75  # residual about 1.15 x the limit: fails
_A_IN = 0.85 * _LIMIT * 0.75  # about 0.85 x: passes


def _alternating_entries(scale=1.0, ramp_rad=0.0):
    """4 entries (3, 16, 16) of magnitude 10 x ``scale``; phase +-_A_OUT at (0, 8, 8), +-_A_IN at (1, 5, 9) and
    +-0.5 at (2, 10, 4), alternating over the entries, on a B0 ramp along x of up to ``ramp_rad`` per entry."""
    xx = np.linspace(-1.0, 1.0, 16)[None, None, :]
    entries = []
    for k in range(4):
        phase = np.zeros((3, 16, 16)) + ramp_rad * (k - 1.5) / 1.5 * xx
        s = 1 if k % 2 == 0 else -1
        phase[0, 8, 8] += s * _A_OUT
        phase[1, 5, 9] += s * _A_IN
        phase[2, 10, 4] += s * 0.5
        entries.append((10.0 * scale * np.exp(1j * phase)).astype(np.complex64))
    return entries


def _outer_two_fail():
    want = np.ones((3, 16, 16), bool)
    want[0, 8, 8] = want[2, 10, 4] = False
    return want


def test_leave_one_out_consistency_fails_voxels_beyond_three_noise_predictions():
    def residual(a):
        return a + math.atan(math.tan(a) / 3)

    assert residual(_A_OUT) > 1.1 * _LIMIT and residual(_A_IN) < 0.9 * _LIMIT
    entries = _alternating_entries()
    np.testing.assert_array_equal(_frame_reference("library", entries).consistent(entries), _outer_two_fail())


def test_leave_one_out_removes_each_frames_smooth_field_and_scales_with_the_signal():
    # each entry with its own B0 ramp (breathing, drift) of up to 0.1 rad across the slice and all magnitudes (and
    # sigma) scaled by 1e-3: the smooth fit takes the ramps, and the limit 3 sqrt(2) sigma / |S| is scale free,
    # so the same two voxels fail
    entries = _alternating_entries(scale=1e-3, ramp_rad=0.1)
    ok = _frame_reference("library", entries, sigma=1e-4).consistent(entries)
    np.testing.assert_array_equal(ok, _outer_two_fail())


def test_leave_one_out_references_each_baseline_frame_by_its_navigator_value():
    # entries 0 and 2 hold phase +0.3 rad at one voxel, entries 1 and 3 -0.3 rad (two breathing states), equal
    # magnitudes. Navigator 0, 1, 0.01, 1.01: window 3 % of 1.01 = 0.03, so each entry is referenced from its
    # twin (residual 0). Without the navigator every other entry matches (equal magnitudes): entry 0 is referenced
    # from the mean of +0.3, -0.3, -0.3, a residual of about 0.3 + atan(tan(0.3) / 3) ~ 0.4 rad >> 0.042.
    entries = []
    for k in range(4):
        phase = np.zeros((1, 16, 16))
        phase[0, 7, 7] = 0.3 if k % 2 == 0 else -0.3
        entries.append((10.0 * np.exp(1j * phase)).astype(np.complex64))
    nav = [0.0, 1.0, 0.01, 1.01]
    fr = FrameReference("library", entries, np.ones((1, 16, 16), bool), 0.1, ThermometryParams(baseline_frames=4),
                        np, respiration=nav)
    assert fr.consistent(entries, nav).all()
    assert not fr.consistent(entries)[0, 7, 7]


@pytest.mark.parametrize("to_celsius", [-8.0, 0.5])  # alpha < 0: heat lowers the phase; a flipped sign, below 1
def test_the_sparse_heat_fit_uses_three_noise_sds_both_signs_and_only_still_voxels(to_celsius):
    """The reference modes fit with a two-signed prior (sign 0): heating and cooling below the baseline alike
    stay out of the background, whatever the scanner's sign convention."""
    from mrtherm.thermometry.background import sparse_background_fit
    from mrtherm.thermometry.drift import DriftModel

    rng = np.random.default_rng(3)
    shape = (2, 12, 12)
    mag = 5.0 + rng.random(shape)
    mag[:, 9:11, 1:4] = 0.6  # voxels below 1: tau follows |S| there too
    heat_sign = 1.0 if to_celsius > 0 else -1.0
    u = 0.3 + 0.02 * rng.standard_normal(shape)
    u[:, 5:7, 5:7] += heat_sign * 0.8  # heat: a phase change of the sign of to_celsius
    u[:, 10, 1:4] += heat_sign * 0.8  # heat where |S| = 0.6: tau = 3 sqrt(2) 0.05 / 0.6 = 0.35 < 0.8 excludes it
    weight = mag ** 2
    still = np.ones(shape, bool)
    still[:, 0, :] = False
    signal = (mag * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))).astype(np.complex64)  # |S|, any phase

    class Engine:  # what FrameReference.background reads from the engine after its first pass
        model = DriftModel(shape, 2, np)

        def fit_inputs(self):
            return u, weight

    engine = Engine()
    engine.to_celsius = to_celsius
    entries = [np.full(shape, 5.0, np.complex64)] * 2
    fr = _frame_reference("referenceless", entries, sigma=0.05, still=still)
    fr._referenceless_now = True
    coeffs, fallback = fr.background(engine, signal, Engine.model)
    tau = 3 * math.sqrt(2) * 0.05 / np.abs(signal.astype(np.complex128))  # three SDs: sqrt(2) sigma / |S|
    want, want_fallback, iterations = sparse_background_fit(Engine.model, u, weight * still, tau, 0)
    np.testing.assert_allclose(coeffs, want, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(fallback, want_fallback)
    assert fr.iterations == [iterations]
    for one_sign in (heat_sign, -heat_sign):  # the two-signed fit is neither one-signed fit on this frame
        assert np.abs(sparse_background_fit(Engine.model, u, weight * still, tau, one_sign)[0] - want).max() > 1e-4
    all_voxels = sparse_background_fit(Engine.model, u, weight, tau, 0)[0]
    assert np.abs(all_voxels - want).max() > 1e-6  # leaving moving voxels out matters
    no_small = sparse_background_fit(Engine.model, u, weight * still, np.maximum(tau, 3 * math.sqrt(2) * 0.05), 0)[0]
    assert np.abs(no_small - want).max() > 1e-6  # and |S| below 1
    no_heat_cut = sparse_background_fit(Engine.model, u, weight * still, np.where(mag < 1, 1e15, tau), 0)[0]
    assert np.abs(no_heat_cut - want).max() > 1e-4  # the heat at |S| = 0.6 (weight 0.36) is cut by its tau


# ---------------------------------------------------------------- FrameReference.choose: the reference per frame

class _ChoiceEngine:
    """What FrameReference.choose reads from the engine (drift-reference voxels, voxels whose temperature has
    changed, either sign) and sets on it."""

    def __init__(self, ref, changed):
        self.ref, self.changed, self.s_ref = ref, changed, None

    def set_reference(self, s_ref):
        self.s_ref = s_ref

    def drift_candidates(self):
        return self.ref > 0

    def changed_flags(self):
        return self.changed


def _referenceless_frame(shape=(1, 16, 16)):
    """A frame whose phase is a plane plus noise, with heat, a non-reference row and a moving row off the plane;
    the engine and the still map that mark them."""
    rng = np.random.default_rng(11)
    _, iy, ix = np.indices(shape)
    phase = 0.4 + 0.05 * ix - 0.03 * iy + 0.05 * rng.standard_normal(shape)
    heated = np.zeros(shape, bool)
    heated[:, 4:8, 4:8] = True
    phase[heated] += 0.6
    ref = np.ones(shape)
    ref[:, 12, :] = 0.0
    phase[:, 12, :] -= 0.5
    still = np.ones(shape, bool)
    still[:, 14, :] = False
    phase[:, 14, :] += 0.7
    mag = 2.0 + 18.0 * rng.random(shape)
    return (mag * np.exp(1j * phase)).astype(np.complex64), _ChoiceEngine(ref, heated), still


def _fit_weight_by_hand(signal, engine, still):
    """|S|^2 on reference voxels that are neither heated nor moving, 0 elsewhere."""
    return np.abs(signal.astype(np.complex128)) ** 2 * engine.ref * ~engine.changed * still


def _fits_differ_for_each_factor(fit, signal, engine, still):
    """Each factor of the fit weight changes the fitted background on this frame."""
    want = fit(_fit_weight_by_hand(signal, engine, still))
    mag2 = np.abs(signal.astype(np.complex128)) ** 2
    for other in (mag2 * engine.ref * still, mag2 * ~engine.changed * still, mag2 * engine.ref * ~engine.changed,
                  np.sqrt(mag2) * engine.ref * ~engine.changed * still):
        assert np.abs(fit(other) - want).max() > 1e-4
    return want


def test_referenceless_reference_is_the_smooth_fit_of_the_frame_on_unheated_still_reference_voxels():
    from mrtherm.thermometry.background import smooth_phase_fit
    from mrtherm.thermometry.drift import DriftModel

    signal, engine, still = _referenceless_frame()
    model = DriftModel(signal.shape, 1, np)
    fr = _frame_reference("referenceless", [signal] * 2, still=still, referenceless_order=1)
    fr.choose(engine, signal, t=5)
    bg = _fits_differ_for_each_factor(lambda w: smooth_phase_fit(signal, w, model)[1], signal, engine, still)
    _, iy, ix = np.indices(signal.shape)
    np.testing.assert_allclose(bg, 0.4 + 0.05 * ix - 0.03 * iy, atol=0.05)  # the plane, within the noise
    # the baseline magnitude (the mean of the two identical entries) under the fitted phase: the engines' validity
    # rule compares |S_t| with |S_ref|
    np.testing.assert_allclose(engine.s_ref, np.abs(signal) * np.exp(1j * bg.astype(np.float32)), rtol=1e-5,
                               atol=1e-5)
    assert fr.choices == [[]] and math.isnan(fr.ratios[0]) and fr.blends == [([], 0.0)]
    assert fr._referenceless_now  # the background fit then keeps to still voxels


def test_an_unmatched_hybrid_frame_turns_the_entries_mean_by_the_smooth_fit_of_its_change():
    from mrtherm.thermometry.background import smooth_phase_fit
    from mrtherm.thermometry.drift import DriftModel
    from mrtherm.thermometry.reference import UNMATCHED_RATIO

    signal, engine, still = _referenceless_frame()
    rough = np.random.default_rng(5).uniform(-1.0, 1.0, signal.shape)  # the entries' own (non-smooth) phase
    entries = [(10.0 * np.exp(1j * (rough + d))).astype(np.complex64) for d in (0.0, 0.1)]
    mean_ref = ((entries[0].astype(np.complex128) + entries[1]) / 2).astype(np.complex64)
    model = DriftModel(signal.shape, 1, np)
    fr = _frame_reference("hybrid", entries, still=still, referenceless_order=1)
    fr.choose(engine, signal, t=5)
    change = signal * np.conj(mean_ref)
    bg = _fits_differ_for_each_factor(lambda w: smooth_phase_fit(change, w, model)[1], signal, engine, still)
    want = (mean_ref * np.exp(1j * bg.astype(np.float32))).astype(np.complex64)
    np.testing.assert_allclose(engine.s_ref, want, atol=2e-5)
    assert fr.ratios[0] > UNMATCHED_RATIO and fr.choices == [[]] and fr.blends == [([], 0.0)]
    assert fr._referenceless_now


def test_a_baseline_frame_is_matched_to_the_other_entries_and_a_dynamic_frame_to_all():
    # magnitudes 10, 11, 12 on 16 voxels, sigma 0.1: an entry one unit away has ratio 16 x 1 / (2 x 0.01 x 16) = 50
    entries = [np.full((1, 4, 4), m, np.complex64) for m in (10.0, 11.0, 12.0)]
    fr = _frame_reference("library", entries)
    engine = _ChoiceEngine(np.ones((1, 4, 4)), np.zeros((1, 4, 4), bool))
    fr.choose(engine, entries[1], t=1)  # baseline frame 1: entries 0 and 2, equally near
    np.testing.assert_allclose(engine.s_ref, 11.0, rtol=1e-6)
    fr.choose(engine, entries[1], t=3)  # a dynamic frame equal to entry 1
    np.testing.assert_allclose(engine.s_ref, 11.0, rtol=1e-6)
    assert fr.choices == [[0, 2], [1]]
    assert fr.ratios == [pytest.approx(50.0), pytest.approx(0.0, abs=1e-9)]
    assert fr.blends == [([], 0.0), ([], 0.0)] and not fr._referenceless_now


def test_a_matched_hybrid_frame_records_its_blend():
    # entries of magnitude 10 and 12, frame 10.5: entry 0 and a quarter of entry 1 (w = 0.5 x 2 / 4); residual 0
    entries = [np.full((1, 4, 4), m, np.complex64) for m in (10.0, 12.0)]
    fr = _frame_reference("hybrid", entries)
    engine = _ChoiceEngine(np.ones((1, 4, 4)), np.zeros((1, 4, 4), bool))
    fr.choose(engine, np.full((1, 4, 4), 10.5, np.complex64), t=4)
    assert fr.choices == [[0]] and fr.blends == [([1], pytest.approx(0.25))]
    assert fr.ratios == [pytest.approx(0.0, abs=1e-9)] and not fr._referenceless_now
    # every voxel is still: the mean of all entries (11), turned by the blend's phase change (none here)
    np.testing.assert_allclose(engine.s_ref, 11.0, rtol=1e-6)


@pytest.mark.parametrize(("basis", "columns"), [("harmonic", 5), ("polynomial", 6)])
def test_the_referenceless_basis_parameter_picks_harmonic_or_all_polynomials(basis, columns):
    # order 2: 1, Re z, Im z, Re z^2, Im z^2 (harmonic) against 1, x, y, x^2, xy, y^2
    entries = [np.full((1, 6, 6), 10.0, np.complex64)] * 2
    fr = _frame_reference("referenceless", entries, referenceless_order=2, referenceless_basis=basis)
    assert fr.model.k == columns
