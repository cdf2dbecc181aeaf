"""Received images kept on disk before they are acknowledged: nothing the scanner was told is stored is lost.

Each image is written under ``OUT/received/`` as ``<arrival number>-<hash>.dcm``
(temporary name, then rename) before the C-STORE success status goes back. The
name is built from a running number and a SHA-1 of the SOP Instance UID, never
from tag text. After a crash the session replays these files in arrival order.
"""

from __future__ import annotations

import hashlib
import os
import re

from mrtherm.io.atomic import atomic_file

_NAME = re.compile(r"^(\d{8})-[0-9a-f]{20}\.(dcm|nii|nii\.gz)$")


class Spool:
    """The ``received`` folder of a live output folder."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.next_number = 1 + max((int(m.group(1)) for m in map(_NAME.match, os.listdir(self.folder)) if m),
                                   default=0)

    def paths(self) -> list[str]:
        """Every kept image, in arrival order.

        Returns
        -------
        list of str
        """
        names = sorted(n for n in os.listdir(self.folder) if _NAME.match(n))
        return [os.path.join(self.folder, n) for n in names]

    def set_aside(self, path: str) -> str:
        """Move a kept image that is no longer usable (and its sidecar) to ``refused/``, out of the replay.

        Parameters
        ----------
        path : str

        Returns
        -------
        str
            Where it went.
        """
        aside = os.path.join(self.folder, "refused")
        os.makedirs(aside, exist_ok=True)
        stem = re.sub(r"\.(dcm|nii|nii\.gz)$", "", path)
        if os.path.exists(stem + ".json"):
            os.replace(stem + ".json", os.path.join(aside, os.path.basename(stem) + ".json"))
        target = os.path.join(aside, os.path.basename(path))
        os.replace(path, target)
        return target

    def write(self, data: bytes, sop_uid: str, suffix: str = ".dcm", sidecar: bytes | None = None) -> str:
        """Keep one image (a DICOM file's bytes, or a NIfTI frame and its JSON sidecar); returns its path.

        Parameters
        ----------
        data : bytes
        sop_uid : str
            Only hashed into the name.
        suffix : str
            ``.dcm``, ``.nii`` or ``.nii.gz``.
        sidecar : bytes, optional
            A NIfTI frame's JSON sidecar, kept beside it.

        Returns
        -------
        str
        """
        digest = hashlib.sha1(sop_uid.encode("utf-8", "replace")).hexdigest()[:20]
        stem = os.path.join(self.folder, f"{self.next_number:08d}-{digest}")
        if sidecar is not None:  # the sidecar first: an image is replayed only with it
            with atomic_file(stem + ".json") as fh:
                fh.write(sidecar)
        with atomic_file(stem + suffix) as fh:
            fh.write(data)
        self.next_number += 1
        return stem + suffix
