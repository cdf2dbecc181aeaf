"""``mrtherm run --water-fat``: a multi-echo exam through :class:`mrtherm.thermometry.waterfat.WaterFatThermometer`.

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

import json
import os
import time

import numpy as np

from mrtherm.app.summary import RunSummary, SonicationSummary
from mrtherm.errors import ParameterError
from mrtherm.io import atomic
from mrtherm.io.niftiio import save_volume
from mrtherm.thermometry import waterfat
from mrtherm.thermometry.dose import cem43, lesion_masks, lesion_volumes_ml


def _files(value):
    return [] if value is None else list(value)


def load_echoes(r):
    """Every echo of a ``--water-fat`` request as an Exam, sorted by echo time; one-line errors on mismatches.

    Parameters
    ----------
    r : RunRequest or argparse.Namespace

    Returns
    -------
    list of Exam
    """
    from mrtherm.io.exam import load_exam  # noqa: PLC0415
    if r.dicom:
        return _dicom_echoes(r, load_exam)
    a, b = (_files(r.magnitude), _files(r.phase)) if r.magnitude else (_files(r.real), _files(r.imag))
    kind = ("magnitude", "phase") if r.magnitude else ("real", "imag")
    if len(a) < 3 or len(a) != len(b):
        raise ParameterError(f"--water-fat needs one --{kind[0]} and one --{kind[1]} file per echo, 3 echoes or more "
                             f"(got {len(a)} and {len(b)})")
    tes = _echo_times(r, len(a))
    exams = [load_exam(**{kind[0]: fa, kind[1]: fb}, te_s=te, b0_t=r.b0_t, frame_time_s=r.frame_time_s,
                       frame_times_s=r.frame_times_s, phase_scale=r.phase_scale)
             for fa, fb, te in zip(a, b, tes)]
    _check_echoes(exams, a)
    return exams


def _dicom_echoes(r, load_exam):
    """Every echo of the multi-echo series in ``r.dicom`` (EchoNumbers 1, 2, ... until one is missing)."""
    from mrtherm.errors import InputFileError  # noqa: PLC0415
    exams = []
    while True:
        try:
            exams.append(load_exam(dicom=r.dicom, echo=len(exams) + 1, b0_t=r.b0_t, frame_time_s=r.frame_time_s,
                                   frame_times_s=r.frame_times_s, phase_scale=r.phase_scale))
        except InputFileError as exc:
            if f"no echo {len(exams) + 1} " not in str(exc):
                raise
            break
    if len(exams) < 3:
        raise ParameterError(f"{r.dicom}: --water-fat needs a series of 3 echoes or more, found {len(exams)}")
    tes = _echo_times(r, len(exams))
    for ex, te in zip(exams, tes):
        if te is not None:
            ex.te_s = te
    _check_echoes(exams, [f"{r.dicom} echo {k + 1}" for k in range(len(exams))])
    return exams


def _check_echoes(exams, names):
    """One grid, frames and field for every echo, in increasing echo time."""
    first, a = exams[0], names
    for path, ex in zip(a, exams):
        if ex.shape != first.shape or not np.allclose(ex.affine, first.affine, atol=1e-3):
            raise ParameterError(f"{path}: another grid or number of frames than {a[0]}")
        if abs(ex.b0_t - first.b0_t) > 1e-3:
            raise ParameterError(f"{path}: field strength {ex.b0_t} T, not {first.b0_t} T as {a[0]}")
    te = [ex.te_s for ex in exams]
    if any(t2 <= t1 for t1, t2 in zip(te, te[1:])):
        raise ParameterError(f"--water-fat: the echoes must be given in increasing echo time, got "
                             f"{', '.join(f'{1e3 * t:g}' for t in te)} ms")


def _echo_times(r, n):
    given = getattr(r, "echo_times_ms", None)
    if given is None:
        return [None] * n
    if len(given) != n:
        raise ParameterError(f"--echo-times-ms gives {len(given)} echo times for {n} echoes")
    return [v / 1000.0 for v in given]


def _frame(exams, t, sign):
    """Frame ``t`` of every echo as complex (n_echoes, z, y, x) (non-finite samples 0, as single-echo frames)."""
    s = np.stack([np.asarray(ex.frame(t)) for ex in exams])
    return np.conj(s) if sign == -1 else s


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
    exams = load_echoes(r)
    first = exams[0]
    nt, nb = first.shape[0], params.baseline_frames
    if nb >= nt:
        raise ParameterError(f"--baseline-frames {nb} leaves no frame of the {nt} to measure")
    voxel_mm = tuple(float(v) for v in np.linalg.norm(first.affine[:3, :3], axis=0)[::-1])  # (dz, dy, dx)
    t0 = time.perf_counter()
    th = waterfat.WaterFatThermometer([_frame(exams, t, params.phase_sign) for t in range(nb)],
                                      [ex.te_s for ex in exams], first.b0_t, voxel_mm, params.alpha_ppm_per_c,
                                      params.body_temp_c)
    baseline_s = time.perf_counter() - t0
    temps, sds, drifts, per_frame = [], [], [], []
    for t in range(nt):
        t1 = time.perf_counter()
        temps.append(th.update(_frame(exams, t, params.phase_sign)))
        per_frame.append(time.perf_counter() - t1)
        sds.append(th.sd_c.reshape(th.shape).astype(np.float32))
        drifts.append(th.drift_hz.reshape(th.shape).astype(np.float32))
    return _write(r, params, exams, th, np.stack(temps), np.stack(sds), np.stack(drifts), baseline_s, per_frame)


def _maps(params, exams, temps):
    times = np.asarray(exams[0].frame_times_s, dtype=np.float64)
    measured = np.isfinite(temps).all(axis=0)
    dose = np.where(measured, cem43(np.where(measured[None], temps, params.body_temp_c), times), np.nan)
    tmax = np.where(measured, np.nanmax(np.where(measured[None], temps, -np.inf), axis=0), np.nan).astype(np.float32)
    return dose, tmax, measured, times


def _write(r, params, exams, th, temps, sds, drifts, baseline_s, per_frame):
    first = exams[0]
    dose, tmax, measured, times = _maps(params, exams, temps)
    voxel_ml = float(abs(np.linalg.det(first.affine[:3, :3]))) / 1000.0
    levels = params.dose_levels_cem43_min
    report = _report(r, params, exams, th, temps, dose, tmax, times, voxel_ml, baseline_s, per_frame)
    aff, dt = first.affine, None
    with atomic.staged(r.out) as stage:
        path = lambda name: os.path.join(stage, name)  # noqa: E731
        save_volume(temps, aff, path("temperature.nii.gz"), dt)
        save_volume(sds, aff, path("temperature_sd.nii.gz"), dt)
        save_volume(drifts, aff, path("field_drift_hz.nii.gz"), dt)
        for name, arr in (("fat_fraction", th.base.fat_fraction), ("r2star", th.base.r2star_per_s),
                          ("field_map_hz", th.base.field_hz), ("dose_cem43", dose), ("tmax", tmax),
                          ("drift_source", th.drift_source.reshape(th.shape)), ("mask", measured)):
            save_volume(np.asarray(arr, dtype=np.float64 if name == "dose_cem43" else np.float32), aff,
                        path(f"{name}.nii.gz"))
        for level, mask in lesion_masks(dose, levels).items():
            save_volume(mask.astype(np.uint8), aff, path(f"lesion_{level:g}.nii.gz"))
        with open(path("report.json"), "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1, allow_nan=False)
    return RunSummary(os.path.abspath(r.out), (SonicationSummary.from_report(report),))


def _report(r, params, exams, th, temps, dose, tmax, times, voxel_ml, baseline_s, per_frame):
    finite = np.isfinite(tmax)
    peak = float(np.nanmax(tmax)) if finite.any() else None
    t_peak = None
    if finite.any():  # the frame at which the hottest voxel was hottest
        z, y, x = np.unravel_index(int(np.argmax(np.where(finite, tmax, -np.inf))), tmax.shape)
        t_peak = float(times[int(np.argmax(temps[:, z, y, x]))])
    sources = th.drift_source.reshape(th.shape)
    return {
        "method": {"name": "water-fat separated multi-echo PRF, fat as the field reference",
                   "fat_peaks_ppm": list(waterfat.FAT_PEAKS_PPM), "fat_amplitudes": list(waterfat.FAT_AMPLITUDES),
                   "spectrum_source": "Hamilton et al., NMR Biomed 2011;24:784 (ISMRM Fat-Water Toolbox default)",
                   "water_fraction_min": waterfat.WATER_FRACTION_MIN, "fat_reference_min": waterfat.FAT_REFERENCE_MIN,
                   "drift_smooth_mm": waterfat.DRIFT_SMOOTH_MM, "gauss_newton_iterations": waterfat.GN_ITERATIONS,
                   "assumptions": ["receive phase and gain change per frame equally for every echo",
                                   "R2* and the fat spectrum do not change with temperature",
                                   "water and fat of a voxel share the field", "baseline at body temperature"]},
        "inputs": {"magnitude": _files(r.magnitude), "phase": _files(r.phase), "real": _files(r.real),
                   "imag": _files(r.imag)},
        "exam": {"shape_tzyx": list(temps.shape), "echo_times_ms": [1e3 * ex.te_s for ex in exams],
                 "b0_t": exams[0].b0_t, "affine": exams[0].affine.tolist(), "frame_times_s": times.tolist(),
                 "voxel_volume_ml": voxel_ml},
        "noise": {"sd_per_channel": th.noise_sd},
        "drift": {"voxels_from_fat_nearby": int((sources == 1).sum()),
                  "voxels_from_the_slice_fat_plane": int((sources == 2).sum()),
                  "voxels_without_fat_reference": int((sources == 0).sum())},
        "results": {"peak_temperature_c": peak, "time_of_peak_s": t_peak,
                    "max_dose_cem43_min": float(np.nanmax(dose)) if np.isfinite(dose).any() else None,
                    "lesion_volumes_ml": {f"{k:g}": v for k, v in
                                          lesion_volumes_ml(dose, params.dose_levels_cem43_min, voxel_ml).items()},
                    "measured_voxels": int(np.isfinite(tmax).sum())},
        "cost": {"baseline_fit_s": baseline_s, "per_frame_ms_median": 1e3 * float(np.median(per_frame))},
        "alarms": [], "warnings": [],
    }
