"""Acoustic-window check on analytic scenes, against an independent segment/voxel-box oracle."""

import json
import math

import numpy as np
import pytest

from mrtherm import InputFileError, ParameterError
from mrtherm.io import niftiio
from mrtherm.cli import main
from mrtherm.window.transducer import Transducer, load_transducer, spherical_cap
from mrtherm.window import (Scene, WindowConfig, check_window, feasibility_map,
                            trace)

N = 48  # 1 mm voxels
AFF = np.array([[1.0, 0, 0, -24], [0, 1.0, 0, -24], [0, 0, 1.0, -24], [0, 0, 0, 1]])
FOCUS = np.array([0.0, 0.0, 6.0])


def _tissue():
    lab = np.ones((N, N, N), dtype=np.int16)  # soft tissue everywhere
    return lab


def _cap(aperture=50.0, n=200, radius=40.0, axis=(0, 0, 1), focus=FOCUS):
    return spherical_cap(radius, aperture, n, focus, axis)


def _world_of(zyx):
    k, j, i = np.asarray(zyx).T
    return np.stack([i, j, k], axis=1) @ AFF[:3, :3].T + AFF[:3, 3]


def _segment_hits_voxels(p, f, voxels_zyx, min_len=1e-6):
    """Oracle: does segment p->f cross any voxel cube (world, axis-aligned 1 mm) with positive length?"""
    centres = _world_of(voxels_zyx)
    d = f - p
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (centres - 0.5 - p) / d
        t2 = (centres + 0.5 - p) / d
    inside_axis = (p >= centres - 0.5) & (p <= centres + 0.5)
    tmin = np.where(d != 0, np.minimum(t1, t2), np.where(inside_axis, -np.inf, np.inf))
    tmax = np.where(d != 0, np.maximum(t1, t2), np.where(inside_axis, np.inf, -np.inf))
    lo = np.maximum(tmin.max(axis=1), 0.0)
    hi = np.minimum(tmax.min(axis=1), 1.0)
    return bool(np.any((hi - lo) * np.linalg.norm(d) > min_len))


def _expected_blocked(tr, voxels_zyx, focus=FOCUS):
    return np.array([_segment_hits_voxels(p, focus, voxels_zyx) for p in tr.positions_mm])


def test_clear_path_passes():
    sc = Scene(_tissue(), AFF)
    rep = check_window(sc, _cap(), FOCUS)
    assert rep["verdict"] == "PASS" and rep["active_fraction"] == 1.0
    assert all(e["status"] == "clear" for e in rep["elements"])
    # every element sees the focus straight ahead of its normal
    assert max(e["element_target_angle_deg"] for e in rep["elements"]) < 1e-6
    e0 = rep["elements"][0]
    soft = e0["path_mm_by_class"]["soft tissue"]
    water = e0["path_mm_by_class"].get("outside volume (water)", 0.0)
    assert soft + water == pytest.approx(e0["path_length_mm"], abs=1e-3)
    # 0.50 dB/cm in soft tissue, 0.0022 dB/cm in water at 1 MHz
    assert e0["attenuation_db"] == pytest.approx(0.050 * soft + 0.00022 * water, abs=2e-3)


def test_gas_slab_blocks_exactly_the_elements_that_meet_it():
    lab = _tissue()
    lab[14:16, :, :26] = 7  # gas slab: z in [14, 15] voxels, x < 26 (half the plane)
    sc = Scene(lab, AFF)
    tr = _cap()
    rep = check_window(sc, tr, FOCUS)
    expected = _expected_blocked(tr, np.argwhere(lab == 7))
    got = np.array([e["status"] == "blocked" for e in rep["elements"]])
    assert 0 < expected.sum() < tr.n_elements
    np.testing.assert_array_equal(got, expected)
    assert all("GAS" in e["reasons"] for e in rep["elements"] if e["status"] == "blocked")
    # the first blocking point lies on the slab's first face (voxel 14 spans z world -10.5..-9.5)
    zs = [e["first_block_world_mm"][2] for e in rep["elements"] if e["status"] == "blocked"]
    assert np.allclose(zs, -10.5, atol=1e-6) or min(zs) >= -10.5 - 1e-6
    assert rep["active_fraction"] == pytest.approx(1.0 - expected.mean(), abs=1e-12)  # equal areas


