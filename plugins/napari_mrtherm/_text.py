"""Texts the operator reads (Qt-free): window rules, alarms, the on-canvas status line."""

from __future__ import annotations

import math

from mrtherm.thermometry.watch import format_alarm  # one alarm formatter for the terminal, canvas and docks
from mrtherm.window.outputs import rule_text as rule_line  # one formatter for the terminal and the widget


def verdict_line(report) -> str:
    """Verdict, active and blocked fractions of the transducer area."""
    return (f"verdict {report['verdict']}: active area {report['active_fraction']:.0%}, "
            f"blocked {report['blocked_fraction']:.0%} ({report['transducer']['elements']} elements)")


def alarm_text(report) -> str:
    """The run's alarms, one line each ('alarms: none' when there are none, '' without a report)."""
    if not report:
        return ""
    alarms = report.get("alarms") or []
    if not alarms:
        return "alarms: none"
    return "\n".join(format_alarm(a, celsius="°C") for a in alarms)


def status_lines(frame, n_frames, time_s, peak_c, alarms, legend="", readout="", trust=(),
                 target=None) -> tuple[str, bool]:
    """The on-canvas text at one frame and whether an alarm is active (then drawn in red).

    Alarms are those whose time is at or before the frame's time: the view never shows the future. ``trust``: the
    run's blind-spot and plausibility warnings (report.json ``trust``), one line each; ``target``: report.json
    ``target``, whose per-frame measurement is shown at this frame.
    """
    head = f"t = {time_s:.1f} s  (frame {frame + 1}/{n_frames})"
    if peak_c is not None and math.isfinite(peak_c):
        head += f"   peak {peak_c:.1f} °C"
    lines = [head]
    active = [a for a in alarms or [] if a["time_s"] <= time_s + 1e-6]
    lines += [format_alarm(a, celsius="°C") for a in active]
    if target and frame < len(target.get("measured_per_frame") or []):
        seen = target["measured_per_frame"][frame]
        fraction = target["margin_measured_fraction_per_frame"][frame]
        lines.append(f"target {'measured' if seen else 'NOT MEASURED'} at this frame; "
                     f"{100 * fraction:.0f} % of the {target['margin_mm']:g} mm margin measured")
    lines += [f"warning: {w}" for w in trust or ()]
    if legend:
        lines.append(legend)
    if readout:
        lines.append(readout)
    return "\n".join(lines), bool(active)


def readout_line(temperature_c=None, dose_cem43_min=None, structure=None) -> str:
    """Cursor readout with units and the tissue name."""
    parts = []
    if temperature_c is not None and math.isfinite(temperature_c) and temperature_c > 0:
        parts.append(f"{temperature_c:.1f} °C")
    elif temperature_c is not None:
        parts.append("no temperature (masked)")
    if dose_cem43_min is not None and math.isfinite(dose_cem43_min):
        parts.append(f"{dose_cem43_min:.3g} CEM43 min")
    if structure:
        parts.append(structure)
    return "cursor: " + ", ".join(parts) if parts else ""
