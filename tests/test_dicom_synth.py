"""Synthetic thermometry exams written as DICOM in each vendor's convention: end to end against ground truth,
dcm2niix agreement, oblique geometry, and every refusal of the DICOM reader."""

import os
import shutil

import numpy as np
import pytest

import mrtherm
from mrtherm import InputFileError
from mrtherm.cli import main
from mrtherm.io.dicom.files import pydicom
from mrtherm.io.dicom.synth import VENDORS, write_dicom_exam

from conftest import tree_digest
from dicom_tools import run_dcm2niix, world_resample


def _write(ph, folder, vendor, affine=None):
    return write_dicom_exam(folder, ph.magnitude, ph.phase_rad, ph.affine if affine is None else affine, ph.te_s,
                            ph.b0_t, ph.frame_times_s, vendor=vendor)


@pytest.fixture(scope="module")
def exams(tmp_path_factory, small_phantom):
    base = tmp_path_factory.mktemp("synthetic_dicom")
    return {v: _write(small_phantom, base / v, v) for v in VENDORS}


def _rmse(result, ph):
    m = result.host("mask").astype(bool)
    err = result.host("temperature_c")[:, m] - ph.truth_temperature_c[:, m]
    return float(np.sqrt(np.mean(err ** 2)))


@pytest.mark.parametrize("vendor", VENDORS)
def test_end_to_end_against_truth_as_accurate_as_nifti(vendor, exams, small_phantom, phantom_result):
    ph = small_phantom
    exam = mrtherm.load_exam(dicom=exams[vendor])
    np.testing.assert_allclose(exam.affine, ph.affine, atol=1e-6)
    np.testing.assert_allclose(exam.frame_times_s, ph.frame_times_s, atol=1e-5)
    assert exam.te_s == pytest.approx(ph.te_s) and exam.b0_t == pytest.approx(ph.b0_t)
    assert exam.phase_scale == {"siemens": "siemens", "siemens-enhanced": "siemens", "ge": "ge-mrad",
                                "philips": "mrad", "philips-enhanced": "mrad"}[vendor]
    result = mrtherm.process(exam, baseline_frames=ph.info["baseline_frames"], labels=ph.labels)
    ref = _rmse(phantom_result, ph)  # in-memory float arrays, same processing
    got = _rmse(result, ph)
    assert got < 0.6 and got < 1.02 * ref, (got, ref)
    assert result.lesion_volumes_ml[240.0] == pytest.approx(phantom_result.lesion_volumes_ml[240.0], rel=0.05)


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips"])
def test_synthetic_sets_agree_with_dcm2niix(vendor, exams, tmp_path):
    # Classic files only: dcm2niix misplaces slices of these synthetic enhanced files (it relies on vendor
    # private fields they lack); real enhanced files (XA30, Philips) are compared in test_dicom_real.py.
    exam = mrtherm.load_exam(dicom=exams[vendor])
    files = run_dcm2niix(exams[vendor], tmp_path)
    ph_file = [p for k, p in files.items() if k.endswith("_ph")]
    mag_file = [p for p in files.values() if p not in ph_file]
    assert len(mag_file) == 1 and len(ph_file) == 1, files
    for t in (0, exam.n_frames - 1):
        mag = exam.components["magnitude"].read(t)
        theirs, residual, dist = world_resample(mag, exam.affine, mag_file[0], t)
        assert residual < 1e-4 and dist < 1e-3
        np.testing.assert_allclose(mag, theirs, rtol=1e-6)
        rad = np.angle(exam.frame(t)).astype(np.float64)
        theirs, _, _ = world_resample(rad, exam.affine, ph_file[0], t)
        if vendor.startswith("siemens"):
            theirs = theirs * np.pi / 4096.0
        elif vendor == "ge":
            theirs = theirs / 1000.0
        mag_ok = mag > 0
        dphi = np.angle(np.exp(1j * (rad - theirs)))[mag_ok]
        assert np.abs(dphi).max() < 5e-4