def test_metal_bead():
    lab = _tissue()
    zz, yy, xx = np.ogrid[:N, :N, :N]
    bead = (zz - 18) ** 2 + (yy - 22) ** 2 + (xx - 27) ** 2 <= 4
    lab[bead] = 8
    tr = _cap()
    rep = check_window(Scene(lab, AFF), tr, FOCUS)
    expected = _expected_blocked(tr, np.argwhere(bead))
    got = np.array(["METAL" in e["reasons"] for e in rep["elements"]])
    assert expected.any()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("tilt_deg, steep", [(10.0, False), (45.0, True)])
def test_bone_plate_below_and_above_critical_angle(tilt_deg, steep):
    """A cortical plate at the focus (the target surface), tilted against the beam."""
    th = math.radians(tilt_deg)
    normal = np.array([math.sin(th), 0.0, -math.cos(th)])  # facing the transducer (below)
    lab = _tissue()
    k, j, i = np.indices(lab.shape)
    world = np.stack([i, j, k], axis=-1) @ AFF[:3, :3].T + AFF[:3, 3]
    depth = -((world - FOCUS) @ normal)  # > 0 behind the surface through the focus
    lab[(depth >= -1.5) & (depth <= 6.0)] = 5
    sc = Scene(lab, AFF)
    tr = _cap(aperture=16.0, n=60, radius=40.0)
    rep = check_window(sc, tr, FOCUS)
    inc = np.array([e["incidence_angle_deg"] for e in rep["elements"]])
    assert np.all(np.isfinite(inc))
    assert abs(np.median(inc) - tilt_deg) < 5.0  # normal from the smoothed label gradient
    has = np.array(["CRITICAL_ANGLE" in e["reasons"] for e in rep["elements"]])
    assert has.all() if steep else not has.any()
    assert not any("BONE_PREFOCAL" in e["reasons"] for e in rep["elements"])  # it is the target surface
    assert rep["verdict"] == ("FAIL" if steep else "PASS")


def test_prefocal_bone_blocks():
    lab = _tissue()
    lab[10:13, 20:28, 20:28] = 5  # bone 15 mm in front of the focus, under the centre
    tr = _cap()
    rep = check_window(Scene(lab, AFF), tr, FOCUS)
    expected = _expected_blocked(tr, np.argwhere(lab == 5))
    got = np.array(["BONE_PREFOCAL" in e["reasons"] for e in rep["elements"]])
    np.testing.assert_array_equal(got, expected)
    assert expected.any()


def test_cord_crossed_by_the_beam():
    lab = _tissue()
    lab[16:19, :, 24:27] = 10  # a cord running along y, across part of the cone
    tr = _cap()
    rep = check_window(Scene(lab, AFF), tr, FOCUS)
    cross = np.array([e["status"] == "blocked" and "CRITICAL_STRUCTURE" in e["reasons"] for e in rep["elements"]])
    np.testing.assert_array_equal(cross, _expected_blocked(tr, np.argwhere(lab == 10)))
    rule = {r["rule"]: r for r in rep["rules"]}
    assert rule["elements_crossing_critical_structures"]["result"] == "WARN"
    assert rule["focus_to_critical_structure"]["value"] == pytest.approx(
        np.min(np.linalg.norm(_world_of(np.argwhere(lab == 10)) - FOCUS, axis=1)))
    # elements passing near (not through) the cord, closer than the focus is, are degraded
    near = [e for e in rep["elements"] if e["status"] == "degraded"]
    assert near, "this geometry has elements passing within 5 mm of the cord"
    assert all("CRITICAL_STRUCTURE" in e["reasons"] and e["min_distance_critical_mm"] < 5.0 for e in near)


def test_attenuation_follows_frequency_power_law():
    """A straight 20 mm muscle path: attenuation = 20 mm x 1.18 dB/cm at 1 MHz x (f / 1 MHz)^1 (Diagnostics 2023;13:855
    Table 4 value, linear in frequency); at 2 MHz twice the 1 MHz figure (hand calculation)."""
    lab = np.full((N, N, N), 3, np.int16)  # muscle
    for f_hz, expected_db in ((1.0e6, 2.0 * 1.18), (2.0e6, 2.0 * 1.18 * 2.0)):
        tr = Transducer(positions_mm=np.array([[0.0, 0.0, -14.0]]), normals=np.array([[0.0, 0.0, 1.0]]),
                        areas_mm2=np.array([1.0]), frequency_hz=f_hz, name="one element")
        e = check_window(Scene(lab, AFF), tr, FOCUS)["elements"][0]
        assert e["path_mm_by_class"] == {"muscle": pytest.approx(20.0, abs=1e-9)}
        assert e["attenuation_db"] == pytest.approx(expected_db, abs=1e-3)


