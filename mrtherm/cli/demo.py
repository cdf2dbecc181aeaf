"""``mrtherm demo``: phantom + thermometry + window check, with the errors against the ground truth."""

from __future__ import annotations

import os

from mrtherm import __version__
from mrtherm.cli.common import BACKENDS


def cmd_demo(args):
    """Run the demonstration and print its summary; returns the exit status."""
    from mrtherm.demo import run_demo
    from mrtherm.window.outputs import window_summary
    out = os.path.abspath(args.out)
    say = (lambda *_a: None) if args.quiet else print
    print(f"mrtherm {__version__} demo -> {out}")
    demo = run_demo(out, backend=args.backend, progress=not args.quiet, log=say)
    result, cmp_ = demo["result"], demo["comparison"]
    drift = result.report["drift"]
    print("\nsummary\n-------")
    print(result.summary())
    print(f"phase scaling recognised: {demo['exam'].phase_scale}; drift reference: {drift['mode']} "
          f"({drift['voxels']} voxels), drift removed up to {drift['max_abs_offset_c']:.1f} C")
    print("\nerror against ground truth (reliable voxels, all frames)")
    print(f"  RMSE {cmp_['rmse_c']:.3f} C (noise-predicted sigma_T median {cmp_['predicted_sd_c_median']:.3f} C), "
          f"bias {cmp_['bias_c']:+.3f} C")
    if cmp_["rmse_heated_c"] is not None:
        print(f"  RMSE where heated > 5 C: {cmp_['rmse_heated_c']:.3f} C")
    print(f"  peak {cmp_['peak_c']:.1f} C vs truth {cmp_['truth_peak_reliable_c']:.1f} C")
    print(f"  lesion (240 CEM43) {cmp_['lesion_240_ml']:.3f} mL vs truth {cmp_['truth_lesion_240_ml']:.3f} mL "
          "(both in voxels where PRF works)")
    missing = cmp_["truth_lesion_240_all_ml"] - cmp_["truth_lesion_240_ml"]
    print(f"  true lesion over all tissue {cmp_['truth_lesion_240_all_ml']:.3f} mL: {missing:.3f} mL of it lies in "
          "bone or fat, where PRF thermometry cannot measure (masked), so no map shows it")
    for w in result.report.get("trust", {}).get("warnings", []):  # what the run says about it, unprompted
        print(f"  warning: {w}")
    print("\nacoustic window of the planned sonication")
    print(window_summary(demo["window"]))
    print(f"outputs: {demo['run_dir']}, {demo['window_dir']}")
    return 0


def add_parser(sub):
    """Add the ``demo`` command to the sub-parsers ``sub``."""
    de = sub.add_parser("demo", help="phantom + thermometry run + summary against ground truth")
    de.add_argument("--out", default="mrtherm_demo", help="output folder (default ./mrtherm_demo)")
    de.add_argument("--backend", choices=BACKENDS, default="auto")
    de.add_argument("--quiet", action="store_true")
    de.set_defaults(func=cmd_demo)
