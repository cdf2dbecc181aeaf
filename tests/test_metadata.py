"""NIfTI inputs: roles and units from sidecars, phase differences, cross-checks, partners, refusals, dose storage."""

import json
import os

import nibabel as nib
import numpy as np
import pytest

import mrtherm
from conftest import write_nifti
from mrtherm import InputFileError, ParameterError
from mrtherm.cli import main
from mrtherm.io.partners import find_partner

AFF = np.diag([2.0, 2.0, 4.0, 1.0])
RNG = np.random.default_rng(4)


def _pair(nt=3, shape=(3, 16, 16)):
    mag = np.zeros((nt,) + shape, np.float32)
    mag[:, :, 4:12, 4:12] = 500.0
    mag += np.abs(RNG.normal(0, 5, mag.shape) + 1j * RNG.normal(0, 5, mag.shape)).astype(np.float32)
    ph = RNG.uniform(-np.pi, np.pi, (nt,) + shape).astype(np.float32)
    ph[:, :, 4:12, 4:12] = 0.3
    return mag, ph


_write = write_nifti


SIDE = {"EchoTime": 0.01, "MagneticFieldStrength": 3.0}


def test_sidecar_role_decides_and_mismatch_is_refused(tmp_path):
    mag, ph = _pair()
    m = _write(tmp_path, "a.nii", mag, {**SIDE, "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]})
    p = _write(tmp_path, "b.nii", ph, {**SIDE, "ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]})
    exam = mrtherm.load_exam(m, p)
    assert exam.provenance["roles"]["phase"].startswith("sidecar ImageType")
    with pytest.raises(InputFileError, match=r"b\.nii: sidecar ImageType .* marks a phase image, but it was given as "
                                             r"--magnitude"):
        mrtherm.load_exam(p, m)


@pytest.mark.parametrize("extra", [{"Units": "Hz"}, {"ImageType": ["ORIGINAL", "PRIMARY", "OTHER", "FIELDMAPHZ"]}])
def test_field_map_in_hz_refused(tmp_path, extra):
    mag, _ = _pair()
    hz = np.round(RNG.uniform(-217, 217, mag.shape)).astype(np.float32)
    m = _write(tmp_path, "m.nii", mag, SIDE)
    p = _write(tmp_path, "fmap.nii", hz, {**SIDE, **extra})
    with pytest.raises(InputFileError, match="fmap.nii: .*B0 field map in Hz, not a phase image"):
        mrtherm.load_exam(m, p)


def test_phase_difference_uses_echo_time_difference(tmp_path):
    mag, ph = _pair()
    m = _write(tmp_path, "m.nii", mag, {**SIDE, "EchoTime": 0.00765})
    p = _write(tmp_path, "p.nii", ph, {**SIDE, "EchoTime": 0.00765, "EchoTime1": 0.00519, "EchoTime2": 0.00765})
    exam = mrtherm.load_exam(m, p)
    assert exam.te_s == pytest.approx(0.00246)  # not 7.65 ms: that would scale temperatures 3.1x too small
    assert "EchoTime2 - EchoTime1" in exam.provenance["te_source"]
    assert exam.provenance["phase_difference"]["echo_time1_s"] == 0.00519
    exam = mrtherm.load_exam(m, p, te_s=0.005)  # the flag still wins, with a warning
    assert exam.te_s == 0.005 and any("phase difference" in w for w in exam.warnings)


def test_field_strength_mismatch_refused(tmp_path):
    mag, ph = _pair()
    m = _write(tmp_path, "m.nii", mag, {**SIDE, "MagneticFieldStrength": 1.5})
    p = _write(tmp_path, "p.nii", ph, SIDE)
    with pytest.raises(InputFileError, match="MagneticFieldStrength 1.5 T differs from the phase's 3 T"):
        mrtherm.load_exam(m, p)


def test_frame_clock_cross_check_and_phase_times_win(tmp_path):
    mag, ph = _pair(nt=3)
    mc, pc = ["10:00:00", "10:01:00", "10:02:00"], ["10:00:00", "10:00:30", "10:01:00"]
    mags = [_write(tmp_path, f"m{t}.nii", mag[t], {**SIDE, "AcquisitionTime": mc[t]}) for t in range(3)]
    phs = [_write(tmp_path, f"p{t}.nii", ph[t], {**SIDE, "AcquisitionTime": pc[t]}) for t in range(3)]
    exam = mrtherm.load_exam(mags, phs)
    np.testing.assert_allclose(exam.frame_times_s, [0, 30, 60])
    assert any("up to 60 s away from their phase frames" in w for w in exam.warnings)
    check = exam.provenance["cross_checks"][0]
    assert check["outcome"] == "warning" and check["max_difference_s"] == 60.0


def test_clock_over_midnight(tmp_path):
    mag, ph = _pair(nt=2)
    pc = ["23:59:58", "00:00:01"]
    mags = [_write(tmp_path, f"m{t}.nii", mag[t], {**SIDE, "AcquisitionTime": pc[t]}) for t in range(2)]
    phs = [_write(tmp_path, f"p{t}.nii", ph[t], {**SIDE, "AcquisitionTime": pc[t]}) for t in range(2)]
    np.testing.assert_allclose(mrtherm.load_exam(mags, phs).frame_times_s, [0, 3])


def test_partner_rules(tmp_path):
    mag, ph = _pair()
    # dcm2niix series numbering: magnitude series 2, phase series 3, different prefixes
    a = _write(tmp_path, "2_gre_x_20260101_2_e2.nii", mag, SIDE)
    b = _write(tmp_path, "3_gre_x_20260101_3_e2_ph.nii", ph, SIDE)
    assert find_partner(a, "phase") == (b, "dcm2niix series numbering (_<N>_e<k> and _<N+1>_e<k>_ph)")
    assert find_partner(b, "magnitude")[0] == a
    # sidecars: same AcquisitionTime and echo, the partner's ImageType
    c = _write(tmp_path, "scanA.nii", mag, {**SIDE, "AcquisitionTime": "11:00:00", "EchoNumber": 1,
                                            "ImageType": ["ORIGINAL", "PRIMARY", "M"]})
    d = _write(tmp_path, "scanB.nii", ph, {**SIDE, "AcquisitionTime": "11:00:00", "EchoNumber": 1,
                                           "ImageType": ["ORIGINAL", "PRIMARY", "P"]})
    assert find_partner(c, "phase")[0] == d and find_partner(d, "magnitude")[0] == c


def test_partners_of_a_list_and_error_lists_rules(tmp_path):
    mag, ph = _pair(nt=2)
    mags = [_write(tmp_path, f"frame{t}.nii", mag[t], {**SIDE, "AcquisitionTime": f"10:00:0{3 * t}"})
            for t in range(2)]
    for t in range(2):
        _write(tmp_path, f"frame{t}_ph.nii", ph[t], {**SIDE, "AcquisitionTime": f"10:00:0{3 * t}"})
    exam = mrtherm.load_exam(mags)
    assert exam.n_frames == 2 and exam.components["phase"].paths[1].endswith("frame1_ph.nii")
    lonely = _write(tmp_path, "lonely.nii", mag[0], SIDE)
    with pytest.raises(InputFileError) as info:
        mrtherm.load_exam(lonely)
    for rule in ("BIDS", "_ph suffix", "series numbering", "sidecar", "words"):
        assert rule in str(info.value)


def test_missing_file_is_named_before_partner_search(tmp_path):
    with pytest.raises(InputFileError, match="nope.nii: file not found"):
        mrtherm.load_exam(str(tmp_path / "nope.nii"))


def test_negative_magnitude_refused(tmp_path):
    mag, ph = _pair()
    m = _write(tmp_path, "m.nii", (ph * 1303.8).astype(np.float32))  # a Siemens-scaled phase given as magnitude
    p = _write(tmp_path, "p.nii", ph)
    with pytest.raises(InputFileError, match="m.nii: .*negative .*not a magnitude image"):
        mrtherm.load_exam(m, p, te_s=0.01, b0_t=3.0, frame_time_s=1.0)


def test_magnitude_given_as_phase_refused(tmp_path):
    mag, ph = _pair()
    m = _write(tmp_path, "m.nii", mag)
    p = _write(tmp_path, "p.nii", np.round(mag * 2).astype(np.float32))  # another magnitude, no metadata
    with pytest.raises(InputFileError, match="p.nii: values are low wherever the magnitude is low"):
        mrtherm.load_exam(m, p, te_s=0.01, b0_t=3.0, frame_time_s=1.0)
    mrtherm.load_exam(m, _write(tmp_path, "q.nii", ph), te_s=0.01, b0_t=3.0, frame_time_s=1.0)  # a real phase


def test_one_frame_exam_refused(tmp_path, capsys):
    mag, ph = _pair(nt=1)
    m = _write(tmp_path, "m.nii", mag[0], SIDE)
    p = _write(tmp_path, "m_ph.nii", ph[0], SIDE)
    code = main(["run", "--magnitude", m, "--phase", p, "--baseline-frames", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "the exam has 1 frame:" in err and "nothing would be measured" in err
    exam = mrtherm.load_exam(*_pair(nt=3), te_s=0.01, b0_t=3.0, frame_time_s=1.0)
    with pytest.raises(ParameterError, match="baseline_frames = 3 leaves no frame to monitor: the exam has 3 frames"):
        mrtherm.process(exam, baseline_frames=3)


def test_dose_is_float64_on_disk_and_never_inf(tmp_path):
    """A voxel heated to ~240 C holds ~1e58 CEM43 (float32 overflows); one at ~3000 C overflows float64: capped."""
    nt, shape = 4, (2, 16, 16)
    mag = np.full((nt,) + shape, 1000.0, np.float32)
    te, b0 = 1e-4, 3.0
    k = 2 * np.pi * 42.577478e6 * -0.01e-6 * b0 * te  # rad per C
    rise = np.zeros((nt,) + shape)
    rise[2:, 0, 5, 5] = 200.0  # 237 C
    rise[3, 1, 7, 7] = 2500.0  # 2537 C: R**(43 - T) = 2**-2494 overflows float64
    ph = (k * rise).astype(np.float32)
    assert np.abs(ph).max() < np.pi  # within one wrap per frame: the physics is unambiguous
    exam = mrtherm.load_exam(mag, ph, te_s=te, b0_t=b0, frame_time_s=60.0)
    result = mrtherm.process(exam, baseline_frames=1, drift_correction=False, max_sd_theory_c=1e9)
    out = result.save(tmp_path / "run", figures=False)
    img = nib.load(os.path.join(out, "dose_cem43.nii.gz"))
    dose = np.asarray(img.dataobj).transpose(2, 1, 0)
    assert img.get_data_dtype() == np.float64 and not np.isinf(dose).any()
    assert dose[0, 5, 5] > 1e50  # survives: would be inf in float32
    assert dose[1, 7, 7] == np.finfo(np.float64).max
    report = json.loads(open(os.path.join(out, "report.json")).read())
    assert report["results"]["dose_map"]["capped_voxels"] == 1
    assert any("capped" in w for w in report["warnings"])
