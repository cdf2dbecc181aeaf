"""The window report's rules and central ray, against hand-written expectations on analytic scenes.

Scene: 48^3 voxels of 1 mm, world = voxel - 24 mm, soft tissue (label 1) everywhere unless said;
focus (0, 0, 6) mm; spherical cap of radius 40 mm along +z, so its centre (apex) is at (0, 0, -34) mm,
outside the labelled volume: every ray reports OUT_OF_VOLUME (water, not blocking).
"""

import numpy as np
import pytest

from mrtherm.window import Scene, WindowConfig, check_window
from mrtherm.window.transducer import spherical_cap

N = 48
AFF = np.array([[1.0, 0, 0, -24], [0, 1.0, 0, -24], [0, 0, 1.0, -24], [0, 0, 0, 1]])
FOCUS = np.array([0.0, 0.0, 6.0])
SOURCE = "mrtherm default (configurable)"


def _labels():
    return np.ones((N, N, N), dtype=np.int16)


def _voxel(world_xyz):
    x, y, z = (int(round(v + 24)) for v in world_xyz)
    return z, y, x


def _check(lab, cfg=None, n=64):
    return check_window(Scene(lab, AFF, config=cfg), spherical_cap(40.0, 50.0, n, FOCUS, (0, 0, 1)), FOCUS)


def _rule(report, name):
    return next(r for r in report["rules"] if r["rule"] == name)


def test_every_rule_of_a_clear_scene():
    rep = _check(_labels())
    assert rep["rules"] == [
        {"rule": "active_fraction", "value": 1.0, "unit": "fraction of transducer area", "result": "PASS",
         "threshold": {"pass": 0.68, "warn": 0.49}, "source": SOURCE},
        {"rule": "central_ray_clear", "value": ["OUT_OF_VOLUME"], "unit": "reasons", "result": "PASS",
         "threshold": "no blocking reason on the transducer-centre-to-focus ray", "source": SOURCE},
        {"rule": "focus_to_critical_structure", "value": None, "unit": "mm", "result": "PASS",
         "threshold": {"warn_below": 10.0, "fail_below": 5.0}, "source": SOURCE,
         "note": "no spinal cord or nerve root labelled"},
        {"rule": "elements_crossing_critical_structures", "value": 0.0, "unit": "fraction of transducer area",
         "result": "PASS", "threshold": "0 (such elements must be switched off)", "source": SOURCE},
        {"rule": "critical_structure_beyond_focus", "value": None, "unit": "mm along the beam axis", "result": "PASS",
         "threshold": {"warn_within_mm": 30.0}, "source": SOURCE, "note": "far-field energy behind the focus"},
        {"rule": "scar_in_path", "value": 0.0, "unit": "fraction of transducer area", "result": "PASS",
         "threshold": "0", "source": SOURCE, "note": "scars block by default"},
    ]
    assert rep["verdict"] == "PASS" and rep["blocked_fraction"] == 0.0 and rep["focus_to_critical_mm"] is None
    assert rep["element_counts"] == {"clear": 64, "degraded": 0, "blocked": 0}


@pytest.mark.parametrize("pass_at, warn_at, expected", [(1.0, 0.5, "PASS"), (1.0 + 1e-9, 1.0, "WARN"),
                                                        (1.0 + 1e-9, 1.0 + 1e-9, "FAIL")])
def test_active_fraction_thresholds_are_inclusive(pass_at, warn_at, expected):
    rep = _check(_labels(), WindowConfig(active_fraction_pass=pass_at, active_fraction_warn=warn_at))
    assert _rule(rep, "active_fraction")["result"] == expected and rep["verdict"] == expected


def test_gas_on_the_central_ray_fails_it():
    lab = _labels()
    lab[_voxel((0, 0, -10))] = 7  # one gas voxel on the axis, 16 mm before the focus
    rep = _check(lab)
    central = _rule(rep, "central_ray_clear")
    assert central["result"] == "FAIL" and central["value"] == ["GAS", "OUT_OF_VOLUME"]
    assert rep["verdict"] == "FAIL" and rep["central_ray"]["reasons"] == ["GAS", "OUT_OF_VOLUME"]


@pytest.mark.parametrize("distance_mm, expected", [(4.0, "FAIL"), (5.0, "WARN"), (7.0, "WARN"), (10.0, "PASS"),
                                                   (12.0, "PASS")])
def test_focus_to_critical_structure_by_distance(distance_mm, expected):
    lab = _labels()
    lab[_voxel((distance_mm, 0, 6))] = 11  # one nerve-root voxel beside the focus
    rep = _check(lab)
    rule = _rule(rep, "focus_to_critical_structure")
    assert rule["value"] == distance_mm and rule["result"] == expected and rule["unit"] == "mm"
    assert rule["note"] == "distance from the focus to the nearest spinal-cord or nerve-root voxel centre"
    assert rep["focus_to_critical_mm"] == distance_mm


