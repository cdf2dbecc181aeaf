"""The array engine's per-voxel rules on hand-made arrays: the in-plane box sum, per-frame validity, temporal
unwrapping with the voxels back from a gap, and their re-anchoring to the tracked neighbours.

Every expected value is worked out by hand in the comments (2 pi = 6.283185...).
"""

import math
import types

import array_api_compat.numpy as xp
import numpy as np

from mrtherm.thermometry.engine import ArrayEngine, box_sum_inplane

TWO_PI = 2.0 * math.pi


# --------------------------------------------------------------------------- box sum
def test_box_sum_of_ones_counts_the_window_inside_the_field_of_view():
    got = box_sum_inplane(np.ones((1, 3, 4)), 1, np)[0]
    np.testing.assert_array_equal(got, [[4, 6, 6, 4], [6, 9, 9, 6], [4, 6, 6, 4]])  # corners 2 x 2, edges 2 x 3
    got = box_sum_inplane(np.ones((1, 5, 5)), 2, np)[0]
    assert got[2, 2] == 25 and got[0, 0] == 9 and got[0, 2] == 15  # 5 x 5, 3 x 3, 3 x 5


def test_box_sum_of_an_impulse_is_the_window_around_it():
    vol = np.zeros((2, 5, 7))
    vol[1, 1, 2] = 1.0  # slice 1, row 1, column 2
    got = box_sum_inplane(vol, 1, np)
    want = np.zeros((2, 5, 7))
    want[1, 0:3, 1:4] = 1.0
    np.testing.assert_array_equal(got, want)
    got = box_sum_inplane(vol, 2, np)
    want = np.zeros((2, 5, 7))
    want[1, 0:4, 0:5] = 1.0  # rows -1..3 cut at 0, columns 0..4
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- validity
def _validity_engine(mask, s_ref):
    return types.SimpleNamespace(xp=xp, mask=mask, floor2=4.0, fraction2=0.25, s_ref=s_ref, _ref_mag2=None)


def test_a_voxel_is_measured_only_above_the_floor_and_the_fraction_of_its_reference():
    # |S_ref|^2 = 16 in every voxel but the last (|S_ref|^2 = 3.24 < floor 4); fraction 0.5 -> |S|^2 >= 0.25 * 16 = 4
    s_ref = np.array([[[4.0, 4.0, 4.0, 4.0, 4.0, 1.8]]], dtype=np.complex64)
    mask = np.array([[[True, True, True, True, False, True]]])
    mag2 = np.array([[[4.0, 3.99, 100.0, 1.0, 100.0, 100.0]]])
    got = ArrayEngine._validity(_validity_engine(mask, s_ref), mag2)
    # exactly at the floor and the fraction: in; just under: out; far above: in; masked: out; reference too weak: out
    np.testing.assert_array_equal(got, [[[True, False, True, False, False, False]]])
    weak_ref = np.array([[[8.0]]], dtype=np.complex64)  # |S_ref|^2 = 64 -> fraction threshold 16, floor 4
    got = ArrayEngine._validity(_validity_engine(np.ones((1, 1, 1), bool), weak_ref), np.array([[[9.0]]]))
    assert not got.any()  # above the floor, under the fraction: not measured


# --------------------------------------------------------------------------- unwrapping and re-anchoring
def _engine(shape):
    e = object.__new__(ArrayEngine)
    e.xp, e.shape, e.u, e.valid = xp, shape, None, None
    return e


def test_first_frame_takes_its_phase_change_and_marks_nothing_reanchored():
    e = _engine((1, 1, 3))
    dphi = np.array([[[0.5, -3.0, 2.0]]], np.float32)
    valid = np.array([[[True, False, True]]])
    ArrayEngine._unwrap(e, dphi, valid)
    assert e.u is dphi and e.valid is valid and e.fit_valid is valid
    assert e.reanchored.dtype == np.bool_ and not e.reanchored.any()