def _rotation(deg_x, deg_z):
    ax, az = np.radians(deg_x), np.radians(deg_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    r = np.eye(4)
    r[:3, :3] = rz @ rx
    return r


@pytest.mark.parametrize("vendor", ["siemens", "philips-enhanced"])
def test_oblique_geometry_round_trips(vendor, small_phantom, tmp_path):
    aff = _rotation(17.0, -23.0) @ small_phantom.affine
    folder = _write(small_phantom, tmp_path / "oblique", vendor, aff)
    exam = mrtherm.load_exam(dicom=folder)
    np.testing.assert_allclose(exam.affine, aff, atol=1e-6)


def _classic_copy(exams, tmp_path):
    dst = tmp_path / "exam"
    shutil.copytree(exams["siemens"], dst)
    return dst


def _files(folder):
    return sorted(os.path.join(r, f) for r, _d, fs in os.walk(folder) for f in fs)


def _phase_files(folder):
    return [p for p in _files(folder) if "P" in pydicom().dcmread(p, stop_before_pixels=True).ImageType[2]]


def _cli_error(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("mrtherm: error: "), err
    return err[0]


def test_missing_slice_refused(exams, tmp_path, capsys):
    folder = _classic_copy(exams, tmp_path)
    os.remove(_phase_files(folder)[7])
    msg = _cli_error(["run", "--dicom", str(folder), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert "missing or extra images" in msg and not (tmp_path / "o").exists()


def test_duplicated_slice_refused(exams, tmp_path, capsys):
    folder = _classic_copy(exams, tmp_path)
    src = _phase_files(folder)[3]
    ds = pydicom().dcmread(src)
    ds.SOPInstanceUID = pydicom().uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(os.path.join(os.path.dirname(src), "copy.dcm"))
    msg = _cli_error(["run", "--dicom", str(folder), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert "missing or extra images" in msg or "duplicated slice" in msg


def test_same_file_twice_refused(exams, tmp_path):
    folder = _classic_copy(exams, tmp_path)
    src = _phase_files(folder)[0]
    shutil.copy(src, os.path.join(folder, "again.dcm"))
    with pytest.raises(InputFileError, match="duplicate image: same SOP Instance UID"):
        mrtherm.load_exam(dicom=folder)


def test_two_stacks_refused_and_other_files_ignored(exams, small_phantom, tmp_path):
    folder = _classic_copy(exams, tmp_path)
    (folder / "README.txt").write_text("notes")
    (folder / "sidecar.json").write_text("{}")
    assert mrtherm.load_exam(dicom=folder).provenance["dicom"]["skipped_files"]["not_dicom"] == 2
    _write(small_phantom, folder / "second", "ge", _rotation(30.0, 0.0) @ small_phantom.affine)
    with pytest.raises(InputFileError, match="2 thermometry stacks on different grids"):
        mrtherm.load_exam(dicom=folder)


def test_order_and_names_do_not_matter(exams, tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    files = _files(exams["siemens"])
    for k, p in enumerate(np.random.default_rng(5).permutation(files)):
        shutil.copy(p, folder / f"{k:05d}")  # no extension, no series folders
    a = mrtherm.load_exam(dicom=exams["siemens"])
    b = mrtherm.load_exam(dicom=folder)
    for t in (0, 7):
        np.testing.assert_array_equal(a.frame(t), b.frame(t))


def test_inputs_untouched_and_outputs_complete(exams, small_phantom, phantom_files, tmp_path, capsys):
    before = tree_digest(exams["philips"])
    out = tmp_path / "run"
    code = main(["run", "--dicom", exams["philips"], "--labels", phantom_files["labels"], "--out", str(out),
                 "--baseline-frames", "5", "--quiet", "--no-figures"])
    assert code == 0, capsys.readouterr().err
    assert tree_digest(exams["philips"]) == before
    assert {"temperature.nii.gz", "dose_cem43.nii.gz", "report.json", "mask.nii.gz"} <= set(os.listdir(out))


@pytest.mark.parametrize("make, text", [
    (lambda p: p, "no MR image DICOM files found"),
    (lambda p: p / "missing", "folder not found"),
])
def test_empty_or_missing_folder(make, text, tmp_path, capsys):
    folder = make(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    msg = _cli_error(["run", "--dicom", str(folder), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert text in msg


def test_corrupt_pixel_data_named(exams, tmp_path):
    folder = _classic_copy(exams, tmp_path)
    victim = _phase_files(folder)[0]
    data = open(victim, "rb").read()
    with open(victim, "wb") as fh:
        fh.write(data[: len(data) - 4000])
    with pytest.raises(InputFileError) as info:
        exam = mrtherm.load_exam(dicom=folder)
        for t in range(exam.n_frames):
            exam.frame(t)
    assert os.path.basename(victim) in str(info.value)


def test_magnitude_only_folder_refused(exams, tmp_path):
    folder = tmp_path / "mag"
    folder.mkdir()
    phase = set(_phase_files(exams["siemens"]))
    for p in _files(exams["siemens"]):
        if p not in phase:
            shutil.copy(p, folder)
    with pytest.raises(InputFileError, match=r"no magnitude \+ phase"):
        mrtherm.load_exam(dicom=folder)
