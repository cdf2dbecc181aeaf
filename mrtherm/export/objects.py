"""The DICOM objects of an export, one builder each (see :mod:`mrtherm.export.dicom_objects` for what and why)."""

from __future__ import annotations

import os

import numpy as np

from mrtherm.export.common import (PROTECTED, SERIES, SOFTWARE, digest_uid, highdicom, lps_affine,
                                          run_seed)

MANUFACTURER = "mrtherm"
PARAMETRIC_MAP, SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.30", "1.2.840.10008.5.1.4.1.1.7"
_MAP_CODES = {"tmax": ("Tmax", "maximum temperature over the run", "Cel", "degree Celsius"),
              "dose": ("CEM43", "cumulative equivalent minutes at 43 C (Sapareto-Dewey)",
                       "min", "minute"),
              "temperature": ("Temperature", "temperature at the frame's time", "Cel", "degree Celsius")}


def _uid(maps, *kind):
    """Deterministic UIDs: exporting one run twice, from wherever its folder lies, gives the same objects."""
    return digest_uid(run_seed(maps), *kind)


def _volume(hd, array_zyx, maps, sources):
    return hd.Volume(np.ascontiguousarray(array_zyx), lps_affine(maps.affine), "PATIENT",
                     frame_of_reference_uid=str(sources[0].FrameOfReferenceUID))


