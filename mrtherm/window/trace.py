"""Exact voxel traversal (Amanatides & Woo) of element-to-focus segments through the label scene."""

from __future__ import annotations


import numpy as np

from mrtherm.window.scene import (BONE_PREFOCAL, CLOSER_THAN_FOCUS_TOLERANCE_MM, CRITICAL_ANGLE, CRITICAL_CROSS,
                                  CRITICAL_NEAR, GAS, METAL, NO_PASS_ZONE, OUT_OF_VOLUME, REASON_CODES, ROLE_BONE,
                                  ROLE_CRITICAL, ROLE_GAS, ROLE_METAL, ROLE_NOPASS, ROLE_SCAR, SCAR, STATUS_BLOCKED,
                                  STATUS_CLEAR, STATUS_DEGRADED, ZERO_SEGMENT_MM, Scene)


def trace(scene: Scene, starts_mm: np.ndarray, ends_mm: np.ndarray, focus_edt_mm=None, detail: bool = False):
    """Trace segments start -> end through the scene (vectorised over rays).

    Parameters
    ----------
    starts_mm, ends_mm : (R, 3) world mm; ``ends`` are the foci
    focus_edt_mm : (R,) critical-structure distance at each ray's focus voxel
        (for the proximity rule); computed when None
    detail : also return per-label path lengths, first blocking point and
        first-bone incidence angle

    Returns
    -------
    dict with ``reasons`` (R,) int32 bits, ``status`` (R,) int8, ``min_critical_mm``
    (R,), ``incidence_deg`` (R,) (NaN without bone), ``out_of_volume_mm`` (R,),
    ``length_mm`` (R,), and with ``detail``: ``path_mm`` (R, 256), ``first_block_t`` (R,).
    """
    p = np.asarray(starts_mm, float).reshape(-1, 3)
    f = np.asarray(ends_mm, float).reshape(-1, 3)
    if focus_edt_mm is None:
        focus_edt_mm = scene.edt_at(f)
    rays = _Rays(scene, p, f, detail)
    while rays.active.any():
        rays.step()
    return rays.finish(np.broadcast_to(np.asarray(focus_edt_mm, float), (p.shape[0],)))


