"""Model-based temperature where PRF is blind: a Pennes bioheat model with a fitted source, combined with PRF.

Why a fitted source, not a full Kalman filter: a Kalman filter needs the covariance of every model voxel (10^5 on
the model grid: 10^10 entries) or a reduced basis that cannot represent the sub-millimetre cortex; and the quantity
PRF can tell the model is the *source* (the acoustic power and how much of it bone absorbs), which then sets the
temperature everywhere, bone included. So (after Todd et al., MRM 2010;63:1269, model-predictive filtering):

1. **Model** (:class:`PennesStepper`): ``rho c du/dt = div(k grad u) - w rho_b c_b u + Q`` for the rise ``u`` over
   body temperature, per-tissue ``k, rho, c, w`` from the label table (:mod:`mrtherm.thermometry.tissue_properties`),
   explicit steps on the refined grid of :mod:`mrtherm.thermometry.bioheat_grid`, Dirichlet faces.
2. **Source**: ``Q = p(t) (Q_soft + r Q_bone)``, ``Q = 2 mu I`` with the focused, attenuated beam ``I`` (bone
   shadows what lies behind it); ``Q_bone`` is the part absorbed in cortical bone and marrow. Linear in the source,
   the model keeps the soft and bone parts as two fields. Per frame interval the power ``p >= 0`` is the least-squares
   fit of the model's change to the PRF change in the measured voxels (weights 1 / SD^2); the bone factor ``r``
   (the bone absorption relative to the table's, the quantity PRF sees only through heat conducted out of bone) is
   fitted on all frames so far with a prior 1 +- :data:`R_PRIOR_SD`.
3. **Combination**: in every measured voxel the model and the measurement are combined as independent estimates
   (weights 1 / variance: the result is never worse than either when the variances are right); elsewhere the model
   alone. The outputs live on the image grid.
4. **Uncertainty** (calibrated on the data): the model's SD is ``sqrt(floor^2 + c^2 u^2 + var(r) u_bone^2)``: ``c``,
   the model's relative error, is measured from the model-data residuals of the measured voxels (their mean squared
   excess over the measurement noise, relative to the model's rise; prior :data:`C_PRIOR` until enough heating is
   seen), so the SD grows with the modelled heating where no data constrain it; ``var(r)`` is the bone factor's
   posterior variance. In measured voxels the combined SD is ``(1/var_model + 1/var_meas)^-1/2``.

Assumptions: the beam axis, focus and focal size are known (treatment plan); tissue properties are the table's
within about 20 %; absorption is heat (no scattering); perfusion constant (no shutdown during heating); the
measurements' noise SD is the thermometry's.
"""

from __future__ import annotations

import math

import numpy as np

from mrtherm.errors import ParameterError
from mrtherm.thermometry.bioheat_grid import ModelGrid, beam_intensity
from mrtherm.thermometry.tissue_properties import BLOOD_RHO_C_J_M3_K, properties_for

__all__ = ["BioheatModel", "PennesStepper"]

UNIT_INTENSITY_W_M2 = 1.0e6  # p = 1: 1 MW/m^2 (100 W/cm^2) at the focus before attenuation
KAPPA_CAP_M2_S = 2.0e-7  # diffusivity cap (about 1.5 x muscle): gas and metal conduct but equilibrate slower
R_PRIOR_SD = 0.3
C_PRIOR = 0.2  # relative model error before the data say (tissue properties within about 20 %)
C_MIN = 0.05
SD_FLOOR_C = 0.3
BOX_HALF_MM = (12.0, 16.0, 16.0)
CALIBRATION_RISE_C = 1.0  # measured voxels whose modelled rise exceeds this calibrate c


