"""The acoustic-window verdict: per-element table, central ray, rules with thresholds and sources."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mrtherm.backend import gpu_plugin, resolve_backend
from mrtherm.errors import ParameterError
from mrtherm.io.labels import COUPLING_NAME, FAT_NAME, SKIN_NAME
from mrtherm.window import acoustics
from mrtherm.window.scene import CRITICAL_CROSS, ROLE_CRITICAL, SCAR, STATUS_BLOCKED, STATUS_NAMES, Scene
from mrtherm.window.trace import reason_codes, trace


def _rule(name, value, unit, result, threshold, source, note=""):
    return {"rule": name, "value": value, "unit": unit, "result": result, "threshold": threshold,
            "source": source, **({"note": note} if note else {})}


DEFAULT_SOURCE = "mrtherm default (configurable)"
MM_PER_CM = 10.0
# Points along a line (skin depth, classes beyond the focus) are this fraction of the smallest voxel size apart.
# Project choice, reason: distances along the line to a quarter voxel, and a voxel the line crosses for longer than
# one step always holds a sample.
SAMPLE_STEP_VOXEL_FRACTION = 0.25
OUTSIDE = -1  # label of a sample outside the labelled volume (no value of any table: values are 0..255)
OUTSIDE_CLASS = "outside volume (water)"


def check_window(scene: Scene, transducer, target_mm, backend: str = "numpy") -> dict:
    """Check every element's path to ``target_mm``.

    Parameters
    ----------
    scene : Scene
    transducer : mrtherm.window.transducer.Transducer
    target_mm : array_like, shape (3,)
        Focus in world RAS+ mm (inside the labelled volume, at no element).
    backend : {"numpy", "cupy", "auto"}
        Where element statuses and reasons (hence the verdict) are traced; the
        per-element details (path lengths, attenuation, angles) come from NumPy.

    Returns
    -------
    dict
        The report (README, "Acoustic-window check"): verdict, area fractions, rules with values, thresholds and
        sources, central ray, classes beyond the focus, configuration, sources and the per-element table.

    Raises
    ------
    ParameterError
        The target is not three finite numbers, lies outside the volume or at an element.
    BackendUnavailableError
        ``backend="cupy"`` without a usable GPU.
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
    at_target = np.flatnonzero(np.all(starts == target, axis=1))
    if at_target.size:
        raise ParameterError(f"transducer element {int(at_target[0])} lies at the target "
                             f"{tuple(float(v) for v in target)} mm")
    ends = np.broadcast_to(target, (n, 3))
    res = trace(scene, starts, ends, detail=True)  # the proximity rule compares with the distance at each ray's end
    if backend != "numpy" and resolve_backend(backend) == "cupy":
        # statuses and reasons (the verdict) from the GPU traversal; path lengths and angles for the table from NumPy
        gpu = gpu_plugin(required=True).trace_pairs(scene, starts, target[None, :])
        res["status"], res["reasons"] = gpu["status"][:, 0], gpu["reasons"][:, 0]
    areas = transducer.areas_mm2
    total_area = float(areas.sum())
    status = res["status"]
    blocked = status == STATUS_BLOCKED
    active_fraction = float(areas[~blocked].sum() / total_area)
    central = _central_ray(scene, transducer, target)
    rules = _rules(cfg, areas, res["reasons"], active_fraction, central)
    order = {"PASS": 0, "WARN": 1, "FAIL": 2}
    return {
        "verdict": max((r["result"] for r in rules), key=order.get),
        "active_fraction": active_fraction,
        "blocked_fraction": float(areas[blocked].sum() / total_area),
        "element_counts": {name: int(np.sum(status == code)) for code, name in STATUS_NAMES.items()},
        "target_world_mm": [float(v) for v in target],
        "transducer": {"name": transducer.name, "frequency_hz": transducer.frequency_hz, "elements": n,
                       "centre_world_mm": [float(v) for v in transducer.centre_mm],
                       "beam_axis": [float(v) for v in central["axis"]], "total_area_mm2": total_area},
        "central_ray": central["report"],
        "beyond_focus": central["beyond"],
        "focus_to_critical_mm": None if central["focus_crit"] is None else round(central["focus_crit"], 2),
        "rules": rules,
        "config": {**dataclasses.asdict(cfg), "critical_angle_deg": cfg.angle_deg()},
        "sources": {"attenuation": acoustics.SOURCE_ATTENUATION, "sound_speeds": acoustics.SOURCE_SPEEDS,
                    "attenuation_table": {scene.table.name(k): {"db_per_cm_1mhz": v[0], "exponent": v[1], "note": v[2]}
                                          for k, v in acoustics.entries_of(scene.table).items()}},
        "elements": _element_rows(scene, transducer, target, res),
        "element_positions_world_mm": [[float(v) for v in row] for row in starts],
    }