def test_scar_configurable_and_out_of_volume_reported():
    lab = _tissue()
    lab[14:16, :, :] = 9
    tr = _cap(aperture=20, n=30)
    assert all(e["status"] == "blocked" for e in check_window(Scene(lab, AFF), tr, FOCUS)["elements"])
    rep = check_window(Scene(lab, AFF, config=WindowConfig(scar_blocks=False)), tr, FOCUS)
    assert all(e["status"] == "degraded" and "SCAR" in e["reasons"] for e in rep["elements"])
    # a transducer outside the labelled volume: the water path is reported, the status unchanged
    far = spherical_cap(60.0, 20.0, 20, FOCUS, (0, 0, 1))
    rep = check_window(Scene(_tissue(), AFF), far, FOCUS)
    assert all(e["status"] == "clear" and "OUT_OF_VOLUME" in e["reasons"] for e in rep["elements"])
    assert all(e["path_mm_by_class"]["outside volume (water)"] > 0 for e in rep["elements"])


def test_element_target_angle_full_range():
    tr = Transducer("t", 1e6, np.array([[0.0, 0.0, -10.0], [0.0, 0.0, -10.0], [10.0, 0.0, 6.0]]),
                    np.array([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]]), np.ones(3))
    rep = check_window(Scene(_tissue(), AFF), tr, FOCUS)
    angles = [e["element_target_angle_deg"] for e in rep["elements"]]
    assert angles == pytest.approx([0.0, 180.0, 90.0])


def test_feasibility_map_matches_single_checks():
    lab = _tissue()
    lab[14:16, :, :22] = 7
    sc = Scene(lab, AFF)
    tr = _cap(n=64)
    mask = np.zeros(lab.shape, bool)
    mask[30, 22:27:2, 20:29:4] = True
    fm = feasibility_map(sc, tr, mask)
    assert np.isnan(fm[~mask]).all()
    for zyx in np.argwhere(mask):
        focus = _world_of([zyx])[0]
        assert fm[tuple(zyx)] == pytest.approx(check_window(sc, tr, focus)["active_fraction"], abs=1e-6)
    assert fm[mask].min() < fm[mask].max()  # moving the focus changes what the gas blocks


def test_spherical_cap_geometry():
    tr = spherical_cap(80.0, 100.0, 500, [1.0, 2.0, 3.0], [0.0, 1.0, 1.0])
    f = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(np.linalg.norm(tr.positions_mm - f, axis=1), 80.0)
    np.testing.assert_allclose(tr.normals, (f - tr.positions_mm) / 80.0, atol=1e-12)
    theta = math.asin(50.0 / 80.0)
    assert tr.areas_mm2.sum() == pytest.approx(2 * math.pi * 80.0 ** 2 * (1 - math.cos(theta)))
    axis = np.array([0.0, 1.0, 1.0]) / math.sqrt(2)
    off_axis = np.linalg.norm(np.cross(tr.positions_mm - f, axis), axis=1)
    assert off_axis.max() <= 50.0 + 1e-9
    np.testing.assert_allclose(tr.centre_mm, f - axis * np.mean((f - tr.positions_mm) @ axis), atol=0.5)


def test_trace_counts_path_lengths_exactly():
    sc = Scene(_tissue(), AFF)
    p = np.array([[-3.3, 1.1, -20.0]])
    f = np.array([[4.7, -2.2, 10.0]])
    res = trace(sc, p, f, detail=True)
    assert res["path_mm"][0].sum() + res["out_of_volume_mm"][0] == pytest.approx(np.linalg.norm(f - p))


# ------------------------------------------------------------------ command line and bad input
def _write_scene(tmp_path, lab):
    path = tmp_path / "labels.nii.gz"
    niftiio.save_volume(lab.astype(np.int16), AFF, path)
    return path


