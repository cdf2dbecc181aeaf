"""The pieces of ``mrtherm live`` on their own: frame assembly, series pairing, the treatment grid, kept images."""

import os
import shutil
import ssl
import subprocess
from types import SimpleNamespace as NS

import numpy as np
import pytest

from mrtherm.live.assembler import STATUS_DUPLICATE_SLOT, STATUS_GEOMETRY, FrameAssembler, RefusedImage
from mrtherm.live.spool import Spool
from mrtherm.app.treatment import time_above_s
from mrtherm.geometry import TreatmentGrid
from mrtherm.io.dicom.sonications import SeriesPairing

IOP = np.array([1.0, 0, 0, 0, 1.0, 0])


@pytest.fixture(autouse=True)
def _no_service_left_behind():
    yield
    from live_tools import kill_leftovers
    kill_leftovers()


def image(series, role, rep, z, rows=4, uid=None):
    """A minimal DICOM image record: slice z at z * 5 mm along the normal."""
    return NS(series_uid=series, role=role, temporal_index=rep, acquisition_number=None, orientation=IOP,
              position=np.array([0.0, 0.0, 5.0 * z]), rows=rows, cols=4, pixel_spacing=(1.0, 1.0),
              echo_number=1, te_ms=10.0, normal=np.cross(IOP[:3], IOP[3:]),
              where=uid or f"{series}/{role}/{rep}/{z}", sop_uid=uid or f"{series}.{role}.{rep}.{z}")


def frame_images(rep, order, series=("m", "p")):
    out = [image(series[0], "magnitude", rep, z) for z in range(3)] + \
          [image(series[1], "phase", rep, z) for z in range(3)]
    return [out[i] for i in order]


def px(value):
    return np.full((4, 4), value, np.float32)


def test_slices_and_components_in_any_order_make_one_frame_sorted_along_the_normal():
    asm = FrameAssembler(slices=3)
    for im in frame_images(1, [5, 0, 3, 2, 4, 1]):
        asm.add(im, px(10 * (im.role == "phase") + im.position[2] / 5), 0.0)
    (frame,) = asm.ready(0.0)
    assert frame.roles == ("magnitude", "phase") and frame.rep == 1
    np.testing.assert_array_equal(frame.a[:, 0, 0], [0, 1, 2])  # slices sorted along the normal
    np.testing.assert_array_equal(frame.b[:, 0, 0], [10, 11, 12])


def test_first_frame_waits_for_the_next_repetition_without_slices():
    asm = FrameAssembler()
    for im in frame_images(1, range(6)):
        asm.add(im, px(0), 0.0)
    assert asm.ready(0.0) == []  # a fourth slice may still come
    asm.add(frame_images(2, [0])[0], px(0), 0.0)
    assert [f.rep for f in asm.ready(0.0)] == [1]
    for im in frame_images(2, range(1, 6)):
        asm.add(im, px(0), 0.0)
    assert [f.rep for f in asm.ready(0.0)] == [2]  # later frames leave with their last image


def test_other_slice_position_or_grid_and_second_image_for_a_slot_are_refused():
    asm = FrameAssembler(slices=3)
    for im in frame_images(1, range(6)):
        asm.add(im, px(0), 0.0)
    asm.ready(0.0)
    stray = image("m", "magnitude", 2, 7)
    with pytest.raises(RefusedImage) as e:
        asm.add(stray, px(0), 0.0)
    assert e.value.status == STATUS_GEOMETRY
    with pytest.raises(RefusedImage) as e:
        asm.add(image("m", "magnitude", 2, 0, rows=8), np.zeros((8, 4), np.float32), 0.0)
    assert e.value.status == STATUS_GEOMETRY
    asm.add(image("m", "magnitude", 2, 0), px(0), 0.0)
    with pytest.raises(RefusedImage) as e:
        asm.add(image("m", "magnitude", 2, 0, uid="another-uid"), px(0), 0.0)
    assert e.value.status == STATUS_DUPLICATE_SLOT


def test_incomplete_frame_is_skipped_after_the_timeout_only_when_later_frames_wait():
    asm = FrameAssembler(slices=3, frame_timeout_s=5.0)
    for im in frame_images(1, range(5)):  # one image short
        asm.add(im, px(0), 0.0)
    assert asm.ready(100.0) == []  # nothing later: it waits
    for im in frame_images(2, range(6)):
        asm.add(im, px(0), 1.0)
    assert asm.ready(4.0) == []
    assert [f.rep for f in asm.ready(5.5)] == [2]
    assert asm.skipped == [{"sonication": 1, "repetition": 1, "images": 5, "images_expected": 6}]


