"""Write a thermometry exam (e.g. the phantom) as DICOM in a vendor's convention, for tests and demonstrations.

Conventions written (the reader must recover them from the tags alone):

================= ====================================================================================
vendor            files
================= ====================================================================================
siemens           classic MR, magnitude series N (``ImageType ...\\M\\ND``) and phase series N+1
                  (``...\\P\\ND``), phase stored 0..4095 with rescale 2 / -4096; one folder per series;
                  each repetition its own AcquisitionNumber and (per slice) AcquisitionTime
siemens-enhanced  Enhanced MR (XA style), one multi-frame file per series, ComplexImageComponent,
                  per-frame FrameAcquisitionDateTime and rescale
ge                classic MR, magnitude and phase in one series, private image type (0043,102F) 0 / 1,
                  phase as int16 milliradians, file names ``i<n>.MRDC.<k>`` without extension
philips           classic MR, ``ImageType ...\\M_FFE\\M\\FFE`` / ``...\\PHASE MAP\\P\\FFE``, phase rescale in
                  mrad (slope 2000 pi / 4095, intercept -3142, RescaleType and Real World Value Mapping
                  ``mrad``), magnitude rescale slope and private scale slope (2005,100E)
philips-enhanced  Enhanced MR, magnitude and phase frames in one file
================= ====================================================================================

Files are written in shuffled order under random names, so nothing can be
inferred from names or order; frames inside an enhanced file are in dimension
order (stack position, then time), as scanners write them.
"""

from __future__ import annotations

import datetime as _dt
import math
import os

import numpy as np

from mrtherm.io import atomic
from mrtherm.errors import ParameterError
from mrtherm.io.dicom.files import pydicom

VENDORS = ("siemens", "siemens-enhanced", "ge", "philips", "philips-enhanced")
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
PHILIPS_PHASE_SLOPE = 2000.0 * math.pi / 4095.0
PHILIPS_RS, PHILIPS_SS = 1.25, 0.004


def _ds(value) -> str:
    return f"{float(value):.10g}"


def _lps_geometry(affine):
    a = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    dc, dr = np.linalg.norm(a[:3, 0]), np.linalg.norm(a[:3, 1])
    iop = np.concatenate([a[:3, 0] / dc, a[:3, 1] / dr])
    return a, iop, (dr, dc)


def _quantise(magnitude, phase_rad, vendor, magnitude_max=None):
    scale = 3000.0 / max(float(np.max(magnitude) if magnitude_max is None else magnitude_max), 1e-12)
    mag = np.clip(np.round(magnitude * scale), 0, 4095).astype(np.uint16)
    if vendor.startswith("siemens"):
        ph = np.clip(np.round((phase_rad * 4096.0 / math.pi + 4096.0) / 2.0), 0, 4095).astype(np.uint16)
        return mag, ph, (2.0, -4096.0)
    if vendor == "ge":
        return mag.astype(np.int16), np.round(np.angle(np.exp(1j * phase_rad)) * 1000.0).astype(np.int16), (1.0, 0.0)
    ph = np.clip(np.round((np.angle(np.exp(1j * phase_rad)) * 1000.0 + 3142.0) / PHILIPS_PHASE_SLOPE), 0, 4095)
    return mag, ph.astype(np.uint16), (PHILIPS_PHASE_SLOPE, -3142.0)


def _base(common, sop_class, uid):
    pd = pydicom()
    meta = pd.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = pd.uid.ExplicitVRLittleEndian
    ds = pd.dataset.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
    for k, v in common.items():
        setattr(ds, k, v)
    return ds


def _pixels(ds, arr):
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if arr.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()


def _clock(t0: _dt.datetime, seconds: float):
    t = t0 + _dt.timedelta(seconds=float(seconds))
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S.%f")


