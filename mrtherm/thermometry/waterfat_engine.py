"""Water-fat separated thermometry inside :class:`mrtherm.Thermometer`: the engine and the Thermometer's setup.

With ``ThermometryParams(water_fat=True)`` a Thermometer takes multi-echo frames (complex ``(n_echoes, z, y, x)``,
or ``(a, b, polar)`` of that shape) and its engine is a :class:`WaterFatEngine`: per frame the water-fat fit of
:class:`mrtherm.thermometry.waterfat.WaterFatThermometer` (fat as the field reference) gives the temperature change,
and everything after it is the array engine's: exact CEM43 dose, Tmax, validity counts, baseline statistics, the
protected-structure watch, the target watch and the checkpoint (:meth:`mrtherm.Thermometer.save_state`). So every
mode built on the Thermometer (``mrtherm run``, DICOM treatments, ``mrtherm live``) gets water-fat thermometry the
same way, on NumPy or on a GPU (the fit's arrays choose the path).

The engine implements the engine protocol (:mod:`mrtherm.thermometry.engine_protocol`); its drift statistics are
empty (the drift is the fat's field change, inside the fit), so the Thermometer's polynomial drift fit is zero.
"""

from __future__ import annotations

import numpy as np

from mrtherm.backend import to_numpy
from mrtherm.errors import ParameterError
from mrtherm.io.signal import signal_from_parts
from mrtherm.thermometry import masks, waterfat
from mrtherm.thermometry.engine import ArrayEngine, EngineConfig

__all__ = ["WaterFatEngine", "setup_water_fat", "water_fat_maps", "water_fat_report"]

DRIFT_SOURCES = {0: "none (no fat in the slice: the field drift stays in the temperature)",
                 1: "the fat nearby (in-plane smoothing of the fat voxels' field change)",
                 2: "the slice's plane fitted to its fat voxels"}


class WaterFatEngine(ArrayEngine):
    """The array engine with the water-fat fit as its first pass (module docstring).

    Parameters
    ----------
    xp : array namespace of the computation
    model : mrtherm.thermometry.drift.DriftModel
    config : EngineConfig
        ``mask``: the voxels the water fit measures; ``ref``: the fat reference voxels; ``to_celsius`` 1 (the fit
        gives C).
    fit : WaterFatThermometer
        On the same device as ``xp``.
    """

    name = "water-fat"

    def __init__(self, xp, model, config: EngineConfig, fit):
        super().__init__(xp, model, config)
        self.fit = fit
        self._measured = self.mask
        self._fat_per_slice = fit.fat_reference.reshape(self.shape).sum(axis=(1, 2)).astype(np.float64)

    def to_device(self, a, b):
        """The two frame components (shape ``(n_echoes, z, y, x)``) on the engine's device.

        Parameters
        ----------
        a, b : array, shape (n_echoes, z, y, x)

        Returns
        -------
        tuple of array
        """
        return self._on_device(a), self._on_device(b)

    def set_reference(self, s_ref):
        """Water-fat thermometry has no per-frame phase reference: the baseline fit is its reference.

        Parameters
        ----------
        s_ref : complex array, shape (z, y, x)

        Raises
        ------
        ParameterError
            Always.
        """
        raise ParameterError("water-fat thermometry takes no per-frame reference (its reference is the baseline "
                             "water-fat fit)")

    def pass1(self, a, b, polar: bool):
        """The water-fat fit of one multi-echo frame; empty drift statistics.

        Parameters
        ----------
        a, b : array, shape (n_echoes, z, y, x)
        polar : bool

        Returns
        -------
        tuple of ndarray
            ``(packed, rhs, count)`` zeros on the host (``count``: fat reference voxels per slice).
        """
        xp = self.xp
        temp = self.fit.update(signal_from_parts(a, b, polar, xp))
        delta = xp.asarray(temp) - self.body_temp_c
        self.valid = self._measured & xp.isfinite(delta)
        self.u = xp.where(self.valid, delta, 0.0)
        self.reanchored = xp.zeros(self.shape, dtype=xp.bool)
        self.fit_valid = self.valid
        return self._empty_stats()

    def _empty_stats(self):
        z, k = self.shape[0], self.model.k
        return np.zeros((z, k * (k + 1) // 2)), np.zeros((z, k)), self._fat_per_slice.copy()

    def fallback_stats(self):
        """As :meth:`pass1` (no outlier exclusion to leave out).

        Returns
        -------
        tuple of ndarray
        """
        return self._empty_stats()

    def fit_inputs(self):
        """The last frame's temperature change (C) and zero drift-fit weights.

        Returns
        -------
        tuple of array
        """
        return self.u, self.xp.zeros(self.shape, dtype=self.xp.float64)

    def state(self) -> dict:
        """The array engine's accumulators and the water-fat fit (:meth:`WaterFatThermometer.state`).

        Returns
        -------
        dict of str to ndarray
        """
        out = super().state()
        out.update({f"wf_{k}": v for k, v in self.fit.state().items()})
        return out

    def restore(self, state: dict):
        """Continue from :meth:`state`.

        Parameters
        ----------
        state : dict of str to ndarray
        """
        super().restore({k: v for k, v in state.items() if not k.startswith("wf_")})
        backend = "cupy" if self.fit.xp is not np else "numpy"
        self.fit = waterfat.WaterFatThermometer.from_state({k[3:]: v for k, v in state.items()
                                                            if k.startswith("wf_")}, backend)


def _voxel_mm(affine):
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)[::-1])