def test_resume_drops_repetitions_already_processed():
    asm = FrameAssembler(resume={0: (3, 3)})
    for rep in (1, 2, 3):
        for im in frame_images(rep, range(6)):
            asm.add(im, px(rep), 0.0)
    assert [f.rep for f in asm.ready(0.0)] == [3]  # slices known from the checkpoint: no wait
    assert asm.ignored["already processed"] == 12


def test_series_pairing_siemens_pairs_and_ge_single_series():
    p = SeriesPairing()
    seq = [image("s5", "magnitude", 1, 0), image("loc", "magnitude", 1, 0, rows=8), image("s6", "phase", 1, 0),
           image("ge", "magnitude", 1, 0), image("ge", "phase", 1, 0)]
    got = [p.assign(im) for im in seq]
    assert got == [None, None, 0, None, 1]
    assert p.series_of(0) == ["s5", "s6"] and p.series_of(1) == ["ge"]  # the localiser (other grid) stays out


def test_treatment_grid_resamples_through_the_affines():
    grid = TreatmentGrid((2, 3, 4), np.diag([2.0, 2.0, 5.0, 1.0]), "test")
    vol = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    assert grid.resampler((2, 3, 4), np.diag([2.0, 2.0, 5.0, 1.0]))(vol, 1, 0.0) is vol  # identical grids
    shifted = np.diag([2.0, 2.0, 5.0, 1.0])
    shifted[0, 3] = 2.0  # the source grid starts one voxel further along x
    out = grid.resampler((2, 3, 4), shifted)(vol, 1, -1.0)
    np.testing.assert_array_equal(out[..., 1:], vol[..., :-1])  # hand check: value moves one voxel along x
    assert np.all(out[..., 0] == -1.0)  # outside the source
    half = shifted.copy()
    half[0, 3] = 1.0  # half a voxel: linear interpolation gives the mean of neighbours
    np.testing.assert_allclose(grid.resampler((2, 3, 4), half)(vol, 1, 0.0)[..., 1:], vol[..., :-1] + 0.5)


def test_time_above_threshold_of_the_peak_curve_is_exact_for_linear_segments():
    assert time_above_s([37.0, 47.0, 47.0, 37.0], [0.0, 10.0, 20.0, 30.0], 43.0) == pytest.approx(4 + 10 + 4)
    assert time_above_s([37.0, 45.0, 37.0], [0.0, 5.0, 10.0], 45.0) == 0.0  # touching is not above


def test_kept_image_names_never_come_from_tag_text(tmp_path):
    spool = Spool(tmp_path / "received")
    path = spool.write(b"data", "../../etc/passwd\\x")
    assert os.path.dirname(path) == str(tmp_path / "received")
    assert "passwd" not in os.path.basename(path) and ".." not in os.path.basename(path)
    assert Spool(tmp_path / "received").next_number == 2  # numbering continues after a restart


def _certificates(tmp_path):
    """Self-signed server and client certificates (PEM and key) in ``tmp_path``."""
    for name in ("server", "client"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=localhost", "-keyout", str(tmp_path / f"{name}.key"), "-out",
                        str(tmp_path / f"{name}.pem")], check=True, capture_output=True)


