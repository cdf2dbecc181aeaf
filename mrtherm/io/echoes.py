"""The echoes of a multi-echo exam, one :class:`mrtherm.io.exam_data.Exam` each (water-fat thermometry).

From NIfTI: one magnitude and one phase file (or real and imaginary) per echo, 4-D over time, in increasing echo
time; echo times from each file's sidecar ``EchoTime`` unless given. From DICOM: every echo of a multi-echo series
(EchoNumbers 1, 2, ... until one is missing). Each echo is read as a single-echo exam is (vendor phase scaling, frame
times), and the echoes must share the grid, the frames and the field strength.
"""

from __future__ import annotations

import numpy as np

from mrtherm.errors import InputFileError, ParameterError

MIN_ECHOES = 3


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, np.ndarray) and value.ndim == 5:
        return list(value)
    return list(value) if isinstance(value, (list, tuple)) else [value]


def load_echoes(load_exam, magnitude=None, phase=None, *, real=None, imag=None, dicom=None, echo_times_s=None,
                b0_t=None, frame_time_s=None, frame_times_s=None, phase_scale="auto", affine=None) -> list:
    """Every echo of a multi-echo exam, sorted as given (increasing echo time; checked).

    Call it as ``mrtherm.load_exam(..., water_fat=True)``.

    Parameters
    ----------
    load_exam : callable
        The single-echo loader (:func:`mrtherm.load_exam`), passed in: this module sits below it.
    magnitude, phase : sequence of paths or of ``(t, z, y, x)`` arrays
        One per echo (or ``real``/``imag``).
    real, imag : the same, instead of magnitude and phase
    dicom : path, optional
        A folder holding one multi-echo series.
    echo_times_s : sequence of float, optional
        One per echo, s (default: sidecars or DICOM).
    b0_t, frame_time_s, frame_times_s, phase_scale, affine
        As for :func:`mrtherm.load_exam`.

    Returns
    -------
    list of Exam
    """
    common = dict(b0_t=b0_t, frame_time_s=frame_time_s, frame_times_s=frame_times_s, phase_scale=phase_scale)
    if dicom is not None:
        exams = _dicom_echoes(dicom, load_exam, common)
        names = [f"{dicom} echo {k + 1}" for k in range(len(exams))]
        for ex, te in zip(exams, _echo_times(echo_times_s, len(exams))):
            ex.te_s = ex.te_s if te is None else te
    else:
        kind = ("magnitude", "phase") if magnitude is not None else ("real", "imag")
        a, b = (_as_list(magnitude), _as_list(phase)) if magnitude is not None else (_as_list(real), _as_list(imag))
        if len(a) < MIN_ECHOES or len(a) != len(b):
            raise ParameterError(f"water-fat needs one {kind[0]} and one {kind[1]} per echo, {MIN_ECHOES} echoes or "
                                 f"more (got {len(a)} and {len(b)})")
        extra = {} if affine is None else {"affine": affine}
        exams = [load_exam(**{kind[0]: fa, kind[1]: fb}, te_s=te, **common, **extra)
                 for fa, fb, te in zip(a, b, _echo_times(echo_times_s, len(a)))]
        names = [fa if isinstance(fa, str) else f"echo {k + 1}" for k, fa in enumerate(a)]
    _check(exams, names)
    return exams


def _echo_times(given, n):
    if given is None:
        return [None] * n
    if len(given) != n:
        raise ParameterError(f"echo times: {len(given)} given for {n} echoes")
    return [float(v) for v in given]


def _dicom_echoes(folder, load_exam, common):
    exams = []
    while True:
        try:
            exams.append(load_exam(dicom=folder, echo=len(exams) + 1, **common))
        except InputFileError as exc:
            if f"no echo {len(exams) + 1} " not in str(exc):
                raise
            break
    if len(exams) < MIN_ECHOES:
        raise ParameterError(f"{folder}: water-fat needs a series of {MIN_ECHOES} echoes or more, found {len(exams)}")
    return exams


def _check(exams, names):
    """One grid, frames and field for every echo, in increasing echo time."""
    first = exams[0]
    for name, ex in zip(names, exams):
        if ex.shape != first.shape or not np.allclose(ex.affine, first.affine, atol=1e-3):
            raise ParameterError(f"{name}: another grid or number of frames than {names[0]}")
        if abs(ex.b0_t - first.b0_t) > 1e-3:
            raise ParameterError(f"{name}: field strength {ex.b0_t} T, not {first.b0_t} T as {names[0]}")
    te = [ex.te_s for ex in exams]
    if any(t2 <= t1 for t1, t2 in zip(te, te[1:])):
        raise ParameterError("water-fat: the echoes must be given in increasing echo time, got "
                             f"{', '.join(f'{1e3 * t:g}' for t in te)} ms")
