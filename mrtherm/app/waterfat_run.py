"""``mrtherm run --water-fat``: a multi-echo exam through a water-fat :class:`mrtherm.Thermometer`.

Input contract: with ``--water-fat`` each ``--magnitude``/``--phase`` (or ``--real``/``--imag``) file is one echo
(4-D over time), in increasing echo time; echo times from each file's sidecar ``EchoTime`` unless
``--echo-times-ms`` gives them; B0 from the sidecars unless ``--b0-t``. Every echo is read by the same loader as a
single-echo exam (:func:`mrtherm.io.exam.load_exam`: vendor phase scaling, frame times), and the echoes must share
the grid, the frames and the field strength.

Outputs (into ``--out``, complete or not at all): ``temperature.nii.gz`` (4-D, water temperature, C; NaN where the
water fraction is below 0.25 (every voxel of water fraction 0.3 or more is measured) or the water signal is below
5 noise SDs), ``temperature_sd.nii.gz`` (4-D), ``fat_fraction.nii.gz``, ``r2star.nii.gz`` (1/s),
``field_map_hz.nii.gz`` (the baseline field), ``field_drift_hz.nii.gz`` (4-D, the drift map), ``drift_source.nii.gz``
(1: fat nearby, 2: the slice's fat plane, 0: none), ``dose_cem43.nii.gz``, ``tmax.nii.gz``,
``lesion_<level>.nii.gz`` and report.json (method, spectrum, thresholds, the drift sources, per-frame cost).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np

from mrtherm.app.summary import RunSummary, SonicationSummary
from mrtherm.backend import to_numpy
from mrtherm.errors import ParameterError
from mrtherm.io import atomic
from mrtherm.io.niftiio import save_volume
from mrtherm.thermometry.waterfat_engine import water_fat_report
from mrtherm.thermometry.dose import lesion_masks, lesion_volumes_ml


def _files(value):
    return [] if value is None else list(value)


def load_echoes_of(r):
    """Every echo a ``--water-fat`` request names (``load_exam(..., water_fat=True)``).

    Parameters
    ----------
    r : RunRequest or argparse.Namespace

    Returns
    -------
    list of Exam
    """
    from mrtherm.io.exam import load_exam  # noqa: PLC0415
    given = getattr(r, "echo_times_ms", None)
    return load_exam(r.magnitude, r.phase, real=r.real, imag=r.imag, dicom=r.dicom, water_fat=True,
                     echo_times_s=None if given is None else [v / 1000.0 for v in given], b0_t=r.b0_t,
                     frame_time_s=r.frame_time_s, frame_times_s=r.frame_times_s, phase_scale=r.phase_scale)


def _frame(exams, t, sign):
    """Frame ``t`` of every echo as complex (n_echoes, z, y, x) (non-finite samples 0, as single-echo frames)."""
    s = np.stack([np.asarray(ex.frame(t)) for ex in exams])
    return np.conj(s) if sign == -1 else s


@dataclasses.dataclass
class WaterFatResult:
    """The maps of a water-fat run (arrays (t, z, y, x) or (z, y, x)) and its report.json content.

    Attributes
    ----------
    temperature_c, temperature_sd_c, field_drift_hz : ndarray of float32, shape (t, z, y, x)
    fat_fraction, r2star_per_s, field_map_hz : ndarray, shape (z, y, x)
    drift_source : ndarray of uint8, shape (z, y, x)
        1: the fat nearby, 2: the slice's fat plane, 0: no fat reference.
    dose_cem43_min : ndarray of float64, shape (z, y, x)
        NaN where not measured.
    tmax_c : ndarray of float32, shape (z, y, x)
    affine : ndarray, shape (4, 4)
    report : dict
    levels : tuple of float
        The CEM43 levels of the lesion masks.
    """

    temperature_c: np.ndarray
    temperature_sd_c: np.ndarray
    field_drift_hz: np.ndarray
    fat_fraction: np.ndarray
    r2star_per_s: np.ndarray
    field_map_hz: np.ndarray
    drift_source: np.ndarray
    dose_cem43_min: np.ndarray
    tmax_c: np.ndarray
    affine: np.ndarray
    report: dict
    levels: tuple

    def write(self, out) -> str:
        """Every output into ``out`` (complete or not at all); returns the folder.

        Parameters
        ----------
        out : str

        Returns
        -------
        str
        """
        with atomic.staged(out) as stage:
            path = lambda name: os.path.join(stage, f"{name}.nii.gz")  # noqa: E731
            for name, arr in (("temperature", self.temperature_c), ("temperature_sd", self.temperature_sd_c),
                              ("field_drift_hz", self.field_drift_hz)):
                save_volume(arr, self.affine, path(name))
            for name, arr in (("fat_fraction", self.fat_fraction), ("r2star", self.r2star_per_s),
                              ("field_map_hz", self.field_map_hz), ("dose_cem43", self.dose_cem43_min),
                              ("tmax", self.tmax_c), ("drift_source", self.drift_source),
                              ("mask", np.isfinite(self.tmax_c))):
                save_volume(np.asarray(arr, dtype=np.float64 if name == "dose_cem43" else np.float32), self.affine,
                            path(name))
            for level, mask in lesion_masks(self.dose_cem43_min, self.levels).items():
                save_volume(mask.astype(np.uint8), self.affine, path(f"lesion_{level:g}"))
            with open(os.path.join(stage, "report.json"), "w", encoding="utf-8") as fh:
                json.dump(self.report, fh, indent=1, allow_nan=False)
        return os.path.abspath(os.fspath(out))


def process_water_fat(echoes, params=None, inputs=None, labels=None, label_table=None,
                      backend="auto") -> WaterFatResult:
    """Water-fat separated thermometry of a multi-echo exam (:mod:`mrtherm.thermometry.waterfat`).

    Parameters
    ----------
    echoes : list of Exam
        One per echo, from ``mrtherm.load_exam(..., water_fat=True)``.
    params : ThermometryParams, optional
        ``baseline_frames``, ``alpha_ppm_per_c``, ``body_temp_c``, ``phase_sign``, ``dose_levels_cem43_min``.
    inputs : dict, optional
        What the report records as the inputs.
    labels : path or (z, y, x) int array, optional
        Label map (the label table's values); its protected structures (spinal cord, nerve root) are watched and
        alarm as in single-echo runs. Fat and marrow labels do not mask here: water-fat measures them.
    label_table : LabelTable or path, optional
    backend : {"auto", "numpy", "cupy"}
        Where the per-frame fits run (:class:`mrtherm.Thermometer`).

    Returns
    -------
    WaterFatResult
    """
    from mrtherm.thermometry.params import ThermometryParams  # noqa: PLC0415
    from mrtherm.thermometry.thermometer import Thermometer  # noqa: PLC0415
    params = (params or ThermometryParams(water_fat=True)).validate()
    first = echoes[0]
    nt, nb = first.shape[0], params.baseline_frames
    if nb >= nt:
        raise ParameterError(f"baseline_frames {nb} leaves no frame of the {nt} to measure")
    t0 = time.perf_counter()
    th = Thermometer(first.shape[1:], first.affine, [ex.te_s for ex in echoes], first.b0_t,
                     [_frame(echoes, t, params.phase_sign) for t in range(nb)],
                     dataclasses.replace(params, water_fat=True), labels=labels, label_table=label_table,
                     backend=backend)
    baseline_s = time.perf_counter() - t0
    fit = th.engine.fit
    times = np.asarray(first.frame_times_s, dtype=np.float64)
    temps, sds, drifts, per_frame = [], [], [], []
    for t in range(nt):
        t1 = time.perf_counter()
        temps.append(to_numpy(th.update(_frame(echoes, t, params.phase_sign), times[t])).copy())
        per_frame.append(time.perf_counter() - t1)
        sds.append(to_numpy(fit.sd_c).reshape(th.shape).astype(np.float32))
        drifts.append(to_numpy(fit.drift_hz).reshape(th.shape).astype(np.float32))
    temps = np.stack(temps)
    dose, tmax = to_numpy(th.dose_cem43_min), to_numpy(th.tmax_c)
    voxel_ml = float(abs(np.linalg.det(first.affine[:3, :3]))) / 1000.0
    report = _report(inputs or {}, params, echoes, th, temps, dose, tmax, times, voxel_ml, baseline_s, per_frame)
    report["protected_structures"], report["alarms"] = th.protected_structures()
    b = fit.base
    return WaterFatResult(temps, np.stack(sds), np.stack(drifts), b.fat_fraction.astype(np.float32),
                          b.r2star_per_s.astype(np.float32), b.field_hz.astype(np.float32),
                          to_numpy(fit.drift_source).reshape(th.shape), dose, tmax, first.affine, report,
                          tuple(params.dose_levels_cem43_min))


def run_water_fat(r, params) -> RunSummary:
    """Process a ``--water-fat`` request into ``r.out`` (module docstring).

    Parameters
    ----------
    r : RunRequest
    params : ThermometryParams

    Returns
    -------
    RunSummary
    """
    inputs = {"magnitude": _files(r.magnitude), "phase": _files(r.phase), "real": _files(r.real),
              "imag": _files(r.imag), "dicom": r.dicom}
    result = process_water_fat(load_echoes_of(r), params, inputs, labels=r.labels, label_table=r.label_table,
                               backend=r.backend)
    out = result.write(r.out)
    return RunSummary(out, (SonicationSummary.from_report(result.report),))


def _report(inputs, params, exams, th, temps, dose, tmax, times, voxel_ml, baseline_s, per_frame):
    finite = np.isfinite(tmax)
    peak = float(np.nanmax(tmax)) if finite.any() else None
    t_peak = None
    if finite.any():  # the frame at which the hottest voxel was hottest
        z, y, x = np.unravel_index(int(np.argmax(np.where(finite, tmax, -np.inf))), tmax.shape)
        t_peak = float(times[int(np.argmax(temps[:, z, y, x]))])
    method = water_fat_report(th)
    by_source = method["drift_source_voxels_last_frame"]
    return {
        "method": {**method,
                   "assumptions": ["receive phase and gain change per frame equally for every echo",
                                   "R2* and the fat spectrum do not change with temperature",
                                   "water and fat of a voxel share the field", "baseline at body temperature"]},
        "inputs": inputs,
        "exam": {"shape_tzyx": list(temps.shape), "echo_times_ms": [1e3 * ex.te_s for ex in exams],
                 "b0_t": exams[0].b0_t, "affine": exams[0].affine.tolist(), "frame_times_s": times.tolist(),
                 "voxel_volume_ml": voxel_ml},
        "noise": {"sd_per_channel": method["noise_sd_per_channel"]},
        "backend": f"{th.backend_used} ({th.engine.name} engine)",
        "drift": {"voxels_from_fat_nearby": by_source["1"], "voxels_from_the_slice_fat_plane": by_source["2"],
                  "voxels_without_fat_reference": by_source["0"]},
        "results": {"peak_temperature_c": peak, "time_of_peak_s": t_peak,
                    "max_dose_cem43_min": float(np.nanmax(dose)) if np.isfinite(dose).any() else None,
                    "lesion_volumes_ml": {f"{k:g}": v for k, v in
                                          lesion_volumes_ml(dose, params.dose_levels_cem43_min, voxel_ml).items()},
                    "measured_voxels": int(np.isfinite(tmax).sum())},
        "mask": {"rules": th.reliability.rules, "labels": th.label_info},
        "cost": {"baseline_fit_s": baseline_s, "per_frame_ms_median": 1e3 * float(np.median(per_frame))},
        "warnings": [],
    }