def _common(vendor, exam, uids):
    manufacturer = {"siemens": "SIEMENS", "siemens-enhanced": "Siemens Healthineers", "ge": "GE MEDICAL SYSTEMS",
                    "philips": "Philips Medical Systems", "philips-enhanced": "Philips"}[vendor]
    return {"Modality": "MR", "Manufacturer": manufacturer, "PatientName": uids.get("patient_name", "mrtherm^phantom"),
            "PatientID": uids.get("patient_id", "MRTHERM-PHANTOM"), "StudyInstanceUID": uids["study"],
            "FrameOfReferenceUID": uids["frame_of_reference"], "MagneticFieldStrength": _ds(exam["b0_t"]),
            "StudyDate": "20260101", "StudyTime": "090000", "ImagedNucleus": "1H", "PatientPosition": "HFS"}


def _classic_images(vendor, exam, uids, t0):
    """Yield ``(relative path, dataset)`` for a classic vendor convention."""
    mag, ph, (ps, pi) = _quantise(exam["magnitude"], exam["phase_rad"], vendor, exam["magnitude_max"])
    a, iop, (dr, dc) = _lps_geometry(exam["affine"])
    nt, nz, ny, nx = mag.shape
    dt = np.diff(exam["frame_times_s"]).min() if nt > 1 else 1.0
    first = uids.get("series_number") or 5
    series = {"magnitude": (uids["series_m"], first), "phase": (uids["series_p"], first + 1 if vendor == "siemens" else first)}
    n = 0
    for t in range(nt):
        for z in range(nz):
            slice_offset = (z % 2 * ((nz + 1) // 2) + z // 2) * 0.5 * dt / nz  # interleaved slice timing
            date, tm = _clock(t0, exam["frame_times_s"][t] + slice_offset)
            for role, stored in (("magnitude", mag), ("phase", ph)):
                n += 1
                uid = pydicom().uid.generate_uid()
                ds = _base(_common(vendor, exam, uids), MR_IMAGE, uid)
                ds.SeriesInstanceUID, ds.SeriesNumber = series[role]
                ds.SeriesDescription = "mrtherm thermometry"
                ds.ImagePositionPatient = [_ds(v) for v in (a @ [0, 0, z, 1])[:3]]
                ds.ImageOrientationPatient = [_ds(v) for v in iop]
                ds.PixelSpacing = [_ds(dr), _ds(dc)]
                ds.SliceThickness = _ds(np.linalg.norm(a[:3, 2]))
                ds.Rows, ds.Columns = ny, nx
                ds.EchoTime, ds.EchoNumbers = _ds(exam["te_s"] * 1e3), exam["echo"]
                ds.AcquisitionDate, ds.AcquisitionTime = date, tm
                ds.AcquisitionNumber, ds.InstanceNumber = t + 1, t * nz + z + 1
                ds.SequenceName = "*fl2d1"
                _vendor_tags(ds, vendor, role, t, nt, ps, pi)
                _pixels(ds, stored[t, z])
                if vendor == "ge":
                    name = f"i{100000 + n}.MRDC.{n}"
                else:
                    name = os.path.join(f"series{ds.SeriesNumber}", f"{uid.rsplit('.', 1)[-1]}.dcm")
                yield name, ds


def _vendor_tags(ds, vendor, role, t, nt, ps, pi):
    phase = role == "phase"
    if vendor == "siemens":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "P" if phase else "M", "ND"]
        if phase:
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(ps), _ds(pi), "US"
    elif vendor == "ge":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        block = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
        block.add_new(0x2F, "SS", 1 if phase else 0)
        ds.TemporalPositionIdentifier, ds.NumberOfTemporalPositions = t + 1, nt
    else:  # philips classic
        ds.ImageType = ["ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE"] if phase else \
            ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"]
        ds.TemporalPositionIdentifier, ds.NumberOfTemporalPositions = t + 1, nt
        slope, inter, units = (ps, pi, "mrad") if phase else (PHILIPS_RS, 0.0, "normalized")
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), _ds(inter), units
        ds.RealWorldValueMappingSequence = [_rwv(slope, inter, "mrad" if phase else "1")]
        block = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
        # Philips' floating value is (SV * RS + RI) / (RS * SS): radians for phase (RS * SS = 1000), as on scanners
        block.add_new(0x0E, "FL", 1000.0 / slope if phase else PHILIPS_SS)


