"""``mrtherm transducer`` and ``mrtherm window`` commands."""

from __future__ import annotations

import argparse
import os

from mrtherm.errors import MrthermError, ParameterError


def _vector(text: str, name: str):
    try:
        v = [float(x) for x in text.split(",")]
    except ValueError:
        raise ParameterError(f"{name} must be three comma-separated numbers, got {text!r}") from None
    if len(v) != 3:
        raise ParameterError(f"{name} must be three comma-separated numbers, got {text!r}")
    import numpy as np
    return np.asarray(v)


def cmd_transducer(args):
    """Write a spherical-cap transducer JSON; returns the exit status."""
    from mrtherm.window.transducer import spherical_cap
    tr = spherical_cap(args.radius_mm, args.aperture_mm, args.elements, _vector(args.focus, "--focus"),
                       _vector(args.axis, "--axis"), args.frequency_hz, args.name)
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    tr.save(args.out)
    print(f"{tr.n_elements} elements, total area {tr.areas_mm2.sum():.0f} mm2 -> {args.out}")
    return 0


def cmd_window(args):
    """Check the acoustic window of a target and write its report; returns the exit status."""
    from mrtherm.io import atomic
    from mrtherm.io.labels import LabelTable
    from mrtherm.window.transducer import load_transducer
    from mrtherm.window import WindowConfig, check_window, feasibility_map, load_labels
    from mrtherm.window.outputs import window_summary, write_window_outputs
    import numpy as np
    out = os.path.abspath(args.out)
    for p in (args.labels, args.transducer):
        if os.path.abspath(os.path.dirname(os.path.abspath(p))) == out:
            raise MrthermError(f"{args.out}: output folder is the folder of input {p}; choose another --out")
    table = LabelTable.from_json(args.label_table) if args.label_table else LabelTable()
    cfg = WindowConfig(critical_angle_deg=args.critical_angle_deg, scar_blocks=not args.scar_warns)
    if args.active_pass is not None:
        cfg.active_fraction_pass = args.active_pass
    if args.active_warn is not None:
        cfg.active_fraction_warn = args.active_warn
    scene = load_labels(args.labels, table, cfg)
    transducer = load_transducer(args.transducer)
    report = check_window(scene, transducer, _vector(args.target, "--target"), backend=args.backend)
    report["inputs"] = {"labels": os.path.abspath(args.labels), "transducer": os.path.abspath(args.transducer)}
    feas = None
    if args.feasibility:
        label = _feasibility_label(args, table)
        mask = scene.labels == label
        if not mask.any():
            raise MrthermError(f"{args.labels}: no voxel with label {label} for the feasibility map")
        feas = feasibility_map(scene, transducer, mask, backend=args.backend, progress=not args.quiet)
        report["feasibility"] = {"label": label, "voxels": int(mask.sum()),
                                 "active_fraction_min": float(np.nanmin(feas)),
                                 "active_fraction_max": float(np.nanmax(feas)),
                                 "file": "feasibility.nii.gz"}
    with atomic.staged(out) as stage:
        write_window_outputs(stage, report, scene, feas, transducer=transducer)
    if not args.quiet:
        print(window_summary(report))
    return 0


def _feasibility_label(args, table) -> int:
    """``--feasibility-label``, else the value of the table's target-lesion class (found by name)."""
    from mrtherm.io.labels import TARGET_NAME
    if args.feasibility_label is not None:
        return args.feasibility_label
    found = table.values_named(TARGET_NAME)
    if len(found) != 1:
        where = args.label_table or "the default label table"
        raise ParameterError(f"{where}: {len(found)} classes named {TARGET_NAME!r}; pass --feasibility-label")
    return found[0]


class _RuleDefaultsHelp(argparse.HelpFormatter):
    """Fills ``{NAME}`` fields of the window command's help from the rule constants when the help is shown.

    The constants live beside the rules (:mod:`mrtherm.window.scene`, :mod:`mrtherm.window.acoustics`), whose
    modules load NumPy; reading them only when help is printed keeps the parser light (tests/test_cli_startup.py).
    """

    def _get_help_string(self, action):
        text = super()._get_help_string(action)
        return text.format(**_rule_defaults()) if text and "{" in text else text


def _rule_defaults() -> dict:
    from mrtherm.io.labels import TARGET_NAME, LabelTable
    from mrtherm.window import acoustics, scene
    soft, bone = acoustics.SPEED_SOFT_TISSUE_M_S, acoustics.SPEED_CORTICAL_BONE_M_S
    return {"SOFT": f"{soft:g}", "BONE": f"{bone:g}", "ANGLE": f"{acoustics.critical_angle_deg(soft, bone):.1f}",
            "PASS": f"{scene.PASS_ACTIVE_AREA_FRACTION:g}", "WARN": f"{scene.WARN_ACTIVE_AREA_FRACTION:g}",
            "TARGET_NAME": TARGET_NAME, "TARGET": LabelTable().values_named(TARGET_NAME)[0]}


def add_parsers(sub):
    """Add the ``transducer`` and ``window`` commands to the sub-parsers ``sub``."""
    t = sub.add_parser("transducer", help="write a spherical-cap phased-array transducer JSON")
    t.add_argument("--out", required=True, help="output JSON file")
    t.add_argument("--radius-mm", type=float, required=True, help="radius of curvature (focal length), mm")
    t.add_argument("--aperture-mm", type=float, required=True, help="rim diameter, mm")
    t.add_argument("--elements", type=int, required=True)
    t.add_argument("--focus", required=True, metavar="X,Y,Z", help="geometric focus, world mm")
    t.add_argument("--axis", required=True, metavar="AX,AY,AZ", help="beam direction towards the focus")
    t.add_argument("--frequency-hz", type=float, default=1.0e6)
    t.add_argument("--name", default="spherical cap")
    t.set_defaults(func=cmd_transducer)

    w = sub.add_parser("window", help="acoustic-window check of a target through the anatomy labels",
                       formatter_class=_RuleDefaultsHelp)
    w.add_argument("--labels", required=True, metavar="LABELS.nii.gz")
    w.add_argument("--transducer", required=True, metavar="T.json")
    w.add_argument("--target", required=True, metavar="X,Y,Z", help="focus in world mm")
    w.add_argument("--out", required=True)
    w.add_argument("--label-table", metavar="TABLE.json")
    w.add_argument("--feasibility", action="store_true", help="also write feasibility.nii.gz over a target label")
    w.add_argument("--feasibility-label", type=int, help="label of the candidate foci (default: the label table's "
                   "{TARGET_NAME!r} class, {TARGET} in the default table)")
    w.add_argument("--critical-angle-deg", type=float, help="default asin({SOFT}/{BONE}) = {ANGLE}")
    w.add_argument("--scar-warns", action="store_true", help="scars degrade instead of block")
    w.add_argument("--active-pass", type=float, help="active fraction for PASS (default {PASS})")
    w.add_argument("--active-warn", type=float, help="active fraction for WARN (default {WARN})")
    w.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="numpy")
    w.add_argument("--quiet", action="store_true")
    w.set_defaults(func=cmd_window)
