"""One live service per output folder: an exclusive lock on ``OUT/.mrtherm-live/service.lock``.

Two services writing one treatment folder would overwrite each other's maps,
checkpoint and sonication outputs from diverging states. The lock is an
``flock`` held for the life of the process: the kernel releases it when the
process ends, however it ends (a SIGKILL leaves no stale lock behind). The file
names the holder (PID, port or watched folder, start time) so that the second
service's one-line refusal says who holds it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os

from mrtherm.errors import MrthermError

LOCK_NAME = "service.lock"


class ServiceLock:
    """The held lock of one output folder; :meth:`release` (or process exit) frees it.

    Parameters
    ----------
    state_dir : str
        The folder's ``.mrtherm-live`` (created).
    out : str
        The output folder, for the message.
    holder : dict
        What the lock file records about this service (``port``, ``watch``), besides the PID and start time.
    """

    def __init__(self, state_dir, out, holder):
        os.makedirs(state_dir, exist_ok=True)
        self.path = os.path.join(state_dir, LOCK_NAME)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = _read_holder(self.fd)
            os.close(self.fd)
            raise MrthermError(f"{out}: in use by another mrtherm live ({_describe(other)}); stop it or choose "
                               "another --out") from None
        record = {"pid": os.getpid(), "started": datetime.datetime.now().isoformat(timespec="seconds"), **holder}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(record).encode("utf-8"), 0)

    def release(self):
        """Free the lock (idempotent)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def _read_holder(fd) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data.decode("utf-8")) if data else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    parts = [f"PID {holder['pid']}" if "pid" in holder else "PID unknown"]
    if holder.get("port") is not None:
        parts.append(f"port {holder['port']}")
    if holder.get("watch"):
        parts.append(f"watching {holder['watch']}")
    if holder.get("started"):
        parts.append(f"since {holder['started']}")
    return ", ".join(parts)
