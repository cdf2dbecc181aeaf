"""Per-worker set-up of a cohort: done once where a worker starts, never inside a task.

Two things are process-wide and so belong to the worker, not to each task (tasks run side by side in threads):

- **warnings**: library warnings never reach a cohort's log (each run's report.json has mrtherm's own). The
  filter is set once per worker process (:func:`quiet_warnings`); with the threads and sync schedulers, once around
  the whole computation in the calling thread.
- **the C heap of a dask.distributed worker**: the nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (to
  hand memory back to the system). With it glibc maps and unmaps every array above 128 kB, and each frame's
  temporaries page-fault afresh: a run took 2.5-3.2 s in such a worker against 1.2-1.9 s without it (128 x 128 x 8
  x 40 frames, 2 workers on 2 cores). While the worker runs cohort tasks, arrays up to 64 MiB come from the heap and
  the heap is trimmed above 256 MiB; when the plugin is removed or the worker closes, the nanny's threshold is
  restored and the heap trimmed once (:class:`HeapForFrames`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import warnings

__all__ = ["HeapForFrames", "quiet_warnings", "worker_plugin"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
HEAP_MMAP_THRESHOLD_BYTES = 64 << 20
HEAP_TRIM_THRESHOLD_BYTES = 256 << 20


def quiet_warnings():
    """Ignore library warnings in this process (a cohort worker's; idempotent)."""
    warnings.simplefilter("ignore")


@contextlib.contextmanager
def quiet_warnings_here():
    """Library warnings ignored for the block (one enter and exit, in the thread that runs the cohort).

    Yields
    ------
    None
    """
    with warnings.catch_warnings():
        quiet_warnings()
        yield


class HeapForFrames:
    """The frame-sized heap of a dask.distributed worker (see the module docstring): :meth:`setup` and
    :meth:`teardown` are a worker plugin's; nothing happens outside a nanny-started worker or without glibc."""

    def __init__(self):
        self.libc, self.trim = None, None

    def setup(self, worker=None):
        """Keep frame-sized buffers on the heap; quiet warnings.

        Parameters
        ----------
        worker : distributed.Worker, optional
        """
        quiet_warnings()
        self.trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
        if self.trim is None or not sys.platform.startswith("linux"):
            return
        try:
            self.libc = ctypes.CDLL("libc.so.6")
        except OSError:  # not glibc (musl): nothing to tune
            return
        self.libc.mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD_BYTES)
        self.libc.mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD_BYTES)

    def teardown(self, worker=None):
        """The nanny's trim threshold back, and the heap trimmed once.

        Parameters
        ----------
        worker : distributed.Worker, optional
        """
        if self.libc is not None:
            self.libc.mallopt(_M_TRIM_THRESHOLD, int(self.trim))
            self.libc.malloc_trim(0)
            self.libc = None


def worker_plugin():
    """A ``distributed`` WorkerPlugin running :class:`HeapForFrames` on every worker of a cohort's cluster.

    Returns
    -------
    distributed.diagnostics.plugin.WorkerPlugin
    """
    from distributed.diagnostics.plugin import WorkerPlugin  # noqa: PLC0415 -- the cohort extra

    class CohortWorkerSetup(WorkerPlugin):
        name = "mrtherm-cohort-worker"

        def __init__(self):
            self.heap = HeapForFrames()

        def setup(self, worker):
            self.heap.setup(worker)

        def teardown(self, worker):
            self.heap.teardown(worker)

    return CohortWorkerSetup()