def test_tracked_voxels_unwrap_returning_ones_anchor_gone_ones_keep_their_phase():
    e = _engine((1, 3, 3))
    ArrayEngine._unwrap(e, np.full((1, 3, 3), 3.0, np.float32), np.ones((1, 3, 3), bool))
    before = np.ones((1, 3, 3), bool)
    before[0, 1, 1] = False  # the centre was not measured in the last frame
    e.valid, e.u = before, np.full((1, 3, 3), 3.0, np.float32)
    dphi = np.full((1, 3, 3), 3.2 - TWO_PI, np.float32)  # every voxel moved +0.2 rad past the wrap
    valid = np.ones((1, 3, 3), bool)
    valid[0, 0, 0] = False  # gone this frame
    ArrayEngine._unwrap(e, dphi, valid)
    # tracked: unwrapped to 3.2; the centre, back: anchored to its 8 neighbours' mean 3.2 -> 3.2; gone: its dphi
    want = np.full((1, 3, 3), 3.2, np.float32)
    want[0, 0, 0] = np.float32(3.2 - TWO_PI)
    np.testing.assert_allclose(e.u, want, atol=1e-5)
    np.testing.assert_array_equal(e.reanchored, ~before & valid)
    np.testing.assert_array_equal(e.fit_valid, before & valid)
    np.testing.assert_array_equal(e.valid, valid)


def _anchor(dphi, u, tracked):
    return np.asarray(ArrayEngine._anchor(types.SimpleNamespace(xp=xp), dphi, u, tracked), dtype=np.float64)


def test_a_returning_voxel_takes_the_multiple_of_2pi_nearest_its_tracked_neighbours():
    shape = (1, 7, 7)
    tracked = np.zeros(shape, bool)
    tracked[0, 2:5, 2:5] = True
    tracked[0, 3, 3] = False  # the centre returns; its eight neighbours were tracked
    u = np.zeros(shape, np.float32)
    u[0, 2:5, 2:5] = 6.0
    u[0, 2, 2] = 6.8  # mean of the eight: (7 x 6.0 + 6.8) / 8 = 6.1
    dphi = np.full(shape, 0.3, np.float32)
    got = _anchor(dphi, u, tracked)
    # k = round((6.1 - 0.3) / 2 pi) = round(0.923) = 1 -> 0.3 + 2 pi
    assert abs(got[0, 3, 3] - (0.3 + TWO_PI)) < 1e-5
    dphi[0, 3, 3] = -9.0  # k = round((6.1 + 9.0) / 2 pi) = round(2.403) = 2
    assert abs(_anchor(dphi, u, tracked)[0, 3, 3] - (-9.0 + 2 * TWO_PI)) < 1e-5


def test_the_mean_is_over_tracked_neighbours_only_and_a_single_one_counts():
    shape = (1, 7, 7)
    tracked = np.zeros(shape, bool)
    tracked[0, 3, 4] = True  # one tracked neighbour, u = 9.0
    u = np.full(shape, 50.0, np.float32)  # untracked voxels' u must not count
    u[0, 3, 4] = 9.0
    dphi = np.full(shape, 9.0 - 0.49 * TWO_PI, np.float32)  # (9.0 - dphi) / 2 pi = 0.49 -> k = 0
    got = _anchor(dphi, u, tracked)
    assert abs(got[0, 3, 3] - dphi[0, 3, 3]) < 1e-5
    dphi = np.full(shape, 9.0 - 0.51 * TWO_PI, np.float32)  # 0.51 -> k = 1
    assert abs(_anchor(dphi, u, tracked)[0, 3, 3] - (dphi[0, 3, 3] + TWO_PI)) < 1e-5


def test_the_5x5_window_serves_only_where_the_3x3_has_no_tracked_voxel():
    shape = (1, 9, 9)
    tracked = np.zeros(shape, bool)
    tracked[0, 2, 4] = True  # two rows above the centre (4, 4): in its 5 x 5 window, not in its 3 x 3
    u = np.zeros(shape, np.float32)
    u[0, 2, 4] = 12.0
    dphi = np.full(shape, 0.5, np.float32)
    got = _anchor(dphi, u, tracked)
    # centre: 5 x 5 mean 12.0 -> k = round(11.5 / 2 pi) = 2; (3, 4) has it in its 3 x 3: also k = 2
    assert abs(got[0, 4, 4] - (0.5 + 2 * TWO_PI)) < 1e-5
    assert abs(got[0, 3, 4] - (0.5 + 2 * TWO_PI)) < 1e-5
    # (7, 4) is 5 rows away: no tracked voxel in either window -> its own dphi
    assert abs(got[0, 7, 4] - 0.5) < 1e-6
    tracked[0, 5, 4], u[0, 5, 4] = True, 0.0  # now the centre has one in its 3 x 3 (mean 0.0): that one decides
    assert abs(_anchor(dphi, u, tracked)[0, 4, 4] - 0.5) < 1e-6  # k = round(-0.5 / 2 pi) = 0