class _Rays:
    """Amanatides & Woo traversal state of many rays in the scene's voxel space, advanced together."""

    def __init__(self, scene, p, f, detail):
        self.scene, self.cfg, self.detail = scene, scene.config, detail
        nr = p.shape[0]
        ainv = scene.inv_affine
        c0 = p @ ainv[:3, :3].T + ainv[:3, 3]
        d = (f @ ainv[:3, :3].T + ainv[:3, 3]) - c0
        seg_world = f - p
        self.length = np.linalg.norm(seg_world, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.unit = np.where(self.length[:, None] > 0, seg_world / self.length[:, None], 0.0)
        self.n_xyz = np.array([scene.shape[2], scene.shape[1], scene.shape[0]], float)
        self._clip(c0, d)
        start = c0 + self.t_enter[:, None] * d
        self.vox = np.clip(np.floor(start + 0.5), 0, self.n_xyz - 1).astype(np.int64)
        self.step_dir = np.sign(d).astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.t_delta = np.where(d != 0, 1.0 / np.abs(d), np.inf)
            self.t_max = np.where(d != 0, (self.vox + 0.5 * self.step_dir - c0) / d, np.inf)
        self.t = self.t_enter.copy()
        self.reasons = np.where(self.out_len > ZERO_SEGMENT_MM, OUT_OF_VOLUME, 0).astype(np.int32)
        self.min_crit = np.full(nr, np.inf)
        self.incidence = np.full(nr, np.nan)
        self.bone_seen = np.zeros(nr, bool)
        self.first_block_t = np.full(nr, np.nan)
        self.path = np.zeros((nr, 256)) if detail else None
        self.labels_flat = scene.labels.ravel()
        self.roles_flat = scene.role_lut[self.labels_flat]
        self.edt_flat = scene.critical_edt_mm.ravel()
        self.normals_flat = scene.bone_normals.reshape(-1, 3)

    def _clip(self, c0, d):
        """Entry and exit parameters (0..1 along the segment) of the voxel box; path length outside it."""
        lo, hi = -0.5, self.n_xyz - 0.5
        with np.errstate(divide="ignore", invalid="ignore"):
            ta, tb = (lo - c0) / d, (hi - c0) / d
        inside_ax = (c0 >= lo) & (c0 <= hi)
        tmin_ax = np.where(d != 0, np.minimum(ta, tb), np.where(inside_ax, -np.inf, np.inf))
        tmax_ax = np.where(d != 0, np.maximum(ta, tb), np.where(inside_ax, np.inf, -np.inf))
        self.t_enter = np.maximum(0.0, tmin_ax.max(axis=1))
        self.t_exit = np.minimum(1.0, tmax_ax.min(axis=1))
        self.active = self.t_enter < self.t_exit
        self.out_len = np.where(self.active, self.length * (1.0 - (self.t_exit - self.t_enter)), self.length)

    def step(self):
        """Advance every active ray by one voxel, recording what the voxel it leaves holds."""
        nz, ny, nx = self.scene.shape
        ids = np.flatnonzero(self.active)
        tm = self.t_max[ids]
        axis = np.argmin(tm, axis=1)
        t_axis = tm[np.arange(ids.size), axis]
        t_next = np.minimum(t_axis, self.t_exit[ids])
        seg_mm = (t_next - self.t[ids]) * self.length[ids]
        v = self.vox[ids]
        flat = (v[:, 2] * ny + v[:, 1]) * nx + v[:, 0]
        real = seg_mm > ZERO_SEGMENT_MM
        if real.any():
            self._visit(ids[real], flat[real], seg_mm[real])
        self.vox[ids, axis] += self.step_dir[ids, axis]
        self.t_max[ids, axis] = t_axis + self.t_delta[ids, axis]
        self.t[ids] = t_next
        outside = np.any((self.vox[ids] < 0) | (self.vox[ids] >= self.n_xyz.astype(np.int64)), axis=1)
        self.active[ids[(t_next >= self.t_exit[ids] - 1e-12) | outside]] = False

    def _visit(self, r_ids, r_flat, r_seg):
        cfg = self.cfg
        role = self.roles_flat[r_flat]
        if self.detail:
            np.add.at(self.path, (r_ids, self.labels_flat[r_flat]), r_seg)
        self.min_crit[r_ids] = np.minimum(self.min_crit[r_ids], self.edt_flat[r_flat])
        remaining = (1.0 - self.t[r_ids]) * self.length[r_ids]
        bits = np.zeros(r_ids.size, np.int32)
        for r, bit in ((ROLE_GAS, GAS), (ROLE_METAL, METAL), (ROLE_SCAR, SCAR), (ROLE_CRITICAL, CRITICAL_CROSS),
                       (ROLE_NOPASS, NO_PASS_ZONE)):
            bits[role == r] |= bit
        is_bone = role == ROLE_BONE
        first_bone = is_bone & ~self.bone_seen[r_ids]
        if first_bone.any():
            bits[np.flatnonzero(first_bone)[self._first_bone(r_ids, r_flat, first_bone, remaining)]] |= CRITICAL_ANGLE
        bits[is_bone & (remaining > cfg.target_surface_mm)] |= BONE_PREFOCAL
        newly = (bits & cfg.blocking_bits()) != 0
        unset = np.isnan(self.first_block_t[r_ids])
        self.first_block_t[r_ids[newly & unset]] = self.t[r_ids[newly & unset]]
        self.reasons[r_ids] |= bits

    def _first_bone(self, r_ids, r_flat, first_bone, remaining):
        """Incidence angle at each ray's first bone voxel; True where it is too steep at the target surface."""
        fb = r_ids[first_bone]
        nvec = self.normals_flat[r_flat[first_bone]].astype(np.float64)
        cosang = np.abs((nvec * self.unit[fb]).sum(axis=1))
        ang = np.where(np.linalg.norm(nvec, axis=1) > 0.5, np.degrees(np.arccos(np.clip(cosang, 0.0, 1.0))), np.nan)
        self.incidence[fb] = ang
        self.bone_seen[fb] = True
        surface = remaining[first_bone] <= self.cfg.target_surface_mm
        return surface & (ang > self.cfg.angle_deg())  # NaN compares False

    def finish(self, focus_edt_mm):
        """Apply the proximity rule and return the per-ray results (see :func:`trace`).

        Parameters
        ----------
        focus_edt_mm : ndarray, shape (n,)
            Distance from each ray's focus to the nearest critical structure, mm; a ray is not flagged as passing
            near a structure that is no nearer to it than to the focus.

        Returns
        -------
        dict of str to ndarray
            ``reasons``, ``status``, ``min_critical_mm``, ``incidence_deg``, ``out_of_volume_mm``, ``length_mm``
            (and ``path_mm``, ``first_block_t`` when tracing with detail).
        """
        cfg, reasons, min_crit = self.cfg, self.reasons, self.min_crit
        near = (reasons & CRITICAL_CROSS == 0) & (min_crit < cfg.critical_min_distance_mm) & \
            (min_crit < focus_edt_mm - CLOSER_THAN_FOCUS_TOLERANCE_MM)
        reasons[near] |= CRITICAL_NEAR
        status = np.where((reasons & cfg.blocking_bits()) != 0, STATUS_BLOCKED,
                          np.where((reasons & cfg.degrading_bits()) != 0, STATUS_DEGRADED, STATUS_CLEAR)).astype(np.int8)
        out = {"reasons": reasons, "status": status, "min_critical_mm": min_crit, "incidence_deg": self.incidence,
               "out_of_volume_mm": self.out_len, "length_mm": self.length}
        if self.detail:
            out["path_mm"] = self.path
            out["first_block_t"] = self.first_block_t
        return out


def area_fraction(ok, areas):
    """Fraction of the element area whose rays are ``ok``, per focus (both CPU traversals sum it this way, so they
    agree bit for bit).

    Parameters
    ----------
    ok : ndarray of bool, shape (foci, elements)
    areas : ndarray of float64, shape (elements,)

    Returns
    -------
    ndarray of float64, shape (foci,)
    """
    return (ok * areas[None, :]).sum(axis=1) / areas.sum()


def reason_codes(bits: int) -> list[str]:
    """Names of the reason bits set in ``bits``, in the README's order, each once.

    Parameters
    ----------
    bits : int
        OR of the reason bits of :mod:`mrtherm.window.scene`.

    Returns
    -------
    list of str

    Examples
    --------
    >>> reason_codes(1 | 128)
    ['GAS', 'OUT_OF_VOLUME']
    """
    out = []
    for bit, code in REASON_CODES:
        if bits & bit and code not in out:
            out.append(code)
    return out


# --------------------------------------------------------------------------- the check
