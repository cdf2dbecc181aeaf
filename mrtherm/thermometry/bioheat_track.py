"""The bioheat model inside :class:`mrtherm.Thermometer`: its frames, dose, Tmax, watch, checkpoint and outputs.

With ``ThermometryParams(bioheat=True)`` (labels, the focus ``target_mm`` and ``bioheat_beam_axis`` given) the
Thermometer feeds every frame's PRF temperature to a :class:`BioheatTrack`, which runs the model of
:mod:`mrtherm.thermometry.bioheat` and keeps, on the image grid: the model temperature and its SD (every voxel of the
body, bone and fat included), the exact CEM43 dose of the model temperature (piecewise linear between frames, as the
PRF dose), its Tmax, the protected-structure watch on the model (alarms marked ``"source": "model"``) and the
model-data residuals. So ``mrtherm run``, DICOM treatments and ``mrtherm live`` get it alike; the model state is
part of the Thermometer's checkpoint.

The measurements' SD: each voxel's noise-predicted SD, raised to the median of the baseline frames' empirical SD
over the reliable voxels (the empirical SD also holds the noise the magnitude does not predict).
"""

from __future__ import annotations

import math
import os

import numpy as np

from mrtherm.errors import ParameterError
from mrtherm.thermometry.bioheat import BioheatModel
from mrtherm.thermometry.dose import cem43_segment, lesion_masks, lesion_volumes_ml
from mrtherm.thermometry.watch import ProtectedWatch

__all__ = ["BioheatTrack", "native_labels"]


def native_labels(src, image_affine):
    """A label file's own grid when it is finer than the image's (a planning CT's segmentation), else None.

    Parameters
    ----------
    src : path or array or None
    image_affine : (4, 4) array

    Returns
    -------
    tuple (labels (z, y, x) int16, affine) or None
    """
    if not isinstance(src, (str, os.PathLike)):
        return None
    from mrtherm.io import niftiio  # noqa: PLC0415
    data, aff = niftiio.load_3d(src, "labels")
    own = np.linalg.norm(aff[:3, :3], axis=0).min()
    image = np.linalg.norm(np.asarray(image_affine)[:3, :3], axis=0).min()
    if own >= image - 1e-6:
        return None
    return np.transpose(np.round(data).astype(np.int16), (2, 1, 0)), aff


