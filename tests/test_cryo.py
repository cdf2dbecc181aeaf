"""Cryoablation on MR (issue 14): ice-ball growth against the phantom truth, the isotherm model by hand, margins."""

import json
import math

import numpy as np
import pytest

import mrtherm
from mrtherm.cli import main
from mrtherm.cryo import CryoParams, CryoWatch, isotherm_radius_mm, temperature_in_ice_c
from mrtherm.cryo.phantom import make_cryo_phantom


@pytest.fixture(scope="module")
def cryo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cryo")
    assert main(["phantom", "--cryo", "--out", str(tmp / "ph")]) == 0
    ph = tmp / "ph"
    assert main(["run", "--magnitude", str(ph / "magnitude.nii.gz"), "--phase", str(ph / "phase.nii.gz"),
                 "--labels", str(ph / "labels.nii.gz"), "--baseline-frames", "4", "--modality", "cryo",
                 "--probes", str(ph / "probe_log.csv"), "--probe-positions", str(ph / "probes.json"),
                 "--out", str(tmp / "run"), "--quiet"]) == 0
    return tmp


def test_ice_ball_volume_follows_the_truth_every_frame(cryo_run):
    report = json.load(open(cryo_run / "run" / "report.json"))
    truth = json.load(open(cryo_run / "ph" / "phantom.json"))["cryo"]
    measured = np.array([f["ice_ml"] for f in report["cryo"]["frames"]])
    visible = np.array(truth["visible_ice_ml_per_frame"])
    everything = np.array(truth["ice_ml_per_frame"])
    frozen = visible > 0.5
    print(np.round(measured, 3), np.round(visible, 3))
    assert np.all(np.abs(measured[frozen] / visible[frozen] - 1) <= 0.05)  # what MR can see freeze
    assert np.all(measured[~frozen & (visible == 0)] == 0)
    # cortical bone has no signal to lose: the ball's full volume exceeds what MR sees by that bone only
    assert np.all(measured <= everything + 1e-9)


def test_ice_is_masked_out_of_prf_and_the_rim_too(cryo_run):
    import nibabel as nib
    temp = np.asarray(nib.load(cryo_run / "run" / "temperature.nii.gz").dataobj)
    ice = np.asarray(nib.load(cryo_run / "run" / "ice_extent.nii.gz").dataobj).astype(bool)
    assert np.isnan(temp[..., -1][ice]).all()
    dose = np.asarray(nib.load(cryo_run / "run" / "dose_cem43.nii.gz").dataobj)
    assert np.isnan(dose[ice]).all()
    report = json.load(open(cryo_run / "run" / "report.json"))
    assert report["results"]["peak_temperature_c"] < 42.0  # no spurious heat from noise phase at the ice edge
    assert report["results"]["lesion_volumes_ml"]["240"] == 0.0


def test_cooled_rim_outside_the_ice_is_measured_by_prf(cryo_run):
    """Outside the ice the tissue cools (0 C at the edge, 37 - 37 exp(-d / 4 mm)): PRF measures it."""
    import nibabel as nib
    ph = make_cryo_phantom()
    temp = np.asarray(nib.load(cryo_run / "run" / "temperature.nii.gz").dataobj).transpose(3, 2, 1, 0)
    t = -1
    sel = np.isfinite(temp[t]) & np.isin(ph.labels, (1, 3, 12)) & (ph.truth_temperature_c[t] < 30)
    err = temp[t][sel] - ph.truth_temperature_c[t][sel]
    print(sel.sum(), np.sqrt(np.mean(err ** 2)))
    assert sel.sum() > 20 and np.sqrt(np.mean(err ** 2)) < 1.0


def test_isotherm_model_by_hand():
    """Cylindrical shell: T(r) = T_p ln(R / r) / ln(R / r_p); -20 C at 20 (0.75 / 20)^(20 / 150) = 12.9 mm."""
    p = CryoParams()
    r20 = 20.0 * (0.75 / 20.0) ** (20.0 / 150.0)
    assert isotherm_radius_mm(20.0, -20.0, p) == pytest.approx(r20, rel=1e-12)
    assert float(temperature_in_ice_c(r20, 20.0, p)) == pytest.approx(-20.0, rel=1e-12)
    assert float(temperature_in_ice_c(10.0, 20.0, p)) == pytest.approx(-150 * math.log(2) / math.log(20 / 0.75))


