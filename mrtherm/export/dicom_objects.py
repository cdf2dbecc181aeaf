"""A run's results as standard DICOM objects for the PACS (highdicom), values equal to the NIfTI maps.

What ``mrtherm export RUN --dicom OUT`` writes (one file per object, the folder complete or not at all):

- ``tmax_pm.dcm``, ``dose_pm.dcm``: **Parametric Maps** of Tmax (float32, UCUM ``Cel``) and the cumulative
  CEM43 dose (float64, UCUM ``min``), with Real World Value Mapping; NaN where nothing was measured, as in the
  NIfTI maps. With ``temperature=True`` also ``temperature_pm_<frame>.dcm``, one Parametric Map per frame of the
  4-D temperature (one series).
- ``seg.dcm``: a binary **Segmentation**: one segment per lesion dose level (``lesion_<level>.nii.gz``) and one
  per protected structure of the run's labels (spinal cord, nerve root).
- ``sr.dcm``: a **TID 1500 Measurement Report** (Comprehensive 3D SR): per lesion level its volume (mL) on its
  segment, the peak temperature (Cel) and the maximum dose (min) on their Parametric Maps, each alarm as a
  qualitative evaluation, and the acquisition parameters (TE, B0, the PRF coefficient).
- ``overview_sc.dcm``: a **Secondary Capture** of the run's overview figure (``figures/tmax_dose.png``), for
  viewers that do not render Parametric Maps.

Geometry comes from the run's NIfTI affine (RAS+, voxel (x, y, z)), converted to DICOM patient coordinates (LPS)
with the slices in array order, oblique included. Identity: when the run came from DICOM (``report.json``
``inputs.dicom``, or ``source_dicom``), the objects reference the source series and carry its patient, study and
frame of reference. From NIfTI there is no source to reference; the objects then carry a documented
de-identified placeholder (PatientID ``MRTHERM-ANONYMOUS``, PatientName ``Anonymous^mrtherm``, a study and frame
of reference UID derived from the run's report so that exporting one run twice lands in one study) unless
``patient_id`` / ``study_uid`` are given, and their references to a source series are removed (none exists).

Codes: SNOMED CT where one fits (Necrosis for a lesion, Spinal cord, Nerve); values without a standard code use
the local coding scheme ``99MRTHERM`` (DICOM PS3.16 allows 99-prefixed local schemes).
"""

from __future__ import annotations

import copy
import glob
import json
import os

import numpy as np

from mrtherm.errors import MrthermError, ParameterError
from mrtherm.export import objects
from mrtherm.export.common import (PLACEHOLDER_PATIENT_ID, PLACEHOLDER_PATIENT_NAME, TYPE2_PATIENT_STUDY, lps_affine,
                                   run_seed)
from mrtherm.io import atomic

class RunMaps:
    """The maps and report of a run folder, arrays as (z, y, x) (or (t, z, y, x)).

    Parameters
    ----------
    folder : str
        A ``mrtherm run`` output folder.
    """

    def __init__(self, folder):
        import nibabel as nib  # noqa: PLC0415
        self.folder = os.path.abspath(os.fspath(folder))
        path = os.path.join(self.folder, "report.json")
        try:
            with open(path, encoding="utf-8") as fh:
                self.report = json.load(fh)
        except (OSError, ValueError) as exc:
            raise MrthermError(f"{path}: not a readable mrtherm report ({exc})") from None
        self._nib = nib
        tmax = self._load("tmax.nii.gz")
        self.affine = tmax.affine
        self.tmax_c = self._zyx(tmax, np.float32)
        self.dose = self._zyx(self._load("dose_cem43.nii.gz"), np.float64)
        self.lesions = {}
        for p in sorted(glob.glob(os.path.join(self.folder, "lesion_*.nii.gz"))):
            level = os.path.basename(p)[len("lesion_"):-len(".nii.gz")]
            self.lesions[level] = self._zyx(self._load(os.path.basename(p)), np.uint8) > 0
        labels = os.path.join(self.folder, "labels.nii.gz")
        self.labels = self._zyx(self._load("labels.nii.gz"), np.int32) if os.path.exists(labels) else None

    def _load(self, name):
        path = os.path.join(self.folder, name)
        try:
            return self._nib.load(path)
        except (OSError, ValueError) as exc:
            raise MrthermError(f"{path}: missing or not readable ({type(exc).__name__}); is {self.folder} a "
                               "mrtherm run folder?") from None

    @staticmethod
    def _zyx(img, dtype):
        arr = np.asarray(img.dataobj, dtype=dtype)
        return np.ascontiguousarray(np.transpose(arr, (2, 1, 0)) if arr.ndim == 3 else np.transpose(arr, (3, 2, 1, 0)))

    def temperature(self):
        """The 4-D temperature, (t, z, y, x) float32 C.

        Returns
        -------
        ndarray
        """
        return self._zyx(self._load("temperature.nii.gz"), np.float32)


def source_images(maps: RunMaps, source_dicom=None):
    """The source series' images on the maps' grid (headers only), or None for a run from NIfTI.

    Parameters
    ----------
    maps : RunMaps
    source_dicom : str, optional
        The DICOM folder the run read (default: ``report.json`` ``inputs.dicom``, as given or beside the run).

    Returns
    -------
    list of pydicom.Dataset or None
    """
    folder = source_dicom or maps.report.get("inputs", {}).get("dicom")
    if folder is None:
        return None
    candidates = [folder, os.path.join(os.path.dirname(maps.folder), folder)]
    found = next((c for c in candidates if os.path.isdir(c)), None)
    if found is None:
        raise MrthermError(f"{folder}: the run's DICOM source folder is not there; give it with --source")
    return _first_frame_images(found, maps.tmax_c.shape)


