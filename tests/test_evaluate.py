"""Post-treatment evaluation (issue 14) against analytic truth: spheres with a known shift on different grids."""

import json

import numpy as np
import pytest

import mrtherm
from mrtherm.cli import main
from mrtherm.evaluation.metrics import dice, hd95, signed_surface_distances
from mrtherm.io.niftiio import save_volume

R_MM, SHIFT_MM = 8.0, 2.0


def _grid(n, voxel_mm, origin_mm):
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = origin_mm
    zz, yy, xx = np.meshgrid(*(np.arange(n) * voxel_mm for _ in range(3)), indexing="ij")
    return affine, (xx + origin_mm[0], yy + origin_mm[1], zz + origin_mm[2])


def _run_folder(path, levels=(240.0,)):
    """A run folder whose dose is 240 * 2^(R - r) (r mm from the origin): the 240 lesion is the sphere of radius R."""
    affine, (x, y, z) = _grid(40, 1.0, (-19.5, -19.5, -19.5))
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    path.mkdir()
    save_volume(240.0 * 2.0 ** (R_MM - r), affine, path / "dose_cem43.nii.gz")
    (path / "report.json").write_text(json.dumps({"parameters": {"dose_levels_cem43_min": list(levels)}}))


def _analytic():
    """Two spheres of radius R, centres SHIFT apart: Dice and the symmetric 95th-percentile surface distance."""
    r, d = R_MM, SHIFT_MM
    dice_true = (4 * r + d) * (2 * r - d) ** 2 / (16 * r ** 3)
    u = np.linspace(-1, 1, 200001)  # cos(angle to the shift): uniform over a sphere's surface
    dist = np.abs(np.sqrt(r * r + d * d - 2 * r * d * u) - r)
    return dice_true, float(np.percentile(dist, 95))


def test_known_shift_gives_the_analytic_dice_and_hd95(tmp_path, capsys):
    _run_folder(tmp_path / "run")
    affine, (x, y, z) = _grid(50, 0.8, (-19.6, -20.0, -19.8))  # another grid: 0.8 mm, other origin
    npv = np.sqrt((x - SHIFT_MM) ** 2 + y ** 2 + z ** 2) <= R_MM
    save_volume(npv.astype(np.uint8), affine, tmp_path / "npv.nii.gz")
    capsys.readouterr()
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--npv", str(tmp_path / "npv.nii.gz"), "--out",
                 str(tmp_path / "eval")]) == 0
    report = json.load(open(tmp_path / "eval" / "report.json"))
    m = report["levels"]["240"]
    dice_true, hd95_true = _analytic()
    sphere_ml = 4 / 3 * np.pi * R_MM ** 3 / 1000
    print(capsys.readouterr().out, dice_true, hd95_true)
    assert report["npv_ml"] == pytest.approx(sphere_ml, rel=0.03)
    assert m["lesion_ml"] == pytest.approx(sphere_ml, rel=0.03)
    assert m["dice"] == pytest.approx(dice_true, abs=0.02)
    assert m["hd95_mm"] == pytest.approx(hd95_true, abs=0.8)  # one NPV voxel
    # the prediction sits SHIFT_MM towards -x: its surface is outside the NPV on that side, inside on the other
    s = m["signed_surface_distance_mm"]
    assert s["min"] == pytest.approx(-SHIFT_MM, abs=0.8) and s["max"] == pytest.approx(SHIFT_MM, abs=0.8)
    for key in ("under_treatment_ml", "over_treatment_ml"):  # each the sphere minus the overlap
        assert m[key] == pytest.approx(sphere_ml * (1 - dice_true), rel=0.15)
    label = np.asarray(__import__("nibabel").load(tmp_path / "eval" / "evaluation_240.nii.gz").dataobj)
    assert set(np.unique(label)) == {0, 1, 2, 3}
    assert (tmp_path / "eval" / "figures" / "evaluation.png").exists()


def test_metrics_by_hand():
    a = np.zeros((1, 1, 10), bool)
    b = np.zeros((1, 1, 10), bool)
    a[0, 0, 2:5], b[0, 0, 3:7] = True, True
    assert dice(a, b) == pytest.approx(2 * 2 / 7)
    # one voxel thick: every voxel is surface (no neighbour in y, z). x voxels of 2 mm:
    # d(a -> b) = {2, 0, 0} mm, d(b -> a) = {0, 0, 2, 4} mm; 95th percentiles (linear) 1.8 and 2 + 0.85 * 2 = 3.7
    assert hd95(a, b, (1.0, 1.0, 2.0)) == pytest.approx(3.7)
    np.testing.assert_allclose(signed_surface_distances(a, b, (1, 1, 1)), [1.0, 0.0, 0.0])  # 2 lies outside b


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    _run_folder(tmp_path / "run")
    affine, _ = _grid(8, 1.0, (0, 0, 0))
    save_volume(np.zeros((8, 8, 8), np.uint8), affine, tmp_path / "empty.nii.gz")
    capsys.readouterr()
    rc = main(["evaluate", "--run", str(tmp_path / "run"), "--npv", str(tmp_path / "empty.nii.gz"), "--out",
               str(tmp_path / "eval")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "empty.nii.gz" in err[0] and "empty" in err[0]
    rc = main(["evaluate", "--run", str(tmp_path / "nothing"), "--npv", str(tmp_path / "empty.nii.gz"), "--out",
               str(tmp_path / "eval")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "report.json" in err[0]
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_phantom_run_against_its_truth_lesion_shifted(tmp_path):
    """End to end: the phantom's run, evaluated against its own truth lesion moved 2 mm along x."""
    assert main(["phantom", "--out", str(tmp_path / "ph")]) == 0
    ph = tmp_path / "ph"
    assert main(["run", "--magnitude", str(ph / "magnitude.nii.gz"), "--phase", str(ph / "phase.nii.gz"),
                 "--labels", str(ph / "labels.nii.gz"), "--baseline-frames", "5", "--out", str(tmp_path / "run"),
                 "--quiet", "--no-figures"]) == 0
    import nibabel as nib
    truth = nib.load(ph / "truth_dose_cem43.nii.gz")
    measured = np.isfinite(np.asarray(nib.load(tmp_path / "run" / "dose_cem43.nii.gz").dataobj))
    lesion = (np.asarray(truth.dataobj) >= 240) & measured
    zero = nib.load(tmp_path / "run" / "dose_cem43.nii.gz")
    save_volume(lesion.transpose(2, 1, 0).astype(np.uint8), truth.affine, tmp_path / "npv0.nii.gz")
    moved = truth.affine.copy()
    moved[0, 3] += 2.0  # the same mask, 2 mm further along x (one voxel of the phantom)
    save_volume(lesion.transpose(2, 1, 0).astype(np.uint8), moved, tmp_path / "npv2.nii.gz")
    assert zero.shape == truth.shape
    results = {}
    for name in ("npv0", "npv2"):
        assert main(["evaluate", "--run", str(tmp_path / "run"), "--npv", str(tmp_path / f"{name}.nii.gz"),
                     "--out", str(tmp_path / f"eval_{name}"), "--quiet"]) == 0
        results[name] = json.load(open(tmp_path / f"eval_{name}" / "report.json"))["levels"]["240"]
    print(results)
    assert results["npv0"]["dice"] > 0.95 and results["npv0"]["hd95_mm"] <= 2.0
    assert results["npv2"]["dice"] < results["npv0"]["dice"] and results["npv2"]["hd95_mm"] >= 1.9
