"""MR DICOM input: classic single-frame and enhanced multi-frame files from every vendor (pydicom).

Modules by responsibility, as nibabel's ``nicom``: :mod:`.files` (finding and
reading files), :mod:`.images` (one record per 2-D image), :mod:`.vendor`
(vendor conventions), :mod:`.geometry` (slice order, affine), :mod:`.assemble`
(images to frames and slices), :mod:`.series` (streaming frames),
:mod:`.loader` (the :class:`mrtherm.Exam`), :mod:`.synth` (synthetic vendor
exams for tests and demonstrations).
"""

from mrtherm.io.dicom.loader import load_dicom_exam

__all__ = ["load_dicom_exam"]
