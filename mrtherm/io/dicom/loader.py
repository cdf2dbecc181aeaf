"""``load_dicom_exam``: a folder of MR DICOM files to an :class:`mrtherm.Exam`."""

from __future__ import annotations

import os

import numpy as np

from mrtherm.errors import InputFileError, ParameterError
from mrtherm.io.phase_scale import detect_phase_scale
from mrtherm.io import acquisition, roles
from mrtherm.io.dicom import assemble, files, geometry, images, vendor
from mrtherm.io.dicom.series import DicomSeries
from mrtherm.io.exam_data import Exam

TIME_TOLERANCE_S = acquisition.CLOCK_TOLERANCE_S


def _common(values, what, where, tol):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if max(vals) - min(vals) > tol:
        raise InputFileError(where, f"{what} varies within the series ({min(vals):g}..{max(vals):g})")
    return vals[0]


def echo_time(b_stack, te_s, provenance, warnings):
    """Echo time scaling the phase, s (the argument, a Siemens phase difference, or EchoTime); sets provenance."""
    first = b_stack.frames[0][0]
    te_ms = _common([im.te_ms for im in b_stack.images], "echo time (ms)", first.where, 1e-3)
    diff = None
    if b_stack.role == roles.PHASE and first.manufacturer == "siemens":
        diff = vendor.siemens_phase_difference(first.sequence_name, first.path)
    if diff is not None:
        te1, te2, src = diff
        if te1 is None:
            if te_s is None:
                raise InputFileError(first.path, f"{src}: the echo-time difference is unknown; pass --te-ms "
                                     "with TE2 - TE1")
        else:
            provenance["phase_difference"] = {"echo_time1_s": te1 / 1e3, "echo_time2_s": te2 / 1e3, "source": src}
    if te_s is not None:
        provenance["te_source"] = "argument"
        if diff is not None and diff[0] is not None and abs(te_s - (diff[1] - diff[0]) / 1e3) > 1e-6:
            warnings.append(f"the phase is a phase difference (TE2 - TE1 = {diff[1] - diff[0]:g} ms); the echo time "
                            f"given, {te_s * 1e3:g} ms, is used")
        return te_s
    if diff is not None:
        provenance["te_source"] = f"{diff[2]}: TE2 - TE1 (phase-difference image)"
        return (diff[1] - diff[0]) / 1e3
    if te_ms is None:
        raise InputFileError(first.where, "echo time unknown: no EchoTime in the DICOM; pass --te-ms")
    provenance["te_source"] = f"DICOM echo time of {b_stack.series_text()}"
    return te_ms / 1e3


def field_strength(a_stack, b_stack, b0_t, provenance):
    """Field strength, T (the argument or MagneticFieldStrength, equal in both components); sets provenance."""
    b = _common([im.b0_t for im in b_stack.images], "MagneticFieldStrength", b_stack.frames[0][0].where,
                acquisition.B0_WITHIN_SERIES_T)
    a = _common([im.b0_t for im in a_stack.images], "MagneticFieldStrength", a_stack.frames[0][0].where,
                acquisition.B0_WITHIN_SERIES_T)
    if a is not None and b is not None and abs(a - b) > acquisition.B0_TOLERANCE * max(a, b):
        raise InputFileError(a_stack.frames[0][0].where, f"MagneticFieldStrength {a:g} T differs from the "
                             f"{b_stack.role}'s {b:g} T: not one exam")
    if b0_t is not None:
        provenance["b0_source"] = "argument"
        return b0_t
    value = b if b is not None else a
    if value is None:
        raise InputFileError(b_stack.frames[0][0].where, "field strength unknown: no MagneticFieldStrength in the "
                             "DICOM; pass --b0-t")
    provenance["b0_source"] = "DICOM MagneticFieldStrength"
    return value


