"""The OpenIGTLink publisher against a real pyigtl client on 127.0.0.1: values, orientation, the IJK-to-RAS matrix,
alarms sent once, no blocking without a client or with one that does not read, the port freed on close."""

import math
import socket
import threading
import time

import numpy as np
import pytest

pyigtl = pytest.importorskip("pyigtl", reason="the igtl extra (pyigtl) is not installed")

from mrtherm.errors import MrthermError, ParameterError  # noqa: E402
from mrtherm.live import igtl  # noqa: E402
from mrtherm.live.igtl import IgtlPublisher  # noqa: E402

WAIT_S = 5.0  # every wait for a message is bounded by this

SQRT3 = math.sqrt(3.0)
# Rotation about z by 30 degrees, voxels 2 x 2 x 4 mm, voxel (0, 0, 0) at (10, -20, 30) mm RAS:
# column i = 2 * (cos 30, sin 30, 0) = (sqrt 3, 1, 0); column j = 2 * (-sin 30, cos 30, 0) = (-1, sqrt 3, 0);
# column k = 4 * (0, 0, 1).
OBLIQUE = np.array([[SQRT3, -1.0, 0.0, 10.0],
                    [1.0, SQRT3, 0.0, -20.0],
                    [0.0, 0.0, 4.0, 30.0],
                    [0.0, 0.0, 0.0, 1.0]])
ALARM = {"structure": "spinal cord", "label": 7, "quantity": "temperature", "value": 47.0, "threshold": 45.0,
         "unit": "C", "time_s": 20.0, "sonication": 1, "world_mm": [12.5, -3.0, 41.0]}
ALARM_TEXT = "ALARM spinal cord: temperature 47 C >= 45 C at t = 20.0 s (sonication 1)"


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Log(dict):
    """pyigtl's client keeps the latest message per device in a dict; this one also logs every message, in order."""

    def __init__(self):
        super().__init__()
        self.log = []
        self.lock = threading.Lock()

    def __setitem__(self, key, value):
        with self.lock:
            self.log.append(value)
        super().__setitem__(key, value)

    def of(self, device):
        with self.lock:
            return [m for m in self.log if m.device_name == device]


@pytest.fixture
def connect():
    """``connect(port)`` -> a started pyigtl client whose ``incoming_messages.of(device)`` lists all it received."""
    clients = []

    def make(port):
        client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=port, start_now=False)
        client.incoming_messages = _Log()
        client.start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.stop()


@pytest.fixture
def publisher():
    pubs = []

    def make(port=0):
        pub = IgtlPublisher(port)
        pubs.append(pub)
        return pub

    yield make
    for pub in pubs:
        pub.close()


def _wait(predicate, timeout=WAIT_S):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _maps(marker=0.0):
    temp = (37.0 + marker + np.arange(60, dtype=np.float32).reshape(3, 4, 5)).astype(np.float32)
    temp[0, 0, 0] = np.nan  # not measured
    dose = np.arange(60, dtype=np.float64).reshape(3, 4, 5) * 1e3 + marker
    dose[2, 3, 4] = np.nan
    return temp, dose


def test_images_arrive_with_their_values_orientation_and_ras_matrix(publisher, connect):
    pub = publisher()
    client = connect(pub.address[1])
    temp, dose = _maps()
    pub.publish(temp, OBLIQUE, dose, OBLIQUE, [])
    got_t = client.wait_for_message(igtl.DEVICE_TEMPERATURE, timeout=WAIT_S)
    got_d = client.wait_for_message(igtl.DEVICE_DOSE, timeout=WAIT_S)
    assert got_t is not None and got_d is not None
    assert got_t.image.dtype == np.float32 and got_d.image.dtype == np.float64
    np.testing.assert_array_equal(got_t.image, temp)  # NaN where NaN (assert_array_equal matches NaN with NaN)
    np.testing.assert_array_equal(got_d.image, dose)
    # Orientation: pyigtl's image is indexed [k, j, i]; voxel (i, j, k) = (x, y, z) holds input [z, y, x].
    for z, y, x in [(0, 0, 1), (2, 1, 3), (1, 3, 4), (2, 3, 0)]:
        assert got_t.image[z, y, x] == temp[z, y, x]
    assert got_t.image.shape == (3, 4, 5)
    for got in (got_t, got_d):
        assert got.world_coordinate_system == "ras"
        np.testing.assert_allclose(got.ijk_to_world_matrix, OBLIQUE, atol=1e-4)
    # The far corner voxel (i, j, k) = (4, 3, 2) at the position the affine gives to (x, y, z) = (4, 3, 2).
    corner = got_t.ijk_to_world_matrix @ [4, 3, 2, 1]
    np.testing.assert_allclose(corner[:3], [10 + 4 * SQRT3 - 3, -20 + 4 + 3 * SQRT3, 30 + 8], atol=1e-4)


