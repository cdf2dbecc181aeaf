"""Echo time, field strength and frame times of a NIfTI exam, from flags or sidecars, cross-checked.

Precedence: a flag (argument) wins; then the sidecars of the component that
carries the phase (phase, or imaginary), then those of the magnitude (or real).
Every value's source goes to ``report.json``.

Cross-checks between the magnitude and the phase sidecars (tolerances):

================= ============ =====================================================
quantity          tolerance    beyond it
================= ============ =====================================================
field strength    1 %          refused (one exam is acquired at one field)
echo time         1 us         warning (different echoes?); the phase's TE is used
frame clock time  1 s          warning (different acquisitions); the phase's times
                               are used
NIfTI time step   1 %          warning; the phase's time step is used
================= ============ =====================================================

Shape and affine mismatches are refused where the components are opened.
Within one component, every frame's sidecar must give the same TE and B0.

A **phase-difference** image (sidecar ``EchoTime1`` and ``EchoTime2``, as dcm2niix
writes for field-mapping sequences) holds ``phi(TE2) - phi(TE1)``: its echo time
for PRF is ``EchoTime2 - EchoTime1``, and ``report.json`` says so.
"""

from __future__ import annotations

import math

import numpy as np

from mrtherm.io import niftiio
from mrtherm.errors import InputFileError, ParameterError
from mrtherm.text import count
from mrtherm.io.sources import FileSeries

TR_QUIRK_MAX_S = 0.5
"""dcm2niix writes the sequence TR as the NIfTI time step; below this it cannot be a frame interval."""
B0_TOLERANCE = 0.01
B0_WITHIN_SERIES_T = 0.03
"""Field strengths within one series may differ by rounding of the header only."""
TE_TOLERANCE_S = 1e-6
CLOCK_TOLERANCE_S = 1.0
STEP_TOLERANCE = 0.01


def validate_te_b0(te_s, b0_t):
    """Plausibility of echo time and field strength; one-line errors naming the argument.

    Parameters
    ----------
    te_s : float
        Echo time (or echo-time difference), s; must be in (0, 1].
    b0_t : float
        Main field, T; must be positive and finite.

    Returns
    -------
    tuple of float
        ``(te_s, b0_t)`` as Python floats.

    Raises
    ------
    ParameterError
        Non-positive or non-finite values, or an echo time above 1 s (milliseconds given as seconds).
    """
    te_s, b0_t = float(te_s), float(b0_t)
    if not (te_s > 0 and math.isfinite(te_s)):
        raise ParameterError(f"te_s must be positive, got {te_s}")
    if te_s > 1.0:
        raise ParameterError(f"te_s = {te_s} s is implausible; echo time is in seconds (use --te-ms for ms)")
    if not (b0_t > 0 and math.isfinite(b0_t)):
        raise ParameterError(f"b0_t must be positive, got {b0_t}")
    return te_s, b0_t


def _all_equal(infos, getter, tol, what, unit, scale=1.0):
    vals = [(i, getter(i)) for i in infos if i is not None and getter(i) is not None]
    for info, v in vals[1:]:
        if abs(v - vals[0][1]) > tol:
            raise InputFileError(info.path, f"{what} {v * scale:g} {unit} differs from {vals[0][1] * scale:g} {unit} "
                                 f"in {vals[0][0].path}: frames of one series must share it")
    return vals[0] if vals else (None, None)


def echo_time(te_s, phase_meta, mag_meta, provenance, warnings, main_path):
    """Echo time in s scaling the phase; sets ``te_source`` (and ``phase_difference``) in ``provenance``."""
    ph_info, ph_te = _all_equal(phase_meta, lambda i: i.effective_te_s, TE_TOLERANCE_S, "echo time", "ms", 1e3)
    mg_info, mg_te = _all_equal(mag_meta, lambda i: i.te_s, TE_TOLERANCE_S, "echo time", "ms", 1e3)
    diff = ph_info is not None and ph_info.phase_difference
    if diff:
        provenance["phase_difference"] = {"echo_time1_s": ph_info.te1_s, "echo_time2_s": ph_info.te2_s,
                                          "source": ph_info.path}
    if te_s is not None:
        provenance["te_source"] = "argument"
        if diff and abs(float(te_s) - ph_te) > TE_TOLERANCE_S:
            warnings.append(f"the phase is a phase difference (EchoTime2 - EchoTime1 = {ph_te * 1e3:.3g} ms in "
                            f"{ph_info.path}); the echo time given, {float(te_s) * 1e3:g} ms, is used")
        return te_s
    if ph_te is not None:
        provenance["te_source"] = (f"EchoTime2 - EchoTime1 of {ph_info.path} (phase-difference image)" if diff
                                   else ph_info.path)
        if not diff and mg_te is not None and abs(mg_te - ph_te) > TE_TOLERANCE_S:
            warnings.append(f"magnitude echo time {mg_te * 1e3:g} ms ({mg_info.path}) differs from the phase echo "
                            f"time {ph_te * 1e3:g} ms ({ph_info.path}): different echoes? The phase's is used")
        return ph_te
    if mg_te is not None:
        provenance["te_source"] = f"{mg_info.path} (no echo time in a phase sidecar)"
        return mg_te
    raise InputFileError(main_path, "echo time unknown: no EchoTime in a JSON sidecar; pass --te-ms / te_s")


