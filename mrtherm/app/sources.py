"""Frame sources: where a run's frames come from, behind one protocol.

A :class:`FrameSource` is a treatment's sonications in order, each a :class:`SonicationFrames` (an opened
:class:`mrtherm.io.exam_data.Exam` is one). The driver (:func:`mrtherm.app.driver.run`) sends one sonication
through :func:`mrtherm.app.process.process_to_folder` and several through
:func:`mrtherm.app.treatment.run_treatment`, without knowing which reader made them.

Files and arrays are pulled: :class:`ExamSource` (NIfTI, arrays, one DICOM series) and :class:`DicomTreatmentSource`
(a DICOM folder of several sonications). The scanner pushes: ``mrtherm live`` (DICOM network or a watched export
folder) assembles frames as images arrive and feeds each sonication's frames to the same frame loop
(:class:`mrtherm.app.sonication.SonicationRun`) and the same sums (:class:`mrtherm.app.treatment.Treatment`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["DicomTreatmentSource", "ExamSource", "FrameSource", "SonicationFrames"]


@runtime_checkable
class SonicationFrames(Protocol):
    """What the frame loop reads of one sonication (:class:`mrtherm.io.exam_data.Exam` satisfies it)."""

    shape_zyx: tuple
    affine: object
    te_s: float
    b0_t: float
    frame_times_s: object
    warnings: list

    @property
    def n_frames(self) -> int:
        """Frames in the sonication."""

    def frame_parts(self, t: int) -> tuple:
        """Frame ``t`` as ``(a, b, polar)``: magnitude and phase (rad) when ``polar``, else real and imaginary.

        Parameters
        ----------
        t : int

        Returns
        -------
        tuple
        """


@runtime_checkable
class FrameSource(Protocol):
    """A treatment's frames: one or more sonications, in treatment order."""

    def sonications(self) -> list:
        """The sonications, each a :class:`SonicationFrames`.

        Returns
        -------
        list of SonicationFrames
        """


class ExamSource:
    """One exam (NIfTI files, arrays or one DICOM series) as a source of one sonication.

    Parameters
    ----------
    exam : Exam
    """

    def __init__(self, exam):
        self.exam = exam

    def sonications(self) -> list:
        """``[exam]``.

        Returns
        -------
        list of Exam
        """
        return [self.exam]


class DicomTreatmentSource:
    """A DICOM folder, grouped into sonications by series and acquisition (:mod:`mrtherm.io.dicom.sonications`).

    Parameters
    ----------
    folder : str
    **kwargs
        For :func:`mrtherm.io.dicom.loader.load_dicom_treatment` (echo, te_s, b0_t, frame times, phase_scale).
    """

    def __init__(self, folder, **kwargs):
        self.folder, self.kwargs = folder, kwargs
        self._exams = None

    def sonications(self) -> list:
        """One exam per sonication, read once.

        Returns
        -------
        list of Exam
        """
        if self._exams is None:
            from mrtherm.io.dicom.loader import load_dicom_treatment  # noqa: PLC0415 -- pydicom only for DICOM
            self._exams = load_dicom_treatment(self.folder, **self.kwargs)
        return self._exams