def parametric_map(maps, sources, kind, array_zyx, number=1, series_kind=None):
    """A Parametric Map of one map (float32 Tmax/temperature in Cel, float64 dose in min).

    Parameters
    ----------
    maps : RunMaps
    sources : list of pydicom.Dataset
    kind : {"tmax", "dose", "temperature"}
    array_zyx : ndarray, shape (z, y, x)
    number : int
        Instance number (the frame for the temperature series).
    series_kind : str, optional
        The series (default ``kind``).

    Returns
    -------
    pydicom.Dataset
    """
    hd = highdicom()
    label, explanation, unit, meaning = _MAP_CODES[kind]
    finite = array_zyx[np.isfinite(array_zyx)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    rwvm = hd.pm.RealWorldValueMapping(lut_label=label, lut_explanation=explanation,
                                       unit=hd.sr.CodedConcept(unit, "UCUM", meaning), value_range=(lo, hi),
                                       slope=1.0, intercept=0.0)
    series = series_kind or kind
    window = (37.0 + 20.0, 40.0) if kind != "dose" else (240.0, 480.0)
    voi = hd.VOILUTTransformation(window_center=window[0], window_width=window[1])
    return hd.pm.ParametricMap(
        sources, _volume(hd, array_zyx, maps, sources), _uid(maps, series, "series"), SERIES[series],
        _uid(maps, series, str(number)), number, MANUFACTURER, "mrtherm", SOFTWARE, "0", False, [rwvm],
        content_label=label.upper()[:16], content_description=f"mrtherm {explanation}",
        voi_lut_transformations=[voi])


def segmentation(maps, sources):
    """A binary Segmentation: the lesion of every dose level, then the protected structures of the labels.

    Parameters
    ----------
    maps : RunMaps
    sources : list of pydicom.Dataset

    Returns
    -------
    pydicom.Dataset or None
        None when there is nothing to segment.
    """
    hd = highdicom()
    from pydicom.sr.codedict import codes  # noqa: PLC0415
    masks, descriptions = [], []
    algorithm = hd.AlgorithmIdentificationSequence(name="mrtherm", version=SOFTWARE,
                                                   family=codes.cid7162.ArtificialIntelligence)
    for level, mask in maps.lesions.items():
        masks.append(mask)
        descriptions.append(hd.seg.SegmentDescription(
            len(masks), f"lesion {level} CEM43", codes.cid7150.MorphologicallyAbnormalStructure, codes.SCT.Necrosis,
            hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm, tracking_id=f"lesion_{level}",
            tracking_uid=_uid(maps, "lesion", level)))
    for label, (name, code) in PROTECTED.items():
        if maps.labels is not None and (maps.labels == label).any():
            masks.append(maps.labels == label)
            descriptions.append(hd.seg.SegmentDescription(
                len(masks), name, codes.cid7150.AnatomicalStructure, getattr(codes.SCT, code),
                hd.seg.SegmentAlgorithmTypeValues.MANUAL, tracking_id=f"label_{label}",
                tracking_uid=_uid(maps, "label", str(label))))
    if not masks:
        return None
    stack = np.stack(masks, axis=-1).astype(np.uint8)  # (z, y, x, segments)
    volume = hd.Volume(stack, lps_affine(maps.affine), "PATIENT",
                       frame_of_reference_uid=str(sources[0].FrameOfReferenceUID),
                       channels={"SegmentNumber": list(range(1, len(masks) + 1))})
    return hd.seg.Segmentation(
        sources, volume, hd.seg.SegmentationTypeValues.BINARY, descriptions, _uid(maps, "seg", "series"),
        SERIES["seg"], _uid(maps, "seg", "1"), 1, MANUFACTURER, "mrtherm", SOFTWARE, "0", omit_empty_frames=False,
        content_label="LESIONS", content_description="mrtherm lesions per dose level and protected structures")


def secondary_capture(maps, sources):
    """A Secondary Capture (RGB) of the run's overview figure; None when the run wrote no figures.

    Parameters
    ----------
    maps : RunMaps
    sources : list of pydicom.Dataset

    Returns
    -------
    pydicom.Dataset or None
    """
    path = os.path.join(maps.folder, "figures", "tmax_dose.png")
    if not os.path.exists(path):
        return None
    import matplotlib.image as mpimg  # noqa: PLC0415
    hd = highdicom()
    rgb = mpimg.imread(path)
    rgb = np.round(np.clip(rgb[..., :3] * (255.0 if rgb.dtype.kind == "f" else 1.0), 0, 255)).astype(np.uint8)
    src = sources[0]
    sc = hd.sc.SCImage(
        np.ascontiguousarray(rgb), "RGB", 8, "PATIENT", str(src.StudyInstanceUID), _uid(maps, "sc", "series"),
        SERIES["sc"], _uid(maps, "sc", "1"), 1, MANUFACTURER, patient_id=str(src.PatientID),
        patient_name=str(src.PatientName), patient_birth_date=str(src.get("PatientBirthDate", "")) or None,
        patient_sex=str(src.get("PatientSex", "")) or None, study_date=str(src.get("StudyDate", "")) or None,
        study_time=str(src.get("StudyTime", "")) or None, accession_number=str(src.get("AccessionNumber", "")) or None,
        study_id=str(src.get("StudyID", "")) or None,
        referring_physician_name=str(src.get("ReferringPhysicianName", "")) or None, patient_orientation=("L", "P"))
    sc.PatientOrientation = ""  # a montage of figures: no one orientation (type 2, so present and empty)
    sc.SeriesDescription = "mrtherm overview: Tmax and dose"
    return sc


def build_all(maps, sources, from_dicom, temperature):
    """Every object of an export as ``[(file name, dataset)]`` (see :func:`mrtherm.export.dicom_objects.export_run`).

    Parameters
    ----------
    maps : RunMaps
    sources : list of pydicom.Dataset
    from_dicom : bool
        False: the sources are the placeholder, and the references to them are removed.
    temperature : bool

    Returns
    -------
    list of (str, pydicom.Dataset)
    """
    from mrtherm.export import report_sr  # noqa: PLC0415
    made = [("tmax_pm.dcm", parametric_map(maps, sources, "tmax", maps.tmax_c)),
            ("dose_pm.dcm", parametric_map(maps, sources, "dose", maps.dose))]
    if temperature:
        for t, frame in enumerate(maps.temperature()):
            made.append((f"temperature_pm_{t + 1:04d}.dcm", parametric_map(maps, sources, "temperature", frame,
                                                                            number=t + 1)))
    seg = segmentation(maps, sources)
    if seg is not None:
        made.append(("seg.dcm", seg))
    sc = secondary_capture(maps, sources)
    if sc is not None:
        made.append(("overview_sc.dcm", sc))
    made.append(("sr.dcm", report_sr.measurement_report(maps, sources, dict(made))))
    for _, ds in made:
        _finish(ds, from_dicom)
    return made


def _finish(ds, from_dicom):
    """Attributes dciodvfy asks for that highdicom leaves out; without a DICOM source, no reference to one."""
    if ds.SOPClassUID in (PARAMETRIC_MAP, SECONDARY_CAPTURE) and "Laterality" not in ds:
        ds.Laterality = ""  # General Series, type 2C; dciodvfy asks for it in these IODs (not in SEG and SR)
    if not from_dicom:
        for key in ("ReferencedSeriesSequence", "SourceImageSequence", "ReferencedImageSequence"):
            if key in ds:
                del ds[key]
        groups = [*ds.get("SharedFunctionalGroupsSequence", []), *ds.get("PerFrameFunctionalGroupsSequence", [])]
        for item in groups:
            if "DerivationImageSequence" in item:
                del item.DerivationImageSequence
