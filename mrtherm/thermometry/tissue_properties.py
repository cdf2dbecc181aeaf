"""Thermal and acoustic tissue properties of the label classes (the bioheat model's inputs).

Per class: thermal conductivity ``k_w_m_k`` (W/m/K), density ``rho_kg_m3``, specific heat ``c_j_kg_k``
(J/kg/K), volumetric blood perfusion ``perfusion_per_s`` (1/s: m^3 of blood per m^3 of tissue per second; the Pennes
sink is ``perfusion * rho_b c_b * (T - T_arterial)``) and the ultrasound absorption coefficient ``absorption_np_m``
(Np/m, amplitude, near 1 MHz; the heat source is ``2 * absorption * intensity``).

Sources: conductivity, density, specific heat and perfusion from the IT'IS Foundation tissue property database
(Hasgall et al., IT'IS Database for thermal and electromagnetic parameters of biological tissues, v4.1, 2022; perfusion
converted from ml/min/kg with the tissue density); absorption from Duck, Physical Properties of Tissue (Academic
Press 1990) and Goss et al., J Acoust Soc Am 1978;64:423 and 1980;68:93 (muscle about 0.7 dB/cm/MHz, fat about
0.4, cortical bone roughly ten times muscle at the frequencies of bone treatments). Values are class defaults found
by the class *name* (so a custom table with the DESIGN.md names gets them); a label-table JSON entry overrides any of
them with a ``"thermal"`` object, e.g. ``{"value": 5, "name": "cortical bone", ..., "thermal": {"absorption_np_m":
150}}``.
"""

from __future__ import annotations

import dataclasses

from mrtherm.errors import ParameterError

__all__ = ["BLOOD_RHO_C_J_M3_K", "DEFAULTS", "PROPERTY_KEYS", "TissueProperties", "properties_for"]

BLOOD_RHO_C_J_M3_K = 1050.0 * 3617.0  # blood density x specific heat (IT'IS)
PROPERTY_KEYS = ("k_w_m_k", "rho_kg_m3", "c_j_kg_k", "perfusion_per_s", "absorption_np_m")


@dataclasses.dataclass(frozen=True)
class TissueProperties:
    """One class's properties (units in the names; see the module docstring).

    Attributes
    ----------
    k_w_m_k, rho_kg_m3, c_j_kg_k, perfusion_per_s, absorption_np_m : float
    source : str
        Where the values come from (the defaults' reference, or the label table's override).
    """

    k_w_m_k: float
    rho_kg_m3: float
    c_j_kg_k: float
    perfusion_per_s: float
    absorption_np_m: float
    source: str = "default"


_MUSCLE = (0.49, 1090.0, 3421.0, 0.00064, 8.0)
DEFAULTS = {  # name -> (k, rho, c, perfusion, absorption)
    "coupling": (0.60, 994.0, 4178.0, 0.0, 0.03),  # degassed water
    "soft tissue": _MUSCLE,
    "fat": (0.21, 911.0, 2348.0, 0.00050, 4.0),
    "muscle": _MUSCLE,
    "skin": (0.37, 1109.0, 3391.0, 0.00190, 10.0),
    "cortical bone": (0.32, 1908.0, 1313.0, 0.00017, 100.0),
    "trabecular bone / marrow": (0.19, 980.0, 2065.0, 0.00050, 6.0),  # yellow (fatty) marrow
    "gas": (0.026, 1.16, 1005.0, 0.0, 0.0),  # air: the beam stops at it (reflection), no absorption
    "metal": (7.0, 4500.0, 520.0, 0.0, 0.0),  # titanium
    "scar": (0.49, 1090.0, 3421.0, 0.00030, 8.0),
    "spinal cord": (0.51, 1075.0, 3630.0, 0.00290, 6.0),
    "nerve root": (0.49, 1075.0, 3613.0, 0.00030, 8.0),
    "target lesion": _MUSCLE,  # a soft-tissue metastasis: muscle-like
    "no-pass zone": _MUSCLE,
}


def properties_for(label_class) -> TissueProperties:
    """The properties of a label class: its name's defaults, overridden by its ``thermal`` entry.

    Parameters
    ----------
    label_class : mrtherm.io.labels.LabelClass

    Returns
    -------
    TissueProperties

    Raises
    ------
    ParameterError
        A class without defaults and without a complete ``thermal`` entry, or a value that is not a positive
        number (zero allowed for perfusion and absorption).
    """
    given = dict(getattr(label_class, "thermal", None) or ())
    unknown = sorted(set(given) - set(PROPERTY_KEYS))
    if unknown:
        raise ParameterError(f"label {label_class.value} ({label_class.name}): unknown thermal properties {unknown}; "
                             f"known: {', '.join(PROPERTY_KEYS)}")
    base = DEFAULTS.get(label_class.name.strip().lower())
    if base is None and set(given) != set(PROPERTY_KEYS):
        raise ParameterError(f"label {label_class.value} ({label_class.name}) has no default thermal properties: "
                             f"give all of {', '.join(PROPERTY_KEYS)} in its \"thermal\" entry")
    values = dict(zip(PROPERTY_KEYS, base or (0.0,) * 5))
    values.update({k: float(v) for k, v in given.items()})
    for key, v in values.items():
        floor_ok = v >= 0 if key in ("perfusion_per_s", "absorption_np_m") else v > 0
        if not floor_ok or v != v or v == float("inf"):
            raise ParameterError(f"label {label_class.value} ({label_class.name}): {key} must be a finite "
                                 f"{'non-negative' if key in ('perfusion_per_s', 'absorption_np_m') else 'positive'} "
                                 f"number, got {v!r}")
    source = "label table" if given else "default (IT'IS v4.1; Duck 1990; Goss 1978/1980)"
    return TissueProperties(**values, source=source)