def test_model_isotherms_in_a_segmented_ball_and_margins_by_hand():
    """A 10 mm ice ball (1 mm voxels) around a tip 16 mm from a cord: the -20 C region is the sphere of the model's
    radius, and the 0 C margin to the cord is 16 - 10 = 6 mm (alarm below 7 mm)."""
    n = 48
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=float) for _ in range(3)), indexing="ij")
    r = np.sqrt((zz - 24) ** 2 + (yy - 24) ** 2 + (xx - 20) ** 2)
    labels = np.ones((n, n, n), np.int16)
    labels[:, :, 36:] = 10  # cord from x = 36 mm: 16 mm from the tip
    base = np.full((n, n, n), 100.0)
    mag = np.where(r <= 10.0, 1.0, 100.0)
    p = CryoParams(tips_mm=((20.0, 24.0, 24.0),), margin_alarm_mm=7.0)
    watch = CryoWatch(p, base, np.ones((n, n, n), bool), np.eye(4), labels)
    watch.update(60.0, mag, np.full((n, n, n), 37.0, np.float32))
    row = watch.frames[0]
    assert row["ice_ml"] == pytest.approx(4 / 3 * math.pi * 10 ** 3 / 1000, rel=0.03)
    r20 = isotherm_radius_mm(10.0, -20.0, p)
    assert row["isotherms"]["-20"]["volume_ml"] == pytest.approx(4 / 3 * math.pi * r20 ** 3 / 1000, rel=0.15)
    assert row["isotherms"]["0"]["margin_mm"]["spinal cord"] == pytest.approx(6.0, abs=1.0)
    assert [a["quantity"] for a in watch.alarms] == ["0 C isotherm margin"]


def test_cryo_alarms_and_probe_cold_alarm(cryo_run):
    report = json.load(open(cryo_run / "run" / "report.json"))
    kinds = {(a["structure"], a["quantity"]) for a in report["alarms"]}
    assert ("nerve root", "0 C isotherm margin") in kinds
    assert ("probe root", "temperature") in kinds  # the watched thermocouple at the root fell below 10 C
    root = [e for e in report["probes"]["probes"] if e["name"] == "root"][0]
    assert root["min_c"] < 10.0


def test_evaluate_a_cryo_run_uses_the_lethal_isotherms(cryo_run):
    """NPV = the truth -40 C sphere of the phantom's final ball: the -40 C prediction matches best."""
    import nibabel as nib
    from mrtherm.io.niftiio import save_volume
    ph = make_cryo_phantom()
    tip, big_r = np.array(ph.info["cryo"]["tip_world_mm"]), ph.info["cryo"]["max_radius_mm"]
    k, j, i = np.meshgrid(*(np.arange(s) for s in ph.labels.shape), indexing="ij")
    world = np.einsum("ab,bzyx->azyx", ph.affine[:3, :3], np.stack([i, j, k]).astype(float))
    r = np.sqrt(((world + ph.affine[:3, 3, None, None, None] - tip[:, None, None, None]) ** 2).sum(axis=0))
    npv = r <= isotherm_radius_mm(big_r, -40.0, CryoParams())
    save_volume(npv.astype(np.uint8), ph.affine, cryo_run / "npv.nii.gz")
    assert main(["evaluate", "--run", str(cryo_run / "run"), "--npv", str(cryo_run / "npv.nii.gz"), "--out",
                 str(cryo_run / "eval"), "--quiet"]) == 0
    levels = json.load(open(cryo_run / "eval" / "report.json"))["levels"]
    assert set(levels) == {"isotherm_0c", "isotherm_-20c", "isotherm_-40c"}
    assert max(levels, key=lambda k: levels[k]["dice"]) == "isotherm_-40c"
    assert nib.load(cryo_run / "eval" / "evaluation_isotherm_-40c.nii.gz").shape == ph.labels.shape[::-1]


def test_protected_structures_are_found_by_name_in_the_label_table():
    """The same ball and cord as above with a table that numbers its classes the other way round (cord 3, nerve
    root 2): the cord is still found, 6 mm from the ice edge; without the table, label 3 is muscle."""
    from mrtherm.io.labels import DEFAULT_TABLE, LabelClass, LabelTable
    reversed_table = LabelTable([LabelClass(13 - c.value, c.name, c.prf_valid, c.acoustic_role)
                                 for c in DEFAULT_TABLE])
    n = 48
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=float) for _ in range(3)), indexing="ij")
    r = np.sqrt((zz - 24) ** 2 + (yy - 24) ** 2 + (xx - 20) ** 2)
    labels = np.full((n, n, n), 13 - 1, np.int16)  # soft tissue
    labels[:, :, 36:] = 13 - 10  # spinal cord from x = 36 mm: 16 mm from the tip
    labels[0, 0, 0] = 13 - 11  # one nerve-root voxel far away (about 34 mm)
    base, mag = np.full((n, n, n), 100.0), np.where(r <= 10.0, 1.0, 100.0)
    p = CryoParams(tips_mm=((20.0, 24.0, 24.0),), margin_alarm_mm=7.0)
    watch = CryoWatch(p, base, np.ones((n, n, n), bool), np.eye(4), labels, table=reversed_table)
    watch.update(60.0, mag, np.full((n, n, n), 37.0, np.float32))
    margins = watch.frames[0]["isotherms"]["0"]["margin_mm"]
    assert set(margins) == {"spinal cord", "nerve root"}
    assert margins["spinal cord"] == pytest.approx(6.0, abs=1.0)
    assert margins["nerve root"] > 20.0
    assert [(a["structure"], a["quantity"]) for a in watch.alarms] == [("spinal cord", "0 C isotherm margin")]
    default = CryoWatch(p, base, np.ones((n, n, n), bool), np.eye(4), labels)
    assert default.structure_distance == {}  # the default table reads 3 as muscle and 2 as fat
