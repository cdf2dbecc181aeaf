"""Feasibility maps over many candidate foci as Dask tasks: chunks of foci, the same values as one machine."""

from __future__ import annotations

import numpy as np


def feasibility_map_dask(scene, transducer, target_mask_zyx, client=None, chunk_foci: int = 1024,
                         compiled: bool | None = None, scheduler: str = "threads") -> np.ndarray:
    """:func:`mrtherm.window.feasibility_map` with the foci split into Dask tasks.

    Parameters
    ----------
    scene : Scene
    transducer : Transducer
    target_mask_zyx : ndarray of bool, shape (z, y, x)
        Candidate foci, on the scene's grid.
    client : distributed.Client, optional
        Run on this cluster (the scene is sent to each worker once); default: local ``scheduler``.
    chunk_foci : int, optional
        Foci per task.
    compiled : bool, optional
        As for :func:`mrtherm.window.feasibility_map` (each worker uses numba when it has it).
    scheduler : str, optional
        Local Dask scheduler without ``client``: ``threads``, ``processes`` or ``sync``.

    Returns
    -------
    ndarray of float32, shape (z, y, x)
        Active fraction at each target voxel, NaN elsewhere: equal to the one-machine map.
    """
    from mrtherm.cohort.runner import _dask  # noqa: PLC0415
    from mrtherm.window.feasibility import active_fractions_cpu, target_foci  # noqa: PLC0415
    dask = _dask()
    voxels, foci = target_foci(scene, target_mask_zyx)
    out = np.full(scene.shape, np.nan, dtype=np.float32)
    if foci.shape[0] == 0:
        return out
    chunks = [foci[s:s + chunk_foci] for s in range(0, foci.shape[0], chunk_foci)]
    if client is not None:
        shared = client.scatter([scene, transducer], broadcast=True)
        futures = client.map(active_fractions_cpu, [shared[0]] * len(chunks), [shared[1]] * len(chunks), chunks,
                             compiled=compiled, pure=False)
        parts = client.gather(futures)
    else:
        parts = dask.compute(*[dask.delayed(active_fractions_cpu)(scene, transducer, c, compiled) for c in chunks],
                             scheduler="synchronous" if scheduler == "sync" else scheduler)
    out[voxels] = np.concatenate(parts)
    return out
