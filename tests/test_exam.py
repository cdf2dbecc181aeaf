"""Reading exams: vendor phase scaling, sidecars, partners, frame times."""

import math
import os

import nibabel as nib
import numpy as np
import pytest

import mrtherm
from conftest import write_nifti
from mrtherm import InputFileError, ParameterError
from mrtherm.io import niftiio
from mrtherm.io.partners import find_partner
from mrtherm.io.phase_scale import detect_phase_scale, phase_to_radians

AFF = np.diag([2.0, 2.0, 4.0, 1.0])


def _series(nt=4, shape=(3, 8, 8), seed=0):
    rng = np.random.default_rng(seed)
    mag = rng.uniform(50, 100, size=(nt,) + shape).astype(np.float32)
    ph = rng.uniform(-np.pi, np.pi, size=(nt,) + shape).astype(np.float32)
    return mag, ph


_write = write_nifti


@pytest.mark.parametrize("fmt", ["radians", "siemens", "ge-mrad"])
def test_vendor_phase_recognised_and_converted(tmp_path, fmt):
    from mrtherm.phantom import _encode_phase
    mag, ph = _series()
    stored, scaling = _encode_phase(ph, fmt)
    p_mag = _write(tmp_path, "m.nii.gz", mag)
    p_ph = os.path.join(tmp_path, "p.nii.gz")
    niftiio.save_stored_integers(stored, AFF, p_ph, *(scaling or (1.0, 0.0)), frame_time_s=3.0) \
        if stored.dtype.kind == "i" else niftiio.save_volume(stored, AFF, p_ph, frame_time_s=3.0)
    exam = mrtherm.load_exam(p_mag, p_ph, te_s=0.01, b0_t=3.0)
    assert exam.phase_scale == fmt
    got = np.angle(exam.frame(2))
    err = np.angle(np.exp(1j * (got - ph[2])))
    tol = {"radians": 1e-5, "siemens": 2 * np.pi / 4096, "ge-mrad": 1e-3}[fmt]
    assert np.abs(err).max() <= tol


def test_siemens_header_scaling_is_nan_after_load_but_recognised(tmp_path):
    _, ph = _series()
    from mrtherm.phantom import _encode_phase
    stored, scaling = _encode_phase(ph, "siemens")
    p = os.path.join(tmp_path, "p.nii")
    niftiio.save_stored_integers(stored, AFF, p, *scaling)
    img = nib.load(p)
    assert math.isnan(float(img.header["scl_slope"]))  # the nibabel quirk
    assert (img.dataobj.slope, img.dataobj.inter) == (2.0, -4096.0)
    v = np.asarray(img.dataobj[..., 0])
    assert detect_phase_scale(v, 2.0, -4096.0, True, p) == "siemens"
    assert v.min() >= -4096 and v.max() <= 4094


def test_phase_scale_rules():
    assert detect_phase_scale(np.array([0.0, 4095.0, 17.0]), 1.0, 0.0, True, "x") == "siemens-raw"
    assert detect_phase_scale(np.array([-3141.0, 3140.0]), 1.0, 0.0, True, "x") == "ge-mrad"
    assert detect_phase_scale(np.array([0.0, 6.2]), 1.0, 0.0, False, "x") == "radians"
    np.testing.assert_allclose(phase_to_radians(np.array([0.0, 4095.0]), "siemens-raw"), [-np.pi, np.pi * 2047 / 2048])
    with pytest.raises(InputFileError, match="phase values span"):
        detect_phase_scale(np.array([-20000.0, 5.5]), 1.0, 0.0, False, "x")
    with pytest.raises(InputFileError, match="all NaN"):
        detect_phase_scale(np.full(4, np.nan), 1.0, 0.0, False, "x")


def test_override_flag_wins(tmp_path):
    mag, ph = _series()
    p_mag = _write(tmp_path, "m.nii", mag)
    p_ph = _write(tmp_path, "p.nii", (ph * 1000).round().astype(np.float32))  # mrad stored as float
    exam = mrtherm.load_exam(p_mag, p_ph, te_s=0.01, b0_t=3.0, phase_scale="ge-mrad")
    assert exam.phase_scale == "ge-mrad" and exam.provenance["phase_scale_source"] == "argument"


