"""The typed summary of a run: what every mode returns and every consumer (terminal, cohort table) reads.

report.json stays the complete record on disk; code does not read it back by key. A run returns a
:class:`RunSummary`; the terminal lines and the cohort's metrics rows are made from its fields, so a renamed field
is an AttributeError in the tests, not a silently empty column. The one place that reads report.json into a summary
is :meth:`SonicationSummary.from_report` (for outputs written earlier), beside the protected-structure rows' own
:meth:`mrtherm.thermometry.watch.StructureResult.from_report`.
"""

from __future__ import annotations

import dataclasses

from mrtherm.thermometry.result import level_name
from mrtherm.thermometry.watch import StructureResult, format_alarm

__all__ = ["CumulativeSummary", "RunSummary", "SonicationSummary", "StructureResult"]


@dataclasses.dataclass(frozen=True)
class SonicationSummary:
    """One sonication's (or a single exam's) figures.

    Attributes
    ----------
    sonication : str
        ``""`` for a single exam, else its sub-folder (``sonication_01``).
    frames : int
    peak_temperature_c, time_of_peak_s, max_dose_cem43_min : float or None
        None when nothing was measured.
    lesion_volumes_ml : dict of float to float
        Per CEM43 level.
    structures : tuple of StructureResult
    alarms : tuple of dict
        report.json's alarms (see :func:`mrtherm.thermometry.watch.format_alarm`).
    warnings, trust_warnings : tuple of str
        All warnings, and those about blind spots and implausible heating (printed even when quiet).
    reference_mode : str or None
    drift_order : int or None
    drift_max_abs_offset_c : float or None
    drift_frames_with_fallback_fit : int or None
    median_sd_baseline_c, median_sd_theory_c : float or None
    reliable_voxels : int or None
    """

    sonication: str
    frames: int
    peak_temperature_c: float | None
    time_of_peak_s: float | None
    max_dose_cem43_min: float | None
    lesion_volumes_ml: dict
    structures: tuple = ()
    alarms: tuple = ()
    warnings: tuple = ()
    trust_warnings: tuple = ()
    reference_mode: str | None = None
    drift_order: int | None = None
    drift_max_abs_offset_c: float | None = None
    drift_frames_with_fallback_fit: int | None = None
    median_sd_baseline_c: float | None = None
    median_sd_theory_c: float | None = None
    reliable_voxels: int | None = None

    @classmethod
    def from_report(cls, report: dict, sonication: str = "") -> "SonicationSummary":
        """The summary of a sonication's report.json (the one reader of its keys).

        Parameters
        ----------
        report : dict
            As :class:`mrtherm.ThermometryResult` writes it.
        sonication : str, optional

        Returns
        -------
        SonicationSummary
        """
        res, drift, noise = report.get("results", {}), report.get("drift", {}), report.get("noise", {})
        return cls(
            sonication=sonication,
            frames=int((report.get("exam", {}).get("shape_tzyx") or [0])[0]),
            peak_temperature_c=res.get("peak_temperature_c"), time_of_peak_s=res.get("time_of_peak_s"),
            max_dose_cem43_min=res.get("max_dose_cem43_min"),
            lesion_volumes_ml={float(k): float(v) for k, v in (res.get("lesion_volumes_ml") or {}).items()},
            structures=tuple(StructureResult.from_report(r) for r in report.get("protected_structures", [])),
            alarms=tuple(report.get("alarms", [])), warnings=tuple(report.get("warnings", [])),
            trust_warnings=tuple(report.get("trust", {}).get("warnings", [])),
            reference_mode=report.get("reference", {}).get("mode"), drift_order=drift.get("order"),
            drift_max_abs_offset_c=drift.get("max_abs_offset_c"),
            drift_frames_with_fallback_fit=drift.get("frames_with_fallback_fit"),
            median_sd_baseline_c=noise.get("median_sd_baseline_c"),
            median_sd_theory_c=noise.get("median_sd_theory_c"),
            reliable_voxels=report.get("mask", {}).get("reliable_voxels"))

    def metrics_row(self) -> dict:
        """The cohort table's columns for this sonication.

        Returns
        -------
        dict
            Peak, dose, lesion volume per level (``lesion_<level>_ml``), each protected structure's maximum
            temperature and dose (``<structure>_max_c``, ``<structure>_max_dose_cem43_min``), alarm and warning
            counts, drift and noise figures, reference mode and frames.
        """
        row = {"sonication": self.sonication, "peak_temperature_c": self.peak_temperature_c,
               "time_of_peak_s": self.time_of_peak_s, "max_dose_cem43_min": self.max_dose_cem43_min,
               "frames": self.frames, "reference_mode": self.reference_mode, "drift_order": self.drift_order,
               "drift_max_abs_offset_c": self.drift_max_abs_offset_c,
               "drift_frames_with_fallback_fit": self.drift_frames_with_fallback_fit,
               "median_sd_baseline_c": self.median_sd_baseline_c, "median_sd_theory_c": self.median_sd_theory_c,
               "reliable_voxels": self.reliable_voxels, "alarms": len(self.alarms), "warnings": len(self.warnings)}
        for level, ml in self.lesion_volumes_ml.items():
            row[f"lesion_{level_name(level)}_ml"] = ml
        for s in self.structures:
            name = s.structure.replace(" ", "_")
            row[f"{name}_max_c"] = s.max_temperature_c
            row[f"{name}_max_dose_cem43_min"] = s.max_dose_cem43_min
        return row

    def lines(self) -> list[str]:
        """Terminal lines: peak, lesion volumes, each structure's maxima.

        Returns
        -------
        list of str
        """
        head = f"{self.sonication}: " if self.sonication else ""
        out = [f"{head}{self.frames} frames, peak " +
               ("n/a" if self.peak_temperature_c is None else f"{self.peak_temperature_c:.1f} C") +
               ("" if self.time_of_peak_s is None else f" at t = {self.time_of_peak_s:.1f} s")]
        out += [f"{head}lesion volume at {lev:g} CEM43: {v:.3f} mL" for lev, v in self.lesion_volumes_ml.items()]
        out += [f"{head}{s.structure}: max {s.max_temperature_c:.1f} C, max dose {s.max_dose_cem43_min:.3g} CEM43"
                for s in self.structures if s.max_temperature_c is not None]
        return out


