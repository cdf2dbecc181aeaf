"""``mrtherm run --dicom`` on a folder of several sonications: the batch twin of ``mrtherm live``.

Each sonication is processed as an exam of its own (:func:`mrtherm.process`),
its outputs written under ``sonication_<k>/``; the cumulative dose, Tmax and
lesions on the treatment grid, and report.json, are those ``mrtherm live``
writes for the same images (same :class:`mrtherm.live.treatment.CumulativeDose`
sum, in the same order).
"""

from __future__ import annotations

import os

from mrtherm.io import atomic
from mrtherm.live import outputs
from mrtherm.live.treatment import (CumulativeDose, TreatmentGrid, cumulative_alarms, cumulative_figures,
                                    labels_on_grid, sonication_figures)
from mrtherm.thermometry.pipeline import process


def _entry(index, exam, th):
    prov = exam.provenance
    return {"sonication": index + 1, "inputs": prov.get("inputs"), "shape_zyx": list(exam.shape_zyx),
            "affine": exam.affine.tolist(), "te_s": exam.te_s, "b0_t": exam.b0_t, "phase_scale": exam.phase_scale,
            "state": "finished", **sonication_figures(th, index)}


def _cumulative_alarms(dose, grid, params, entries, kwargs):
    labels, table = labels_on_grid(kwargs, grid)
    if labels is None:
        return []
    last = entries[-1]
    return cumulative_alarms(dose, labels, table, params, (last.get("frame_times_s") or [0.0])[-1], len(entries))


def process_treatment(exams, out_dir, params, *, treatment_grid=None, figures=True, **kwargs):
    """Process several sonications into ``out_dir`` (complete or not at all); returns report.json's content.

    Parameters
    ----------
    exams : list of Exam
        One per sonication, in treatment order.
    out_dir : str
    params : ThermometryParams
    treatment_grid : path, optional
        A 3-D NIfTI whose grid holds the cumulative maps (default: the first sonication's grid).
    figures : bool
        Each sonication's ``figures/*.png``.
    **kwargs
        Passed to :func:`mrtherm.process` (labels, drift_roi, label_table, backend, progress).

    Returns
    -------
    dict
    """
    grid = TreatmentGrid.from_file(treatment_grid) if treatment_grid else \
        TreatmentGrid(exams[0].shape_zyx, exams[0].affine, "grid of sonication 1")
    cumulative = CumulativeDose(grid)
    entries, anatomy = [], None
    with atomic.staged(out_dir) as stage:
        for k, exam in enumerate(exams):
            folder = os.path.join(stage, f"sonication_{k + 1:02d}")
            os.makedirs(folder)
            result = process(exam, params, keep_temperature=False,
                             temperature_path=os.path.join(folder, "temperature.nii.gz"), **kwargs)
            result.write_into(folder, figures=figures)
            th = result.thermometer
            cumulative.add(cumulative.contribution(th))
            entries.append(_entry(k, exam, th))
            if anatomy is None:
                anatomy = grid.resampler(th.shape, th.affine)(th.anatomy, 1, 0.0)
        dose, tmax, _ = cumulative.maps()
        maps = outputs.treatment_maps(dose, tmax, grid, params.dose_levels_cem43_min)
        maps["anatomy.nii.gz"] = (anatomy, grid.affine)
        names = outputs.write_maps(stage, maps)
        alarms = sorted((a for e in entries for a in e.get("alarms", [])),
                        key=lambda a: (a["sonication"], a["time_s"], a["structure"]))
        cum = cumulative_figures(dose, tmax, grid.affine, params.dose_levels_cem43_min)
        alarms += _cumulative_alarms(dose, grid, params, entries, kwargs)
        report = outputs.treatment_report(
            mode="batch", params=params, grid=grid, sonications=entries, cumulative=cum, alarms=alarms,
            frames_processed=sum(e["frames_processed"] for e in entries),
            extra={"outputs": sorted(names + ["report.json"] +
                                     [f"sonication_{k + 1:02d}/" for k in range(len(exams))])})
        outputs.replace_json(report, os.path.join(stage, "report.json"))
    return report