class PennesStepper:
    """Explicit finite-volume steps of the Pennes equation for the rise over body temperature.

    Parameters
    ----------
    k_w_m_k, rho_c_j_m3_k, perfusion_per_s : ndarray, shape (z, y, x)
        Per fine voxel.
    spacing_m : (3,) float
        Fine spacing along (z, y, x), m.
    xp : array module (numpy or cupy)
    """

    def __init__(self, k_w_m_k, rho_c_j_m3_k, perfusion_per_s, spacing_m, xp=np):
        rho_c = np.maximum(rho_c_j_m3_k, k_w_m_k / KAPPA_CAP_M2_S)
        self.rho_c = rho_c
        coeffs, rate = [], perfusion_per_s * BLOOD_RHO_C_J_M3_K / rho_c
        for axis, h in enumerate(spacing_m):
            plus, minus = _face_conductances(k_w_m_k, axis)
            coeffs += [plus / (h * h * rho_c), minus / (h * h * rho_c)]
            rate = rate + coeffs[-2] + coeffs[-1]
        self.dt_max_s = 0.9 / float(rate.max())
        self.xp = xp
        self.coeffs = [xp.asarray(c) for c in coeffs]
        self.sink = xp.asarray(perfusion_per_s * BLOOD_RHO_C_J_M3_K / rho_c)

    def step(self, u, heat, dt_s):
        """One explicit step.

        Parameters
        ----------
        u : array, shape (..., z, y, x)
            Rise over body temperature, C.
        heat : array or None
            Source / (rho c), K/s.
        dt_s : float
            At most :attr:`dt_max_s`.

        Returns
        -------
        array
            ``u`` after ``dt_s``.
        """
        xp = self.xp
        pad = [(0, 0)] * (u.ndim - 3) + [(1, 1)] * 3
        p = xp.pad(u, pad)
        core = (Ellipsis, slice(1, -1), slice(1, -1), slice(1, -1))
        du = -self.sink * u
        for axis in range(3):
            hi, lo = list(core), list(core)
            hi[axis - 3], lo[axis - 3] = slice(2, None), slice(None, -2)
            du = du + self.coeffs[2 * axis] * (p[tuple(hi)] - u) - self.coeffs[2 * axis + 1] * (u - p[tuple(lo)])
        if heat is not None:
            du = du + heat
        return u + dt_s * du

    def advance(self, u, duration_s, heat=None):
        """``u`` after ``duration_s`` (equal sub-steps no longer than the stability limit).

        Parameters
        ----------
        u : array, shape (..., z, y, x)
        duration_s : float
        heat : array, optional
            Source / (rho c), K/s, constant over the interval.

        Returns
        -------
        array
        """
        n = max(1, int(math.ceil(duration_s / self.dt_max_s)))
        for _ in range(n):
            u = self.step(u, heat, duration_s / n)
        return u


def _face_conductances(k, axis):
    """Harmonic-mean conductances to the next and previous voxel along ``axis``; the box faces (Dirichlet, ghost at
    one spacing) take the voxel's own ``k``."""
    nxt = np.roll(k, -1, axis=axis)
    prv = np.roll(k, 1, axis=axis)
    plus = 2.0 * k * nxt / np.maximum(k + nxt, 1e-30)
    minus = 2.0 * k * prv / np.maximum(k + prv, 1e-30)
    last = [slice(None)] * 3
    last[axis] = -1
    plus[tuple(last)] = k[tuple(last)]
    first = [slice(None)] * 3
    first[axis] = 0
    minus[tuple(first)] = k[tuple(first)]
    return plus, minus


OPAQUE_ROLES = ("block_gas", "block_metal")  # the beam stops there (reflection), whatever their absorption
OPAQUE_NP_M = 1.0e6


def _attenuation(maps):
    """The beam's attenuation map: the absorption, and a wall where gas or metal reflects it."""
    return np.where(maps["opaque"], OPAQUE_NP_M, maps["mu"])


def _property_maps(fine_labels, table):
    """Per fine voxel: k, rho c, perfusion, absorption; and the properties per label present (report)."""
    maps = {key: np.zeros(fine_labels.shape) for key in ("k", "rho_c", "perfusion", "mu")}
    maps["opaque"] = np.zeros(fine_labels.shape, dtype=bool)
    used = {}
    for value in np.unique(fine_labels):
        cls = table.classes.get(int(value))
        if cls is None:
            raise ParameterError(f"label {int(value)} is not in the label table: its tissue properties are unknown")
        props = properties_for(cls)
        sel = fine_labels == value
        maps["k"][sel], maps["rho_c"][sel] = props.k_w_m_k, props.rho_kg_m3 * props.c_j_kg_k
        maps["perfusion"][sel], maps["mu"][sel] = props.perfusion_per_s, props.absorption_np_m
        maps["opaque"][sel] = cls.acoustic_role in OPAQUE_ROLES
        used[int(value)] = {"name": cls.name, **{k: getattr(props, k) for k in
                                                 ("k_w_m_k", "rho_kg_m3", "c_j_kg_k", "perfusion_per_s",
                                                  "absorption_np_m", "source")}}
    return maps, used