def field_strength(b0_t, phase_meta, mag_meta, provenance, main_path):
    """Field strength in T; sets ``b0_source``; refuses magnitude and phase acquired at different fields."""
    ph_info, ph_b0 = _all_equal(phase_meta, lambda i: i.b0_t, B0_WITHIN_SERIES_T, "MagneticFieldStrength", "T")
    mg_info, mg_b0 = _all_equal(mag_meta, lambda i: i.b0_t, B0_WITHIN_SERIES_T, "MagneticFieldStrength", "T")
    if ph_b0 is not None and mg_b0 is not None and abs(ph_b0 - mg_b0) > B0_TOLERANCE * max(ph_b0, mg_b0):
        raise InputFileError(mg_info.path, f"MagneticFieldStrength {mg_b0:g} T differs from the phase's {ph_b0:g} T "
                             f"({ph_info.path}): not one exam")
    if b0_t is not None:
        provenance["b0_source"] = "argument"
        return b0_t
    for info, value in ((ph_info, ph_b0), (mg_info, mg_b0)):
        if value is not None:
            provenance["b0_source"] = info.path
            return value
    raise InputFileError(main_path, "field strength unknown: no MagneticFieldStrength in a JSON sidecar; "
                         "pass --b0-t / b0_t")


def _clocks(meta):
    """Per-frame acquisition clock times (s), unwrapped over midnight, or None if any is missing."""
    if len(meta) < 2 or any(i is None or i.acquisition_clock_s is None for i in meta):
        return None
    clocks = np.array([i.acquisition_clock_s for i in meta], dtype=np.float64)
    wraps = np.concatenate([[0.0], np.cumsum(np.diff(clocks) < -43200.0)])
    return clocks + 86400.0 * wraps


def _cross_check_clocks(ph_clocks, mg_clocks, warnings, provenance):
    if ph_clocks is None or mg_clocks is None or ph_clocks.shape != mg_clocks.shape:
        return
    worst = float(np.max(np.abs(ph_clocks - mg_clocks)))
    provenance.setdefault("cross_checks", []).append(
        {"quantity": "frame clock time, magnitude vs phase", "max_difference_s": worst,
         "tolerance_s": CLOCK_TOLERANCE_S, "outcome": "ok" if worst <= CLOCK_TOLERANCE_S else "warning"})
    if worst > CLOCK_TOLERANCE_S:
        warnings.append(f"magnitude frames were acquired up to {worst:.3g} s away from their phase frames "
                        f"(tolerance {CLOCK_TOLERANCE_S:g} s): magnitude and phase come from different "
                        "acquisitions; frame times are taken from the phase")


def _time_step(series: FileSeries, meta, provenance_warnings):
    img = series.images[0]
    step = niftiio.time_step_s(img)
    if step is None:
        return None
    trs = [i.repetition_time_s for i in meta if i is not None and i.repetition_time_s is not None]
    if trs and abs(step - trs[0]) <= 1e-3 * trs[0] and step < TR_QUIRK_MAX_S:
        raise InputFileError(series.paths[0], f"the NIfTI time step {step:g} s is the sequence TR "
                             "(dcm2niix), not the frame interval; pass --frame-time-s")
    if img.header.get_xyzt_units()[1] == "unknown":
        provenance_warnings.append(f"time units of {series.paths[0]} unknown: time step {step:g} taken as seconds")
    return step


