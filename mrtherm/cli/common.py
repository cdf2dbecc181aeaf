"""Argument types and checks shared by the commands."""

from __future__ import annotations

import argparse
import os

from mrtherm.errors import MrthermError

EXIT_USER_ERROR = 2
BACKENDS = ("auto", "numpy", "cupy")


def float_list(text: str):
    """``"240,40"`` to ``[240.0, 40.0]`` (argparse type)."""
    try:
        return [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def target_point(text: str):
    """``X,Y,Z`` (world mm) as a tuple, or a path to a window report / transducer JSON (argparse type)."""
    if os.path.exists(text) or text.lower().endswith(".json"):
        return text
    values = float_list(text)
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected X,Y,Z in world mm or a JSON file, got {text!r}")
    return tuple(values)


def frame_times(text: str):
    """Comma-separated times, or a text file with one time (s) per line or comma-separated."""
    if os.path.exists(text):
        try:
            with open(text, encoding="utf-8") as fh:
                return float_list(fh.read().replace("\n", ","))
        except argparse.ArgumentTypeError:
            raise MrthermError(f"{text}: frame times file does not hold numbers") from None
    return float_list(text)


def check_out_dir(out: str, inputs):
    """Refuse an output that is a file, or the folder of an input (outputs would mix with inputs).

    Parameters
    ----------
    out : str
        Output folder asked for (``--out``); it may not exist yet.
    inputs : iterable of str or None
        Input paths; ``None`` entries (optional inputs not given) are skipped.

    Raises
    ------
    MrthermError
        ``out`` is an existing file, or the folder that holds one of ``inputs``.
    """
    out_abs = os.path.abspath(out)
    if os.path.exists(out_abs) and not os.path.isdir(out_abs):
        raise MrthermError(f"{out}: output exists and is not a folder")
    for p in inputs:
        if p is None:
            continue
        if os.path.abspath(os.path.dirname(os.path.abspath(p))) == out_abs:
            raise MrthermError(f"{out}: output folder is the folder of input {p}; choose another --out "
                               "(outputs would overwrite or mix with inputs)")
