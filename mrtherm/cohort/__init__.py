"""Cohorts and parameter sweeps: many ``mrtherm run`` tasks on Dask, and one tidy metrics table.

``load_tasks`` reads a CSV manifest or a folder of exams, ``run_cohort`` runs the tasks (local threads or
processes, or a dask.distributed cluster) and writes ``metrics.csv`` / ``metrics.parquet``.
"""

from mrtherm.cohort.feasibility import feasibility_map_dask
from mrtherm.cohort.manifest import Task, discover, load_tasks, read_manifest
from mrtherm.cohort.runner import run_cohort
from mrtherm.cohort.task import run_task

__all__ = ["Task", "discover", "feasibility_map_dask", "load_tasks", "read_manifest", "run_cohort", "run_task"]
