"""The window report's rules and central ray, against hand-written expectations on analytic scenes.

Scene: 48^3 voxels of 1 mm, world = voxel - 24 mm, soft tissue (label 1) everywhere unless said;
focus (0, 0, 6) mm; spherical cap of radius 40 mm along +z, so its centre (apex) is at (0, 0, -34) mm,
outside the labelled volume: every ray reports OUT_OF_VOLUME (water, not blocking).
"""

import warnings

import numpy as np
import pytest

import mrtherm
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


def _two_elements(areas_mm2=(10.0, 30.0)):
    from mrtherm.window.transducer import Transducer
    return Transducer("two elements", 1.5e6, np.array([[0.0, 0.0, -30.0], [10.0, 0.0, -30.0]]),
                      np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]), np.array(areas_mm2))


def test_element_rows_of_a_layered_scene_by_hand():
    """Two hand-placed elements at 1.5 MHz through water, soft tissue, fat and the bone surface at the focus.

    Slabs along z (world mm, voxel faces at half-integers): fat -15.5..-9.5 (6 mm), cortical bone from 5.5 on
    (the focus at z = 6 sits 0.5 mm into the bone surface); a nerve-root voxel at (-3, 3, 0). Element 0 at
    (0, 0, -30) on the axis, element 1 at (10, 0, -30); both face +z. Every ray rises 36 mm in z, so each
    class's length along element 1's ray is its z extent times L / 36 with L = sqrt(10^2 + 36^2).
    Attenuation (acoustics table, dB/cm at 1 MHz x (f / 1 MHz)^exponent): water 0.0022 x 1.5^2, soft tissue
    0.50 x 1.5, fat 0.63 x 1.5, bone 15 x 1.5. Reported precision: 0.001 mm and dB, 0.01 degree and mm
    for angles and critical-structure distances.
    """
    lab = _labels()
    lab[_voxel((0, 0, -15))[0]:_voxel((0, 0, -10))[0] + 1] = 2
    lab[_voxel((0, 0, 6))[0]:] = 5
    lab[_voxel((-3, 3, 0))] = 11
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray RuntimeWarning (0 x inf attenuation of absent gas) reaches users
        rep = check_window(Scene(lab, AFF), _two_elements(), FOCUS)
    z_extent = {"outside volume (water)": 5.5, "soft tissue": 24.0, "fat": 6.0, "cortical bone": 0.5}
    db_per_mm = {"outside volume (water)": 0.0022 * 2.25 / 10, "soft tissue": 0.75 / 10, "fat": 0.945 / 10,
                 "cortical bone": 22.5 / 10}
    e0, e1 = rep["elements"]
    # element 0 runs along voxel centres: lengths are the z extents; 4.24 mm = sqrt(3^2 + 3^2) from the nerve
    assert e0["path_mm_by_class"] == z_extent
    assert e0["path_length_mm"] == 36.0 and e0["element_target_angle_deg"] == 0.0
    assert e0["attenuation_db"] == 3.495  # 3.4947225 dB by hand
    assert e0["incidence_angle_deg"] == 0.0 and e0["min_distance_critical_mm"] == 4.24
    assert e0["status"] == "degraded" and e0["reasons"] == ["CRITICAL_STRUCTURE", "OUT_OF_VOLUME"]
    # element 1: L = 37.363 mm; angle to its normal and bone incidence atan(10 / 36) = 15.524 degrees; nearest
    # visited voxel to the nerve is (1, 0, 1), sqrt(4^2 + 3^2 + 1^2) = 5.099 mm, not nearer than 5 mm: clear
    scale = np.sqrt(1396.0) / 36.0
    assert e1["path_length_mm"] == 37.363
    assert e1["path_mm_by_class"] == {k: round(v * scale, 3) for k, v in z_extent.items()}
    assert e1["attenuation_db"] == round(3.4947225 * scale, 3) == 3.627
    assert sum(e1["path_mm_by_class"][k] * db_per_mm[k] for k in z_extent) == pytest.approx(3.627, abs=1e-3)
    assert e1["element_target_angle_deg"] == 15.52 and e1["incidence_angle_deg"] == 15.52
    assert e1["min_distance_critical_mm"] == 5.1
    assert e1["status"] == "clear" and e1["reasons"] == ["OUT_OF_VOLUME"]
    assert e0["first_block_world_mm"] is None and e1["first_block_world_mm"] is None
    # focus (0, 0, 6) to the nerve voxel centre: sqrt(3^2 + 3^2 + 6^2) = 7.348 mm -> WARN (5 <= d < 10)
    rule = _rule(rep, "focus_to_critical_structure")
    assert rule["value"] == 7.35 and rule["result"] == "WARN" and rep["focus_to_critical_mm"] == 7.35
    assert rule["threshold"] == {"warn_below": 10.0, "fail_below": 5.0} and rule["source"] == SOURCE
    assert [r["result"] for r in rep["rules"]] == ["PASS", "PASS", "WARN", "PASS", "PASS", "PASS"]
    assert rep["verdict"] == "WARN"  # the worst rule, whatever its place in the list
    assert [e["area_mm2"] for e in rep["elements"]] == [10.0, 30.0]
    assert rep["transducer"]["centre_world_mm"] == [7.5, 0.0, -30.0]


