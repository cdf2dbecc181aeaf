"""Probe section of report.json and the probe figures (``mrtherm run --probes``, ``mrtherm probes``)."""

from __future__ import annotations

import os
import re

import numpy as np

from mrtherm.probes.analysis import compare, corners, probe_alarms, readings_summary, sample_series, sample_volume


def analyse(probes: dict, params, *, series=None, sd_map=None, affine=None, frame_times_s=None, cold_alarm_c=None):
    """Per-probe figures, MR at the probe (when a temperature series is given) and alarms.

    Parameters
    ----------
    probes : dict of str to Probe
    params : ThermometryParams
        Alarm thresholds.
    series : ndarray (t, z, y, x) or str, optional
        MR temperature (C) in memory or as a 4-D NIfTI path.
    sd_map : ndarray, shape (z, y, x), optional
        Temperature SD (C) for the MR uncertainty at the probe.
    affine : (4, 4) array, optional
    frame_times_s : ndarray, optional
    cold_alarm_c : float, optional

    Returns
    -------
    section : dict
        report.json ``probes``: ``rule`` and one entry per probe.
    alarms : list of dict
    curves : list of dict
        For :func:`write_figures`.
    """
    entries, alarms, curves = [], [], []
    mr_at = _mr_series(probes, series, sd_map, affine)
    for probe in probes.values():
        entry = {"name": probe.name, "watch": probe.watch,
                 "position_mm": None if probe.position_mm is None else [float(v) for v in probe.position_mm],
                 **readings_summary(probe)}
        curve = {"name": probe.name, "times_s": probe.times_s, "temperature_c": probe.temperature_c}
        if probe.name in mr_at:
            entry["mr"], curve["mr"] = _mr_part(probe, *mr_at[probe.name], sd_map, frame_times_s)
        probe_al = probe_alarms(probe, params, cold_alarm_c)
        entry["alarms"] = probe_al
        alarms += probe_al
        entries.append(entry)
        curves.append(curve)
    rule = ("MR at the probe: trilinear interpolation of each frame (masked corners dropped, weights renormalised); "
            "bias and RMSE = MR - probe on the MR frames inside the log's span; lag = cross-correlation peak "
            "(probe(t + lag) ~ MR(t)); probe dose = exact CEM43 of the readings")
    return {"rule": rule, "cold_alarm_c": cold_alarm_c, "probes": entries}, alarms, curves


def _mr_series(probes, series, sd_map, affine):
    """``{name: (placement or None, MR curve or None)}`` of the positioned probes, the series read once."""
    if series is None:
        return {}
    shape_zyx = np.shape(sd_map) if sd_map is not None else tuple(np.shape(series)[1:])
    found = {p.name: corners(affine, p.position_mm, shape_zyx) for p in probes.values()
             if p.position_mm is not None and p.times_s.size}
    inside = [name for name, f in found.items() if f is not None]
    curves = dict(zip(inside, sample_series(series, [found[n] for n in inside]))) if inside else {}
    return {name: (f, curves.get(name)) for name, f in found.items()}


def _mr_part(probe, found, mr, sd_map, frame_times_s):
    if found is None:
        return {"inside_grid": False}, None
    start, w = found
    mr = mr[:len(frame_times_s)]
    sd = sample_volume(sd_map, start, w) if sd_map is not None else float("nan")
    times = np.asarray(frame_times_s, dtype=np.float64)
    stats = compare(times, mr, probe.times_s, probe.temperature_c)
    inside = (times >= probe.times_s[0]) & (times <= probe.times_s[-1])
    at_frames = np.where(inside, np.interp(times, probe.times_s, probe.temperature_c), np.nan)
    part = {"inside_grid": True, "voxel_zyx": [int(v) for v in start], "sd_c": sd if np.isfinite(sd) else None,
            "probe_at_frames_c": [None if not np.isfinite(v) else float(v) for v in at_frames],
            "peak_c": float(np.nanmax(mr)) if np.isfinite(mr).any() else None,
            "temperature_c": [None if not np.isfinite(v) else float(v) for v in mr], **stats}
    return part, {"times_s": times, "temperature_c": mr, "sd_c": sd}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:64] or "probe"


def write_figures(folder, curves, params, cold_alarm_c=None) -> list:
    """One PNG per probe: readings and, when known, MR at the probe with its SD; alarm thresholds.

    Parameters
    ----------
    folder : str
        ``figures`` folder (created).
    curves : list of dict
        From :func:`analyse`.
    params : ThermometryParams
    cold_alarm_c : float, optional

    Returns
    -------
    list of str
        File names written.
    """
    from mrtherm.thermometry.figures import new_figure  # noqa: PLC0415
    os.makedirs(folder, exist_ok=True)
    names = []
    for c in curves:
        fig, ax = new_figure((7, 4), dpi=100)
        ax.plot(c["times_s"], c["temperature_c"], "-", color="k", lw=1.2, label="probe readings")
        mr = c.get("mr")
        if mr is not None:
            sd = mr["sd_c"] if np.isfinite(mr["sd_c"]) else 0.0
            ax.errorbar(mr["times_s"], mr["temperature_c"], yerr=sd, fmt="o", ms=4, color="C3", capsize=2,
                        label=f"MR at the probe (± {sd:.2f} °C)")
        ax.axhline(params.alarm_temperature_c, color="C1", ls="--", lw=0.8,
                   label=f"{params.alarm_temperature_c:g} °C alarm")
        if cold_alarm_c is not None:
            ax.axhline(cold_alarm_c, color="C0", ls="--", lw=0.8, label=f"{cold_alarm_c:g} °C cold alarm")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("temperature (°C)")
        ax.set_title(f"probe {c['name']}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"probe_{_safe(c['name'])}.png"
        fig.savefig(os.path.join(folder, name))
        names.append(name)
    return names
