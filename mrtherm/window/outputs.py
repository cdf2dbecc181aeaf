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


def window_summary(report) -> str:
    """A few lines for the terminal: verdict, rules, central-ray depth and fat."""
    lines = [f"acoustic window: {report['verdict']}  (active fraction {report['active_fraction']:.2f}, "
             f"blocked {report['blocked_fraction']:.2f}; elements {report['element_counts']})"]
    for r in report["rules"]:
        lines.append(f"  {r['result']:4s} {r['rule']}: {r['value']}")
    cr = report["central_ray"]
    lines.append(f"  skin-to-target {cr['skin_to_target_mm']} mm, fat on the central ray {cr['fat_thickness_mm']} mm")
    return "\n".join(lines)
