"""Compiled CPU traversal for feasibility maps (numba, the ``fast`` extra).

The same Amanatides & Woo traversal as :mod:`mrtherm.window.trace`, step for step and in the same float64
arithmetic, compiled and run over foci on every core. A feasibility map needs only whether each
(element, focus) ray is blocked, so a ray stops at its first blocking voxel, and the proximity rule (which only
degrades) is not evaluated. The voxel coordinates of elements and foci are computed by NumPy exactly as the
NumPy traversal computes them, so both give the same rays.

Without numba, :func:`numba_available` is False and :mod:`mrtherm.window.feasibility` uses the NumPy traversal.
"""

from __future__ import annotations

import functools

import numpy as np

from mrtherm.optional import optional
from mrtherm.window.trace import area_fraction
from mrtherm.window.scene import (BONE_PREFOCAL, CRITICAL_ANGLE, CRITICAL_CROSS, GAS, METAL, NO_PASS_ZONE,
                                  ROLE_BONE, ROLE_CRITICAL, ROLE_GAS, ROLE_METAL, ROLE_NOPASS, ROLE_SCAR, SCAR,
                                  ZERO_SEGMENT_MM)


@functools.lru_cache(maxsize=1)
def _numba():
    """The numba module, or None: the one place the optional import is guarded."""
    return optional("numba")


def numba_available() -> bool:
    """True when numba is installed (the ``fast`` extra).

    Returns
    -------
    bool
    """
    return _numba() is not None


# role -> reason bit for the roles that block wherever they are met (bone is handled apart)
_ROLE_BITS = np.zeros(256, np.int64)
for _role, _bit in ((ROLE_GAS, GAS), (ROLE_METAL, METAL), (ROLE_SCAR, SCAR), (ROLE_CRITICAL, CRITICAL_CROSS),
                    (ROLE_NOPASS, NO_PASS_ZONE)):
    _ROLE_BITS[_role] = _bit


def _axis_setup(c0, d, t_enter, n):
    """Start voxel, step, t_delta and first t_max along one axis (as :class:`mrtherm.window.trace._Rays`)."""
    v = int(min(max(np.floor(c0 + t_enter * d + 0.5), 0.0), n - 1.0))
    step = 1 if d > 0 else (-1 if d < 0 else 0)
    t_delta = 1.0 / abs(d) if d != 0.0 else np.inf
    t_max = (v + 0.5 * step - c0) / d if d != 0.0 else np.inf
    return v, step, t_delta, t_max


def _axis_clip(c0, d, n):
    """Entry and exit parameters of the voxel slab ``-0.5 .. n - 0.5`` along one axis."""
    lo, hi = -0.5, n - 0.5
    if d != 0.0:
        ta, tb = (lo - c0) / d, (hi - c0) / d
        return min(ta, tb), max(ta, tb)
    if lo <= c0 <= hi:
        return -np.inf, np.inf
    return np.inf, -np.inf


def _ray_blocked(c0, c1, length, unit, nx, ny, nz, roles, normals, role_bits, surface_mm, angle_deg, blocking):
    """True when the ray from voxel coordinate ``c0`` to ``c1`` meets a blocking reason (compiled with
    :func:`_axis_setup` and :func:`_axis_clip`; scalars only, no allocation per ray).

    ``roles`` is the role of every voxel, flat in (z, y, x) C order; ``normals`` (voxels, 3) float32.
    """
    dx, dy, dz = c1[0] - c0[0], c1[1] - c0[1], c1[2] - c0[2]
    lo_x, hi_x = _axis_clip(c0[0], dx, nx)
    lo_y, hi_y = _axis_clip(c0[1], dy, ny)
    lo_z, hi_z = _axis_clip(c0[2], dz, nz)
    t_enter = max(0.0, max(lo_x, max(lo_y, lo_z)))
    t_exit = min(1.0, min(hi_x, min(hi_y, hi_z)))
    if not t_enter < t_exit:
        return False  # wholly outside the volume: out of volume only, which does not block
    vx, sx, tdx, tmx = _axis_setup(c0[0], dx, t_enter, nx)
    vy, sy, tdy, tmy = _axis_setup(c0[1], dy, t_enter, ny)
    vz, sz, tdz, tmz = _axis_setup(c0[2], dz, t_enter, nz)
    t, bone_seen = t_enter, False
    while True:
        # the axis whose boundary comes first (the first of equals, as argmin)
        axis = 0 if (tmx <= tmy and tmx <= tmz) else (1 if tmy <= tmz else 2)
        t_axis = tmx if axis == 0 else (tmy if axis == 1 else tmz)
        t_next = min(t_axis, t_exit)
        if (t_next - t) * length > ZERO_SEGMENT_MM:
            idx = (vz * ny + vy) * nx + vx
            role = roles[idx]
            bits = role_bits[role]
            if role == ROLE_BONE:
                remaining = (1.0 - t) * length
                if not bone_seen:
                    bone_seen = True
                    nvx, nvy = np.float64(normals[idx, 0]), np.float64(normals[idx, 1])
                    nvz = np.float64(normals[idx, 2])
                    if np.sqrt(nvx * nvx + nvy * nvy + nvz * nvz) > 0.5 and remaining <= surface_mm:
                        c = abs(nvx * unit[0] + nvy * unit[1] + nvz * unit[2])
                        if np.degrees(np.arccos(min(max(c, 0.0), 1.0))) > angle_deg:
                            bits |= CRITICAL_ANGLE
                if remaining > surface_mm:
                    bits |= BONE_PREFOCAL
            if bits & blocking:
                return True  # blocked: nothing further on the ray can unblock it
        t = t_next
        if axis == 0:
            vx += sx
            tmx = t_axis + tdx
            outside = vx < 0 or vx >= nx
        elif axis == 1:
            vy += sy
            tmy = t_axis + tdy
            outside = vy < 0 or vy >= ny
        else:
            vz += sz
            tmz = t_axis + tdz
            outside = vz < 0 or vz >= nz
        if t_next >= t_exit - 1e-12 or outside:
            return False


