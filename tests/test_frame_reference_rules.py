"""FrameReference (mrtherm.thermometry.frame_reference) on hand-made cases: matching, caching, validity, masks.

Every expected value is worked out by hand in the comments: match ratios ``SSD / (2 sigma^2 n)``, the blend's
closed-form weight, the per-frame validity floors, the hybrid smooth-field test ``RMS <= 2 sqrt(1 + 1/N) sigma / |S|``
and the leave-one-out frame counts. See tests/test_reference_rules.py for the library's own rules.
"""

import math

import numpy as np
import pytest

from mrtherm.thermometry.drift import DriftModel
from mrtherm.thermometry.frame_reference import FrameReference
from mrtherm.thermometry.params import ThermometryParams

SHAPE = (1, 4, 4)  # 16 voxels: at sigma 0.1 an entry one magnitude unit away has ratio 16 / (2 x 0.01 x 16) = 50


def _levels(*levels, shape=SHAPE):
    """Entries of constant magnitude, phase 0."""
    return [np.full(shape, m, np.complex64) for m in levels]


def _fr(mode, entries, sigma=0.1, baseline_frames=None, **kw):
    """A FrameReference on a full mask; ``baseline_frames`` defaults to the number of entries."""
    params = ThermometryParams(baseline_frames=len(entries) if baseline_frames is None else baseline_frames,
                               **{k: kw.pop(k) for k in list(kw) if k in ("referenceless_order", "snr_threshold",
                                                                         "min_signal_fraction")})
    return FrameReference(mode, entries, np.ones(entries[0].shape, bool), sigma, params, np, **kw)


class _Engine:
    """What FrameReference.choose and .background read from the engine, and the reference it sets."""

    def __init__(self, shape, u=None, weight=None):
        self.shape, self.s_ref, self.u, self.weight = shape, None, u, weight

    def set_reference(self, s_ref):
        self.s_ref = s_ref

    def drift_candidates(self):
        return np.ones(self.shape, bool)

    def changed_flags(self):
        return np.zeros(self.shape, bool)

    def fit_inputs(self):
        return self.u, self.weight


def _count_library_calls(fr):
    """Wrap the library's ratios and blend so the test sees how often each runs."""
    calls = {"ratios": 0, "blend": 0}
    lib = fr.library
    ratios, blend = lib.ratios, lib.blend

    def counted_ratios(*a, **k):
        calls["ratios"] += 1
        return ratios(*a, **k)

    def counted_blend(*a, **k):
        calls["blend"] += 1
        return blend(*a, **k)

    lib.ratios, lib.blend = counted_ratios, counted_blend
    return calls


# ---------------------------------------------------------------- match(): the entries a frame matches

def test_a_mode_without_library_matches_nothing():
    fr = _fr("referenceless", _levels(10.0, 11.0))
    chosen, (other, weight) = fr.match(5, None, np.full(SHAPE, 10.0))
    assert chosen == [] and other == [] and weight == 0.0


def test_library_match_leaves_a_baseline_frame_out_and_has_no_blend():
    fr = _fr("library", _levels(10.0, 11.0, 12.0))  # 3 baseline frames
    # baseline frame 1 equal to entry 1: entries 0 and 2, both ratio 50; a dynamic frame equal to it: entry 1
    assert fr.match(1, None, np.full(SHAPE, 11.0)) == ([0, 2], ([], 0.0))
    chosen, (other, weight) = fr.match(3, None, np.full(SHAPE, 11.0))
    assert chosen == [1] and other == [] and weight == 0.0


def test_hybrid_match_returns_the_blends_second_group_and_weight():
    fr = _fr("hybrid", _levels(10.0, 12.0), baseline_frames=2)
    # 10.5 between 10 and 12: A = [0], B = [1], w = sum 0.5 x 2 / sum 2^2 = 0.25 (blend ratio 0, not the weight)
    chosen, (other, weight) = fr.match(4, None, np.full(SHAPE, 10.5))
    assert chosen == [0] and other == [1] and weight == pytest.approx(0.25)


