"""Live thermometry to 3D Slicer over OpenIGTLink: mrtherm is the server, Slicer's OpenIGTLinkIF module the client.

Start an :class:`IgtlPublisher` on a port, add a connector in Slicer (OpenIGTLinkIF, type *Client*, the same host
and port, default 18944 in Slicer) and every :meth:`IgtlPublisher.publish` shows up in the scene:

``mrtherm-temperature``
    IMAGE, float32 (IGTL scalar type 10), degrees Celsius; a scalar volume node of that name.
``mrtherm-dose``
    IMAGE, float64 (type 11, which Slicer's converter maps to ``VTK_DOUBLE``), CEM43 minutes. Kept in float64 rather
    than narrowed: pyigtl packs any float64 array as it is, and the dose of a long sonication spans many decades.
``mrtherm-alarm``
    STRING, one per alarm: the line of :func:`mrtherm.thermometry.watch.format_alarm` (the same words as the
    session's log) followed by ``(sonication N)``; folded to ASCII (see :func:`alarm_text`). A text node.
``mrtherm-alarm-point``
    POINT, only for alarms that carry ``world_mm``: every such alarm so far in one message (Slicer's converter
    replaces the points of its markups node with each POINT message it receives, so one point per message would
    show only the newest), named ``"<structure> <quantity>"``, red.

Coordinates. The matrix of an IMAGE message is sent as RAS: the volume's own NIfTI-style affine (voxel (x, y, z)
-> world RAS+ mm) goes out unchanged as the IJK-to-RAS matrix, with i = x, j = y, k = z, and the message's
coordinate-system byte says RAS (1). Slicer's receiver never reads that byte: OpenIGTLinkIO's
``igtlioImageConverter::IGTLImageToVTKTransform`` hands the message matrix to
``igtlioConverterUtilities::IGTLTransformToVTKTransform``, whose output is used directly as the volume node's
``SetIJKToRASMatrix`` in SlicerOpenIGTLink's ``vtkMRMLIGTLConnectorNode`` (github.com/IGSIO/OpenIGTLinkIO,
Converter/igtlioImageConverter.cxx and igtlioConverterUtilities.cxx; github.com/openigtlink/SlicerOpenIGTLink,
OpenIGTLinkIF/MRML/vtkMRMLIGTLConnectorNode.cxx, read at their 2025 heads). So the matrix must already be RAS; an
LPS matrix (pyigtl's default label) would show the volume turned 180 degrees about the S axis (x and y negated).
NIfTI's world space is RAS+ too, so no axis flip is needed. POINT positions are likewise used as RAS by that
connector node. The protocol puts an image's position at its centre voxel, not at voxel 0: pyigtl does that shift
both ways, and the matrix travels as float32 (the protocol's type), so positions agree to float32 precision (about
1e-5 mm at 100 mm).

NaN. Voxels that were not measured are NaN in both maps and are sent as NaN (IEEE 754 float on the wire, copied
byte for byte into the vtkImageData): nothing else in the volume could mean "not measured" without being a
temperature or a dose. VTK's scalar-range computation skips NaN (Kitware/VTK, Common/Core/vtkDataArrayPrivate.txx),
so Slicer's automatic window/level comes from the measured voxels; threshold the volume to hide the others.

Delivery. A background thread serves any number of clients (at most :data:`MAX_CLIENTS` at once) with
non-blocking sockets, so :meth:`IgtlPublisher.publish` only validates, copies the arrays and returns:

- images are *latest only*: the publisher keeps the last temperature and dose volume; a client that connects
  gets them at once, and one that is still receiving an older volume gets the newest next, skipping those in
  between. With no client connected nothing is sent and nothing piles up.
- alarms are *never dropped*: each alarm (key: sonication, structure, quantity -- the session's key) is packed
  once, at the first :meth:`IgtlPublisher.publish` that lists it, and every connection receives every alarm once,
  in order, before any newer image: a client that connects late (or reconnects) is first sent the alarms raised so
  far (the last :data:`MAX_ALARMS_KEPT`).
- a client that stops reading keeps at most one message in flight and is closed after :data:`STALL_S` seconds
  without progress; a vanished client is closed at end of stream or at its socket's first error. Neither slows
  the caller or the other clients. Messages from the client (Slicer may send some) are read and ignored.

Why not ``pyigtl.OpenIGTLinkServer``: pyigtl 0.3.4's server sends each message with one ``sendall`` under a
0.01 s socket timeout, so a volume of a few MB (20 x 256 x 256 float64, tried on loopback with pyigtl's own
client) times out half sent and drops the connection; it queues up to 100 messages while nobody is connected and
then drops the oldest (alarms too); it installs SIGINT/SIGTERM handlers (so it cannot start outside the main
thread) and binds only 127.0.0.1 or a named interface. This module uses pyigtl for what the protocol defines --
the IMAGE, STRING and POINT messages and their packing (header, CRC-64) -- and its own socket loop for transport.
"""

