"""Feasibility map: the active fraction if the focus were at each voxel of a target."""

from __future__ import annotations


import numpy as np

from mrtherm.backend import gpu_plugin, resolve_backend
from mrtherm.errors import BackendUnavailableError, ParameterError
from mrtherm.window.scene import STATUS_BLOCKED, Scene
from mrtherm.window.trace import area_fraction, trace
from mrtherm.window.trace_compiled import active_fractions_compiled, numba_available


def feasibility_map(scene: Scene, transducer, target_mask_zyx: np.ndarray, backend: str = "numpy",
                    chunk_rays: int = 1 << 18, progress: bool = False, compiled: bool | None = None) -> np.ndarray:
    """Active fraction if the focus were at each voxel of ``target_mask_zyx``.

    Parameters
    ----------
    scene : Scene
    transducer : Transducer
    target_mask_zyx : ndarray of bool, shape (z, y, x)
        Candidate foci (the tumour label), on the scene's grid.
    backend : {"numpy", "cupy", "auto"}
    chunk_rays : int
        (element, focus) rays traced at once on NumPy (memory bound).
    progress : bool
        Show a progress bar.
    compiled : bool, optional
        On the CPU, trace with the compiled traversal (numba, the ``fast`` extra: the same values, about 25x the
        NumPy traversal's speed on 2 cores) rather than NumPy. Default: when numba is installed.

    Returns
    -------
    ndarray of float32, shape (z, y, x)
        Area-weighted fraction of the transducer not blocked, NaN outside the mask.

    Raises
    ------
    ParameterError
        The mask is not on the scene's grid.
    BackendUnavailableError
        ``compiled=True`` without numba.
    """
    voxels, foci = target_foci(scene, target_mask_zyx)
    out = np.full(scene.shape, np.nan, dtype=np.float32)
    if foci.shape[0] == 0:
        return out
    if resolve_backend(backend) == "cupy":
        frac = gpu_plugin(required=True).active_fractions(scene, transducer, foci)
    else:
        frac = active_fractions_cpu(scene, transducer, foci, compiled, chunk_rays=chunk_rays, progress=progress)
    out[voxels] = frac
    return out


def target_foci(scene, target_mask_zyx):
    """The candidate foci of a target mask: their voxel indices and world positions.

    Parameters
    ----------
    scene : Scene
    target_mask_zyx : ndarray of bool, shape (z, y, x)
        On the scene's grid.

    Returns
    -------
    voxels : tuple of ndarray
        ``(k, j, i)`` indices of the mask's voxels (as ``numpy.nonzero``).
    foci : ndarray, shape (n, 3)
        World mm.

    Raises
    ------
    ParameterError
        The mask is not on the scene's grid.
    """
    mask = np.asarray(target_mask_zyx, bool)
    if mask.shape != scene.shape:
        raise ParameterError(f"target mask shape {mask.shape} does not match the labels {scene.shape}")
    k, j, i = np.nonzero(mask)
    return (k, j, i), np.stack([i, j, k], axis=1) @ scene.affine[:3, :3].T + scene.affine[:3, 3]


def active_fractions_cpu(scene, transducer, foci, compiled=None, chunk_rays=1 << 18, progress=False):
    """Active fraction per focus on the CPU: the compiled traversal when numba is installed (or asked), else
    NumPy; the same values either way.

    Parameters
    ----------
    scene : Scene
    transducer : Transducer
    foci : ndarray, shape (n, 3)
        World mm.
    compiled : bool, optional
        As for :func:`feasibility_map`.
    chunk_rays : int, optional
    progress : bool, optional

    Returns
    -------
    ndarray of float64, shape (n,)

    Raises
    ------
    BackendUnavailableError
        ``compiled=True`` without numba.
    """
    if numba_available() if compiled is None else compiled:
        if not numba_available():
            raise BackendUnavailableError("compiled=True needs numba: pip install 'mrtherm[fast]'")
        return active_fractions_compiled(scene, transducer, foci, progress=progress)
    return active_fractions_numpy(scene, transducer, foci, chunk_rays=chunk_rays, progress=progress)


def active_fractions_numpy(scene, transducer, foci, chunk_rays=1 << 18, progress=False):
    """Area-weighted active fraction for each focus (NumPy traversal of every element ray).

    Parameters
    ----------
    scene : Scene
    transducer : Transducer
    foci : ndarray, shape (n, 3)
        Candidate foci, world mm.
    chunk_rays : int, optional
        Rays traced at once (memory bound).
    progress : bool, optional
        Show a tqdm bar.

    Returns
    -------
    ndarray of float64, shape (n,)
        Fraction of the element area whose path to each focus is not blocked, 0..1.
    """
    n_el = transducer.n_elements
    areas = transducer.areas_mm2
    edts = scene.edt_at(np.asarray(foci, float).reshape(-1, 3))
    per_chunk = max(1, chunk_rays // n_el)
    frac = np.empty(foci.shape[0])
    rng = range(0, foci.shape[0], per_chunk)
    if progress:
        from tqdm.auto import tqdm
        rng = tqdm(rng, desc="foci", unit="chunk")
    for s in rng:
        fc = foci[s:s + per_chunk]
        m = fc.shape[0]
        starts = np.tile(transducer.positions_mm, (m, 1))
        ends = np.repeat(fc, n_el, axis=0)
        res = trace(scene, starts, ends, focus_edt_mm=np.repeat(edts[s:s + per_chunk], n_el))
        ok = (res["status"] != STATUS_BLOCKED).reshape(m, n_el)
        frac[s:s + m] = area_fraction(ok, areas)
    return frac
