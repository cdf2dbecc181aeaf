"""Temperature inside the ice ball, where MR cannot measure it.

Model: steady radial conduction from a cylindrical cryoprobe through the frozen
shell (Carslaw & Jaeger, *Conduction of Heat in Solids*, 2nd ed. 1959, the
cylindrical-shell solution; the form used for cryoprobe isotherm estimates):
with the probe surface at ``T_p`` (argon Joule-Thomson probes reach about -150 C
at the tip), radius ``r_p``, and the ice edge at 0 C at radius ``R``,

    T(r) = T_p ln(R / r) / ln(R / r_p),   r_p <= r <= R,

so the isotherm ``T_iso`` lies at ``r = R (r_p / R)^(T_iso / T_p)``. For an
irregular ice ball each frozen voxel takes ``r`` = its distance to the nearest
probe tip (or, without tips, to the ice ball's deepest point) and ``R`` = ``r``
plus its distance to the ice edge. Lethal isotherms: -20 C and -40 C (reported
ranges for complete cell death in a single freeze; both are shown, the
operator's protocol decides). The model ignores the freeze-thaw cycle, blood
flow and latent heat: the isotherms are estimates, not measurements.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mrtherm.errors import ParameterError


@dataclasses.dataclass
class CryoParams:
    """Cryoablation settings (``--modality cryo``).

    Attributes
    ----------
    probe_temperature_c : float
        Probe surface temperature, C (default -150).
    probe_radius_mm : float
        Probe radius, mm (default 0.75: a 17-gauge probe).
    ice_fraction : float
        A reliable voxel is frozen when its magnitude drops below this fraction of its baseline mean (0.3).
    isotherms_c : tuple of float
        Isotherms reported and contoured, C (0: the ice edge; -20, -40: lethal).
    margin_alarm_mm : float
        Alarm when an isotherm comes closer than this to the spinal cord or a nerve root, mm (default 3).
    min_ice_voxels : int
        Frozen components smaller than this are noise (without probe tips).
    tips_mm : tuple of (x, y, z), optional
        Probe tip positions (world mm): only ice connected to a tip counts, and the model measures from them.
    """

    probe_temperature_c: float = -150.0
    probe_radius_mm: float = 0.75
    ice_fraction: float = 0.3
    isotherms_c: tuple = (0.0, -20.0, -40.0)
    margin_alarm_mm: float = 3.0
    min_ice_voxels: int = 4
    tips_mm: tuple = ()

    def validate(self):
        """Check the fields.

        Returns
        -------
        CryoParams

        Raises
        ------
        ParameterError
        """
        if not self.probe_temperature_c < 0:
            raise ParameterError(f"cryo probe temperature must be below 0 C, got {self.probe_temperature_c!r}")
        if not self.probe_radius_mm > 0:
            raise ParameterError(f"cryo probe radius must be positive, got {self.probe_radius_mm!r}")
        if not 0 < self.ice_fraction < 1:
            raise ParameterError(f"ice_fraction must be between 0 and 1, got {self.ice_fraction!r}")
        if any(not self.probe_temperature_c < v <= 0 for v in self.isotherms_c):
            raise ParameterError(f"isotherms must lie between the probe temperature and 0 C, got {self.isotherms_c}")
        self.isotherms_c = tuple(sorted({float(v) for v in self.isotherms_c}, reverse=True))
        return self


def temperature_in_ice_c(r_mm, edge_mm, params: CryoParams):
    """Model temperature at distance ``r_mm`` from the probe in an ice ball of radius ``edge_mm``.

    Parameters
    ----------
    r_mm, edge_mm : array of float
        Distance to the probe and to the ice edge measured from the probe (``edge_mm >= r_mm``), mm.
    params : CryoParams

    Returns
    -------
    ndarray of float64
        C; the probe temperature inside the probe radius, 0 at the edge.

    Examples
    --------
    >>> p = CryoParams()
    >>> float(temperature_in_ice_c(20.0, 20.0, p)) + 0.0, float(temperature_in_ice_c(0.75, 20.0, p))
    (0.0, -150.0)
    """
    rp = params.probe_radius_mm
    r = np.maximum(np.asarray(r_mm, dtype=np.float64), rp)
    edge = np.maximum(np.asarray(edge_mm, dtype=np.float64), r)
    span = np.log(np.maximum(edge, rp * (1 + 1e-9)) / rp)
    return np.where(edge > rp, params.probe_temperature_c * np.log(edge / r) / span, params.probe_temperature_c)


def isotherm_radius_mm(edge_mm: float, isotherm_c: float, params: CryoParams) -> float:
    """Radius of an isotherm in an ice ball of radius ``edge_mm`` (the model's closed form).

    Parameters
    ----------
    edge_mm : float
    isotherm_c : float
    params : CryoParams

    Returns
    -------
    float
        mm (``r_p`` when the ball is no larger than the probe).

    Examples
    --------
    >>> round(isotherm_radius_mm(20.0, -20.0, CryoParams()), 2)  # 20 (0.75 / 20)^(20 / 150)
    12.91
    """
    rp = params.probe_radius_mm
    if edge_mm <= rp:
        return rp
    return edge_mm * math.pow(rp / edge_mm, isotherm_c / params.probe_temperature_c)
