"""Send DICOM files to a PACS: C-STORE with pynetdicom as the storage SCU, one result per file.

:func:`send_files` stores a list of files in as few associations as it can (one unless the files need more than
pynetdicom's 128 presentation contexts), retries the associations that fail (connection refused, rejected, aborted
or silent) while sending only what the PACS has not acknowledged yet, and never retries a file the PACS refused
with a failure status: it said no. Nothing is raised for a single file and no traceback is printed; every
problem is a one-line ``error`` naming the file.

Status meanings are those of DICOM PS3.4 Annex B (Storage Service Class, B.2.3) and PS3.7 Annex C (general
DIMSE statuses).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

from mrtherm.optional import require

MAX_CONTEXTS = 128  # pynetdicom (and DICOM PS3.8: odd context IDs 1..255) limit per association
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"

# (first, last, meaning): PS3.4 B.2.3 (storage) and PS3.7 C (general); failures unless listed in WARNINGS
_STATUS_RANGES = (
    (0xA700, 0xA7FF, "out of resources"),
    (0xA900, 0xA9FF, "data set does not match SOP class"),
    (0xC000, 0xCFFF, "cannot understand"),
    (0xB000, 0xB000, "coercion of data elements"),
    (0xB006, 0xB006, "elements discarded"),
    (0xB007, 0xB007, "data set does not match SOP class"),
    (0x0110, 0x0110, "processing failure"),
    (0x0117, 0x0117, "invalid SOP instance"),
    (0x0122, 0x0122, "SOP class not supported"),
    (0x0124, 0x0124, "not authorized"),
    (0x0210, 0x0210, "duplicate invocation"),
    (0x0211, 0x0211, "unrecognized operation"),
    (0x0212, 0x0212, "mistyped argument"),
    (0x0213, 0x0213, "resource limitation"),
    (0xFE00, 0xFE00, "cancelled"),
)
WARNINGS = (0xB000, 0xB006, 0xB007)


def status_meaning(status: int) -> str:
    """The meaning of a C-STORE response status (DICOM PS3.4 Annex B, PS3.7 Annex C).

    Parameters
    ----------
    status : int
        The (0000,0900) Status of a C-STORE response.

    Returns
    -------
    str
        E.g. ``"out of resources"`` for 0xA700 to 0xA7FF; ``"success"``; ``"unknown status"`` otherwise.

    Examples
    --------
    >>> status_meaning(0xA701)
    'out of resources'
    """
    if status == 0x0000:
        return "success"
    for first, last, meaning in _STATUS_RANGES:
        if first <= status <= last:
            return meaning
    return "unknown status"


def _one_line(text) -> str:
    return " ".join(str(text).split()) or "no details"


class _PynetdicomLogs(logging.Filter):
    """Reads pynetdicom's log records during a call: keeps the TCP connection error, drops the chatter.

    A filter on each ``pynetdicom`` logger, not a handler: records are dropped only when the caller has not set a
    level on the ``pynetdicom`` logger (a caller who sets one, e.g. DEBUG, sees everything as configured).
    Calls from several threads at once share these loggers: a connection error's text may then be reported by
    the other call (its outcome is not affected).
    """

    def __init__(self):
        super().__init__()
        self.drop = logging.getLogger("pynetdicom").level == logging.NOTSET
        self.connect_error = None

    def filter(self, record):
        """Keep the text of a connection failure; pass the record on only when not silencing."""
        msg = record.getMessage()
        if msg.startswith("TCP Initialisation Error:"):
            self.connect_error = msg.split(":", 1)[1].strip()
        return not self.drop

    @contextlib.contextmanager
    def installed(self):
        """Attach to ``pynetdicom`` and its child loggers for the duration of the block."""
        names = ["pynetdicom"] + [n for n in list(logging.root.manager.loggerDict) if n.startswith("pynetdicom.")]
        loggers = [logging.getLogger(n) for n in names]
        for lg in loggers:
            lg.addFilter(self)
        try:
            yield self
        finally:
            for lg in loggers:
                lg.removeFilter(self)


def _result(path) -> dict:
    return {"path": path, "sop_instance_uid": None, "sop_class_uid": None, "status": None, "ok": False,
            "error": None, "warning": None}


def _inspect(pd, path):
    """The result skeleton of ``path`` and its transfer syntax (None when it is not readable DICOM)."""
    res = _result(os.fspath(path))
    try:
        ds = pd.dcmread(res["path"], stop_before_pixels=True)
        meta = getattr(ds, "file_meta", None)
        ts = str(getattr(meta, "TransferSyntaxUID", "") or "")
        res["sop_class_uid"] = str(ds.get("SOPClassUID", "") or getattr(meta, "MediaStorageSOPClassUID", "") or "")
        uid = ds.get("SOPInstanceUID", "") or getattr(meta, "MediaStorageSOPInstanceUID", "")
        res["sop_instance_uid"] = str(uid or "") or None
    except Exception as exc:  # noqa: BLE001 - any reader failure is this file's one-line error
        res["error"] = f"{res['path']}: not readable as DICOM ({type(exc).__name__}: {_one_line(exc)})"
        return res, None
    missing = [k for k, v in (("SOPClassUID", res["sop_class_uid"]), ("SOPInstanceUID", res["sop_instance_uid"]),
                              ("TransferSyntaxUID", ts)) if not v]
    if missing:
        res["error"] = f"{res['path']}: not sendable, no {', '.join(missing)}"
        return res, None
    return res, ts


def _context_key(res, ts):
    """One presentation context per SOP class and compressed syntax; native syntaxes share one."""
    return res["sop_class_uid"], (None if ts in (EXPLICIT_LE, IMPLICIT_LE) else ts)


def _batches(items):
    """Split ``(result, ts)`` items into batches needing at most :data:`MAX_CONTEXTS` contexts each.

    Returns a list of ``(contexts, items)`` with ``contexts`` a list of ``(sop_class, [transfer syntaxes])``.
    """
    keys = list(dict.fromkeys(_context_key(res, ts) for res, ts in items))
    out = []
    for start in range(0, len(keys), MAX_CONTEXTS):
        chunk = keys[start:start + MAX_CONTEXTS]
        wanted = set(chunk)
        contexts = [(sop, [EXPLICIT_LE, IMPLICIT_LE] if ts is None else [ts, EXPLICIT_LE, IMPLICIT_LE])
                    for sop, ts in chunk]
        out.append((contexts, [it for it in items if _context_key(*it) in wanted]))
    return out


def _association_failure(assoc, where, logs) -> tuple[str, bool]:
    """Why ``assoc`` is not established, and whether trying again may help."""
    primitive = getattr(assoc.acceptor, "primitive", None)
    if assoc.is_rejected and primitive is not None:
        return (f"association rejected by {where} ({primitive.result_str}, source {primitive.source_str}: "
                f"{primitive.reason_str})"), True
    if primitive is not None and getattr(primitive, "result", None) == 0 and not assoc.accepted_contexts:
        return f"{where} accepted none of the SOP classes and transfer syntaxes offered", False
    if logs.connect_error:
        text, logs.connect_error = logs.connect_error, None
        return f"cannot connect to {where} ({_one_line(text)})", True
    if primitive is None:
        return f"no answer from {where} to the association request (aborted or timed out)", True
    return f"association with {where} aborted", True


def _store(pd, assoc, res, where) -> bool:
    """C-STORE one file; fills ``res``; False when the association failed before an answer (send it again)."""
    try:
        ds = pd.dcmread(res["path"])
    except Exception as exc:  # noqa: BLE001
        res["error"] = f"{res['path']}: not readable as DICOM ({type(exc).__name__}: {_one_line(exc)})"
        return True
    try:
        rsp = assoc.send_c_store(ds)
    except (ValueError, AttributeError) as exc:  # no accepted context for it, or it cannot be encoded
        res["error"] = f"{res['path']}: not sent to {where} ({_one_line(exc)})"
        return True
    except RuntimeError:  # the association ended
        return False
    status = rsp.get("Status") if rsp is not None else None
    if status is None:
        return False
    status = int(status)
    res["status"], res["error"] = status, None
    meaning = status_meaning(status)
    if status == 0x0000 or status in WARNINGS:
        res["ok"] = True
        if status:
            res["warning"] = f"{res['path']}: stored by {where} with warning 0x{status:04X} ({meaning})"
    else:
        res["error"] = f"{res['path']}: refused by {where}, status 0x{status:04X} ({meaning})"
    return True


def _send_batch(pd, ae_factory, contexts, pending, address, where, retries, retry_wait_s, logs):
    """Send ``pending`` results over new associations until every one has an answer or tries run out."""
    host, port, called_ae = address
    failures, attempts, last = 0, 0, ""
    while pending:
        ae = ae_factory()
        for sop, syntaxes in contexts:
            ae.add_requested_context(sop, syntaxes)
        attempts += 1
        assoc = ae.associate(host, port, ae_title=called_ae)
        if not assoc.is_established:
            last, may_retry = _association_failure(assoc, where, logs)
            failures += 1
            if not may_retry or failures > retries:
                break
            time.sleep(retry_wait_s)
            continue
        try:
            answered = 0
            while pending and assoc.is_established and _store(pd, assoc, pending[0], where):
                pending.pop(0)
                answered += 1
        finally:
            if assoc.is_established:
                assoc.release()
        if pending:
            last = f"association with {where} ended before {os.path.basename(pending[0]['path'])} was acknowledged"
            failures = 0 if answered else failures + 1  # progress earns fresh retries; the loop stays finite
            if failures > retries:
                break
            time.sleep(retry_wait_s)
    for res in pending:
        res["error"] = f"{res['path']}: not sent after {attempts} association attempt(s): {last}"


def send_files(paths, host: str, port: int, called_ae: str, calling_ae: str = "MRTHERM", retries: int = 3,
               retry_wait_s: float = 2.0, timeout_s: float = 30.0) -> list[dict]:
    """C-STORE DICOM files to a PACS; one result per file, in the order of ``paths``.

    Parameters
    ----------
    paths : iterable of str or path-like
        DICOM files (Part 10, with file meta information). Each is read with pydicom when it is sent.
    host : str
        Host name or address of the PACS.
    port : int
        Its DICOM port.
    called_ae : str
        The PACS's AE title.
    calling_ae : str
        Ours.
    retries : int
        An association that fails (connection refused, rejected, aborted, no answer) is tried again up to
        ``retries`` times (``1 + retries`` attempts), sending only the files not acknowledged yet; an association
        that got some files acknowledged before failing earns fresh retries. A failure status (0xA7xx, 0xA9xx,
        0xCxxx, ...) is the PACS's answer and is not retried.
    retry_wait_s : float
        Pause between attempts, s.
    timeout_s : float
        TCP connect, association (ACSE), DIMSE and network timeouts, s.

    Returns
    -------
    list of dict
        Per file: ``path`` (str), ``sop_instance_uid`` and ``sop_class_uid`` (str, None when unreadable),
        ``status`` (int C-STORE status, None when there was no answer), ``ok`` (bool: success or a warning
        status 0xB000, 0xB006, 0xB007), ``error`` (one line naming the file, None when ok) and ``warning``
        (one line for a warning status, else None).
    """
    pd = require("pydicom", "sending DICOM")
    pn = require("pynetdicom", "sending DICOM")
    where = f"{called_ae} at {host}:{port}"

    def ae_factory():
        ae = pn.AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
        return ae

    inspected = [_inspect(pd, p) for p in paths]
    sendable = [(res, ts) for res, ts in inspected if ts is not None]
    with _PynetdicomLogs().installed() as logs:
        for contexts, items in _batches(sendable):
            _send_batch(pd, ae_factory, contexts, [res for res, _ in items], (host, int(port), called_ae), where,
                        max(int(retries), 0), max(float(retry_wait_s), 0.0), logs)
    return [res for res, _ in inspected]