def _frame_times(a_stack, b_stack, frame_time_s, frame_times_s, provenance, warnings):
    n = len(b_stack.frames)
    if a_stack.times_s is not None and b_stack.times_s is not None:
        worst = float(np.max(np.abs(a_stack.times_s - b_stack.times_s)))
        provenance.setdefault("cross_checks", []).append(
            {"quantity": f"frame acquisition time, {a_stack.role} vs {b_stack.role}", "max_difference_s": worst,
             "tolerance_s": TIME_TOLERANCE_S, "outcome": "ok" if worst <= TIME_TOLERANCE_S else "warning"})
        if worst > TIME_TOLERANCE_S:
            warnings.append(f"{a_stack.role} frames were acquired up to {worst:.3g} s away from their {b_stack.role} "
                            f"frames (tolerance {TIME_TOLERANCE_S:g} s): different acquisitions; frame times are "
                            f"taken from the {b_stack.role}")
    times = acquisition.times_from_arguments(n, frame_time_s, frame_times_s, provenance)
    if times is not None:
        return times
    for stack in (b_stack, a_stack):
        if stack.times_s is not None and (n == 1 or np.ptp(stack.times_s) > 0):
            src = stack.frames[0][0].time_source
            provenance["frame_times_source"] = f"DICOM {src} of the {stack.role} (mean over each frame's slices)"
            return stack.times_s - stack.times_s[0]
    if n == 1:
        provenance["frame_times_source"] = "single frame"
        return np.zeros(1)
    raise InputFileError(b_stack.frames[1][0].where, "frame times unknown: no distinct acquisition times in the "
                         "DICOM; pass --frame-time-s")


def phase_scale_of(first_values, b_stack, phase_scale, provenance):
    """The phase encoding: the argument, else the DICOM tags, else the value range of ``first_values()`` (frame 0).

    Parameters
    ----------
    first_values : callable
        Returns frame 0 of the phase, ``(z, y, x)`` rescaled values (called only when the tags do not say).
    b_stack : Stack
        The second component; not a phase stack gives None.
    phase_scale : str
        ``"auto"`` or an encoding of :mod:`mrtherm.io.phase_scale`.
    provenance : dict
        Gains ``phase_scale`` and ``phase_scale_source``.

    Returns
    -------
    str or None
    """
    if b_stack.role != roles.PHASE:
        provenance["phase_scale"] = None
        return None
    if phase_scale != "auto":
        provenance.update(phase_scale=phase_scale, phase_scale_source="argument")
        return phase_scale
    found = {vendor.phase_scale_from_tags(im.manufacturer, im.slope, im.intercept, im.units)
             for im in b_stack.images}
    if len(found) == 1 and None not in next(iter(found)):
        scale, source = next(iter(found))
        provenance.update(phase_scale=scale, phase_scale_source=f"DICOM tags: {source}")
        return scale
    first = b_stack.frames[0][0]
    scale = detect_phase_scale(first_values(), first.slope, first.intercept, True, first.path)
    provenance.update(phase_scale=scale, phase_scale_source="value range (the DICOM tags do not say)")
    return scale


def _check_echo(echo):
    if echo is not None and (int(echo) != echo or echo < 1):
        raise ParameterError(f"echo must be a positive integer, got {echo!r}")


def load_dicom_exam(folder, *, echo=None, te_s=None, b0_t=None, frame_time_s=None, frame_times_s=None,
                    phase_scale="auto"):
    """Open a folder of MR DICOM files (searched recursively) as an :class:`mrtherm.Exam`.

    See :mod:`mrtherm.io.dicom.assemble` for how images become frames and slices,
    :mod:`mrtherm.io.dicom.vendor` for the vendor conventions and
    :mod:`mrtherm.io.dicom.geometry` for the affine. Parameters are those of
    :func:`mrtherm.load_exam`.
    """
    folder = os.fspath(folder)
    _check_echo(echo)
    found, skipped = files.scan(folder)
    if not found:
        raise InputFileError(folder, "no MR image DICOM files found" +
                             (f" ({skipped['not_dicom']} other files skipped)" if skipped["not_dicom"] else ""))
    recs = [r for path, ds in found for r in images.records(path, ds)]
    return exam_from_records(recs, folder, len(found), skipped, echo=echo, te_s=te_s, b0_t=b0_t,
                             frame_time_s=frame_time_s, frame_times_s=frame_times_s, phase_scale=phase_scale)