def _element_rows(scene, transducer, target, res) -> list:
    """The per-element table: status, reasons, path by class, first block, incidence, attenuation, distances."""
    starts, areas = transducer.positions_mm, transducer.areas_mm2
    alpha = acoustics.attenuation_by_value(scene.table, transducer.frequency_hz)  # by class name, any table
    alpha_water = acoustics.attenuation_db_per_cm(acoustics.WATER, transducer.frequency_hz)
    present = sorted(int(v) for v in np.unique(scene.labels))
    names = {v: scene.table.name(v) for v in present}
    elements = []
    for i in range(transducer.n_elements):
        pm = res["path_mm"][i]
        out_mm = float(res["out_of_volume_mm"][i])
        with np.errstate(invalid="ignore"):
            att = float(np.sum(np.where(pm > 0, pm * alpha, 0.0)) / MM_PER_CM + out_mm * alpha_water / MM_PER_CM)
        vec = target - starts[i]
        dist = float(np.linalg.norm(vec))
        cosang = float(np.dot(transducer.normals[i], vec / dist))  # dist > 0: no element lies at the target
        fbt = res["first_block_t"][i]
        path = {names[v]: round(float(pm[v]), 3) for v in present if pm[v] > 0}
        if out_mm > 0:
            path[OUTSIDE_CLASS] = round(out_mm, 3)
        inc, mc = res["incidence_deg"][i], res["min_critical_mm"][i]
        elements.append({
            "index": i, "status": STATUS_NAMES[int(res["status"][i])], "reasons": reason_codes(int(res["reasons"][i])),
            "path_length_mm": round(dist, 3), "path_mm_by_class": path,
            "first_block_world_mm": None if np.isnan(fbt) else [float(v) for v in starts[i] + fbt * vec],
            "incidence_angle_deg": None if np.isnan(inc) else round(float(inc), 2),
            "attenuation_db": round(att, 3) if math.isfinite(att) else None,
            "min_distance_critical_mm": None if not math.isfinite(mc) else round(float(mc), 2),
            "element_target_angle_deg": round(math.degrees(math.acos(max(-1.0, min(1.0, cosang)))), 2),
            "area_mm2": float(areas[i]),
        })
    return elements


def _central_ray(scene, transducer, target) -> dict:
    """The transducer-centre-to-focus ray: reasons, skin depth, fat, classes beyond the focus, focus-critical distance."""
    cfg = scene.config
    centre = transducer.centre_mm
    axis = target - centre
    axis_len = float(np.linalg.norm(axis))
    axis = axis / axis_len if axis_len > 0 else np.array([0.0, 0.0, 1.0])
    central = trace(scene, centre[None], target[None], detail=True)
    c_path = central["path_mm"][0]
    table = scene.table  # classes by name: a replacement table may give them other values
    skin_depth = _depth_from_first(scene, centre, target, table.values_named(SKIN_NAME))
    if skin_depth is None:  # no skin on the ray: from the first voxel of the body (any class but coupling)
        body = set(table.classes) - set(table.values_named(COUPLING_NAME))
        skin_depth = _depth_from_first(scene, centre, target, body)
    beyond = _classes_along(scene, target, target + axis * cfg.beyond_focus_mm)
    report = {"reasons": reason_codes(int(central["reasons"][0])), "skin_to_target_mm": skin_depth,
              "fat_thickness_mm": round(float(sum(c_path[v] for v in table.values_named(FAT_NAME))), 3),
              "path_mm_by_class": {scene.table.name(v): round(float(c_path[v]), 3) for v in range(256) if c_path[v] > 0}}
    return {"axis": axis, "report": report, "blocked": int(central["status"][0]) == STATUS_BLOCKED,
            "beyond": beyond, "critical_beyond": [b for b in beyond if b["label"] is not None
                                                  and scene.role_lut[b["label"]] == ROLE_CRITICAL],
            "focus_crit": _focus_to_critical_mm(scene, target)}


