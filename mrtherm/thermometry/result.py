"""The result of :func:`mrtherm.process`: maps, tables, report and saving."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
import sys

import numpy as np

from mrtherm.geometry import voxel_size_zyx_mm, voxel_volume_ml
from mrtherm.io import atomic, niftiio
from mrtherm.text import count
from mrtherm.thermometry.dose import lesion_masks, lesion_volumes_ml
from mrtherm.thermometry.reference import UNMATCHED_RATIO
from mrtherm.thermometry.watch import format_alarm
from mrtherm.backend import to_numpy, from_numpy, namespace
from mrtherm.errors import ParameterError

CONVENTIONS = {
    "axes": "arrays (t, z, y, x); NIfTI (x, y, z, t) with the input affine unchanged",
    "phase_change": "dphi = angle(S_t * conj(S_ref)), S_ref = complex mean of the baseline frames",
    "prf": "delta_T = phase_sign * dphi_corrected / (2 pi gammabar alpha B0 TE), gammabar = 42.577478 MHz/T",
    "temperature": "body_temp_c + delta_T; NaN where mask = 0",
    "unwrapping": "temporal, each frame against the previous unwrapped frame",
    "drift": "per-slice polynomial in (x, y) scaled to [-1, 1], weighted by |S_t|^2 in the reference region",
    "cem43": "Sapareto & Dewey 1984, R = 0.5 (T >= 43 C) / 0.25; exact integral for T linear between frames",
    "uncertainty": "temperature_sd: SD over baseline frames x sqrt(1+1/N); theory: sqrt(1+1/N)/(|2 pi gammabar alpha B0 TE| SNR)",
}


DOSE_CAP_CEM43_MIN = float(np.finfo(np.float64).max)
"""Dose maps are float64 on disk; the exact integral only overflows float64 above ~1067 C (R^-1024), where the
voxel is capped at the largest float64 and counted in report.json, so a dose map never holds inf."""


def cap_dose(dose: np.ndarray):
    """Replace +inf dose by :data:`DOSE_CAP_CEM43_MIN` (a dose map never holds inf).

    Parameters
    ----------
    dose : ndarray, CEM43 min

    Returns
    -------
    dose : ndarray
        The same array when nothing is capped, else a capped copy; NaN stays NaN.
    n_capped : int
    """
    over = np.isposinf(dose)
    n = int(over.sum())
    if n:
        dose = np.where(over, DOSE_CAP_CEM43_MIN, dose)
    return dose, n


def level_name(level: float) -> str:
    """A dose level in a file name: ``240`` -> ``"240"``, ``0.5`` -> ``"0p5"``.

    Parameters
    ----------
    level : float
        CEM43 minutes.

    Returns
    -------
    str
    """
    return f"{level:g}".replace(".", "p")


@dataclasses.dataclass
class ThermometryResult:
    """Maps and tables of a thermometry run.

    Array attributes are in the array library of in-memory inputs (NumPy for
    files). Shapes: 4-D ``(t, z, y, x)``, 3-D ``(z, y, x)``.

    Attributes
    ----------
    temperature_c : float32 (t, z, y, x) or None
        Absolute temperature, C, NaN where masked (None if not kept).
    dose_cem43_min : float64 (z, y, x)
        CEM43 minutes, NaN where masked.
    tmax_c, temperature_sd_c, temperature_sd_theory_c : float32 (z, y, x), C
    snr : float32 (z, y, x); mask, drift_reference : bool (z, y, x)
    anatomy : float32 (z, y, x), mean baseline magnitude
    lesions : dict level -> bool (z, y, x); lesion_volumes_ml : dict level -> mL
    protected : list of dict (structure table); alarms : list of dict
    report : dict, the content of report.json
    """

    temperature_c: object
    dose_cem43_min: object
    tmax_c: object
    temperature_sd_c: object
    temperature_sd_theory_c: object
    snr: object
    mask: object
    drift_reference: object
    anatomy: object
    labels: object
    lesions: dict
    lesion_volumes_ml: dict
    protected: list
    alarms: list
    warnings: list
    affine: np.ndarray
    frame_times_s: np.ndarray
    params: object
    drift_coefficients: np.ndarray
    reference_voxels: np.ndarray
    peak_curve_c: np.ndarray
    hottest_voxel_zyx: tuple | None
    hottest_curve_c: np.ndarray | None
    k_rad_per_c: float
    report: dict
    temperature_path: str | None = None
    thermometer: object = dataclasses.field(default=None, repr=False)  # the finished Thermometer (treatments)
    # more figures for figures/ (probe curves): callables(folder) -> names written, added by the caller's layer
    figure_writers: list = dataclasses.field(default_factory=list, repr=False)
    extra_maps: dict | None = None  # file name -> host map: cryo (tmin, ice, isotherms), water-fat (fat fraction...)

    def apply_cryo(self, watch):
        """Mask the ice out of dose and Tmax (PRF is noise there), add the cryo report, maps and alarms.

        Parameters
        ----------
        watch : mrtherm.cryo.CryoWatch
            After the last frame.
        """
        ice = watch.masked_extent
        self.dose_cem43_min = np.where(ice, np.nan, to_numpy(self.dose_cem43_min))
        self.tmax_c = np.where(ice, np.nan, to_numpy(self.tmax_c)).astype(np.float32)
        self.lesions = {lev: to_numpy(les) & ~ice for lev, les in self.lesions.items()}
        self.lesion_volumes_ml = lesion_volumes_ml(self.dose_cem43_min, self.lesions, voxel_volume_ml(self.affine))
        self.report["results"]["lesion_volumes_ml"] = {f"{lev:g}": v for lev, v in self.lesion_volumes_ml.items()}
        res = self.report["results"]
        finite = np.isfinite(self.tmax_c)
        res["peak_temperature_c"] = float(np.nanmax(self.tmax_c)) if finite.any() else None
        res["max_dose_cem43_min"] = float(np.nanmax(self.dose_cem43_min)) if finite.any() else None
        if res.get("hottest_voxel_zyx") and finite.any():
            hot = tuple(int(v) for v in np.unravel_index(int(np.nanargmax(self.tmax_c)), self.tmax_c.shape))
            res["hottest_voxel_zyx"], self.hottest_voxel_zyx = list(hot), hot
        self.report["cryo"] = watch.report()
        self.report["alarms"] = list(self.report["alarms"]) + watch.alarms
        self.alarms = list(self.alarms) + watch.alarms
        self.extra_maps = {**(self.extra_maps or {}), **watch.maps()}

    # ------------------------------------------------------------------ building
    @classmethod
    def from_thermometer(cls, th, exam=None, *, temperature=None, temperature_path=None, hottest_curve=None,
                         out_xp=None, kernel_seconds=None):
        """The result of a finished (or paused) :class:`mrtherm.Thermometer`.

        Parameters
        ----------
        th : Thermometer
        exam : Exam, optional
            Source of the provenance (inputs, parameter sources, phase scaling) for report.json.
        temperature : (t, z, y, x) array, optional
            The temperature series, when kept.
        temperature_path : path, optional
            Where the series was streamed (a NIfTI file), when not kept.
        hottest_curve : (t,) array, optional
            Temperature of the hottest voxel over time (read by the caller from wherever the series went).
        out_xp : array namespace, optional
            Library of the returned maps (default NumPy).

        Returns
        -------
        ThermometryResult
        """
        warnings = list(th.warnings)
        dose_np, capped = cap_dose(to_numpy(th.dose_cem43_min))
        if capped:
            warnings.append(f"{count(capped, 'dose voxel')} overflowed float64 (temperatures above "
                            f"~1000 C, not physical: check the input) and {'was' if capped == 1 else 'were'} capped at "
                            f"{DOSE_CAP_CEM43_MIN:.3g} CEM43 min")
        tmax_np = to_numpy(th.tmax_c)
        lesions = lesion_masks(dose_np, th.params.dose_levels_cem43_min)
        volumes = lesion_volumes_ml(dose_np, th.params.dose_levels_cem43_min, voxel_volume_ml(th.affine))
        hottest = None
        if np.isfinite(tmax_np).any():
            hottest = tuple(int(v) for v in np.unravel_index(int(np.nanargmax(tmax_np)), tmax_np.shape))
            if hottest_curve is None and temperature is not None:
                hottest_curve = to_numpy(temperature[(slice(None),) + hottest])
        hottest_curve = None if hottest_curve is None else np.asarray(hottest_curve, dtype=np.float64)
        rows, alarms = th.protected_structures()
        trust = _trust(th, tmax_np, dose_np)
        warnings += trust["warnings"]
        sd = to_numpy(th.temperature_sd_c())
        report = _report(th, exam, warnings, dose_np, tmax_np, sd, volumes, hottest, hottest_curve, rows, alarms,
                         capped)
        report["trust"] = trust
        if th.target is not None:
            report["target"] = {**th.target.report(th.reliability.mask),
                                "coordinates": "tissue (the first baseline frame's position)"
                                if th.registration is not None else "image"}
        if kernel_seconds:
            report["kernel_seconds"] = kernel_seconds
        extra = None
        if th.params.water_fat:
            from mrtherm.thermometry.waterfat_engine import water_fat_maps, water_fat_report  # noqa: PLC0415
            report["water_fat"], extra = water_fat_report(th), water_fat_maps(th)
        if getattr(th, "bioheat", None) is not None and th.bioheat.tmax is not None:
            levels = th.params.dose_levels_cem43_min
            report["bioheat"] = th.bioheat.report(levels, voxel_volume_ml(th.affine))
            extra = {**(extra or {}), **th.bioheat.maps(levels)}

        def out(a):
            if a is None:
                return None
            if out_xp is None:
                return to_numpy(a)
            return a if namespace(a) is out_xp else from_numpy(to_numpy(a), out_xp)

        return cls(
            temperature_c=out(temperature), dose_cem43_min=out(dose_np), tmax_c=out(tmax_np), temperature_sd_c=out(sd),
            temperature_sd_theory_c=out(th.temperature_sd_theory_c()), snr=out(th.reliability.snr),
            mask=out(th.reliability.mask), drift_reference=out(th.drift_ref), anatomy=out(th.anatomy),
            labels=th.labels, lesions={k: out(v) for k, v in lesions.items()}, lesion_volumes_ml=volumes,
            protected=rows, alarms=alarms, warnings=warnings, affine=th.affine, frame_times_s=np.asarray(th.times_s),
            params=th.params, drift_coefficients=np.asarray(th.drift_coefficients),
            reference_voxels=np.asarray(th.reference_voxels), peak_curve_c=np.asarray(th.peak_curve_c),
            hottest_voxel_zyx=hottest, hottest_curve_c=hottest_curve, k_rad_per_c=th.k_rad_per_c, report=report,
            temperature_path=os.fspath(temperature_path) if temperature_path is not None else None, thermometer=th,
            extra_maps=extra)

    # ------------------------------------------------------------------ access
    def temperature_series(self):
        """The ``(t, z, y, x)`` temperature series, C: the array kept in memory, else the written file opened
        lazily as a dask array (one chunk per frame, read on demand; :mod:`mrtherm.io.lazy`).

        Returns
        -------
        array or dask.array.Array

        Raises
        ------
        ParameterError
            Neither kept in memory nor written to a file.
        """
        if self.temperature_c is not None:
            return self.temperature_c
        if not self.temperature_path:
            raise ParameterError("this result kept no temperature series (keep_temperature=False, no file)")
        from mrtherm.io.lazy import lazy_series  # noqa: PLC0415
        return lazy_series(self.temperature_path)

    def host(self, name: str) -> np.ndarray:
        """An attribute as a NumPy array (copied from the GPU if needed).

        Parameters
        ----------
        name : str
            Attribute name, e.g. ``"tmax_c"``.

        Returns
        -------
        ndarray
        """
        return to_numpy(getattr(self, name))

    # ------------------------------------------------------------------ saving
    def write_into(self, folder, figures: bool = True) -> list[str]:
        """Write every output into an existing (staging) folder.

        Parameters
        ----------
        folder : str or path
            Existing folder, normally a staging folder that is renamed when complete.
        figures : bool, optional
            Also draw the PNG figures.

        Returns
        -------
        list of str
            Names of the files written (``report.json`` last).
        """
        folder = os.fspath(folder)
        aff = self.affine
        written = []
        temp_out = os.path.join(folder, "temperature.nii.gz")
        step = float(np.median(np.diff(self.frame_times_s))) if len(self.frame_times_s) > 1 else None
        if self.temperature_c is not None:
            niftiio.save_volume(self.host("temperature_c"), aff, temp_out, frame_time_s=step)
            written.append("temperature.nii.gz")
        elif self.temperature_path and os.path.abspath(self.temperature_path) != os.path.abspath(temp_out):
            shutil.copyfile(self.temperature_path, temp_out)
            written.append("temperature.nii.gz")
        elif self.temperature_path:
            written.append("temperature.nii.gz")
        maps = {"dose_cem43.nii.gz": self.host("dose_cem43_min").astype(np.float64),  # float32 overflows at 3e38
                "tmax.nii.gz": self.host("tmax_c"),
                "temperature_sd.nii.gz": self.host("temperature_sd_c"),
                "temperature_sd_theory.nii.gz": self.host("temperature_sd_theory_c"),
                "snr.nii.gz": self.host("snr"),
                "mask.nii.gz": self.host("mask").astype(np.uint8),
                "drift_reference.nii.gz": self.host("drift_reference").astype(np.uint8),
                "anatomy.nii.gz": self.host("anatomy")}
        if self.labels is not None:
            maps["labels.nii.gz"] = np.asarray(self.labels, dtype=np.int16)
        for level, les in self.lesions.items():
            maps[f"lesion_{level_name(level)}.nii.gz"] = to_numpy(les).astype(np.uint8)
        maps.update(self.extra_maps or {})
        for name, arr in maps.items():
            niftiio.save_volume(arr, aff, os.path.join(folder, name))
            written.append(name)
        if figures:
            from mrtherm.thermometry import figures as figs
            written += [f"figures/{n}" for n in figs.write_all(os.path.join(folder, "figures"), self)]
            for write in self.figure_writers:
                written += [f"figures/{n}" for n in write(os.path.join(folder, "figures"))]
        report = dict(self.report)
        report["outputs"] = sorted(written + ["report.json"])
        report["nifti_gzip"] = niftiio.gzip_writer_name()
        with open(os.path.join(folder, "report.json"), "w", encoding="utf-8") as fh:
            json.dump(finite_json(report), fh, indent=2, allow_nan=False, default=json_default)
        written.append("report.json")
        return written

    def save(self, out_dir, figures: bool = True) -> str:
        """Write all outputs to ``out_dir`` completely or not at all.

        Parameters
        ----------
        out_dir : str or PathLike
        figures : bool
            Write ``figures/*.png``.

        Returns
        -------
        str
            The absolute folder path.
        """
        with atomic.staged(out_dir) as stage:
            self.write_into(stage, figures=figures)
        return os.path.abspath(os.fspath(out_dir))

    def summary(self) -> str:
        """A few lines for the terminal: peak, lesion volumes, structures, alarms.

        Returns
        -------
        str
        """
        r = self.report["results"]
        lines = [f"peak temperature: {r['peak_temperature_c']:.1f} C at voxel (z,y,x) {tuple(r['hottest_voxel_zyx'])}, "
                 f"t = {r['time_of_peak_s']:.1f} s" if r["peak_temperature_c"] is not None else "peak temperature: n/a"]
        for lev, v in self.lesion_volumes_ml.items():
            lines.append(f"lesion volume at {lev:g} CEM43: {v:.3f} mL")
        for row in self.protected:
            if "max_temperature_c" in row:
                model = " (MODEL, bioheat)" if row.get("source") == "model" else ""
                lines.append(f"{row['structure']}{model}: max {row['max_temperature_c']:.1f} C, "
                             f"max dose {row['max_dose_cem43_min']:.3g} CEM43")
        if self.alarms:
            lines.extend(format_alarm(a) for a in self.alarms)
        else:
            lines.append("alarms: none")
        return "\n".join(lines)


def _median_in(a, mask):
    vals = a[mask]
    vals = vals[np.isfinite(vals)]
    return float(np.median(vals)) if vals.size else float("nan")


def _report(th, exam, warnings, dose, tmax, sd, volumes, hottest, hottest_curve, rows, alarms, capped) -> dict:
    """The content of report.json (see the README for every key)."""
    p, times, mask = th.params, np.asarray(th.times_s), th.reliability.mask
    prov = exam.provenance if exam is not None else {}
    coeffs = np.asarray(th.drift_coefficients).reshape(-1, th.shape[0], th.model.k)
    drift_c = coeffs[:, :, 0] * (p.phase_sign / th.k_rad_per_c)
    return {
        "mrtherm_version": __import__("mrtherm").__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command_line": " ".join(sys.argv) if sys.argv else None,
        "inputs": prov.get("inputs"),
        "provenance": {k: v for k, v in prov.items() if k != "inputs"},
        "conventions": CONVENTIONS,
        "parameters": {**dataclasses.asdict(p), "te_s": th.te_s, "b0_t": th.b0_t,
                       "backend": f"{th.backend_used} ({th.engine.name} engine)",
                       "dose_levels_cem43_min": list(p.dose_levels_cem43_min)},
        "exam": {"shape_tzyx": [th.frames_processed, *th.shape], "voxel_size_mm_zyx": list(voxel_size_zyx_mm(th.affine)),
                 "voxel_volume_ml": voxel_volume_ml(th.affine), "affine": th.affine.tolist(),
                 "frame_times_s": [float(t) for t in times],
                 "phase_scale": exam.phase_scale if exam is not None else None,
                 "radians_per_c": th.k_rad_per_c, "celsius_per_wrap": float(np.pi / abs(th.k_rad_per_c))},
        "mask": {"rules": th.reliability.rules, "reliable_voxels": int(mask.sum()), "labels": th.label_info,
                 "label_table": th.table.to_json() if th.labels is not None else None},
        "noise": {"sigma": th.reliability.sigma, "method": th.reliability.sigma_method,
                  **_noise_details(th.reliability.noise_info),
                  "median_snr_in_mask": _median_in(th.reliability.snr, mask),
                  "median_sd_theory_c": _median_in(th.reliability.sd_theory_c, mask),
                  "median_sd_baseline_c": _median_in(sd, mask)},
        "reference": _reference_report(th),
        "validity": _validity_report(th),
        "drift": {**th.drift_rule, "order": p.drift_order, "frames_with_fallback_fit": int(th.fallback_frames),
                  "max_abs_offset_c": float(np.abs(drift_c).max()) if drift_c.size else 0.0,
                  "min_reference_voxels_per_slice": int(np.min(th.reference_voxels)) if th.reference_voxels else 0},
        "results": {
            "peak_temperature_c": float(np.nanmax(tmax)) if hottest else None,
            "hottest_voxel_zyx": list(hottest) if hottest else None,
            "hottest_voxel_world_mm": (th.affine @ np.array([hottest[2], hottest[1], hottest[0], 1.0]))[:3].tolist()
            if hottest else None,
            "time_of_peak_s": float(times[int(np.nanargmax(hottest_curve))]) if hottest_curve is not None else None,
            "max_dose_cem43_min": float(np.nanmax(dose)) if np.isfinite(dose).any() else None,
            "dose_map": {"dtype": "float64", "cap_cem43_min": DOSE_CAP_CEM43_MIN, "capped_voxels": capped},
            "lesion_volumes_ml": {f"{lev:g}": v for lev, v in volumes.items()},
        },
        "protected_structures": rows,  # with the per-frame max/mean curves (C) the viewer and figures draw
        "alarms": alarms,
        "warnings": warnings,
    }


def _reference_report(th) -> dict:
    """How each frame's phase reference was chosen, and the motion registration (report.json ``reference``)."""
    decision = dict(th.reference_decision)
    if th.frame_reference is None:
        out = {"mode": "mean", "rule": "complex mean of the baseline frames", "decision": decision}
    else:
        out = {**th.frame_reference.report(), "decision": decision, "rule": REFERENCE_RULES[decision["used"]]}
        if th.registration is not None and th.frame_reference.library is not None:
            out["rule"] += ("; with motion registration the library matches on the image-position magnitudes (the "
                            "breathing state) and averages the registered entries (tissue coordinates)")
    reg = th.registration
    if reg is None:
        out["registration"] = {"applied": False, "why": "no motion detected" if th.params.register_motion == "auto"
                               else f"register_motion = {th.params.register_motion}"}
    else:
        dz, dy, dx = voxel_size_zyx_mm(th.affine)
        shifts = np.asarray(reg.shifts_vox, dtype=np.float64).reshape(-1, 2)
        out["registration"] = {
            "applied": True, "method": "in-plane translation common to all slices, Gauss-Newton on the magnitude "
            "against the first baseline frame (rotation and through-plane motion not estimated); every frame and "
            "every library entry is resampled into that frame's position (tissue coordinates) before the "
            "thermometry, so masks, unwrapping, temperature, dose and Tmax live on tissue points",
            "shift_mm_per_frame": [[float(a * dy), float(b * dx)] for a, b in shifts],
            "entry_shift_mm": None if reg.entry_shifts is None else
            [[float(a * dy), float(b * dx)] for a, b in np.asarray(reg.entry_shifts)],
            "max_shift_mm": float(np.abs(shifts * [dy, dx]).max()) if shifts.size else 0.0}
    return out


def _trust(th, tmax, dose) -> dict:
    """report.json ``trust``: blind spots (heating or the target next to unmeasured voxels) and implausible heating
    (:mod:`mrtherm.thermometry.plausibility`)."""
    from mrtherm.thermometry import plausibility as pl  # noqa: PLC0415
    from mrtherm.thermometry.masks import air_threshold  # noqa: PLC0415
    if not th.frames_processed:
        return {"warnings": []}
    p = th.params
    blind = pl.blind_spot_warnings(tmax, to_numpy(th.measured_frames), th.frames_processed, th.affine,
                                   p.body_temp_c, th.target)
    anatomy = np.asarray(th.anatomy)
    body = (np.asarray(th.labels) != 0) if th.labels is not None else \
        pl.body_outline(anatomy, p.snr_threshold * th.reliability.sigma)
    false = pl.implausible_heating_warnings(tmax, dose, anatomy, body, air_threshold(anatomy)[0], th.affine,
                                            p.body_temp_c, min(p.dose_levels_cem43_min))
    return {"rules": pl.RULES,
            "blind_spots": blind, "implausible_heating": false, "warnings": blind + false}


def _noise_details(info) -> dict:
    """report.json ``noise``: which estimator, why, what the others said, how much was blanked."""
    if not info:
        return {}
    return {"estimator": info.get("method"), "why": info.get("why"), "candidates": info.get("candidates"),
            "blanked_fraction": info.get("blanked_fraction"), "details": info.get("details")}


def _validity_report(th) -> dict:
    """Per-frame validity (report.json ``validity``): how many reliable voxels each frame could not measure."""
    p, mask = th.params, th.reliability.mask
    measured = to_numpy(th.measured_frames)[mask]
    return {"rule": "a reliable voxel is measured in a frame only while |S_t| >= snr_threshold x sigma, "
                    "|S_t| >= min_signal_fraction x |S_ref| and |S_ref| >= snr_threshold x sigma; otherwise NaN in "
                    "that frame, no dose over the segments next to it, Tmax unchanged, and its unwrapping "
                    "re-anchored to the tracked voxels within 2 voxels in-plane when it comes back",
            "signal_floor": th.params.snr_threshold * th.reliability.sigma,
            "min_signal_fraction": p.min_signal_fraction,
            "invalid_voxels_per_frame": list(th.invalid_voxels),
            "reanchored_voxels_per_frame": list(th.reanchored_voxels),
            "reliable_voxels_measured_in_every_frame": int(np.sum(measured == th.frames_processed)),
            "reliable_voxels_never_measured": int(np.sum(measured == 0))}


REFERENCE_RULES = {
    "library": "per frame the complex mean of the baseline frames whose magnitude matches it as well as the best "
               "within noise (or nearest in the respiratory signal); baseline frames leave themselves out; match "
               "ratio = least squared magnitude difference over the noise expectation 2 sigma^2 per voxel",
    "referenceless": "per frame a per-slice polynomial fitted to the frame's own phase (wrap-free neighbour "
                     "differences), then the drift-model correction with a sparse two-signed heat prior (heating and cooling)",
    "hybrid": "library as above, then the drift-model correction with a sparse two-signed heat prior (heating and "
              f"cooling); a frame whose best match ratio exceeds {UNMATCHED_RATIO:g} is referenceless (not once "
              "the frames are registered for motion)",

}


def finite_json(o):
    """NaN and infinities become null so report.json is strict JSON.

    Parameters
    ----------
    o : object
        Nested dicts, lists, tuples and numbers (NumPy scalars included).

    Returns
    -------
    object
        The same structure with non-finite floats as None and NumPy integers as int.
    """
    if isinstance(o, dict):
        return {k: finite_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite_json(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def json_default(o):
    """JSON for NumPy scalars and arrays, tuples and anything else (as text): ``json.dump``'s ``default``.

    Parameters
    ----------
    o : object

    Returns
    -------
    int, float, list or str
    """
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)
