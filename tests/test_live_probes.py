"""Probe readings followed live: MR at a positioned probe against its readings frame by frame, as
``mrtherm run --probes`` compares them after the treatment, and a watched probe's alarm as its readings cross the
threshold.

The probe sits at the phantom's hottest voxel and reads the phantom's true temperature there (every 0.5 s, linear
between frames); its clock for the live service is the frames' DICOM acquisition time, worked out here with pydicom
and the standard library.
"""

import json
import os

import numpy as np
import pytest

import mrtherm
from mrtherm.thermometry.params import ThermometryParams

pytest.importorskip("pydicom")

SHAPE, FRAMES, BASELINE = (2, 40, 40), 14, 4


@pytest.fixture(scope="module")
def heated_dicom(tmp_path_factory):
    from live_tools import scanner_order
    from test_live_respiration import _first_frame_epoch_s

    from mrtherm.io.dicom.synth import write_dicom_exam
    ph = mrtherm.make_phantom(shape_zyx=SHAPE, voxel_mm=(4.0, 2.0, 2.0), n_frames=FRAMES, frame_time_s=2.0,
                              baseline_frames=BASELINE, sonication_s=(8.0, 20.0), peak_rise_c=25.0, seed=9)
    folder = write_dicom_exam(str(tmp_path_factory.mktemp("heated") / "dicom"), ph.magnitude, ph.phase_rad,
                              ph.affine, ph.te_s, ph.b0_t, ph.frame_times_s)
    files = scanner_order(folder)
    return ph, folder, [(p, open(p, "rb").read()) for p in files], _first_frame_epoch_s(files, SHAPE[0])


def _probe(ph, folder, t0):
    """The probe log (readings of the truth at the hottest voxel) and its positions file."""
    z, y, x = np.unravel_index(int(np.argmax(ph.truth_temperature_c.max(axis=0))), SHAPE)
    position = (ph.affine @ np.array([x, y, z, 1.0]))[:3]
    times = np.arange(0.0, ph.frame_times_s[-1] + 1e-9, 0.5)
    readings = np.interp(times, ph.frame_times_s, ph.truth_temperature_c[:, z, y, x])
    log = os.path.join(folder, f"probe_{t0:.0f}.csv")
    with open(log, "w", encoding="utf-8") as fh:
        fh.write("time_s,probe,temperature_c\n")
        fh.writelines(f"{t0 + t:.3f},P1,{v:.4f}\n" for t, v in zip(times, readings))
    pos = os.path.join(folder, "positions.json")
    with open(pos, "w", encoding="utf-8") as fh:
        json.dump({"probes": [{"name": "P1", "position_mm": position.tolist(), "watch": True}]}, fh)
    return log, pos, times, readings


def test_live_probe_against_mr_as_the_batch_analysis(heated_dicom, tmp_path):
    from mrtherm.app.driver import run
    from mrtherm.app.options import RunRequest
    from mrtherm.live.session import LiveSession
    ph, folder, files, t0 = heated_dicom
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    live_log, pos, times, readings = _probe(ph, str(log_dir), t0)
    params = ThermometryParams(baseline_frames=BASELINE)
    crossing = np.flatnonzero(readings >= params.alarm_temperature_c)
    assert crossing.size  # the watched probe must alarm
    session = LiveSession(tmp_path / "live", {"params": params, "slices": SHAPE[0], "probes": live_log,
                                              "probe_positions": pos})
    for path, data in files:
        assert session.receive(data, path) == 0
    session.close()
    with open(tmp_path / "live" / "report.json", encoding="utf-8") as fh:
        report = json.load(fh)
    live = report["sonications"][0]["probes"]["P1"]
    assert live["frames_compared"] == FRAMES
    batch_log = _probe(ph, str(log_dir), 0.0)[0]
    run(RunRequest(out=str(tmp_path / "batch"), dicom=folder, baseline_frames=BASELINE, probes=batch_log,
                   probe_positions=pos, no_figures=True, quiet=True))
    with open(tmp_path / "batch" / "report.json", encoding="utf-8") as fh:
        batch = next(p for p in json.load(fh)["probes"]["probes"] if p["name"] == "P1")["mr"]
    assert live["rmse_c"] == pytest.approx(batch["rmse_c"], rel=1e-6, abs=1e-6)
    assert live["bias_c"] == pytest.approx(batch["bias_c"], rel=1e-6, abs=1e-6)
    assert live["rmse_c"] < 2.0  # MR against the truth it read
    alarm = [a for a in report["alarms"] if a["structure"] == "probe P1" and a["quantity"] == "temperature"]
    assert len(alarm) == 1  # announced once, at the first reading over the threshold, on the frames' clock
    assert alarm[0]["time_s"] == pytest.approx(t0 + times[crossing[0]], abs=1e-3)
    assert alarm[0]["value"] == pytest.approx(readings[crossing[0]], abs=1e-3)
