"""Write docs/mutation.md from mutmut's results: killed / total per module and every survivor with its note.

    make mutation          # mutmut run, then this script

Notes on survivors (why a mutant is equivalent, or which test now kills it) live in
``docs/mutation_notes.json`` as ``{"<mutant name>": "note"}``; survivors without a note are listed as open.
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
MUTMUT = [sys.executable, "-m", "mutmut"]


def results():
    out = subprocess.run(MUTMUT + ["results", "--all", "true"], cwd=ROOT, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        if ":" not in line:
            continue
        name, status = (s.strip() for s in line.rsplit(":", 1))
        module = name.split(".x_")[0].split(".x\u01c1")[0]
        rows.append((module, name, status))
    return rows


def diff_of(name: str) -> str:
    out = subprocess.run(MUTMUT + ["show", name], cwd=ROOT, capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines()
                     if line.startswith(("-", "+")) and not line.startswith(("---", "+++")))


def main():
    rows = results()
    notes_path = ROOT / "docs" / "mutation_notes.json"
    notes = json.loads(notes_path.read_text()) if notes_path.exists() else {}
    per = collections.defaultdict(collections.Counter)
    for module, _name, status in rows:
        per[module][status] += 1
    lines = ["# Mutation testing", "",
             f"`make mutation` (mutmut {_version()}), {_dt.date.today().isoformat()}. Modules and tests: "
             "`[tool.mutmut]` in pyproject.toml. *timeout*: the mutant's tests hung (a forked worker deadlocks when a "
             "mutant sends a test down the GPU probe; stopped by `tools/mutmut_watchdog.sh` after 40 s without CPU); "
             "*detected* = killed + timeout; *strict* = killed only.", "",
             "| module | killed | timeout | survived | not run | total | detected % | strict % |",
             "|---|---|---|---|---|---|---|---|"]
    tk = tt = ts = 0
    for module in sorted(per):
        c = per[module]
        detected = c["killed"] + c["timeout"]
        total = sum(c.values())
        other = total - detected - c["survived"]
        tk, tt, ts = tk + detected, tt + total, ts + c["killed"]
        lines.append(f"| {module} | {c['killed']} | {c['timeout']} | {c['survived']} | {other} | {total} | "
                     f"{100 * detected / total:.0f} | {100 * c['killed'] / total:.0f} |")
    lines.append(f"| **all** | {ts} | {tk - ts} | | | {tt} | **{100 * tk / max(tt, 1):.0f}** | "
                 f"{100 * ts / max(tt, 1):.0f} |")
    lines += ["", "## Survivors", ""]
    for module, name, status in rows:
        if status in ("survived", "no tests"):
            note = notes.get(name, "open: no test kills it yet")
            lines += [f"- `{name}` ({status}): {note}", "", "```diff", diff_of(name), "```", ""]
    (ROOT / "docs" / "mutation.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{tk}/{tt} killed ({100 * tk / max(tt, 1):.1f} %); docs/mutation.md written")


def _version():
    try:
        from importlib.metadata import version
        return version("mutmut")
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
