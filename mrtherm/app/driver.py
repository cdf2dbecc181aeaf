"""The run driver: a :class:`RunRequest` in, its outputs written, a typed :class:`RunSummary` out.

``mrtherm run`` and the cohort's tasks call :func:`run`. It opens the frame source the request names
(:mod:`mrtherm.app.sources`: a NIfTI exam, in-memory arrays, a DICOM series, or a DICOM folder of several
sonications), sends it through the frame loop
(:mod:`mrtherm.app.process`: one sonication; :mod:`mrtherm.app.treatment`: several, summed on the treatment grid),
writes the outputs through the staged-folder writer, and returns what the run found. ``mrtherm live`` feeds the same
frame loop and treatment sums from the scanner (:mod:`mrtherm.live.state`).
"""

from __future__ import annotations

import json
import os

from mrtherm.app.options import params_from_request
from mrtherm.app.summary import CumulativeSummary, RunSummary, SonicationSummary
from mrtherm.errors import ParameterError
from mrtherm.io.atomic import check_out_dir

__all__ = ["cold_alarm_c", "cryo_from_request", "exam_from_request", "run", "source_from_request"]


def _input_paths(r):
    """The input files (for the output-folder check); refuses mixed input kinds."""
    if r.dicom:
        if r.magnitude or r.phase or r.real or r.imag:
            raise ParameterError("give --dicom or --magnitude/--phase (--real/--imag), not both")
        return [os.path.join(r.dicom, "x")]  # the output folder may not be the DICOM folder
    if r.echo is not None:
        raise ParameterError("--echo selects an echo of a DICOM series (--dicom); a NIfTI file holds one echo")
    if r.real or r.imag:
        if r.magnitude or r.phase:
            raise ParameterError("give --magnitude/--phase or --real/--imag, not both")
        return list(r.real or []) + list(r.imag or [])
    if not r.magnitude and not r.phase:
        raise ParameterError("--magnitude and/or --phase, --real and --imag, or --dicom are required")
    return list(r.magnitude or []) + list(r.phase or [])


def _te_s(r):
    return None if r.te_ms is None else r.te_ms / 1000.0


def exam_from_request(r):
    """The NIfTI (or single DICOM) exam a request's input options name.

    Parameters
    ----------
    r : RunRequest or argparse.Namespace

    Returns
    -------
    Exam
    """
    from mrtherm.io.exam import load_exam  # noqa: PLC0415
    one = lambda v: None if v is None else (v[0] if len(v) == 1 else v)  # noqa: E731
    return load_exam(magnitude=one(r.magnitude), phase=one(r.phase), real=one(r.real), imag=one(r.imag),
                     dicom=r.dicom, echo=r.echo, te_s=_te_s(r), b0_t=r.b0_t, frame_time_s=r.frame_time_s,
                     frame_times_s=r.frame_times_s, phase_scale=r.phase_scale)


def source_from_request(r):
    """The :class:`mrtherm.app.sources.FrameSource` a request's input options name.

    Parameters
    ----------
    r : RunRequest or argparse.Namespace

    Returns
    -------
    FrameSource
    """
    from mrtherm.app.sources import DicomTreatmentSource, ExamSource  # noqa: PLC0415
    if r.dicom:
        return DicomTreatmentSource(r.dicom, echo=r.echo, te_s=_te_s(r), b0_t=r.b0_t, frame_time_s=r.frame_time_s,
                                    frame_times_s=r.frame_times_s, phase_scale=r.phase_scale)
    return ExamSource(exam_from_request(r))


def cold_alarm_c(r):
    """The cold alarm of watched probes: given, else 10 C for a cryoablation, else none.

    Parameters
    ----------
    r : RunRequest or argparse.Namespace

    Returns
    -------
    float or None
    """
    if r.probe_cold_alarm_c is not None:
        return r.probe_cold_alarm_c
    return 10.0 if r.modality == "cryo" else None


