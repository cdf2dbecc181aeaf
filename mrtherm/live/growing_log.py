"""A log another program writes while the treatment runs, read again whenever it changes.

The live respiratory signal (:mod:`mrtherm.live.respiration`) and the probe readings (:mod:`mrtherm.live.probes`)
both follow such a log: a read that fails (the file is not there yet, or its last line is half written) keeps what
was read before and is reported once in the live log, and the service never stops for it.
"""

from __future__ import annotations

import logging
import os

from mrtherm.errors import MrthermError

LOG = logging.getLogger("mrtherm.live")

__all__ = ["GrowingLog"]


class GrowingLog:
    """The latest readable content of a file that grows.

    Parameters
    ----------
    path : str
    what : str
        Its name in the live log (``"respiration log"``).
    read : callable
        ``read(path)`` -> content; raises MrthermError when the file cannot be read (yet).
    kept : str
        What the warning says is kept meanwhile.
    """

    def __init__(self, path, what, read, kept):
        self.path = os.path.abspath(os.fspath(path))
        self.what, self.read, self.kept = what, read, kept
        self.content, self._stamp, self._complained = None, None, False

    def latest(self):
        """The content of the last successful read, read again when the file changed (None before any).

        Returns
        -------
        object or None
        """
        try:
            st = os.stat(self.path)
        except OSError:
            self._complain("not there yet")
            return self.content
        stamp = (st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            try:
                self.content = self.read(self.path)
            except MrthermError as exc:  # a half-written last line: the next read gets it whole
                self._complain(str(exc))
                return self.content
            self._stamp, self._complained = stamp, False
        return self.content

    def _complain(self, why):
        if not self._complained:
            LOG.warning("%s %s: %s; %s", self.what, self.path, why, self.kept)
            self._complained = True