def test_a_10_mb_dose_arrives_whole(publisher, connect):
    # pyigtl 0.3.4's own server drops the connection on such a message (one sendall under a 0.01 s timeout).
    pub = publisher()
    client = connect(pub.address[1])
    dose = np.random.default_rng(0).random((20, 256, 256))
    pub.publish(None, None, dose, OBLIQUE, [])
    got = client.wait_for_message(igtl.DEVICE_DOSE, timeout=WAIT_S)
    assert got is not None
    np.testing.assert_array_equal(got.image, dose)


def test_an_alarm_arrives_once_as_a_string_and_its_location_as_a_point(publisher, connect):
    pub = publisher()
    client = connect(pub.address[1])
    temp, dose = _maps()
    pub.publish(temp, OBLIQUE, dose, OBLIQUE, [ALARM])
    assert _wait(lambda: client.incoming_messages.of(igtl.DEVICE_DOSE))
    pub.publish(temp, OBLIQUE, dose + 1.0, OBLIQUE, [ALARM])  # the same alarm listed again
    assert _wait(lambda: len(client.incoming_messages.of(igtl.DEVICE_DOSE)) == 2)
    strings = client.incoming_messages.of(igtl.DEVICE_ALARM)
    assert [m.string for m in strings] == [ALARM_TEXT]
    assert strings[0].message_type == "STRING"
    points = client.incoming_messages.of(igtl.DEVICE_ALARM_POINT)
    assert len(points) == 1 and points[0].names == ["spinal cord temperature"]
    np.testing.assert_allclose(points[0].positions[0], ALARM["world_mm"], atol=1e-5)
    # The alarm came before the images of its publish.
    log = client.incoming_messages.log
    assert log.index(strings[0]) < log.index(client.incoming_messages.of(igtl.DEVICE_TEMPERATURE)[0])
    # A new alarm: only it is sent; the point list now holds both locations.
    dose_alarm = {"structure": "sciatic nerve", "quantity": "dose", "value": 250.0, "threshold": 240.0,
                  "unit": "CEM43 min", "time_s": 31.5, "sonication": 2, "world_mm": [0.0, 1.0, 2.0]}
    pub.publish(None, None, dose, OBLIQUE, [ALARM, dose_alarm])
    assert _wait(lambda: len(client.incoming_messages.of(igtl.DEVICE_DOSE)) == 3)
    assert [m.string for m in client.incoming_messages.of(igtl.DEVICE_ALARM)] == [
        ALARM_TEXT, "ALARM sciatic nerve: dose 250 CEM43 min >= 240 CEM43 min at t = 31.5 s (sonication 2)"]
    assert len(client.incoming_messages.of(igtl.DEVICE_ALARM_POINT)[-1].positions) == 2
    assert len(client.incoming_messages.of(igtl.DEVICE_TEMPERATURE)) == 2  # None sent no temperature


def test_publish_without_a_client_returns_at_once_and_the_next_client_gets_the_latest(publisher, connect):
    pub = publisher()
    big = np.zeros((20, 128, 128), np.float32)
    start = time.perf_counter()
    for marker in range(20):
        big[0, 0, 0] = marker
        pub.publish(big, OBLIQUE, big.astype(np.float64), OBLIQUE, [ALARM] if marker == 5 else [])
    assert time.perf_counter() - start < 2.0  # 20 publishes of 2 x 20 x 128 x 128 voxels: copies only
    assert pub.client_count == 0
    client = connect(pub.address[1])
    assert _wait(lambda: client.incoming_messages.of(igtl.DEVICE_DOSE))
    time.sleep(0.2)
    temps = client.incoming_messages.of(igtl.DEVICE_TEMPERATURE)
    assert len(temps) == 1 and temps[0].image[0, 0, 0] == 19  # only the latest was kept
    assert [m.string for m in client.incoming_messages.of(igtl.DEVICE_ALARM)] == [ALARM_TEXT]  # kept for it


def test_a_client_that_does_not_read_stalls_neither_the_caller_nor_the_others(publisher, connect, monkeypatch):
    pub = publisher()
    port = pub.address[1]
    stuck = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)  # connects, never reads
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    vanished = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    client = connect(port)
    assert _wait(lambda: pub.client_count == 3)
    vanished.close()
    temp = np.zeros((8, 96, 96), np.float32)
    slowest = 0.0
    try:
        for marker in range(1, 31):
            temp[0, 0, 0] = marker
            start = time.perf_counter()
            pub.publish(temp, OBLIQUE, temp.astype(np.float64), OBLIQUE, [])
            slowest = max(slowest, time.perf_counter() - start)
            time.sleep(0.01)
        assert slowest < 0.5
        assert _wait(lambda: any(m.image[0, 0, 0] == 30 for m in client.incoming_messages.of(igtl.DEVICE_DOSE)))
        assert _wait(lambda: pub.client_count == 2)  # the vanished one was dropped, the stuck one is still there
        monkeypatch.setattr(igtl, "STALL_S", 0.3)
        assert _wait(lambda: pub.client_count == 1)  # the stuck one is dropped once it has stalled that long
        temp[0, 0, 0] = 99
        pub.publish(temp, OBLIQUE, None, None, [])
        assert _wait(lambda: any(m.image[0, 0, 0] == 99 for m in client.incoming_messages.of(igtl.DEVICE_TEMPERATURE)))
    finally:
        stuck.close()


