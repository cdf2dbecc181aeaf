"""The window rules' thresholds are named constants with a stated source, the command line's help reads them, and
label classes are found by name in the label table in use, so a table with other values gives the same result."""

import json
import pathlib
import re

import numpy as np
import pytest

from mrtherm.cli import main
from mrtherm.io.labels import DEFAULT_TABLE, LabelClass, LabelTable
from mrtherm.window import Scene, WindowConfig, check_window, scene as scene_mod
from mrtherm.window.transducer import spherical_cap

RULE_CONSTANTS = {  # name -> the value README's "Rules and defaults" states
    "TARGET_SURFACE_MM": 5.0, "CRITICAL_MIN_DISTANCE_MM": 5.0, "NORMAL_SMOOTHING_MM": 1.5,
    "PASS_ACTIVE_AREA_FRACTION": 0.68, "WARN_ACTIVE_AREA_FRACTION": 0.49, "FOCUS_CRITICAL_WARN_MM": 10.0,
    "FOCUS_CRITICAL_FAIL_MM": 5.0, "BEYOND_FOCUS_MM": 40.0, "BEYOND_FOCUS_CRITICAL_WARN_MM": 30.0,
    "CLOSER_THAN_FOCUS_TOLERANCE_MM": 1e-6,
}


def test_window_config_defaults_are_the_named_constants():
    cfg = WindowConfig()
    assert {name: getattr(scene_mod, name) for name in RULE_CONSTANTS} == RULE_CONSTANTS
    assert (cfg.target_surface_mm, cfg.critical_min_distance_mm, cfg.normal_smoothing_mm, cfg.active_fraction_pass,
            cfg.active_fraction_warn, cfg.focus_critical_warn_mm, cfg.focus_critical_fail_mm, cfg.beyond_focus_mm,
            cfg.beyond_focus_critical_warn_mm) == (5.0, 5.0, 1.5, 0.68, 0.49, 10.0, 5.0, 40.0, 30.0)


def _comment_above(lines, name):
    """The comment block above ``NAME = ...`` (skipping the other constants of its group)."""
    i = next(k for k, line in enumerate(lines) if line.startswith(f"{name} = "))
    block = []
    while i > 0:
        i -= 1
        if lines[i].startswith("#"):
            block.insert(0, lines[i])
        elif re.match(r"[A-Z_]+ = ", lines[i]) and not block:
            continue  # another constant of the same group
        else:
            break
    return " ".join(block)


@pytest.mark.parametrize("name", sorted(RULE_CONSTANTS))
def test_every_rule_constant_states_its_source(name):
    lines = pathlib.Path(scene_mod.__file__).read_text(encoding="utf-8").splitlines()
    comment = _comment_above(lines, name)
    assert re.search(r"Project choice, reason: \w+|Source: ", comment), f"{name}: no source in {comment!r}"
    assert re.search(r"_(MM|FRACTION)$", name)  # its unit in its name


def test_window_help_reads_the_defaults_from_the_constants(monkeypatch, capsys):
    from mrtherm.window import acoustics
    monkeypatch.setattr(scene_mod, "PASS_ACTIVE_AREA_FRACTION", 0.71)
    monkeypatch.setattr(scene_mod, "WARN_ACTIVE_AREA_FRACTION", 0.52)
    monkeypatch.setattr(acoustics, "SPEED_CORTICAL_BONE_M_S", 3080.0)  # asin(1540 / 3080) = 30 degrees
    with pytest.raises(SystemExit):
        main(["window", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "active fraction for PASS (default 0.71)" in text and "active fraction for WARN (default 0.52)" in text
    assert "default asin(1540/3080) = 30.0" in text
    assert "'target lesion' class, 12 in the default table" in text


# --------------------------------------------------------------------------- a label table with other values

PERM = {c.value: 13 - c.value for c in DEFAULT_TABLE}  # coupling 13, skin 9, fat 11, nerve root 2, ...
REVERSED = LabelTable([LabelClass(PERM[c.value], c.name, c.prf_valid, c.acoustic_role) for c in DEFAULT_TABLE])
N = 48
AFF = np.array([[1.0, 0, 0, -24], [0, 1.0, 0, -24], [0, 0, 1.0, -24], [0, 0, 0, 1]])  # world = voxel - 24 mm
FOCUS = np.array([0.0, 0.0, 6.0])


def test_values_named_finds_classes_by_name_in_any_table():
    assert LabelTable().values_named("skin") == [4] and REVERSED.values_named("skin") == [9]
    assert REVERSED.values_named(" Spinal Cord ", "nerve root") == [2, 3]
    assert LabelTable().values_named("no such class") == []


def _scene_labels():
    lab = np.ones((N, N, N), np.int16)  # soft tissue
    lab[4] = 4  # skin plane at z = -20 mm (-20.5 .. -19.5)
    lab[9:15] = 2  # fat from z = -15.5 to -9.5 mm: 6 mm on the central ray
    lab[30:] = 5  # cortical bone from the focus (z = 6 mm) on: the target surface
    lab[20, 24, 30] = 11  # a nerve root 6 mm off the axis, 10 mm before the focus
    return lab


def test_a_table_with_other_values_gives_the_same_window_report():
    lab = _scene_labels()
    tr = spherical_cap(40.0, 50.0, 64, FOCUS, (0, 0, 1))
    ref = check_window(Scene(lab, AFF), tr, FOCUS)
    relabelled = np.vectorize(PERM.get)(lab).astype(np.int16)
    got = check_window(Scene(relabelled, AFF, REVERSED), tr, FOCUS)
    cr = got["central_ray"]
    assert cr["fat_thickness_mm"] == pytest.approx(6.0, abs=1e-3)  # by hand, as with the default table
    assert cr["skin_to_target_mm"] == pytest.approx(6.0 + 20.5, abs=0.25)  # from the skin's first face
    assert got["sources"]["attenuation_table"]["fat"]["db_per_cm_1mhz"] == 0.63
    assert got["sources"]["attenuation_table"]["coupling"]["note"] == "water"
    inverse = {v: k for k, v in PERM.items()}
    for b in got["beyond_focus"]:  # the only label values in the report: map them back
        b["label"] = inverse[b["label"]]
    assert [b["class"] for b in got["beyond_focus"]] == ["cortical bone", "coupling"]  # leaves the volume: water
    assert got == ref
    assert any(e["status"] == "degraded" for e in got["elements"])  # the nerve root is found by its role


def test_feasibility_label_defaults_to_the_tables_target_lesion(tmp_path, capsys):
    from mrtherm.io.niftiio import save_volume
    lab = np.ones((16, 16, 16), np.int16)
    lab[8, 8, 7:9] = 12  # two target voxels
    table_path = tmp_path / "table.json"
    table_path.write_text(json.dumps({"labels": REVERSED.to_json()}), encoding="utf-8")
    save_volume(np.vectorize(PERM.get)(lab).astype(np.int16).transpose(2, 1, 0), np.eye(4), tmp_path / "lab.nii.gz")
    spherical_cap(20.0, 16.0, 8, (7.5, 8.0, 8.0), (0, 0, 1)).save(tmp_path / "t.json")
    assert main(["window", "--labels", str(tmp_path / "lab.nii.gz"), "--transducer", str(tmp_path / "t.json"),
                 "--target", "7,8,8", "--out", str(tmp_path / "out"), "--label-table", str(table_path),
                 "--feasibility", "--quiet"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["feasibility"]["label"] == 1 and report["feasibility"]["voxels"] == 2  # 'target lesion' is 1 here