def _first_frame_images(folder, shape_zyx):
    import pydicom  # noqa: PLC0415
    by_series = {}
    for path in sorted(glob.glob(os.path.join(folder, "**", "*"), recursive=True)):
        if not os.path.isfile(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM: the run skipped it too
            continue
        if "ImagePositionPatient" in ds or "PerFrameFunctionalGroupsSequence" in ds:
            by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    for series in sorted(by_series.values(), key=lambda s: int(s[0].get("SeriesNumber", 0) or 0)):
        if (int(series[0].Rows), int(series[0].Columns)) != tuple(shape_zyx[1:]):
            continue
        if int(series[0].get("NumberOfFrames", 1) or 1) > 1:
            return [_with_type2(series[0])]
        first = {}
        for ds in sorted(series, key=lambda d: int(d.get("AcquisitionNumber", 0) or 0)):
            first.setdefault(tuple(round(float(v), 3) for v in ds.ImagePositionPatient), ds)
        if len(first) == shape_zyx[0]:
            return [_with_type2(ds) for ds in first.values()]
    raise MrthermError(f"{folder}: no series on the run's grid ({shape_zyx[0]} slices of {shape_zyx[1]} x "
                       f"{shape_zyx[2]})")


def _with_type2(ds):
    """A copy with the patient and study attributes of type 2 present (empty where the source left them out)."""
    ds = copy.deepcopy(ds)
    for key in TYPE2_PATIENT_STUDY:
        if key not in ds:
            setattr(ds, key, "")
    return ds


def placeholder_source(maps: RunMaps, patient_id=None, study_uid=None):
    """A stand-in source image for a run from NIfTI: the placeholder identity (see the module docstring).

    Parameters
    ----------
    maps : RunMaps
    patient_id, study_uid : str, optional

    Returns
    -------
    list of pydicom.Dataset
        One MR image header (never written) carrying the identity and the grid's first slice.
    """
    import pydicom  # noqa: PLC0415
    seed = run_seed(maps)
    uid = lambda kind: pydicom.uid.generate_uid(entropy_srcs=[seed, kind])  # noqa: E731
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", uid("image")
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "MR", uid("series"), 1
    ds.StudyInstanceUID = study_uid or uid("study")
    ds.FrameOfReferenceUID = uid("frame of reference")
    ds.PatientID, ds.PatientName = patient_id or PLACEHOLDER_PATIENT_ID, PLACEHOLDER_PATIENT_NAME
    ds.Rows, ds.Columns = int(maps.tmax_c.shape[1]), int(maps.tmax_c.shape[2])
    aff = lps_affine(maps.affine)
    ds.ImagePositionPatient = [float(v) for v in aff[:3, 3]]
    row, col = aff[:3, 2], aff[:3, 1]  # along a row: x (columns); along a column: y (rows)
    ds.ImageOrientationPatient = [float(v) for v in np.concatenate([row / np.linalg.norm(row),
                                                                     col / np.linalg.norm(col)])]
    ds.PixelSpacing = [float(np.linalg.norm(col)), float(np.linalg.norm(row))]
    ds.SliceThickness = float(np.linalg.norm(aff[:3, 0]))
    return [_with_type2(ds)]


def _identity(sources, patient_id, study_uid):
    """Override the patient and study of the sources (``--patient-id``/``--study-uid``)."""
    if patient_id is None and study_uid is None:
        return sources
    out = []
    for ds in sources:
        ds = copy.deepcopy(ds)
        if patient_id is not None:
            ds.PatientID = patient_id
        if study_uid is not None:
            ds.StudyInstanceUID = study_uid
        out.append(ds)
    return out


def export_run(run_folder, out_dir, source_dicom=None, patient_id=None, study_uid=None, temperature=False,
               sources=None):
    """Write a run's results as DICOM objects into ``out_dir`` (see the module docstring).

    Parameters
    ----------
    run_folder : str
        A ``mrtherm run`` output folder.
    out_dir : str
        Created or completed; the objects are staged and moved in together.
    source_dicom : str, optional
        The DICOM folder the run read, when ``report.json`` does not lead to it.
    patient_id, study_uid : str, optional
        Identity to use instead of the source's (or the placeholder's).
    temperature : bool
        Also one Parametric Map per frame of the 4-D temperature.
    sources : list of pydicom.Dataset, optional
        The source images themselves (one per slice of the run's grid; a live sonication's first frame).

    Returns
    -------
    list of str
        The written files.
    """
    maps = RunMaps(run_folder)
    sources = [_with_type2(ds) for ds in sources] if sources else source_images(maps, source_dicom)
    from_dicom = sources is not None
    if from_dicom and (patient_id is not None or study_uid is not None):
        raise ParameterError("--patient-id and --study-uid apply to runs from NIfTI: this run came from DICOM, and "
                             "its objects carry the source's patient and study (and reference its images)")
    if sources is None:
        sources = placeholder_source(maps, patient_id, study_uid)
    sources = _identity(sources, patient_id, study_uid)
    made = objects.build_all(maps, sources, from_dicom, temperature)
    names = []
    with atomic.staged(out_dir) as stage:
        for name, ds in made:
            ds.save_as(os.path.join(stage, name), enforce_file_format=True)
            names.append(name)
    return [os.path.join(os.path.abspath(os.fspath(out_dir)), n) for n in names]
