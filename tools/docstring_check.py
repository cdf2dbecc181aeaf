"""Check the docstrings of the core's public functions and classes.

    python tools/docstring_check.py

Every public function and class of ``mrtherm/`` has a docstring. In the physics, rule and backend modules
(:data:`NUMPYDOC_PATHS`, the main API) a public function with parameters also has a numpydoc ``Parameters``
section and one that returns a value a ``Returns`` section (properties excepted). ``tests/test_docs.py`` runs this.
"""

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
NUMPYDOC_PATHS = ("mrtherm/thermometry/", "mrtherm/window/", "mrtherm/live/", "mrtherm/probes/", "mrtherm/cryo/",
                  "mrtherm/evaluation/", "mrtherm/cohort/", "mrtherm/geometry.py", "mrtherm/backend.py")


def _public(tree):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield node
            if isinstance(node, ast.ClassDef):
                yield from (n for n in node.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_"))


def _returns_value(fn) -> bool:
    """A ``return <value>`` in the function itself (not in a nested function)."""
    stack = list(fn.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Return) and node.value is not None:
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))
    return False


def problems(node, numpydoc: bool) -> list:
    """What the docstring of ``node`` lacks."""
    doc = ast.get_docstring(node)
    if not doc:
        return ["no docstring"]
    if not numpydoc or not isinstance(node, ast.FunctionDef):
        return []
    out = []
    args = [a.arg for a in node.args.args + node.args.kwonlyargs if a.arg not in ("self", "cls")]
    if (args or node.args.vararg or node.args.kwarg) and "Parameters\n" not in doc:
        out.append("no Parameters section")
    is_property = any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)
    if _returns_value(node) and not is_property and "Returns\n" not in doc and "Yields\n" not in doc:
        out.append("no Returns section")
    return out


def main() -> int:
    missing = []
    for path in sorted((ROOT / "mrtherm").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        numpydoc = rel.startswith(NUMPYDOC_PATHS)
        for node in _public(ast.parse(path.read_text(encoding="utf-8"))):
            missing += [f"{rel}:{node.lineno} {node.name}: {p}" for p in problems(node, numpydoc)]
    print("\n".join(missing) or "every public function and class has its docstring sections")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