def _blocked_rays(c_elements, elements_mm, c_foci, foci_mm, nx, ny, nz, roles, normals, role_bits, surface_mm,
                  angle_deg, blocking, out):
    """``out[f, e]`` = not blocked, for every focus ``f`` and element ``e`` (compiled, releases the GIL)."""
    for fi in range(c_foci.shape[0]):
        for e in range(c_elements.shape[0]):
            s0 = foci_mm[fi, 0] - elements_mm[e, 0]
            s1 = foci_mm[fi, 1] - elements_mm[e, 1]
            s2 = foci_mm[fi, 2] - elements_mm[e, 2]
            length = np.sqrt(s0 * s0 + s1 * s1 + s2 * s2)
            unit = (s0 / length, s1 / length, s2 / length) if length > 0 else (0.0, 0.0, 0.0)
            out[fi, e] = not _ray_blocked(c_elements[e], c_foci[fi], length, unit, nx, ny, nz, roles, normals,
                                          role_bits, surface_mm, angle_deg, blocking)


@functools.lru_cache(maxsize=1)
def _compiled():
    """The compiled kernel (compiled on first use, about 2 s once per process)."""
    numba = _numba()
    jit = numba.njit(nogil=True)
    helpers = {f.__name__: jit(f) for f in (_axis_setup, _axis_clip)}
    ray = _rebind(_ray_blocked, helpers)
    return jit(_rebind(_blocked_rays, {"_ray_blocked": jit(ray)}))


def _rebind(func, names):
    """``func`` with the global ``names`` replaced (by their compiled versions)."""
    return type(func)(func.__code__, dict(func.__globals__, **names), func.__name__)


def active_fractions_compiled(scene, transducer, foci, chunk_foci=64, progress=False):
    """Area-weighted active fraction for each focus, by the compiled traversal on every core.

    Parameters
    ----------
    scene : Scene
    transducer : Transducer
    foci : ndarray, shape (n, 3)
        Candidate foci, world mm.
    chunk_foci : int, optional
        Foci per task handed to a thread.
    progress : bool, optional
        Show a tqdm bar.

    Returns
    -------
    ndarray of float64, shape (n,)
        Fraction of the element area whose path to each focus is not blocked, 0..1: the same values as
        :func:`mrtherm.window.feasibility.active_fractions_numpy` (same rays, same area sums).
    """
    import concurrent.futures  # noqa: PLC0415
    import os  # noqa: PLC0415
    kernel = _compiled()
    ainv = scene.inv_affine
    elements = np.ascontiguousarray(transducer.positions_mm, dtype=np.float64)
    foci = np.ascontiguousarray(np.asarray(foci, dtype=np.float64).reshape(-1, 3))
    # voxel coordinates exactly as the NumPy traversal forms them (matrix product, then the shift)
    c_el = np.ascontiguousarray(elements @ ainv[:3, :3].T + ainv[:3, 3])
    c_fo = np.ascontiguousarray(foci @ ainv[:3, :3].T + ainv[:3, 3])
    nz, ny, nx = scene.shape
    roles = np.ascontiguousarray(scene.role_lut[scene.labels].ravel())
    normals = np.ascontiguousarray(scene.bone_normals.reshape(-1, 3))
    cfg = scene.config
    args = (nx, ny, nz, roles, normals, _ROLE_BITS, float(cfg.target_surface_mm), float(cfg.angle_deg()),
            int(cfg.blocking_bits()))
    areas = np.asarray(transducer.areas_mm2, np.float64)
    frac = np.empty(foci.shape[0])

    def run(s):
        ok = np.empty((min(chunk_foci, foci.shape[0] - s), elements.shape[0]), dtype=np.bool_)
        kernel(c_el, elements, c_fo[s:s + ok.shape[0]], foci[s:s + ok.shape[0]], *args, ok)
        frac[s:s + ok.shape[0]] = area_fraction(ok, areas)

    starts = range(0, foci.shape[0], chunk_foci)
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        done = pool.map(run, starts)
        if progress:
            from tqdm.auto import tqdm  # noqa: PLC0415
            done = tqdm(done, total=len(starts), desc="foci", unit="chunk")
        for _ in done:
            pass
    return frac
