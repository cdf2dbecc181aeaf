"""Acoustic-window check: trace every transducer element to the focus through the labels.

Each element-to-focus segment is followed by exact voxel traversal (Amanatides &
Woo 1987) in the label volume's voxel space, so no voxel the segment crosses is
skipped; crossings of zero length (a corner touched at a point) are ignored.
Along the path:

- ``GAS``, ``METAL``, ``NO_PASS_ZONE``: the element is blocked;
- ``CRITICAL_STRUCTURE``: crossing the spinal cord or a nerve root blocks; passing
  closer than ``critical_min_distance_mm`` (and closer than the focus itself is)
  degrades;
- ``SCAR``: blocks by default, degrades with ``scar_blocks=False``;
- ``BONE_PREFOCAL``: bone met farther than ``target_surface_mm`` before the focus;
  bone within that distance is the target surface;
- ``CRITICAL_ANGLE``: at the first bone interface (target surface), the angle
  between the ray and the bone normal (gradient of the Gaussian-smoothed bone
  mask) exceeds the critical angle (default from Snell's law, about 27 degrees);
- ``OUT_OF_VOLUME``: part of the path lies outside the labelled volume; taken as
  coupling water and reported (does not change the status).

An element is ``blocked`` with any blocking reason, ``degraded`` with a
degrading one, else ``clear``. Active fraction = area of non-blocked elements /
total area. The same rules run in NumPy here and in the CUDA kernel
``gpu/mrtherm_gpu/kernels/raymarch.cu``.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
from scipy import ndimage

from mrtherm.window import acoustics
from mrtherm.backend import gpu_plugin, resolve_backend
from mrtherm.errors import InputFileError, ParameterError
from mrtherm.geometry import voxel_size_zyx_mm
from mrtherm.io.labels import LabelTable

# reason bits (shared with the CUDA kernel)
GAS, METAL, BONE_PREFOCAL, CRITICAL_ANGLE, SCAR, NO_PASS_ZONE, CRITICAL_CROSS, OUT_OF_VOLUME, CRITICAL_NEAR = (
    1, 2, 4, 8, 16, 32, 64, 128, 256)
REASON_CODES = [(GAS, "GAS"), (METAL, "METAL"), (BONE_PREFOCAL, "BONE_PREFOCAL"), (CRITICAL_ANGLE, "CRITICAL_ANGLE"),
                (SCAR, "SCAR"), (NO_PASS_ZONE, "NO_PASS_ZONE"), (CRITICAL_CROSS, "CRITICAL_STRUCTURE"),
                (CRITICAL_NEAR, "CRITICAL_STRUCTURE"), (OUT_OF_VOLUME, "OUT_OF_VOLUME")]
# voxel roles (shared with the CUDA kernel)
ROLE_PASS, ROLE_GAS, ROLE_METAL, ROLE_BONE, ROLE_SCAR, ROLE_CRITICAL, ROLE_NOPASS = range(7)
_ROLE_OF = {"transparent": ROLE_PASS, "pass": ROLE_PASS, "attenuating": ROLE_PASS, "entry": ROLE_PASS,
            "target": ROLE_PASS, "bone_cortical": ROLE_BONE, "bone_trabecular": ROLE_BONE, "block_gas": ROLE_GAS,
            "block_metal": ROLE_METAL, "block_scar": ROLE_SCAR, "critical": ROLE_CRITICAL,
            "block_no_pass": ROLE_NOPASS}
STATUS_CLEAR, STATUS_DEGRADED, STATUS_BLOCKED = 0, 1, 2
STATUS_NAMES = {STATUS_CLEAR: "clear", STATUS_DEGRADED: "degraded", STATUS_BLOCKED: "blocked"}
ZERO_SEGMENT_MM = 1e-6


@dataclasses.dataclass
class WindowConfig:
    """Thresholds of the acoustic-window check (all configurable).

    Defaults are mrtherm's choices unless a source is given in :mod:`mrtherm.window.acoustics`.
    """

    critical_angle_deg: float | None = None  # None: asin(c_soft / c_bone)
    c_soft_m_s: float = acoustics.SPEED_SOFT_TISSUE_M_S
    c_bone_m_s: float = acoustics.SPEED_CORTICAL_BONE_M_S
    target_surface_mm: float = 5.0
    scar_blocks: bool = True
    critical_min_distance_mm: float = 5.0
    normal_smoothing_mm: float = 1.5
    active_fraction_pass: float = 0.68
    active_fraction_warn: float = 0.49
    focus_critical_warn_mm: float = 10.0
    focus_critical_fail_mm: float = 5.0
    beyond_focus_mm: float = 40.0
    beyond_focus_critical_warn_mm: float = 30.0

    def angle_deg(self) -> float:
        if self.critical_angle_deg is not None:
            return float(self.critical_angle_deg)
        return acoustics.critical_angle_deg(self.c_soft_m_s, self.c_bone_m_s)

    def blocking_bits(self) -> int:
        bits = GAS | METAL | BONE_PREFOCAL | CRITICAL_ANGLE | NO_PASS_ZONE | CRITICAL_CROSS
        return bits | SCAR if self.scar_blocks else bits

    def degrading_bits(self) -> int:
        return CRITICAL_NEAR | (0 if self.scar_blocks else SCAR)


class Scene:
    """Label volume prepared for ray marching.

    Parameters
    ----------
    labels_zyx : (z, y, x) integer array
    affine : (4, 4) voxel (x, y, z) -> world mm
    table : LabelTable
    config : WindowConfig
    """

    def __init__(self, labels_zyx: np.ndarray, affine: np.ndarray, table: LabelTable | None = None,
                 config: WindowConfig | None = None, source: str = "<labels array>"):
        self.table = table or LabelTable()
        self.config = config or WindowConfig()
        lab = np.asarray(labels_zyx)
        if lab.ndim != 3:
            raise InputFileError(source, f"labels must be 3-D, got shape {lab.shape}")
        if not np.issubdtype(lab.dtype, np.integer):
            if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
                raise InputFileError(source, "labels are not integers")
        unknown = self.table.unknown_values(np.unique(lab))
        if unknown:
            raise InputFileError(source, f"unknown label values {unknown} (not in the label table)")
        if lab.min() < 0 or lab.max() > 255:
            raise InputFileError(source, "label values must lie in 0..255")
        self.labels = np.ascontiguousarray(lab.astype(np.uint8))
        self.affine = np.asarray(affine, dtype=np.float64)
        self.inv_affine = np.linalg.inv(self.affine)
        self.shape = self.labels.shape  # (z, y, x)
        self.source = source
        lut = np.zeros(256, dtype=np.uint8)
        for value, cls in self.table.classes.items():
            lut[value] = _ROLE_OF.get(cls.acoustic_role, ROLE_PASS)
        self.role_lut = lut
        self.zooms_zyx = voxel_size_zyx_mm(self.affine)
        critical = lut[self.labels] == ROLE_CRITICAL
        self.critical_mask = critical
        if critical.any():
            self.critical_edt_mm = ndimage.distance_transform_edt(~critical, sampling=self.zooms_zyx).astype(np.float32)
        else:
            self.critical_edt_mm = np.full(self.shape, np.inf, dtype=np.float32)
        self.bone_normals = self._bone_normals()

    def _bone_normals(self) -> np.ndarray:
        """Outward unit normals of bone (world frame), ``(z, y, x, 3)`` float32; zero where undefined."""
        bone = (self.role_lut[self.labels] == ROLE_BONE).astype(np.float32)
        sigma_vox = [self.config.normal_smoothing_mm / z for z in self.zooms_zyx]
        smooth = ndimage.gaussian_filter(bone, sigma=sigma_vox, mode="nearest")
        gz, gy, gx = np.gradient(smooth)  # per voxel index
        g_index = np.stack([gx, gy, gz], axis=-1)  # d/di, d/dj, d/dk
        # world gradient = inv(A)^T applied to the index gradient
        g_world = g_index @ self.inv_affine[:3, :3]
        norm = np.linalg.norm(g_world, axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            n = np.where(norm > 1e-6, -g_world / norm, 0.0)
        return np.ascontiguousarray(n.astype(np.float32))

    def voxels_of_world(self, points_mm):
        """(z, y, x) voxel indices of world points ``(n, 3)`` and whether each lies inside the volume."""
        pts = np.asarray(points_mm, float).reshape(-1, 3)
        idx = np.floor(pts @ self.inv_affine[:3, :3].T + self.inv_affine[:3, 3] + 0.5).astype(np.int64)[:, ::-1]
        inside = np.all((idx >= 0) & (idx < np.asarray(self.shape)), axis=1)
        return idx, inside

    def voxel_of_world(self, point_mm) -> tuple[int, int, int] | None:
        """(z, y, x) index of the voxel containing a world point, or None outside."""
        idx, inside = self.voxels_of_world(point_mm)
        return tuple(int(v) for v in idx[0]) if inside[0] else None

    def edt_at(self, points_mm):
        """Critical-structure distance (mm) at the voxel of each world point; inf outside the volume.

        A float for one point, an ``(n,)`` array for ``(n, 3)`` points.
        """
        idx, inside = self.voxels_of_world(points_mm)
        out = np.full(idx.shape[0], np.inf)
        k = idx[inside]
        out[inside] = self.critical_edt_mm[k[:, 0], k[:, 1], k[:, 2]]
        return float(out[0]) if np.ndim(points_mm) == 1 else out


# --------------------------------------------------------------------------- traversal
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
    cfg = scene.config
    p = np.asarray(starts_mm, float).reshape(-1, 3)
    f = np.asarray(ends_mm, float).reshape(-1, 3)
    nr = p.shape[0]
    if focus_edt_mm is None:
        focus_edt_mm = scene.edt_at(f)
    focus_edt_mm = np.broadcast_to(np.asarray(focus_edt_mm, float), (nr,))
    ainv = scene.inv_affine
    c0 = p @ ainv[:3, :3].T + ainv[:3, 3]
    c1 = f @ ainv[:3, :3].T + ainv[:3, 3]
    d = c1 - c0
    seg_world = f - p
    length = np.linalg.norm(seg_world, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.where(length[:, None] > 0, seg_world / length[:, None], 0.0)
    n_xyz = np.array([scene.shape[2], scene.shape[1], scene.shape[0]], float)
    lo, hi = -0.5, n_xyz - 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        ta = (lo - c0) / d
        tb = (hi - c0) / d
    tmin_ax = np.where(d != 0, np.minimum(ta, tb), np.where((c0 >= lo) & (c0 <= hi), -np.inf, np.inf))
    tmax_ax = np.where(d != 0, np.maximum(ta, tb), np.where((c0 >= lo) & (c0 <= hi), np.inf, -np.inf))
    t_enter = np.maximum(0.0, tmin_ax.max(axis=1))
    t_exit = np.minimum(1.0, tmax_ax.min(axis=1))
    inside = t_enter < t_exit
    out_len = np.where(inside, length * (1.0 - (t_exit - t_enter)), length)

    start = c0 + t_enter[:, None] * d
    vox = np.clip(np.floor(start + 0.5), 0, n_xyz - 1).astype(np.int64)
    step = np.sign(d).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_delta = np.where(d != 0, 1.0 / np.abs(d), np.inf)
        t_max = np.where(d != 0, (vox + 0.5 * step - c0) / d, np.inf)
    t = t_enter.copy()

    reasons = np.where(out_len > ZERO_SEGMENT_MM, OUT_OF_VOLUME, 0).astype(np.int32)
    min_crit = np.full(nr, np.inf)
    incidence = np.full(nr, np.nan)
    bone_seen = np.zeros(nr, bool)
    first_block_t = np.full(nr, np.nan)
    blocking = cfg.blocking_bits()
    crit_angle = cfg.angle_deg()
    path = np.zeros((nr, 256)) if detail else None

    nz, ny, nx = scene.shape
    labels_flat = scene.labels.ravel()
    roles_flat = scene.role_lut[labels_flat]
    edt_flat = scene.critical_edt_mm.ravel()
    normals_flat = scene.bone_normals.reshape(-1, 3)
    active = inside.copy()
    while active.any():
        ids = np.flatnonzero(active)
        tm = t_max[ids]
        axis = np.argmin(tm, axis=1)
        t_axis = tm[np.arange(ids.size), axis]
        t_next = np.minimum(t_axis, t_exit[ids])
        seg_mm = (t_next - t[ids]) * length[ids]
        v = vox[ids]
        flat = (v[:, 2] * ny + v[:, 1]) * nx + v[:, 0]
        real = seg_mm > ZERO_SEGMENT_MM
        r_ids, r_flat, r_seg = ids[real], flat[real], seg_mm[real]
        if r_ids.size:
            role = roles_flat[r_flat]
            if detail:
                np.add.at(path, (r_ids, labels_flat[r_flat]), r_seg)
            min_crit[r_ids] = np.minimum(min_crit[r_ids], edt_flat[r_flat])
            remaining = (1.0 - t[r_ids]) * length[r_ids]
            bits = np.zeros(r_ids.size, np.int32)
            bits[role == ROLE_GAS] |= GAS
            bits[role == ROLE_METAL] |= METAL
            bits[role == ROLE_SCAR] |= SCAR
            bits[role == ROLE_CRITICAL] |= CRITICAL_CROSS
            bits[role == ROLE_NOPASS] |= NO_PASS_ZONE
            is_bone = role == ROLE_BONE
            first_bone = is_bone & ~bone_seen[r_ids]
            if first_bone.any():
                fb = r_ids[first_bone]
                nvec = normals_flat[r_flat[first_bone]].astype(np.float64)
                cosang = np.abs((nvec * unit[fb]).sum(axis=1))
                ang = np.where(np.linalg.norm(nvec, axis=1) > 0.5,
                               np.degrees(np.arccos(np.clip(cosang, 0.0, 1.0))), np.nan)
                incidence[fb] = ang
                bone_seen[fb] = True
                surface = remaining[first_bone] <= cfg.target_surface_mm
                too_steep = surface & (ang > crit_angle)  # NaN compares False
                sub = np.flatnonzero(first_bone)
                bits[sub[too_steep]] |= CRITICAL_ANGLE
            bits[is_bone & (remaining > cfg.target_surface_mm)] |= BONE_PREFOCAL
            newly = (bits & blocking) != 0
            unset = np.isnan(first_block_t[r_ids])
            first_block_t[r_ids[newly & unset]] = t[r_ids[newly & unset]]
            reasons[r_ids] |= bits
        # advance every stepped ray
        vox[ids, axis] += step[ids, axis]
        t_max[ids, axis] = t_axis + t_delta[ids, axis]
        t[ids] = t_next
        done = (t_next >= t_exit[ids] - 1e-12) | np.any((vox[ids] < 0) | (vox[ids] >= n_xyz.astype(np.int64)), axis=1)
        active[ids[done]] = False

    near = (reasons & CRITICAL_CROSS == 0) & (min_crit < cfg.critical_min_distance_mm) & (min_crit < focus_edt_mm - 1e-6)
    reasons[near] |= CRITICAL_NEAR
    status = np.where((reasons & blocking) != 0, STATUS_BLOCKED,
                      np.where((reasons & cfg.degrading_bits()) != 0, STATUS_DEGRADED, STATUS_CLEAR)).astype(np.int8)
    out = {"reasons": reasons, "status": status, "min_critical_mm": min_crit, "incidence_deg": incidence,
           "out_of_volume_mm": out_len, "length_mm": length}
    if detail:
        out["path_mm"] = path
        out["first_block_t"] = first_block_t
    return out


def reason_codes(bits: int) -> list[str]:
    out = []
    for bit, code in REASON_CODES:
        if bits & bit and code not in out:
            out.append(code)
    return out


# --------------------------------------------------------------------------- the check
def _rule(name, value, unit, result, threshold, source, note=""):
    return {"rule": name, "value": value, "unit": unit, "result": result, "threshold": threshold,
            "source": source, **({"note": note} if note else {})}


DEFAULT_SOURCE = "mrtherm default (configurable)"


def check_window(scene: Scene, transducer, target_mm, backend: str = "numpy") -> dict:
    """Check every element's path to ``target_mm``; returns the report dict.

    Parameters
    ----------
    scene : Scene
    transducer : mrtherm.window.transducer.Transducer
    target_mm : (3,) focus in world mm (must lie inside the labelled volume)
    backend : {"numpy", "cupy", "auto"}
        Where element statuses and reasons (hence the verdict) are traced; the
        per-element details (path lengths, attenuation, angles) come from NumPy.
    """
    cfg = scene.config
    target = np.asarray(target_mm, float)
    if target.shape != (3,) or not np.all(np.isfinite(target)):
        raise ParameterError(f"target must be three finite numbers (x, y, z mm), got {target_mm!r}")
    if scene.voxel_of_world(target) is None:
        raise ParameterError(f"target {tuple(float(v) for v in target)} mm lies outside the labelled volume "
                             f"{scene.source}")
    n = transducer.n_elements
    starts = transducer.positions_mm
    ends = np.broadcast_to(target, (n, 3))
    focus_edt = scene.edt_at(target)
    res = trace(scene, starts, ends, focus_edt_mm=np.full(n, focus_edt), detail=True)
    if backend != "numpy" and resolve_backend(backend) == "cupy":
        # statuses and reasons (the verdict) from the GPU traversal; path lengths and angles for the table from NumPy
        gpu = gpu_plugin(required=True).trace_pairs(scene, starts, target[None, :])
        res["status"], res["reasons"] = gpu["status"][:, 0], gpu["reasons"][:, 0]
    areas = transducer.areas_mm2
    total_area = float(areas.sum())
    status = res["status"]
    blocked = status == STATUS_BLOCKED
    active_fraction = float(areas[~blocked].sum() / total_area)
    blocked_fraction = float(areas[blocked].sum() / total_area)
    freq = transducer.frequency_hz
    alpha = np.array([acoustics.attenuation_db_per_cm(v, freq) for v in range(256)])
    present = sorted(int(v) for v in np.unique(scene.labels))
    names = {v: scene.table.name(v) for v in present}

    elements = []
    for i in range(n):
        pm = res["path_mm"][i]
        out_mm = float(res["out_of_volume_mm"][i])
        with np.errstate(invalid="ignore"):
            att = float(np.sum(np.where(pm > 0, pm * alpha, 0.0)) / 10.0 + out_mm * alpha[0] / 10.0)
        vec = target - starts[i]
        dist = float(np.linalg.norm(vec))
        cosang = float(np.dot(transducer.normals[i], vec / dist)) if dist > 0 else 1.0
        fbt = res["first_block_t"][i]
        first_block = None if np.isnan(fbt) else [float(v) for v in starts[i] + fbt * vec]
        path = {names[v]: round(float(pm[v]), 3) for v in present if pm[v] > 0}
        if out_mm > 0:
            path["outside volume (water)"] = round(out_mm, 3)
        inc = res["incidence_deg"][i]
        mc = res["min_critical_mm"][i]
        elements.append({
            "index": i, "status": STATUS_NAMES[int(status[i])], "reasons": reason_codes(int(res["reasons"][i])),
            "path_length_mm": round(dist, 3), "path_mm_by_class": path,
            "first_block_world_mm": first_block,
            "incidence_angle_deg": None if np.isnan(inc) else round(float(inc), 2),
            "attenuation_db": round(att, 3) if math.isfinite(att) else None,
            "min_distance_critical_mm": None if not math.isfinite(mc) else round(float(mc), 2),
            "element_target_angle_deg": round(math.degrees(math.acos(max(-1.0, min(1.0, cosang)))), 2),
            "area_mm2": float(areas[i]),
        })

    # central ray, depth, fat, what lies beyond the focus
    centre = transducer.centre_mm
    axis = target - centre
    axis_len = float(np.linalg.norm(axis))
    axis = axis / axis_len if axis_len > 0 else np.array([0.0, 0.0, 1.0])
    central = trace(scene, centre[None], target[None], focus_edt_mm=[focus_edt], detail=True)
    c_path = central["path_mm"][0]
    skin_depth = _depth_from_first(scene, centre, target, {4})
    if skin_depth is None:
        skin_depth = _depth_from_first(scene, centre, target, set(range(1, 256)))
    beyond_end = target + axis * cfg.beyond_focus_mm
    beyond = _classes_along(scene, target, beyond_end)
    crit_beyond = [b for b in beyond if scene.role_lut[b["label"]] == ROLE_CRITICAL]
    focus_crit = _focus_to_critical_mm(scene, target)

    rules = []
    af_res = "PASS" if active_fraction >= cfg.active_fraction_pass else (
        "WARN" if active_fraction >= cfg.active_fraction_warn else "FAIL")
    rules.append(_rule("active_fraction", round(active_fraction, 4), "fraction of transducer area", af_res,
                       {"pass": cfg.active_fraction_pass, "warn": cfg.active_fraction_warn}, DEFAULT_SOURCE))
    c_reasons = reason_codes(int(central["reasons"][0]))
    c_block = int(central["status"][0]) == STATUS_BLOCKED
    rules.append(_rule("central_ray_clear", c_reasons or ["clear"], "reasons", "FAIL" if c_block else "PASS",
                       "no blocking reason on the transducer-centre-to-focus ray", DEFAULT_SOURCE))
    if focus_crit is None:
        rules.append(_rule("focus_to_critical_structure", None, "mm", "PASS",
                           {"warn_below": cfg.focus_critical_warn_mm, "fail_below": cfg.focus_critical_fail_mm},
                           DEFAULT_SOURCE, "no spinal cord or nerve root labelled"))
    else:
        res_fc = "FAIL" if focus_crit < cfg.focus_critical_fail_mm else (
            "WARN" if focus_crit < cfg.focus_critical_warn_mm else "PASS")
        rules.append(_rule("focus_to_critical_structure", round(focus_crit, 2), "mm", res_fc,
                           {"warn_below": cfg.focus_critical_warn_mm, "fail_below": cfg.focus_critical_fail_mm},
                           DEFAULT_SOURCE, "distance from the focus to the nearest spinal-cord or nerve-root voxel centre"))
    crossing = float(areas[(res["reasons"] & CRITICAL_CROSS) != 0].sum() / total_area)
    rules.append(_rule("elements_crossing_critical_structures", round(crossing, 4), "fraction of transducer area",
                       "WARN" if crossing > 0 else "PASS", "0 (such elements must be switched off)", DEFAULT_SOURCE))
    near_beyond = [b for b in crit_beyond if b["distance_mm"] <= cfg.beyond_focus_critical_warn_mm]
    rules.append(_rule("critical_structure_beyond_focus",
                       [f"{b['class']} at {b['distance_mm']} mm" for b in crit_beyond] or None, "mm along the beam axis",
                       "WARN" if near_beyond else "PASS",
                       {"warn_within_mm": cfg.beyond_focus_critical_warn_mm}, DEFAULT_SOURCE,
                       "far-field energy behind the focus"))
    scar_frac = float(areas[(res["reasons"] & SCAR) != 0].sum() / total_area)
    rules.append(_rule("scar_in_path", round(scar_frac, 4), "fraction of transducer area",
                       "WARN" if scar_frac > 0 else "PASS", "0", DEFAULT_SOURCE,
                       "scars block by default" if cfg.scar_blocks else "scars degrade (configured)"))
    order = {"PASS": 0, "WARN": 1, "FAIL": 2}
    verdict = max((r["result"] for r in rules), key=order.get)

    counts = {name: int(np.sum(status == code)) for code, name in STATUS_NAMES.items()}
    return {
        "verdict": verdict,
        "active_fraction": active_fraction,
        "blocked_fraction": blocked_fraction,
        "element_counts": counts,
        "target_world_mm": [float(v) for v in target],
        "transducer": {"name": transducer.name, "frequency_hz": transducer.frequency_hz, "elements": n,
                       "centre_world_mm": [float(v) for v in centre], "beam_axis": [float(v) for v in axis],
                       "total_area_mm2": total_area},
        "central_ray": {"reasons": c_reasons, "skin_to_target_mm": skin_depth,
                        "fat_thickness_mm": round(float(c_path[2]), 3),
                        "path_mm_by_class": {names.get(v, scene.table.name(v)): round(float(c_path[v]), 3)
                                             for v in range(256) if c_path[v] > 0}},
        "beyond_focus": beyond,
        "focus_to_critical_mm": None if focus_crit is None else round(focus_crit, 2),
        "rules": rules,
        "config": {**dataclasses.asdict(cfg), "critical_angle_deg": cfg.angle_deg()},
        "sources": {"attenuation": acoustics.SOURCE_ATTENUATION, "sound_speeds": acoustics.SOURCE_SPEEDS,
                    "attenuation_table": {scene.table.name(k): {"db_per_cm_1mhz": v[0], "exponent": v[1], "note": v[2]}
                                          for k, v in acoustics.ATTENUATION_DB_PER_CM_1MHZ.items()}},
        "elements": elements,
        "element_positions_world_mm": [[float(v) for v in row] for row in starts],
    }


def _depth_from_first(scene, start, target, values):
    """Distance from the first voxel with a label in ``values`` along start->target to the target, mm."""
    pts, labs = _samples(scene, start, target)
    hit = np.flatnonzero(np.isin(labs, list(values)))
    if hit.size == 0:
        return None
    return round(float(np.linalg.norm(target - pts[hit[0]])), 2)


def _samples(scene, a, b, step_fraction=0.25):
    """Points every quarter of the smallest voxel size from a to b and their labels (0 outside)."""
    length = float(np.linalg.norm(b - a))
    step = step_fraction * min(scene.zooms_zyx)
    n = max(2, int(math.ceil(length / step)) + 1)
    s = np.linspace(0.0, 1.0, n)
    pts = a[None, :] + s[:, None] * (b - a)[None, :]
    c = pts @ scene.inv_affine[:3, :3].T + scene.inv_affine[:3, 3]
    idx = np.floor(c + 0.5).astype(int)
    nx, ny, nz = scene.shape[2], scene.shape[1], scene.shape[0]
    ok = (idx >= 0).all(axis=1) & (idx[:, 0] < nx) & (idx[:, 1] < ny) & (idx[:, 2] < nz)
    labs = np.zeros(n, dtype=np.int32)
    labs[ok] = scene.labels[idx[ok, 2], idx[ok, 1], idx[ok, 0]]
    return pts, labs


def _classes_along(scene, a, b):
    """Classes met from a towards b: first distance from a (mm) and path length of each."""
    pts, labs = _samples(scene, a, b)
    dists = np.linalg.norm(pts - a[None, :], axis=1)
    step = dists[1] - dists[0] if dists.size > 1 else 0.0
    out = []
    for v in dict.fromkeys(labs.tolist()):
        sel = labs == v
        out.append({"label": int(v), "class": scene.table.name(v), "distance_mm": round(float(dists[sel][0]), 2),
                    "length_mm": round(float(sel.sum() * step), 2)})
    return out


def _focus_to_critical_mm(scene, target):
    if not scene.critical_mask.any():
        return None
    k, j, i = np.nonzero(scene.critical_mask)
    world = np.stack([i, j, k], axis=1) @ scene.affine[:3, :3].T + scene.affine[:3, 3]
    return float(np.min(np.linalg.norm(world - target[None, :], axis=1)))


# --------------------------------------------------------------------------- feasibility
def feasibility_map(scene: Scene, transducer, target_mask_zyx: np.ndarray, backend: str = "numpy",
                    chunk_rays: int = 1 << 18, progress: bool = False) -> np.ndarray:
    """Active fraction if the focus were at each voxel of ``target_mask_zyx``.

    Returns a ``(z, y, x)`` float32 map, NaN outside the mask.
    """
    mask = np.asarray(target_mask_zyx, bool)
    if mask.shape != scene.shape:
        raise ParameterError(f"target mask shape {mask.shape} does not match the labels {scene.shape}")
    k, j, i = np.nonzero(mask)
    foci = np.stack([i, j, k], axis=1) @ scene.affine[:3, :3].T + scene.affine[:3, 3]
    out = np.full(scene.shape, np.nan, dtype=np.float32)
    if foci.shape[0] == 0:
        return out
    if resolve_backend(backend) == "cupy":
        frac = gpu_plugin(required=True).active_fractions(scene, transducer, foci)
    else:
        frac = active_fractions_numpy(scene, transducer, foci, chunk_rays=chunk_rays, progress=progress)
    out[k, j, i] = frac
    return out


def active_fractions_numpy(scene, transducer, foci, chunk_rays=1 << 18, progress=False):
    """Area-weighted active fraction for each focus (NumPy traversal of every element ray)."""
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
        frac[s:s + m] = (ok * areas[None, :]).sum(axis=1) / areas.sum()
    return frac


def load_labels(path, table: LabelTable | None = None, config: WindowConfig | None = None) -> Scene:
    """A labels NIfTI as a :class:`Scene` (one-line errors for non-integer or unknown labels)."""
    from mrtherm.io import niftiio
    data, affine = niftiio.load_3d(path, "labels")
    return Scene(np.ascontiguousarray(data.transpose(2, 1, 0)), affine, table, config, source=os.fspath(path))
