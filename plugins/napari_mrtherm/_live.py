"""Following a live treatment folder (Qt-free): a snapshot whenever ``mrtherm live`` has processed a new frame.

``mrtherm live`` replaces every map and then report.json after each frame; a
snapshot is taken when report.json's ``frames_processed`` (or its sonication)
changes, reading the maps named there. A map replaced while it is read (the
writer is one frame ahead) is simply read again at the next poll.
"""

from __future__ import annotations

import json
import os

from mrtherm.thermometry.watch import format_alarm

from . import _model as m

LIVE_MAPS = ("anatomy.nii.gz", "temperature.nii.gz", "dose_cem43.nii.gz")


def is_live_report(doc) -> bool:
    """True for the report.json of ``mrtherm live``."""
    return isinstance(doc, dict) and doc.get("mode") == "live" and "frames_processed" in doc


class LiveFolder:
    """Polls one live output folder.

    Parameters
    ----------
    folder : str
    """

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.seen = None

    def poll(self):
        """A new snapshot ``{"report", "maps": {name: (array zyx, affine)}}``, or None when nothing changed."""
        try:
            with open(os.path.join(self.folder, "report.json"), encoding="utf-8") as fh:
                report = json.load(fh)
        except (OSError, ValueError):
            return None
        if not is_live_report(report):
            return None
        key = (report["frames_processed"], (report.get("current") or {}).get("sonication"))
        if key == self.seen:
            return None
        maps = {}
        names = list(LIVE_MAPS) + [n for n in report.get("outputs", []) if n.startswith("lesion_")]
        for name in names:
            path = os.path.join(self.folder, name)
            if not os.path.exists(path):
                continue
            try:
                maps[name] = m.load_zyx(path)
            except (OSError, ValueError, EOFError):
                return None  # replaced while read: the next poll reads it again
        self.seen = key
        return {"report": report, "maps": maps}


def status_text(report) -> tuple[str, bool]:
    """Canvas text for a live report (frame time, sonication, current peak, alarms) and whether an alarm is on."""
    cur = report.get("current") or {}
    peak = cur.get("peak_temperature_c")
    lines = [f"LIVE  sonication {cur.get('sonication', '?')}  frame {cur.get('frame', '?')}  "
             f"t = {cur.get('time_s', 0.0):.1f} s  peak {'n/a' if peak is None else f'{peak:.1f} °C'}",
             f"frames processed: {report['frames_processed']}"]
    dose = (report.get("cumulative") or {}).get("max_dose_cem43_min")
    if dose is not None:
        lines.append(f"cumulative max dose {dose:.3g} CEM43 min")
    alarms = report.get("alarms") or []
    lines += [f"sonication {a.get('sonication', '?')}: {format_alarm(a, celsius='°C')}" for a in alarms[-3:]]
    return "\n".join(lines), bool(alarms)
