"""The live service under the faults a hospital safety review tries (issue 29), each against a real pynetdicom
client on 127.0.0.1: a stray repetition number, another patient's or study's series, maps that cannot be written,
damaged checkpoints, a full disk, silent and trickling connections, a second service on the folder, a slice shifted
in its plane, temporary files of killed writes, duplicates across a restart.

The truth for the dose is the batch run (``mrtherm run --dicom``) of the same images: where the service keeps the
dose, live and batch agree bit for bit.
"""

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time

import nibabel as nib
import numpy as np
import pydicom
import pytest

from live_tools import associate, free_port, kill_leftovers, make_treatment, modified, popen_live, scanner_order, \
    start_live, stop_live

pytest.importorskip("pynetdicom")

N_FRAMES = 8


@pytest.fixture(autouse=True)
def _no_service_left_behind():
    yield
    kill_leftovers()


@pytest.fixture(scope="module")
def treatment(tmp_path_factory):
    """One sonication, 2 slices, 8 frames (32 files in scanner order) and its batch dose."""
    src, _ = make_treatment(tmp_path_factory.mktemp("dicom"), n_sonications=1, shape_zyx=(2, 16, 16),
                            n_frames=N_FRAMES)
    batch = tmp_path_factory.mktemp("batch") / "out"
    from mrtherm.cli import main
    assert main(["run", "--dicom", str(src), "--out", str(batch), "--quiet", "--no-figures"]) == 0
    return scanner_order(src), _dose(batch)


def _dose(folder):
    return np.asarray(nib.load(os.path.join(folder, "dose_cem43.nii.gz")).dataobj)


def _session(out, **extra):
    from mrtherm.live.session import LiveSession
    from mrtherm.thermometry.params import ThermometryParams
    return LiveSession(out, {"params": ThermometryParams(), "frame_timeout_s": 2.0, **extra})


def _service(session, **limits):
    from mrtherm.live.scp import StorageService
    return StorageService(session, free_port(), limits=limits or None)


def _store(port, datasets, ae_title="SCANNER"):
    """C-STORE datasets (paths or pydicom datasets) in one association; the statuses."""
    assoc = associate(port, ae_title)
    assert assoc.is_established
    out = [int(assoc.send_c_store(pydicom.dcmread(d) if isinstance(d, (str, os.PathLike)) else d).Status)
           for d in datasets]
    assoc.release()
    return out


