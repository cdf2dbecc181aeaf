"""``mrtherm export RUN --dicom OUT``: every object valid by dciodvfy (dicom3tools), read back by highdicom and
pydicom to the NIfTI maps' values at the same points in the patient, with the source's identity (DICOM runs) or the
documented placeholder (NIfTI runs). The expected values are the run's own NIfTI maps and report.json (another
writer: nibabel), compared through the affines (oblique slices included)."""

import os
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest

import mrtherm
from mrtherm.cli import main
from mrtherm.io.dicom.synth import write_dicom_exam

hd = pytest.importorskip("highdicom")


def _nifti_zyx(path):
    img = nib.load(path)
    return np.transpose(np.asarray(img.dataobj), (2, 1, 0)), img.affine


def _lps_index_affine(nifti_affine):
    """(z, y, x) array index -> LPS mm, by hand: RAS -> LPS flips x and y; the index order is reversed."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    swap = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    return flip @ nifti_affine @ swap


def _on_our_grid(volume, nifti_affine, shape):
    """A read-back highdicom volume resampled (by index, exactly) onto the NIfTI map's (z, y, x) grid."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in volume.array.shape[:3]], indexing="ij"), -1).reshape(-1, 3)
    world = volume.affine @ np.c_[idx, np.ones(len(idx))].T
    ours = np.linalg.inv(_lps_index_affine(nifti_affine)) @ world
    assert np.allclose(ours, np.round(ours), atol=1e-3)  # the same voxel centres
    ours = np.round(ours[:3]).astype(int)
    out = np.full(shape, np.nan if volume.array.dtype.kind == "f" else 0, volume.array.dtype)
    out[ours[0], ours[1], ours[2]] = volume.array.reshape(len(idx), *volume.array.shape[3:])[..., 0] \
        if volume.array.ndim == 4 and volume.array.shape[3] == 1 else volume.array.reshape(len(idx))
    return out


def _dciodvfy_errors(path):
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory):
    """A run from oblique Siemens DICOM with labels (spinal cord, nerve root), and its export."""
    from live_tools import oblique_shifted
    tmp = tmp_path_factory.mktemp("export")
    ph = mrtherm.make_phantom(shape_zyx=(4, 40, 40), voxel_mm=(4.0, 3.0, 3.0), n_frames=12, sonication_s=(16.0, 30.0))
    affine = oblique_shifted(ph.affine, degrees=20.0)
    src = tmp / "dicom"
    write_dicom_exam(src, ph.magnitude, ph.phase_rad, affine, ph.te_s, ph.b0_t, ph.frame_times_s)
    labels = nib.Nifti1Image(np.transpose(ph.labels, (2, 1, 0)).astype(np.int16), affine)
    nib.save(labels, tmp / "labels.nii.gz")
    run = tmp / "run"
    assert main(["run", "--dicom", str(src), "--labels", str(tmp / "labels.nii.gz"), "--out", str(run),
                 "--quiet"]) == 0
    out = tmp / "exported"
    assert main(["export", str(run), "--dicom", str(out), "--quiet"]) == 0
    return src, run, out


def test_every_exported_object_passes_dciodvfy(dicom_run):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian dicom3tools) not installed")
    _, _, out = dicom_run
    names = sorted(os.listdir(out))
    assert names == ["dose_pm.dcm", "overview_sc.dcm", "seg.dcm", "sr.dcm", "tmax_pm.dcm"]
    for name in names:
        assert _dciodvfy_errors(out / name) == [], name


def test_parametric_maps_read_back_to_the_nifti_values_in_celsius_and_minutes(dicom_run):
    _, run, out = dicom_run
    for name, nifti, unit in (("tmax_pm.dcm", "tmax.nii.gz", "Cel"), ("dose_pm.dcm", "dose_cem43.nii.gz", "min")):
        pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(out / name))
        values, affine = _nifti_zyx(run / nifti)
        back = _on_our_grid(pm.get_volume(), affine, values.shape)
        np.testing.assert_array_equal(back, values.astype(back.dtype))  # NaN where not measured, as the NIfTI
        rwvm = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        assert rwvm.MeasurementUnitsCodeSequence[0].CodeValue == unit
        assert rwvm.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    assert np.nanmax(_nifti_zyx(run / "tmax.nii.gz")[0]) > 50.0  # a real heating, not an empty map


def test_objects_carry_the_source_patient_study_and_frame_of_reference_and_reference_its_series(dicom_run):
    src, _, out = dicom_run
    first = pydicom.dcmread(next(p for p in sorted(src.rglob("*.dcm"))))
    for name in os.listdir(out):
        ds = pydicom.dcmread(out / name)
        assert (ds.PatientID, ds.StudyInstanceUID) == (first.PatientID, first.StudyInstanceUID), name
        if name not in ("sr.dcm", "overview_sc.dcm"):  # an SR and a figure have no frame of reference
            assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID, name
    pm = pydicom.dcmread(out / "tmax_pm.dcm")
    referenced = {item.SeriesInstanceUID for item in pm.ReferencedSeriesSequence}
    series = {str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in src.rglob("*.dcm")}
    assert referenced and referenced <= series


