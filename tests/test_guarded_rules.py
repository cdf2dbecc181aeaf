"""Documented rules that a one-line change could remove: each has a fast test of its own here.

- live: an image received twice (same SOP Instance UID) is ignored and counted, never fed twice;
- window: a ray is "near" a critical structure only when it passes closer to it than its focus is;
- phase scaling: a frame with Siemens header scaling (slope 2, intercept -4096) is Siemens even when its values
  stay within +-3000, where the value range alone would read it as GE milliradians (temperatures x 1.30).

Expected values are by hand or by construction, never from the code under test.
"""

import logging
import math
import os

import numpy as np
import pytest

from mrtherm.io.phase_scale import detect_phase_scale, phase_to_radians
from mrtherm.window import Scene, trace
from mrtherm.window.scene import CRITICAL_NEAR, STATUS_CLEAR, STATUS_DEGRADED
from mrtherm.window.transducer import Transducer


# --------------------------------------------------------------------------- live: duplicate images


def _session(out, **extra):
    from mrtherm.live.session import LiveSession
    from mrtherm.thermometry.params import ThermometryParams
    return LiveSession(out, {"params": ThermometryParams(baseline_frames=3), "slices": 1, **extra})


@pytest.fixture(scope="module")
def one_slice_treatment(tmp_path_factory):
    """One sonication, one slice, 6 frames: 12 DICOM files (magnitude + phase per frame), in scanner order."""
    from live_tools import make_treatment, scanner_order
    src, _ = make_treatment(tmp_path_factory.mktemp("dicom"), n_sonications=1, shape_zyx=(1, 16, 16), n_frames=6)
    files = scanner_order(src)
    assert len(files) == 12
    return [(path, open(path, "rb").read()) for path in files]


def test_an_image_received_twice_is_ignored_and_counted_not_fed_twice(one_slice_treatment, tmp_path, caplog):
    files = one_slice_treatment
    caplog.set_level(logging.DEBUG, logger="mrtherm.live")
    twice = _session(tmp_path / "twice")
    statuses = []
    for path, data in files:  # each image at once again, as a scanner re-sending after a lost acknowledgement
        statuses += [twice.receive(data, path), twice.receive(data, path)]
    twice.close()
    assert statuses == [0] * 24  # the duplicate is acknowledged (success), not refused
    assert twice.counts == {"received": 12, "duplicates": 12, "refused": {}}
    ignored = [r for r in caplog.records if "already received: ignored" in r.getMessage()]
    assert len(ignored) == 12  # logged once per duplicate, as receive() documents
    assert len(os.listdir(tmp_path / "twice" / "received")) == 12  # kept once
    assert twice.state.frames_processed == 6  # by construction: 6 frames, each once
    assert twice.skipped == [] and twice.assembler.pending() == []
    assert twice.assembler.ignored["already processed"] == 0

    once = _session(tmp_path / "once")
    for path, data in files:
        assert once.receive(data, path) == 0
    once.close()
    assert once.state.frames_processed == 6
    dose_twice, tmax_twice = twice.state.maps()
    dose_once, tmax_once = once.state.maps()
    np.testing.assert_array_equal(dose_twice, dose_once)  # the same frames, each once: the same dose
    np.testing.assert_array_equal(tmax_twice, tmax_once)


# --------------------------------------------------------------------------- window: "near" a critical structure

SHAPE = (40, 21, 21)  # (z, y, x), 1 mm voxels, world mm = voxel index
START, FOCUS = np.array([10.0, 10.0, 0.0]), np.array([10.0, 10.0, 30.0])  # a ray along z through voxel centres


def _scene_with_cord_voxel(x, y, z):
    lab = np.ones(SHAPE, np.int16)  # soft tissue
    lab[z, y, x] = 10  # one spinal-cord voxel
    return Scene(lab, np.eye(4))


@pytest.mark.parametrize("cord_xyz, ray_mm, focus_mm, near", [
    # the ray passes the cord at 3 mm (voxel z = 10); the focus is sqrt(3^2 + 20^2) = 20.22 mm from it
    ((13, 10, 10), 3.0, math.sqrt(9 + 400), True),
    # ray at 2 mm (z = 26), focus sqrt(2^2 + 4^2) = 4.47 mm: both within 5 mm, the ray closer
    ((12, 10, 26), 2.0, math.sqrt(4 + 16), True),
    # cord beside the focus: the ray's closest point is its focus, 3 mm (within 5 mm, but not closer than the focus)
    ((13, 10, 30), 3.0, 3.0, False),
    # cord on the axis 3 mm behind the focus: again closest at the focus
    ((10, 10, 33), 3.0, 3.0, False),
])
def test_near_only_when_the_ray_passes_closer_than_its_focus(cord_xyz, ray_mm, focus_mm, near):
    scene = _scene_with_cord_voxel(*cord_xyz)
    assert scene.edt_at(FOCUS) == pytest.approx(focus_mm, abs=1e-6)
    res = trace(scene, START[None], FOCUS[None])
    assert res["min_critical_mm"][0] == pytest.approx(ray_mm, abs=1e-6)
    assert bool(res["reasons"][0] & CRITICAL_NEAR) is near
    assert res["status"][0] == (STATUS_DEGRADED if near else STATUS_CLEAR)