def _rules(cfg, areas, reasons, active_fraction, central) -> list:
    """Every verdict rule with its value, unit, result, threshold and source."""
    total_area = float(areas.sum())
    af_res = "PASS" if active_fraction >= cfg.active_fraction_pass else (
        "WARN" if active_fraction >= cfg.active_fraction_warn else "FAIL")
    rules = [_rule("active_fraction", round(active_fraction, 4), "fraction of transducer area", af_res,
                   {"pass": cfg.active_fraction_pass, "warn": cfg.active_fraction_warn}, DEFAULT_SOURCE),
             _rule("central_ray_clear", central["report"]["reasons"] or ["clear"], "reasons",
                   "FAIL" if central["blocked"] else "PASS",
                   "no blocking reason on the transducer-centre-to-focus ray", DEFAULT_SOURCE)]
    focus_crit = central["focus_crit"]
    thresholds = {"warn_below": cfg.focus_critical_warn_mm, "fail_below": cfg.focus_critical_fail_mm}
    if focus_crit is None:
        rules.append(_rule("focus_to_critical_structure", None, "mm", "PASS", thresholds, DEFAULT_SOURCE,
                           "no spinal cord or nerve root labelled"))
    else:
        res_fc = "FAIL" if focus_crit < cfg.focus_critical_fail_mm else (
            "WARN" if focus_crit < cfg.focus_critical_warn_mm else "PASS")
        rules.append(_rule("focus_to_critical_structure", round(focus_crit, 2), "mm", res_fc, thresholds,
                           DEFAULT_SOURCE, "distance from the focus to the nearest spinal-cord or nerve-root voxel centre"))
    crossing = float(areas[(reasons & CRITICAL_CROSS) != 0].sum() / total_area)
    rules.append(_rule("elements_crossing_critical_structures", round(crossing, 4), "fraction of transducer area",
                       "WARN" if crossing > 0 else "PASS", "0 (such elements must be switched off)", DEFAULT_SOURCE))
    crit_beyond = central["critical_beyond"]
    near_beyond = [b for b in crit_beyond if b["distance_mm"] <= cfg.beyond_focus_critical_warn_mm]
    rules.append(_rule("critical_structure_beyond_focus",
                       [f"{b['class']} at {b['distance_mm']} mm" for b in crit_beyond] or None, "mm along the beam axis",
                       "WARN" if near_beyond else "PASS",
                       {"warn_within_mm": cfg.beyond_focus_critical_warn_mm}, DEFAULT_SOURCE,
                       "far-field energy behind the focus"))
    scar_frac = float(areas[(reasons & SCAR) != 0].sum() / total_area)
    rules.append(_rule("scar_in_path", round(scar_frac, 4), "fraction of transducer area",
                       "WARN" if scar_frac > 0 else "PASS", "0", DEFAULT_SOURCE,
                       "scars block by default" if cfg.scar_blocks else "scars degrade (configured)"))
    return rules


def _depth_from_first(scene, start, target, values):
    """Distance from the first voxel with a label in ``values`` along start->target to the target, mm."""
    pts, labs = _samples(scene, start, target)
    hit = np.flatnonzero(np.isin(labs, list(values)))
    if hit.size == 0:
        return None
    return round(float(np.linalg.norm(target - pts[hit[0]])), 2)


def _samples(scene, a, b, step_fraction=SAMPLE_STEP_VOXEL_FRACTION):
    """Points every quarter of the smallest voxel size from a to b and their labels (OUTSIDE outside the volume)."""
    length = float(np.linalg.norm(b - a))
    step = step_fraction * min(scene.zooms_zyx)
    n = max(2, int(math.ceil(length / step)) + 1)
    s = np.linspace(0.0, 1.0, n)
    pts = a[None, :] + s[:, None] * (b - a)[None, :]
    idx, inside = scene.voxels_of_world(pts)
    labs = np.full(n, OUTSIDE, dtype=np.int32)
    labs[inside] = scene.labels[tuple(idx[inside].T)]
    return pts, labs


def _classes_along(scene, a, b):
    """Classes met from a towards b: first distance from a (mm) and path length of each.

    Outside the volume is coupling water: the table's coupling class, or label None when the table has none."""
    pts, labs = _samples(scene, a, b)
    coupling = scene.table.values_named(COUPLING_NAME)
    if coupling:
        labs[labs == OUTSIDE] = coupling[0]
    dists = np.linalg.norm(pts - a[None, :], axis=1)
    step = dists[1]  # samples are evenly spaced from a (dists[0] = 0); _samples gives at least two
    out = []
    for v in dict.fromkeys(labs.tolist()):
        sel = labs == v
        out.append({"label": None if v == OUTSIDE else int(v),
                    "class": OUTSIDE_CLASS if v == OUTSIDE else scene.table.name(v),
                    "distance_mm": round(float(dists[sel][0]), 2), "length_mm": round(float(sel.sum() * step), 2)})
    return out


def _focus_to_critical_mm(scene, target):
    if not scene.critical_mask.any():
        return None
    k, j, i = np.nonzero(scene.critical_mask)
    world = np.stack([i, j, k], axis=1) @ scene.affine[:3, :3].T + scene.affine[:3, 3]
    return float(np.min(np.linalg.norm(world - target[None, :], axis=1)))


# --------------------------------------------------------------------------- feasibility