@dataclasses.dataclass(frozen=True)
class CumulativeSummary:
    """A treatment's maps summed over its sonications on the treatment grid.

    Attributes
    ----------
    peak_temperature_c, max_dose_cem43_min : float or None
    lesion_volumes_ml : dict of float to float
    reliable_voxels : int
        Treatment-grid voxels some sonication measured.
    """

    peak_temperature_c: float | None
    max_dose_cem43_min: float | None
    lesion_volumes_ml: dict
    reliable_voxels: int

    @classmethod
    def from_figures(cls, figures: dict) -> "CumulativeSummary":
        """From :func:`mrtherm.app.treatment.cumulative_figures`.

        Parameters
        ----------
        figures : dict

        Returns
        -------
        CumulativeSummary
        """
        return cls(figures["peak_temperature_c"], figures["max_dose_cem43_min"],
                   {float(k): float(v) for k, v in figures["lesion_volumes_ml"].items()}, int(figures["reliable_voxels"]))


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a run produced: per sonication, cumulative (several sonications), alarms and warnings.

    Attributes
    ----------
    out_dir : str or None
        Where the outputs are (None for a run kept in memory).
    sonications : tuple of SonicationSummary
        One for a single exam.
    cumulative : CumulativeSummary or None
        For a treatment of several sonications.
    alarms : tuple of dict
        Every alarm of the run, cumulative ones included, in time order.
    """

    out_dir: str | None
    sonications: tuple
    cumulative: CumulativeSummary | None = None
    alarms: tuple = ()

    @property
    def warnings(self) -> tuple:
        """Every sonication's warnings, in order (duplicates once)."""
        return tuple(dict.fromkeys(w for s in self.sonications for w in s.warnings))

    @property
    def trust_warnings(self) -> tuple:
        """The warnings about blind spots and implausible heating (never silenced)."""
        return tuple(dict.fromkeys(w for s in self.sonications for w in s.trust_warnings))

    def lines(self) -> list[str]:
        """The terminal summary.

        Returns
        -------
        list of str
        """
        out = [line for s in self.sonications for line in s.lines()]
        if self.cumulative is not None:
            out += [f"cumulative lesion volume at {lev:g} CEM43: {v:.3f} mL"
                    for lev, v in self.cumulative.lesion_volumes_ml.items()]
        out += [format_alarm(a) for a in self.alarms] or ["alarms: none"]
        return out
