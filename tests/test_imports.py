"""Dependencies run one way, and no module imports itself back through others.

Read from the source (every ``import`` statement, at module level or inside a function), so a lazy import that
closes a cycle counts too. The layers, lowest first:

    base (errors, choices, optional, text, geometry, backend, the package root's version)
    io -> thermometry -> probes, cryo, evaluation, window, phantom, export -> app -> live, cohort, demo -> cli

A module may import its own layer and the layers below it; the napari plugin and the GPU package sit above all.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

LAYERS = [
    {"mrtherm", "errors", "choices", "optional", "text", "geometry", "backend"},
    {"io"},
    {"thermometry"},
    {"probes", "cryo", "evaluation", "window", "phantom", "export"},
    {"app"},
    {"live", "cohort", "demo"},
    {"cli"},
]


def _modules():
    out = {}
    for path in (ROOT / "mrtherm").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name, path, modules):
    """Every mrtherm module ``name`` imports (``from a import b`` counts ``a.b`` when that is a module)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_pkg else name.split(".")[:-1]
                base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module):
    top = module.split(".")[1] if "." in module else "mrtherm"
    return next(k for k, names in enumerate(LAYERS) if top in names)


def test_every_package_has_a_layer():
    for module in _graph():
        _layer(module)  # StopIteration names a package missing from LAYERS


def test_no_import_reaches_a_higher_layer():
    upward = sorted(f"{m} -> {t}" for m, targets in _graph().items() for t in targets if _layer(t) > _layer(m))
    assert upward == []


def test_no_import_cycle():
    graph = _graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_checker_sees_lazy_imports_and_cycles(tmp_path, monkeypatch):
    """The rule is not vacuous: a lazy import inside a function is an edge, and two such edges a cycle."""
    pkg = tmp_path / "mrtherm"
    (pkg / "io").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "io" / "__init__.py").write_text("")
    (pkg / "io" / "a.py").write_text("def f():\n    from mrtherm.io import b\n")
    (pkg / "io" / "b.py").write_text("from . import a\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert _graph()["mrtherm.io.a"] == {"mrtherm.io.b"} and _graph()["mrtherm.io.b"] == {"mrtherm.io.a"}
    try:
        test_no_import_cycle()
    except AssertionError:
        return
    raise AssertionError("the cycle a <-> b was not found")