from __future__ import annotations

import collections
import logging
import math
import selectors
import socket
import threading
import time
import unicodedata

import numpy as np

from mrtherm.backend import to_numpy
from mrtherm.errors import MrthermError, ParameterError
from mrtherm.optional import require
from mrtherm.thermometry.watch import format_alarm

__all__ = ["IgtlPublisher", "alarm_key", "alarm_text", "ijk_to_ras", "pyigtl",
           "DEVICE_TEMPERATURE", "DEVICE_DOSE", "DEVICE_ALARM", "DEVICE_ALARM_POINT"]

LOG = logging.getLogger("mrtherm.live")
DEVICE_TEMPERATURE = "mrtherm-temperature"
DEVICE_DOSE = "mrtherm-dose"
DEVICE_ALARM = "mrtherm-alarm"
DEVICE_ALARM_POINT = "mrtherm-alarm-point"
MAX_CLIENTS = 8  # connections beyond this are closed on opening
MAX_ALARMS_KEPT = 1000  # alarms replayed to a client that connects late
STALL_S = 30.0  # s a client may hold a message in flight without reading any of it
SEND_CHUNK = 1 << 20  # bytes handed to one send()
_UNITS = {"temperature": "C", "dose": "CEM43 min", "cumulative dose": "CEM43 min"}  # when an alarm has no "unit"
_ALARM_RGBA = (255, 0, 0, 255)
_LATEST_ORDER = (DEVICE_ALARM_POINT, DEVICE_TEMPERATURE, DEVICE_DOSE)  # after the alarm strings, in this order


def pyigtl():
    """The pyigtl module; a one-line error without it (the ``igtl`` extra).

    Returns
    -------
    module
    """
    return require("pyigtl", "streaming to 3D Slicer over OpenIGTLink")