def test_a_hybrid_baseline_frame_blends_without_itself():
    # entries 10, 10.5, 12; baseline frame 1 (= entry 1) matches entry 0 (ratio 0.25 / 0.02 = 12.5, entry 2:
    # 2.25 / 0.02 = 112.5); its blend partner is entry 2 (entry 1 itself, ratio 0, is left out):
    # w = 0.5 x 2 / 2^2 = 0.25. With itself as partner it would be entry 1 at w = 1.
    entries = _levels(10.0, 10.5, 12.0)
    assert _fr("hybrid", entries).match(1, None, entries[1]) == ([0], ([2], pytest.approx(0.25)))
    fr = _fr("hybrid", entries)
    fr.choose(_Engine(SHAPE), entries[1], 1)
    assert fr.choices == [[0]] and fr.blends == [([2], pytest.approx(0.25))]


def test_match_follows_the_navigator_when_the_library_has_one():
    # equal magnitudes: the images cannot tell the entries apart; respiration 0, 1, 2 (window 3 % of 2 = 0.06)
    entries = _levels(10.0, 10.0, 10.0)
    fr = _fr("library", entries, respiration=[0.0, 1.0, 2.0])
    assert fr.match(5, 2.0, entries[0])[0] == [2]
    assert fr.match(5, 0.97, entries[0])[0] == [1]
    assert fr.match(5, None, entries[0])[0] == [0, 1, 2]  # no value for the frame: images, every entry ties


# ---------------------------------------------------------------- match() then choose(): one computation per frame

def test_hybrid_ratios_and_blend_are_computed_once_per_frame_and_reused_by_choose():
    fr = _fr("hybrid", _levels(10.0, 12.0), baseline_frames=2)
    calls = _count_library_calls(fr)
    frame = np.full(SHAPE, 10.5, np.complex64)
    assert fr.match(4, None, frame)[1] == ([1], pytest.approx(0.25))
    assert calls == {"ratios": 1, "blend": 1}
    fr.choose(_Engine(SHAPE), frame, 4)  # the same frame: what match() found
    assert calls == {"ratios": 1, "blend": 1}
    fr.choose(_Engine(SHAPE), frame, 5)  # without match(): once each
    assert calls == {"ratios": 2, "blend": 2}
    assert fr.choices == [[0], [0]] and fr.blends == [([1], pytest.approx(0.25))] * 2


def test_library_ratios_are_computed_once_per_frame_and_not_reused_for_another_frame():
    fr = _fr("library", _levels(10.0, 11.0, 12.0))
    calls = _count_library_calls(fr)
    assert fr.match(4, None, np.full(SHAPE, 12.0))[0] == [2]
    fr.choose(_Engine(SHAPE), np.full(SHAPE, 12.0, np.complex64), 4)
    assert calls == {"ratios": 1, "blend": 0}
    fr.match(5, None, np.full(SHAPE, 12.0))  # frame 5 matched, then frame 6 chosen: 6 gets its own match
    engine = _Engine(SHAPE)
    fr.choose(engine, np.full(SHAPE, 10.0, np.complex64), 6)
    assert fr.choices == [[2], [0]] and calls["ratios"] == 3
    np.testing.assert_allclose(engine.s_ref, 10.0)


def test_choose_matches_the_image_position_frame_when_given():
    # with motion registration the signal is in tissue coordinates; the library matches the image-position frame
    fr = _fr("library", _levels(10.0, 11.0, 12.0))
    engine = _Engine(SHAPE)
    fr.choose(engine, np.full(SHAPE, 10.0, np.complex64), 4, match=np.full(SHAPE, 12.0))
    assert fr.choices == [[2]]
    np.testing.assert_allclose(engine.s_ref, 12.0)


def test_a_hybrid_frame_at_exactly_twice_the_noise_ssd_still_matches():
    # entries 10 and 10j (magnitude 10 both, so no blend), sigma 0.5: noise SSD 2 x 0.25 x 16 = 8. A frame of
    # magnitude 11 leaves 16 x 1 = 16: ratio 2 exactly, not above UNMATCHED_RATIO = 2; at 11.5 it is 4.5: referenceless
    entries = [np.full(SHAPE, 10.0, np.complex64), np.full(SHAPE, 10.0j, np.complex64)]
    fr = _fr("hybrid", entries, sigma=0.5, baseline_frames=2)
    fr.choose(_Engine(SHAPE), np.full(SHAPE, 11.0, np.complex64), 3)
    fr.choose(_Engine(SHAPE), np.full(SHAPE, 11.5, np.complex64), 4)
    assert fr.choices == [[0, 1], []] and fr.ratios == [2.0, pytest.approx(4.5)]