class BioheatTrack:
    """Model frames and their bookkeeping for one Thermometer (module docstring).

    Parameters
    ----------
    th : Thermometer
        Built (labels, table, params, affine, target).
    labels_src : path or array
        What the Thermometer's labels came from (a finer file is used on its own grid).
    fine_labels : ndarray, optional
        The model grid's labels of a saved state (instead of computing them again).
    """

    def __init__(self, th, labels_src=None, fine_labels=None):
        p = th.params
        if th.labels is None:
            raise ParameterError("bioheat needs labels (the tissues set the model's properties)")
        if th.target is None:
            raise ParameterError("bioheat needs the focus: give target_mm (--target X,Y,Z)")
        focus = tuple(float(v) for v in th.target.target_mm)
        native = None if fine_labels is not None else native_labels(labels_src, th.affine)
        from mrtherm.thermometry.waterfat import array_modules  # noqa: PLC0415
        xp = array_modules(th._fit_backend())[0]  # the model's steps on the GPU when the Thermometer runs there
        self.model = BioheatModel(th.shape, th.affine, th.labels, th.table, p, native_labels=native,
                                  focus_mm=focus, fine_labels=fine_labels, xp=xp)
        self.params, self.affine, self.shape = p, th.affine, th.shape
        self.watch = ProtectedWatch(th.labels, self.model.modelled, th.table, np, p)
        self.warnings = []
        if not (th.reliability.mask & self.model.modelled).any():
            self.warnings.append("bioheat: no PRF-measured voxel lies within the model's box around the focus: the "
                                 "source cannot be fitted, so the model shows no heating there; do not read its "
                                 "maps as temperature")
            th.warnings.extend(self.warnings)
        self.dose = np.zeros(th.shape)
        self.tmax = None
        self.temperature_c = self.sd_c = None
        self.times_s, self.residual_rms_c = [], []
        self.series, self.sd_series = [], []
        self.keep_series = False

    def update(self, measured_c, sd_c, time_s, fit):
        """One frame: the model, its dose, Tmax, watch and residual.

        Parameters
        ----------
        measured_c : ndarray, shape (z, y, x)
            PRF temperature, C, NaN where not measured (host).
        sd_c : ndarray or float
            The measurements' SD, C.
        time_s : float
        fit : bool
            Fit the source (not during the baseline).
        """
        temp, sd = self.model.update(measured_c, sd_c, time_s, fit)
        dt_s = time_s - self.times_s[-1] if self.times_s else 0.0
        if self.temperature_c is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                seg = cem43_segment(self.temperature_c, temp, dt_s / 60.0)
            self.dose = self.dose + np.where(np.isnan(seg), 0.0, seg)
        self.tmax = temp if self.tmax is None else np.fmax(self.tmax, temp)
        stats = self.watch.device_stats(temp, self.temperature_c, self.dose, dt_s)
        self.watch.record(np.concatenate([np.asarray(v, dtype=np.float64) for v in stats]) if stats else [])
        measured = np.isfinite(measured_c)
        model_only = self.model.body_c + self.model.rise_c
        self.residual_rms_c.append(float(np.sqrt(np.mean((measured_c[measured] - model_only[measured]) ** 2)))
                                   if measured.any() else None)
        self.temperature_c, self.sd_c = temp, sd
        self.times_s.append(float(time_s))
        if self.keep_series:
            self.series.append(temp)
            self.sd_series.append(sd)

    @property
    def dose_cem43_min(self):
        """CEM43 minutes of the model temperature, NaN outside the model domain.

        Returns
        -------
        ndarray of float64, shape (z, y, x)
        """
        return np.where(self.model.modelled, self.dose, np.nan)

    def maps(self, levels) -> dict:
        """The model's maps for a result folder (file name -> host array).

        Parameters
        ----------
        levels : sequence of float
            CEM43 levels of the model lesions.

        Returns
        -------
        dict
        """
        dose = self.dose_cem43_min
        out = {"dose_cem43_model.nii.gz": dose, "tmax_model.nii.gz": self.tmax.astype(np.float32)}
        if self.series:
            out["temperature_model.nii.gz"] = np.stack(self.series)
            out["temperature_model_sd.nii.gz"] = np.stack(self.sd_series)
        else:  # the current frame (live: the series is not kept)
            out["temperature_model.nii.gz"] = self.temperature_c
            out["temperature_model_sd.nii.gz"] = self.sd_c
        for level, mask in lesion_masks(dose, levels).items():
            out[f"lesion_model_{level:g}".replace(".", "p") + ".nii.gz"] = mask.astype(np.uint8)
        return out

    def report(self, levels, voxel_ml) -> dict:
        """report.json ``bioheat``: the model's report, lesion volumes, residuals and the watch on the model.

        Parameters
        ----------
        levels : sequence of float
        voxel_ml : float

        Returns
        -------
        dict
        """
        rows, alarms = self.rows_and_alarms()
        dose = self.dose_cem43_min
        return {**self.model.report(),
                "results": {"peak_temperature_c": float(np.nanmax(self.tmax)) if self.tmax is not None else None,
                            "max_dose_cem43_min": float(np.nanmax(dose)) if np.isfinite(dose).any() else None,
                            "lesion_volumes_ml": {f"{k:g}": v for k, v in
                                                  lesion_volumes_ml(dose, levels, voxel_ml).items()}},
                "model_data_residual_rms_c": self.residual_rms_c,
                "protected_structures": rows, "alarms": alarms}

    def rows_and_alarms(self):
        """The protected-structure table and alarms of the model temperature and dose, marked ``"source": "model"``.

        Returns
        -------
        rows, alarms : list of dict
        """
        rows, alarms = self.watch.rows_and_alarms(self.times_s)
        for item in rows + alarms:
            item["source"] = "model"
        return rows, alarms

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        """Everything that carries over between frames, as host arrays.

        Returns
        -------
        dict of str to ndarray
        """
        m = self.model
        fields = m.fields.get() if hasattr(m.fields, "get") else np.asarray(m.fields)
        out = {"fine_labels": m.fine_labels, "fields": fields, "dose": self.dose,
               "scalars": np.array([*m._r_normal, *m._calibration]), "powers": np.asarray(m.powers),
               "model_times": np.asarray(m.times_s), "times": np.asarray(self.times_s),
               "residual_rms": np.asarray([np.nan if v is None else v for v in self.residual_rms_c]),
               "rise": m.rise_c, "bone_rise": m.bone_rise_c}
        for name in ("tmax", "temperature_c", "sd_c"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out.update({f"watch_{k}": v for k, v in self.watch.state().items()})
        return out

    def restore(self, state: dict):
        """Continue from :meth:`state` (built with the same Thermometer and ``fine_labels=state["fine_labels"]``).

        Parameters
        ----------
        state : dict of str to ndarray
        """
        m = self.model
        m.fields = m.xp.asarray(state["fields"])
        a, b, excess, rises = (float(v) for v in state["scalars"])
        m._r_normal, m._calibration = [a, b], [excess, rises]
        m.set_bone_factor()
        m.powers, m.times_s = [float(v) for v in state["powers"]], [float(v) for v in state["model_times"]]
        m.rise_c, m.bone_rise_c = np.array(state["rise"]), np.array(state["bone_rise"])
        self.dose = np.array(state["dose"])
        for name in ("tmax", "temperature_c", "sd_c"):
            setattr(self, name, None if name not in state else np.array(state[name]))
        self.times_s = [float(v) for v in state["times"]]
        self.residual_rms_c = [None if math.isnan(v) else float(v) for v in state["residual_rms"]]
        self.watch.restore({k[6:]: v for k, v in state.items() if k.startswith("watch_")})
