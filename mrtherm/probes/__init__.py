"""Thermocouple / fibre-optic probe logs: readings against MR thermometry, probe dose, alarms (RF, MWA, cryo)."""

from mrtherm.probes.logs import Probe, read_probe_log, read_probe_positions

__all__ = ["Probe", "read_probe_log", "read_probe_positions"]
