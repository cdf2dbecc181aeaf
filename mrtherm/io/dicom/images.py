"""One record per 2-D DICOM image: a classic single-frame file, or one frame of an enhanced file.

Enhanced MR (multi-frame) attributes come from the per-frame functional group
of the frame, then the shared group, then the top level, as the standard
nests them (Plane Position/Orientation, Pixel Measures, MR Echo, MR Image Frame
Type, Frame Content, Pixel Value Transformation, Real World Value Mapping).
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

import numpy as np

from mrtherm.errors import InputFileError
from mrtherm.text import count
from mrtherm.io import roles
from mrtherm.io.dicom import vendor


@dataclass
class DicomImage:
    """One 2-D DICOM image: where it is, what it is (role, echo, time) and how to scale it."""
    path: str
    frame: int | None  # index in a multi-frame file (0-based), None for single-frame files
    sop_uid: str
    series_uid: str
    series_number: int | None
    series_description: str
    manufacturer: str
    role: str | None
    role_source: str | None
    echo_number: int | None
    te_ms: float | None
    position: np.ndarray  # ImagePositionPatient, LPS mm
    orientation: np.ndarray  # ImageOrientationPatient (row direction, column direction)
    pixel_spacing: tuple  # (between rows, between columns) mm
    rows: int
    cols: int
    slice_spacing_mm: float | None
    time_s: float | None  # acquisition time, s since 1970 (or since midnight without a date)
    time_source: str | None
    temporal_index: int | None
    acquisition_number: int | None
    instance_number: int | None
    slope: float
    intercept: float
    units: str | None
    philips_ss: float | None
    b0_t: float | None
    sequence_name: str
    # who and where: the patient, study and frame of reference the image belongs to ("" when not stated)
    patient_id: str = ""
    study_uid: str = ""
    frame_of_reference_uid: str = ""

    @property
    def where(self) -> str:
        """File name (and frame number of a multi-frame file) for messages."""
        return self.path if self.frame is None else f"{self.path} (frame {self.frame + 1})"

    @property
    def normal(self) -> np.ndarray:
        """Slice normal, ``row direction x column direction`` (LPS)."""
        return np.cross(self.orientation[:3], self.orientation[3:])


def _first(*values):
    for v in values:
        if v is not None and v != "":
            return v
    return None


def _seq_item(group, keyword):
    if group is None:
        return None
    seq = group.get(keyword)
    return seq[0] if seq else None


def _attr(groups, seq_keyword, keyword):
    """``keyword`` inside functional-group sequence ``seq_keyword``: per-frame, then shared."""
    for g in groups:
        item = _seq_item(g, seq_keyword)
        if item is not None and keyword in item:
            value = item.get(keyword)
            return value.value if hasattr(value, "VR") else value  # a tag key gives the DataElement
    return None


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


_DIGITS = re.compile(r"[^0-9.]")


def parse_datetime(date, time) -> float | None:
    """DICOM DA + TM (or a DT when ``date`` is None) to seconds; None when absent or unparsable."""
    if time is None or str(time).strip() == "":
        return None
    if date is None:
        text = _DIGITS.sub("", str(time))
        date, time = text[:8], text[8:]
    t = _DIGITS.sub("", str(time))
    if len(t) < 2:
        return None
    hh, mm = int(t[0:2]), int(t[2:4] or 0)
    ss = float(t[4:] or 0.0)
    seconds = hh * 3600 + mm * 60 + ss
    d = _DIGITS.sub("", str(date or ""))
    if len(d) >= 8:
        try:
            day = _dt.date(int(d[0:4]), int(d[4:6]), int(d[6:8]))
        except ValueError:
            return seconds
        return (day - _dt.date(1970, 1, 1)).days * 86400.0 + seconds
    return seconds


def _acquisition_time(ds, groups):
    frame_dt = _attr(groups, "FrameContentSequence", "FrameAcquisitionDateTime")
    for value, src in ((frame_dt, "FrameAcquisitionDateTime"), (ds.get("AcquisitionDateTime"), "AcquisitionDateTime")):
        t = parse_datetime(None, value) if value else None
        if t is not None:
            return t, src
    for date_kw, time_kw in (("AcquisitionDate", "AcquisitionTime"), ("ContentDate", "ContentTime")):
        t = parse_datetime(ds.get(date_kw) or ds.get("SeriesDate") or ds.get("StudyDate"), ds.get(time_kw))
        if t is not None:
            return t, time_kw
    return None, None


def _role(ds, groups, manufacturer, philips_item):
    comp = _attr(groups, "MRImageFrameTypeSequence", "ComplexImageComponent")
    role = roles.role_from_complex_component(comp)
    if role is not None:
        return role, f"ComplexImageComponent {comp}"
    if manufacturer == "ge":
        role, source = vendor.ge_role(ds)
        if role is not None:
            return role, source
    rwv_units = _rwv_units(groups + [ds])
    if roles.role_from_units(rwv_units):
        return roles.FIELDMAP_HZ, "Real World Value Mapping units Hz"
    for label, image_type in (("FrameType", _attr(groups, "MRImageFrameTypeSequence", "FrameType")),
                              ("ImageType", philips_item.get("ImageType") if philips_item is not None else None),
                              ("ImageType", ds.get("ImageType"))):
        role = roles.role_from_image_type(list(image_type) if image_type is not None else None)
        if role is not None:
            return role, f"{label} {list(image_type)}"
    return None, None


def _rwv_units(groups):
    for g in groups:
        rwv = g.get("RealWorldValueMappingSequence") if g is not None else None
        if rwv:
            units = rwv[0].get("MeasurementUnitsCodeSequence")
            if units:
                return str(units[0].get("CodeValue", "")).strip() or None
    return None


def records(path: str, ds) -> list[DicomImage]:
    """The 2-D images of one file (one for classic DICOM, NumberOfFrames for enhanced).

    Parameters
    ----------
    path : str
        The file, named in errors and kept in each record.
    ds : pydicom.dataset.Dataset
        Its header.

    Returns
    -------
    list of DicomImage

    Raises
    ------
    InputFileError
        Enhanced DICOM whose per-frame groups do not match NumberOfFrames, or a multi-frame file without them.
    """
    n_frames = _int(ds.get("NumberOfFrames")) or 1
    enhanced = "PerFrameFunctionalGroupsSequence" in ds
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") if enhanced else None
    if enhanced and (per_frame is None or len(per_frame) != n_frames):
        raise InputFileError(path, f"enhanced DICOM with {count(n_frames, 'frame')} but "
                             f"{0 if per_frame is None else len(per_frame)} per-frame functional groups")
    if not enhanced and n_frames > 1:
        raise InputFileError(path, f"multi-frame file ({n_frames} frames) without per-frame functional groups: "
                             "not supported")
    manufacturer = vendor.manufacturer_key(ds.get("Manufacturer"))
    out = []
    for f in range(n_frames):
        pf = per_frame[f] if enhanced else None
        groups = [g for g in (pf, shared) if g is not None]
        out.append(_record(path, ds, f if enhanced else None, groups, manufacturer))
    return out


def _record(path, ds, frame, groups, manufacturer):
    philips_item = None
    for g in groups:  # Philips per-frame private copy of the classic attributes
        seq = g.get((0x2005, 0x140F))
        if seq is not None and seq.value:
            philips_item = seq.value[0]
            break
    pos = _first(_attr(groups, "PlanePositionSequence", "ImagePositionPatient"), ds.get("ImagePositionPatient"))
    iop = _first(_attr(groups, "PlaneOrientationSequence", "ImageOrientationPatient"),
                 ds.get("ImageOrientationPatient"))
    spacing = _first(_attr(groups, "PixelMeasuresSequence", "PixelSpacing"), ds.get("PixelSpacing"))
    where = path if frame is None else f"{path} (frame {frame + 1})"
    if pos is None or iop is None or spacing is None:
        missing = [n for n, v in (("ImagePositionPatient", pos), ("ImageOrientationPatient", iop),
                                  ("PixelSpacing", spacing)) if v is None]
        raise InputFileError(where, f"no {', '.join(missing)}: the image cannot be placed in the patient")
    role, role_source = _role(ds, groups, manufacturer, philips_item)
    slope = _float(_first(_attr(groups, "PixelValueTransformationSequence", "RescaleSlope"), ds.get("RescaleSlope")))
    inter = _float(_first(_attr(groups, "PixelValueTransformationSequence", "RescaleIntercept"),
                          ds.get("RescaleIntercept")))
    units = _rwv_units(groups + [ds])
    if units in (None, "1"):
        rtype = _first(_attr(groups, "PixelValueTransformationSequence", "RescaleType"), ds.get("RescaleType"))
        units = str(rtype).strip() if rtype is not None and str(rtype).strip().lower() in ("mrad", "rad", "hz") \
            else None
    time_s, time_src = _acquisition_time(ds, groups)
    te = _float(_first(_attr(groups, "MREchoSequence", "EffectiveEchoTime"), ds.get("EchoTime"),
                       philips_item.get("EchoTime") if philips_item is not None else None))
    echo = _int(_first(ds.get("EchoNumbers"), philips_item.get("EchoNumbers") if philips_item is not None else None))
    seq_name = _first(ds.get("SequenceName"), ds.get("PulseSequenceName"),
                      _attr(groups, "MRImageFrameTypeSequence", (0x0021, 0x1177)))
    b0 = _float(ds.get("MagneticFieldStrength"))
    thick = _float(_first(_attr(groups, "PixelMeasuresSequence", "SpacingBetweenSlices"),
                          ds.get("SpacingBetweenSlices"),
                          _attr(groups, "PixelMeasuresSequence", "SliceThickness"), ds.get("SliceThickness")))
    return DicomImage(
        path=path, frame=frame,
        sop_uid=str(ds.get("SOPInstanceUID", "")) + ("" if frame is None else f"#{frame}"),
        series_uid=str(ds.get("SeriesInstanceUID", "")), series_number=_int(ds.get("SeriesNumber")),
        series_description=str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "") or ""),
        manufacturer=manufacturer, role=role, role_source=role_source, echo_number=echo, te_ms=te,
        position=np.asarray([float(v) for v in pos]), orientation=np.asarray([float(v) for v in iop]),
        pixel_spacing=(float(spacing[0]), float(spacing[1])), rows=int(ds.Rows), cols=int(ds.Columns),
        slice_spacing_mm=thick, time_s=time_s, time_source=time_src,
        temporal_index=_int(_first(_attr(groups, "FrameContentSequence", "TemporalPositionIndex"),
                                   ds.get("TemporalPositionIdentifier"))),
        acquisition_number=_int(_first(_attr(groups, "FrameContentSequence", "FrameAcquisitionNumber"),
                                       ds.get("AcquisitionNumber"))),
        instance_number=_int(ds.get("InstanceNumber")),
        slope=1.0 if slope is None else slope, intercept=0.0 if inter is None else inter, units=units,
        philips_ss=vendor.philips_scale_slope(philips_item if philips_item is not None else ds)
        if manufacturer == "philips" else None,
        b0_t=b0 / 10000.0 if b0 is not None and b0 > 20 else b0,  # old GE headers give gauss
        sequence_name=str(seq_name or ""), patient_id=str(ds.get("PatientID", "") or "").strip(),
        study_uid=str(ds.get("StudyInstanceUID", "") or "").strip(),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or "").strip())


def rescaled(im: DicomImage, stored: np.ndarray, role: str | None) -> np.ndarray:
    """One image's stored values after the vendor rescale, as float32 (the one conversion of batch and live).

    Parameters
    ----------
    im : DicomImage
        The image's record (slope, intercept, Philips scale slope).
    stored : ndarray, shape (rows, cols)
        Stored pixel values.
    role : str or None
        The component; Philips magnitude (and real/imaginary) values are divided by ``RescaleSlope * ScaleSlope``
        (2005,100E), as dcm2niix does, phase is not.

    Returns
    -------
    ndarray of float32, shape (rows, cols)
    """
    v = stored.astype(np.float64) * im.slope + im.intercept
    if im.philips_ss and role != roles.PHASE:
        v = v / (im.slope * im.philips_ss)
    return v.astype(np.float32)
