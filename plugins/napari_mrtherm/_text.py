"""Texts the operator reads (Qt-free): window rules, alarms, the on-canvas status line."""

from __future__ import annotations

import math

RULE_TITLES = {"active_fraction": "active transducer area", "central_ray_clear": "central ray",
               "focus_to_critical_structure": "focus to spinal cord / nerve root",
               "elements_crossing_critical_structures": "elements crossing cord / nerve roots",
               "critical_structure_beyond_focus": "cord / nerve root behind the focus",
               "scar_in_path": "scar in the beam path"}
REASON_WORDS = {"GAS": "gas", "METAL": "metal", "BONE_PREFOCAL": "bone before the focus",
                "CRITICAL_ANGLE": "bone hit beyond the critical angle", "SCAR": "scar", "NO_PASS_ZONE": "a no-pass zone",
                "CRITICAL_STRUCTURE": "the spinal cord / a nerve root", "OUT_OF_VOLUME": "outside the labelled volume"}


def _number(v, unit=""):
    if v is None:
        return "none"
    if isinstance(v, float):
        text = f"{v:.0%}" if unit.startswith("fraction") else f"{v:.3g}"
    else:
        text = str(v)
    return f"{text} mm" if unit.startswith("mm") and not text.endswith("mm") else text


def _threshold(rule) -> str:
    thr, unit = rule.get("threshold"), rule.get("unit", "")
    if isinstance(thr, dict):
        parts = []
        for key, value in thr.items():
            if value is None:
                continue
            words = key.replace("_", " ")
            shown = f"{value:.0%}" if unit.startswith("fraction") else f"{value:g} mm" if "mm" in key or unit == "mm" \
                else f"{value:g}"
            parts.append(f"{words} {shown}" if words not in ("pass", "warn") else f"{words} at >= {shown}")
        return "; ".join(parts)
    return str(thr) if thr is not None else ""


def rule_line(rule) -> str:
    """One readable line per window rule: result, what, value with unit, threshold."""
    title = RULE_TITLES.get(rule["rule"], rule["rule"].replace("_", " "))
    value = rule.get("value")
    if rule["rule"] == "central_ray_clear":
        reasons = [r for r in (value or []) if r != "clear"]
        if not reasons:
            body = "clear"
        else:
            what = ", ".join(REASON_WORDS.get(r, r.lower().replace("_", " ")) for r in reasons)
            body = f"blocked by {what}" if rule["result"] == "FAIL" else f"not blocked; passes near {what} (degrades)"
        return f"{rule['result']}  {title}: {body}"
    if isinstance(value, list):
        shown = "; ".join(str(v) for v in value)
    else:
        shown = _number(value, rule.get("unit", ""))
    thr = _threshold(rule)
    return f"{rule['result']}  {title}: {shown}" + (f"  ({thr})" if thr else "")


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
    from mrtherm.thermometry.watch import format_alarm
    return "\n".join(format_alarm(a) for a in alarms)


def status_lines(frame, n_frames, time_s, peak_c, alarms, legend="", readout="") -> tuple[str, bool]:
    """The on-canvas text at one frame and whether an alarm is active (then drawn in red).

    Alarms are those whose time is at or before the frame's time: the view never shows the future.
    """
    head = f"t = {time_s:.1f} s  (frame {frame + 1}/{n_frames})"
    if peak_c is not None and math.isfinite(peak_c):
        head += f"   peak {peak_c:.1f} °C"
    lines = [head]
    active = [a for a in alarms or [] if a["time_s"] <= time_s + 1e-6]
    for a in active:
        unit = "°C" if a["quantity"] == "temperature" else a["unit"]
        lines.append(f"ALARM {a['structure']}: {a['quantity']} {a['value']:.3g} {unit} >= {a['threshold']:g} {unit} "
                     f"at {a['time_s']:.1f} s")
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
