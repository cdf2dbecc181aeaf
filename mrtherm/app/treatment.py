"""A treatment: several sonications, each with its own baseline and Thermometer, dose summed in world coordinates.

Every sonication is processed on its own grid (its slices may be shifted or
oblique relative to the others). Its dose and Tmax are resampled onto the
treatment grid -- the first sonication's grid, or a planning volume given as
``treatment_grid`` -- through the two affines (linear interpolation; the identity when
the grids coincide, so the first sonication's values are carried exactly). The
cumulative dose is the sum, in sonication order, of the resampled doses
(CEM43 adds over time at a tissue point); cumulative Tmax is their maximum.
A voxel no sonication measured reliably is NaN.

``mrtherm live`` (one frame at a time, from the scanner: :mod:`mrtherm.live.state`) and ``mrtherm run --dicom`` on
a folder of several sonications (:func:`run_treatment`) both sum through :class:`CumulativeDose` and describe each
sonication with :func:`sonication_figures`, so the two give the same cumulative dose bit for bit.
"""

from __future__ import annotations

import os

import numpy as np

from mrtherm.app import outputs
from mrtherm.app import process as process_mod
from mrtherm.backend import to_numpy
from mrtherm.geometry import TreatmentGrid, voxel_volume_ml
from mrtherm.io import atomic, niftiio
from mrtherm.io import labels as labels_mod
from mrtherm.thermometry import dose as dose_mod
from mrtherm.thermometry.dose import time_above_segment
from mrtherm.thermometry.result import cap_dose
from mrtherm.thermometry.thermometer import Thermometer

ABOVE_THRESHOLDS_C = (43.0, 45.0)  # C: report.json's times above; 43 C is CEM43's breakpoint, 45 C a common limit


def grid_from_file(path) -> TreatmentGrid:
    """The grid of a 3-D NIfTI volume (a planning scan).

    Parameters
    ----------
    path : str

    Returns
    -------
    TreatmentGrid
    """
    data, affine = niftiio.load_3d(path, "treatment grid")
    return TreatmentGrid(data.shape[::-1], affine, f"file {path}")


class CumulativeDose:
    """Dose, Tmax and coverage of the finished sonications on the treatment grid, plus the current one's."""

    def __init__(self, grid: TreatmentGrid):
        self.grid = grid
        self.dose = np.zeros(grid.shape, dtype=np.float64)
        self.tmax = np.full(grid.shape, -np.inf, dtype=np.float32)
        self.covered = np.zeros(grid.shape, dtype=bool)

    def contribution(self, th: Thermometer, exclude=None):
        """A sonication's dose, Tmax and reliable voxels on the treatment grid.

        Parameters
        ----------
        th : Thermometer
        exclude : ndarray of bool, shape (z, y, x), optional
            Voxels of the sonication's grid kept out (the ice ball of a cryoablation: no PRF there).

        Returns
        -------
        tuple
            ``(dose float64, tmax float32, reliable bool)`` on the treatment grid; 0, body temperature and False
            where the sonication did not measure.
        """
        resample = self.grid.resampler(th.shape, th.affine)
        # the sonication's dose as the Thermometer reports it: in tissue coordinates when it registers motion
        dose_np = to_numpy(th.dose_cem43_min)
        mask = th.reliability.mask & np.isfinite(dose_np) & (True if exclude is None else ~np.asarray(exclude))
        dose = resample(np.where(mask, dose_np, 0.0), 1, 0.0)
        tmax = to_numpy(th.tmax_c) if th.frames_processed else np.full(th.shape, np.nan, np.float32)
        body = th.params.body_temp_c
        tmax = resample(np.where(mask & np.isfinite(tmax), tmax, body).astype(np.float32), 1, body)
        covered = resample(mask.astype(np.uint8), 0, 0).astype(bool)
        return dose, tmax, covered

    def add(self, contribution):
        """Add a finished sonication.

        Parameters
        ----------
        contribution : tuple
            From :meth:`contribution`.
        """
        dose, tmax, covered = contribution
        self.dose = self.dose + dose
        self.tmax = np.fmax(self.tmax, tmax)
        self.covered = self.covered | covered

    def maps(self, contribution=None):
        """``(dose CEM43 min float64, Tmax C float32, covered)`` including ``contribution``; NaN where uncovered.

        Parameters
        ----------
        contribution : tuple, optional
            The running sonication's.

        Returns
        -------
        tuple of ndarray
        """
        dose, tmax, covered = self.dose, self.tmax, self.covered
        if contribution is not None:
            dose, tmax, covered = dose + contribution[0], np.fmax(tmax, contribution[1]), covered | contribution[2]
        return (np.where(covered, dose, np.nan), np.where(covered, tmax, np.float32(np.nan)).astype(np.float32),
                covered)

    def state(self) -> dict:
        """Arrays for the checkpoint.

        Returns
        -------
        dict of str to ndarray
        """
        return {"dose": self.dose, "tmax": self.tmax, "covered": self.covered}

    def restore(self, arrays):
        """Back from :meth:`state`.

        Parameters
        ----------
        arrays : dict of str to ndarray
        """
        self.dose, self.tmax, self.covered = arrays["dose"], arrays["tmax"], arrays["covered"].astype(bool)