def test_sidecars_give_te_and_b0_and_flags_override(tmp_path):
    mag, ph = _series()
    p_mag = _write(tmp_path, "sub-01_part-mag_bold.nii.gz", mag, {"EchoTime": 0.02, "MagneticFieldStrength": 3})
    p_ph = _write(tmp_path, "sub-01_part-phase_bold.nii.gz", ph, {"EchoTime": 0.015, "MagneticFieldStrength": 3})
    exam = mrtherm.load_exam(p_mag)  # BIDS partner found
    assert exam.te_s == 0.015 and exam.b0_t == 3.0  # phase sidecar first
    assert exam.provenance["partner_found"] == {"role": "phase", "rules": ["BIDS part-mag/part-phase"]}
    assert any("magnitude echo time 20 ms" in w and "phase echo time 15 ms" in w for w in exam.warnings)
    exam = mrtherm.load_exam(phase=p_ph, te_s=0.01, b0_t=1.5)
    assert exam.te_s == 0.01 and exam.b0_t == 1.5 and exam.provenance["te_source"] == "argument"


def test_dcm2niix_ph_partner(tmp_path):
    mag, ph = _series()
    p_mag = _write(tmp_path, "thermo_5.nii", mag, {"EchoTime": 0.01, "MagneticFieldStrength": 3})
    _write(tmp_path, "thermo_5_ph.nii", ph, {"EchoTime": 0.01, "MagneticFieldStrength": 3})
    assert find_partner(p_mag, "phase")[0].endswith("thermo_5_ph.nii")
    assert find_partner(os.path.join(tmp_path, "thermo_5_ph.nii"), "magnitude")[0].endswith("thermo_5.nii")


def test_list_of_3d_frames_with_acquisition_times(tmp_path):
    mag, ph = _series(nt=3)
    clocks = ["10:00:00.0", "10:00:02.5", "10:00:05.5"]
    mags = [_write(tmp_path, f"m{t}.nii", mag[t], {"AcquisitionTime": clocks[t]}) for t in range(3)]
    phs = [_write(tmp_path, f"p{t}.nii", ph[t]) for t in range(3)]
    exam = mrtherm.load_exam(mags, phs, te_s=0.01, b0_t=3.0)
    np.testing.assert_allclose(exam.frame_times_s, [0.0, 2.5, 5.5])
    np.testing.assert_allclose(np.angle(exam.frame(1)), ph[1], atol=1e-5)


def test_real_imag_input(tmp_path):
    mag, ph = _series()
    s = mag * np.exp(1j * ph)
    p_re = _write(tmp_path, "re.nii", s.real.astype(np.float32))
    p_im = _write(tmp_path, "im.nii", s.imag.astype(np.float32))
    exam = mrtherm.load_exam(real=p_re, imag=p_im, te_s=0.01, b0_t=3.0)
    np.testing.assert_allclose(exam.frame(3), s[3], rtol=1e-5, atol=1e-4)


def test_time_step_units_and_tr_quirk(tmp_path):
    mag, ph = _series()
    p_mag = _write(tmp_path, "m.nii", mag, {"RepetitionTime": 0.025}, step=0.025)
    p_ph = _write(tmp_path, "p.nii", ph, {"RepetitionTime": 0.025, "EchoTime": 0.01, "MagneticFieldStrength": 3},
                  step=0.025)
    with pytest.raises(InputFileError, match="sequence TR"):
        mrtherm.load_exam(p_mag, p_ph)
    exam = mrtherm.load_exam(p_mag, p_ph, frame_time_s=2.0)
    np.testing.assert_allclose(exam.frame_times_s, [0, 2, 4, 6])


def test_flag_validation():
    mag, ph = _series()
    with pytest.raises(ParameterError, match="seconds"):
        mrtherm.load_exam(mag, ph, te_s=12.0, b0_t=3.0, frame_time_s=1.0)
    with pytest.raises(ParameterError, match="phase_scale"):
        mrtherm.load_exam(mag, ph, te_s=0.01, b0_t=3.0, frame_time_s=1.0, phase_scale="philips")
