"""One cohort task: a run (:func:`mrtherm.app.driver.run`) into ``<out>/<exam>[_<variant>]``, skipped when done.

A task never raises for a bad exam: it returns its metrics rows with ``status`` ``failed`` and the one-line error,
so the other exams go on. Its outputs are staged and renamed (``mrtherm run``), and ``batch_task.json`` (the
fingerprint of the inputs and options, and the rows) is written last, the same way: a worker killed mid-task
leaves no marker, so the task runs again, and a finished one is never run twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

from mrtherm import __version__
from mrtherm.errors import MrthermError
from mrtherm.io.atomic import atomic_file

MARKER = "batch_task.json"


def fingerprint(task) -> str:
    """SHA-256 of what a run's outputs depend on: mrtherm's version, the arguments, and each input file's path,
    size and modification time (JSON sidecars beside NIfTI inputs and every file of a DICOM folder included).

    Parameters
    ----------
    task : Task

    Returns
    -------
    str
    """
    files = []
    for p in task.input_paths():
        if os.path.isdir(p):
            for root, _, names in sorted(os.walk(p)):
                files += [os.path.join(root, n) for n in sorted(names)]
        else:
            files.append(p)
            stem = p[:-7] if p.endswith(".nii.gz") else (p[:-4] if p.endswith(".nii") else None)
            if stem and os.path.exists(stem + ".json"):
                files.append(stem + ".json")
    stats = []
    for f in files:
        try:
            st = os.stat(f)
            stats.append([f, st.st_size, st.st_mtime_ns])
        except OSError:
            stats.append([f, None, None])  # missing: the run reports it; the fingerprint still differs later
    doc = json.dumps({"mrtherm": __version__, "options": task.values, "files": stats}, sort_keys=True, default=list)
    return hashlib.sha256(doc.encode()).hexdigest()


def _done_rows(out, fp):
    """The rows of a finished task with fingerprint ``fp``, or None when it must run."""
    try:
        with open(os.path.join(out, MARKER), encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    if doc.get("fingerprint") != fp or doc.get("status") != "ok":
        return None
    return doc.get("rows")


def _write_marker(out, doc):
    with atomic_file(os.path.join(out, MARKER), "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)


def run_task(task, out_root, force: bool = False) -> list[dict]:
    """Run one task (or reuse its finished outputs) and return its metrics rows.

    Parameters
    ----------
    task : Task
    out_root : str
        The cohort's output folder.
    force : bool, optional
        Run even when the outputs match the inputs and options.

    Returns
    -------
    list of dict
        One row per sonication (one for a single exam); ``status`` ``ok`` or ``failed`` (with ``error``),
        ``reused`` True when the outputs were already there, ``runtime_s``, and the variant's options as
        ``param_<name>``.
    """
    from mrtherm.app.driver import run  # noqa: PLC0415
    from mrtherm.app.options import RunRequest  # noqa: PLC0415
    from mrtherm.cohort.metrics import summary_rows  # noqa: PLC0415
    out = os.path.join(os.path.abspath(out_root), task.name)
    fp = fingerprint(task)
    head = {"exam": task.exam, "variant": task.variant, **{f"param_{k}": v for k, v in task.options.items()}}
    rows = None if force else _done_rows(out, fp)
    if rows is not None:
        return [{**head, **r, "reused": True} for r in rows]
    t0 = time.perf_counter()
    try:
        summary = run(RunRequest(**task.values, out=out, quiet=True), progress=False)
        rows = [{**r, "status": "ok", "error": ""} for r in summary_rows(summary)]
    except MrthermError as exc:
        return [{**head, "sonication": "", "status": "failed", "error": f"{task.source}: {exc}", "reused": False,
                 "runtime_s": time.perf_counter() - t0}]
    except Exception as exc:  # noqa: BLE001 -- a bug on one exam must not stop the cohort; the row says what
        return [{**head, "sonication": "", "status": "failed", "reused": False, "runtime_s": time.perf_counter() - t0,
                 "error": f"{task.source}: internal error {type(exc).__name__}: {exc}"}]
    runtime = time.perf_counter() - t0
    rows = [{**r, "runtime_s": runtime} for r in rows]
    _write_marker(out, {"fingerprint": fp, "status": "ok", "options": task.values, "rows": rows})
    return [{**head, **r, "reused": False} for r in rows]