def test_close_frees_the_port_for_a_new_publisher(publisher, connect):
    port = _free_port()
    first = publisher(port)
    assert first.address == ("127.0.0.1", port)
    client = connect(port)
    temp, dose = _maps()
    first.publish(temp, OBLIQUE, dose, OBLIQUE, [])
    assert client.wait_for_message(igtl.DEVICE_DOSE, timeout=WAIT_S) is not None
    first.close()
    first.close()  # idempotent
    with pytest.raises(MrthermError, match="closed"):
        first.publish(temp, OBLIQUE, dose, OBLIQUE, [])
    second = publisher(port)  # binds although the first one's connection may linger in TIME_WAIT
    temp2, dose2 = _maps(marker=100.0)
    second.publish(temp2, OBLIQUE, dose2, OBLIQUE, [])
    got = connect(port).wait_for_message(igtl.DEVICE_DOSE, timeout=WAIT_S)  # pyigtl's client does not reconnect
    assert got is not None
    np.testing.assert_array_equal(got.image, dose2)


def test_a_port_in_use_is_a_one_line_error_and_port_zero_reports_the_chosen_port(publisher):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(MrthermError) as err:
            IgtlPublisher(port)
    assert "\n" not in str(err.value) and str(port) in str(err.value)
    pub = publisher(0)
    assert pub.address[0] == "127.0.0.1" and 0 < pub.address[1] < 65536
    with pytest.raises(ParameterError):
        IgtlPublisher(70000)


def test_bad_maps_are_one_line_errors_and_send_nothing(publisher, connect):
    pub = publisher()
    temp, dose = _maps()
    with pytest.raises(ParameterError, match="mrtherm-temperature"):
        pub.publish(temp[0], OBLIQUE, dose, OBLIQUE, [])
    with pytest.raises(ParameterError, match="mrtherm-dose affine"):
        pub.publish(temp, OBLIQUE, dose, OBLIQUE[:3], [ALARM])
    client = connect(pub.address[1])
    time.sleep(0.3)
    assert client.incoming_messages.log == []  # neither the maps nor the alarm of a rejected call


def test_alarm_text_is_one_ascii_line_even_for_odd_alarms():
    assert igtl.alarm_text(ALARM) == ALARM_TEXT
    odd = {"structure": "nerf sciatique\u00e9\nx", "quantity": "dose", "value": None, "threshold": 240.0,
           "time_s": 3.0}
    text = igtl.alarm_text(odd)
    assert text.isascii() and "\n" not in text and text.startswith("ALARM nerf sciatiquee x: dose")


def test_a_live_treatment_streams_its_current_temperature_and_dose_to_a_client(tmp_path, publisher, connect):
    """``mrtherm live --igtl-port``'s wiring: the session's frame listener publishes after every frame; at the end
    the client holds the temperature and dose the live folder holds, with their affines as IJK-to-RAS."""
    import nibabel as nib
    from live_tools import make_treatment, scanner_order
    from mrtherm.live.session import LiveSession
    from mrtherm.thermometry.params import ThermometryParams
    src, _ = make_treatment(tmp_path / "dicom", n_sonications=1, shape_zyx=(2, 20, 20), n_frames=8)
    pub = publisher(0)
    client = connect(pub.address[1])
    assert _wait(lambda: pub.client_count == 1)
    session = LiveSession(tmp_path / "live", {"params": ThermometryParams()})
    session.listeners.append(pub.publish)
    for path in scanner_order(src):
        assert session.receive(open(path, "rb").read(), path) == 0
    assert _wait(lambda: session.state.frames_processed == 8, timeout=120)
    session.close()
    for device, name in ((igtl.DEVICE_TEMPERATURE, "temperature.nii.gz"), (igtl.DEVICE_DOSE, "dose_cem43.nii.gz")):
        img = nib.load(tmp_path / "live" / name)
        want = np.transpose(np.asarray(img.dataobj), (2, 1, 0))
        assert _wait(lambda: any(np.array_equal(np.asarray(m.image, dtype=np.float64), want, equal_nan=True)
                                 for m in client.incoming_messages.of(device))), device
        last = client.incoming_messages.of(device)[-1]
        np.testing.assert_allclose(last.ijk_to_world_matrix, img.affine, atol=1e-3)