def test_an_element_through_gas_has_no_finite_attenuation_and_a_first_block_point():
    lab = _labels()
    lab[_voxel((0, 0, -20))] = 7  # gas on element 0's path only, voxel faces at z = -20.5 and -19.5
    rep = check_window(Scene(lab, AFF), _two_elements((10.0, 20.0)), FOCUS)
    e0, e1 = rep["elements"]
    assert e0["status"] == "blocked" and e0["reasons"] == ["GAS", "OUT_OF_VOLUME"]
    assert e0["attenuation_db"] is None and e0["path_mm_by_class"]["gas"] == 1.0
    assert e0["first_block_world_mm"] == pytest.approx([0.0, 0.0, -20.5], abs=1e-9)
    assert e1["status"] == "clear" and e1["attenuation_db"] == pytest.approx(37.363 / 10 * 0.75 * 30.5 / 36 +
                                                                              37.363 / 10 * 0.0022 * 2.25 * 5.5 / 36,
                                                                              abs=1e-3)
    # areas 10 and 20 mm^2: 2/3 active, reported to 1e-4 in the rule
    assert rep["active_fraction"] == pytest.approx(2 / 3) and rep["blocked_fraction"] == pytest.approx(1 / 3)
    rule = _rule(rep, "active_fraction")
    assert rule["value"] == 0.6667 and rule["result"] == "WARN"  # below 0.68 (pass), at least 0.49 (warn)


class _MarkedGpuPlugin:
    """Stands in for the CUDA plugin: reports every element blocked by gas, which the NumPy trace would not."""

    def trace_pairs(self, scene, positions, foci):
        assert isinstance(scene, Scene) and scene.shape == (N, N, N)
        np.testing.assert_array_equal(positions, _two_elements().positions_mm)
        np.testing.assert_array_equal(foci, [FOCUS])
        n, m = len(positions), len(foci)
        from mrtherm.window.scene import GAS, STATUS_BLOCKED
        return {"status": np.full((n, m), STATUS_BLOCKED, np.int8), "reasons": np.full((n, m), GAS, np.int32)}


def test_gpu_backend_returns_the_gpu_statuses(monkeypatch):
    """With backend="cupy" the verdict comes from the GPU plugin's traversal (found by the mrtherm.gpu hook)."""
    import mrtherm.backend as backend
    monkeypatch.setattr(backend, "cupy_usable", lambda: True)
    with backend.GPU_PLUGINS.use(_MarkedGpuPlugin()):
        rep = check_window(Scene(_labels(), AFF), _two_elements(), FOCUS, backend="cupy")
    assert [e["status"] for e in rep["elements"]] == ["blocked", "blocked"]
    assert [e["reasons"] for e in rep["elements"]] == [["GAS"], ["GAS"]]
    assert rep["element_counts"] == {"clear": 0, "degraded": 0, "blocked": 2} and rep["verdict"] == "FAIL"
    assert rep["active_fraction"] == 0.0 and rep["blocked_fraction"] == 1.0
    # path lengths of the table still come from the NumPy traversal
    assert rep["elements"][0]["path_length_mm"] == 36.0


def test_gpu_backend_without_the_gpu_package_is_a_one_line_error(monkeypatch):
    import mrtherm.backend as backend
    monkeypatch.setattr(backend, "cupy_usable", lambda: True)
    with backend.GPU_PLUGINS.use(None), \
            pytest.raises(mrtherm.BackendUnavailableError, match="^no GPU plugin is installed"):
        check_window(Scene(_labels(), AFF), _two_elements(), FOCUS, backend="cupy")
    assert backend.GPU_PLUGINS.chosen is None  # the block's choice is gone after it


@pytest.mark.skipif(mrtherm.backend.cupy_usable(), reason="a GPU is usable here")
def test_backends_without_a_gpu():
    """auto falls back to NumPy (same report); cupy without a GPU is a one-line error."""
    scene = Scene(_labels(), AFF)
    assert check_window(scene, _two_elements(), FOCUS, backend="auto") == \
        check_window(scene, _two_elements(), FOCUS, backend="numpy")
    with pytest.raises(mrtherm.BackendUnavailableError, match="backend 'cupy'"):
        check_window(scene, _two_elements(), FOCUS, backend="cupy")


