"""Processing parameters of thermometry (units in the names), validated in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mrtherm.errors import ParameterError
from mrtherm.thermometry.dose import DEFAULT_NECROSIS_CEM43_MIN
from mrtherm.thermometry.drift import check_order
from mrtherm.thermometry.prf import DEFAULT_ALPHA_PPM_PER_C, DEFAULT_BODY_TEMP_C


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
        unheated Siemens pair 85 s apart (../shared/data, dcm_qa_fmap) order 1 left a
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
    reference : {"auto", "mean", "library", "referenceless", "hybrid"}
        Phase reference (:mod:`mrtherm.thermometry.reference`): the mean of the baseline frames, the
        baseline frames that match each frame best (free breathing), a smooth fit of each frame's own phase,
        the library with a smooth correction and a sparse heat, or ``auto`` (default): hybrid when the baseline
        frames move beyond noise, else the mean.
    referenceless_order : int
        Polynomial order of the referenceless background (1-6; default 2).
    referenceless_basis : {"polynomial", "harmonic"}
        All monomials up to that order (default), or harmonic polynomials only (near-harmonic: a background
        with no susceptibility source in the region solves Laplace's equation; fewer terms, steadier
        extrapolation into the heated region).
    min_signal_fraction : float
        Per-frame validity (:mod:`mrtherm.thermometry.engine`): a reliable voxel is measured in a frame only
        while its magnitude is at least this fraction of its reference's (default 0.3) and at least
        ``snr_threshold`` x sigma. 0.3: heating to 90 C lowers a gradient-echo magnitude by well under half
        (T1 lengthening, about 1 % per C), while a gas pocket or a signal void that slides in leaves noise;
        0 disables the fraction rule (the SNR floor stays).
    target_mm : (x, y, z) world mm, str path, or None
        The treatment target (:mod:`mrtherm.thermometry.target`): a point, a window check's report.json or a
        transducer JSON (its geometric focus); None: the TARGET label's centroid when labels have one.
        report.json then says per frame whether it and ``target_margin_mm`` around it are measured.
    target_margin_mm : float
        Margin around the target whose measurement is reported, mm (default 5).
    water_fat : bool
        Multi-echo water-fat separated thermometry with fat as the field reference
        (:mod:`mrtherm.thermometry.waterfat`); :func:`mrtherm.process` then takes the list of echoes of
        ``mrtherm.load_exam(..., water_fat=True)``.
    bioheat : bool
        Model-based temperature in every voxel of the body, bone and fat included
        (:mod:`mrtherm.thermometry.bioheat`): needs labels, ``target_mm`` (the focus) and ``bioheat_beam_axis``.
    bioheat_beam_axis : (3,) float
        The beam's direction of propagation, world RAS+ (any length).
    bioheat_focal_radius_mm, bioheat_rayleigh_mm : float
        The focused beam's waist radius (1/e^2 of intensity) and Rayleigh length, mm (defaults 1.5 and 8).
    bioheat_resolution_mm : float
        The model grid's in-plane spacing near the focus (through-plane twice it), mm (default 0.5).
    bioheat_cortical_thickness_mm : float
        Cortex kept where only image-grid labels draw the bone (default 1.2 mm).
    register_motion : {"auto", "on", "off"}
        Dose and Tmax in tissue coordinates (:mod:`mrtherm.thermometry.motion`): ``auto`` (default) when the
        baseline frames move beyond noise.
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
    reference: str = "auto"
    referenceless_order: int = 2
    referenceless_basis: str = "polynomial"
    register_motion: str = "auto"
    min_signal_fraction: float = 0.3
    target_mm: object = None
    target_margin_mm: float = 5.0
    water_fat: bool = False
    bioheat: bool = False
    bioheat_beam_axis: object = None
    bioheat_focal_radius_mm: float = 1.5
    bioheat_rayleigh_mm: float = 8.0
    bioheat_resolution_mm: float = 0.5
    bioheat_cortical_thickness_mm: float = 1.2

    def validate(self, n_frames: int | None = None):
        """Check every field (one-line errors naming it).

        Parameters
        ----------
        n_frames : int, optional
            Frames of the exam: then also check that frames are left to monitor after the baseline.

        Returns
        -------
        ThermometryParams
            ``self``, for chaining.

        Raises
        ------
        ParameterError
            The first field out of range, named.
        """
        if int(self.baseline_frames) != self.baseline_frames or self.baseline_frames < 1:
            raise ParameterError(f"baseline_frames must be a positive integer, got {self.baseline_frames!r}")
        if n_frames is not None:
            self._check_frame_count(n_frames)
        self._check_values()
        return self

    def _check_bioheat(self):
        if self.bioheat_beam_axis is not None:
            axis = tuple(float(v) for v in self.bioheat_beam_axis)
            if len(axis) != 3 or not all(math.isfinite(v) for v in axis) or not any(axis):
                raise ParameterError(f"bioheat_beam_axis must be three finite numbers, not all 0, got "
                                     f"{self.bioheat_beam_axis!r}")
            self.bioheat_beam_axis = axis
        for name in ("bioheat_focal_radius_mm", "bioheat_rayleigh_mm", "bioheat_resolution_mm",
                     "bioheat_cortical_thickness_mm"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ParameterError(f"{name} must be a positive number, got {v!r}")
        if self.bioheat and self.bioheat_beam_axis is None:
            raise ParameterError("bioheat needs bioheat_beam_axis (--bioheat-beam-axis X,Y,Z: the beam's direction of "
                                 "propagation)")

    def _check_target(self):
        """A target path becomes a string, a point a tuple of three finite floats (state files are JSON)."""
        import os  # noqa: PLC0415
        t = self.target_mm
        if t is None:
            return
        if isinstance(t, (str, os.PathLike)):
            self.target_mm = os.fspath(t)
            return
        from mrtherm.thermometry.target import checked_point  # noqa: PLC0415
        self.target_mm = checked_point(t, f"target_mm {t!r} (or a JSON file)")

    def _check_frame_count(self, n_frames: int):
        if n_frames < 2:
            raise ParameterError("the exam has 1 frame: thermometry needs baseline frames and at least one later "
                                 "frame to monitor (nothing would be measured)")
        if self.baseline_frames >= n_frames:
            raise ParameterError(f"baseline_frames = {self.baseline_frames} leaves no frame to monitor: the exam "
                                 f"has {n_frames} frames (use at most {n_frames - 1})")

    def _check_values(self):
        from mrtherm.thermometry.reference import REFERENCE_MODES  # noqa: PLC0415
        if self.reference not in REFERENCE_MODES:
            raise ParameterError(f"reference must be one of {', '.join(REFERENCE_MODES)}, got {self.reference!r}")
        if self.reference in ("library", "hybrid") and self.baseline_frames < 2:
            raise ParameterError(f"reference = {self.reference} needs at least 2 baseline frames")
        if int(self.referenceless_order) != self.referenceless_order or not 1 <= self.referenceless_order <= 6:
            raise ParameterError("referenceless_order must be an integer from 1 to 6, "
                                 f"got {self.referenceless_order!r}")
        if self.referenceless_basis not in ("polynomial", "harmonic"):
            raise ParameterError("referenceless_basis must be polynomial or harmonic, "
                                 f"got {self.referenceless_basis!r}")
        if self.register_motion not in ("auto", "on", "off"):
            raise ParameterError(f"register_motion must be auto, on or off, got {self.register_motion!r}")
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
        self._check_target()
        if not (self.target_margin_mm >= 0 and math.isfinite(self.target_margin_mm)):
            raise ParameterError(f"target_margin_mm must be a finite number >= 0, got {self.target_margin_mm!r}")
        if not 0.0 <= self.min_signal_fraction < 1.0:
            raise ParameterError(f"min_signal_fraction must be in [0, 1), got {self.min_signal_fraction!r}")
        if not self.max_sd_theory_c > 0:
            raise ParameterError(f"max_sd_theory_c must be positive, got {self.max_sd_theory_c!r}")
        self._check_bioheat()
        if self.water_fat and (self.reference not in ("auto", "mean") or self.register_motion == "on"):
            # the baseline water-fat fit is the reference: no library, no referenceless fit, no registration
            raise ParameterError("water_fat takes reference = auto or mean and register_motion = auto or off, got "
                                 f"reference = {self.reference}, register_motion = {self.register_motion}")