def _tls_client(tmp_path):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tmp_path / "server.pem"))
    ctx.check_hostname = False  # a self-signed test certificate without a subjectAltName; the chain is verified
    ctx.load_cert_chain(str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
    return ctx


@pytest.mark.slow
def test_tls_with_client_certificates_carries_a_treatment_and_plain_dicom_is_refused(tmp_path):
    pytest.importorskip("pynetdicom")
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    import time
    import pydicom
    from pynetdicom import AE
    from live_tools import free_port, make_treatment, associate, popen_live, scanner_order, stop_live, wait_frames
    _certificates(tmp_path)
    src, _ = make_treatment(tmp_path / "dicom", n_sonications=1, shape_zyx=(1, 16, 16), n_frames=6)
    port, out = free_port(), tmp_path / "live"
    proc = popen_live("--port", str(port), "--out", str(out), "--tls-cert", str(tmp_path / "server.pem"),
                      "--tls-key", str(tmp_path / "server.key"), "--tls-ca", str(tmp_path / "client.pem"))
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4")
    assoc = None
    for _ in range(100):
        assoc = ae.associate("127.0.0.1", port, ae_title="MRTHERM", tls_args=(_tls_client(tmp_path), None))
        if assoc.is_established:
            break
        time.sleep(0.2)
    assert assoc.is_established
    statuses = {int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in scanner_order(src)}
    assoc.release()
    assert statuses == {0}
    wait_frames(out, 6)
    assert not associate(port).is_established  # plain DICOM to a TLS service gets nowhere
    code, err = stop_live(proc)
    assert code == 0 and "Traceback" not in err


def test_live_command_line_mistakes_are_one_line_errors(tmp_path, capsys):
    from mrtherm.cli import main
    cases = [(["live", "--out", str(tmp_path / "o")], "--port"),
             (["live", "--watch", str(tmp_path), "--port", "104", "--out", str(tmp_path / "o")], "one of them"),
             (["live", "--watch", str(tmp_path / "o"), "--out", str(tmp_path / "o")], "watched folder"),
             (["live", "--port", "104", "--tls-cert", "c.pem", "--out", str(tmp_path / "o")], "--tls-key")]
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mrtherm: error:") and words in err[0], err


def test_resuming_with_other_options_is_refused(tmp_path):
    from mrtherm.errors import MrthermError
    from mrtherm.live.session import LiveSession
    from mrtherm.thermometry.params import ThermometryParams
    from live_tools import make_treatment, scanner_order
    src, _ = make_treatment(tmp_path / "dicom", n_sonications=1, shape_zyx=(1, 16, 16), n_frames=6)
    session = LiveSession(tmp_path / "out", {"params": ThermometryParams(baseline_frames=3), "slices": 1})
    for path in scanner_order(src):
        assert session.receive(open(path, "rb").read(), path) == 0
    session.close()
    with pytest.raises(MrthermError, match="other options"):
        LiveSession(tmp_path / "out", {"params": ThermometryParams(baseline_frames=4), "slices": 1})


def test_image_and_association_size_limits_answer_out_of_resources(tmp_path):
    import pydicom
    from mrtherm.live.scp import StorageService
    from mrtherm.live.session import LiveSession
    from mrtherm.thermometry.params import ThermometryParams
    from live_tools import associate, free_port, make_treatment, scanner_order
    files = scanner_order(make_treatment(tmp_path / "dicom", n_sonications=1, shape_zyx=(1, 16, 16), n_frames=6)[0])
    size = len(open(files[0], "rb").read())
    small = LiveSession(tmp_path / "small", {"params": ThermometryParams(), "max_image_bytes": size // 2})
    assert small.receive(open(files[0], "rb").read(), files[0]) == 0xA700
    assert small.counts["refused"] == {"0xA700": 1} and small.counts["received"] == 0
    small.close()
    session = LiveSession(tmp_path / "live", {"params": ThermometryParams()})
    port = free_port()
    service = StorageService(session, port, max_association_bytes=int(2.5 * (size + 200)))
    try:
        assoc = associate(port)
        statuses = [int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in files[:4]]
        assoc.release()
        assert statuses[:2] == [0, 0] and statuses[3] == 0xA700  # the association's budget is spent
        assoc = associate(port)  # a new association starts a new budget
        assert int(assoc.send_c_store(pydicom.dcmread(files[4])).Status) == 0
        assoc.release()
    finally:
        service.close()
        session.close()


def test_a_silent_peer_cannot_hold_a_tls_service_beyond_the_handshake_deadline(tmp_path):
    """pynetdicom handshakes TLS in its accepting thread: one silent TCP connection would hold every later one."""
    pytest.importorskip("pynetdicom")
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    import socket
    import time
    from pynetdicom import AE
    from mrtherm.live.scp import StorageService, tls_context
    from mrtherm.live.session import LiveSession
    from mrtherm.thermometry.params import ThermometryParams
    from live_tools import free_port
    _certificates(tmp_path)
    session = LiveSession(tmp_path / "live", {"params": ThermometryParams()})
    port = free_port()
    service = StorageService(session, port, ssl_context=tls_context(str(tmp_path / "server.pem"),
                                                                    str(tmp_path / "server.key")),
                             limits={"setup_s": 1.5})
    silent = socket.create_connection(("127.0.0.1", port))  # connects, never speaks TLS
    try:
        time.sleep(0.3)
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context("1.2.840.10008.1.1")
        ae.acse_timeout = ae.network_timeout = 10
        start = time.monotonic()
        assoc = ae.associate("127.0.0.1", port, ae_title="MRTHERM", tls_args=(_tls_client_no_cert(tmp_path), None))
        took = time.monotonic() - start
        assert assoc.is_established and took < 5.0, took
        assoc.release()
    finally:
        silent.close()
        service.close()
        session.close()


def _tls_client_no_cert(tmp_path):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tmp_path / "server.pem"))
    ctx.check_hostname = False
    return ctx
