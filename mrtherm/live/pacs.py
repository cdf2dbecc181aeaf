"""Each finished sonication's results sent to a PACS as DICOM objects, in the background (``--export-to``).

When a sonication ends (a later series starts, or the service stops), its ``sonication_<k>/`` folder is exported
(:func:`mrtherm.export.dicom_objects.export_run`: Parametric Maps, Segmentation, Measurement Report, with the
sonication's own kept images as the source, so the objects carry the patient, study and frame of reference of
the scanner's series) into ``OUT/dicom/sonication_<k>/`` and sent with C-STORE (:mod:`mrtherm.export.send`). This
runs on a thread of its own: a slow or absent PACS never delays a frame. Every refused object is one log line; the
objects stay in ``OUT/dicom/`` for a later ``mrtherm export ... --send``.
"""

from __future__ import annotations

import logging
import os
import threading

LOG = logging.getLogger("mrtherm.live")


class PacsExport:
    """Export and send finished sonications (see the module docstring).

    Parameters
    ----------
    target : str
        ``HOST:PORT`` of the PACS.
    called_ae, calling_ae : str
        The PACS's AE title and ours.
    out : str
        The live output folder.
    """

    def __init__(self, target, called_ae, calling_ae, out):
        from mrtherm.export.common import host_port  # noqa: PLC0415
        self.host, self.port = host_port(target, "--export-to")
        self.called_ae, self.calling_ae, self.out = called_ae, calling_ae, out
        self.threads: list[threading.Thread] = []

    def submit(self, folder, index, source_paths):
        """Export and send sonication ``index`` (0-based) from ``folder`` on a thread of its own.

        Parameters
        ----------
        folder : str
            Its ``sonication_<k>`` output folder.
        index : int
        source_paths : list of str
            Its first frame's kept images (the objects' source).
        """
        thread = threading.Thread(target=self._run, args=(folder, index, list(source_paths)), daemon=True,
                                  name=f"mrtherm-pacs-{index + 1}")
        self.threads.append(thread)
        thread.start()

    def _run(self, folder, index, source_paths):
        import pydicom  # noqa: PLC0415
        from mrtherm.export.dicom_objects import export_run  # noqa: PLC0415
        from mrtherm.export.send import send_files  # noqa: PLC0415
        target = os.path.join(self.out, "dicom", os.path.basename(folder))
        try:
            dicom_paths = [p for p in source_paths if p.lower().endswith(".dcm")]  # NIfTI frames: no DICOM source
            sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in dicom_paths] or None
            paths = export_run(folder, target, sources=sources)
            results = send_files(paths, self.host, self.port, self.called_ae, self.calling_ae)
        except Exception as exc:  # the treatment goes on; the log says what failed
            LOG.error("sonication %d: DICOM export to %s:%d failed: %s", index + 1, self.host, self.port, exc)
            return
        failed = [r for r in results if not r["ok"]]
        for r in failed:
            LOG.error("sonication %d: %s", index + 1, r["error"])
        LOG.info("sonication %d: %d of %d DICOM objects stored in %s at %s:%d", index + 1,
                 len(results) - len(failed), len(results), self.called_ae, self.host, self.port)

    def close(self, timeout_s=120.0):
        """Wait (at most ``timeout_s`` each) for the exports still running.

        Parameters
        ----------
        timeout_s : float
        """
        for thread in self.threads:
            thread.join(timeout_s)
