"""The result of :func:`mrtherm.process`: maps, tables, report and saving."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
import sys

import numpy as np

from mrtherm.io import atomic, niftiio
from mrtherm.text import count
from mrtherm.backend import to_numpy, from_numpy, namespace

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
    """``(dose with +inf replaced by DOSE_CAP_CEM43_MIN, number of capped voxels)``; NaN stays NaN."""
    over = np.isposinf(dose)
    n = int(over.sum())
    if n:
        dose = np.where(over, DOSE_CAP_CEM43_MIN, dose)
    return dose, n


def _level_name(level: float) -> str:
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

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, *, exam, params, xp, out_xp, temperature, temperature_path, dose, tmax, sd, sd_theory, snr,
              mask, drift_reference, drift_rule, coeff_hist, ref_counts, fallback_frames, noise_sigma,
              noise_method, mask_rules, labels, label_info, table, protected, peak_curve, warnings,
              backend_used, k_rad_per_c):
        def out(a):
            if a is None:
                return None
            if out_xp is None:
                return to_numpy(a)
            return a if namespace(a) is out_xp else from_numpy(to_numpy(a), out_xp)

        tmax_np = to_numpy(tmax)
        dose_np, capped = cap_dose(to_numpy(dose))
        if capped:
            warnings.append(f"{count(capped, 'dose voxel')} overflowed float64 (temperatures above "
                            f"~1000 C, not physical: check the input) and {'was' if capped == 1 else 'were'} capped at "
                            f"{DOSE_CAP_CEM43_MIN:.3g} CEM43 min")
            dose = from_numpy(dose_np, xp)
        vox_ml = exam.voxel_volume_ml
        lesions, volumes = {}, {}
        for level in params.dose_levels_cem43_min:
            les = np.nan_to_num(dose_np, nan=0.0) >= level
            lesions[level] = les
            volumes[level] = float(les.sum() * vox_ml)

        # hottest voxel and its curve
        hottest, hottest_curve = None, None
        if np.isfinite(tmax_np).any():
            flat = int(np.nanargmax(tmax_np))
            hottest = tuple(int(v) for v in np.unravel_index(flat, tmax_np.shape))
            if temperature is not None:
                hottest_curve = to_numpy(temperature[(slice(None),) + hottest]).astype(np.float64)
            elif temperature_path is not None:
                import nibabel as nib
                img = nib.load(os.fspath(temperature_path))
                z, y, x = hottest
                hottest_curve = np.asarray(img.dataobj[x, y, z, :], dtype=np.float64)

        # protected structures and alarms
        times = exam.frame_times_s
        rows, alarms = [], []
        for value, info in protected.items():
            row = {"label": int(value), "structure": info["name"], "voxels": info["voxels"],
                   "reliable_voxels": info["reliable_voxels"]}
            if info["reliable_voxels"]:
                maxc = np.asarray(info["max_c"])
                maxd = np.asarray(info["max_dose"])
                tab = info["time_above_s"]
                row.update({
                    "max_temperature_c": float(maxc.max()),
                    "time_of_max_s": float(times[int(maxc.argmax())]),
                    "max_dose_cem43_min": float(maxd.max()),
                    f"max_time_above_{params.time_above_threshold_c:g}c_s": float(to_numpy(xp.max(tab))) if tab is not None else 0.0,
                    "max_c_curve": [float(v) for v in maxc],
                    "mean_c_curve": [float(v) for v in info["mean_c"]],
                })
                for quantity, curve, thr, unit in (("temperature", maxc, params.alarm_temperature_c, "C"),
                                                   ("dose", maxd, params.alarm_dose_cem43_min, "CEM43 min")):
                    hit = np.flatnonzero(curve >= thr)
                    if hit.size:
                        f = int(hit[0])
                        alarms.append({"structure": info["name"], "label": int(value), "quantity": quantity,
                                       "threshold": float(thr), "unit": unit, "value": float(curve[f]),
                                       "frame": f, "time_s": float(times[f])})
            rows.append(row)
        alarms.sort(key=lambda a: (a["time_s"], a["structure"]))

        anatomy = to_numpy(snr) * noise_sigma
        sd_np = to_numpy(sd)
        theory_np = to_numpy(sd_theory)
        mask_np = to_numpy(mask).astype(bool)
        def nan_med(a):
            vals = a[mask_np]
            vals = vals[np.isfinite(vals)]
            return float(np.median(vals)) if vals.size else float("nan")
        drift_c = coeff_hist[:, :, 0] * (params.phase_sign / k_rad_per_c)

        report = {
            "mrtherm_version": __import__("mrtherm").__version__,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command_line": " ".join(sys.argv) if sys.argv else None,
            "inputs": exam.provenance.get("inputs"),
            "provenance": {k: v for k, v in exam.provenance.items() if k != "inputs"},
            "conventions": CONVENTIONS,
            "parameters": {**dataclasses.asdict(params), "te_s": exam.te_s, "b0_t": exam.b0_t,
                           "backend": backend_used,
                           "dose_levels_cem43_min": list(params.dose_levels_cem43_min)},
            "exam": {"shape_tzyx": list(exam.shape), "voxel_size_mm_zyx": [float(v) for v in
                                                                          np.sqrt((exam.affine[:3, :3] ** 2).sum(0))[::-1]],
                     "voxel_volume_ml": vox_ml, "affine": exam.affine.tolist(),
                     "frame_times_s": [float(t) for t in times], "phase_scale": exam.phase_scale,
                     "radians_per_c": k_rad_per_c, "celsius_per_wrap": float(np.pi / abs(k_rad_per_c))},
            "mask": {"rules": mask_rules, "reliable_voxels": int(mask_np.sum()),
                     "labels": label_info, "label_table": table.to_json() if labels is not None else None},
            "noise": {"sigma": noise_sigma, "method": noise_method,
                      "median_snr_in_mask": nan_med(to_numpy(snr)),
                      "median_sd_theory_c": nan_med(theory_np), "median_sd_baseline_c": nan_med(sd_np)},
            "drift": {**drift_rule, "order": params.drift_order,
                      "frames_with_fallback_fit": int(fallback_frames),
                      "max_abs_offset_c": float(np.abs(drift_c).max()),
                      "min_reference_voxels_per_slice": int(ref_counts.min())},
            "results": {
                "peak_temperature_c": float(np.nanmax(tmax_np)) if hottest else None,
                "hottest_voxel_zyx": list(hottest) if hottest else None,
                "hottest_voxel_world_mm": (exam.affine @ np.array([hottest[2], hottest[1], hottest[0], 1.0]))[:3].tolist()
                if hottest else None,
                "time_of_peak_s": float(times[int(np.nanargmax(hottest_curve))]) if hottest_curve is not None else None,
                "max_dose_cem43_min": float(np.nanmax(dose_np)) if np.isfinite(dose_np).any() else None,
                "dose_map": {"dtype": "float64", "cap_cem43_min": DOSE_CAP_CEM43_MIN, "capped_voxels": capped},
                "lesion_volumes_ml": {f"{lev:g}": v for lev, v in volumes.items()},
            },
            "protected_structures": [{k: v for k, v in r.items() if not k.endswith("_curve")} for r in rows],
            "alarms": alarms,
            "warnings": warnings,
        }
        return cls(
            temperature_c=out(temperature),
            dose_cem43_min=out(dose), tmax_c=out(tmax), temperature_sd_c=out(sd),
            temperature_sd_theory_c=out(from_numpy(theory_np, xp)), snr=out(from_numpy(to_numpy(snr), xp)),
            mask=out(from_numpy(mask_np, xp)), drift_reference=out(from_numpy(np.asarray(drift_reference), xp)),
            anatomy=out(from_numpy(anatomy.astype(np.float32), xp)), labels=labels,
            lesions={k: out(from_numpy(v, xp)) for k, v in lesions.items()}, lesion_volumes_ml=volumes,
            protected=rows, alarms=alarms, warnings=warnings, affine=exam.affine, frame_times_s=np.asarray(times),
            params=params, drift_coefficients=coeff_hist, reference_voxels=ref_counts, peak_curve_c=peak_curve,
            hottest_voxel_zyx=hottest, hottest_curve_c=hottest_curve, k_rad_per_c=k_rad_per_c, report=report,
            temperature_path=os.fspath(temperature_path) if temperature_path is not None else None)

    # ------------------------------------------------------------------ access
    def host(self, name: str) -> np.ndarray:
        """An attribute as a NumPy array (copied from the GPU if needed)."""
        return to_numpy(getattr(self, name))

    # ------------------------------------------------------------------ saving
    def write_into(self, folder, figures: bool = True) -> list[str]:
        """Write every output into an existing (staging) folder; returns the file names."""
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
            maps[f"lesion_{_level_name(level)}.nii.gz"] = to_numpy(les).astype(np.uint8)
        for name, arr in maps.items():
            niftiio.save_volume(arr, aff, os.path.join(folder, name))
            written.append(name)
        if figures:
            from mrtherm.thermometry import figures as figs
            for n in figs.write_all(os.path.join(folder, "figures"), self):
                written.append(f"figures/{n}")
        report = dict(self.report)
        report["outputs"] = sorted(written + ["report.json"])
        with open(os.path.join(folder, "report.json"), "w", encoding="utf-8") as fh:
            json.dump(_finite(report), fh, indent=2, allow_nan=False, default=_json_default)
        written.append("report.json")
        return written

    def save(self, out_dir, figures: bool = True) -> str:
        """Write all outputs to ``out_dir`` completely or not at all; returns the folder."""
        stage = atomic.staging_dir(out_dir)
        try:
            self.write_into(stage, figures=figures)
        except BaseException:
            atomic.discard(stage)
            raise
        atomic.commit(stage, out_dir)
        return os.path.abspath(os.fspath(out_dir))

    def summary(self) -> str:
        r = self.report["results"]
        lines = [f"peak temperature: {r['peak_temperature_c']:.1f} C at voxel (z,y,x) {tuple(r['hottest_voxel_zyx'])}, "
                 f"t = {r['time_of_peak_s']:.1f} s" if r["peak_temperature_c"] is not None else "peak temperature: n/a"]
        for lev, v in self.lesion_volumes_ml.items():
            lines.append(f"lesion volume at {lev:g} CEM43: {v:.3f} mL")
        for row in self.protected:
            if "max_temperature_c" in row:
                lines.append(f"{row['structure']}: max {row['max_temperature_c']:.1f} C, "
                             f"max dose {row['max_dose_cem43_min']:.3g} CEM43")
        if self.alarms:
            for a in self.alarms:
                lines.append(f"ALARM {a['structure']} {a['quantity']} {a['value']:.3g} >= {a['threshold']:g} "
                             f"{a['unit']} at frame {a['frame']} (t = {a['time_s']:.1f} s)")
        else:
            lines.append("alarms: none")
        return "\n".join(lines)


def _finite(o):
    """NaN and infinities become null so report.json is strict JSON."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)
