"""Acoustic tissue properties used by the acoustic-window check, with their sources.

Attenuation ``alpha(f) = alpha_1MHz * (f / 1 MHz) ** exponent`` in dB/cm. The
values at 1 MHz are those compiled in Table 4 of *Diagnostics* 2023;13(5):855
(doi:10.3390/diagnostics13050855) from the standard tissue references (Duck,
Physical Properties of Tissue, 1990; Culjat et al., Ultrasound Med Biol 2010).
Where a class has no entry there the nearest tissue is used, as noted. The
frequency dependence is taken as linear (exponent 1) for tissues, the
assumption of the IT'IS tissue database when no fit is available, and
quadratic for water.
"""

from __future__ import annotations

import math

import numpy as np

from mrtherm.io.labels import LabelTable

SOURCE_ATTENUATION = "Diagnostics 2023;13:855, Table 4 (attenuation at 1 MHz, dB/cm)"
SOURCE_SPEEDS = ("soft tissue 1540 m/s (the conventional soft-tissue average); cortical bone 3432 m/s "
                 "(Sensors 2023;23:5942, Table A2)")

# label value -> (dB/cm at 1 MHz, frequency exponent, note)
ATTENUATION_DB_PER_CM_1MHZ = {
    0: (0.0022, 2.0, "water"),
    1: (0.50, 1.0, "soft tissue: liver value"),
    2: (0.63, 1.0, "adipose tissue"),
    3: (1.18, 1.0, "skeletal muscle: mean of perpendicular (0.96) and parallel (1.40) fibres"),
    4: (0.35, 1.0, "skin"),
    5: (15.0, 1.0, "bone"),
    6: (15.0, 1.0, "bone (trabecular taken as bone)"),
    7: (math.inf, 1.0, "gas: total reflection"),
    8: (math.inf, 1.0, "metal: total reflection"),
    9: (1.57, 1.0, "scar: connective tissue"),
    10: (0.50, 1.0, "spinal cord: soft-tissue value"),
    11: (0.50, 1.0, "nerve root: soft-tissue value"),
    12: (0.50, 1.0, "tumour: soft-tissue value"),
    13: (0.50, 1.0, "no-pass zone: soft-tissue value"),
}

WATER = 0  # the key of water (coupling) above; the path outside the labelled volume is water whatever the table
SOFT_TISSUE = 1  # the key of soft tissue above: classes without an entry take its value
SPEED_SOFT_TISSUE_M_S = 1540.0  # the conventional soft-tissue average (SOURCE_SPEEDS)
SPEED_CORTICAL_BONE_M_S = 3432.0  # Sensors 2023;23:5942, Table A2 (SOURCE_SPEEDS)


def attenuation_db_per_cm(label: int, frequency_hz: float) -> float:
    """Attenuation of a label class at a frequency (power law in frequency).

    Parameters
    ----------
    label : int
        Label value (default table); values without an entry take the soft-tissue value.
    frequency_hz : float

    Returns
    -------
    float
        dB/cm: ``alpha_1MHz * (f / 1 MHz) ** exponent``.

    Examples
    --------
    >>> round(attenuation_db_per_cm(2, 1.5e6), 4)  # fat, 0.63 dB/cm at 1 MHz, linear
    0.945
    >>> round(attenuation_db_per_cm(0, 2.0e6), 4)  # water, 0.0022 dB/cm at 1 MHz, quadratic
    0.0088
    """
    a1, exponent, _ = ATTENUATION_DB_PER_CM_1MHZ.get(int(label), ATTENUATION_DB_PER_CM_1MHZ[SOFT_TISSUE])
    return a1 * (frequency_hz / 1e6) ** exponent


def entries_of(table) -> dict:
    """The attenuation entry of each class of a label table, found by class name.

    The entries above are keyed by the values of the default table (DESIGN.md); a replacement table may give
    its classes other values, so each of its classes takes the entry of the default class with the same name.

    Parameters
    ----------
    table : mrtherm.io.labels.LabelTable

    Returns
    -------
    dict of int to tuple
        Label value (in ``table``) -> ``(dB/cm at 1 MHz, frequency exponent, note)``, for the classes that have
        an entry; the others take the soft-tissue value.
    """
    default = LabelTable()
    out = {}
    for key, entry in ATTENUATION_DB_PER_CM_1MHZ.items():
        for value in table.values_named(default.name(key)):
            out[value] = entry
    return out


def attenuation_by_value(table, frequency_hz: float) -> np.ndarray:
    """Attenuation of every label value 0..255 of a label table at a frequency.

    Parameters
    ----------
    table : mrtherm.io.labels.LabelTable
    frequency_hz : float

    Returns
    -------
    ndarray of float64, shape (256,)
        dB/cm (see :func:`entries_of`; values without an entry take the soft-tissue value).
    """
    out = np.full(256, attenuation_db_per_cm(SOFT_TISSUE, frequency_hz))
    for value, (a1, exponent, _) in entries_of(table).items():
        if 0 <= value < 256:
            out[value] = a1 * (frequency_hz / 1e6) ** exponent
    return out


def critical_angle_deg(c_soft_m_s: float = SPEED_SOFT_TISSUE_M_S, c_bone_m_s: float = SPEED_CORTICAL_BONE_M_S) -> float:
    """Longitudinal critical angle at a soft-tissue/bone interface, Snell's law: asin(c1/c2).

    Parameters
    ----------
    c_soft_m_s : float, optional
        Speed of sound in soft tissue, m/s.
    c_bone_m_s : float, optional
        Longitudinal speed in cortical bone, m/s.

    Returns
    -------
    float
        Critical angle, degrees (90 when bone is not faster).

    Examples
    --------
    >>> round(critical_angle_deg(1540.0, 3500.0), 1)
    26.1
    """
    return math.degrees(math.asin(min(1.0, c_soft_m_s / c_bone_m_s)))