def times_from_arguments(n_frames, frame_time_s, frame_times_s, provenance):
    """Frame times given as arguments (an explicit list wins over an interval), or None.

    Parameters
    ----------
    n_frames : int
        Number of frames in the exam.
    frame_time_s : float or None
        Frame interval, s; frame ``k`` is at ``k * frame_time_s``.
    frame_times_s : sequence of float or None
        Explicit frame times, s, one per frame.
    provenance : dict
        Updated in place: ``frame_times_source`` says which argument was used.

    Returns
    -------
    ndarray of float64, shape (n_frames,), or None
        Frame times in s; None when neither argument is given (times then come from metadata).

    Raises
    ------
    ParameterError
        A list of the wrong length, or a non-positive interval.
    """
    if frame_times_s is not None:
        values = frame_times_s.tolist() if hasattr(frame_times_s, "tolist") else frame_times_s
        times = np.asarray([float(t) for t in values], dtype=np.float64)
        if times.shape != (n_frames,):
            raise ParameterError(f"frame_times_s has {count(times.size, 'value')} for {count(n_frames, 'frame')}")
        provenance["frame_times_source"] = "argument (explicit list)"
        return times
    if frame_time_s is not None:
        step = float(frame_time_s)
        if not (step > 0 and math.isfinite(step)):
            raise ParameterError(f"frame_time_s must be positive, got {frame_time_s}")
        provenance["frame_times_source"] = "argument (interval)"
        return np.arange(n_frames) * step
    return None


def frame_times(n_frames, frame_time_s, frame_times_s, phase_src, mag_src, phase_meta, mag_meta,
                provenance, warnings):
    """Frame times in s from 0, strictly increasing; sets ``frame_times_source``."""
    ph_clocks, mg_clocks = _clocks(phase_meta), _clocks(mag_meta)
    _cross_check_clocks(ph_clocks, mg_clocks, warnings, provenance)
    times = times_from_arguments(n_frames, frame_time_s, frame_times_s, provenance)
    if times is not None:
        return times
    for clocks, meta in ((ph_clocks, phase_meta), (mg_clocks, mag_meta)):
        if clocks is not None:
            provenance["frame_times_source"] = f"sidecar AcquisitionTime ({meta[0].path}, ...)"
            return clocks - clocks[0]
    steps = []
    for src, meta in ((phase_src, phase_meta), (mag_src, mag_meta)):
        if isinstance(src, FileSeries) and src.four_d:
            steps.append((src, _time_step(src, meta, warnings)))
    if len(steps) == 2 and steps[0][1] and steps[1][1] and \
            abs(steps[0][1] - steps[1][1]) > STEP_TOLERANCE * steps[0][1]:
        warnings.append(f"time step {steps[1][1]:g} s of {steps[1][0].paths[0]} differs from the phase's "
                        f"{steps[0][1]:g} s ({steps[0][0].paths[0]}); the phase's is used")
    for src, step in steps:
        if step is not None:
            provenance["frame_times_source"] = f"NIfTI time step of {src.paths[0]}"
            return np.arange(n_frames) * step
    if n_frames == 1:
        provenance["frame_times_source"] = "single frame"
        return np.zeros(1)
    if steps:
        raise InputFileError(steps[0][0].paths[0], "frame time unknown: the NIfTI time step is missing; "
                             "pass --frame-time-s")
    if isinstance(phase_src, FileSeries) or isinstance(mag_src, FileSeries):
        first = (phase_src if isinstance(phase_src, FileSeries) else mag_src).paths[0]
        raise InputFileError(first, "frame time unknown: no AcquisitionTime in the frames' sidecars; "
                             "pass --frame-time-s")
    raise ParameterError("frame times unknown for in-memory arrays: pass frame_time_s or frame_times_s")


def check_increasing(times, provenance, main_path):
    """Frame times as float64, refused unless finite and strictly increasing.

    Parameters
    ----------
    times : sequence of float
        Frame times, s.
    provenance : dict
        Holds ``frame_times_source``; an error names the arguments when the times came from them.
    main_path : str
        File named in the error when the times came from the data.

    Returns
    -------
    ndarray of float64, shape (n,)

    Raises
    ------
    ParameterError
        A time is NaN or infinite.
    InputFileError
        Two consecutive times do not increase (the message gives the frame and both times).
    """
    times = np.asarray(times, dtype=np.float64)
    if not np.all(np.isfinite(times)):
        raise ParameterError("frame times must be finite")
    if np.any(np.diff(times) <= 0):
        bad = int(np.argmax(np.diff(times) <= 0)) + 1
        where = "frame times" if provenance["frame_times_source"].startswith("argument") else main_path
        raise InputFileError(where, f"frame times are not strictly increasing (frame {bad}: {times[bad - 1]:g} s "
                             f"then {times[bad]:g} s)")
    return times
