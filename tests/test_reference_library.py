"""The baseline-library reference on free-breathing phantoms against their truth (issue 13, first mode)."""

import json
import os

import numpy as np
import pytest

import mrtherm
from mrtherm.cli import main

MOTION = dict(shape_zyx=(4, 96, 96), voxel_mm=(4.0, 2.0, 2.0), n_frames=40, frame_time_s=3.0, baseline_frames=16,
              sonication_s=(51.0, 71.0), motion_mm=4.0, b0_breath_rad=0.6)
TISSUE = (1, 3, 4, 12)  # soft tissue, muscle, skin, tumour: where PRF works


def _run(ph, reference):
    exam = mrtherm.load_exam(magnitude=ph.magnitude, phase=ph.phase_rad, te_s=ph.te_s, b0_t=ph.b0_t,
                             frame_times_s=ph.frame_times_s, affine=ph.affine)
    return mrtherm.process(exam, mrtherm.ThermometryParams(baseline_frames=16, reference=reference),
                           labels=ph.labels)


def _figures(ph, res):
    heating = ph.frame_times_s >= ph.info["sonication_s"][0]
    temp = np.asarray(res.temperature_c)[heating]
    truth = ph.truth_temperature_c[heating]
    sel = np.isfinite(temp) & np.isin(ph.labels, TISSUE)[None]
    rmse = float(np.sqrt(np.mean((temp[sel] - truth[sel]) ** 2)))
    peak_err = abs(float(np.nanmax(res.tmax_c)) - float(ph.truth_temperature_c.max()))
    # The lesion at image positions (no registration yet): against the truth dose accumulated at image positions,
    # in voxels where PRF can measure.
    vox_ml = float(np.prod(np.diag(ph.affine)[:3])) / 1000.0
    measurable = np.isfinite(np.asarray(res.dose_cem43_min))
    truth_ml = float(((ph.truth_dose_cem43_min >= 240) & measurable).sum() * vox_ml)
    return rmse, peak_err, res.lesion_volumes_ml[240.0] / truth_ml


@pytest.mark.slow
@pytest.mark.parametrize("period_s", [4.5, 4.0])
def test_library_follows_free_breathing_where_the_mean_baseline_fails(period_s):
    ph = mrtherm.make_phantom(**MOTION, breath_period_s=period_s)
    sigma_t = ph.info["predicted_sd_muscle_c"]
    mean_rmse, mean_peak, mean_ratio = _figures(ph, _run(ph, "mean"))
    res = _run(ph, "library")
    rmse, peak_err, ratio = _figures(ph, res)
    print(f"period {period_s} s: mean RMSE {mean_rmse:.2f} C, peak error {mean_peak:.1f} C, lesion x{mean_ratio:.1f};"
          f" library RMSE {rmse:.2f} C ({rmse / sigma_t:.1f} sigma_T), peak error {peak_err:.2f} C, lesion x{ratio:.2f}")
    assert mean_rmse > 3.0 and mean_peak > 5.0  # the failure the library must fix
    assert rmse < 2.5 * sigma_t and peak_err < 1.0 and 0.75 < ratio < 1.25
    assert np.isfinite(res.report["results"]["max_dose_cem43_min"])
    # each frame paired with a baseline frame in the same breathing state (the bellows signal is the truth)
    chosen = np.asarray(res.report["reference"]["entry_per_frame"])
    np.testing.assert_allclose(ph.respiration[chosen], ph.respiration, atol=0.02)
    assert not np.any(chosen[:16] == np.arange(16))  # baseline frames leave themselves out


def test_library_on_a_static_exam_costs_the_noise_of_one_baseline_frame():
    """One baseline frame as reference instead of the mean of N: the SD grows by sqrt(2 / (1 + 1/N)) (by hand:
    1.33 for N = 8); which is why ``mean`` stays the default for exams that do not move."""
    ph = mrtherm.make_phantom(shape_zyx=(4, 96, 96), n_frames=30, baseline_frames=8, sonication_s=(27.0, 47.0))
    mean_rmse, mean_peak, _ = _figures_static(ph, _run_static(ph, "mean"))
    rmse, peak_err, _ = _figures_static(ph, _run_static(ph, "library"))
    assert rmse / mean_rmse == pytest.approx(np.sqrt(2.0 / (1.0 + 1.0 / 8)), rel=0.1)
    assert peak_err < mean_peak + 0.5


