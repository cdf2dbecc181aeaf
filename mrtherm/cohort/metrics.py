"""The tidy metrics table of a cohort: one row per exam x variant x sonication, from each run's report.json."""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from mrtherm.io.atomic import atomic_file
from mrtherm.thermometry.result import level_name

# the columns every table starts with, in this order; the rest follow sorted
LEAD_COLUMNS = ("exam", "variant", "sonication", "status", "error", "reused", "runtime_s", "peak_temperature_c",
                "max_dose_cem43_min")


def report_rows(out_dir) -> list[dict]:
    """One metrics dict per sonication report under ``out_dir`` (``report.json`` there or in its sub-folders).

    Parameters
    ----------
    out_dir : str
        A ``mrtherm run`` output folder.

    Returns
    -------
    list of dict
        ``sonication`` ("" for a single exam, else the sub-folder), peak temperature, lesion volume per dose level
        (``lesion_<level>_ml``), the maximum of each protected structure (``<structure>_max_c``), alarm count,
        drift statistics, median temperature SD over the baseline, reference mode and frames.
    """
    rows = []
    for path in sorted(glob.glob(os.path.join(out_dir, "**", "report.json"), recursive=True)):
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
        if "results" not in report:  # a treatment's cumulative report: its sonications have their own
            continue
        rel = os.path.relpath(os.path.dirname(path), out_dir)
        rows.append(row_from_report(report, "" if rel == "." else rel))
    return rows


def row_from_report(report: dict, sonication: str = "") -> dict:
    """The metrics of one report.json (see :func:`report_rows`).

    Parameters
    ----------
    report : dict
    sonication : str, optional

    Returns
    -------
    dict
    """
    res, drift, noise = report.get("results", {}), report.get("drift", {}), report.get("noise", {})
    row = {"sonication": sonication,
           "peak_temperature_c": res.get("peak_temperature_c"),
           "time_of_peak_s": res.get("time_of_peak_s"),
           "max_dose_cem43_min": res.get("max_dose_cem43_min"),
           "frames": (report.get("exam", {}).get("shape_tzyx") or [None])[0],
           "reference_mode": report.get("reference", {}).get("mode"),
           "drift_order": drift.get("order"),
           "drift_max_abs_offset_c": drift.get("max_abs_offset_c"),
           "drift_frames_with_fallback_fit": drift.get("frames_with_fallback_fit"),
           "median_sd_baseline_c": noise.get("median_sd_baseline_c"),
           "median_sd_theory_c": noise.get("median_sd_theory_c"),
           "reliable_voxels": report.get("mask", {}).get("reliable_voxels"),
           "alarms": len(report.get("alarms", [])),
           "warnings": len(report.get("warnings", []))}
    for level, ml in (res.get("lesion_volumes_ml") or {}).items():
        row[f"lesion_{level_name(float(level))}_ml"] = ml
    for s in report.get("protected_structures", []):
        name = str(s.get("structure", "structure")).replace(" ", "_")
        row[f"{name}_max_c"] = s.get("max_c")
        row[f"{name}_max_dose_cem43_min"] = s.get("max_dose_cem43_min")
    return row


def ordered_columns(rows) -> list[str]:
    """Lead columns first, then every other column of ``rows`` sorted (``param_*`` last).

    Parameters
    ----------
    rows : list of dict

    Returns
    -------
    list of str
    """
    seen = {k for r in rows for k in r}
    rest = sorted(seen - set(LEAD_COLUMNS), key=lambda c: (c.startswith("param_"), c))
    return [c for c in LEAD_COLUMNS if c in seen] + rest


def write_table(rows, out_dir) -> list[str]:
    """``metrics.csv`` and ``metrics.parquet`` in ``out_dir``, each written whole (temporary name, then rename).

    Parameters
    ----------
    rows : list of dict
    out_dir : str

    Returns
    -------
    list of str
        The two paths.
    """
    import pyarrow as pa  # noqa: PLC0415 -- the cohort extra
    import pyarrow.csv as pacsv  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415
    columns = ordered_columns(rows)
    data = {c: [_plain(r.get(c)) for r in rows] for c in columns}
    table = pa.table({c: _arrow_column(v) for c, v in data.items()})
    paths = []
    for name, write in (("metrics.parquet", lambda t, p: pq.write_table(t, p)),
                        ("metrics.csv", lambda t, p: pacsv.write_csv(t, p))):
        path = os.path.join(out_dir, name)
        with atomic_file(path) as fh:
            write(table, fh)
        paths.append(path)
    return paths


def _plain(v):
    """JSON-ish scalars only (NaN stays NaN; numpy scalars become Python ones)."""
    if isinstance(v, np.generic):
        return v.item()
    return v


def _arrow_column(values):
    """One Arrow array per column: float64 when every value is a number (ints included), bool for flags, else
    strings (None stays null)."""
    import pyarrow as pa  # noqa: PLC0415
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else str(v) for v in values], pa.string())