def setup_water_fat(th, baseline_frames, backend_used):
    """Fit the baseline and fill what the Thermometer's other parts read (masks, reference, drift rule, anatomy).

    Parameters
    ----------
    th : Thermometer
        Under construction: ``params``, ``shape``, ``affine``, ``te_echoes_s``, ``b0_t``, ``xp`` set.
    baseline_frames : list of complex array, shape (n_echoes, z, y, x)
    backend_used : {"numpy", "cupy"}

    Returns
    -------
    fit : WaterFatThermometer
    s_ref : complex ndarray, shape (z, y, x)
        The complex baseline of the first echo (the engine's ``s_ref``).
    """
    p = th.params
    n = len(th.te_echoes_s)
    frames = [np.asarray(to_numpy(f), dtype=np.complex128) for f in baseline_frames]
    if any(f.shape != (n, *th.shape) for f in frames):
        raise ParameterError(f"water-fat frames must have shape (n_echoes, z, y, x) = {(n, *th.shape)}, got "
                             f"{frames[0].shape}")
    fit = waterfat.WaterFatThermometer(frames, th.te_echoes_s, th.b0_t, _voxel_mm(th.affine),
                                                      p.alpha_ppm_per_c, p.body_temp_c, backend=backend_used)
    fill_static(th, fit)
    return fit, np.mean(np.stack(frames), axis=0)[0].astype(np.complex64)


def fill_static(th, fit):
    """The Thermometer's masks, reference decision and drift rule from a water-fat fit (also on restore).

    Parameters
    ----------
    th : Thermometer
    fit : WaterFatThermometer
    """
    b, shape = fit.base, th.shape
    mask = fit.measured.reshape(shape)
    snr = (np.abs(b.water) / max(fit.noise_sd, 1e-30)).astype(np.float32)
    rules = [f"water-fat: estimated water fraction >= {waterfat.WATER_FRACTION_MIN:g} and water amplitude >= "
             f"{fit.snr_min:g} noise SDs (per echo) in the baseline fit; fat and marrow labels do not mask (the "
             "water in them is measured)"]
    th.reliability = masks.Reliability(mask, snr, fit.predicted_sd_c(), float(fit.noise_sd),
                                       "water-fat baseline fit residuals (median, chi-square)", rules, [], None)
    th.reference_decision = {"requested": th.params.reference, "used": "mean", "motion_detected": False,
                             "why": "water-fat: the baseline water-fat fit is the reference, fat the field reference"}
    th.registration, th.frame_reference = None, None
    th.still = np.ones(shape, dtype=bool)
    th.drift_ref = fit.fat_reference.reshape(shape)
    th.auto_ref = False
    th.drift_rule = {"reference": "fat", "rule": f"field change from the fat voxels (fat fraction >= "
                     f"{waterfat.FAT_REFERENCE_MIN:g}) fitted per frame with the water shift, smoothed in-plane "
                     f"({waterfat.DRIFT_SMOOTH_MM:g} mm), else the slice's fat plane, else 0 (report water_fat)"}
    th.anatomy = (np.abs(b.water) + np.abs(b.fat)).astype(np.float32)


def water_fat_maps(th) -> dict:
    """The water-fat maps a result writes: fat fraction, R2*, the baseline field, the last drift map and its source.

    Parameters
    ----------
    th : Thermometer
        With ``water_fat``.

    Returns
    -------
    dict of str to ndarray
        File name to host array.
    """
    fit, shape = th.engine.fit, th.shape
    b = fit.base
    return {"fat_fraction.nii.gz": b.fat_fraction.astype(np.float32),
            "r2star.nii.gz": b.r2star_per_s.astype(np.float32),
            "field_map_hz.nii.gz": b.field_hz.astype(np.float32),
            "field_drift_hz.nii.gz": to_numpy(fit.drift_hz).reshape(shape).astype(np.float32),
            "drift_source.nii.gz": to_numpy(fit.drift_source).reshape(shape).astype(np.uint8),
            "temperature_sd_fit.nii.gz": to_numpy(fit.sd_c).reshape(shape).astype(np.float32)}


def water_fat_report(th) -> dict:
    """report.json ``water_fat``: the method, the spectrum, the thresholds and where each voxel's drift came from.

    Parameters
    ----------
    th : Thermometer
        With ``water_fat``.

    Returns
    -------
    dict
    """
    fit = th.engine.fit
    sources = to_numpy(fit.drift_source)
    return {"method": "water-fat separated multi-echo PRF, fat as the field reference",
            "echo_times_ms": [1e3 * t for t in th.te_echoes_s],
            "fat_peaks_ppm": list(waterfat.FAT_PEAKS_PPM), "fat_amplitudes": list(waterfat.FAT_AMPLITUDES),
            "spectrum_source": "Hamilton et al., NMR Biomed 2011;24:784 (ISMRM Fat-Water Toolbox default)",
            "water_fraction_min": waterfat.WATER_FRACTION_MIN, "fat_reference_min": waterfat.FAT_REFERENCE_MIN,
            "drift_smooth_mm": waterfat.DRIFT_SMOOTH_MM, "gauss_newton_iterations": waterfat.GN_ITERATIONS,
            "noise_sd_per_channel": fit.noise_sd,
            "drift_source_codes": {str(k): v for k, v in DRIFT_SOURCES.items()},
            "drift_source_voxels_last_frame": {str(k): int((sources == k).sum()) for k in DRIFT_SOURCES},
            "fat_reference_voxels": int(fit.fat_reference.sum()), "measured_voxels": int(fit.measured.sum())}