def test_segmentation_holds_each_lesion_level_and_the_protected_structures(dicom_run):
    _, run, out = dicom_run
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(out / "seg.dcm"))
    labels_by_name = {d.SegmentLabel: d.SegmentNumber for d in seg.SegmentSequence}
    assert set(labels_by_name) == {"lesion 240 CEM43", "spinal cord", "nerve root"}
    lesion, affine = _nifti_zyx(run / "lesion_240.nii.gz")
    labels, _ = _nifti_zyx(run / "labels.nii.gz")
    for name, truth in (("lesion 240 CEM43", lesion > 0), ("spinal cord", labels == 10), ("nerve root", labels == 11)):
        vol = seg.get_volume(segment_numbers=[labels_by_name[name]], combine_segments=False)
        back = _on_our_grid(vol, affine, truth.shape)
        np.testing.assert_array_equal(back > 0, truth)
        assert truth.sum() > 0


def test_measurement_report_gives_the_lesion_volume_peak_and_parameters_of_report_json(dicom_run):
    import json
    _, run, out = dicom_run
    report = json.loads((run / "report.json").read_text())
    sr = hd.sr.srread(out / "sr.dcm")
    values = {}
    for item in sr.ContentSequence:
        for sub in item.get("ContentSequence", []):
            for leaf in sub.get("ContentSequence", []):
                if leaf.ValueType == "NUM":
                    values[leaf.ConceptNameCodeSequence[0].CodeMeaning] = \
                        float(leaf.MeasuredValueSequence[0].NumericValue)
    assert values["Volume"] == pytest.approx(report["results"]["lesion_volumes_ml"]["240"], rel=1e-6)
    assert values["Peak temperature"] == pytest.approx(report["results"]["peak_temperature_c"], rel=1e-6)
    assert values["Field strength"] == pytest.approx(3.0) and values["Echo time"] == pytest.approx(12.0)


def test_secondary_capture_is_the_overview_figure(dicom_run):
    import matplotlib.image as mpimg
    _, run, out = dicom_run
    png = mpimg.imread(run / "figures" / "tmax_dose.png")[..., :3]
    sc = pydicom.dcmread(out / "overview_sc.dcm")
    np.testing.assert_array_equal(sc.pixel_array, np.round(png * 255).astype(np.uint8))


def test_a_nifti_run_gets_the_placeholder_identity_no_source_reference_and_stable_uids(tmp_path):
    ph = mrtherm.make_phantom(shape_zyx=(3, 32, 32), n_frames=10, sonication_s=(16.0, 27.0))
    folder = tmp_path / "nifti"
    folder.mkdir()
    aff = ph.affine
    nib.save(nib.Nifti1Image(np.transpose(ph.magnitude, (3, 2, 1, 0)), aff), folder / "mag.nii.gz")
    nib.save(nib.Nifti1Image(np.transpose(ph.phase_rad, (3, 2, 1, 0)), aff), folder / "ph.nii.gz")
    run = tmp_path / "run"
    assert main(["run", "--magnitude", str(folder / "mag.nii.gz"), "--phase", str(folder / "ph.nii.gz"),
                 "--te-ms", "12", "--b0-t", "3", "--frame-time-s", "3", "--out", str(run), "--quiet",
                 "--no-figures"]) == 0
    assert main(["export", str(run), "--dicom", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["export", str(run), "--dicom", str(tmp_path / "b"), "--quiet", "--patient-id", "P-17",
                 "--study-uid", "1.2.826.0.1.3680043.8.498.17"]) == 0
    a, b = (pydicom.dcmread(tmp_path / k / "tmax_pm.dcm") for k in "ab")
    assert a.PatientID == "MRTHERM-ANONYMOUS" and str(a.PatientName) == "Anonymous^mrtherm"
    assert "ReferencedSeriesSequence" not in a  # no DICOM source exists to point at
    assert (b.PatientID, b.StudyInstanceUID) == ("P-17", "1.2.826.0.1.3680043.8.498.17")
    again = tmp_path / "again"
    assert main(["export", str(run), "--dicom", str(again), "--quiet"]) == 0
    assert pydicom.dcmread(again / "tmax_pm.dcm").SOPInstanceUID == a.SOPInstanceUID  # one run, one object
    values, affine = _nifti_zyx(run / "tmax.nii.gz")
    back = _on_our_grid(hd.pm.ParametricMap.from_dataset(a).get_volume(), affine, values.shape)
    np.testing.assert_array_equal(back, values.astype(back.dtype))
    if shutil.which("dciodvfy"):
        for name in os.listdir(tmp_path / "a"):
            assert _dciodvfy_errors(tmp_path / "a" / name) == [], name


def test_export_mistakes_are_one_line_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--dicom", str(tmp_path / "out")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--dicom", str(tmp_path / "out")]) == 2
    assert main(["export", str(tmp_path / "empty"), "--dicom", str(tmp_path / "out"), "--send", "pacs:104"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("mrtherm: error: ") for line in err), err
    assert "report" in err[1] and "--called-ae" in err[2]


def test_a_dicom_run_keeps_its_source_identity_and_its_uids_do_not_depend_on_the_folder(dicom_run, tmp_path, capsys):
    _, run, out = dicom_run
    assert main(["export", str(run), "--dicom", str(tmp_path / "x"), "--patient-id", "OTHER"]) == 2
    assert "came from DICOM" in capsys.readouterr().err  # never another ID over the source's name and images
    moved = tmp_path / "moved_run"
    shutil.copytree(run, moved)
    assert main(["export", str(moved), "--dicom", str(tmp_path / "again"), "--quiet", "--source",
                 str(run.parent / "dicom")]) == 0
    for name in os.listdir(out):
        assert pydicom.dcmread(tmp_path / "again" / name).SOPInstanceUID == pydicom.dcmread(out / name).SOPInstanceUID
