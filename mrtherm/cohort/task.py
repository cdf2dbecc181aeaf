"""One cohort task: a ``mrtherm run`` into ``<out>/<exam>[_<variant>]``, skipped when already done.

A task never raises for a bad exam: it returns its metrics rows with ``status`` ``failed`` and the one-line error,
so the other exams go on. Its outputs are staged and renamed (``mrtherm run``), and ``batch_task.json`` (the
fingerprint of the inputs and options, and the rows) is written last, the same way: a worker killed mid-task
leaves no marker, so the task runs again, and a finished one is never run twice.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import sys
import time
import warnings

from mrtherm import __version__
from mrtherm.errors import MrthermError, ParameterError
from mrtherm.io.atomic import atomic_file

MARKER = "batch_task.json"


class _RunParserError(ParameterError):
    """An option value ``mrtherm run``'s parser refuses."""


def parse_run_argv(argv):
    """``mrtherm run`` arguments parsed by the command's own parser, errors raised (not printed and exited).

    Parameters
    ----------
    argv : sequence of str
        Arguments after ``run``.

    Returns
    -------
    argparse.Namespace

    Raises
    ------
    ParameterError
        The parser's one-line message.
    """
    from mrtherm.cli.main import command_parser  # noqa: PLC0415
    parser = command_parser("run")

    def refuse(message):
        raise _RunParserError(message)

    parser.error = refuse
    return parser.parse_args(list(argv))


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
    doc = json.dumps({"mrtherm": __version__, "argv": list(task.argv), "files": stats}, sort_keys=True)
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


@contextlib.contextmanager
def _heap_for_frames():
    """Inside a dask.distributed worker, let the C heap keep frame-sized buffers for the task's duration.

    The nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand memory back to the system). With it
    glibc maps and unmaps every array above 128 kB, and each frame's temporaries page-fault afresh: a run took 2.5-3.2 s
    in such a worker against 1.2-1.9 s without it (128 x 128 x 8 x 40 frames, 2 workers on 2 cores). For the task,
    arrays up to 64 MiB come from the heap and the heap is trimmed only above 256 MiB; afterwards the worker's own
    trim threshold is restored and the heap trimmed once, so memory still goes back between tasks.
    """
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    libc = None
    if trim is not None and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:  # not glibc (musl): nothing to tune
            libc = None
    if libc is None:
        yield
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameters
    libc.mallopt(m_mmap_threshold, 64 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)
    try:
        yield
    finally:
        libc.mallopt(m_trim_threshold, int(trim))
        libc.malloc_trim(0)


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
    from mrtherm.cohort.metrics import report_rows  # noqa: PLC0415
    out = os.path.join(os.path.abspath(out_root), task.name)
    fp = fingerprint(task)
    head = {"exam": task.exam, "variant": task.variant, **{f"param_{k}": v for k, v in task.options.items()}}
    rows = None if force else _done_rows(out, fp)
    if rows is not None:
        return [{**head, **r, "reused": True} for r in rows]
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), _heap_for_frames():  # no library warnings in a cohort log (report.json
            warnings.simplefilter("ignore")                   # has mrtherm's own)
            args = parse_run_argv([*task.argv, "--out", out, "--quiet"])
            args.func(args)
        rows = [{**r, "status": "ok", "error": ""} for r in report_rows(out)]
    except MrthermError as exc:
        return [{**head, "sonication": "", "status": "failed", "error": f"{task.source}: {exc}", "reused": False,
                 "runtime_s": time.perf_counter() - t0}]
    except Exception as exc:  # noqa: BLE001 -- a bug on one exam must not stop the cohort; the row says what
        return [{**head, "sonication": "", "status": "failed", "reused": False, "runtime_s": time.perf_counter() - t0,
                 "error": f"{task.source}: internal error {type(exc).__name__}: {exc}"}]
    runtime = time.perf_counter() - t0
    rows = [{**r, "runtime_s": runtime} for r in rows]
    _write_marker(out, {"fingerprint": fp, "status": "ok", "argv": list(task.argv), "rows": rows})
    return [{**head, **r, "reused": False} for r in rows]