def cryo_from_request(r):
    """CryoParams for ``modality="cryo"`` (tips from ``cryo_tip`` and cryoprobes in ``probe_positions``), else None.

    Parameters
    ----------
    r : RunRequest or argparse.Namespace

    Returns
    -------
    CryoParams or None
    """
    if r.modality != "cryo":
        if r.cryo_tip:
            raise ParameterError("--cryo-tip needs --modality cryo")
        return None
    from mrtherm.cryo import CryoParams  # noqa: PLC0415
    tips = [tuple(t) for t in r.cryo_tip or []]
    if any(len(t) != 3 for t in tips):
        raise ParameterError("--cryo-tip takes X,Y,Z in world mm")
    if getattr(r, "probe_positions", None):
        try:
            with open(r.probe_positions, encoding="utf-8") as fh:
                tips += [tuple(p["position_mm"]) for p in json.load(fh)["probes"] if p.get("kind") == "cryoprobe"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # read_probe_positions reports a malformed file
    return CryoParams(probe_temperature_c=r.cryo_probe_temp_c, margin_alarm_mm=r.cryo_margin_mm,
                      tips_mm=tuple(tips)).validate()


def _probes(r):
    """The probe set of ``probes`` / ``probe_positions`` (or None)."""
    if not r.probes:
        if r.probe_positions and r.modality != "cryo":
            raise ParameterError("--probe-positions needs --probes LOG.csv")
        return None
    from mrtherm.probes import read_probe_log, read_probe_positions  # noqa: PLC0415
    probes = read_probe_log(r.probes, r.probe_time_offset_s)
    if r.probe_positions:
        probes = read_probe_positions(r.probe_positions, probes)
    return probes


def run(request, progress: bool | None = None) -> RunSummary:
    """Run one request into ``request.out``: outputs complete or not at all, and the run's summary.

    Parameters
    ----------
    request : RunRequest
    progress : bool, optional
        Progress bar (default: not ``request.quiet``).

    Returns
    -------
    RunSummary

    Raises
    ------
    MrthermError
        One-line messages naming the file or option.
    """
    r = request
    if not r.out:
        raise ParameterError("out: an output folder is required")
    progress = not r.quiet if progress is None else progress
    check_out_dir(r.out, _input_paths(r) + [r.labels, r.drift_roi, r.respiration, r.probes, r.probe_positions])
    if r.water_fat:
        return _run_water_fat(r)
    probes = _probes(r)
    if not r.dicom and r.treatment_grid:
        raise ParameterError("--treatment-grid needs a DICOM treatment of several sonications (--dicom)")
    sonications = source_from_request(r).sonications()
    if len(sonications) > 1:
        if r.respiration or probes:
            raise ParameterError("--respiration and --probes apply to one series; this DICOM folder holds "
                                 f"{len(sonications)} sonications")
        return _run_treatment(r, sonications, progress)
    return _run_exam(r, sonications[0], probes, progress)


def _run_water_fat(r) -> RunSummary:
    from mrtherm.app.waterfat_run import run_water_fat  # noqa: PLC0415
    unsupported = [f for f, v in (("--respiration", r.respiration), ("--probes", r.probes),
                                  ("--drift-roi", r.drift_roi), ("--modality cryo", r.modality == "cryo")) if v]
    if unsupported:
        raise ParameterError(f"--water-fat does not take {', '.join(unsupported)} yet")
    return run_water_fat(r, params_from_request(r).validate())


def _run_exam(r, exam, probes, progress) -> RunSummary:
    from mrtherm.app.process import process_to_folder  # noqa: PLC0415
    respiration = None
    if r.respiration:
        from mrtherm.io.respiration import read_respiration  # noqa: PLC0415
        respiration = read_respiration(r.respiration, exam.frame_times_s)
    result = process_to_folder(exam, r.out, params_from_request(r), labels=r.labels, drift_roi=r.drift_roi,
                               label_table=r.label_table, backend=r.backend, progress=progress,
                               figures=not r.no_figures, respiration=respiration, probes=probes,
                               cold_alarm_c=cold_alarm_c(r), cryo=cryo_from_request(r), gzip_level=r.compress)
    son = SonicationSummary.from_report(result.report)
    return RunSummary(os.path.abspath(r.out), (son,), None, son.alarms)


def _run_treatment(r, exams, progress) -> RunSummary:
    """Several sonications in one DICOM folder: per-sonication outputs and the cumulative maps (as ``live``)."""
    from mrtherm.app.treatment import run_treatment  # noqa: PLC0415
    if r.modality == "cryo":
        raise ParameterError("--modality cryo applies to one series; this DICOM folder holds "
                             f"{len(exams)} sonications")
    reports, cumulative, alarms = run_treatment(
        exams, r.out, params_from_request(r), treatment_grid=r.treatment_grid, figures=not r.no_figures,
        labels=r.labels, drift_roi=r.drift_roi, label_table=r.label_table, backend=r.backend, progress=progress)
    sons = tuple(SonicationSummary.from_report(rep, f"sonication_{k + 1:02d}") for k, rep in enumerate(reports))
    return RunSummary(os.path.abspath(r.out), sons, CumulativeSummary.from_figures(cumulative), tuple(alarms))