def test_critical_structure_behind_the_focus():
    lab = _labels()
    # spinal cord on the beam axis, voxel from 15.5 to 16.5 mm; samples every 0.25 mm from the focus: 9.5 mm lies
    # on the voxel boundary, the first sample inside is 9.75 mm behind the focus
    lab[_voxel((0, 0, 16))] = 10
    rule = _rule(_check(lab), "critical_structure_beyond_focus")
    assert rule["value"] == ["spinal cord at 9.75 mm"] and rule["result"] == "WARN"
    rule = _rule(_check(lab, WindowConfig(beyond_focus_critical_warn_mm=9.0)), "critical_structure_beyond_focus")
    assert rule["value"] == ["spinal cord at 9.75 mm"] and rule["result"] == "PASS"
    rule = _rule(_check(lab, WindowConfig(beyond_focus_critical_warn_mm=9.75)), "critical_structure_beyond_focus")
    assert rule["result"] == "WARN"  # within means at or closer


def test_scar_in_the_path_and_its_configuration():
    lab = _labels()
    lab[_voxel((0, 0, -20))[0], :, :] = 9  # a scar plane 26 mm before the focus: every element crosses it
    rep = _check(lab)
    rule = _rule(rep, "scar_in_path")
    assert rule["value"] == 1.0 and rule["result"] == "WARN" and rule["note"] == "scars block by default"
    assert rep["element_counts"]["blocked"] == 64 and _rule(rep, "active_fraction")["result"] == "FAIL"
    rep = _check(lab, WindowConfig(scar_blocks=False))
    rule = _rule(rep, "scar_in_path")
    assert rule["note"] == "scars degrade (configured)" and rule["value"] == 1.0
    assert rep["element_counts"] == {"clear": 0, "degraded": 64, "blocked": 0}
    assert _rule(rep, "active_fraction")["value"] == 1.0


def test_central_ray_report_by_hand():
    lab = _labels()
    lab[:, :, :] = 1
    lab[_voxel((0, 0, -15))[0]:_voxel((0, 0, -10))[0] + 1, :, :] = 2  # fat from -15.5 to -9.5 mm: 6 mm
    rep = _check(lab)
    cr = rep["central_ray"]
    assert cr["reasons"] == ["OUT_OF_VOLUME"] and cr["fat_thickness_mm"] == pytest.approx(6.0, abs=1e-3)
    # no skin labelled: depth from the first labelled voxel (volume edge at z = -24.5 mm) to the focus
    assert cr["skin_to_target_mm"] == pytest.approx(30.5, abs=0.25)
    assert cr["path_mm_by_class"] == {"soft tissue": pytest.approx(30.5 - 6.0, abs=1e-3),
                                      "fat": pytest.approx(6.0, abs=1e-3)}
    assert rep["transducer"]["beam_axis"] == pytest.approx([0.0, 0.0, 1.0], abs=0.01)
    assert rep["transducer"]["elements"] == 64 and rep["target_world_mm"] == [0.0, 0.0, 6.0]


def test_skin_depth_counts_from_the_skin():
    lab = _labels()
    lab[_voxel((0, 0, -20))[0], :, :] = 4  # skin plane from -20.5 to -19.5 mm
    cr = _check(lab)["central_ray"]
    assert cr["skin_to_target_mm"] == pytest.approx(26.5, abs=0.25)


def test_element_rows_by_hand():
    tr = spherical_cap(40.0, 50.0, 64, FOCUS, (0, 0, 1))
    rep = _check(_labels())
    for e, p in zip(rep["elements"], tr.positions_mm):
        assert e["status"] == "clear" and e["reasons"] == ["OUT_OF_VOLUME"] and e["first_block_world_mm"] is None
        assert e["path_length_mm"] == pytest.approx(40.0, abs=1e-3)  # every element is 40 mm from the focus
        assert e["element_target_angle_deg"] == pytest.approx(0.0, abs=1e-6)
        assert e["min_distance_critical_mm"] is None and e["incidence_angle_deg"] is None
        inside = e["path_mm_by_class"]["soft tissue"]
        outside = e["path_mm_by_class"].get("outside volume (water)", 0.0)
        assert inside + outside == pytest.approx(40.0, abs=1e-2) and outside > 0
        # the path enters the volume through its face z = -24.5 mm: 30.5 mm of the 6 - z_element mm height
        assert inside == pytest.approx(40.0 * 30.5 / (FOCUS[2] - p[2]), abs=1e-2)
    assert sum(e["area_mm2"] for e in rep["elements"]) == pytest.approx(rep["transducer"]["total_area_mm2"])
