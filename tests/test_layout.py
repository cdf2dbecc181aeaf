"""Size rules a new contributor relies on (issue 10): functions fit on a screen, and the batch loop stays a loop."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80  # docstring included
MAX_PROCESS_LINES = 60


def _function_lengths(folder):
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1


def test_no_function_over_80_lines_outside_tests():
    long = {name: n for folder in ("mrtherm", "gpu", "plugins") for name, n in _function_lengths(folder)
            if n > MAX_FUNCTION_LINES}
    assert long == {}


def test_process_is_a_short_loop_over_the_thermometer():
    lengths = {name.split(" ")[1]: n for name, n in _function_lengths("mrtherm/app")
               if name.startswith("mrtherm/app/process.py")}
    assert lengths["process"] <= MAX_PROCESS_LINES
