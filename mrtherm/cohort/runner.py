"""Run a cohort's tasks on Dask: local threads or processes, or a dask.distributed cluster.

Each task is one call of :func:`mrtherm.cohort.task.run_task` with its small :class:`Task` (typed options and
names): what ships to a worker is a few hundred bytes; the worker reads the exam from the shared file system and
writes its outputs there. So a cluster needs the inputs and ``--out`` on a file system every worker sees.
"""

from __future__ import annotations

import contextlib
import os

from mrtherm.errors import ParameterError
from mrtherm.optional import require

LOCAL_SCHEDULERS = ("threads", "processes", "sync")


def _dask():
    """dask, or a one-line error naming the extra (the one place the optional import is guarded)."""
    return require("dask", "cohorts")


def run_cohort(tasks, out_dir, scheduler: str = "processes", workers: int | None = None, force: bool = False,
               progress: bool = True, client=None) -> list[dict]:
    """Run every task and write ``metrics.csv`` and ``metrics.parquet`` into ``out_dir``.

    Parameters
    ----------
    tasks : list of Task
        From :func:`mrtherm.cohort.manifest.load_tasks`.
    out_dir : str
        Created if needed; task outputs go to ``out_dir/<exam>[_<variant>]``.
    scheduler : str, optional
        ``processes`` (default), ``threads`` or ``sync`` on this machine, or the address of a dask.distributed
        scheduler (``tcp://host:8786``).
    workers : int, optional
        Local workers (default: the CPU count).
    force : bool, optional
        Run tasks whose outputs already match their inputs and options.
    progress : bool, optional
        Progress bar (and the dashboard address on a cluster), on stderr.
    client : distributed.Client, optional
        Use this client (a LocalCluster in tests, a dask-jobqueue cluster) instead of ``scheduler``.

    Returns
    -------
    list of dict
        The metrics rows, in task order.
    """
    out_dir = os.path.abspath(out_dir)  # workers elsewhere do not share this process's working folder
    os.makedirs(out_dir, exist_ok=True)
    dask = _dask()
    from mrtherm.cohort.metrics import write_table  # noqa: PLC0415
    from mrtherm.cohort.task import run_task  # noqa: PLC0415
    if client is not None or scheduler not in LOCAL_SCHEDULERS:
        results = _on_cluster(run_task, tasks, out_dir, force, progress, client, scheduler)
    else:
        parts = [dask.delayed(run_task, pure=False)(t, out_dir, force, dask_key_name=f"mrtherm-{t.name}")
                 for t in tasks]
        results = _local(dask, parts, scheduler, workers, progress)
    rows = [r for rs in results for r in rs]
    _remove_stale_staging(tasks, out_dir)
    write_table(rows, out_dir)
    return rows


def _local(dask, parts, scheduler, workers, progress):
    """The tasks on this machine; warnings quieted once per worker process, or once around the threads."""
    from mrtherm.cohort.worker import quiet_warnings, quiet_warnings_here  # noqa: PLC0415
    kwargs = {"scheduler": "synchronous" if scheduler == "sync" else scheduler}
    if scheduler != "sync":
        kwargs["num_workers"] = workers or os.cpu_count() or 1
    if scheduler == "processes":
        kwargs["initializer"] = quiet_warnings
    bar = contextlib.nullcontext()
    if progress:
        from dask.diagnostics import ProgressBar  # noqa: PLC0415
        bar = ProgressBar(out=_Stderr())
    with bar, quiet_warnings_here():
        return dask.compute(*parts, **kwargs)


def _remove_stale_staging(tasks, out_dir):
    """Staging folders of killed workers (``.<task>.tmp-*``): every task has finished, so none is in use."""
    import glob  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    for t in tasks:
        for stale in glob.glob(os.path.join(glob.escape(os.path.abspath(out_dir)), f".{glob.escape(t.name)}.tmp-*")):
            shutil.rmtree(stale, ignore_errors=True)


def _on_cluster(run_task, tasks, out_dir, force, progress, client, address):
    """Submit the tasks to a dask.distributed cluster and gather them in order."""
    distributed = require("distributed", "a dask.distributed scheduler")
    Client, show_progress, wait = distributed.Client, distributed.progress, distributed.wait
    own = client is None
    if own:
        try:
            client = Client(address, timeout="5s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ParameterError(f"--scheduler {address}: cannot connect ({exc})") from None
    try:
        from mrtherm.cohort.worker import worker_plugin  # noqa: PLC0415
        client.register_plugin(worker_plugin())  # per-worker set-up, not per task
        if progress:
            print(f"mrtherm: dask dashboard: {client.dashboard_link}", file=_Stderr())
        futures = client.map(run_task, tasks, out_root=out_dir, force=force, pure=False,
                             key=[f"mrtherm-{t.name}" for t in tasks])
        if progress:
            show_progress(futures)
        wait(futures)
        return client.gather(futures)
    finally:
        if own:
            client.close()


class _Stderr:
    """sys.stderr looked up when written (pytest and notebooks swap it)."""

    def write(self, text):
        import sys  # noqa: PLC0415
        return sys.stderr.write(text)

    def flush(self):
        import sys  # noqa: PLC0415
        sys.stderr.flush()
