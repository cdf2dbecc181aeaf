"""``mrtherm probes``: probe logs alone (RF or microwave ablation under CT: readings, no MR)."""

from __future__ import annotations

import json
import os

from mrtherm.cli.common import check_out_dir


def cmd_probes(args):
    """Per-probe peak, exact CEM43 dose and alarms into ``--out`` (report.json, one figure per probe)."""
    from mrtherm.io import atomic
    from mrtherm.probes import read_probe_log, read_probe_positions
    from mrtherm.probes.report import analyse, write_figures
    from mrtherm.thermometry.params import ThermometryParams
    from mrtherm.thermometry.result import finite_json
    from mrtherm.thermometry.watch import format_alarm
    check_out_dir(args.out, [args.log, args.probe_positions])
    probes = read_probe_log(args.log, args.probe_time_offset_s)
    if args.probe_positions:
        probes = read_probe_positions(args.probe_positions, probes)
    params = ThermometryParams(alarm_temperature_c=args.alarm_temperature_c,
                               alarm_dose_cem43_min=args.alarm_dose_cem43_min).validate()
    section, alarms, curves = analyse(probes, params, cold_alarm_c=args.probe_cold_alarm_c)
    report = {"probes": section, "alarms": alarms,
              "parameters": {"alarm_temperature_c": params.alarm_temperature_c,
                             "alarm_dose_cem43_min": params.alarm_dose_cem43_min,
                             "probe_time_offset_s": args.probe_time_offset_s},
              "inputs": {"log": os.path.abspath(args.log),
                         "positions": os.path.abspath(args.probe_positions) if args.probe_positions else None}}
    with atomic.staged(args.out) as stage:
        names = [] if args.no_figures else write_figures(os.path.join(stage, "figures"), curves, params,
                                                         args.probe_cold_alarm_c)
        report["outputs"] = sorted([f"figures/{n}" for n in names] + ["report.json"])
        with open(os.path.join(stage, "report.json"), "w", encoding="utf-8") as fh:
            json.dump(finite_json(report), fh, indent=2, allow_nan=False)
    if not args.quiet:
        for e in section["probes"]:
            print(f"probe {e['name']}: {e['readings']} readings, peak {e['peak_c']:.1f} C, min {e['min_c']:.1f} C, "
                  f"dose {e['dose_cem43_min']:.3g} CEM43 min{' (watched)' if e['watch'] else ''}")
        for a in alarms:
            print(format_alarm(a))
    return 0


def add_parser(sub):
    """Add the ``probes`` command to the sub-parsers ``sub``."""
    p = sub.add_parser("probes", help="probe (thermocouple) logs alone: peak, dose, alarms, figures")
    p.add_argument("--log", required=True, metavar="LOG.csv", help="CSV time_s,probe,temperature_c")
    p.add_argument("--probe-positions", metavar="POS.json", help="positions and watch flags")
    p.add_argument("--probe-time-offset-s", type=float, default=0.0, help="added to the log's times (s)")
    p.add_argument("--probe-cold-alarm-c", type=float, help="cold alarm of watched probes (cryo), C")
    p.add_argument("--alarm-temperature-c", type=float, default=45.0)
    p.add_argument("--alarm-dose-cem43-min", type=float, default=1.0)
    p.add_argument("--out", required=True)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_probes)