def _run_static(ph, reference):
    exam = mrtherm.load_exam(magnitude=ph.magnitude, phase=ph.phase_rad, te_s=ph.te_s, b0_t=ph.b0_t,
                             frame_times_s=ph.frame_times_s, affine=ph.affine)
    return mrtherm.process(exam, mrtherm.ThermometryParams(baseline_frames=8, reference=reference), labels=ph.labels)


def _figures_static(ph, res):
    temp = np.asarray(res.temperature_c)
    sel = np.isfinite(temp) & np.isin(ph.labels, TISSUE)[None]
    rmse = float(np.sqrt(np.mean((temp[sel] - ph.truth_temperature_c[sel]) ** 2)))
    return rmse, abs(float(np.nanmax(res.tmax_c)) - float(ph.truth_temperature_c.max())), None


def test_library_state_resumes_bit_identically(tmp_path):
    ph = mrtherm.make_phantom(shape_zyx=(2, 48, 48), voxel_mm=(4.0, 4.0, 4.0), n_frames=14, baseline_frames=6,
                              sonication_s=(18.0, 30.0), motion_mm=4.0)
    frames = [(ph.magnitude[t], ph.phase_rad[t], True) for t in range(14)]
    params = mrtherm.ThermometryParams(baseline_frames=6, reference="library")
    whole = mrtherm.Thermometer(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t, frames[:6], params)
    for f, t in zip(frames, ph.frame_times_s):
        whole.update(f, t)
    part = mrtherm.Thermometer(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t, frames[:6], params)
    for f, t in zip(frames[:9], ph.frame_times_s[:9]):
        part.update(f, t)
    resumed = mrtherm.Thermometer.load_state(part.save_state(os.path.join(tmp_path, "state.npz")))
    for f, t in zip(frames[9:], ph.frame_times_s[9:]):
        resumed.update(f, t)
    np.testing.assert_array_equal(np.asarray(resumed.dose_cem43_min), np.asarray(whole.dose_cem43_min))
    assert resumed.reference_choices == whole.reference_choices


def test_reference_flag_and_report(tmp_path):
    assert main(["phantom", "--motion", "--out", str(tmp_path / "ph")]) == 0
    ph = tmp_path / "ph"
    assert main(["run", "--magnitude", str(ph / "magnitude.nii.gz"), "--phase", str(ph / "phase.nii.gz"),
                 "--baseline-frames", "16", "--reference", "library", "--out", str(tmp_path / "run"), "--quiet",
                 "--no-figures"]) == 0
    report = json.load(open(tmp_path / "run" / "report.json"))
    ref = report["reference"]
    assert ref["mode"] == "library" and ref["entries"] == 16 and len(ref["entry_per_frame"]) == 50
    assert 0.5 < ref["median_match_ratio"] < 1.5  # as good as the noise allows
    assert any("every baseline frame" in rule for rule in report["mask"]["rules"])
    with pytest.raises(mrtherm.errors.ParameterError, match="reference"):
        mrtherm.ThermometryParams(reference="navigator").validate()


def test_auto_picks_the_library_for_free_breathing_and_the_mean_for_a_still_exam():
    moving = mrtherm.make_phantom(**{**MOTION, "n_frames": 20, "sonication_s": (51.0, 57.0)})
    still = mrtherm.make_phantom(shape_zyx=(4, 96, 96), n_frames=12, baseline_frames=8, sonication_s=(27.0, 33.0))
    params = mrtherm.ThermometryParams(baseline_frames=8)  # reference="auto" is the default
    assert params.reference == "auto"
    for ph, used in ((moving, "library"), (still, "mean")):
        frames = [(ph.magnitude[t], ph.phase_rad[t], True) for t in range(8)]
        th = mrtherm.Thermometer(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t, frames, params)
        decision = th.reference_decision
        assert decision["used"] == used and decision["asked"] == "auto", decision
        assert ("move" in decision["why"]) == (used == "library")
    # on the still exam auto is the mean, to the bit
    exam = mrtherm.load_exam(magnitude=still.magnitude, phase=still.phase_rad, te_s=still.te_s, b0_t=still.b0_t,
                             frame_times_s=still.frame_times_s, affine=still.affine)
    a = mrtherm.process(exam, mrtherm.ThermometryParams(baseline_frames=8))
    b = mrtherm.process(exam, mrtherm.ThermometryParams(baseline_frames=8, reference="mean"))
    np.testing.assert_array_equal(np.asarray(a.dose_cem43_min), np.asarray(b.dose_cem43_min))
    assert a.report["reference"]["decision"]["used"] == "mean"
