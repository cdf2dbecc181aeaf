"""The tidy metrics table of a cohort: one row per exam x variant x sonication, from each run's report.json."""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from mrtherm.app.summary import SonicationSummary
from mrtherm.io.atomic import atomic_file
from mrtherm.optional import require

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
    """The metrics of one report.json (see :func:`report_rows`), through its typed summary.

    Parameters
    ----------
    report : dict
    sonication : str, optional

    Returns
    -------
    dict
    """
    return SonicationSummary.from_report(report, sonication).metrics_row()


def summary_rows(summary) -> list[dict]:
    """One metrics dict per sonication of a run's :class:`mrtherm.app.summary.RunSummary`.

    Parameters
    ----------
    summary : RunSummary

    Returns
    -------
    list of dict
    """
    return [s.metrics_row() for s in summary.sonications]


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
    pa = require("pyarrow", "the cohort metrics table")
    pacsv, pq = require("pyarrow.csv", "metrics.csv"), require("pyarrow.parquet", "metrics.parquet")
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
    pa = require("pyarrow", "the cohort metrics table")
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else str(v) for v in values], pa.string())
