"""Files and text of a window check: report.json, elements.csv, feasibility.nii.gz, and a terminal summary."""

from __future__ import annotations

import csv
import json
import os


ELEMENT_COLUMNS = ["index", "status", "reasons", "path_length_mm", "first_block_world_mm", "incidence_angle_deg",
                   "attenuation_db", "min_distance_critical_mm", "element_target_angle_deg", "area_mm2"]


def write_window_outputs(folder, report, scene=None, feasibility=None, transducer=None):
    """report.json, elements.csv and (optionally) feasibility.nii.gz and transducer.json into ``folder``.

    Parameters
    ----------
    folder : str
        Existing (staging) folder.
    report : dict
        What :func:`mrtherm.window.check_window` returned.
    scene : Scene, optional
        Grid of ``feasibility``.
    feasibility : ndarray, shape (z, y, x), optional
        Active fraction per candidate focus.
    transducer : Transducer, optional
        Saved as ``transducer.json`` so that the check can be repeated (the napari widget pre-fills it).
    """
    with open(os.path.join(folder, "report.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    classes = sorted({k for e in report["elements"] for k in e["path_mm_by_class"]})
    with open(os.path.join(folder, "elements.csv"), "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(ELEMENT_COLUMNS + [f"path_mm[{c}]" for c in classes])
        for e in report["elements"]:
            row = []
            for c in ELEMENT_COLUMNS:
                v = e[c]
                if isinstance(v, list):
                    v = ";".join(str(x) for x in v)
                row.append("" if v is None else v)
            w.writerow(row + [e["path_mm_by_class"].get(c, 0.0) for c in classes])
    if transducer is not None:
        transducer.save(os.path.join(folder, "transducer.json"))
    if feasibility is not None:
        from mrtherm.io import niftiio
        niftiio.save_volume(feasibility, scene.affine, os.path.join(folder, "feasibility.nii.gz"))


RULE_TITLES = {"active_fraction": "active transducer area", "central_ray_clear": "central ray",
               "focus_to_critical_structure": "focus to spinal cord / nerve root",
               "elements_crossing_critical_structures": "elements crossing cord / nerve roots",
               "critical_structure_beyond_focus": "cord / nerve root behind the focus",
               "scar_in_path": "scar in the beam path"}
REASON_WORDS = {"GAS": "gas", "METAL": "metal", "BONE_PREFOCAL": "bone before the focus",
                "CRITICAL_ANGLE": "bone hit beyond the critical angle", "SCAR": "scar", "NO_PASS_ZONE": "a no-pass zone",
                "CRITICAL_STRUCTURE": "the spinal cord / a nerve root", "OUT_OF_VOLUME": "outside the labelled volume"}


def _number(v, unit=""):
    if v is None:
        return "none"
    if isinstance(v, float):
        text = f"{v:.0%}" if unit.startswith("fraction") else f"{v:.3g}"
    else:
        text = str(v)
    return f"{text} mm" if unit.startswith("mm") and not text.endswith("mm") else text


def _threshold(rule) -> str:
    thr, unit = rule.get("threshold"), rule.get("unit", "")
    if isinstance(thr, dict):
        parts = []
        for key, value in thr.items():
            if value is None:
                continue
            words = key.removesuffix("_mm").replace("_", " ")
            shown = f"{value:.0%}" if unit.startswith("fraction") else f"{value:g} mm" if "mm" in key or unit == "mm" \
                else f"{value:g}"
            parts.append(f"{words} {shown}" if words not in ("pass", "warn") else f"{words} at >= {shown}")
        return "; ".join(parts)
    return str(thr) if thr is not None else ""


def rule_text(rule) -> str:
    """One readable line per window rule: result, what, value with unit, threshold.

    Parameters
    ----------
    rule : dict
        One entry of the report's ``rules``.

    Returns
    -------
    str
        e.g. ``WARN  focus to spinal cord / nerve root: 6.32 mm  (warn below 10 mm; fail below 5 mm)``.
    """
    title = RULE_TITLES.get(rule["rule"], rule["rule"].replace("_", " "))
    value = rule.get("value")
    if rule["rule"] == "central_ray_clear":
        reasons = [r for r in (value or []) if r != "clear"]
        if not reasons:
            body = "clear"
        else:
            what = ", ".join(REASON_WORDS.get(r, r.lower().replace("_", " ")) for r in reasons)
            body = f"blocked by {what}" if rule["result"] == "FAIL" else f"not blocked; passes near {what} (degrades)"
        return f"{rule['result']}  {title}: {body}"
    if isinstance(value, list):
        shown = "; ".join(str(v) for v in value)
    else:
        shown = _number(value, rule.get("unit", ""))
    thr = _threshold(rule)
    return f"{rule['result']}  {title}: {shown}" + (f"  ({thr})" if thr else "")


def window_summary(report) -> str:
    """A few lines for the terminal: verdict, rules, central-ray depth and fat.

    Parameters
    ----------
    report : dict
        :func:`mrtherm.window.check_window`'s report.

    Returns
    -------
    str
    """
    lines = [f"acoustic window: {report['verdict']}  (active fraction {report['active_fraction']:.2f}, "
             f"blocked {report['blocked_fraction']:.2f}; elements {report['element_counts']})"]
    for r in report["rules"]:
        lines.append("  " + rule_text(r))
    cr = report["central_ray"]
    lines.append(f"  skin-to-target {cr['skin_to_target_mm']} mm, fat on the central ray {cr['fat_thickness_mm']} mm")
    return "\n".join(lines)