def _rwv(slope, inter, units):
    pd = pydicom()
    item, code = pd.dataset.Dataset(), pd.dataset.Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = units, "UCUM", units
    item.MeasurementUnitsCodeSequence = [code]
    item.RealWorldValueSlope, item.RealWorldValueIntercept = float(slope), float(inter)
    item.RealWorldValueFirstValueMapped, item.RealWorldValueLastValueMapped = 0, 4095
    item.LUTLabel = "mrtherm"
    return item


def _enhanced_files(vendor, exam, uids, t0):
    """Yield ``(relative path, dataset)``: Siemens XA style one file per series, Philips one file for both."""
    pd = pydicom()
    mag, ph, (ps, pi) = _quantise(exam["magnitude"], exam["phase_rad"], "siemens" if "siemens" in vendor else vendor,
                                  exam["magnitude_max"])
    a, iop, (dr, dc) = _lps_geometry(exam["affine"])
    nt, nz, ny, nx = mag.shape
    groups = [("magnitude", mag), ("phase", ph)]
    files = [[g] for g in groups] if vendor == "siemens-enhanced" else [groups]
    for k, members in enumerate(files):
        uid = pd.uid.generate_uid()
        ds = _base(_common(vendor, exam, uids), ENHANCED_MR_IMAGE, uid)
        ds.SeriesInstanceUID, ds.SeriesNumber = (uids["series_m"] if k == 0 else uids["series_p"]), \
            (uids.get("series_number") or 7) + k
        ds.SeriesDescription = "mrtherm thermometry"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M" if members[0][0] == "magnitude" else "P", "NONE"] \
            if vendor == "siemens-enhanced" else ["ORIGINAL", "PRIMARY", "T1", "MIXED"]
        ds.Rows, ds.Columns, ds.InstanceNumber = ny, nx, 1
        shared = pd.dataset.Dataset()
        shared.PixelMeasuresSequence = [pd.dataset.Dataset()]
        shared.PixelMeasuresSequence[0].PixelSpacing = [_ds(dr), _ds(dc)]
        shared.PixelMeasuresSequence[0].SliceThickness = _ds(np.linalg.norm(a[:3, 2]))
        shared.PlaneOrientationSequence = [pd.dataset.Dataset()]
        shared.PlaneOrientationSequence[0].ImageOrientationPatient = [_ds(v) for v in iop]
        ds.SharedFunctionalGroupsSequence = [shared]
        ds.DimensionIndexSequence = _dimension_index(pd)
        frames, pixels = [], []
        for role, stored in members:
            for t in range(nt):
                for z in range(nz):
                    frames.append(_frame_group(pd, role, vendor, a, z, t, exam, t0, ps, pi))
                    pixels.append(stored[t, z])
        ds.PerFrameFunctionalGroupsSequence = frames  # in dimension order, as scanners write them
        ds.NumberOfFrames = len(frames)
        _pixels(ds, np.stack(pixels))
        yield f"enhanced_{k + 1}_{uid.rsplit('.', 1)[-1]}.dcm", ds


def _dimension_index(pd):
    """Frames are indexed by stack, position in the stack and temporal position (as scanners declare)."""
    org = pd.uid.generate_uid()
    out = []
    for pointer in (0x00209056, 0x00209057, 0x00209128):  # StackID, InStackPositionNumber, TemporalPositionIndex
        item = pd.dataset.Dataset()
        item.DimensionOrganizationUID, item.DimensionIndexPointer, item.FunctionalGroupPointer = org, pointer, 0x00209111
        out.append(item)
    return out