def _layered_labels():
    lab = _labels()
    lab[_voxel((0, 0, -15))[0]:_voxel((0, 0, -10))[0] + 1] = 2
    lab[_voxel((0, 0, 6))[0]:] = 5
    return lab


def test_report_layout_transducer_config_and_sources():
    """README's report.json layout, on the layered scene with the two elements (areas 10 and 30 mm^2)."""
    rep = check_window(Scene(_layered_labels(), AFF), _two_elements(), FOCUS)
    assert set(rep) == {"verdict", "active_fraction", "blocked_fraction", "element_counts", "target_world_mm",
                        "transducer", "central_ray", "beyond_focus", "focus_to_critical_mm", "rules", "config",
                        "sources", "elements", "element_positions_world_mm"}
    # centre (0 x 10 + 10 x 30) / 40 = 7.5 mm in x; axis (-7.5, 0, 36) / sqrt(1352.25)
    assert rep["transducer"] == {"name": "two elements", "frequency_hz": 1.5e6, "elements": 2,
                                 "centre_world_mm": [7.5, 0.0, -30.0],
                                 "beam_axis": pytest.approx([-7.5 / 36.77295, 0.0, 36 / 36.77295], abs=1e-6),
                                 "total_area_mm2": 40.0}
    assert rep["element_positions_world_mm"] == [[0.0, 0.0, -30.0], [10.0, 0.0, -30.0]]
    assert rep["config"]["critical_angle_deg"] == pytest.approx(26.66146, abs=1e-5)  # degrees(asin(1540 / 3432))
    assert rep["config"]["target_surface_mm"] == 5.0 and rep["config"]["critical_min_distance_mm"] == 5.0
    src = rep["sources"]
    assert src["attenuation"] == "Diagnostics 2023;13:855, Table 4 (attenuation at 1 MHz, dB/cm)"
    assert "1540 m/s" in src["sound_speeds"] and "3432 m/s" in src["sound_speeds"]
    assert src["attenuation_table"]["fat"] == {"db_per_cm_1mhz": 0.63, "exponent": 1.0, "note": "adipose tissue"}
    assert src["attenuation_table"]["coupling"] == {"db_per_cm_1mhz": 0.0022, "exponent": 2.0, "note": "water"}
    # central ray, 36.773 mm long and rising 36 mm: fat 6 x 36.773 / 36 = 6.129 mm, bone 0.511, soft tissue 24.515
    cr = rep["central_ray"]
    assert cr["fat_thickness_mm"] == 6.129
    assert cr["path_mm_by_class"] == {"soft tissue": 24.515, "fat": 6.129, "cortical bone": 0.511}
    # no skin labelled: depth from the first labelled sample; 149 samples, the first inside (z >= -24.5 mm) is
    # number 23, (1 - 23 / 148) x 36.773 = 31.058 mm from the focus
    assert cr["skin_to_target_mm"] == 31.06


@pytest.mark.parametrize("mm_per_voxel", [1.0, 0.5])
def test_classes_beyond_the_focus_by_hand(mm_per_voxel):
    """Behind the focus the axis runs in bone until it leaves the volume at z = 23.5 voxels, i.e. after
    17.5 / (36 / 36.773) = 17.876 voxels. 20.1 voxels sampled every quarter voxel or less: 82 points,
    20.1 / 81 = 0.24815 voxels apart; points 0..72 in bone (72 x 0.24815 = 17.867), 73..81 outside
    (coupling, label 0). With 0.5 mm voxels every length halves."""
    s = mm_per_voxel
    aff = AFF * np.array([[s], [s], [s], [1.0]])
    tr = _two_elements()
    tr.positions_mm = tr.positions_mm * s
    rep = check_window(Scene(_layered_labels(), aff, config=WindowConfig(beyond_focus_mm=20.1 * s)), tr, FOCUS * s)
    step = 20.1 / 81 * s
    assert rep["beyond_focus"] == [
        {"label": 5, "class": "cortical bone", "distance_mm": 0.0, "length_mm": round(73 * step, 2)},
        {"label": 0, "class": "coupling", "distance_mm": round(73 * step, 2), "length_mm": round(9 * step, 2)}]
    assert rep["beyond_focus"][1]["distance_mm"] == {1.0: 18.11, 0.5: 9.06}[s]


@pytest.mark.parametrize("label, rule_name", [(9, "scar_in_path"), (11, "elements_crossing_critical_structures")])
def test_area_fraction_rules_by_hand(label, rule_name):
    """Scar or a nerve root on element 0's path only; areas 10 and 20 mm^2: a third of the area, 0.3333."""
    lab = _labels()
    lab[_voxel((0, 0, -20))] = label
    rep = check_window(Scene(lab, AFF), _two_elements((10.0, 20.0)), FOCUS)
    rule = _rule(rep, rule_name)
    assert rule["value"] == 0.3333 and rule["result"] == "WARN" and rule["unit"] == "fraction of transducer area"
    assert [e["status"] for e in rep["elements"]] == ["blocked", "clear"]