def load_dicom_treatment(folder, **options):
    """Every sonication of a DICOM folder, as one :class:`mrtherm.Exam` each, in acquisition order.

    Series are paired into sonications by :class:`mrtherm.io.dicom.sonications.SeriesPairing`, the rule of
    ``mrtherm live``; images are offered to it in acquisition order. A folder of one sonication, or one whose
    series hold a single repetition each (every repetition reconstructed as its own series), gives the exam
    :func:`load_dicom_exam` gives.

    Parameters
    ----------
    folder : str or PathLike
    **options
        Those of :func:`load_dicom_exam`.

    Returns
    -------
    list of Exam
        One per sonication (at least one).
    """
    from mrtherm.io.dicom.sonications import group_sonications  # noqa: PLC0415
    folder = os.fspath(folder)
    found, skipped = files.scan(folder)
    if not found:
        return [load_dicom_exam(folder, **options)]  # the one-line "no MR image" error
    recs = [r for path, ds in found for r in images.records(path, ds)]
    groups = group_sonications(recs)
    if len(groups) <= 1 or any(_repetitions(g) < 2 for g in groups):
        # One sonication, or series holding one repetition each (scanners that reconstruct every repetition as
        # its own series): the frames of one exam, as load_dicom_exam reads them.
        return [exam_from_records(recs, folder, len(found), skipped, **options)]
    return [exam_from_records(g, folder, len({im.path for im in g}), skipped, **options) for g in groups]


def _repetitions(images_) -> int:
    """How many repetitions the images of one sonication hold (temporal positions, else acquisition numbers)."""
    return len({im.temporal_index if im.temporal_index is not None else im.acquisition_number for im in images_})


def exam_from_records(recs, folder, n_files, skipped, *, echo=None, te_s=None, b0_t=None, frame_time_s=None,
                      frame_times_s=None, phase_scale="auto"):
    """An :class:`mrtherm.Exam` from image records (see :func:`load_dicom_exam`)."""
    _check_echo(echo)
    role_a, role_b, imgs, ignored = assemble.choose_grid(recs, folder)
    imgs_a, imgs_b, echo_text = assemble.choose_echo(role_a, role_b, imgs, echo)
    a_stack, b_stack = assemble.build_stack(role_a, imgs_a), assemble.build_stack(role_b, imgs_b)
    assemble.check_pair(a_stack, b_stack)
    affine = geometry.stack_affine(a_stack.frames[0])
    provenance, warnings = {"inputs": {"dicom": folder}}, []
    comps = {}
    for stack in (a_stack, b_stack):
        first = stack.frames[0][0]
        comps[stack.role] = DicomSeries(stack, affine, first.slope, first.intercept)
        provenance["inputs"][stack.role] = comps[stack.role].describe()
    provenance["roles"] = {s.role: s.frames[0][0].role_source for s in (a_stack, b_stack)}
    provenance["dicom"] = {"files": n_files, "images": len(recs), "echo": echo_text,
                           "manufacturer": b_stack.frames[0][0].manufacturer, "ignored": ignored,
                           "skipped_files": skipped, "geometry": "ImagePositionPatient, ImageOrientationPatient, "
                           "PixelSpacing; slices sorted along the normal; LPS to RAS+"}
    te = echo_time(b_stack, te_s, provenance, warnings)
    b0 = field_strength(a_stack, b_stack, b0_t, provenance)
    te, b0 = acquisition.validate_te_b0(te, b0)
    times = _frame_times(a_stack, b_stack, frame_time_s, frame_times_s, provenance, warnings)
    times = acquisition.check_increasing(times, provenance, b_stack.frames[0][0].path)
    scale = phase_scale_of(lambda: comps[role_b].read(0), b_stack, phase_scale, provenance)
    n = len(b_stack.frames)
    return Exam(components=comps, shape=(n,) + comps[role_a].shape_zyx, affine=affine, te_s=te, b0_t=b0,
                frame_times_s=times, phase_scale=scale, provenance=provenance, warnings=warnings)