def _frame_group(pd, role, vendor, a, z, t, exam, t0, ps, pi):
    fg = pd.dataset.Dataset()
    pos = pd.dataset.Dataset()
    pos.ImagePositionPatient = [_ds(v) for v in (a @ [0, 0, z, 1])[:3]]
    fg.PlanePositionSequence = [pos]
    content = pd.dataset.Dataset()
    date, tm = _clock(t0, exam["frame_times_s"][t])
    content.FrameAcquisitionDateTime = date + tm
    content.TemporalPositionIndex, content.InStackPositionNumber, content.StackID = t + 1, z + 1, "1"
    content.DimensionIndexValues = [1, z + 1, t + 1]
    fg.FrameContentSequence = [content]
    echo = pd.dataset.Dataset()
    echo.EffectiveEchoTime = float(exam["te_s"] * 1e3)
    fg.MREchoSequence = [echo]
    ftype = pd.dataset.Dataset()
    ftype.FrameType = ["ORIGINAL", "PRIMARY", "T1", "P" if role == "phase" else "M"]
    ftype.ComplexImageComponent = "PHASE" if role == "phase" else "MAGNITUDE"
    fg.MRImageFrameTypeSequence = [ftype]
    pvt = pd.dataset.Dataset()
    if role == "phase":
        pvt.RescaleSlope, pvt.RescaleIntercept = _ds(ps), _ds(pi)
        pvt.RescaleType = "mrad" if vendor == "philips-enhanced" else "US"
        if vendor == "philips-enhanced":
            fg.RealWorldValueMappingSequence = [_rwv(ps, pi, "mrad")]
    else:
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = "1", "0", "US"
    fg.PixelValueTransformationSequence = [pvt]
    return fg


def write_dicom_exam(out_dir, magnitude, phase_rad, affine, te_s, b0_t, frame_times_s, vendor="siemens",
                     start_s=0.0, series_number=None, identity=None, echo_number=1, magnitude_max=None):
    """Write an exam as DICOM files in ``vendor``'s convention (see the module table); returns the folder.

    Parameters
    ----------
    magnitude, phase_rad : (t, z, y, x) arrays
        Magnitude (any scale; quantised to 0..3000) and phase in radians.
    affine : (4, 4) voxel (x, y, z) to world RAS+ mm, oblique allowed
    te_s, b0_t : float
    frame_times_s : (t,) strictly increasing
    start_s : float
        Clock of the first frame, s after 2026-01-01 10:00 (later sonications of a treatment start later).
    series_number : int, optional
        SeriesNumber of the (first) series; default 5 (classic) or 7 (enhanced).
    identity : dict, optional
        ``study`` (StudyInstanceUID), ``frame_of_reference`` (FrameOfReferenceUID), ``patient_id``,
        ``patient_name``: the sonications of one treatment share them (default: new UIDs, the phantom patient);
        also ``series_m``/``series_p`` (SeriesInstanceUIDs), which the echoes of one multi-echo series share.
    echo_number : int
        EchoNumbers of the images (the echoes of a multi-echo series: one call per echo, into one folder tree).
    magnitude_max : float, optional
        The magnitude stored as 3000 (default: this call's maximum); the echoes of one series share it, so their
        amplitudes keep their ratios.
    """
    if vendor not in VENDORS:
        raise ParameterError(f"vendor must be one of {', '.join(VENDORS)}, got {vendor!r}")
    pd = pydicom()
    exam = {"magnitude": np.asarray(magnitude), "phase_rad": np.asarray(phase_rad), "affine": affine, "te_s": te_s,
            "b0_t": b0_t, "frame_times_s": np.asarray(frame_times_s, dtype=np.float64), "echo": int(echo_number),
            "magnitude_max": magnitude_max}
    uids = {k: pd.uid.generate_uid() for k in ("study", "frame_of_reference", "series_m", "series_p")}
    uids.update(identity or {})
    if vendor == "ge":
        uids["series_p"] = uids["series_m"]
    t0 = _dt.datetime(2026, 1, 1, 10, 0, 0) + _dt.timedelta(seconds=float(start_s))
    uids["series_number"] = series_number
    gen = _enhanced_files if vendor.endswith("enhanced") else _classic_images
    items = list(gen(vendor, exam, uids, t0))
    order = np.random.default_rng(0).permutation(len(items))
    with atomic.staged(out_dir) as stage:
        for i in order:
            name, ds = items[i]
            path = os.path.join(stage, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
    return os.path.abspath(os.fspath(out_dir))