def ijk_to_ras(affine) -> np.ndarray:
    """The IJK-to-RAS matrix of an IMAGE message for a (z, y, x) volume with this NIfTI-style affine.

    The affine maps voxel (x, y, z) to world RAS+ mm and the message's voxel (i, j, k) is the array's (x, y, z), so
    the matrix is the affine itself (Slicer reads the message matrix as RAS; see the module docstring).

    Parameters
    ----------
    affine : array_like, shape (4, 4)
        Voxel (x, y, z) -> world RAS+ mm; finite, last row (0, 0, 0, 1), invertible 3 x 3 part.

    Returns
    -------
    ndarray of float64, shape (4, 4)
        Voxel (i, j, k) -> RAS mm.

    Raises
    ------
    ParameterError
        When the affine is not such a matrix.
    """
    a = np.array(to_numpy(affine), dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise ParameterError(f"affine: expected a finite 4 x 4 matrix, got shape {a.shape}")
    if not np.allclose(a[3], [0.0, 0.0, 0.0, 1.0]) or abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise ParameterError("affine: expected last row (0, 0, 0, 1) and an invertible 3 x 3 part")
    a[3] = [0.0, 0.0, 0.0, 1.0]
    return a


def alarm_key(alarm: dict) -> tuple:
    """The identity of an alarm: it is sent once per key (the live session's key).

    Parameters
    ----------
    alarm : dict
        With ``structure`` and ``quantity``, and ``sonication`` where known.

    Returns
    -------
    tuple
        ``(sonication or None, structure, quantity, source)`` (``"model"`` for the bioheat model's alarms).
    """
    return alarm.get("sonication"), alarm.get("structure"), alarm.get("quantity"), alarm.get("source")


def _ascii_line(text: str) -> str:
    """One ASCII line: accents dropped, other non-ASCII characters as ``?``, control characters as spaces."""
    text = "".join(c for c in unicodedata.normalize("NFKD", str(text)) if not unicodedata.combining(c))
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return text.encode("ascii", "replace").decode("ascii")


def alarm_text(alarm: dict) -> str:
    """The STRING message of an alarm: one ASCII line.

    pyigtl 0.3.4 cannot pack a non-ASCII string (its ASCII/UTF-8 fallback catches the wrong exception), so the line
    is folded to ASCII: ``"°C"`` never occurs (the unit is written ``C``), accents are dropped.

    Parameters
    ----------
    alarm : dict
        ``structure``, ``quantity``, ``value``, ``threshold``, ``time_s`` (s); ``unit`` (default by quantity:
        ``C`` for temperature, ``CEM43 min`` for dose), ``comparison`` (default ``">="``) and ``sonication``
        optional.

    Returns
    -------
    str
        E.g. ``"ALARM spinal cord: temperature 47 C >= 45 C at t = 20.0 s (sonication 1)"``.

    Examples
    --------
    >>> alarm_text({"structure": "spinal cord", "quantity": "temperature", "value": 47.0, "threshold": 45.0,
    ...             "unit": "C", "time_s": 20.0, "sonication": 1})
    'ALARM spinal cord: temperature 47 C >= 45 C at t = 20.0 s (sonication 1)'
    """
    filled = {"unit": _UNITS.get(alarm.get("quantity"), ""), **alarm}
    try:
        text = format_alarm(filled)
    except (KeyError, TypeError, ValueError):  # an incomplete alarm still gets a line
        text = (f"ALARM {alarm.get('structure', '?')}: {alarm.get('quantity', '?')} {alarm.get('value', '?')} "
                f"{filled['unit']} {alarm.get('comparison', '>=')} {alarm.get('threshold', '?')} {filled['unit']}")
    if alarm.get("sonication") is not None:
        text += f" (sonication {alarm['sonication']})"
    return _ascii_line(text)


def _world_mm(alarm: dict):
    """The alarm's ``world_mm`` as 3 finite floats, or None."""
    try:
        xyz = [float(v) for v in alarm["world_mm"]]
    except (KeyError, TypeError, ValueError):
        return None
    return xyz if len(xyz) == 3 and all(math.isfinite(v) for v in xyz) else None


def _volume(name: str, volume_zyx, affine, dtype) -> tuple:
    """A C-ordered copy of the (z, y, x) volume in ``dtype`` and its IJK-to-RAS matrix; one-line errors."""
    vol = to_numpy(volume_zyx)
    if vol.ndim != 3 or min(vol.shape) < 1 or max(vol.shape) > 65535:
        raise ParameterError(f"{name}: expected a (z, y, x) volume of 1 to 65535 voxels a side, got shape {vol.shape}")
    if not (np.issubdtype(vol.dtype, np.floating) or np.issubdtype(vol.dtype, np.integer)):
        raise ParameterError(f"{name}: expected a real-valued volume, got dtype {vol.dtype}")
    try:
        matrix = ijk_to_ras(affine)
    except ParameterError as exc:
        raise ParameterError(f"{name} {exc}") from None
    return np.array(vol, dtype=dtype, order="C"), matrix


class _Client:
    """One connection: its socket, the message in flight and what it has been sent."""

    def __init__(self, sock, peer):
        self.sock, self.peer = sock, peer
        self.data, self.offset = b"", 0  # the message in flight and how much of it is sent
        self.next_alarm = 0  # sequence number of the next alarm to send
        self.sent = {}  # device -> version of the latest image (or point list) sent
        self.progress = time.monotonic()
        self.writing = False  # registered for EVENT_WRITE


class IgtlPublisher:
    """An OpenIGTLink server streaming the live temperature, dose and alarms to 3D Slicer.

    Starts listening at once; a background thread accepts clients and sends. See the module docstring for the
    messages, the coordinate system and the delivery rules.

    Parameters
    ----------
    port : int
        TCP port, 0 to 65535; 0 lets the system choose one (:attr:`address` tells which). Slicer's default is 18944.
    bind : str
        Address to listen on; the loopback address by default (Slicer on the same machine). A host name or an IPv6
        address works too.

    Raises
    ------
    MrthermError
        One line, when the port cannot be bound (in use, no permission, unknown address) or pyigtl is missing.

    Examples
    --------
    >>> pub = IgtlPublisher(0)  # doctest: +SKIP
    >>> pub.publish(temp_zyx, affine, dose_zyx, affine, alarms)  # doctest: +SKIP
    >>> pub.close()  # doctest: +SKIP
    """

    def __init__(self, port: int, bind: str = "127.0.0.1"):
        self._igtl = pyigtl()
        if isinstance(port, bool) or not isinstance(port, (int, np.integer)) or not 0 <= port <= 65535:
            raise ParameterError(f"OpenIGTLink port: expected an integer from 0 to 65535, got {port!r}")
        self._listener = _listen(bind, int(port))
        self._address = tuple(self._listener.getsockname()[:2])
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        self._lock = threading.Lock()
        self._latest = {}  # device -> (version, pyigtl message); the newest image / point list
        self._packed = {}  # device -> (version, bytes); filled by the sender thread
        self._version = 0
        self._alarms = collections.deque(maxlen=MAX_ALARMS_KEPT)  # (sequence number, packed STRING message)
        self._alarm_seq = 0
        self._alarm_keys = set()
        self._points = []  # (name, [r, a, s]) of every alarm with a location
        self._clients = {}  # socket -> _Client; sender thread only
        self._stop = threading.Event()
        self._closed = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._serve, name="mrtherm-igtl", daemon=True)
        self._thread.start()
        LOG.info("OpenIGTLink: listening on %s:%d", *self._address)

    # ------------------------------------------------------------------ caller side
    @property
    def address(self) -> tuple:
        """``(host, port)`` the server listens on; the chosen port when it was started with port 0.

        Returns
        -------
        tuple of (str, int)
        """
        return self._address

    @property
    def client_count(self) -> int:
        """How many clients are connected now.

        Returns
        -------
        int
        """
        return len(self._clients)

    def publish(self, temperature_zyx, temperature_affine, dose_zyx, dose_affine, alarms=()) -> None:
        """Send the current maps and any new alarm to every connected client; returns at once.

        The arrays are copied, so the caller may change them afterwards. Sending happens on the publisher's thread:
        with no client connected, nothing is sent and only the latest maps are kept for the next client.

        Parameters
        ----------
        temperature_zyx : ndarray, shape (z, y, x), or None
            Temperature (°C), NaN where not measured; sent as float32. None before the first temperature (the
            previous one, if any, stays the latest).
        temperature_affine : array_like, shape (4, 4), or None
            Voxel (x, y, z) -> world RAS+ mm of the temperature map (unused when the map is None).
        dose_zyx : ndarray, shape (z, y, x), or None
            Thermal dose (CEM43 minutes), NaN where not measured; sent as float64. None sends no dose.
        dose_affine : array_like, shape (4, 4), or None
            Voxel (x, y, z) -> world RAS+ mm of the dose map.
        alarms : list of dict
            Every alarm so far (``structure``, ``quantity``, ``value``, ``threshold``, ``time_s``, ``unit``,
            ``sonication``, optional ``world_mm`` in RAS mm); those not published before are sent, once each.

        Returns
        -------
        None

        Raises
        ------
        ParameterError
            When a map is not a real (z, y, x) volume or its affine not a 4 x 4 voxel-to-world matrix (nothing of
            this call is sent then).
        MrthermError
            After :meth:`close`.
        """
        if self._closed:
            raise MrthermError("the OpenIGTLink publisher is closed")
        msg, now = self._igtl, time.time()
        images = {}
        for device, vol, aff, dtype in ((DEVICE_TEMPERATURE, temperature_zyx, temperature_affine, np.float32),
                                        (DEVICE_DOSE, dose_zyx, dose_affine, np.float64)):
            if vol is not None:
                data, matrix = _volume(device, vol, aff, dtype)
                images[device] = msg.ImageMessage(data, ijk_to_world_matrix=matrix, world_coordinate_system="ras",
                                                  timestamp=now, device_name=device)
        with self._lock:
            self._add_alarms(list(alarms or ()), now)
            for device, message in images.items():
                self._version += 1
                self._latest[device] = (self._version, message)
        self._wake()

    def _add_alarms(self, alarms, now):
        """Pack the STRING of each alarm not seen before, and the point list when one has a location (lock held)."""
        points_changed = False
        for alarm in alarms:
            key = alarm_key(alarm)
            if key in self._alarm_keys:
                continue
            self._alarm_keys.add(key)
            text = alarm_text(alarm)
            packed = self._igtl.StringMessage(text, timestamp=now, device_name=DEVICE_ALARM).pack()
            self._alarms.append((self._alarm_seq, packed))
            self._alarm_seq += 1
            LOG.debug("OpenIGTLink: %s", text)
            xyz = _world_mm(alarm)
            if xyz is not None:
                model = " MODEL" if alarm.get("source") == "model" else ""
                name = _ascii_line(f"{alarm.get('structure', '?')}{model} {alarm.get('quantity', '?')}")[:63]
                self._points.append((name, xyz))
                points_changed = True
        if points_changed:
            names, xyz = [p[0] for p in self._points], [p[1] for p in self._points]
            message = self._igtl.PointMessage(positions=xyz, names=names, rgba_colors=[_ALARM_RGBA] * len(names),
                                              timestamp=now, device_name=DEVICE_ALARM_POINT)
            self._version += 1
            self._latest[DEVICE_ALARM_POINT] = (self._version, message)

    def _wake(self):
        try:
            self._wake_w.send(b"\0")
        except OSError:  # the wake-up pipe is full (the thread will wake anyway) or closed
            pass

    def close(self) -> None:
        """Stop serving: disconnect the clients and free the port (a new publisher may bind it at once).

        Idempotent; waits at most a few seconds for the sender thread.

        Returns
        -------
        None
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake()
        self._thread.join(timeout=5.0)
        if self._thread.is_alive():  # pragma: no cover - a send never blocks, so the loop ends within a select
            LOG.warning("OpenIGTLink: the sender thread did not stop; closing its sockets under it")
            self._close_sockets()
        for s in (self._wake_r, self._wake_w):
            s.close()
        LOG.info("OpenIGTLink: closed %s:%d", *self._address)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ sender thread
    def _serve(self):
        """The sender thread: accept, read and discard, send, until :meth:`close`."""
        try:
            while not self._stop.is_set():
                try:
                    self._step()
                except Exception:  # noqa: BLE001 -- a bug here must not end the stream silently
                    LOG.exception("OpenIGTLink: sender error")
                    time.sleep(0.1)
        finally:
            self._close_sockets()

    def _step(self):
        """One round: give each idle client its next message, wait for sockets, serve them, drop stalled ones."""
        for client in list(self._clients.values()):
            if not client.data:
                self._load_next(client)
            want = bool(client.data)
            if want != client.writing:
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
                self._selector.modify(client.sock, events, client)
                client.writing = want
        for key, mask in self._selector.select(timeout=0.5):
            if key.data == "accept":
                self._accept()
            elif key.data == "wake":
                _drain(self._wake_r)
            else:
                if mask & selectors.EVENT_READ:
                    self._read(key.data)
                if mask & selectors.EVENT_WRITE and key.data.sock in self._clients:
                    self._send(key.data)
        now = time.monotonic()
        for client in list(self._clients.values()):
            if client.data and now - client.progress > STALL_S:
                self._drop(client, f"no data read for {STALL_S:g} s")

    def _load_next(self, client):
        """Put the client's next message in flight: the next alarm, else the newest image it has not had."""
        with self._lock:
            if self._alarms and client.next_alarm < self._alarm_seq:
                first = self._alarms[0][0]
                seq, packed = self._alarms[max(client.next_alarm - first, 0)]
                client.next_alarm = seq + 1
                client.data, client.offset, client.progress = packed, 0, time.monotonic()
                return
            todo = [(d, self._latest[d]) for d in _LATEST_ORDER
                    if d in self._latest and self._latest[d][0] > client.sent.get(d, 0)]
        if not todo:
            return
        device, (version, message) = todo[0]
        client.sent[device] = version  # marked first: a message that cannot be packed is skipped, not retried
        cached = self._packed.get(device)
        if cached is None or cached[0] != version:
            try:
                cached = (version, message.pack())  # CRC over the whole body: here, never on the caller's thread
            except Exception:  # noqa: BLE001 -- a pyigtl failure loses this message, not the stream
                LOG.exception("OpenIGTLink: cannot pack %s; skipped", device)
                return
            self._packed[device] = cached
        client.data, client.offset, client.progress = cached[1], 0, time.monotonic()

    def _accept(self):
        while True:
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. too many open files: keep serving the others
                LOG.warning("OpenIGTLink: accept failed: %s", exc)
                return
            if len(self._clients) >= MAX_CLIENTS:
                LOG.warning("OpenIGTLink: refused %s (already %d clients)", peer, MAX_CLIENTS)
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(sock, peer)
            self._clients[sock] = client
            self._selector.register(sock, selectors.EVENT_READ, client)
            LOG.info("OpenIGTLink: client %s connected", peer[:2])

    def _read(self, client):
        """Read and discard what the client sent; close it at end of stream or on error."""
        try:
            if not client.sock.recv(65536):
                self._drop(client, "closed by the client")
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._drop(client, str(exc))

    def _send(self, client):
        """Send the next piece of the message in flight (non-blocking)."""
        view = memoryview(client.data)[client.offset:client.offset + SEND_CHUNK]
        try:
            sent = client.sock.send(view)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(client, str(exc))
            return
        client.offset += sent
        client.progress = time.monotonic()
        if client.offset >= len(client.data):
            client.data, client.offset = b"", 0

    def _drop(self, client, why):
        if self._clients.pop(client.sock, None) is None:
            return
        try:
            self._selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        LOG.info("OpenIGTLink: client %s disconnected (%s)", client.peer[:2], why)

    def _close_sockets(self):
        for client in list(self._clients.values()):
            self._drop(client, "server closing")
        try:
            self._selector.close()
        except (OSError, RuntimeError):
            pass
        self._listener.close()


def _listen(bind: str, port: int) -> socket.socket:
    """A non-blocking listening socket on ``bind:port``; one-line MrthermError when it cannot be had."""
    try:
        family = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        sock = socket.create_server((bind, port), family=family, backlog=MAX_CLIENTS)
    except OSError as exc:  # address in use, permission denied, unknown host
        reason = exc.strerror or str(exc)
        raise MrthermError(f"cannot listen for OpenIGTLink on {bind}:{port}: {reason}") from None
    sock.setblocking(False)
    return sock


def _drain(sock):
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, InterruptedError, OSError):
        pass
