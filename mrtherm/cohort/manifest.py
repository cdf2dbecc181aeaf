"""What a cohort run does: one task per exam x variant, from a CSV manifest or a folder of exams.

Manifest (CSV with a header, one row per exam x variant)
    ``exam``: an id; ``magnitude`` + ``phase`` (or ``real`` + ``imag``, or ``dicom``): inputs, relative to the
    manifest's folder (several 3-D frames separated by ``;``); any other column is a ``mrtherm run`` option with
    underscores (``baseline_frames``, ``drift_order``, ``reference``, ``labels``, ``no_figures``, ...), parsed with
    the option's own type and choices (:mod:`mrtherm.app.options`). An empty cell leaves the option at its default;
    a flag column takes ``true``/``false``. An optional ``variant`` column
    names the variant; otherwise it is spelled from the option values that differ between the exam's rows.

Folder of exams (the rule when the argument is a folder)
    every immediate sub-folder is one exam named after it, holding ``magnitude.nii[.gz]`` and ``phase.nii[.gz]``
    (their JSON sidecars beside them) or a ``dicom/`` folder, and optionally ``labels.nii[.gz]``. Sub-folders
    holding none of these are skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re

from mrtherm.app.options import options_by_name, parse_cell
from mrtherm.errors import InputFileError, MrthermError

INPUT_COLUMNS = ("magnitude", "phase", "real", "imag", "dicom")
# run options the cohort sets itself
RESERVED = ("out", "quiet")


@dataclasses.dataclass(frozen=True)
class Task:
    """One run of a cohort.

    Attributes
    ----------
    exam : str
        Exam id.
    variant : str
        Variant name ("" when the exam has one row).
    values : dict
        The run's typed option values (:class:`mrtherm.app.options.RunRequest` fields; inputs as absolute paths),
        without ``out``.
    options : dict
        The row's option values as written (the variant's parameters for the metrics table).
    source : str
        Where the task comes from (manifest line or exam folder), for messages.
    """

    exam: str
    variant: str
    values: dict
    options: dict
    source: str

    @property
    def name(self) -> str:
        """Output sub-folder name: ``<exam>`` or ``<exam>_<variant>``."""
        return f"{self.exam}_{self.variant}" if self.variant else self.exam

    def input_paths(self) -> list[str]:
        """Every input file or folder the run reads (for the fingerprint).

        Returns
        -------
        list of str
        """
        table, out = options_by_name(), []
        for name, value in self.values.items():
            if table[name].path and value:
                out += list(value) if isinstance(value, (list, tuple)) else [value]
        return out


def _safe(text: str) -> str:
    """A file-name-safe spelling of ``text``."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"


def read_manifest(path) -> list[Task]:
    """The tasks of a CSV manifest (see the module docstring).

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    list of Task

    Raises
    ------
    InputFileError
        Unreadable file, missing ``exam`` column, unknown option columns, missing inputs, or two rows with the
        same exam and variant (named by line).
    """
    path = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
            columns = list(rows[0].keys()) if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(path, f"not a readable CSV manifest ({exc})") from None
    if "exam" not in columns:
        raise InputFileError(path, "the manifest needs a header with an 'exam' column")
    table = options_by_name()
    bad = [c for c in columns if c not in ("exam", "variant") and (c not in table or c in RESERVED)]
    if bad:
        raise InputFileError(path, f"column {bad[0]!r} is not a mrtherm run option a manifest can set")
    option_columns = [c for c in columns if c not in ("exam", "variant")]
    base = os.path.dirname(os.path.abspath(path))
    tasks = []
    for line, row in enumerate(rows, start=2):
        source = f"{path} line {line}"
        exam = (row.get("exam") or "").strip()
        if not exam:
            raise InputFileError(source, "empty exam id")
        if not any((row.get(c) or "").strip() for c in INPUT_COLUMNS if c in row):
            raise InputFileError(source, "no inputs: give magnitude and phase, real and imag, or dicom")
        values = {}
        for c in option_columns:
            try:
                values[c] = parse_cell(table[c], row.get(c) or "", base)
            except MrthermError as exc:
                raise InputFileError(source, str(exc)) from None
        options = {c: (row.get(c) or "").strip() for c in option_columns if c not in INPUT_COLUMNS}
        tasks.append((exam, (row.get("variant") or "").strip(), values, options, source))
    return _name_variants(path, tasks)


def _name_variants(path, rows) -> list[Task]:
    """Tasks with variant names: given, or spelled from the options that differ between an exam's rows."""
    by_exam = {}
    for r in rows:
        by_exam.setdefault(r[0], []).append(r)
    tasks, seen = [], {}
    for exam, group in by_exam.items():
        varying = [c for c in group[0][3] if len({g[3][c] for g in group}) > 1] if len(group) > 1 else []
        for _, given, values, options, source in group:
            variant = given or "_".join(f"{c}-{_safe(options[c]) if options[c] else 'default'}" for c in varying)
            key = (exam, _safe(variant) if variant else "")
            if key in seen:
                what = f"variant {variant!r}" if variant else "several rows with the same options"
                raise InputFileError(source, f"exam {exam!r} has {what} (as {seen[key]})")
            seen[key] = source
            tasks.append(Task(exam, key[1], values, options, source))
    return tasks


def _first_existing(folder, names):
    for n in names:
        p = os.path.join(folder, n)
        if os.path.exists(p):
            return p
    return None


def discover(folder) -> list[Task]:
    """The tasks of a folder of exams (see the module docstring): one per sub-folder with inputs, by name.

    Parameters
    ----------
    folder : str or PathLike

    Returns
    -------
    list of Task

    Raises
    ------
    InputFileError
        The folder does not exist or holds no exam.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputFileError(folder, "not a folder")
    tasks = []
    for name in sorted(os.listdir(folder)):
        exam_dir = os.path.join(os.path.abspath(folder), name)
        if not os.path.isdir(exam_dir):
            continue
        mag = _first_existing(exam_dir, ("magnitude.nii.gz", "magnitude.nii"))
        pha = _first_existing(exam_dir, ("phase.nii.gz", "phase.nii"))
        if mag and pha:
            values = {"magnitude": [mag], "phase": [pha]}
        elif os.path.isdir(os.path.join(exam_dir, "dicom")):
            values = {"dicom": os.path.join(exam_dir, "dicom")}
        else:
            continue
        labels = _first_existing(exam_dir, ("labels.nii.gz", "labels.nii"))
        if labels:
            values["labels"] = labels
        tasks.append(Task(name, "", values, {}, exam_dir))
    if not tasks:
        raise InputFileError(folder, "no exam sub-folders (magnitude + phase NIfTI, or a dicom/ folder)")
    return tasks


def load_tasks(path) -> list[Task]:
    """Tasks of a manifest file or a folder of exams.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    list of Task
    """
    return discover(path) if os.path.isdir(os.fspath(path)) else read_manifest(path)
