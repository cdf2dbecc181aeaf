"""The DICOM storage service (pynetdicom): MR and Enhanced MR Image Storage, C-ECHO for connection tests.

Who may send: the service listens on ``bind`` (default 127.0.0.1), accepts
associations only from the calling AE titles in ``allow_ae`` when given (others
get the DICOM association rejection "calling AE title not recognised" and a log
line), limits each image and each association in bytes, and can require TLS.
"""

from __future__ import annotations

import logging
import ssl
import threading

from mrtherm.errors import MrthermError
from mrtherm.live.assembler import STATUS_TOO_LARGE
from mrtherm.optional import require

LOG = logging.getLogger("mrtherm.live")
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"


def pynetdicom():
    """The pynetdicom module; a one-line error without it (the ``live`` extra).

    Returns
    -------
    module
    """
    return require("pynetdicom", "mrtherm live --port")


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
    """

    def __init__(self, session, port, ae_title="MRTHERM", bind="127.0.0.1", allow_ae=None,
                 max_association_bytes=None, ssl_context=None):
        pn = pynetdicom()
        self.session = session
        self.max_association_bytes = max_association_bytes
        self._bytes: dict[int, int] = {}
        self._lock = threading.Lock()
        ae = pn.AE(ae_title=ae_title)
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian  # noqa: PLC0415
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        for uid in (MR_IMAGE_STORAGE, ENHANCED_MR_IMAGE_STORAGE):
            ae.add_supported_context(uid, syntaxes)
        ae.add_supported_context("1.2.840.10008.1.1", syntaxes)  # Verification (C-ECHO)
        if allow_ae:
            ae.require_calling_aet = list(allow_ae)
        ae.maximum_associations = 8
        evt = pn.evt
        handlers = [(evt.EVT_C_STORE, self._store), (evt.EVT_ACCEPTED, self._accepted),
                    (evt.EVT_REJECTED, self._rejected), (evt.EVT_ABORTED, self._aborted),
                    (evt.EVT_CONN_CLOSE, self._closed)]
        try:
            self.server = ae.start_server((bind, int(port)), block=False, evt_handlers=handlers,
                                          ssl_context=ssl_context)
        except OSError as exc:
            raise MrthermError(f"cannot listen on {bind}:{port} ({exc.strerror or exc})") from None
        self.ae = ae
        self.address = self.server.server_address
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
            LOG.warning("refused (status 0x%04X): association from %s over its %d-byte limit", STATUS_TOO_LARGE,
                        self._peer(event), self.max_association_bytes)
            return STATUS_TOO_LARGE
        sop = getattr(event.request, "AffectedSOPInstanceUID", "?")
        return self.session.receive(data, f"C-STORE from {self._peer(event)}, SOP Instance UID {sop}")

    def _accepted(self, event):
        LOG.info("association accepted from %s", self._peer(event))

    def _rejected(self, event):
        LOG.warning("association rejected from %s (calling AE title not allowed)", self._peer(event))

    def _aborted(self, event):
        LOG.warning("association aborted by %s: images received so far are kept", self._peer(event))

    def _closed(self, event):
        with self._lock:
            self._bytes.pop(id(event.assoc), None)

    def close(self):
        """Stop listening (open associations are ended)."""
        self.server.shutdown()
