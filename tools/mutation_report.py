"""Write docs/mutation.md from mutmut's results: killed / total per module and every survivor with its note.

    make mutation          # mutmut run, then this script

Notes on survivors (why a mutant is equivalent, or which test now kills it) live in
``docs/mutation_notes.json`` as ``{"<mutant name>": {"note": "...", "diff": "<the mutant's diff>"}}``. mutmut numbers
the mutants of a function in order, so a name can point at another mutant once the function changes: a note
applies only while its recorded diff is the mutant's diff. Survivors without a matching note are listed as open.

    python tools/mutation_report.py --record NAME "note"   # store a note with the mutant's current diff
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


def note_for(entry, diff: str) -> str:
    """The survivor's note if it was written for this very mutant, else why it is open."""
    if entry is None:
        return "open: no test kills it yet"
    if entry["diff"] != diff:
        return "open: the note on record was written for another mutant of this name (the function changed)"
    return entry["note"]


def record(name: str, note: str) -> None:
    """Store ``note`` for mutant ``name`` together with its current diff."""
    path = ROOT / "docs" / "mutation_notes.json"
    notes = json.loads(path.read_text()) if path.exists() else {}
    notes[name] = {"note": note, "diff": diff_of(name)}
    path.write_text(json.dumps(notes, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def main():
    rows = results()
    notes_path = ROOT / "docs" / "mutation_notes.json"
    notes = json.loads(notes_path.read_text()) if notes_path.exists() else {}
    per = collections.defaultdict(collections.Counter)
    for module, _name, status in rows:
        per[module][status] += 1
    lines = ["# Mutation testing", "",
             f"`make mutation` (mutmut {_version()}), {_dt.date.today().isoformat()}. Modules and tests: "
             "`[tool.mutmut]` in pyproject.toml. *timeout*: the mutant's tests hung and were stopped by "
             "`tools/mutmut_watchdog.sh` (no CPU for 40 s); inconclusive, not counted as killed. *not run*: the run "
             "stopped before reaching them. **killed %** = killed / (killed + survived).", "",
             "| module | killed | survived | timeout | not run | total | killed % |",
             "|---|---|---|---|---|---|---|"]
    tk = tsv = tt = 0
    for module in sorted(per):
        c = per[module]
        total = sum(c.values())
        other = total - c["killed"] - c["survived"] - c["timeout"]
        tk, tsv, tt = tk + c["killed"], tsv + c["survived"], tt + total
        judged = c["killed"] + c["survived"]
        pct = f"{100 * c['killed'] / judged:.0f}" if judged else "-"
        lines.append(f"| {module} | {c['killed']} | {c['survived']} | {c['timeout']} | {other} | {total} | {pct} |")
    lines.append(f"| **all** | {tk} | {tsv} | | | {tt} | **{100 * tk / max(tk + tsv, 1):.0f}** |")
    status = ROOT / "docs" / "mutation_status.md"
    if status.exists():
        lines += ["", status.read_text(encoding="utf-8").strip()]
    lines += ["", "## Survivors", ""]
    for module, name, status in rows:
        if status in ("survived", "no tests"):
            diff = diff_of(name)
            lines += [f"- `{name}` ({status}): {note_for(notes.get(name), diff)}", "", "```diff", diff, "```", ""]
    (ROOT / "docs" / "mutation.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{tk} killed, {tsv} survived of {tt}; docs/mutation.md written")


def _version():
    try:
        from importlib.metadata import version
        return version("mutmut")
    except Exception:
        return "?"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--record"]:
        record(sys.argv[2], sys.argv[3])
    else:
        main()