@pytest.mark.parametrize("focus_edt_mm, near", [(2.0, False), (3.0, False), (4.0, True)])
def test_near_against_the_focus_distance_given_by_the_caller(focus_edt_mm, near):
    """The feasibility map passes each focus's distance itself: a ray passing at 3 mm is near only for a focus
    farther than 3 mm from the structure."""
    res = trace(_scene_with_cord_voxel(13, 10, 10), START[None], FOCUS[None], focus_edt_mm=np.array([focus_edt_mm]))
    assert res["min_critical_mm"][0] == pytest.approx(3.0, abs=1e-6)
    assert bool(res["reasons"][0] & CRITICAL_NEAR) is near


def test_window_report_degrades_only_the_element_passing_closer_than_the_focus():
    """Element 0 on the z axis passes a nerve root at 3 mm (focus 20.22 mm from it); element 1, mirrored in x,
    passes it at more than 5 mm: only element 0 is degraded."""
    from mrtherm.window import check_window
    lab = np.ones(SHAPE, np.int16)
    lab[10, 10, 13] = 11  # nerve root at (13, 10, 10) mm
    tr = Transducer("two", 1.0e6, np.array([[10.0, 10.0, 0.0], [4.0, 10.0, 0.0]]),
                    np.array([[0.0, 0.0, 1.0], [0.2, 0.0, 1.0]]) / np.array([[1.0], [math.hypot(0.2, 1.0)]]),
                    np.array([1.0, 1.0]))
    rep = check_window(Scene(lab, np.eye(4)), tr, FOCUS)
    assert [e["status"] for e in rep["elements"]] == ["degraded", "clear"]
    assert rep["elements"][0]["reasons"] == ["CRITICAL_STRUCTURE"]
    assert rep["elements"][0]["min_distance_critical_mm"] == 3.0
    assert rep["elements"][1]["min_distance_critical_mm"] > 5.0
    lab[10, 10, 13], lab[30, 10, 13] = 1, 11  # the root beside the focus instead: 3 mm from both rays' ends
    rep = check_window(Scene(lab, np.eye(4)), tr, FOCUS)
    assert [e["status"] for e in rep["elements"]] == ["clear", "clear"]
    assert rep["elements"][0]["min_distance_critical_mm"] == 3.0 and rep["focus_to_critical_mm"] == 3.0


# --------------------------------------------------------------------------- phase scaling: Siemens header

# Siemens rescaled phase: stored 0..4095, value = 2 x stored - 4096, so -4096..4094 and always even; pi / 4096 rad each
SMALL_SIEMENS = np.array([-3000.0, -2048.0, -1024.0, 0.0, 1024.0, 2048.0, 2998.0])
BY_HAND_RAD = np.array([-3000 * math.pi / 4096, -math.pi / 2, -math.pi / 4, 0.0, math.pi / 4, math.pi / 2,
                        2998 * math.pi / 4096])


def test_siemens_header_scaling_decides_even_within_the_ge_range():
    assert np.abs(SMALL_SIEMENS).max() <= 3000  # inside GE's +-3142 mrad: the value range alone says GE
    assert detect_phase_scale(SMALL_SIEMENS, 1.0, 0.0, True, "x") == "ge-mrad"
    for integer_on_disk in (True, False):
        assert detect_phase_scale(SMALL_SIEMENS, 2.0, -4096.0, integer_on_disk, "x") == "siemens"
    np.testing.assert_allclose(phase_to_radians(SMALL_SIEMENS, "siemens"), BY_HAND_RAD, rtol=0, atol=1e-12)
    # read as milliradians instead, every phase (hence temperature) would be 4096 / (1000 pi) = 1.304 x too large
    assert 1e-3 / (math.pi / 4096) == pytest.approx(1.3038, abs=1e-4)


def test_siemens_nifti_with_small_phase_is_read_in_siemens_units(tmp_path):
    """dcm2niix keeps Siemens' scaling in the NIfTI header (scl_slope 2, scl_inter -4096); a treatment whose phase
    stays within +-3000 (|phase| < 2.3 rad) still loads as Siemens, every value v as v pi / 4096 rad."""
    import mrtherm
    from mrtherm.io import niftiio
    aff = np.diag([2.0, 2.0, 4.0, 1.0])
    nt, shape = 3, (2, 4, 4)
    values = np.resize(SMALL_SIEMENS, (nt,) + shape)  # (t, z, y, x), every value within +-3000
    stored = ((values + 4096.0) / 2.0).astype(np.int16)  # what the scanner stores
    p_ph = os.path.join(tmp_path, "phase.nii.gz")
    niftiio.save_stored_integers(stored, aff, p_ph, 2.0, -4096.0, frame_time_s=3.0)
    p_mag = os.path.join(tmp_path, "magnitude.nii.gz")
    niftiio.save_volume(np.full((nt,) + shape, 100.0, np.float32), aff, p_mag, frame_time_s=3.0)
    exam = mrtherm.load_exam(p_mag, p_ph, te_s=0.01, b0_t=3.0)
    assert exam.phase_scale == "siemens"
    by_hand = np.resize(BY_HAND_RAD, (nt,) + shape)
    for t in range(nt):
        np.testing.assert_allclose(np.angle(exam.frame(t)), by_hand[t], rtol=0, atol=1e-5)


def test_siemens_dicom_tags_say_siemens():
    from mrtherm.io.dicom.vendor import phase_scale_from_tags
    assert phase_scale_from_tags("siemens", 2.0, -4096.0, None)[0] == "siemens"
