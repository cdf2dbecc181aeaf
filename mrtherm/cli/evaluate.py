"""``mrtherm evaluate``: predicted ablation against the non-perfused volume (NPV)."""

from __future__ import annotations

import json
import os

from mrtherm.cli.common import check_out_dir


def cmd_evaluate(args):
    """Write report.json, evaluation maps and a figure into ``--out``; print the figures."""
    from mrtherm.evaluation.npv import evaluate, write_figure
    from mrtherm.io import atomic, niftiio
    from mrtherm.thermometry.result import finite_json
    check_out_dir(args.out, [os.path.join(args.run, "report.json"), args.npv])
    report, maps, figure = evaluate(args.run, args.npv)
    with atomic.staged(args.out) as stage:
        for name, label in maps.items():
            niftiio.save_volume(label, figure["affine"], os.path.join(stage, name))
        outputs = list(maps) + ["report.json"]
        if not args.no_figures:
            os.makedirs(os.path.join(stage, "figures"))
            write_figure(os.path.join(stage, "figures", "evaluation.png"), figure)
            outputs.append("figures/evaluation.png")
        report["outputs"] = sorted(outputs)
        with open(os.path.join(stage, "report.json"), "w", encoding="utf-8") as fh:
            json.dump(finite_json(report), fh, indent=2, allow_nan=False)
    if not args.quiet:
        print(f"NPV {report['npv_ml']:.3f} mL")
        for name, m in report["levels"].items():
            print(f"{name}: predicted {m['lesion_ml']:.3f} mL, Dice {m['dice']:.3f}, HD95 {m['hd95_mm']:.2f} mm, "
                  f"under-treatment {m['under_treatment_ml']:.3f} mL, over-treatment {m['over_treatment_ml']:.3f} mL")
    return 0


def add_parser(sub):
    """Add the ``evaluate`` command to the sub-parsers ``sub``."""
    p = sub.add_parser("evaluate", help="predicted ablation against a non-perfused volume (NPV) segmentation")
    p.add_argument("--run", required=True, help="a folder written by mrtherm run")
    p.add_argument("--npv", required=True, metavar="NPV.nii.gz", help="non-perfused volume mask (any grid)")
    p.add_argument("--out", required=True)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)
