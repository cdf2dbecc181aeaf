"""Whose images a live treatment takes: the patient, study and frame of reference its first image fixes.

A live service listens on a hospital network where routers forward whatever
they are given. An image of another patient, another study or another frame
of reference (the coordinates the cumulative dose is summed in) is refused
with a DICOM failure status, never kept, and listed in report.json. The only
way to continue a treatment in another study (the console started a new one
mid-treatment) is an explicit ``--new-study`` at the service's start: the first
image of another study *of the same patient* then becomes the treatment's
study and frame of reference, once. Another patient is always refused: a new
patient is a new treatment, in a new output folder.

The refusal names the study and series but never the other patient's ID or
name (they would otherwise land in this patient's log and report).
"""

from __future__ import annotations

import dataclasses

from mrtherm.live.assembler import RefusedImage

STATUS_OTHER_PATIENT = 0xC215  # Cxxx "cannot understand": not this treatment's patient
STATUS_OTHER_STUDY = 0xC216  # another study or frame of reference of the patient
MAX_LISTED = 100  # refusals listed one by one in report.json (all are counted)


@dataclasses.dataclass(frozen=True)
class Identity:
    """Patient, study and frame of reference of an image (``""`` where the image does not state one)."""

    patient_id: str
    study_uid: str
    frame_of_reference_uid: str

    @classmethod
    def of(cls, rec) -> "Identity":
        """The identity a :class:`mrtherm.io.dicom.images.DicomImage` states.

        Parameters
        ----------
        rec : DicomImage

        Returns
        -------
        Identity
        """
        return cls(rec.patient_id, rec.study_uid, rec.frame_of_reference_uid)


class TreatmentIdentity:
    """The identity a treatment's images must share (see the module docstring).

    Parameters
    ----------
    new_study : bool
        Accept one new study (and frame of reference) of the same patient.
    """

    def __init__(self, new_study: bool = False):
        self.current: Identity | None = None
        self.new_study_allowed = bool(new_study)
        self.changes: list[dict] = []  # the studies taken on with --new-study
        self.refused: list[dict] = []
        self.refused_count = 0

    def check(self, rec) -> Identity:
        """The image's identity if the treatment takes it; RefusedImage otherwise (recorded).

        Parameters
        ----------
        rec : DicomImage

        Returns
        -------
        Identity
        """
        ident = Identity.of(rec)
        cur = self.current
        if cur is None or ident == cur:
            return ident
        if ident.patient_id != cur.patient_id:
            self._refuse(rec, STATUS_OTHER_PATIENT, "another patient (PatientID differs from the treatment's)")
        if ident.study_uid == cur.study_uid:
            self._refuse(rec, STATUS_OTHER_STUDY, f"frame of reference {ident.frame_of_reference_uid or '(none)'} "
                         f"is not the treatment's {cur.frame_of_reference_uid or '(none)'}")
        if not self.new_study_allowed:
            self._refuse(rec, STATUS_OTHER_STUDY, f"study {ident.study_uid or '(none)'} is not the treatment's "
                         f"{cur.study_uid or '(none)'} (start the service with --new-study to continue the "
                         "treatment in a new study of this patient)")
        return ident

    def accept(self, ident: Identity, where: str) -> bool:
        """Make ``ident`` the treatment's after its image was kept; True when it started a new study.

        Parameters
        ----------
        ident : Identity
            From :meth:`check`.
        where : str
            The image, for the record.

        Returns
        -------
        bool
        """
        if self.current is None or ident == self.current:
            self.current = ident
            return False
        self._follow(ident, where)
        self.new_study_allowed = False  # once per start of the service
        return True

    def adopt(self, rec, where: str = "") -> None:
        """Follow a kept image on replay (it was accepted when it arrived, possibly into a new study: recorded).

        Parameters
        ----------
        rec : DicomImage
        where : str
            The kept image, for the record of a study change.
        """
        ident = Identity.of(rec)
        if self.current is not None and ident.study_uid != self.current.study_uid:
            self._follow(ident, where)
        self.current = ident

    def _follow(self, ident, where):
        """Record the move to another study and take its identity."""
        self.changes.append({"from_study": self.current.study_uid, "to_study": ident.study_uid,
                             "frame_of_reference": ident.frame_of_reference_uid, "first_image": where})
        self.current = ident

    def _refuse(self, rec, status, reason):
        self.refused_count += 1
        if len(self.refused) < MAX_LISTED:
            self.refused.append({"image": rec.where, "status": f"0x{status:04X}", "reason": reason,
                                 "study_instance_uid": rec.study_uid, "series_instance_uid": rec.series_uid})
        raise RefusedImage(status, f"{rec.where}: {reason}")

    def report(self) -> dict:
        """report.json's record.

        Returns
        -------
        dict
        """
        cur = self.current
        return {"study_instance_uid": None if cur is None else cur.study_uid,
                "frame_of_reference_uid": None if cur is None else cur.frame_of_reference_uid,
                "new_studies": list(self.changes), "refused_images": self.refused_count,
                "refused": list(self.refused)}
