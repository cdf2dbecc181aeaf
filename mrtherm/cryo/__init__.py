"""Cryoablation on MR: the ice ball (a signal void where PRF fails), lethal isotherms inside it, margins."""

from mrtherm.cryo.model import CryoParams, isotherm_radius_mm, temperature_in_ice_c
from mrtherm.cryo.watch import CryoWatch

__all__ = ["CryoParams", "CryoWatch", "isotherm_radius_mm", "temperature_in_ice_c"]
