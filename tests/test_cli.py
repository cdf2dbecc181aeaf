"""Command line: end-to-end run on the phantom and every bad input."""

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from mrtherm.io import niftiio
from mrtherm.cli import main

from conftest import tree_digest


def _run(argv, capsys):
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_run_end_to_end(tmp_path, phantom_files, small_phantom, capsys):
    out = tmp_path / "out"
    exam_dir = os.path.dirname(phantom_files["magnitude"])
    before = tree_digest(exam_dir)
    code, stdout, err = _run(["run", "--magnitude", phantom_files["magnitude"], "--phase", phantom_files["phase"],
                              "--labels", phantom_files["labels"], "--baseline-frames", "5", "--out", str(out),
                              "--dose-levels", "40,240", "--quiet"], capsys)
    assert code == 0, err
    assert tree_digest(exam_dir) == before  # inputs untouched
    expected = {"temperature.nii.gz", "dose_cem43.nii.gz", "tmax.nii.gz", "temperature_sd.nii.gz", "mask.nii.gz",
                "lesion_240.nii.gz", "lesion_40.nii.gz", "report.json", "anatomy.nii.gz"}
    assert expected <= set(os.listdir(out))
    assert {"tmax_dose.png", "temperature_curves.png"} <= set(os.listdir(out / "figures"))
    ref = nib.load(phantom_files["magnitude"])
    temp = nib.load(out / "temperature.nii.gz")
    assert temp.shape == ref.shape
    for name in expected - {"report.json"}:
        np.testing.assert_array_equal(nib.load(out / name).affine, ref.affine)
    report = json.loads((out / "report.json").read_text())
    assert report["exam"]["phase_scale"] == "siemens"
    assert report["provenance"]["te_source"].endswith("phase.json")
    assert report["drift"]["mode"] == "automatic"
    assert report["results"]["lesion_volumes_ml"]["40"] >= report["results"]["lesion_volumes_ml"]["240"] > 0
    assert any(a["structure"] == "nerve root" for a in report["alarms"])
    assert set(report["conventions"]) >= {"prf", "cem43", "drift"}
    # accuracy of the file path (vendor scaling, streaming) against ground truth
    from mrtherm.thermometry.result import ThermometryResult  # noqa: F401
    data = np.asarray(temp.dataobj, dtype=np.float32).transpose(3, 2, 1, 0)
    mask = np.asarray(nib.load(out / "mask.nii.gz").dataobj).transpose(2, 1, 0).astype(bool)
    err_c = data[:, mask] - small_phantom.truth_temperature_c[:, mask]
    assert np.sqrt(np.mean(err_c ** 2)) < 0.6


def test_drift_roi_file_and_existing_out_folder_kept(tmp_path, phantom_files, capsys):
    roi = np.zeros((6, 96, 96), np.uint8)
    roi[:, :, 60:] = 1
    roi_path = tmp_path / "roi.nii.gz"
    niftiio.save_volume(roi, nib.load(phantom_files["labels"]).affine, roi_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = _run(["run", "--magnitude", phantom_files["magnitude"], "--out", str(out), "--drift-roi",
                         str(roi_path), "--drift-order", "2", "--baseline-frames", "5", "--no-figures", "--quiet"],
                        capsys)
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "keep me"
    assert json.loads((out / "report.json").read_text())["drift"]["mode"] == "user"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out.tmp")]


@pytest.fixture()
def exam_copy(tmp_path, phantom_files):
    d = tmp_path / "exam"
    shutil.copytree(os.path.dirname(phantom_files["magnitude"]), d)
    return d


def _bad(capsys, tmp_path, argv, expect_in_message):
    out = tmp_path / "result"
    inputs_dir = [a for a in argv if os.path.isdir(os.path.dirname(str(a)) or ".")]
    digests = {d: tree_digest(d) for d in {os.path.dirname(str(a)) for a in inputs_dir if os.path.exists(str(a))}}
    if "--out" not in argv:
        argv = argv + ["--out", str(out)]
    code, stdout, err = _run(["run", "--quiet"] + [str(a) for a in argv], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mrtherm: error: ")
    assert expect_in_message in lines[0], lines[0]
    assert "Traceback" not in err
    assert not out.exists()  # no partial outputs
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".result.tmp")]
    for d, before in digests.items():
        assert tree_digest(d) == before
    return lines[0]


def test_not_nifti(tmp_path, exam_copy, capsys):
    bad = exam_copy / "bogus.nii.gz"
    bad.write_text("this is not an image")
    msg = _bad(capsys, tmp_path, ["--magnitude", bad, "--phase", exam_copy / "phase.nii.gz"], "not a readable NIfTI")
    assert str(bad) in msg


