"""The live service's image counts, exact across restarts.

Received images are the kept ones (``received/``, counted on start). Duplicates
and refusals leave no file, so each is one line appended to
``OUT/.mrtherm-live/images.log`` as it happens; a restart tallies the lines. A
line torn by a kill mid-write is not counted (the image it would count was not
answered either: the scanner re-sends it).
"""

from __future__ import annotations

import contextlib
import os

LOG_NAME = "images.log"


class ImageCounts:
    """``received``, ``duplicates`` and ``refused`` (by status) since the treatment began.

    Parameters
    ----------
    state_dir : str
    received : int
        Images already kept (the spool's count).
    """

    def __init__(self, state_dir, received: int):
        self.path = os.path.join(state_dir, LOG_NAME)
        self.received, self.duplicates, self.refused = int(received), 0, {}
        with contextlib.suppress(FileNotFoundError), open(self.path, encoding="ascii", errors="replace") as fh:
            for line in fh:
                self._tally(line)

    def _tally(self, line):
        if not line.endswith("\n"):
            return  # torn by a kill
        word = line.split()
        if word == ["duplicate"]:
            self.duplicates += 1
        elif len(word) == 2 and word[0] == "refused" and word[1].startswith("0x"):
            self.refused[word[1]] = self.refused.get(word[1], 0) + 1

    def duplicate(self):
        """Count one duplicate (an image whose SOP Instance UID was already kept)."""
        self.duplicates += 1
        self._append("duplicate")

    def refusal(self, status: int):
        """Count one refused image.

        Parameters
        ----------
        status : int
            The DICOM status it was answered.
        """
        key = f"0x{status:04X}"
        self.refused[key] = self.refused.get(key, 0) + 1
        self._append(f"refused {key}")

    def _append(self, line):
        # best effort: with the disk full the count lives on in memory (report.json) until the next restart
        with contextlib.suppress(OSError), open(self.path, "a", encoding="ascii") as fh:
            fh.write(line + "\n")

    def as_dict(self) -> dict:
        """report.json's ``images`` counts.

        Returns
        -------
        dict
        """
        return {"received": self.received, "duplicates": self.duplicates, "refused": dict(self.refused)}
