"""Sending DICOM files to a PACS (mrtherm.export.send) against a real Orthanc, and against a scripted SCP.

The Orthanc tests skip when the ``Orthanc`` binary is missing (Debian package ``orthanc``, installed by
``tools/sysdeps.sh``). Every wait has a deadline; everything is written under pytest's tmp folders; every Orthanc
started is stopped in a ``finally``.
"""

import io
import os
import threading
import time

import numpy as np
import pytest

import mrtherm
from mrtherm.export.send import send_files, status_meaning
from mrtherm.io.dicom.synth import write_dicom_exam
from orthanc_tools import AE_TITLE, free_port, orthanc_available, start_orthanc

pydicom = pytest.importorskip("pydicom")
pynetdicom = pytest.importorskip("pynetdicom")

NO_ORTHANC = "Orthanc is not installed (Debian package 'orthanc'; tools/sysdeps.sh installs it)"
LOCALHOST = "127.0.0.1"


def _exam(folder, patient_id):
    ph = mrtherm.make_phantom(shape_zyx=(2, 16, 16), n_frames=2)
    out = write_dicom_exam(str(folder), ph.magnitude, ph.phase_rad, ph.affine, ph.te_s, ph.b0_t, ph.frame_times_s,
                           identity={"patient_id": patient_id})
    files = sorted(os.path.join(d, n) for d, _, names in os.walk(out) for n in names)
    assert len(files) == 8  # 2 slices x 2 frames x (magnitude, phase)
    return files


@pytest.fixture(scope="module")
def exam_files(tmp_path_factory):
    return _exam(tmp_path_factory.mktemp("send") / "dicom", "PHANTOM-A")


@pytest.fixture(scope="module")
def other_patient_files(tmp_path_factory):
    return _exam(tmp_path_factory.mktemp("send") / "dicom", "PHANTOM-B")


@pytest.fixture
def orthanc_factory(tmp_path):
    """Start Orthancs (keyword arguments of start_orthanc); all are stopped at the end of the test."""
    if not orthanc_available():
        pytest.skip(NO_ORTHANC)
    servers = []

    def start(**kwargs):
        servers.append(start_orthanc(tmp_path / f"orthanc{len(servers)}", **kwargs))
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def orthanc(orthanc_factory):
    return orthanc_factory()


def _uid(path):
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _one_line(text):
    return isinstance(text, str) and text and "\n" not in text and "Traceback" not in text


def test_series_is_stored_and_reads_back_identical(orthanc, exam_files):
    results = send_files(exam_files, LOCALHOST, orthanc.dicom_port, AE_TITLE, timeout_s=30.0)
    assert [r["path"] for r in results] == exam_files
    assert all(r["ok"] and r["status"] == 0 and r["error"] is None and r["warning"] is None for r in results)
    sent = {_uid(p) for p in exam_files}
    assert {r["sop_instance_uid"] for r in results} == sent
    assert orthanc.sop_instance_uids() == sent and len(orthanc.instances()) == len(exam_files)

    instance = orthanc.instances()[0]
    stored = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance)))
    original = pydicom.dcmread(next(p for p in exam_files if _uid(p) == stored.SOPInstanceUID))
    assert stored.SOPClassUID == original.SOPClassUID
    np.testing.assert_array_equal(stored.pixel_array, original.pixel_array)


def test_connection_refused_fails_every_file_after_the_retries(exam_files):
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    results = send_files(exam_files[:3], LOCALHOST, port, AE_TITLE, retries=2, retry_wait_s=0.1, timeout_s=5.0)
    assert time.monotonic() - t0 < 15.0
    for path, r in zip(exam_files[:3], results):
        assert not r["ok"] and r["status"] is None and _one_line(r["error"])
        assert r["error"].startswith(path) and f"{LOCALHOST}:{port}" in r["error"]
        assert "3 association attempt(s)" in r["error"] and "cannot connect" in r["error"]


def test_refusal_by_a_full_orthanc_names_the_file_and_status(orthanc_factory, exam_files, other_patient_files):
    # Orthanc 1.10: one patient allowed and that patient protected -> a new patient is refused with 0xA700
    server = orthanc_factory(max_patients=1)
    first = send_files(exam_files[:1], LOCALHOST, server.dicom_port, AE_TITLE)
    assert first[0]["ok"], first[0]["error"]
    server.protect_all_patients()
    t0 = time.monotonic()
    results = send_files(other_patient_files[:3], LOCALHOST, server.dicom_port, AE_TITLE, retries=3,
                         retry_wait_s=5.0)
    assert time.monotonic() - t0 < 5.0  # a failure status is the PACS's answer: not retried
    for path, r in zip(other_patient_files[:3], results):
        assert not r["ok"] and r["status"] == 0xA700 and _one_line(r["error"])
        assert r["error"] == (f"{path}: refused by {AE_TITLE} at {LOCALHOST}:{server.dicom_port}, "
                              "status 0xA700 (out of resources)")
    assert len(server.instances()) == 1