def test_cli_transducer_and_window(tmp_path, capsys):
    lab = _tissue()
    lab[14:16, :, :22] = 7
    _write_scene(tmp_path, lab)
    lab12 = lab.copy()
    lab12[29:32, 22:26, 22:26] = 12
    labels12 = tmp_path / "labels12.nii.gz"
    niftiio.save_volume(lab12.astype(np.int16), AFF, labels12)
    tj = tmp_path / "t.json"
    assert main(["transducer", "--out", str(tj), "--radius-mm", "40", "--aperture-mm", "50", "--elements", "64",
                 "--focus", "0,0,6", "--axis", "0,0,1"]) == 0
    out = tmp_path / "w"
    assert main(["window", "--labels", str(labels12), "--transducer", str(tj), "--target", "0,0,6", "--out", str(out),
                 "--feasibility", "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    order = {"PASS": 0, "WARN": 1, "FAIL": 2}
    assert rep["verdict"] == max((r["result"] for r in rep["rules"]), key=order.get)  # the worst rule decides
    areas = np.array([e["area_mm2"] for e in rep["elements"]])
    open_ = np.array([e["status"] != "blocked" for e in rep["elements"]])
    assert rep["active_fraction"] == pytest.approx(areas[open_].sum() / areas.sum(), rel=1e-12)
    assert [e["index"] for e in rep["elements"]] == list(range(64))
    assert {"verdict", "active_fraction", "blocked_fraction", "rules", "elements"} <= set(rep)
    assert all({"rule", "value", "threshold", "source", "result"} <= set(r) for r in rep["rules"])
    csv_lines = (out / "elements.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 65 and csv_lines[0].startswith("index,status,reasons")
    import nibabel as nib
    fm = nib.load(out / "feasibility.nii.gz")
    np.testing.assert_array_equal(fm.affine, AFF)
    assert rep["feasibility"]["voxels"] == 48


def _bad_window(tmp_path, capsys, argv, text):
    out = tmp_path / "wout"
    code = main(["window", "--out", str(out), "--quiet"] + [str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and text in err[0], err
    assert not out.exists()


def test_bad_inputs(tmp_path, capsys):
    labels = _write_scene(tmp_path, _tissue())
    tj = tmp_path / "t.json"
    _cap(n=8).save(tj)
    _bad_window(tmp_path, capsys, ["--labels", labels, "--transducer", tj, "--target", "0,0,500"],
                "outside the labelled volume")
    _bad_window(tmp_path, capsys, ["--labels", labels, "--transducer", tj, "--target", "0,0"], "three")
    for content, text in (("{not json", "not valid JSON"), ('{"frequency_hz": 1e6}', "elements missing"),
                          ('{"frequency_hz": -1, "elements": []}', "frequency_hz must be positive"),
                          ('{"frequency_hz": 1e6, "elements": [{"position_mm": [0, 0], "normal": [0, 0, 1], '
                           '"area_mm2": 1}]}', "element 0"),
                          ('{"frequency_hz": 1e6, "elements": [{"position_mm": [0, 0, 0], "normal": [0, 0, 0], '
                           '"area_mm2": 1}]}', "normal is zero")):
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        _bad_window(tmp_path, capsys, ["--labels", labels, "--transducer", bad, "--target", "0,0,6"], text)
    frac = tmp_path / "frac.nii.gz"
    niftiio.save_volume(np.full((N, N, N), 1.5, np.float32), AFF, frac)
    _bad_window(tmp_path, capsys, ["--labels", frac, "--transducer", tj, "--target", "0,0,6"], "not integers")
    unk = _tissue()
    unk[0, 0, 0] = 77
    unk_path = tmp_path / "unk.nii.gz"
    niftiio.save_volume(unk, AFF, unk_path)
    _bad_window(tmp_path, capsys, ["--labels", unk_path, "--transducer", tj, "--target", "0,0,6"],
                "unknown label values [77]")
    _bad_window(tmp_path, capsys, ["--labels", tmp_path / "none.nii.gz", "--transducer", tj, "--target", "0,0,6"],
                "file not found")
    with pytest.raises(InputFileError):
        load_transducer(tmp_path / "missing.json")
    with pytest.raises(ParameterError):
        spherical_cap(10.0, 30.0, 5, FOCUS, (0, 0, 1))
