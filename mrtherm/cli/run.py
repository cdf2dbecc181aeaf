"""``mrtherm run``: temperature and dose maps of one exam (NIfTI magnitude/phase, real/imaginary, or DICOM).

Thin over :func:`mrtherm.app.driver.run`: the flags come from the option table (:mod:`mrtherm.app.options`), the
parsed arguments become a :class:`RunRequest`, and the summary it returns is printed.
"""

from __future__ import annotations

import sys

from mrtherm.app.options import add_options, params_from_request, request_from_namespace

RUN_GROUPS = ("input", "acquisition", "processing", "probes", "cryo", "output")


def params_from_args(args):
    """ThermometryParams with the fields the command line set (shared with ``mrtherm live``)."""
    return params_from_request(args)


def cmd_run(args):
    """Process one exam into ``--out`` and print the summary; returns the exit status."""
    from mrtherm.app.driver import run  # noqa: PLC0415
    summary = run(request_from_namespace(args))
    if not args.quiet:
        print(f"outputs written to {summary.out_dir}")
        print("\n".join(summary.lines()))
    # warnings go to stderr; those about blind spots and implausible heating even with --quiet (never silent)
    trust = set(summary.trust_warnings)
    for w in summary.warnings:
        if not args.quiet or w in trust:
            print(f"warning: {w}", file=sys.stderr)
    return 0


def add_parser(sub):
    """Add the ``run`` command to the sub-parsers ``sub``."""
    r = sub.add_parser("run", help="temperature and dose maps from a magnitude/phase exam")
    r.add_argument("--out", required=True, help="output folder (not an input folder)")
    add_options(r, RUN_GROUPS)
    r.set_defaults(func=cmd_run)