# ---------------------------------------------------------------- motion registration: image-position matching

def _registered_case():
    """4 tissue entries of magnitude 10, phase +0.3 (entries 0, 2) or -0.3 (1, 3) at (0, 4, 4); image-position
    magnitudes with a bright row 2 (entries 0, 2) or 5 (1, 3); the tissue mask leaves rows 2 and 5 out."""
    shape = (1, 8, 8)
    entries, mags = [], []
    for k in range(4):
        phase = np.zeros(shape)
        phase[0, 4, 4] = 0.3 if k % 2 == 0 else -0.3
        entries.append((10.0 * np.exp(1j * phase)).astype(np.complex64))
        mag = np.full(shape, 10.0, np.float32)
        mag[0, 2 if k % 2 == 0 else 5, :] = 15.0
        mags.append(mag)
    mask = np.ones(shape, bool)
    mask[0, [2, 5], :] = False
    return entries, mags, mask


def test_a_registered_library_matches_on_image_position_magnitudes_in_its_own_mask():
    entries, mags, mask = _registered_case()
    params = ThermometryParams(baseline_frames=4)
    fr = FrameReference("library", entries, mask, 0.1, params, np, match_magnitudes=mags,
                        match_mask=np.ones(mask.shape, bool))
    # the twin breathing state has ratio 0; the other state 16 x 25 / (2 x 0.01 x 64) = 312.5
    assert fr.match(0, None, mags[0])[0] == [2]
    assert fr.match(7, None, mags[1])[0] == [1, 3]
    # leave-one-out: each entry is referenced from its twin (residual 0). Limit 3 sqrt(2) 0.1 / 10 = 0.042 rad.
    assert fr.consistent(entries)[mask].all()
    # Matching the tissue magnitudes (all 10) instead, every other entry ties: entry 0 is referenced from the mean of
    # +0.3, -0.3, -0.3, a residual of about 0.3 + atan(tan(0.3) / 3) ~ 0.4 rad, far beyond the limit
    plain = FrameReference("library", entries, mask, 0.1, params, np)
    assert plain.match(0, None, entries[0])[0] == [1, 2, 3]
    assert not plain.consistent(entries)[0, 4, 4]


# ---------------------------------------------------------------- hybrid: where the entries differ smoothly

def test_the_hybrid_smooth_field_test_is_two_noise_sds_of_a_difference_against_the_mean():
    # 2 entries of magnitude 0.8 on a B0 ramp of +-0.05 rad per voxel along x (breathing: smooth, fitted away),
    # sigma 0.01. Voxels p = (2, 0) and q = (5, 0) (x = 0: no ramp, not still so outside the fit) hold +-a: the mean
    # is 0.8 cos a, each entry's residual +-a, RMS a. The limit: 2 sqrt(1 + 1/2) sigma / (0.8 cos a).
    shape, m, sigma, a_p, a_q = (1, 8, 8), 0.8, 0.01, 0.026, 0.033
    ix = np.indices(shape)[2]
    entries = []
    for s in (1.0, -1.0):
        phase = s * 0.05 * ix
        phase[0, 2, 0], phase[0, 5, 0] = s * a_p, s * a_q
        e = (m * np.exp(1j * phase)).astype(np.complex64)
        e[0, 3, 7] = s * m  # r: the two entries cancel, the mean is 0 (no signal: unbounded noise prediction)
        entries.append(e)

    def limit(a):
        return 2 * math.sqrt(1.5) * sigma / (m * math.cos(a))

    assert 0.84 < a_p / limit(a_p) < 0.86 and 1.07 < a_q / limit(a_q) < 1.09
    still = np.ones(shape, bool)
    still[0, 2, 0] = still[0, 5, 0] = False
    fr = _fr("hybrid", entries, sigma=sigma, still=still, referenceless_order=1)
    want = np.ones(shape, bool)
    want[0, 5, 0] = False  # q: 1.08 x the limit
    np.testing.assert_array_equal(fr._field_is_smooth(entries), want)
    np.testing.assert_array_equal(fr._smooth_here, want & still)


