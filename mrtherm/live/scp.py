"""The DICOM storage service (pynetdicom): MR and Enhanced MR Image Storage, C-ECHO for connection tests.

Who may send: the service listens on ``bind`` (default 127.0.0.1), accepts
associations only from the calling AE titles in ``allow_ae`` when given (others
get the DICOM association rejection "calling AE title not recognised" and a log
line), limits each image and each association in bytes, and can require TLS.

No peer can lock the scanner out. A TCP connection counts against the
association limit from the moment it opens, before any AE title is known, so:

- a connection must complete its association request within ``setup_s``
  (default 3 s), or it is closed: silent peers and peers trickling one byte at
  a time (which reset every idle timer) alike;
- at most ``max_per_peer`` connections per peer address are open at once
  (more are closed on opening), at most ``max_associations`` overall;
- an established association silent for ``idle_s`` is closed (pynetdicom's
  network timeout), and a DIMSE reply awaited longer than ``idle_s`` aborts it.

The defaults let an allowed scanner associate within ``setup_s`` plus its own
retry interval under ten silent or ten trickling connections (tested). With TLS,
pynetdicom handshakes in its accepting thread: each handshake gets ``setup_s``
(:class:`HandshakeDeadline`), so a silent TLS peer delays others by that much.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

from mrtherm.errors import MrthermError
from mrtherm.live.assembler import STATUS_TOO_LARGE
from mrtherm.optional import require

LOG = logging.getLogger("mrtherm.live")
SETUP_S = 3.0  # s a connection has to complete its association request
MAX_ASSOCIATIONS = 32
MAX_PER_PEER = 8
IDLE_S = 60.0  # s an established association may stay silent
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"


def pynetdicom():
    """The pynetdicom module; a one-line error without it (the ``live`` extra).

    Returns
    -------
    module
    """
    return require("pynetdicom", "mrtherm live --port")


class HandshakeDeadline:
    """A server TLS context whose handshakes give up after ``seconds``.

    pynetdicom performs the server's TLS handshake in its accepting thread, before any association exists; a peer
    that opens a connection and never speaks TLS would hold that thread, and every later connection, for good. With
    a deadline it holds it ``seconds`` at most, then the connection is closed (and logged).

    Parameters
    ----------
    context : ssl.SSLContext
    seconds : float
    """

    def __init__(self, context, seconds):
        self.context, self.seconds = context, float(seconds)

    def wrap_socket(self, sock, server_side=False, **kwargs):
        """``SSLContext.wrap_socket`` with the handshake under the deadline (what pynetdicom calls).

        Parameters
        ----------
        sock : socket.socket
        server_side : bool
        **kwargs
            Passed on.

        Returns
        -------
        ssl.SSLSocket
        """
        sock.settimeout(self.seconds)
        try:
            wrapped = self.context.wrap_socket(sock, server_side=server_side, **kwargs)
        except OSError as exc:  # a timeout or a failed handshake: the connection goes, the service stays
            LOG.warning("TLS connection from %s closed: no handshake within %.0f s (%s)", _peer_of(sock),
                        self.seconds, type(exc).__name__)
            sock.close()
            raise
        wrapped.settimeout(None)
        return wrapped

    def __getattr__(self, name):
        return getattr(self.context, name)


def _peer_of(sock):
    try:
        return "%s:%d" % sock.getpeername()[:2]
    except OSError:
        return "?"


def tls_context(cert, key, ca=None) -> ssl.SSLContext:
    """A server TLS context: our certificate and key; with ``ca``, clients must present a certificate it signed.

    Parameters
    ----------
    cert, key : str
        PEM files of the service's certificate and private key.
    ca : str, optional
        PEM file of the CA that signs the clients' certificates.

    Returns
    -------
    ssl.SSLContext
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
        if ca:
            ctx.load_verify_locations(cafile=ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise MrthermError(f"{cert}: TLS certificate or key not usable ({exc})") from None
    return ctx


class StorageService:
    """A running storage SCP feeding a :class:`mrtherm.live.session.LiveSession`.

    Parameters
    ----------
    session : LiveSession
    port : int
    ae_title : str
    bind : str
        Address to listen on.
    allow_ae : list of str, optional
        Calling AE titles accepted (default: any).
    max_association_bytes : int, optional
        Images beyond this total in one association are refused (status A700, out of resources).
    ssl_context : ssl.SSLContext, optional
    limits : dict, optional
        ``setup_s``, ``max_associations``, ``max_per_peer``, ``idle_s`` (see the module docstring).
    """

    def __init__(self, session, port, ae_title="MRTHERM", bind="127.0.0.1", allow_ae=None,
                 max_association_bytes=None, ssl_context=None, limits=None):
        pn = pynetdicom()
        self.session = session
        self.max_association_bytes = max_association_bytes
        self.limits = {"setup_s": SETUP_S, "max_associations": MAX_ASSOCIATIONS, "max_per_peer": MAX_PER_PEER,
                       "idle_s": IDLE_S, **{k: v for k, v in (limits or {}).items() if v is not None}}
        self._bytes: dict[int, int] = {}
        self._opened: dict[int, tuple] = {}  # id(assoc) -> (association, peer address, monotonic time opened)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        ae = pn.AE(ae_title=ae_title)
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian  # noqa: PLC0415
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        for uid in (MR_IMAGE_STORAGE, ENHANCED_MR_IMAGE_STORAGE):
            ae.add_supported_context(uid, syntaxes)
        ae.add_supported_context("1.2.840.10008.1.1", syntaxes)  # Verification (C-ECHO)
        if allow_ae:
            ae.require_calling_aet = list(allow_ae)
        ae.maximum_associations = int(self.limits["max_associations"])
        ae.acse_timeout = float(self.limits["setup_s"])
        ae.network_timeout = ae.dimse_timeout = float(self.limits["idle_s"])
        evt = pn.evt
        handlers = [(evt.EVT_C_STORE, self._store), (evt.EVT_ACCEPTED, self._accepted),
                    (evt.EVT_REJECTED, self._rejected), (evt.EVT_ABORTED, self._aborted),
                    (evt.EVT_CONN_OPEN, self._opened_conn), (evt.EVT_CONN_CLOSE, self._closed)]
        try:
            deadline = HandshakeDeadline(ssl_context, self.limits["setup_s"]) if ssl_context is not None else None
            self.server = ae.start_server((bind, int(port)), block=False, evt_handlers=handlers,
                                          ssl_context=deadline)
        except OSError as exc:
            raise MrthermError(f"cannot listen on {bind}:{port} ({exc.strerror or exc})") from None
        self.ae = ae
        self.address = self.server.server_address
        self._watchdog = threading.Thread(target=self._watch_setup, name="mrtherm-live-setup-watchdog", daemon=True)
        self._watchdog.start()
        LOG.info("listening on %s:%d as AE title %s%s%s", self.address[0], self.address[1], ae_title,
                 f", accepting only {', '.join(allow_ae)}" if allow_ae else "", ", TLS" if ssl_context else "")

    def _peer(self, event):
        r = event.assoc.requestor
        return f"{r.ae_title} at {r.address}:{r.port}"

    def _store(self, event):
        data = event.encoded_dataset(include_meta=True)
        key = id(event.assoc)
        with self._lock:
            total = self._bytes.get(key, 0) + len(data)
            self._bytes[key] = total
        if self.max_association_bytes and total > self.max_association_bytes:
            self.session.refused(STATUS_TOO_LARGE, f"association from {self._peer(event)} over its "
                                 f"{self.max_association_bytes}-byte limit")
            return STATUS_TOO_LARGE
        sop = getattr(event.request, "AffectedSOPInstanceUID", "?")
        return self.session.receive(data, f"C-STORE from {self._peer(event)}, SOP Instance UID {sop}")

    def _accepted(self, event):
        LOG.info("association accepted from %s", self._peer(event))

    def _rejected(self, event):
        LOG.warning("association rejected from %s (calling AE title not allowed)", self._peer(event))

    def _aborted(self, event):
        LOG.warning("association aborted by %s: images received so far are kept", self._peer(event))

    def _opened_conn(self, event):
        peer = event.address[0] if event.address else "?"
        with self._lock:
            same_peer = sum(1 for _, address, _ in self._opened.values() if address == peer)
            self._opened[id(event.assoc)] = (event.assoc, peer, time.monotonic())
        if same_peer >= self.limits["max_per_peer"]:
            LOG.warning("connection from %s closed: %d connections from that address already open", peer, same_peer)
            _cut(event.assoc)

    def _watch_setup(self):
        """Close connections that have not completed their association request within ``setup_s``."""
        while not self._stop.wait(0.2):
            now = time.monotonic()
            with self._lock:
                late = [(a, peer) for a, peer, t in self._opened.values()
                        if not a.is_established and now - t > self.limits["setup_s"]]
            for assoc, peer in late:
                if not (assoc.is_aborted or assoc.is_released or assoc.is_rejected):
                    LOG.warning("connection from %s closed: no association request within %.0f s", peer,
                                self.limits["setup_s"])
                _cut(assoc)
                with self._lock:
                    self._opened.pop(id(assoc), None)

    def _closed(self, event):
        with self._lock:
            self._bytes.pop(id(event.assoc), None)
            self._opened.pop(id(event.assoc), None)

    def close(self):
        """Stop listening (open associations are ended)."""
        self._stop.set()
        self.server.shutdown()


def _cut(assoc):
    """Close an association's TCP connection from outside its thread (a blocked read then returns)."""
    sock = getattr(getattr(assoc, "dul", None), "socket", None)
    raw = getattr(sock, "socket", None)
    if raw is not None:
        try:
            raw.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed
            pass
