"""The thermometry pipeline: exam in, temperature / dose / masks / uncertainty out.

Processing streams over frames: apart from the outputs the caller keeps, memory
holds a handful of ``(z, y, x)`` frames (the baseline, the previous unwrapped
phase, the dose and Tmax accumulators), whatever the number of frames.

Per frame ``t``:

1. ``dphi = angle(S_t * conj(S_ref))`` with ``S_ref`` the complex mean of the
   first ``baseline_frames`` frames;
2. temporal unwrapping against frame ``t - 1`` (:func:`mrtherm.thermometry.prf.unwrap_step`);
3. drift: per-slice polynomial fitted to the unwrapped phase in the reference
   region, weighted by ``|S_t|^2`` (:mod:`mrtherm.thermometry.drift`), then subtracted;
4. PRF conversion and absolute temperature ``body_temp_c + delta_T``; NaN where
   the reliability mask is 0;
5. exact CEM43 increment for temperature linear between frames ``t-1`` and
   ``t``; running Tmax; protected-structure watch.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import numpy as np

from mrtherm.io import labels as labels_mod
from mrtherm.thermometry import masks as masks_mod
from mrtherm.io import niftiio
from mrtherm.backend import (namespace, resolve_backend, to_numpy, from_numpy, cupy_module, compute_namespace,
                      is_cupy_namespace, gpu_engine_class)
from mrtherm.thermometry.dose import time_above_segment, DEFAULT_NECROSIS_CEM43_MIN
from mrtherm.thermometry.drift import DriftModel, check_order, solve_drift
from mrtherm.thermometry.engine import ArrayEngine, signal_from_parts
from mrtherm.errors import InputFileError, ParameterError
from mrtherm.thermometry.prf import DEFAULT_ALPHA_PPM_PER_C, DEFAULT_BODY_TEMP_C, radians_per_celsius, theoretical_sigma_celsius
from mrtherm.thermometry.result import ThermometryResult


@dataclass
class ThermometryParams:
    """Processing parameters (units in the names).

    Attributes
    ----------
    baseline_frames : int
        Number of leading frames averaged into the complex reference (>= 1).
    alpha_ppm_per_c : float
        PRF coefficient, ppm/C (-0.01 default; ExAblate uses -0.00909).
    phase_sign : {1, -1}
        -1 for scanners whose phase increases with heating at negative alpha.
    body_temp_c : float
        Temperature of the baseline, C.
    drift_order : {0, 1, 2}
        In-plane polynomial order of the per-slice drift fit. Default 2: on a real
        unheated Siemens pair 85 s apart (tests/data, dcm_qa_fmap) order 1 left a
        field residual of 2.2 C robust SD against 0.48 C of noise, order 2 0.52 C;
        on the phantom both give the same error.
    drift_correction : bool
        False skips the drift subtraction (for comparison only).
    snr_threshold : float
        Voxels with baseline SNR below this are masked.
    max_sd_theory_c : float
        Voxels whose noise-predicted temperature SD exceeds this (C) are masked:
        what makes a voxel unreliable is its temperature precision, which depends on
        TE and B0 as much as on SNR (a 2.5 ms phase-difference TE at SNR 10 gives
        +-7 C). ``inf`` disables the rule.
    dose_levels_cem43_min : tuple of float
        Lesion contour levels, CEM43 minutes.
    auto_ref_target_margin_mm, auto_ref_heated_c, auto_ref_outlier_c : float
        Rules of the automatic drift reference (see :mod:`mrtherm.thermometry.masks`).
    alarm_temperature_c, alarm_dose_cem43_min : float
        Protected-structure alarm thresholds.
    time_above_threshold_c : float
        Temperature for the protected structures' "time above" figure.
    """

    baseline_frames: int = 3
    alpha_ppm_per_c: float = DEFAULT_ALPHA_PPM_PER_C
    phase_sign: int = 1
    body_temp_c: float = DEFAULT_BODY_TEMP_C
    drift_order: int = 2
    drift_correction: bool = True
    snr_threshold: float = 5.0
    max_sd_theory_c: float = 2.0
    dose_levels_cem43_min: tuple = (DEFAULT_NECROSIS_CEM43_MIN,)
    auto_ref_target_margin_mm: float = 10.0
    auto_ref_heated_c: float = 3.0
    auto_ref_outlier_c: float = 3.0
    alarm_temperature_c: float = 45.0
    alarm_dose_cem43_min: float = 1.0
    time_above_threshold_c: float = 45.0

    def validate(self, n_frames: int):
        if int(self.baseline_frames) != self.baseline_frames or self.baseline_frames < 1:
            raise ParameterError(f"baseline_frames must be a positive integer, got {self.baseline_frames!r}")
        if n_frames < 2:
            raise ParameterError("the exam has 1 frame: thermometry needs baseline frames and at least one later "
                                 "frame to monitor (nothing would be measured)")
        if self.baseline_frames >= n_frames:
            raise ParameterError(f"baseline_frames = {self.baseline_frames} leaves no frame to monitor: the exam "
                                 f"has {n_frames} frames (use at most {n_frames - 1})")
        if self.phase_sign not in (1, -1):
            raise ParameterError(f"phase_sign must be 1 or -1, got {self.phase_sign!r}")
        check_order(self.drift_order)
        levels = tuple(float(v) for v in self.dose_levels_cem43_min)
        if not levels or any(not (v > 0 and math.isfinite(v)) for v in levels):
            raise ParameterError(f"dose_levels_cem43_min must be positive numbers, got {self.dose_levels_cem43_min!r}")
        self.dose_levels_cem43_min = tuple(sorted(set(levels)))
        if not math.isfinite(self.body_temp_c):
            raise ParameterError("body_temp_c must be finite")
        if self.snr_threshold < 0:
            raise ParameterError("snr_threshold must be >= 0")
        if not self.max_sd_theory_c > 0:
            raise ParameterError(f"max_sd_theory_c must be positive, got {self.max_sd_theory_c!r}")


def _load_label_volume(src, exam, what: str, table=None):
    """Labels or ROI as a ``(z, y, x)`` NumPy array on the exam grid (nearest-neighbour if needed)."""
    if src is None:
        return None, None
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        data, src_affine = niftiio.load_3d(path, what)
        if not np.all(np.isfinite(data)):
            raise InputFileError(path, f"{what} contain NaN or infinite values")
        if what == "labels" and not np.all(data == np.round(data)):
            raise InputFileError(path, "labels are not integers")
        data = np.round(data).astype(np.int16)
        same_grid = data.shape == tuple(exam.shape_zyx[::-1]) and np.allclose(src_affine, exam.affine, atol=1e-3)
        vol = masks_mod.resample_nearest(data, src_affine, exam.shape_zyx, exam.affine)
        info = {"path": path, "resampled": not same_grid}
    else:
        vol = to_numpy(src)
        if vol.shape != tuple(exam.shape_zyx):
            raise ParameterError(f"{what} array shape {vol.shape} does not match the exam grid {exam.shape_zyx}")
        if what == "labels" and not np.all(vol == np.round(vol)):
            raise ParameterError("labels array is not integer-valued")
        vol = np.round(vol).astype(np.int16)
        path, info = f"<{what} array>", {"path": f"<{what} array>", "resampled": False}
    if what == "labels" and table is not None:
        unknown = table.unknown_values(np.unique(vol))
        if unknown:
            raise InputFileError(path, f"unknown label values {unknown} (not in the label table)")
    return vol, info


def _device_parts(exam, t, dev):
    a, b, polar = exam.frame_parts(t)
    return dev(a), dev(b), polar


def _make_engine(xp, backend_used, model, mask, ref, s_ref, auto, outlier_rad, to_celsius, params):
    """The fused CUDA engine for CuPy arrays when mrtherm_gpu loads, else the array-API engine."""
    args = (xp, model, mask, ref, s_ref, auto, outlier_rad, to_celsius, params.body_temp_c,
            params.auto_ref_heated_c)
    if is_cupy_namespace(xp):
        fused = gpu_engine_class()
        if fused is not None:
            return fused(*args)
    return ArrayEngine(*args)


def process(exam, params: ThermometryParams | None = None, *, labels=None, drift_roi=None, label_table=None,
            backend: str = "auto", keep_temperature: bool = True, temperature_path=None, progress: bool = False,
            profile: bool = False, progress_callback=None, **overrides) -> ThermometryResult:
    """Compute temperature and thermal dose maps from an exam.

    Parameters
    ----------
    exam : Exam
        From :func:`mrtherm.load_exam`.
    params : ThermometryParams, optional
        Processing parameters; keyword ``overrides`` (e.g. ``drift_order=2``)
        replace single fields.
    labels : path or ``(z, y, x)`` int array, optional
        Anatomy labels (DESIGN.md table). Classes where PRF fails are masked;
        spinal cord (10) and nerve roots (11) are watched. A file on another
        grid is resampled (nearest neighbour) through the affines.
    drift_roi : path or ``(z, y, x)`` array, optional
        Reference region of unheated tissue for the drift fit; default automatic.
    label_table : LabelTable or path to JSON, optional
    backend : {"auto", "numpy", "cupy"}
        Array library for the computation. ``auto``: the inputs' own library for
        in-memory arrays, otherwise CuPy when a GPU is usable.
    keep_temperature : bool
        Keep the 4-D temperature series in the result (``(t, z, y, x)`` float32).
    temperature_path : path, optional
        Stream the 4-D temperature NIfTI here frame by frame (memory stays flat).
    progress : bool
        Show a tqdm progress bar.
    progress_callback : callable, optional
        Called as ``progress_callback(frames_done, n_frames)`` after each frame
        (e.g. from a GUI worker thread).
    profile : bool
        Time the fused GPU kernels with CUDA events; the report gains
        ``"kernel_seconds"`` (ignored by the array-API engine).

    Returns
    -------
    ThermometryResult
        Maps in the array library of in-memory inputs (NumPy for files).
    """
    params = dataclasses.replace(params or ThermometryParams(), **overrides)
    params.validate(exam.n_frames)
    if isinstance(label_table, (str, os.PathLike)):
        table = labels_mod.LabelTable.from_json(label_table)
    else:
        table = label_table or labels_mod.LabelTable()

    # ---- array library for the computation and for the returned maps
    in_xp = exam.in_memory_namespace
    if in_xp is not None and backend == "auto":
        xp = in_xp
        backend_used = "cupy" if cupy_module() is not None and in_xp is cupy_module() else "input arrays"
    else:
        backend_used = resolve_backend(backend)
        xp = compute_namespace(backend_used)
    out_xp = in_xp if in_xp is not None else None  # None: NumPy

    def dev(a):
        """Host or foreign array into the compute namespace."""
        if namespace(a) is xp:
            return a
        return from_numpy(to_numpy(a), xp)

    nt = exam.n_frames
    shape = exam.shape_zyx
    n_base = int(params.baseline_frames)
    k_rad_per_c = radians_per_celsius(exam.te_s, exam.b0_t, params.alpha_ppm_per_c)
    to_celsius = params.phase_sign / k_rad_per_c
    warnings = list(exam.warnings)

    # ---- labels, ROI
    label_vol, label_info = _load_label_volume(labels, exam, "labels", table)
    roi_vol, roi_info = _load_label_volume(drift_roi, exam, "drift ROI")

    # ---- baseline
    base_parts = [_device_parts(exam, t, dev) for t in range(n_base)]
    base = [signal_from_parts(a, b, polar, xp) for a, b, polar in base_parts]
    s_ref = base[0]
    for b in base[1:]:
        s_ref = s_ref + b
    s_ref = s_ref / n_base
    base_mag = np.stack([to_numpy(xp.abs(b)) for b in base])
    sigma, sigma_method, noise_warnings = masks_mod.estimate_noise_sigma(base_mag)
    warnings.extend(noise_warnings)
    mean_mag = base_mag.mean(axis=0)
    snr = (mean_mag / sigma).astype(np.float32)
    theory_all = theoretical_sigma_celsius(np.maximum(snr, 1e-12), n_base, exam.te_s, exam.b0_t,
                                           params.alpha_ppm_per_c).astype(np.float32)
    mask = (snr >= params.snr_threshold) & np.isfinite(snr) & (theory_all <= params.max_sd_theory_c)
    mask_rules = [f"baseline SNR >= {params.snr_threshold:g} (noise sigma {sigma:.4g}: {sigma_method})",
                  f"noise-predicted temperature SD <= {params.max_sd_theory_c:g} C"]
    air_level, air_info = masks_mod.air_threshold(mean_mag)
    if air_level is not None:
        mask &= mean_mag >= air_level
        mask_rules.append(f"above the air floor: mean magnitude >= {masks_mod.AIR_FLOOR_FACTOR:g} x the median of the "
                          f"dark class of the log-magnitude histogram ({air_level:.4g}; classes "
                          f"{air_info['class_ratio']:.3g} x apart)")
    if label_vol is not None:
        prf_ok = labels_mod.prf_valid_mask(label_vol, table)
        mask &= prf_ok
        mask_rules.append("labels where PRF works (excluded: " +
                          ", ".join(table.name(v) for v in table.prf_invalid_values()) + ")")
    if not mask.any():
        raise InputFileError(exam.input_paths[0] if exam.input_paths else "<exam>",
                             "no voxel passes the reliability mask (signal too low or all labels PRF-invalid)")

    # ---- drift reference
    if roi_vol is not None:
        ref_static = (roi_vol != 0) & mask
        ref_rule = {"mode": "user", "source": roi_info["path"],
                    "rule": "user drift ROI intersected with the reliability mask"}
        if not ref_static.any():
            raise InputFileError(roi_info["path"], "drift ROI contains no reliable voxel")
        auto = False
    else:
        ref_static = mask.copy()
        rule = ("automatic: reliable voxels; minus voxels that rose more than "
                f"{params.auto_ref_heated_c:g} C in earlier frames; minus voxels departing from the previous "
                f"frame's drift by more than {params.auto_ref_outlier_c:g} C")
        if label_vol is not None and np.any(label_vol == labels_mod.TARGET):
            excl = masks_mod.target_exclusion(label_vol, labels_mod.TARGET, params.auto_ref_target_margin_mm,
                                              masks_mod.zooms_zyx(exam.affine))
            ref_static &= ~excl
            rule += f"; minus the target lesion and {params.auto_ref_target_margin_mm:g} mm around it"
        ref_rule = {"mode": "automatic", "source": None, "rule": rule}
        auto = True
    ref_rule["voxels"] = int(ref_static.sum())

    mask_x = dev(mask)
    model = DriftModel(shape, params.drift_order, xp)
    outlier_rad = abs(params.auto_ref_outlier_c * k_rad_per_c)
    nan32 = xp.asarray(float("nan"), dtype=xp.float32)
    engine = _make_engine(xp, backend_used, model, mask, ref_static, s_ref, auto, outlier_rad, to_celsius,
                          params)
    if profile and hasattr(engine, "enable_timing"):
        engine.enable_timing()

    # ---- protected structures
    protected = {}
    if label_vol is not None:
        for value in labels_mod.PROTECTED:
            sel = (label_vol == value)
            if sel.any():
                reliable = sel & mask
                idx = np.flatnonzero(reliable.ravel())
                protected[value] = {"name": table.name(value), "voxels": int(sel.sum()),
                                    "reliable_voxels": int(idx.size), "idx": dev(idx.astype(np.int64)),
                                    "max_c": [], "mean_c": [], "max_dose": [], "time_above_s": None}
                if idx.size == 0:
                    warnings.append(f"{table.name(value)}: no voxel with reliable phase; temperature not watched")
    watched = [info for info in protected.values() if info["reliable_voxels"]]

    # ---- outputs
    temperature = xp.empty((nt,) + tuple(shape), dtype=xp.float32) if keep_temperature else None
    writer = None
    if temperature_path is not None:
        step = float(np.median(np.diff(exam.frame_times_s))) if nt > 1 else None
        writer = niftiio.FrameWriter(temperature_path, shape, nt, exam.affine, step)
    coeff_hist = np.zeros((nt, shape[0], model.k))
    ref_counts = np.zeros((nt, shape[0]), dtype=np.int64)
    fallback_frames = 0
    peak_curve = np.full(nt, np.nan)
    times = exam.frame_times_s
    neg_inf = xp.asarray(-np.inf, dtype=xp.float32)

    frame_iter = range(nt)
    if progress:
        from tqdm.auto import tqdm
        frame_iter = tqdm(frame_iter, desc="frames", unit="frame")
    temp_prev = None
    upload = getattr(engine, "to_device", None)

    def frame_parts(t):
        if t < n_base:
            return base_parts[t]
        if upload is not None:  # host frames go up asynchronously through pinned buffers
            a, b, polar = exam.frame_parts(t)
            return (*upload(a, b), polar)
        return _device_parts(exam, t, dev)

    try:
        upcoming = frame_parts(0)
        for t in frame_iter:
            a, b, polar = upcoming
            stats_in = engine.pass1(a, b, polar)
            coeffs, fb = solve_drift(*stats_in, model.k)
            if not params.drift_correction:
                coeffs, fb = np.zeros_like(coeffs), np.zeros_like(fb)
            if fb.any():
                # Too few inliers in some slice (e.g. a sudden B0 jump): that slice uses the reference
                # without outlier rejection.
                coeffs_all, _ = solve_drift(*engine.fallback_stats(), model.k)
                coeffs[fb] = coeffs_all[fb]
                fallback_frames += 1
            ref_counts[t] = stats_in[2].astype(np.int64)
            coeff_hist[t] = coeffs
            dt_min = float(times[t] - times[t - 1]) / 60.0 if t > 0 else None
            temp = engine.pass2(coeffs, dt_min, t < n_base)
            if t + 1 < nt:
                upcoming = frame_parts(t + 1)  # disk read overlaps the device's work on frame t

            if temperature is not None:
                temperature[t, ...] = temp
            if writer is not None:
                writer.write(to_numpy(temp))
            # Small per-frame statistics gathered on the device, one transfer to the host.
            flat_t = xp.reshape(temp, (-1,))
            flat_d = xp.reshape(engine.dose, (-1,))
            parts = [xp.reshape(xp.max(xp.where(mask_x, temp, neg_inf)), (1,))]
            for info in watched:
                vals = xp.take(flat_t, info["idx"])
                parts += [xp.reshape(xp.max(vals), (1,)), xp.reshape(xp.mean(vals), (1,)),
                          xp.reshape(xp.astype(xp.max(xp.take(flat_d, info["idx"])), xp.float32), (1,))]
                if temp_prev is not None:
                    prev_vals = xp.take(xp.reshape(temp_prev, (-1,)), info["idx"])
                    seg = time_above_segment(prev_vals, vals, float(times[t] - times[t - 1]),
                                             params.time_above_threshold_c)
                    info["time_above_s"] = seg if info["time_above_s"] is None else info["time_above_s"] + seg
            small = to_numpy(xp.concat(parts)).astype(np.float64)
            peak_curve[t] = small[0]
            for i, info in enumerate(watched):
                info["max_c"].append(float(small[1 + 3 * i]))
                info["mean_c"].append(float(small[2 + 3 * i]))
                info["max_dose"].append(float(small[3 + 3 * i]))
            temp_prev = temp
            if progress_callback is not None:
                progress_callback(t + 1, nt)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    dose, tmax = engine.dose, engine.tmax
    base_sum, base_sumsq = engine.base_sum, engine.base_sumsq

    # ---- uncertainty
    mask_np = mask
    theory = np.where(mask_np, theory_all, np.nan).astype(np.float32)
    if n_base >= 2:
        mean = base_sum / n_base
        var = xp.maximum(base_sumsq - n_base * mean * mean, 0.0) / (n_base - 1)
        # Scaled by sqrt(1+1/N): the SD of one frame's temperature once the noisy N-frame reference is subtracted.
        sd = xp.sqrt(var) * math.sqrt(1.0 + 1.0 / n_base)
        sd = xp.where(mask_x, xp.astype(sd, xp.float32), nan32)
    else:
        sd = xp.full(shape, float("nan"), dtype=xp.float32)
        warnings.append("one baseline frame: empirical temperature SD unavailable (theoretical SD given)")

    dose = xp.where(mask_x, dose, xp.asarray(float("nan"), dtype=xp.float64))
    result = ThermometryResult.build(
        exam=exam, params=params, xp=xp, out_xp=out_xp, temperature=temperature,
        temperature_path=temperature_path, dose=dose, tmax=tmax, sd=sd, sd_theory=theory, snr=snr, mask=mask_np,
        drift_reference=ref_static, drift_rule=ref_rule, coeff_hist=coeff_hist, ref_counts=ref_counts,
        fallback_frames=fallback_frames, noise_sigma=sigma, noise_method=sigma_method, mask_rules=mask_rules,
        labels=label_vol, label_info=label_info, table=table, protected=protected, peak_curve=peak_curve,
        warnings=warnings, backend_used=f"{backend_used} ({engine.name} engine)", k_rad_per_c=k_rad_per_c)
    if profile and hasattr(engine, "kernel_seconds"):
        result.report["kernel_seconds"] = engine.kernel_seconds()
    return result