class BioheatModel:
    """The bioheat model of one sonication, updated frame by frame with the PRF temperatures (module docstring).

    Parameters
    ----------
    image_shape : tuple of int
        (z, y, x) of the image grid.
    affine : (4, 4) array
    labels : ndarray of int, shape image (z, y, x)
        The label map on the image grid (the model domain: every voxel not labelled as coupling).
    table : LabelTable
    params : ThermometryParams
        ``target_mm`` (the focus), ``bioheat_beam_axis``, ``bioheat_focal_radius_mm``, ``bioheat_rayleigh_mm``,
        ``bioheat_resolution_mm``, ``bioheat_cortical_thickness_mm``, ``body_temp_c``.
    native_labels : tuple (labels, affine), optional
        The label map on its own (finer) grid.
    focus_mm : (3,) float, optional
        World mm; default ``params.target_mm``.
    fine_labels : ndarray, optional
        The model grid's labels (a restored state), instead of computing them.
    xp : array module (numpy or cupy)
        Where the model's steps run.
    """

    def __init__(self, image_shape, affine, labels, table, params, native_labels=None, focus_mm=None,
                 fine_labels=None, xp=np):
        focus_mm = params.target_mm if focus_mm is None else focus_mm
        if focus_mm is None or isinstance(focus_mm, str) or params.bioheat_beam_axis is None:
            raise ParameterError("bioheat needs the focus (target_mm) as a point and the beam axis (bioheat_beam_axis)")
        self.params, self.xp, self.table = params, xp, table
        self.body_c = float(params.body_temp_c)
        self.focus_mm = focus = np.asarray(focus_mm, dtype=np.float64)
        res = float(params.bioheat_resolution_mm)
        self.grid = g = ModelGrid(image_shape, affine, focus, BOX_HALF_MM, (2.0 * res, res, res))
        self.fine_labels = g.fine_labels(labels, table, native_labels, params.bioheat_cortical_thickness_mm) \
            if fine_labels is None else np.asarray(fine_labels)
        maps, self.properties = _property_maps(self.fine_labels, table)
        self.stepper = PennesStepper(maps["k"], maps["rho_c"], maps["perfusion"], g.spacing_m, xp)
        image_maps, _ = _property_maps(np.asarray(labels), table)
        intensity = beam_intensity(g, _attenuation(maps), focus, params.bioheat_beam_axis,
                                   params.bioheat_focal_radius_mm, params.bioheat_rayleigh_mm,
                                   image_absorption_np_m=_attenuation(image_maps))
        intensity = np.where(maps["opaque"], 0.0, intensity)
        bone = np.isin(self.fine_labels, table.values_named("cortical bone", "trabecular bone / marrow"))
        heat = 2.0 * maps["mu"] * intensity * UNIT_INTENSITY_W_M2 / self.stepper.rho_c  # K/s at p = 1
        self.unit_heat = xp.asarray(np.stack([np.where(bone, 0.0, heat), np.where(bone, heat, 0.0)]))
        coupling = table.values_named("coupling")
        self.domain = ~np.isin(np.asarray(labels), coupling)  # the body
        in_box = np.zeros(self.domain.shape, dtype=bool)
        in_box[g.box] = True
        self.modelled = self.domain & in_box  # where the model says anything (outside: not modelled, no source)
        self.fields = xp.zeros((2,) + g.shape)
        self._responses = {}
        self.r, self.r_var = 1.0, R_PRIOR_SD ** 2
        self._r_normal = [1.0 / R_PRIOR_SD ** 2, 1.0 / R_PRIOR_SD ** 2]  # (A, b) with the prior
        self._calibration = [0.0, 0.0]  # sum of excess squared residuals, sum of squared modelled rises
        self.powers, self.times_s = [], []
        self.rise_c = np.zeros(image_shape)
        self.bone_rise_c = np.zeros(image_shape)

    @property
    def c_rel(self) -> float:
        """The model's relative error, from the model-data residuals (prior :data:`C_PRIOR` until enough heating).

        Returns
        -------
        float
        """
        excess, rises = self._calibration
        if rises < 25.0 * 1.0:  # about 25 voxel-frames of 1 C rise
            return C_PRIOR
        return float(min(max(math.sqrt(max(excess, 0.0) / rises), C_MIN), 1.0))

    def _response(self, dt_s):
        """The two fields' rise after ``dt_s`` of the unit source from zero, and its image-voxel means (cached per
        interval)."""
        key = round(dt_s, 4)
        if key not in self._responses:
            while len(self._responses) >= 4:  # live intervals jitter: keep the few latest, not one per frame
                self._responses.pop(next(iter(self._responses)))
            g = self.stepper.advance(self.xp.zeros_like(self.fields), dt_s, self.unit_heat)
            self._responses[key] = (g, self._coarse(g))
        return self._responses[key]

    def _coarse(self, fields):
        """Both fields on the image voxels of the box, host arrays (2, cz, cy, cx)."""
        c = self.grid.coarsen(fields)
        return c.get() if hasattr(c, "get") else np.asarray(c)

    def update(self, measured_c, sd_c, time_s, fit=True, power=None):
        """Advance to ``time_s`` and combine with this frame's PRF temperatures.

        Parameters
        ----------
        measured_c : ndarray, shape image (z, y, x)
            PRF temperature, C, NaN where not measured (host).
        sd_c : ndarray or float
            The measurements' SD, C.
        time_s : float
        fit : bool
            Fit the source to this frame (False for the baseline frames: no sonication yet).
        power : float, optional
            The source power over the interval ending now, when known (a refinement study): not fitted, and the
            bone factor stays where it is.

        Returns
        -------
        temperature_c, sd_c : ndarray of float32, shape image (z, y, x)
            NaN outside the model domain.
        """
        box = self.grid.box
        m = np.asarray(measured_c, dtype=np.float64)[box] - self.body_c
        var_m = np.broadcast_to(np.asarray(sd_c, dtype=np.float64), measured_c.shape)[box] ** 2
        sel = np.isfinite(m) & np.isfinite(var_m) & (var_m > 0)
        w = np.where(sel, 1.0 / np.where(sel, var_m, 1.0), 0.0)
        m = np.where(sel, m, 0.0)
        if self.times_s:
            dt = float(time_s) - self.times_s[-1]
            self.fields = self.stepper.advance(self.fields, dt)
            g, g_coarse = self._response(dt)
            free = self._coarse(self.fields)
            used = float(power) if power is not None else (self._fit_power(m, w, free, g_coarse) if fit else 0.0)
            self.fields = self.fields + used * g
            soft, bone = free + used * g_coarse  # the model is linear in the source: no second coarsening
            self.powers.append(used)
        else:
            soft, bone = self._coarse(self.fields)
        self.times_s.append(float(time_s))
        self._fit_bone_factor(m, w, soft, bone, fit and power is None)
        self._calibrate(m, sel, soft + self.r * bone, var_m)
        self.rise_c[box], self.bone_rise_c[box] = soft + self.r * bone, self.r * bone
        return self._combine(measured_c, sd_c)

    def _fit_power(self, m, w, free, g):
        """Least-squares power of this interval from the measured voxels (>= 0); ``free``, ``g``: image-voxel means
        of the fields without source and of the unit response."""
        soft, bone = free
        h = g[0] + self.r * g[1]
        den = float(np.sum(w * h * h))
        if den <= 0.0:
            return 0.0
        return max(float(np.sum(w * h * (m - soft - self.r * bone))) / den, 0.0)

    def _fit_bone_factor(self, m, w, soft, bone, fit):
        """The bone factor from every frame so far (normal equations with the prior 1 +- R_PRIOR_SD)."""
        if fit:
            self._r_normal[0] += float(np.sum(w * bone * bone))
            self._r_normal[1] += float(np.sum(w * bone * (m - soft)))
        self.set_bone_factor()

    def set_bone_factor(self):
        """The bone factor and its variance from the accumulated normal equations (also after a restore)."""
        a, b = self._r_normal
        self.r, self.r_var = min(max(b / a, 0.2), 5.0), 1.0 / a

    def _calibrate(self, m, sel, rise, var_m):
        """Accumulate the measured voxels' excess squared residuals against the modelled rise."""
        use = sel & (rise > CALIBRATION_RISE_C)
        if use.any():
            self._calibration[0] += float(np.sum((m[use] - rise[use]) ** 2 - var_m[use]))
            self._calibration[1] += float(np.sum(rise[use] ** 2))

    def model_sd_c(self) -> np.ndarray:
        """The model's own SD (before combination with the data), C, image grid.

        Returns
        -------
        ndarray of float64, shape image (z, y, x)
        """
        c2 = self.c_rel ** 2
        soft = self.rise_c - self.bone_rise_c
        return np.sqrt(SD_FLOOR_C ** 2 + c2 * soft ** 2 + (c2 + self.r_var / max(self.r, 1e-6) ** 2)
                       * self.bone_rise_c ** 2)

    def _combine(self, measured_c, sd_c):
        """Model and measurement by inverse variance inside the box; outside it (not modelled) the measurement as
        it is; NaN where neither exists (outside the body, or unmeasured outside the box)."""
        modelled = self.modelled
        var_model = np.where(modelled, self.model_sd_c() ** 2, np.inf)
        model = self.body_c + self.rise_c
        var_m = np.broadcast_to(np.asarray(sd_c, dtype=np.float64), measured_c.shape) ** 2
        meas = np.isfinite(measured_c) & np.isfinite(var_m) & (var_m > 0) & self.domain
        safe_m = np.where(meas, var_m, 1.0)
        gain = np.where(meas, np.where(modelled, var_model / (np.where(modelled, var_model, 0.0) + safe_m), 1.0), 0.0)
        temp = np.where(meas, model + gain * (np.nan_to_num(measured_c) - model), model)
        var = np.where(meas, np.where(modelled, (1.0 - gain) * np.where(modelled, var_model, 0.0), safe_m), var_model)
        keep = meas | modelled
        nan = np.float32(np.nan)
        return (np.where(keep, temp, nan).astype(np.float32), np.where(keep, np.sqrt(var), nan).astype(np.float32))

    def report(self) -> dict:
        """report.json ``bioheat``: properties per label, grid, source fit, calibration.

        Returns
        -------
        dict
        """
        g = self.grid
        return {"method": "Pennes bioheat model with a fitted source (power per frame, bone factor over all frames) "
                          "combined with PRF by inverse-variance weighting (Todd et al., MRM 2010)",
                "grid": {"box_image_voxels_zyx": [[s.start, s.stop] for s in g.box], "refinement_zyx": list(g.factors),
                         "spacing_mm_zyx": [1e3 * s for s in g.spacing_m], "shape_zyx": list(g.shape),
                         "time_step_max_s": self.stepper.dt_max_s},
                "beam": {"focus_mm": self.focus_mm.tolist(), "axis": list(self.params.bioheat_beam_axis),
                         "focal_radius_mm": self.params.bioheat_focal_radius_mm,
                         "rayleigh_length_mm": self.params.bioheat_rayleigh_mm,
                         "unit_intensity_w_m2": UNIT_INTENSITY_W_M2},
                "properties_per_label": {str(k): v for k, v in self.properties.items()},
                "fitted_source": {"power_per_frame": self.powers, "bone_factor": self.r,
                                  "bone_factor_sd": math.sqrt(self.r_var), "bone_factor_prior": [1.0, R_PRIOR_SD]},
                "calibration": {"relative_model_error": self.c_rel, "prior": C_PRIOR, "floor_c": SD_FLOOR_C,
                                "excess_squared_residuals_c2": self._calibration[0],
                                "squared_model_rise_c2": self._calibration[1]}}