@pytest.mark.parametrize("target", [(0.0, 6.0), (0.0, float("nan"), 6.0), (0.0, 0.0, float("inf"))])
def test_a_target_that_is_not_three_finite_numbers_is_refused(target):
    with pytest.raises(mrtherm.ParameterError) as err:
        check_window(Scene(_labels(), AFF), _two_elements(), target)
    assert str(err.value) == f"target must be three finite numbers (x, y, z mm), got {target!r}"


def test_a_target_given_as_text_numbers_is_read_as_floats():
    assert check_window(Scene(_labels(), AFF), _two_elements(), ("0", "0", "6"))["target_world_mm"] == [0.0, 0.0, 6.0]


def test_the_verdict_is_the_worst_rule():
    """Active fraction 2/3 (WARN, the first rule) and a nerve root 4 mm from the focus (FAIL, a later rule)."""
    lab = _labels()
    lab[_voxel((0, 0, -20))] = 7
    lab[_voxel((0, 4, 6))] = 11
    rep = check_window(Scene(lab, AFF), _two_elements((10.0, 20.0)), FOCUS)
    assert [r["result"] for r in rep["rules"]] == ["WARN", "PASS", "FAIL", "PASS", "PASS", "PASS"]
    assert rep["verdict"] == "FAIL"


def test_a_structure_beside_the_central_ray_degrades_it():
    """Nerve root at (2, 2, -10): the axis passes 2.83 mm from it (< 5 mm) and it lies 16.2 mm from the focus."""
    lab = _labels()
    lab[_voxel((2, 2, -10))] = 11
    rep = check_window(Scene(lab, AFF), _two_elements(), FOCUS)
    assert rep["elements"][0]["reasons"] == ["CRITICAL_STRUCTURE", "OUT_OF_VOLUME"]
    assert rep["elements"][0]["min_distance_critical_mm"] == 2.83
    rep = _check(lab)
    assert rep["central_ray"]["reasons"] == ["CRITICAL_STRUCTURE", "OUT_OF_VOLUME"]
    assert _rule(rep, "central_ray_clear")["result"] == "PASS"  # degraded, not blocked


def test_a_transducer_inside_the_volume_has_a_clear_central_ray():
    """Elements at z = -20 (inside) and z = -25.2 (0.7 mm outside the volume's face at -24.5 mm)."""
    from mrtherm.window.transducer import Transducer
    tr = Transducer("inside", 1.0e6, np.array([[0.0, 0.0, -20.0], [0.0, 0.0, -25.2]]),
                    np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]), np.array([10.0, 10.0]))
    rep = check_window(Scene(_labels(), AFF), tr, FOCUS)
    assert rep["central_ray"]["reasons"] == []
    central = _rule(rep, "central_ray_clear")
    assert central["value"] == ["clear"] and central["result"] == "PASS"
    e0, e1 = rep["elements"]
    assert e0["reasons"] == [] and e0["path_mm_by_class"] == {"soft tissue": 26.0}
    assert e1["reasons"] == ["OUT_OF_VOLUME"]
    assert e1["path_mm_by_class"] == {"soft tissue": 30.5, "outside volume (water)": 0.7}


def test_an_element_at_the_target_is_refused():
    tr = _two_elements()
    tr.positions_mm = tr.positions_mm.copy()
    tr.positions_mm[1] = FOCUS
    with pytest.raises(mrtherm.ParameterError) as err:
        check_window(Scene(_labels(), AFF), tr, FOCUS)
    assert str(err.value) == "transducer element 1 lies at the target (0.0, 0.0, 6.0) mm"


def test_a_transducer_centred_on_the_focus_takes_plus_z_as_beam_axis():
    """Two facing elements at (0, 0, -30) and (0, 0, 42): their centre is the focus, the axis is undefined, and
    the report uses +z (classes beyond the focus are then sampled towards +z)."""
    from mrtherm.window.transducer import Transducer
    lab = _labels()
    lab[_voxel((0, 0, 10))] = 10  # spinal cord 4 mm along +z from the focus
    tr = Transducer("facing", 1.0e6, np.array([[0.0, 0.0, -30.0], [0.0, 0.0, 42.0]]),
                    np.array([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]), np.array([10.0, 10.0]))
    rep = check_window(Scene(lab, AFF), tr, FOCUS)
    assert rep["transducer"]["beam_axis"] == [0.0, 0.0, 1.0]
    assert _rule(rep, "critical_structure_beyond_focus")["value"] == ["spinal cord at 3.5 mm"]
