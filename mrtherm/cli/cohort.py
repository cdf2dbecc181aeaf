"""``mrtherm batch``: a cohort or a parameter sweep (CSV manifest or folder of exams) on Dask, one metrics table.

The module is named for what it runs (a cohort); the command keeps its name. Several sonications of one treatment
are not a batch: ``mrtherm run --dicom`` runs them (:mod:`mrtherm.app.treatment`).
"""

from __future__ import annotations

import os


def cmd_batch(args):
    """Run every task of the manifest; print the summary; returns the exit status (1 when a task failed)."""
    from mrtherm.cohort import load_tasks, run_cohort
    from mrtherm.cli.common import check_out_dir
    tasks = load_tasks(args.manifest)
    check_out_dir(args.out, [args.manifest if os.path.isfile(args.manifest) else os.path.join(args.manifest, "x")])
    rows = run_cohort(tasks, args.out, scheduler=args.scheduler, workers=args.workers, force=args.force,
                      progress=not args.quiet)
    failed = [r for r in rows if r["status"] != "ok"]
    if not args.quiet:
        reused = sum(1 for r in rows if r.get("reused"))
        print(f"{len(tasks)} tasks, {len(rows)} rows: {len(rows) - len(failed)} ok ({reused} reused), "
              f"{len(failed)} failed; table {os.path.join(os.path.abspath(args.out), 'metrics.parquet')} (and .csv)")
        for r in failed:
            print(f"failed: {r['error']}")
    return 1 if failed else 0


def add_parser(sub):
    """Add the ``batch`` command to the sub-parsers ``sub``."""
    b = sub.add_parser("batch", help="a cohort or parameter sweep on Dask: every exam x variant, one metrics table")
    b.add_argument("manifest", metavar="MANIFEST.csv|FOLDER",
                   help="CSV (exam, magnitude/phase or dicom, any run option as a column) or a folder with one "
                        "sub-folder per exam")
    b.add_argument("--out", required=True, help="output folder: <exam>[_<variant>]/ per task, metrics.csv/.parquet")
    b.add_argument("--scheduler", default="processes",
                   help="processes (default), threads or sync on this machine, or a dask.distributed scheduler "
                        "address (tcp://host:8786)")
    b.add_argument("--workers", type=int, help="local workers (default: the CPU count)")
    b.add_argument("--force", action="store_true", help="run tasks whose outputs already match their inputs")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=cmd_batch)
