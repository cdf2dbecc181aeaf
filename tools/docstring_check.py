"""List public functions and classes of the core without a docstring (numpydoc sections are checked by review).

    python tools/docstring_check.py [--strict]

With ``--strict`` also lists public functions with parameters whose docstring has no ``Parameters`` section.
"""

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main(strict=False):
    missing = []
    for path in sorted((ROOT / "mrtherm").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            nodes = [node] + ([n for n in node.body if isinstance(n, ast.FunctionDef)] if isinstance(node, ast.ClassDef) else [])
            for n in nodes:
                if not isinstance(n, (ast.FunctionDef, ast.ClassDef)) or n.name.startswith("_"):
                    continue
                doc = ast.get_docstring(n)
                rel = path.relative_to(ROOT)
                if not doc:
                    missing.append(f"{rel}:{n.lineno} {n.name}: no docstring")
                elif strict and isinstance(n, ast.FunctionDef) and len(n.args.args) > 1 and "Parameters" not in doc \
                        and "``" not in doc:
                    missing.append(f"{rel}:{n.lineno} {n.name}: no Parameters section")
    print("\n".join(missing) or "every public function and class has a docstring")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main("--strict" in sys.argv))