# --------------------------------------------------------------------------- one sonication


def time_above_s(curve_c, times_s, threshold_c) -> float:
    """Seconds a temperature curve spent strictly above ``threshold_c`` (linear between frames, exact crossings).

    Examples
    --------
    >>> time_above_s([37.0, 47.0, 47.0, 37.0], [0.0, 10.0, 20.0, 30.0], 42.0)
    20.0

    Parameters
    ----------
    curve_c : sequence of float
        C, NaN segments skipped.
    times_s : sequence of float
    threshold_c : float

    Returns
    -------
    float
        s.
    """
    c, t = np.asarray(curve_c, dtype=np.float64), np.asarray(times_s, dtype=np.float64)
    total = 0.0
    for k in range(1, c.size):
        if np.isfinite(c[k - 1]) and np.isfinite(c[k]):
            total += float(time_above_segment(c[k - 1], c[k], t[k] - t[k - 1], threshold_c))
    return total


def sonication_figures(th: Thermometer, index: int, cryo_watch=None) -> dict:
    """Per-sonication figures of report.json: peak, times above 43/45 C, dose, lesions, structures, alarms.

    Parameters
    ----------
    th : Thermometer
    index : int
        0-based sonication index.
    cryo_watch : CryoWatch, optional
        A cryoablation's watch: the ice ball and its rim are kept out of dose, Tmax and lesions (as
        :meth:`mrtherm.ThermometryResult.apply_cryo`), and its report and margin alarms join the figures.

    Returns
    -------
    dict
    """
    out = {"frames_processed": th.frames_processed}
    if not th.frames_processed:
        return out
    tmax, dose = to_numpy(th.tmax_c), to_numpy(th.dose_cem43_min)
    if cryo_watch is not None:
        ice = cryo_watch.masked_extent
        tmax, dose = np.where(ice, np.nan, tmax), np.where(ice, np.nan, dose)
    dose, capped = cap_dose(dose)
    curve, times = np.asarray(th.peak_curve_c), np.asarray(th.times_s)
    finite = np.isfinite(curve)
    rows, alarms = th.protected_structures()
    figures = dose_mod.map_figures(dose, tmax, voxel_volume_ml(th.affine), th.params.dose_levels_cem43_min)
    out.update({
        "peak_temperature_c": figures["peak_temperature_c"],
        "time_of_peak_s": float(times[int(np.nanargmax(curve))]) if finite.any() else None,
        **{f"time_above_{thr:g}c_s": time_above_s(curve, times, thr) for thr in ABOVE_THRESHOLDS_C},
        "max_dose_cem43_min": figures["max_dose_cem43_min"],
        "capped_dose_voxels": capped,
        "lesion_volumes_ml": figures["lesion_volumes_ml"],
        "frame_times_s": [float(v) for v in times], "peak_curve_c": [float(v) for v in curve],
        "protected_structures": rows,
        "alarms": [{**a, "sonication": index + 1} for a in alarms],
    })
    if cryo_watch is not None:
        out["cryo"] = cryo_watch.report()
        out["alarms"] += [{**a, "sonication": index + 1} for a in cryo_watch.alarms]
    return out


def labels_on_grid(options, grid):
    """``(labels on the treatment grid or None, label table)`` from the ``labels`` / ``label_table`` options.

    Parameters
    ----------
    options : dict
        ``labels`` (path or array) and ``label_table`` (path), both optional.
    grid : TreatmentGrid

    Returns
    -------
    labels : ndarray of int16, shape grid.shape, or None
    table : LabelTable
    """
    table = labels_mod.LabelTable.from_json(options["label_table"]) if options.get("label_table") \
        else labels_mod.LabelTable()
    if options.get("labels") is None:
        return None, table
    labels, _ = labels_mod.load_on_grid(options["labels"], grid.shape, grid.affine, "labels", table)
    return labels, table


