"""A respiratory log followed live: library entries are matched on the signal as ``mrtherm run --respiration``
matches them on the same images, frames the log does not (yet) reach are matched on the image, and the frames
matched each way are counted.

The log is the phantom's own bellows signal, ``r(t) = (1 - cos(2 pi t / period)) / 2``, sampled every 50 ms; its
clock for the live service is the frames' DICOM acquisition time, worked out here from the files with pydicom and
the standard library (not with mrtherm's parser).
"""

import calendar
import datetime
import json
import os

import numpy as np
import pytest

import mrtherm
from mrtherm.thermometry.params import ThermometryParams

pydicom = pytest.importorskip("pydicom")

SHAPE, FRAMES, BASELINE, PERIOD_S = (2, 40, 40), 18, 8, 4.5


@pytest.fixture(scope="module")
def breathing_dicom(tmp_path_factory):
    from live_tools import scanner_order

    from mrtherm.io.dicom.synth import write_dicom_exam
    ph = mrtherm.make_phantom(shape_zyx=SHAPE, voxel_mm=(4.0, 2.0, 2.0), n_frames=FRAMES, frame_time_s=1.0,
                              baseline_frames=BASELINE, sonication_s=(10.0, 16.0), peak_rise_c=20.0, seed=5,
                              motion_mm=0.0, b0_breath_rad=1.2, breath_period_s=PERIOD_S)
    folder = write_dicom_exam(str(tmp_path_factory.mktemp("breathing") / "dicom"), ph.magnitude, ph.phase_rad,
                              ph.affine, ph.te_s, ph.b0_t, ph.frame_times_s)
    files = scanner_order(folder)
    return ph, folder, [(p, open(p, "rb").read()) for p in files], _first_frame_epoch_s(files, SHAPE[0])


def _first_frame_epoch_s(files, n_slices):
    """Mean acquisition time of the first frame's images, s since 1970 (DICOM DA + TM, no time zone)."""
    stamps = []
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        moment = datetime.datetime.strptime(str(ds.AcquisitionDate) + str(ds.AcquisitionTime).split(".")[0],
                                            "%Y%m%d%H%M%S")
        frac = float("0." + str(ds.AcquisitionTime).split(".")[1]) if "." in str(ds.AcquisitionTime) else 0.0
        stamps.append(calendar.timegm(moment.timetuple()) + frac)
    stamps = np.sort(np.asarray(stamps))
    return float(stamps[: 2 * n_slices].mean())  # magnitude and phase of each slice of the first frame


def _write_log(path, t0, until_s):
    t = np.arange(-1.0, until_s, 0.05)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("time_s\trespiration\n")
        for ti in t:
            fh.write(f"{t0 + ti:.3f}\t{(1 - np.cos(2 * np.pi * ti / PERIOD_S)) / 2:.6f}\n")
    return str(path)


def _live(out, log, files):
    from mrtherm.live.session import LiveSession
    session = LiveSession(out, {"params": ThermometryParams(baseline_frames=BASELINE, reference="library"),
                                "slices": SHAPE[0], "respiration": log})
    for path, data in files:
        assert session.receive(data, path) == 0
    session.close()
    with open(os.path.join(out, "report.json"), encoding="utf-8") as fh:
        return json.load(fh)["sonications"][0]


def test_live_matches_on_the_log_as_the_batch_run_does(breathing_dicom, tmp_path):
    import nibabel as nib

    from mrtherm.app.driver import run
    from mrtherm.app.options import RunRequest
    ph, folder, files, t0 = breathing_dicom
    son = _live(tmp_path / "live", _write_log(tmp_path / "live.tsv", t0, FRAMES + 1.0), files)
    assert son["respiration"]["on_signal"] is True
    assert son["respiration"]["frames_matched_on_signal"] == FRAMES and son["respiration"]["frames_matched_on_image"] == 0
    run(RunRequest(out=str(tmp_path / "batch"), dicom=folder, baseline_frames=BASELINE, reference="library",
                   respiration=_write_log(tmp_path / "batch.tsv", 0.0, FRAMES + 1.0), no_figures=True, quiet=True))
    with open(tmp_path / "batch" / "report.json", encoding="utf-8") as fh:
        assert json.load(fh)["reference"]["navigator"] is True
    live_dose = np.asarray(nib.load(str(tmp_path / "live" / "dose_cem43.nii.gz")).dataobj)
    batch_dose = np.asarray(nib.load(str(tmp_path / "batch" / "dose_cem43.nii.gz")).dataobj)
    np.testing.assert_allclose(live_dose, batch_dose, rtol=1e-5, atol=1e-7, equal_nan=True)
    assert son["peak_temperature_c"] > 45.0


def test_frames_beyond_the_log_are_matched_on_the_image(breathing_dicom, tmp_path):
    _, _, files, t0 = breathing_dicom
    covered = 12  # the log stops after frame 12 (the monitor lags or stopped): the rest on the image
    son = _live(tmp_path / "live", _write_log(tmp_path / "short.tsv", t0, covered - 0.5), files)
    resp = son["respiration"]
    assert resp["on_signal"] is True
    assert resp["frames_matched_on_signal"] == covered and resp["frames_matched_on_image"] == FRAMES - covered
    assert son["frames_processed"] == FRAMES


def test_a_log_missing_the_baseline_means_image_matching_with_a_warning(breathing_dicom, tmp_path, caplog):
    import logging
    _, _, files, _ = breathing_dicom
    caplog.set_level(logging.WARNING, logger="mrtherm.live")
    son = _live(tmp_path / "live", str(tmp_path / "absent.tsv"), files)
    assert son["respiration"]["on_signal"] is False and son["respiration"]["frames_matched_on_image"] == FRAMES
    said = [r.getMessage() for r in caplog.records if "respiration log" in r.getMessage()]
    assert len(said) == 1 and "matched on the image" in said[0]  # said once, not per frame
