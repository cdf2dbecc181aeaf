"""CUDA ray march for the acoustic-window check (same statuses as ``mrtherm.window.trace``)."""

from __future__ import annotations

import math

import numpy as np

from .kernels_loader import load_module

BLOCK = 256
_SCENES = {}


def _device_scene(scene):
    """Upload the scene's volumes once per Scene object."""
    import cupy as cp
    key = id(scene)
    cached = _SCENES.get(key)
    if cached is not None and cached[0] is scene:
        return cached[1]
    nz, ny, nx = scene.shape
    dev = {
        "labels": cp.asarray(scene.labels),
        "lut": cp.asarray(scene.role_lut),
        "edt": cp.asarray(np.where(np.isfinite(scene.critical_edt_mm), scene.critical_edt_mm,
                                   np.float32(3.0e38)).astype(np.float32)),
        "normals": cp.asarray(scene.bone_normals),
        "inv": cp.asarray(np.ascontiguousarray(scene.inv_affine[:3, :4], dtype=np.float64)),
        "dims": (np.int32(nx), np.int32(ny), np.int32(nz)),
    }
    _SCENES.clear()
    _SCENES[key] = (scene, dev)
    return dev


def _run(scene, positions, areas, foci, want_pairs: bool):
    import cupy as cp
    dev = _device_scene(scene)
    cfg = scene.config
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    foci = np.ascontiguousarray(np.asarray(foci, dtype=np.float64).reshape(-1, 3))
    n_el, n_f = positions.shape[0], foci.shape[0]
    focus_edt = np.asarray(scene.edt_at(foci), dtype=np.float64)
    focus_edt = np.where(np.isfinite(focus_edt), focus_edt, 3.0e38)
    active = cp.zeros(n_f, dtype=cp.float64)
    shape = (n_f, n_el) if want_pairs else (1,)
    reasons = cp.zeros(shape, dtype=cp.int32)
    status = cp.zeros(shape, dtype=cp.int8)
    kernel = load_module("raymarch").get_function("raymarch_pairs")
    pairs = n_f * n_el
    grid = (max(1, math.ceil(pairs / BLOCK)),)
    kernel(grid, (BLOCK,), (
        dev["labels"], dev["lut"], dev["edt"], dev["normals"], dev["inv"], *dev["dims"],
        cp.asarray(positions), cp.asarray(np.asarray(areas, dtype=np.float64)), np.int32(n_el),
        cp.asarray(foci), cp.asarray(focus_edt), np.int64(n_f),
        np.float64(cfg.angle_deg()), np.float64(cfg.target_surface_mm), np.float64(cfg.critical_min_distance_mm),
        np.int32(cfg.blocking_bits()), np.int32(cfg.degrading_bits()),
        active, np.int32(bool(want_pairs)), reasons, status))
    return active, reasons, status


def trace_pairs(scene, positions, foci):
    """Reason bits and statuses for every (element, focus) pair, as ``(E, T)`` NumPy arrays."""
    import cupy as cp
    _, reasons, status = _run(scene, positions, np.ones(len(positions)), foci, True)
    return {"reasons": cp.asnumpy(reasons).T, "status": cp.asnumpy(status).T}


def active_fractions(scene, transducer, foci, chunk_pairs: int = 1 << 26):
    """Area-weighted active fraction for each focus, ``(T,)`` NumPy."""
    import cupy as cp
    foci = np.asarray(foci, dtype=np.float64).reshape(-1, 3)
    per = max(1, chunk_pairs // transducer.n_elements)
    out = np.empty(foci.shape[0])
    total = float(transducer.areas_mm2.sum())
    for s in range(0, foci.shape[0], per):
        active, _, _ = _run(scene, transducer.positions_mm, transducer.areas_mm2, foci[s:s + per], False)
        out[s:s + per] = cp.asnumpy(active) / total
    return out