def _wait(session, n, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and session.state.frames_processed < n:
        time.sleep(0.05)
    assert session.state.frames_processed >= n, session.state.frames_processed


def _abandon(session, service=None):
    """Stop as a SIGKILL would, as far as the disk is concerned: no final outputs, no last checkpoint."""
    if service is not None:
        service.close()
    session.stopping.set()
    session.wake.set()
    session.worker.join()
    session.writer.close()
    session.service_lock.release()


def _finish(out, files, **extra):
    """A service on ``out`` that receives every file, processes all frames and closes; its report."""
    session = _session(out, **extra)
    service = _service(session)
    try:
        assert set(_store(service.address[1], files)) == {0}
        _wait(session, N_FRAMES)
    finally:
        service.close()
        session.close()
    with open(os.path.join(out, "report.json"), encoding="utf-8") as fh:
        return json.load(fh)


# --------------------------------------------------------------------------- 1. a repetition far ahead


def test_a_repetition_two_billion_ahead_is_refused_and_never_kept(treatment, tmp_path):
    files, batch = treatment
    out = tmp_path / "live"
    session = _session(out)
    service = _service(session)
    stray = modified(files[0], TemporalPositionIdentifier=2147483647, AcquisitionNumber=2147483647)
    half = len(files) // 2
    assert set(_store(service.address[1], files[:half])) == {0}
    assert _store(service.address[1], [stray]) == [0xC214]
    assert set(_store(service.address[1], files[half:])) == {0}  # the service still answers
    _wait(session, N_FRAMES)
    service.close()
    session.close()
    assert len(os.listdir(out / "received")) == len(files)  # the stray image was not kept: no replay of it
    assert np.array_equal(_dose(out), batch, equal_nan=True)
    assert session.counts["refused"] == {"0xC214": 1}


def test_a_gap_of_a_million_missing_repetitions_is_skipped_in_one_step():
    from mrtherm.live.assembler import FrameAssembler
    from test_live_units import frame_images, px
    asm = FrameAssembler(slices=3, frame_timeout_s=5.0, max_repetitions_ahead=10 ** 7)
    for rep in (1, 1_000_000):
        for im in frame_images(rep, range(6)):
            asm.add(im, px(0), 0.0)
    assert [f.rep for f in asm.ready(1.0)] == [1]  # the gap has not timed out yet
    assert [f.rep for f in asm.ready(6.0)] == [1_000_000]
    assert asm.skipped == [{"sonication": 1, "repetition": 2, "last_repetition": 999_999, "images": 0,
                            "images_expected": 6 * 999_998}]


# --------------------------------------------------------------------------- 2. another patient, another study


def _exam(folder, files, **identity):
    """The treatment's images rewritten as another series (of another patient or study when asked)."""
    series = {}
    os.makedirs(folder)
    out = []
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series.setdefault(ds.SeriesInstanceUID, pydicom.uid.generate_uid())
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.SeriesNumber = int(ds.SeriesNumber) + 100
        for k, v in identity.items():
            setattr(ds, k, v)
        out.append(os.path.join(folder, f"{i:04d}.dcm"))
        ds.save_as(out[-1])
    return out


def test_another_patients_or_studys_series_mid_exam_is_refused_and_the_dose_is_the_batch_dose(treatment, tmp_path):
    files, batch = treatment
    other_patient = _exam(tmp_path / "p", files, PatientID="SOMEONE-ELSE", StudyInstanceUID=pydicom.uid.generate_uid())
    other_study = _exam(tmp_path / "s", files, StudyInstanceUID=pydicom.uid.generate_uid())
    out = tmp_path / "live"
    session = _session(out)
    service = _service(session)
    port, half = service.address[1], len(files) // 2
    assert set(_store(port, files[:half])) == {0}
    assert set(_store(port, other_patient[:12], "ROUTER")) == {0xC215}
    assert set(_store(port, other_study[:12], "ROUTER")) == {0xC216}
    assert set(_store(port, files[half:])) == {0}
    _wait(session, N_FRAMES)
    service.close()
    session.close()
    assert len(os.listdir(out / "received")) == len(files)  # none of them kept
    assert np.array_equal(_dose(out), batch, equal_nan=True)
    with open(out / "report.json", encoding="utf-8") as fh:
        r = json.load(fh)
    assert [s["sonication"] for s in r["sonications"]] == [1] and r["frames_processed"] == N_FRAMES
    assert r["identity"]["refused_images"] == 24 and len(r["identity"]["refused"]) == 24
    assert "SOMEONE-ELSE" not in json.dumps(r) and "SOMEONE-ELSE" not in (out / "received").as_posix()


def test_new_study_continues_the_treatment_in_a_new_study_of_the_same_patient_once(treatment, tmp_path):
    files, _ = treatment
    study2 = _exam(tmp_path / "s2", files, StudyInstanceUID=pydicom.uid.generate_uid(),
                   FrameOfReferenceUID=pydicom.uid.generate_uid())
    out = tmp_path / "live"
    session = _session(out, new_study=True)
    service = _service(session)
    port = service.address[1]
    assert set(_store(port, files)) == {0}
    _wait(session, N_FRAMES)
    assert set(_store(port, study2)) == {0}  # the console started a new study: taken, as --new-study asks
    assert _store(port, [modified(files[0])]) == [0xC216]  # the old study is over
    _wait(session, 2 * N_FRAMES)
    service.close()
    session.close()
    with open(out / "report.json", encoding="utf-8") as fh:
        r = json.load(fh)
    assert len(r["identity"]["new_studies"]) == 1 and r["frames_processed"] == 2 * N_FRAMES


# --------------------------------------------------------------------------- 3. maps that cannot be written


def test_maps_that_cannot_be_written_never_let_the_checkpoint_fall_behind(treatment, tmp_path):
    from mrtherm.live.state import TreatmentState
    files, batch = treatment
    out = tmp_path / "live"
    (out / "temperature.nii.gz").mkdir(parents=True)  # every write of this map fails
    session = _session(out)
    service = _service(session)
    assert set(_store(service.address[1], files[: len(files) * 3 // 4])) == {0}
    _wait(session, 4)
    time.sleep(0.5)
    _abandon(session, service)
    state, cp = TreatmentState.load(out / ".mrtherm-live", session.options)  # verified: arrays and JSON in step
    assert state.current_thermometer.frames_processed == cp["thermometer_frames"] >= 4
    r = json.loads((out / "report.json").read_text())  # the other maps and the report go on being written
    assert list(r["outputs_not_written"]) == ["temperature.nii.gz"] and (out / "dose_cem43.nii.gz").exists()
    shutil.rmtree(out / "temperature.nii.gz")
    r = _finish(out, files)  # the scanner re-sends everything
    assert r["frames_processed"] == N_FRAMES and r["resumed"]
    assert np.array_equal(_dose(out), batch, equal_nan=True)


# --------------------------------------------------------------------------- 4. damaged checkpoints


def _truncate(path):
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)


def _one_frame_ahead(path, keep_checksum):
    from mrtherm.live.state import json_sha256
    with open(path, encoding="utf-8") as fh:
        cp = json.load(fh)
    cp["frames_processed"] += 1
    cp["thermometer_frames"] += 1
    if not keep_checksum:
        cp["checksum"] = json_sha256(cp)  # a consistent-looking JSON: the frame counter still disagrees
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(cp, fh)


def _flip_a_byte(path):
    with open(path, "r+b") as fh:
        fh.seek(os.path.getsize(path) // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _rewritten_with_one_value_changed(path):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    key = next(k for k, v in arrays.items() if v.dtype.kind == "f" and v.size)
    arrays[key] = arrays[key].copy()
    arrays[key].flat[0] += 1.0
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


DAMAGES = {
    "thermometer byte flipped": lambda d: _flip_a_byte(next(d.glob("thermometer-*.npz"))),
    "cumulative rewritten": lambda d: _rewritten_with_one_value_changed(next(d.glob("cumulative-*.npz"))),
    "thermometer truncated": lambda d: _truncate(next(d.glob("thermometer-*.npz"))),
    "cumulative truncated": lambda d: _truncate(next(d.glob("cumulative-*.npz"))),
    "json one frame ahead": lambda d: _one_frame_ahead(d / "checkpoint.json", True),
    "json one frame ahead, checksum redone": lambda d: _one_frame_ahead(d / "checkpoint.json", False),
    "thermometer missing": lambda d: os.remove(next(d.glob("thermometer-*.npz"))),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_checkpoint_is_rebuilt_from_the_kept_images_never_resumed(treatment, tmp_path, damage, caplog):
    files, batch = treatment
    out = tmp_path / "live"
    session = _session(out)
    service = _service(session)
    assert set(_store(service.address[1], files[: len(files) * 3 // 4])) == {0}
    _wait(session, 5)
    _abandon(session, service)
    DAMAGES[damage](out / ".mrtherm-live")
    caplog.set_level(logging.WARNING, logger="mrtherm.live")
    r = _finish(out, files)
    assert any("checkpoint damaged" in rec.getMessage() for rec in caplog.records)
    assert r["rebuilt_from_kept_images"] is not None and r["frames_processed"] == N_FRAMES
    assert np.array_equal(_dose(out), batch, equal_nan=True)


def test_a_checkpoint_of_another_version_is_refused_in_one_line(treatment, tmp_path):
    from mrtherm.errors import MrthermError
    files, _ = treatment
    out = tmp_path / "live"
    session = _session(out)
    service = _service(session)
    _store(service.address[1], files)
    _wait(session, N_FRAMES)
    _abandon(session, service)
    path = out / ".mrtherm-live" / "checkpoint.json"
    cp = json.loads(path.read_text())
    path.write_text(json.dumps({**cp, "version": 2}))
    with pytest.raises(MrthermError, match="checkpoint version 2"):
        _session(out)


# --------------------------------------------------------------------------- 5. disk full


def test_an_image_that_cannot_be_kept_is_answered_as_failed_never_used_and_its_retry_accepted(treatment, tmp_path,
                                                                                               monkeypatch, caplog):
    from mrtherm.live.spool import Spool
    files, batch = treatment
    real_write, failing = Spool.write, set(range(9, 15))  # most of frames 3 and 4: half-received frames

    def write(self, data, uid, **kw):
        write.calls += 1
        if write.calls in failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data, uid, **kw)
    write.calls = 0
    monkeypatch.setattr(Spool, "write", write)
    caplog.set_level(logging.WARNING, logger="mrtherm.live")
    out = tmp_path / "live"
    session = _session(out)
    service = _service(session)
    statuses = _store(service.address[1], files)
    assert [i + 1 for i, s in enumerate(statuses) if s] == sorted(failing)
    assert {statuses[i - 1] for i in failing} == {0xA700}
    assert sum("disk full" in rec.getMessage() for rec in caplog.records) == len(failing)
    retry = _store(service.address[1], [files[i - 1] for i in sorted(failing)])  # the scanner retries
    assert retry == [0] * len(failing)
    _wait(session, N_FRAMES)
    service.close()
    session.close()
    assert np.array_equal(_dose(out), batch, equal_nan=True)
    assert session.counts == {"received": len(files), "duplicates": 0, "refused": {"0xA700": len(failing)}}


def _mount_tmpfs(folder, size_kb):
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def test_a_full_disk_refuses_with_out_of_resources_and_resumes_exactly_when_space_returns(treatment, tmp_path):
    files, batch = treatment
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, 4096)
    try:
        out = disk / "live"
        session = _session(out)
        service = _service(session)
        port = service.address[1]
        assert set(_store(port, files[:24])) == {0}
        _wait(session, 1)
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as fh:  # fill the disk to the last block
            try:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
            except OSError:
                pass
        full = _store(port, files[24:])
        assert set(full) <= {0xA700, 0} and 0xA700 in full
        os.remove(filler)  # space returns
        assert set(_store(port, files)) == {0}  # retries and the rest: accepted, no "second image" refusal
        _wait(session, N_FRAMES)
        service.close()
        session.close()
        assert np.array_equal(_dose(out), batch, equal_nan=True)
        assert session.counts["refused"] == {"0xA700": full.count(0xA700)}
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# --------------------------------------------------------------------------- 6. no lock-out


def _trickle(port, stop):
    """A peer that sends one byte of an association request every second and never finishes it."""
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            for byte in b"\x01\x00\x00\x00\x10\x00" + b"\x00" * 64:
                if stop.wait(1.0):
                    return
                s.sendall(bytes([byte]))
    except OSError:
        pass


def _seconds_to_associate(port, limit_s=20.0):
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        try:
            assoc = associate(port)
            if assoc.is_established:
                assoc.release()
                return time.monotonic() - start
        except (OSError, RuntimeError):
            pass
        time.sleep(0.2)
    return float("inf")


@pytest.mark.parametrize("attack", ["silent", "trickling"])
def test_ten_silent_or_trickling_connections_do_not_lock_the_scanner_out(tmp_path, attack):
    session = _session(tmp_path / "live")
    service = _service(session)
    port, stop, held = service.address[1], threading.Event(), []
    try:
        for _ in range(10):
            if attack == "silent":
                held.append(socket.create_connection(("127.0.0.1", port)))
            else:
                threading.Thread(target=_trickle, args=(port, stop), daemon=True).start()
        time.sleep(0.5)
        assert _seconds_to_associate(port) < 5.0  # the requirement: an association within 5 s
    finally:
        stop.set()
        for s in held:
            s.close()
        service.close()
        session.close()


# --------------------------------------------------------------------------- 7. one service per folder


def test_a_second_service_on_the_same_folder_is_refused_in_one_line(treatment, tmp_path):
    from mrtherm.errors import MrthermError
    files, _ = treatment
    out, port = tmp_path / "live", free_port()
    proc = start_live(port, out)
    assert set(_store(port, files)) == {0}
    second = popen_live("--port", str(free_port()), "--out", str(out))
    _, err = second.communicate(timeout=60)
    assert second.returncode != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "in use by another mrtherm live" in lines[0] and f"port {port}" in lines[0], err
    with pytest.raises(MrthermError, match=f"PID {proc.pid}"):
        _session(out)
    assert proc.poll() is None  # the first runs on
    code, err = stop_live(proc)
    assert code == 0 and "Traceback" not in err
    from mrtherm.live.lock import ServiceLock
    ServiceLock(out / ".mrtherm-live", out, {}).release()  # the lock went with the first service


# --------------------------------------------------------------------------- 8. full geometry


def test_a_slice_shifted_in_its_plane_is_refused(treatment, tmp_path):
    files, _ = treatment
    session = _session(tmp_path / "live")
    service = _service(session)
    assert set(_store(service.address[1], files[:8])) == {0}
    ds = pydicom.dcmread(files[9])
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    shifted = modified(files[9], ImagePositionPatient=list(np.asarray(ds.ImagePositionPatient, float)
                                                            + 10.0 * iop[:3]))
    assert _store(service.address[1], [shifted]) == [0xC211]
    service.close()
    session.close()


# --------------------------------------------------------------------------- 9. leftovers and exact counts


def test_temporary_files_of_killed_writes_are_removed_on_start(tmp_path):
    out = tmp_path / "live"
    leftovers = [out / ".report.json.tmp-123-456", out / "received" / ".00000001-abc.dcm.tmp-1-2",
                 out / ".mrtherm-live" / ".checkpoint.json.tmp-9-9", out / ".sonication_01.tmp-x1y2" / "tmax.nii.gz"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    (out / "report.json").write_text("{}")
    session = _session(out)
    session.close()
    assert not any(p.exists() for p in leftovers) and not (out / ".sonication_01.tmp-x1y2").exists()
    assert (out / "report.json").exists()


def test_duplicates_are_counted_exactly_across_a_restart(treatment, tmp_path):
    files, _ = treatment
    out = tmp_path / "live"
    session = _session(out)
    service = _service(session)
    assert set(_store(service.address[1], files[:20] + files[:5])) == {0}
    _abandon(session, service)
    r = _finish(out, files)  # the scanner sends everything again after the restart
    assert r["images"]["received"] == len(files) and r["images"]["duplicates"] == 5 + 20


def test_a_kept_image_refused_on_replay_is_set_aside_and_not_replayed_again(treatment, tmp_path, caplog):
    files, _ = treatment
    out = tmp_path / "live"
    session = _session(out)
    service = _service(session)
    assert set(_store(service.address[1], files[:8])) == {0}
    _abandon(session, service)
    # as an earlier version kept it: a stray repetition in the spool
    stray = modified(files[0], TemporalPositionIdentifier=2147483647, AcquisitionNumber=2147483647)
    stray.save_as(out / "received" / "00000999-0123456789abcdef0123.dcm")
    caplog.set_level(logging.WARNING, logger="mrtherm.live")
    again = _session(out)
    again.close()
    assert (out / "received" / "refused" / "00000999-0123456789abcdef0123.dcm").exists()
    assert sum("no longer usable" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    _session(out).close()
    assert not any("no longer usable" in r.getMessage() for r in caplog.records)


def test_sigkill_while_maps_cannot_be_written_then_a_full_resend_gives_the_batch_dose(treatment, tmp_path):
    files, batch = treatment
    out, port = tmp_path / "live", free_port()
    (out / "temperature.nii.gz").mkdir(parents=True)  # every write of this map fails
    proc = start_live(port, out)
    assert set(_store(port, files[: len(files) * 3 // 4])) == {0}
    deadline = time.time() + 120
    log = out / "live.log"
    while time.time() < deadline and log.read_text().count("outputs not written: temperature.nii.gz") < 3:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: whatever the checkpoint writer was doing
    proc.wait()
    shutil.rmtree(out / "temperature.nii.gz")
    proc = start_live(port, out)
    assert set(_store(port, files)) == {0}
    deadline = time.time() + 120
    while time.time() < deadline and json.loads((out / "report.json").read_text())["frames_processed"] < N_FRAMES:
        time.sleep(0.1)
    code, err = stop_live(proc)
    assert code == 0 and "Traceback" not in err
    assert np.array_equal(_dose(out), batch, equal_nan=True)
