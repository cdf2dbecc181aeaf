"""Real scanner DICOM (../shared/data/dcm_qa_dicom, see its PROVENANCE.md): roles, scaling, TE/B0, geometry, dcm2niix agreement,
and no false heating on an unheated real pair.

Expected values are read from the DICOM headers (PROVENANCE.md) or produced by dcm2niix on the same files.
"""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

import mrtherm
from mrtherm import InputFileError
from mrtherm.cli import main

from conftest import tree_digest
from dicom_tools import DATA, DATA_MISSING, plain_copy, run_dcm2niix, world_resample

pytestmark = pytest.mark.skipif(DATA_MISSING is not None, reason=DATA_MISSING or "")

SIEMENS = os.path.join(DATA, "siemens_fmap")
XA30 = os.path.join(DATA, "siemens_xa30_fmap")
PHILIPS_CL = os.path.join(DATA, "philips_fmap_classic")
PHILIPS_ENH = os.path.join(DATA, "philips_fmap_enhanced")
GE_B0 = os.path.join(DATA, "ge_b0map")

# name: (folder, echo, shape (t, z, y, x), TE s for PRF, phase scale, role source word, dcm2niix mag/phase per frame)
SETS = {
    "siemens_classic": (SIEMENS, None, (2, 4, 64, 64), 0.00765 - 0.00519, "siemens", "ImageType",
                        [("2_e2", "3_e2_ph"), ("5_e2", "4_e2_ph")]),
    "siemens_xa30_enhanced": (XA30, None, (1, 33, 64, 64), 0.01246 - 0.010, "siemens", "ComplexImageComponent",
                              [("8_e2", "9_e2_ph")]),
    "philips_classic_echo2": (PHILIPS_CL, 2, (1, 4, 80, 80), 0.0046, "mrad", "ImageType",
                              [("2001_e2", "2001_e2_ph")]),
    "philips_enhanced_echo1": (PHILIPS_ENH, 1, (1, 53, 80, 80), 0.0023, "mrad", "ComplexImageComponent",
                               [("2001_e1", "2001_e1_ph")]),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """dcm2niix conversion of every real set (gzip files decompressed first)."""
    out = {}
    for name, (folder, *_rest) in SETS.items():
        base = tmp_path_factory.mktemp(name)
        out[name] = run_dcm2niix(plain_copy(folder, base / "dicom"), base / "nifti")
    return out


@pytest.mark.parametrize("name", list(SETS))
def test_roles_scaling_te_b0_from_tags(name):
    folder, echo, shape, te, scale, role_word, _ = SETS[name]
    exam = mrtherm.load_exam(dicom=folder, echo=echo)
    assert exam.shape == shape
    assert exam.te_s == pytest.approx(te, abs=1e-9)
    assert exam.b0_t == 3.0
    assert exam.phase_scale == scale and exam.provenance["phase_scale_source"].startswith("DICOM tags")
    assert set(exam.components) == {"magnitude", "phase"}
    assert all(src.startswith(role_word) for src in exam.provenance["roles"].values())
    if name.startswith("siemens"):  # field-mapping phase: the PRF echo time is TE2 - TE1 from the protocol
        assert "phase_difference" in exam.provenance and "TE2 - TE1" in exam.provenance["te_source"]
    ph = np.angle(exam.frame(0))
    assert ph.min() >= -np.pi and ph.max() <= np.pi and np.ptp(ph) > 6.0


def test_siemens_frame_times_and_cross_check():
    exam = mrtherm.load_exam(dicom=SIEMENS)
    # phase series 3 at 14:01:36.32, series 4 at 14:03:01.2575 (slice times differ; frame time = mean over slices)
    assert exam.frame_times_s[1] == pytest.approx(84.94, abs=0.1)
    assert any("54.5 s away" in w for w in exam.warnings)  # magnitude series 5 was acquired at 14:03:55


@pytest.mark.parametrize("name", list(SETS))
def test_agrees_with_dcm2niix_in_world_coordinates(name, converted):
    folder, echo, shape, _te, scale, _w, pairs = SETS[name]
    exam = mrtherm.load_exam(dicom=folder, echo=echo)
    files = converted[name]
    for t, (mag_name, ph_name) in enumerate(pairs):
        mag = exam.components["magnitude"].read(t)
        theirs, residual, dist = world_resample(mag, exam.affine, files[mag_name])
        assert residual < 1e-4 and dist < 1e-3  # same voxel centres, to a micrometre
        np.testing.assert_allclose(mag, theirs, rtol=1e-6, atol=1e-6 * np.abs(theirs).max())
        ph = exam.components["phase"].read(t).astype(np.float64)
        theirs, residual, dist = world_resample(ph, exam.affine, files[ph_name])
        assert residual < 1e-4 and dist < 1e-3
        if scale == "siemens":  # dcm2niix keeps Siemens' rescaled values (slope 2, intercept -4096)
            np.testing.assert_array_equal(ph, theirs)
        else:  # dcm2niix maps Philips 0..4095 to exactly -pi..pi; the DICOM mrad mapping differs by < 0.5 mrad
            assert np.abs(ph / 1000.0 - theirs).max() < 5e-4


def test_oblique_affines_match_dcm2niix_exactly(converted):
    # XA30 and Philips are oblique: the affines must agree element by element once the axes are matched.
    for name in ("siemens_xa30_enhanced", "philips_classic_echo2"):
        folder, echo, *_ = SETS[name]
        exam = mrtherm.load_exam(dicom=folder, echo=echo)
        img = nib.load(converted[name][SETS[name][6][0][0]])
        m = np.linalg.inv(img.affine) @ exam.affine
        assert np.abs(np.round(m[:3, :3]) - m[:3, :3]).max() < 1e-4
        assert not np.allclose(np.abs(exam.affine[:3, :3]) > 1e-6, np.eye(3, dtype=bool))  # truly oblique


def test_multi_echo_needs_echo():
    with pytest.raises(InputFileError, match=r"multi-echo series \(2 echoes.*pass --echo N"):
        mrtherm.load_exam(dicom=PHILIPS_CL)


def test_philips_classic_and_enhanced_are_the_same_acquisition():
    cl = mrtherm.load_exam(dicom=PHILIPS_CL, echo=1)
    enh = mrtherm.load_exam(dicom=PHILIPS_ENH, echo=1)
    a = cl.components["phase"].read(0)
    b, residual, _ = world_resample_exam(a, cl.affine, enh)
    assert residual < 1e-4
    np.testing.assert_allclose(a, b, atol=1e-3)


def world_resample_exam(ours, our_affine, other_exam):
    """``other_exam``'s phase at our voxel centres (both mrtherm grids)."""
    other = other_exam.components["phase"].read(0)
    m = np.linalg.inv(other_exam.affine) @ our_affine
    rot, off = np.round(m[:3, :3]), np.round(m[:3, 3])
    nz, ny, nx = ours.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    idx = (rot @ np.stack([i.ravel(), j.ravel(), k.ravel()]) + off[:, None]).astype(int)
    return other[idx[2], idx[1], idx[0]].reshape(ours.shape), float(np.abs(m[:3, :3] - rot).max()), None


@pytest.mark.parametrize("folder", [GE_B0])
def test_field_map_in_hz_is_refused(folder, tmp_path, capsys):
    code = main(["run", "--dicom", folder, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "B0 field map in Hz" in err[0] and "ge_b0map" in err[0]
    assert not (tmp_path / "o").exists()


def test_field_map_in_hz_refused_from_dcm2niix_sidecar(tmp_path, capsys):
    files = run_dcm2niix(GE_B0, tmp_path / "nifti")
    hz = [p for k, p in files.items() if "fieldmaphz" in k or "ph" in k]
    mag = [p for k, p in files.items() if p not in hz]
    assert hz and mag
    code = main(["run", "--magnitude", mag[0], "--phase", hz[0], "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "B0 field map in Hz" in err and len(err.strip().splitlines()) == 1


def _tissue_check(out):
    report = json.loads((out / "report.json").read_text())
    temp = np.asarray(nib.load(out / "temperature.nii.gz").dataobj)[..., -1]
    mask = np.asarray(nib.load(out / "mask.nii.gz").dataobj) > 0
    dose = nib.load(out / "dose_cem43.nii.gz")
    t = temp[mask]
    return report, t, dose


@pytest.mark.parametrize("route", ["dicom", "nifti"])
def test_unheated_real_pair_shows_no_false_heating(route, tmp_path):
    """Series 3 and 4 (never heated, 85 s apart) with the issue's command: no lesion, body temperature."""
    out = tmp_path / "run"
    before = tree_digest(SIEMENS)
    if route == "dicom":
        args = ["--dicom", SIEMENS]
    else:
        f = run_dcm2niix(SIEMENS, tmp_path / "nifti")
        args = ["--magnitude", f["2_e2"], f["5_e2"], "--phase", f["3_e2_ph"], f["4_e2_ph"]]
    exe = os.path.join(os.path.dirname(sys.executable), "mrtherm")
    proc = subprocess.run([exe, "run", *args, "--baseline-frames", "1", "--out", str(out), "--quiet"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # no Python warnings in the terminal
    assert tree_digest(SIEMENS) == before
    report, t, dose = _tissue_check(out)
    assert report["results"]["lesion_volumes_ml"]["240"] == 0.0
    assert abs(float(np.median(t)) - 37.0) < 0.5
    assert np.mean(np.abs(t - 37.0) < 10.0) > 0.999  # air (random phase) is masked
    assert dose.get_data_dtype() == np.float64 and not np.any(np.isinf(np.asarray(dose.dataobj)))
    assert report["parameters"]["te_s"] == pytest.approx(0.00246)
    assert "phase_difference" in report["provenance"]
    assert any("different acquisitions" in w for w in report["warnings"])


def test_dicom_and_nifti_routes_agree(tmp_path):
    f = run_dcm2niix(SIEMENS, tmp_path / "nifti")
    a = mrtherm.process(mrtherm.load_exam(dicom=SIEMENS), baseline_frames=1)
    b = mrtherm.process(mrtherm.load_exam([f["2_e2"], f["5_e2"]], [f["3_e2_ph"], f["4_e2_ph"]]), baseline_frames=1)
    # same voxels up to dcm2niix's flips of rows and slice order: match the grids through the affines
    m = np.linalg.inv(b.affine) @ a.affine
    assert np.allclose(np.abs(m[:3, :3]), np.eye(3), atol=1e-6)
    flipped = tuple(-1 - ax for ax in range(3) if m[ax, ax] < 0)  # x, y, z are the last three axes reversed
    bt, bm = np.flip(b.temperature_c, flipped), np.flip(b.mask, flipped)
    assert np.array_equal(a.mask, bm)
    diff = np.abs(a.temperature_c[:, a.mask] - bt[:, a.mask])
    assert np.nanmax(diff) < 1e-3


def test_swapped_real_inputs_are_refused(tmp_path):
    f = run_dcm2niix(SIEMENS, tmp_path / "nifti")
    with pytest.raises(InputFileError, match="marks a phase image, but it was given as --magnitude"):
        mrtherm.load_exam([f["3_e2_ph"], f["4_e2_ph"]], [f["2_e2"], f["5_e2"]])


def test_partner_from_dcm2niix_default_names(tmp_path):
    # dcm2niix's default names put the folder, protocol, time and series in the name: ..._2_e2 and ..._3_e2_ph
    src = tmp_path / "dicom"
    plain_copy(os.path.join(SIEMENS, "2_gre_field_magph"), src)
    plain_copy(os.path.join(SIEMENS, "3_gre_field_magph"), src)
    out = tmp_path / "nifti"
    out.mkdir()
    from dicom_tools import dcm2niix_exe
    subprocess.run([dcm2niix_exe(), "-o", str(out), "-z", "n", str(src)], check=True, capture_output=True)
    mag = [p for p in os.listdir(out) if p.endswith("_2_e2.nii")]
    assert len(mag) == 1
    exam = mrtherm.load_exam(str(out / mag[0]), te_s=0.00246, b0_t=3.0)
    assert exam.provenance["partner_found"]["rules"][0].startswith(("dcm2niix _ph", "dcm2niix series"))
    assert exam.components["phase"].paths[0].endswith("_3_e2_ph.nii")
