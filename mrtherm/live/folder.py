"""Watching a console's export folder: each DICOM file (or NIfTI frame) is read once it has stopped growing.

A file is taken when its size and modification time have not changed for
``settle_s`` seconds (a console still writing it keeps changing them), so no
file is read half-way; a NIfTI frame also waits for its JSON sidecar to parse
(:mod:`mrtherm.live.nifti_frames`). Hidden files, sidecars and names ending
``.tmp``/``.part`` are left alone; other files that are not MR DICOM are
refused and logged once.
"""

from __future__ import annotations

import logging
import os
import time

from mrtherm.io.dicom.files import read_bytes, walk
from mrtherm.live.nifti_frames import is_nifti, sidecar_settled

LOG = logging.getLogger("mrtherm.live")
SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".json", ".txt", ".csv", ".md")


class FolderWatcher:
    """Feeds the settled files of ``folder`` to ``session.receive`` in order of arrival.

    Parameters
    ----------
    session : LiveSession
    folder : str
    settle_s : float
        Seconds a file's size and time must stay unchanged before it is read.
    poll_s : float
    """

    def __init__(self, session, folder, settle_s=1.0, poll_s=0.2):
        self.session, self.folder = session, os.fspath(folder)
        self.settle_s, self.poll_s = float(settle_s), float(poll_s)
        self._seen: dict[str, tuple] = {}
        self._done: set[str] = set()

    def poll(self, now=None) -> int:
        """One look at the folder; returns how many files were taken.

        Parameters
        ----------
        now : float, optional
            ``time.monotonic()`` (tests pass their own clock).

        Returns
        -------
        int
        """
        now = time.monotonic() if now is None else now
        candidates = []
        for path in walk(self.folder):
            if path in self._done or path.lower().endswith(SKIP_SUFFIXES):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue  # removed or renamed meanwhile
            sig = (st.st_size, st.st_mtime_ns)
            prev = self._seen.get(path)
            if prev is None or prev[0] != sig:
                self._seen[path] = (sig, now)
                continue
            if now - prev[1] >= self.settle_s and st.st_size > 0:
                candidates.append((st.st_mtime_ns, path))
        for _, path in sorted(candidates):
            self._take(path)
        return len(candidates)

    def _take(self, path):
        if is_nifti(path) and not sidecar_settled(path):
            return  # its sidecar is not (completely) written yet: next poll
        self._done.add(path)
        self._seen.pop(path, None)
        try:
            if is_nifti(path):
                with open(path, "rb") as fh:
                    data = fh.read()  # kept compressed: the NIfTI reader takes the file as it is
            else:
                data = read_bytes(path)
        except Exception as exc:  # unreadable file: log, keep watching
            LOG.warning("%s: not readable (%s)", path, exc)
            return
        self.session.receive(data, path, "nifti" if is_nifti(path) else "dicom")

    def run(self, stop):
        """Poll until the event ``stop`` is set.

        Parameters
        ----------
        stop : threading.Event
        """
        LOG.info("watching %s (files are read %.1f s after they stop changing)", self.folder, self.settle_s)
        while not stop.wait(self.poll_s):
            if os.path.isdir(self.folder):
                self.poll()
