"""Treatment outputs, each file replaced atomically, and report.json.

The writers of a treatment's folder, shared by ``mrtherm run --dicom`` (into a staged folder, renamed when
complete) and ``mrtherm live`` (the live folder, each file replaced while a viewer reads it).

Every file is written under a hidden temporary name in its folder and moved
over the old one with ``os.replace``: a reader sees the previous version or the
new one, never a half-written file. Maps are written first, report.json last.
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import gzip
import json
import os
import sys

import numpy as np

from mrtherm.io import niftiio
from mrtherm.io.atomic import atomic_file
from mrtherm.thermometry.dose import lesion_masks
from mrtherm.thermometry.result import CONVENTIONS, DOSE_CAP_CEM43_MIN, cap_dose, finite_json, json_default, level_name

# Live maps are gzip containers without compression (level 0): a readable .nii.gz in a few ms, where gzip
# level 1 spends ~50 ms on one 128x128x12 float64 dose map (the per-frame latency goal is 100 ms).
LIVE_GZIP_LEVEL = 0


class BackgroundWriter:
    """Threads that write map files and checkpoints behind the frame loop, owned by whoever writes (a live
    session, a treatment run) and closed by it: nothing starts at import, and nothing outlives its owner.

    Parameters
    ----------
    map_threads : int
        Maps written at once (zlib and file writes release the GIL).
    """

    def __init__(self, map_threads: int = 4):
        self._maps = concurrent.futures.ThreadPoolExecutor(max_workers=map_threads, thread_name_prefix="mrtherm-write")
        self._tasks = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mrtherm-checkpoint")

    def start_maps(self, folder, maps: dict):
        """Start writing ``{name: (array, affine)}``; :func:`finish_maps` waits for them.

        Parameters
        ----------
        folder : str
        maps : dict of str to (ndarray, (4, 4) array)

        Returns
        -------
        list of concurrent.futures.Future
        """
        return [self._maps.submit(replace_nifti, arr, aff, os.path.join(folder, name))
                for name, (arr, aff) in maps.items()]

    def start_task(self, fn, *args):
        """Run ``fn(*args)`` on the one task thread (checkpoints stay in order); returns its future.

        Parameters
        ----------
        fn : callable
        *args
            Its arguments.

        Returns
        -------
        concurrent.futures.Future
        """
        return self._tasks.submit(fn, *args)

    def close(self):
        """Wait for every write started, then stop the threads."""
        self._maps.shutdown(wait=True)
        self._tasks.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def replace_nifti(array_zyx, affine, path):
    """Write a NIfTI volume (``.nii.gz``) to ``path`` atomically (temporary name in the same folder, then rename).

    Parameters
    ----------
    array_zyx : ndarray, shape (z, y, x)
    affine : (4, 4) array
        Voxel (x, y, z) to world RAS+ mm.
    path : str
        Ends ``.nii.gz``.
    """
    data = niftiio.volume_image(array_zyx, affine).to_bytes()
    with atomic_file(path) as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh,
                                                compresslevel=LIVE_GZIP_LEVEL) as gz:
        gz.write(data)


def replace_json(obj, path):
    """Write strict JSON (NaN as null) to ``path`` atomically.

    Parameters
    ----------
    obj : dict
    path : str
    """
    with atomic_file(path, "w", encoding="utf-8") as fh:
        json.dump(finite_json(obj), fh, indent=1, allow_nan=False, default=json_default)


def finish_maps(futures):
    """Wait for :meth:`BackgroundWriter.start_maps`'s writes (re-raising the first error).

    Parameters
    ----------
    futures : list of concurrent.futures.Future
    """
    for f in futures:
        f.result()


def write_maps(folder, maps: dict):
    """Write ``{name: (array, affine)}`` in parallel threads (zlib releases the GIL); returns the names.

    Parameters
    ----------
    folder : str
    maps : dict of str to (ndarray, (4, 4) array)

    Returns
    -------
    list of str
    """
    with BackgroundWriter() as writer:
        finish_maps(writer.start_maps(folder, maps))
    return sorted(maps)


def treatment_maps(dose, tmax, grid, levels) -> dict:
    """The cumulative maps on the treatment grid: dose (float64, capped, never inf), Tmax and lesion masks.

    Parameters
    ----------
    dose : ndarray of float64, shape (z, y, x)
        CEM43 min, NaN where unmeasured.
    tmax : ndarray of float32, shape (z, y, x)
        C.
    grid : TreatmentGrid
    levels : sequence of float
        CEM43 min.

    Returns
    -------
    dict of str to (ndarray, (4, 4) array)
    """
    dose, _ = cap_dose(dose)
    maps = {"dose_cem43.nii.gz": (dose, grid.affine), "tmax.nii.gz": (tmax, grid.affine)}
    for level, mask in lesion_masks(dose, levels).items():
        maps[f"lesion_{level_name(level)}.nii.gz"] = (mask.astype(np.uint8), grid.affine)
    return maps


def treatment_report(*, mode, params, grid, sonications, cumulative, alarms, frames_processed, extra=None) -> dict:
    """The content of a treatment's report.json (see the README).

    Parameters
    ----------
    mode : {"live", "batch"}
    params : ThermometryParams
    grid : TreatmentGrid
    sonications : list of dict
    cumulative : dict
    alarms : list of dict
    frames_processed : int
    extra : dict, optional
        More top-level keys.

    Returns
    -------
    dict
    """
    from mrtherm import __version__  # noqa: PLC0415
    report = {
        "mrtherm_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command_line": " ".join(sys.argv) if sys.argv else None,
        "mode": mode,
        "frames_processed": int(frames_processed),
        "conventions": {**CONVENTIONS, "treatment": "each sonication's dose and Tmax resampled onto the treatment grid "
                        "(linear, identity when the grids coincide); cumulative dose = sum in sonication order, "
                        "cumulative Tmax = maximum; NaN where no sonication measured reliably"},
        "parameters": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(params).items()},
        "treatment_grid": grid.describe(),
        "dose_map": {"dtype": "float64", "cap_cem43_min": DOSE_CAP_CEM43_MIN},
        "sonications": sonications,
        "cumulative": cumulative,
        "alarms": alarms,
    }
    report.update(extra or {})
    return report