# ---------------------------------------------------------------- per-frame validity and the leave-one-out count

def test_a_pair_is_valid_at_the_snr_floor_and_at_the_signal_fraction_inclusive():
    # sigma 1, snr_threshold 5: |S|^2 >= 25 in the frame and its reference; fraction 0.5: |S|^2 >= 0.25 |S_ref|^2
    fr = _fr("library", _levels(10.0, 10.0), sigma=1.0, snr_threshold=5.0, min_signal_fraction=0.5)
    signal = np.array([5, 6j, 6, 10, 4, 6, 9], np.complex64)
    ref = np.array([6, 5j, 5, 20, 6, 4, 20], np.complex64)
    # 25 >= 25; 36 and a reference of 25 (imaginary); 100 = 0.25 x 400; 16 < 25; ref 16 < 25; 81 < 100
    np.testing.assert_array_equal(fr._valid_pair(signal, ref), [True, True, True, True, False, False, False])


def _two_frames():
    """2 frames of magnitude 10 (phase 0); (0, 1, 1) is 2 then 30, (0, 2, 2) is 6 then 30."""
    frames = _levels(10.0, 10.0, shape=(1, 4, 4))
    frames[0][0, 1, 1], frames[1][0, 1, 1] = 2.0, 30.0
    frames[0][0, 2, 2], frames[1][0, 2, 2] = 6.0, 30.0
    return frames


def test_referenceless_consistency_needs_one_valid_frame():
    # sigma 1 (floor 5), fraction 0.3. Referenceless references each frame to the mean: at (1, 1) the mean is 16,
    # frame 0 (2) lacks signal, frame 1 counts: 1 frame is enough. No phase anywhere: every residual is 0.
    frames = _two_frames()
    ok = _fr("referenceless", frames, sigma=1.0).consistent(frames)
    assert ok.all()


def test_leave_one_out_consistency_needs_two_valid_frames():
    # library: each frame is referenced from the other. At (2, 2) frame 0 (6) against 30 fails the fraction rule
    # (36 < 0.09 x 900 = 81), frame 1 against 6 counts: 1 frame, not enough. At (1, 1) no frame counts.
    frames = _two_frames()
    ok = _fr("library", frames, sigma=1.0).consistent(frames)
    want = np.ones((1, 4, 4), bool)
    want[0, 1, 1] = want[0, 2, 2] = False
    np.testing.assert_array_equal(ok, want)


# ---------------------------------------------------------------- the sparse background fit's weights

def test_the_background_fit_uses_every_voxel_until_a_frame_goes_referenceless():
    # order 0 (a constant), equal weights: the fit is the mean of u. u = 0.5 on row 0 (not still), 0 elsewhere;
    # tau = 3 sqrt(2) x 1 / 1 = 4.2 rad keeps every voxel in. All voxels: 0.5 x 8 / 64 = 0.0625; still ones: 0.
    shape = (1, 8, 8)
    u = np.zeros(shape)
    u[0, 0, :] = 0.5
    still = np.ones(shape, bool)
    still[0, 0, :] = False
    engine = _Engine(shape, u, np.ones(shape))
    signal = np.ones(shape, np.complex64)
    fr = _fr("hybrid", _levels(1.0, 1.0, shape=shape), sigma=1.0, still=still, snr_threshold=0.5)
    coeffs, fallback = fr.background(engine, signal, DriftModel(shape, 0, np))  # no frame chosen yet
    assert coeffs[0, 0] == pytest.approx(0.0625) and not fallback.any()
    fr.choose(engine, signal, 3)  # matched: the library's reference
    assert fr.choices == [[0, 1]]
    assert fr.background(engine, signal, DriftModel(shape, 0, np))[0][0, 0] == pytest.approx(0.0625)
    fr._referenceless_now = True  # as after a frame no entry matches
    assert fr.background(engine, signal, DriftModel(shape, 0, np))[0][0, 0] == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- saved state

def test_saved_records_keep_their_types_before_the_first_frame():
    fr = _fr("library", _levels(10.0, 11.0))
    state = fr.state()
    assert state["ratios"].dtype == np.float64 and state["iterations"].dtype == np.int64
    assert state["ratios"].shape == state["iterations"].shape == (0,)