def test_non_dicom_file_gets_its_own_error_and_the_others_are_stored(orthanc, exam_files, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM\nat all\n")
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    paths = exam_files[:2] + [str(text)] + exam_files[2:4] + [str(empty)]
    results = send_files(paths, LOCALHOST, orthanc.dicom_port, AE_TITLE)
    assert [r["path"] for r in results] == paths
    for bad in (results[2], results[5]):
        assert not bad["ok"] and bad["status"] is None and _one_line(bad["error"])
        assert bad["error"].startswith(bad["path"]) and "not readable as DICOM" in bad["error"]
    good = [r for r in results if r not in (results[2], results[5])]
    assert all(r["ok"] for r in good)
    assert orthanc.sop_instance_uids() == {_uid(p) for p in exam_files[:4]}


class _ScriptedSCP:
    """A pynetdicom storage SCP that aborts the first association at its second C-STORE, then warns 0xB000."""

    def __init__(self):
        self.received = []
        self.associations = 0
        self.lock = threading.Lock()
        ae = pynetdicom.AE(ae_title="SCRIPTED")
        ae.supported_contexts = pynetdicom.StoragePresentationContexts
        handlers = [(pynetdicom.evt.EVT_C_STORE, self._store), (pynetdicom.evt.EVT_ESTABLISHED, self._established)]
        self.port = free_port()
        self.server = ae.start_server((LOCALHOST, self.port), block=False, evt_handlers=handlers)

    def _established(self, event):
        with self.lock:
            self.associations += 1

    def _store(self, event):
        with self.lock:
            self.received.append(str(event.request.AffectedSOPInstanceUID))
            first_association, n = self.associations == 1, len(self.received)
        if first_association and n == 2:
            event.assoc.abort()
            return 0xA700  # never arrives: the association is aborted
        return 0x0000 if first_association else 0xB000


def test_abort_mid_way_resends_only_the_unacknowledged_and_keeps_warnings(exam_files):
    scp = _ScriptedSCP()
    try:
        results = send_files(exam_files[:4], LOCALHOST, scp.port, "SCRIPTED", retries=1, retry_wait_s=0.1,
                             timeout_s=10.0)
    finally:
        scp.server.shutdown()
    uids = [_uid(p) for p in exam_files[:4]]
    assert scp.received == [uids[0], uids[1], uids[1], uids[2], uids[3]]  # file 1 acknowledged: not sent again
    assert scp.associations == 2
    assert all(r["ok"] and r["error"] is None for r in results)
    assert results[0]["status"] == 0 and results[0]["warning"] is None
    for r in results[1:]:
        assert r["status"] == 0xB000 and _one_line(r["warning"]) and r["warning"].startswith(r["path"])
        assert "0xB000 (coercion of data elements)" in r["warning"]


def test_status_meanings_follow_ps3_4_annex_b():
    assert status_meaning(0xA700) == status_meaning(0xA7FF) == "out of resources"
    assert status_meaning(0xA900) == "data set does not match SOP class"
    assert status_meaning(0xC123) == "cannot understand"
    assert status_meaning(0xB007) == "data set does not match SOP class"
    assert status_meaning(0x0000) == "success" and status_meaning(0x1234) == "unknown status"


def _tiny_file(folder, sop_class, i):
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = pydicom.dataset.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientID = "TINY"
    path = os.path.join(folder, f"{i:03d}.dcm")
    ds.save_as(path, enforce_file_format=True)
    return path


def test_more_sop_classes_than_128_contexts_take_two_associations(tmp_path):
    # 130 storage SOP classes (one tiny file each): pynetdicom requests at most 128 contexts per association
    classes = [str(cx.abstract_syntax) for cx in pynetdicom.presentation.AllStoragePresentationContexts[:130]]
    paths = [_tiny_file(str(tmp_path), uid, k) for k, uid in enumerate(classes)]
    ae = pynetdicom.AE(ae_title="MANY")
    ae.supported_contexts = pynetdicom.presentation.AllStoragePresentationContexts
    stored, established = [], []
    handlers = [(pynetdicom.evt.EVT_C_STORE, lambda event: stored.append(event.request.AffectedSOPClassUID) or 0),
                (pynetdicom.evt.EVT_ESTABLISHED, lambda event: established.append(len(event.assoc.accepted_contexts)))]
    port = free_port()
    server = ae.start_server((LOCALHOST, port), block=False, evt_handlers=handlers)
    try:
        results = send_files(paths, LOCALHOST, port, "MANY", retries=0, timeout_s=10.0)
    finally:
        server.shutdown()
    assert all(r["ok"] for r in results), [r["error"] for r in results if not r["ok"]][:3]
    assert sorted(established) == [2, 128] and sorted(map(str, stored)) == sorted(classes)
