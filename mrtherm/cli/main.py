"""Command line entry point: the parser of every command and the one-line error contract.

User mistakes (bad files, bad parameters) end with one line on stderr naming the
file or argument and the problem, and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from mrtherm import __version__
from mrtherm.cli import cohort, demo, evaluate, export, live, phantom, probes, run, view, window
from mrtherm.cli.common import EXIT_USER_ERROR
from mrtherm.errors import MrthermError


def build_parser():
    """The ``mrtherm`` argument parser with every command."""
    p = argparse.ArgumentParser(prog="mrtherm", description="MR thermometry for MRgFUS bone ablation")
    p.add_argument("--version", action="version", version=f"mrtherm {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    phantom.add_parser(sub)
    demo.add_parser(sub)
    run.add_parser(sub)
    cohort.add_parser(sub)
    live.add_parser(sub)
    probes.add_parser(sub)
    evaluate.add_parser(sub)
    export.add_parser(sub)
    window.add_parsers(sub)
    view.add_parser(sub)
    return p


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv``); returns the exit status (2 for user errors)."""
    args = build_parser().parse_args(argv)
    # Library warnings (numerical edge cases, deprecations) never reach the terminal in Python's multi-line
    # format: mrtherm's own warnings go to report.json and the summary; anything else becomes one line.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = int(args.func(args) or 0)
        except MrthermError as exc:
            print(f"mrtherm: error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("mrtherm: interrupted", file=sys.stderr)
            return 130
    if not getattr(args, "quiet", False):
        for text in dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught):
            print(f"mrtherm: note: {text}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
