"""``mrtherm live`` against a real pynetdicom client on 127.0.0.1: resume after SIGKILL, bad traffic, folder watch,
alarms, a 500-frame soak; the frame assembler and the treatment grid on their own."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import nibabel as nib
import numpy as np
import pydicom
import pytest

import mrtherm

from live_tools import (MRTHERM, associate, free_port, kill_leftovers, make_treatment, modified, popen_live, report,
                        rss_mb, scanner_order, send, start_live, stop_live, wait_frames)

pytest.importorskip("pynetdicom")


@pytest.fixture(autouse=True)
def _no_service_left_behind():
    yield
    kill_leftovers()


def _map(folder, name):
    return np.asarray(nib.load(os.path.join(folder, name)).dataobj)


def _batch(src, out, *extra):
    proc = subprocess.run(MRTHERM + ["run", "--dicom", str(src), "--out", str(out), "--quiet", "--no-figures", *extra],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_sigkill_mid_series_then_resume_gives_the_batch_dose_bit_for_bit(tmp_path):
    src, _ = make_treatment(tmp_path / "dicom", n_sonications=2)  # the second oblique and shifted
    files = scanner_order(src)
    out, port = tmp_path / "live", free_port()
    proc = start_live(port, out)
    assert set(send(files[: len(files) * 3 // 4], port)) == {0}
    wait_frames(out, 15)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    killed_at = report(out)["frames_processed"]
    assert killed_at < 24
    proc = start_live(port, out)
    assert set(send(files, port)) == {0}  # the scanner re-sends everything; duplicates are recognised
    wait_frames(out, 24)
    code, err = stop_live(proc)
    assert code == 0 and "Traceback" not in err
    r = report(out)
    assert r["frames_processed"] == 24 and r["resumed"] and r["images"]["duplicates"] >= len(files) * 3 // 4
    assert [s["frames_processed"] for s in r["sonications"]] == [12, 12]
    _batch(src, tmp_path / "batch")
    for name in ("dose_cem43.nii.gz", "tmax.nii.gz", "lesion_240.nii.gz", "sonication_01/dose_cem43.nii.gz",
                 "sonication_02/dose_cem43.nii.gz"):
        live, batch = _map(out, name), _map(tmp_path / "batch", name)
        assert np.array_equal(live, batch, equal_nan=True), name
    assert np.nanmax(_map(out, "dose_cem43.nii.gz")) > 240
    batch_report = report(tmp_path / "batch")
    assert batch_report["cumulative"]["lesion_volumes_ml"] == r["cumulative"]["lesion_volumes_ml"]


@pytest.mark.slow
def test_bad_traffic_is_refused_and_the_service_keeps_everything(tmp_path):
    src, _ = make_treatment(tmp_path / "dicom", n_sonications=1, n_frames=12)
    files = scanner_order(src)  # 12 frames x 3 slices x 2 components
    per_frame = 6
    out, port = tmp_path / "live", free_port()
    proc = start_live(port, out, "--allow-ae", "SCANNER,ROUTER", "--frame-timeout-s", "1")
    intruder = associate(port, "INTRUDER")
    assert not intruder.is_established  # association rejected: calling AE title not allowed
    assoc = associate(port)
    statuses = [int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in files[: 2 * per_frame]]
    assert set(statuses) == {0}
    bad = {
        "malformed": modified(files[0], PixelData=b"\x00\x01"),
        "ct": modified(files[0], Modality="CT"),
        "geometry": modified(files[0], Rows=16, Columns=64),
        "no repetition": modified(files[0], AcquisitionNumber=None),
    }
    got = {k: int(assoc.send_c_store(ds).Status) for k, ds in bad.items()}
    assert got == {"malformed": 0xC210, "ct": 0xA900, "geometry": 0xC211, "no repetition": 0xC212}
    frame3 = files[2 * per_frame: 3 * per_frame]
    for p in frame3[:3]:
        assoc.send_c_store(pydicom.dcmread(p))
    assoc.abort()  # aborted mid-frame: the three images already stored are kept
    rest = frame3[3:] + [p for p in files[3 * per_frame:] if p not in files[3 * per_frame: 4 * per_frame][:1]]
    assert set(send(rest, port, "ROUTER")) == {0}  # frame 4 never completes (one image never sent)
    deadline = time.time() + 60
    while time.time() < deadline and not (report(out) or {}).get("skipped_frames"):
        time.sleep(0.2)
    wait_frames(out, 11)
    code, err = stop_live(proc)
    assert code == 0 and "Traceback" not in err
    r = report(out)
    assert r["frames_processed"] == 11
    assert [(s["sonication"], s["repetition"]) for s in r["skipped_frames"]] == [(1, 4)]
    assert r["images"]["refused"] == {"0xC210": 1, "0xA900": 1, "0xC211": 1, "0xC212": 1}
    log = (out / "live.log").read_text()
    assert "rejected from INTRUDER" in log and "aborted" in log


@pytest.mark.slow
def test_folder_watch_waits_for_slowly_written_files(tmp_path):
    src, _ = make_treatment(tmp_path / "dicom", n_sonications=1, shape_zyx=(2, 24, 24), n_frames=10)
    files = scanner_order(src)
    watched, out = tmp_path / "export", tmp_path / "live"
    watched.mkdir()
    proc = popen_live("--watch", str(watched), "--out", str(out), "--settle-s", "0.6")
    for k, path in enumerate(files):
        dest = watched / f"img{k:04d}.dcm"
        data = open(path, "rb").read()
        if k % 7 == 0:  # written in three pieces with pauses shorter than the settle time
            with open(dest, "wb") as fh:
                for piece in (data[:200], data[200:600], data[600:]):
                    fh.write(piece)
                    fh.flush()
                    time.sleep(0.25)
        else:
            shutil.copyfile(path, dest)
    wait_frames(out, 10, timeout=90)
    code, err = stop_live(proc)
    assert code == 0 and "Traceback" not in err
    assert report(out)["images"]["refused"] == {}
    _batch(src, tmp_path / "batch")
    assert np.array_equal(_map(out, "dose_cem43.nii.gz"), _map(tmp_path / "batch", "dose_cem43.nii.gz"),
                          equal_nan=True)


@pytest.mark.slow
def test_alarm_reaches_log_report_and_alarm_command(tmp_path):
    src, ph = make_treatment(tmp_path / "dicom", n_sonications=1)
    labels = ph.labels.copy()
    peak = np.where(np.isin(labels, (1, 3, 12)), np.nan_to_num(ph.truth_temperature_c.max(axis=0)), -np.inf)
    z, y, x = np.unravel_index(int(np.argmax(peak)), labels.shape)
    labels[z, max(y - 1, 0): y + 2, max(x - 1, 0): x + 2] = 10  # spinal cord drawn at the hottest soft tissue
    from mrtherm.io.niftiio import save_volume
    save_volume(labels.astype(np.int16), ph.affine, tmp_path / "labels.nii.gz")
    sink = tmp_path / "alarms.jsonl"
    script = f"import sys; open({str(sink)!r}, 'a').write(sys.stdin.read() + chr(10))"
    out, port = tmp_path / "live", free_port()
    proc = start_live(port, out, "--labels", str(tmp_path / "labels.nii.gz"),
                      "--alarm-command", f"{sys.executable} -c \"{script}\"")
    assert set(send(scanner_order(src), port)) == {0}
    wait_frames(out, 12)
    deadline = time.time() + 30
    while time.time() < deadline and not (sink.exists() and sink.read_text().count("\n") >= 2):
        time.sleep(0.2)
    code, err = stop_live(proc)
    assert code == 0
    sent = [json.loads(line) for line in sink.read_text().splitlines()]
    assert {(a["structure"], a["quantity"]) for a in sent} >= {("spinal cord", "temperature"), ("spinal cord", "dose")}
    first_temp = next(a for a in sent if a["quantity"] == "temperature")
    assert first_temp["value"] >= 45.0 and first_temp["sonication"] == 1
    assert any(a["quantity"] == "temperature" for a in report(out)["alarms"])
    assert "ALARM spinal cord: temperature" in (out / "live.log").read_text()


@pytest.mark.slow
def test_soak_500_frames_memory_stays_flat(tmp_path):
    src, _ = make_treatment(tmp_path / "dicom", n_sonications=1, shape_zyx=(1, 16, 16), n_frames=500)
    files = scanner_order(src)
    out, port = tmp_path / "live", free_port()
    proc = start_live(port, out, "--quiet")
    rss = {}

    def sample():
        for n in (100, 250, 500):
            wait_frames(out, n, timeout=600)
            rss[n] = rss_mb(proc.pid)

    watcher = threading.Thread(target=sample)
    watcher.start()
    assert set(send(files, port)) == {0}
    watcher.join()
    code, _ = stop_live(proc)
    assert code == 0 and report(out)["frames_processed"] == 500
    print("soak RSS MB at frames 100/250/500:", rss)
    assert rss[500] - rss[100] < 25.0, rss


def _write_nifti_frames(folder, ph, start=0):
    """Each repetition as 3-D magnitude and phase (radians) NIfTI files with dcm2niix-style sidecars."""
    from mrtherm.io.niftiio import save_volume
    os.makedirs(folder, exist_ok=True)
    paths = []
    for t, time_s in enumerate(ph.frame_times_s):
        clock = 36000.0 + float(time_s)
        hh, mm, ss = int(clock // 3600), int(clock % 3600 // 60), clock % 60
        for role, data, series, it in (("mag", ph.magnitude, 5, "M"), ("ph", ph.phase_rad, 6, "P")):
            stem = os.path.join(folder, f"rep{t + 1:03d}_{role}")
            sidecar = {"ImageType": ["ORIGINAL", "PRIMARY", it, "ND"], "EchoTime": ph.te_s,
                       "MagneticFieldStrength": ph.b0_t, "SeriesNumber": series, "AcquisitionNumber": t + 1,
                       "AcquisitionTime": f"{hh:02d}:{mm:02d}:{ss:09.6f}", "Manufacturer": "Siemens"}
            with open(stem + ".json", "w") as fh:
                json.dump(sidecar, fh)
            save_volume(data[t].astype(np.float32), ph.affine, stem + ".nii.gz")
            paths.append(stem + ".nii.gz")
    return paths


def _run_batch(tmp_path, ph, *opts):
    """``mrtherm run`` on the phantom as 4-D NIfTI into tmp_path/batch."""
    from mrtherm.io.niftiio import save_volume
    save_volume(ph.magnitude, ph.affine, tmp_path / "mag.nii.gz", frame_time_s=3.0)
    save_volume(ph.phase_rad, ph.affine, tmp_path / "ph.nii.gz", frame_time_s=3.0)
    proc = subprocess.run(MRTHERM + ["run", "--magnitude", str(tmp_path / "mag.nii.gz"), "--phase",
                                     str(tmp_path / "ph.nii.gz"), "--te-ms", str(ph.te_s * 1e3), "--b0-t",
                                     str(ph.b0_t), "--out", str(tmp_path / "batch"), "--quiet", "--no-figures",
                                     *opts], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_folder_watch_takes_nifti_frames_with_sidecars(tmp_path):
    _, ph = make_treatment(tmp_path / "unused", n_sonications=0, n_frames=12)
    staging = tmp_path / "frames"
    paths = _write_nifti_frames(staging, ph)
    watched, out = tmp_path / "export", tmp_path / "live"
    watched.mkdir()
    proc = popen_live("--watch", str(watched), "--out", str(out), "--settle-s", "0.4")
    for path in paths:  # the image first, its sidecar a moment later, as a console may write them
        shutil.copyfile(path, watched / os.path.basename(path))
        time.sleep(0.05)
        shutil.copyfile(path[:-7] + ".json", watched / (os.path.basename(path)[:-7] + ".json"))
    wait_frames(out, 12, timeout=90)
    code, err = stop_live(proc)
    assert code == 0 and "Traceback" not in err
    _run_batch(tmp_path, ph)
    live, batch = _map(out, "dose_cem43.nii.gz"), _map(tmp_path / "batch", "dose_cem43.nii.gz")
    np.testing.assert_array_equal(np.isnan(live), np.isnan(batch))
    np.testing.assert_allclose(live, batch, rtol=1e-9, atol=1e-12)  # the affine is rebuilt from slice positions
    assert np.nanmax(live) > 240


@pytest.mark.slow
def test_enhanced_mr_files_and_a_planning_grid(tmp_path):
    """Philips enhanced files (all frames of a series in one multi-frame file) over C-STORE, onto a planning grid
    one voxel further along x: the cumulative dose is the sonication's dose moved by one voxel (by hand)."""
    src, ph = make_treatment(tmp_path / "dicom", n_sonications=1, vendor="philips-enhanced")
    planning = ph.affine.copy()
    planning[:3, 3] += planning[:3, 0]  # planning voxel (i, j, k) = sonication voxel (i + 1, j, k)
    from mrtherm.io.niftiio import save_volume
    save_volume(np.zeros(ph.labels.shape, np.float32), planning, tmp_path / "planning.nii.gz")
    out, port = tmp_path / "live", free_port()
    proc = start_live(port, out, "--treatment-grid", str(tmp_path / "planning.nii.gz"))
    assert set(send(scanner_order(src), port)) == {0}
    wait_frames(out, 12)
    code, err = stop_live(proc)
    assert code == 0 and "Traceback" not in err
    own = _map(out / "sonication_01", "dose_cem43.nii.gz")  # (x, y, z) on the sonication's grid
    cumulative = _map(out, "dose_cem43.nii.gz")
    np.testing.assert_array_equal(np.nan_to_num(cumulative[:-1]), np.nan_to_num(own[1:]))
    assert np.isnan(cumulative[-1]).all()  # beyond the sonication's slab: not measured
    assert report(out)["treatment_grid"]["source"].startswith("file ")