# --------------------------------------------------------------------------- a constructed engine
def _array_engine(shape=(1, 2, 3), floor=3.0, fraction=0.5):
    from mrtherm.thermometry.drift import DriftModel
    from mrtherm.thermometry.engine import EngineConfig
    ref = np.zeros(shape, bool)
    ref[0, 0, :2] = True
    config = EngineConfig(mask=np.ones(shape, bool), ref=ref, s_ref=np.full(shape, 10.0, np.complex64), auto=False,
                          outlier_rad=1.0, to_celsius=1.0, body_temp_c=37.0, heated_c=1.0, valid_floor=floor,
                          valid_fraction=fraction)
    return ArrayEngine(xp, DriftModel(shape, 0, xp), config), ref


def test_the_engine_squares_its_floor_and_fraction_and_keeps_its_drift_candidates():
    engine, ref = _array_engine()
    # floor 3 -> |S|^2 >= 9; fraction 0.5 of |S_ref| = 10 -> |S|^2 >= 25
    got = engine._validity(np.array([[[8.99, 9.0, 24.99], [25.0, 30.0, 100.0]]]))
    np.testing.assert_array_equal(got, [[[False, False, False], [True, True, True]]])
    low, _ = _array_engine(fraction=0.1)  # fraction 0.1 -> |S|^2 >= 1; floor 3 -> 9 decides
    np.testing.assert_array_equal(low._validity(np.array([[[8.0, 9.0, 1.5], [9.5, 2.0, 50.0]]])),
                                  [[[False, True, False], [True, False, True]]])
    np.testing.assert_array_equal(engine.drift_candidates(), ref)


def test_a_reference_exactly_at_the_floor_is_measurable():
    s_ref = np.array([[[2.0, 1.99]]], dtype=np.complex64)  # |S_ref|^2 = 4.0 (the floor) and 3.96
    got = ArrayEngine._validity(_validity_engine(np.ones((1, 1, 2), bool), s_ref), np.array([[[50.0, 50.0]]]))
    np.testing.assert_array_equal(got, [[[True, False]]])


def test_a_restored_engine_reports_no_reanchored_voxel_until_its_next_frame():
    engine, _ = _array_engine()
    frame = (np.full((1, 2, 3), 10.0, np.float32), np.zeros((1, 2, 3), np.float32), True)
    engine.pass1(*engine.to_device(frame[0], frame[1]), True)
    restored, _ = _array_engine()
    restored.restore(engine.state())
    valid, back = restored.frame_validity()
    assert back.dtype == np.bool_ and back.shape == (1, 2, 3) and not back.any()
    np.testing.assert_array_equal(valid, engine.frame_validity()[0])


def test_one_tracked_neighbour_in_3x3_is_averaged_alone_though_the_5x5_holds_more():
    shape = (1, 9, 9)
    tracked = np.zeros(shape, bool)
    u = np.zeros(shape, np.float32)
    tracked[0, 4, 5], u[0, 4, 5] = True, 9.0  # the only one in the centre's 3 x 3
    tracked[0, 4, 2], u[0, 4, 2] = True, 0.0  # in the 5 x 5 only
    dphi = np.full(shape, 9.0 - 0.45 * TWO_PI, np.float32)  # 3 x 3 mean 9.0: k = round(0.45) = 0
    got = _anchor(dphi, u, tracked)
    assert abs(got[0, 4, 4] - dphi[0, 4, 4]) < 1e-5  # mean 9.0 / 1, not 9.0 / 2 (k would be round(-0.27) = 0 too)
    dphi = np.full(shape, 9.0 - 0.8 * TWO_PI, np.float32)  # 9.0 / 1: k = round(0.8) = 1; 9.0 / 2: round(0.08) = 0
    assert abs(_anchor(dphi, u, tracked)[0, 4, 4] - (dphi[0, 4, 4] + TWO_PI)) < 1e-5