def cumulative_figures(dose, tmax, affine, levels) -> dict:
    """report.json's cumulative figures: max dose, peak Tmax, lesion volumes, voxels measured.

    Parameters
    ----------
    dose, tmax : ndarray
    affine : (4, 4) array
    levels : sequence of float

    Returns
    -------
    dict
    """
    figures = dose_mod.map_figures(dose, tmax, voxel_volume_ml(affine), levels)
    return {"max_dose_cem43_min": figures["max_dose_cem43_min"], "peak_temperature_c": figures["peak_temperature_c"],
            "lesion_volumes_ml": figures["lesion_volumes_ml"], "reliable_voxels": int(np.isfinite(dose).sum())}


def cumulative_alarms(dose, labels, table, params, time_s, sonication) -> list[dict]:
    """Alarms on the cumulative dose in protected structures (treatment-grid labels).

    Parameters
    ----------
    dose : ndarray
        Cumulative, treatment grid.
    labels : ndarray of int or None
        On the treatment grid.
    table : LabelTable
    params : ThermometryParams
    time_s : float
    sonication : int
        1-based, the running one.

    Returns
    -------
    list of dict
    """
    if labels is None:
        return []
    out = []
    d = np.nan_to_num(dose, nan=0.0)
    for value in table.values_named(*labels_mod.PROTECTED_NAMES):
        sel = labels == value
        if not sel.any():
            continue
        peak = float(d[sel].max())
        if peak >= params.alarm_dose_cem43_min:
            out.append({"structure": table.name(value), "label": int(value), "quantity": "cumulative dose",
                        "threshold": float(params.alarm_dose_cem43_min), "unit": "CEM43 min", "value": peak,
                        "time_s": float(time_s), "sonication": sonication})
    return out


class Treatment:
    """The one owner of a treatment's sums: its grid, the cumulative dose and Tmax of the sonications finished so
    far, their report figures, and the labels on the grid for the cumulative alarms.

    ``mrtherm run --dicom`` (:func:`run_treatment`) and ``mrtherm live`` (:class:`mrtherm.live.state.TreatmentState`,
    which adds the live sonications and the checkpoint) both sum through it.

    Parameters
    ----------
    params : ThermometryParams
    options : dict
        ``labels`` and ``label_table`` (paths or arrays, optional): the protected structures on the grid.
    grid : TreatmentGrid, optional
        Default: the first sonication's grid (:meth:`ensure_grid`).
    """

    def __init__(self, params, options, grid=None):
        self.params, self.options = params, options
        self.grid = grid
        self.cumulative = None if grid is None else CumulativeDose(grid)
        self.grid_labels, self.table = None, None
        self.finished_figures: dict[int, dict] = {}

    def ensure_grid(self, shape_zyx, affine, index):
        """The first sonication's grid, unless a grid was given; the labels resampled onto it.

        Parameters
        ----------
        shape_zyx : tuple of int
        affine : (4, 4) array
        index : int
            0-based sonication index (named in the grid's source).
        """
        if self.grid is None:
            self.grid = TreatmentGrid(shape_zyx, affine, f"grid of sonication {index + 1}")
            self.cumulative = CumulativeDose(self.grid)
        if self.grid_labels is None and self.options.get("labels") is not None:
            self.grid_labels, self.table = labels_on_grid(self.options, self.grid)

    def finish(self, index, th: Thermometer, cryo_watch=None) -> dict:
        """A sonication's dose joins the cumulative sum; returns (and keeps) its report figures.

        Parameters
        ----------
        index : int
            0-based.
        th : Thermometer
            After its last frame.
        cryo_watch : CryoWatch, optional
            A cryoablation's: its ice is kept out of the sums.

        Returns
        -------
        dict
            :func:`sonication_figures`.
        """
        self.ensure_grid(th.shape, th.affine, index)
        exclude = None if cryo_watch is None else cryo_watch.masked_extent
        self.cumulative.add(self.cumulative.contribution(th, exclude))
        self.finished_figures[index] = sonication_figures(th, index, cryo_watch)
        return self.finished_figures[index]

    def maps(self, running: Thermometer | None = None, exclude=None):
        """Cumulative ``(dose CEM43 min float64, Tmax C float32)``, a running sonication included; NaN where none
        measured.

        Parameters
        ----------
        running : Thermometer, optional
        exclude : ndarray of bool, optional
            The running sonication's voxels kept out (its ice).

        Returns
        -------
        tuple of ndarray
        """
        contribution = self.cumulative.contribution(running, exclude) if running is not None else None
        dose, tmax, _ = self.cumulative.maps(contribution)
        return dose, tmax

    def cumulative_alarms(self, dose, time_s, sonication) -> list[dict]:
        """Alarms on the cumulative dose in the protected structures of the grid's labels.

        Parameters
        ----------
        dose : ndarray
            From :meth:`maps`.
        time_s : float
        sonication : int
            1-based, the latest.

        Returns
        -------
        list of dict
        """
        if self.grid_labels is None:
            return []
        return cumulative_alarms(dose, self.grid_labels, self.table, self.params, time_s, sonication)

    def cumulative_entry(self, dose, tmax) -> dict:
        """report.json's cumulative figures.

        Parameters
        ----------
        dose, tmax : ndarray
            From :meth:`maps`.

        Returns
        -------
        dict
        """
        return cumulative_figures(dose, tmax, self.grid.affine, self.params.dose_levels_cem43_min)

    def anatomy_on_grid(self, th: Thermometer):
        """A sonication's mean baseline magnitude on the treatment grid.

        Parameters
        ----------
        th : Thermometer

        Returns
        -------
        ndarray of float32
        """
        resample = self.grid.resampler(th.shape, th.affine)
        return resample(np.asarray(th.anatomy, dtype=np.float32), 1, 0.0).astype(np.float32)