def test_truncated_uncompressed(tmp_path, exam_copy, capsys):
    img = nib.load(exam_copy / "magnitude.nii.gz")
    p = exam_copy / "mag.nii"
    nib.save(img, p)
    with open(p, "r+b") as fh:
        fh.truncate(os.path.getsize(p) // 2)
    _bad(capsys, tmp_path, ["--magnitude", p, "--phase", exam_copy / "phase.nii.gz"], "truncated")


def test_truncated_gzip(tmp_path, exam_copy, capsys):
    src = exam_copy / "phase.nii.gz"
    p = exam_copy / "phase_cut.nii.gz"
    data = src.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    shutil.copy(exam_copy / "phase.json", exam_copy / "phase_cut.json")
    msg = _bad(capsys, tmp_path, ["--magnitude", exam_copy / "magnitude.nii.gz", "--phase", p], "phase_cut.nii.gz")
    assert "truncated" in msg or "not a readable" in msg


def test_all_nan_phase(tmp_path, exam_copy, capsys):
    ref = nib.load(exam_copy / "magnitude.nii.gz")
    p = exam_copy / "nanphase.nii.gz"
    nib.save(nib.Nifti1Image(np.full(ref.shape, np.nan, np.float32), ref.affine, ref.header), p)
    _bad(capsys, tmp_path, ["--magnitude", exam_copy / "magnitude.nii.gz", "--phase", p, "--te-ms", "12",
                            "--b0-t", "3"], "all NaN")


def test_shape_mismatch(tmp_path, exam_copy, capsys):
    ref = nib.load(exam_copy / "magnitude.nii.gz")
    p = exam_copy / "short_phase.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(ref.dataobj)[..., :10], ref.affine, ref.header), p)
    _bad(capsys, tmp_path, ["--magnitude", exam_copy / "magnitude.nii.gz", "--phase", p, "--te-ms", "12",
                            "--b0-t", "3"], "does not match")


def test_affine_mismatch(tmp_path, exam_copy, capsys):
    ref = nib.load(exam_copy / "phase.nii.gz")
    aff = ref.affine.copy()
    aff[0, 3] += 5.0
    p = exam_copy / "moved_phase.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(ref.dataobj, dtype=np.float32) * np.pi / 4096, aff), p)
    _bad(capsys, tmp_path, ["--magnitude", exam_copy / "magnitude.nii.gz", "--phase", p, "--te-ms", "12",
                            "--b0-t", "3"], "affine does not match")


@pytest.mark.parametrize("key, flag, text", [("EchoTime", ["--b0-t", "3"], "echo time unknown"),
                                             ("MagneticFieldStrength", ["--te-ms", "12"], "field strength unknown")])
def test_missing_te_or_b0(tmp_path, exam_copy, capsys, key, flag, text):
    for name in ("magnitude.json", "phase.json"):
        doc = json.loads((exam_copy / name).read_text())
        doc.pop(key)
        (exam_copy / name).write_text(json.dumps(doc))
    msg = _bad(capsys, tmp_path, ["--magnitude", exam_copy / "magnitude.nii.gz"], text)
    assert "phase.nii.gz" in msg
    # the flag supplies what the sidecar lacks
    code, _, err = _run(["run", "--quiet", "--no-figures", "--magnitude", str(exam_copy / "magnitude.nii.gz"),
                         "--out", str(tmp_path / "ok")] + flag + (["--te-ms", "12"] if key == "EchoTime" else
                                                                  ["--b0-t", "3"]), capsys)
    assert code == 0, err


def test_non_increasing_frame_times(tmp_path, exam_copy, capsys):
    times = ",".join(str(v) for v in [0, 3, 6, 6] + list(range(9, 87, 3)))
    _bad(capsys, tmp_path, ["--magnitude", exam_copy / "magnitude.nii.gz", "--frame-times-s", times],
         "not strictly increasing")


def test_output_folder_equal_to_input_folder(tmp_path, exam_copy, capsys):
    before = tree_digest(exam_copy)
    code, _, err = _run(["run", "--magnitude", str(exam_copy / "magnitude.nii.gz"), "--out", str(exam_copy)], capsys)
    assert code == 2 and "output folder is the folder of input" in err and len(err.strip().splitlines()) == 1
    assert tree_digest(exam_copy) == before


def test_cupy_backend_without_gpu_is_one_line(tmp_path, exam_copy, capsys):
    from mrtherm.backend import cupy_usable
    if cupy_usable():
        pytest.skip("a GPU is usable here")
    _bad(capsys, tmp_path, ["--magnitude", exam_copy / "magnitude.nii.gz", "--backend", "cupy"], "backend 'cupy'")


def test_console_script_subprocess(tmp_path, exam_copy):
    """The installed entry point: exit status 2 and one stderr line, no traceback."""
    exe = os.path.join(os.path.dirname(sys.executable), "mrtherm")
    proc = subprocess.run([exe, "run", "--magnitude", str(exam_copy / "missing.nii.gz"), "--phase",
                           str(exam_copy / "phase.nii.gz"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"mrtherm: error: {exam_copy / 'missing.nii.gz'}: file not found"


def test_phantom_and_demo_commands(tmp_path, capsys):
    code, out, err = _run(["phantom", "--out", str(tmp_path / "ph"), "--frames", "5"], capsys)
    assert code == 0 and (tmp_path / "ph" / "truth_temperature.nii.gz").exists()
    info = json.loads((tmp_path / "ph" / "phantom.json").read_text())
    assert info["peak_temperature_c"] == 37.0  # 5 frames end before the sonication
    code, out, err = _run(["demo", "--out", str(tmp_path / "demo"), "--quiet"], capsys)
    assert code == 0, err
    assert "peak temperature" in out and "error against ground truth" in out and "ALARM nerve root" in out
    rmse = float(out.split("RMSE ")[1].split(" C")[0])
    predicted = float(out.split("sigma_T median ")[1].split(" C")[0])
    assert rmse < 1.15 * predicted
    # the phantom's heat sits on the bone surface: the run itself says the true peak may be higher there
    assert "warning: heating runs into unmeasured voxels (bone/void)" in out


def test_view_without_a_viewer_installed_is_one_line(tmp_path, capsys, monkeypatch):
    """The core finds the viewer by entry point (mrtherm.viewer); none registered -> a one-line install hint."""
    import importlib.metadata
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    assert main(["view", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == \
        "mrtherm: error: the napari viewer is not installed: pip install 'mrtherm[napari]'"