@pytest.mark.slow
def test_live_free_breathing_hybrid_equals_batch(tmp_path):
    """The motion modes sit in the Thermometer, so live gets them: a free-breathing exam frame by frame through
    --watch gives batch's tissue-coordinate dose with --reference hybrid (auto would pick it too)."""
    ph = mrtherm.make_phantom(shape_zyx=(2, 48, 48), voxel_mm=(4.0, 4.0, 4.0), n_frames=14, baseline_frames=6,
                              sonication_s=(18.0, 30.0), motion_mm=4.0, b0_breath_rad=0.6)
    paths = _write_nifti_frames(tmp_path / "frames", ph)
    watched, out = tmp_path / "export", tmp_path / "live"
    watched.mkdir()
    opts = ["--baseline-frames", "6", "--reference", "hybrid", "--target", "0,18,0"]  # the field of view's centre
    proc = popen_live("--watch", str(watched), "--out", str(out), "--settle-s", "0.3", *opts)
    for path in paths:
        shutil.copyfile(path[:-7] + ".json", watched / (os.path.basename(path)[:-7] + ".json"))
        shutil.copyfile(path, watched / os.path.basename(path))
    wait_frames(out, 14, timeout=90)
    code, err = stop_live(proc)
    assert code == 0 and "Traceback" not in err
    _run_batch(tmp_path, ph, *opts)
    son = json.load(open(out / "sonication_01" / "report.json"))
    assert son["reference"]["mode"] == "hybrid" and son["reference"]["registration"]["applied"]
    # the target, frame by frame, in the live report (current frame) and the sonication's, as in batch
    current = report(out)["current"]
    assert current["target"]["world_mm"] == [0.0, 18.0, 0.0] and isinstance(current["target"]["measured"], bool)
    batch_report = json.load(open(tmp_path / "batch" / "report.json"))
    assert son["target"]["measured_per_frame"] == batch_report["target"]["measured_per_frame"]
    assert len(son["target"]["measured_per_frame"]) == 14
    live, batch = _map(out, "dose_cem43.nii.gz"), _map(tmp_path / "batch", "dose_cem43.nii.gz")
    np.testing.assert_array_equal(np.isnan(live), np.isnan(batch))
    np.testing.assert_allclose(live, batch, rtol=1e-6, atol=1e-9)
