"""Test helpers for ``mrtherm live``: a synthetic DICOM treatment, a real pynetdicom client, the service process."""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pydicom

import mrtherm
from mrtherm.io.dicom.synth import write_dicom_exam

MRTHERM = [sys.executable, "-c", "import sys; from mrtherm.cli import main; sys.exit(main())"]
STARTED = []  # every service process a test started (the conftest fixture kills leftovers of failed tests)


def popen_live(*args):
    """``mrtherm live ARGS`` in its own process, remembered in STARTED."""
    proc = subprocess.Popen(MRTHERM + ["live", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    STARTED.append(proc)
    return proc


def kill_leftovers():
    """Kill service processes still running (a test failed before stopping its service)."""
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def oblique_shifted(affine, degrees=8.0, shift_mm=(3.0, -2.0, 2.5)):
    """``affine`` rotated about z by ``degrees`` and shifted: a later sonication's slices."""
    a = np.radians(degrees)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    out = rot @ affine
    out[:3, 3] += shift_mm
    return out


def make_treatment(folder, n_sonications=2, shape_zyx=(3, 32, 32), n_frames=12, vendor="siemens", oblique=True):
    """Write a treatment of ``n_sonications`` DICOM series pairs (5 min apart) of one patient, study and frame of
    reference; returns (folder, phantom)."""
    identity = {"study": pydicom.uid.generate_uid(), "frame_of_reference": pydicom.uid.generate_uid()}
    ph = mrtherm.make_phantom(shape_zyx=shape_zyx, n_frames=n_frames, frame_time_s=3.0, sonication_s=(16.0, 28.0),
                              voxel_mm=(4.0, 2.0, 2.0))
    for k in range(n_sonications):
        affine = ph.affine if k == 0 or not oblique else oblique_shifted(ph.affine)
        write_dicom_exam(os.path.join(folder, f"sonication{k + 1}"), ph.magnitude, ph.phase_rad, affine, ph.te_s,
                         ph.b0_t, ph.frame_times_s, vendor=vendor, start_s=300.0 * k, series_number=5 + 10 * k,
                         identity=identity)
    return folder, ph


def scanner_order(folder):
    """The DICOM files of ``folder`` in the order a scanner sends them (acquisition time, then series)."""
    def key(path):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return (str(ds.get("AcquisitionDate", "")) + str(ds.get("AcquisitionTime", "")), int(ds.SeriesNumber),
                int(ds.get("InstanceNumber", 0)))
    return sorted(glob.glob(os.path.join(folder, "**", "*.dcm"), recursive=True), key=key)


def modified(path, **tags):
    """The DICOM file at ``path`` as a new image (new SOP Instance UID) with ``tags`` changed."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def associate(port, ae_title="SCANNER"):
    """A real pynetdicom association to the service (MR Image Storage)."""
    from pynetdicom import AE
    ae = AE(ae_title=ae_title)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4.1")
    ae.add_requested_context("1.2.840.10008.1.1")
    return ae.associate("127.0.0.1", port, ae_title="MRTHERM")


def send(files, port, ae_title="SCANNER"):
    """C-STORE every file in one association; returns the statuses."""
    assoc = associate(port, ae_title)
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in files]
    assoc.release()
    return statuses


def start_live(port, out, *extra):
    """``mrtherm live --port`` in its own process; waits until it answers C-ECHO."""
    proc = popen_live("--port", str(port), "--out", str(out), *extra)
    deadline = time.time() + 60
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            assoc = associate(port)
            if assoc.is_established:
                assoc.send_c_echo()
                assoc.release()
                return proc
        except (OSError, RuntimeError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("mrtherm live did not start")


def stop_live(proc, timeout=60):
    """SIGTERM, then the exit status and stderr."""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def report(out):
    """report.json of a live folder (None before the first)."""
    path = os.path.join(out, "report.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def wait_frames(out, n, timeout=120, poll_s=0.1):
    """Wait until report.json counts ``n`` processed frames."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = report(out)
        if r is not None and r["frames_processed"] >= n:
            return r
        time.sleep(poll_s)
    raise AssertionError(f"{out}: fewer than {n} frames processed: {report(out) and report(out)['frames_processed']}")


def rss_mb(pid):
    """Resident memory of process ``pid``, MB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")