def _entry(index, exam) -> dict:
    """A sonication's inputs and acquisition for the treatment's report.json."""
    prov = exam.provenance
    return {"sonication": index + 1, "inputs": prov.get("inputs"), "shape_zyx": list(exam.shape_zyx),
            "affine": exam.affine.tolist(), "te_s": exam.te_s, "b0_t": exam.b0_t, "phase_scale": exam.phase_scale,
            "state": "finished"}


def run_treatment(exams, out_dir, params, *, treatment_grid=None, figures=True, **kwargs):
    """Process several sonications into ``out_dir`` (complete or not at all).

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
    sonication_reports : list of dict
        Each sonication's report.json content (``sonication_<k>/report.json``).
    cumulative : dict
        :func:`cumulative_figures` of the summed maps.
    alarms : list of dict
        Every sonication's alarms and the cumulative ones.
    """
    treatment = Treatment(params, kwargs, grid_from_file(treatment_grid) if treatment_grid else None)
    entries, reports, anatomy = [], [], None
    with atomic.staged(out_dir) as stage:
        for k, exam in enumerate(exams):
            folder = os.path.join(stage, f"sonication_{k + 1:02d}")
            os.makedirs(folder)
            result = process_mod.process(exam, params, keep_temperature=False,
                                         temperature_path=os.path.join(folder, "temperature.nii.gz"), **kwargs)
            result.write_into(folder, figures=figures)
            reports.append(result.report)
            th = result.thermometer
            entries.append({**_entry(k, exam), **treatment.finish(k, th)})
            if anatomy is None:
                anatomy = treatment.anatomy_on_grid(th)
        dose, tmax = treatment.maps()
        maps = outputs.treatment_maps(dose, tmax, treatment.grid, params.dose_levels_cem43_min)
        maps["anatomy.nii.gz"] = (anatomy, treatment.grid.affine)
        names = outputs.write_maps(stage, maps)
        alarms = sorted((a for e in entries for a in e.get("alarms", [])),
                        key=lambda a: (a["sonication"], a["time_s"], a["structure"]))
        cum = treatment.cumulative_entry(dose, tmax)
        alarms += treatment.cumulative_alarms(dose, (entries[-1].get("frame_times_s") or [0.0])[-1], len(entries))
        report = outputs.treatment_report(
            mode="batch", params=params, grid=treatment.grid, sonications=entries, cumulative=cum, alarms=alarms,
            frames_processed=sum(e["frames_processed"] for e in entries),
            extra={"outputs": sorted(names + ["report.json"] +
                                     [f"sonication_{k + 1:02d}/" for k in range(len(exams))])})
        outputs.replace_json(report, os.path.join(stage, "report.json"))
    return reports, cum, alarms
