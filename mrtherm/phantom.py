"""Synthetic MRgFUS bone-ablation exam of a lumbar vertebra, with ground truth.

Anatomy (axial slices, world RAS+ mm, origin at the vertebral-body centre):
a body outline with skin (2 mm) and subcutaneous fat (15 mm posteriorly),
paraspinal and psoas muscles, a vertebral body (cortical shell 2 mm around
marrow), pedicles, lamina and spinous process, the spinal canal with the
cord, nerve roots at the foramina, bowel gas anteriorly, a water bath below
the back (coupling), and a tumour at the posterolateral bone surface.

Signal: gradient-echo magnitude per tissue (cortical bone and gas carry no
signal), PRF phase ``2 pi gammabar alpha B0 TE delta_T`` in tissues where PRF
works (none in fat and marrow), a fat chemical-shift phase, a smooth background
phase, a B0 drift linear in time and in (x, y, z), and complex Gaussian noise
at a stated SNR (muscle magnitude / noise SD per channel).

Free breathing (``motion_mm > 0``, ``mrtherm phantom --motion``): every tissue
except bone slides along the anterior-posterior axis by ``motion_mm * r(t)``,
``r(t) = (1 - cos(2 pi t / breath_period_s)) / 2`` (0 at exhale, 1 at
inhale), carrying its magnitude, its susceptibility (background) phase and its
heating; bone stays put, so the tissue next to the bone edge moves against it.
The complex signal is interpolated (a voxel an edge slides into holds the
complex sum of both tissues, as partial volume does).
Breathing also modulates B0: ``b0_breath_rad * r(t) * (1 + y_n) / 2`` (more
anteriorly). Images sample the tissue at ``x - d(x, t)`` (linear
interpolation, partial volume at edges); the truth temperature is given in image
coordinates, and the truth dose also in tissue coordinates (the exhale
position), where a lesion lives.

Heating: one sonication focused on the bone-muscle interface of the tumour.
During sonication an anisotropic Gaussian (elongated along the beam axis)
rises with time constant ``tau_heat_s``; afterwards it spreads by conduction
(Gaussian diffusion, thermal diffusivity 0.15 mm^2/s, within the range of soft
tissue, 0.13-0.16 mm^2/s) and decays by perfusion. The peak reaches 60-85 C,
i.e. more than one phase wrap at the phantom's TE and B0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

from mrtherm.io import atomic, niftiio
from mrtherm.thermometry.dose import cem43
from mrtherm.io.labels import LabelTable
from mrtherm.thermometry.prf import radians_per_celsius, theoretical_sigma_celsius

# Gradient-echo magnitude per label (arbitrary units), T1-weighted: fat and marrow bright.
TISSUE_MAGNITUDE = {0: 0.0, 1: 110.0, 2: 180.0, 3: 100.0, 4: 90.0, 5: 4.0, 6: 150.0, 7: 0.0, 8: 0.0,
                    9: 70.0, 10: 85.0, 11: 80.0, 12: 120.0, 13: 100.0}
WATER_BATH_MAGNITUDE = 140.0
NO_PRF_LABELS = (2, 5, 6, 7, 8)  # fat, cortical bone, marrow, gas, metal: no PRF shift in the signal


@dataclasses.dataclass
class Phantom:
    """A synthetic exam in memory. Arrays are ``(t, z, y, x)`` / ``(z, y, x)`` NumPy."""

    magnitude: np.ndarray
    phase_rad: np.ndarray
    truth_temperature_c: np.ndarray
    truth_dose_cem43_min: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    te_s: float
    b0_t: float
    frame_times_s: np.ndarray
    info: dict
    respiration: np.ndarray | None = None  # (t,) bellows signal 0 (exhale) .. 1 (inhale); None when static
    truth_dose_tissue_cem43_min: np.ndarray | None = None  # dose in tissue coordinates (reference position)
    truth_temperature_tissue_c: np.ndarray | None = None  # (t, z, y, x) C on tissue points (reference position)


def _ellipse(x, y, cx, cy, ax, ay):
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _anatomy(xw, yw, zw):
    lab = np.zeros(xw.shape, dtype=np.int16)
    body = _ellipse(xw, yw, 0.0, 40.0, 150.0, 110.0)
    inner_skin = _ellipse(xw, yw, 0.0, 40.0, 148.0, 108.0)
    inner_fat = _ellipse(xw, yw, 0.0, 42.0, 135.0, 95.0)
    lab[body] = 4
    lab[inner_skin] = 2
    lab[inner_fat] = 1
    for sx in (-1, 1):
        lab[_ellipse(xw, yw, 30.0 * sx, -44.0, 24.0, 16.0)] = 3      # erector spinae
        lab[_ellipse(xw, yw, 34.0 * sx, 14.0, 14.0, 16.0)] = 3       # psoas
    lab[_ellipse(xw, yw, 25.0, 75.0, 11.0, 9.0)] = 7                 # bowel gas
    lab[_ellipse(xw, yw, -45.0, 95.0, 9.0, 7.0)] = 7
    # vertebral body: cortical shell around marrow
    lab[_ellipse(xw, yw, 0.0, 0.0, 22.0, 18.0)] = 5
    lab[_ellipse(xw, yw, 0.0, 0.0, 20.0, 16.0)] = 6
    # posterior elements: pedicles, lamina ring, spinous and transverse processes
    for sx in (-1, 1):
        ped = (np.abs(xw - 13.0 * sx) <= 4.0) & (yw <= -12.0) & (yw >= -30.0)
        lab[ped] = 5
        lab[(np.abs(xw - 27.0 * sx) <= 12.0) & (np.abs(yw + 30.0) <= 3.0)] = 5
    lamina = _ellipse(xw, yw, 0.0, -30.0, 14.0, 12.0) & ~_ellipse(xw, yw, 0.0, -28.0, 10.0, 8.0) & (yw < -24.0)
    lab[lamina] = 5
    lab[(np.abs(xw) <= 3.5) & (yw <= -36.0) & (yw >= -62.0)] = 5
    # spinal canal (CSF as soft tissue) and cord
    lab[_ellipse(xw, yw, 0.0, -28.0, 10.0, 8.0)] = 1
    lab[_ellipse(xw, yw, 0.0, -28.0, 4.5, 4.0)] = 10
    # nerve roots in the foramina, in the upper slices (foramen level)
    for sx in (-1, 1):
        root = _ellipse(xw, yw, 24.0 * sx, -21.0, 3.0, 2.5) & (zw >= 0.0)
        lab[root] = 11
    # tumour straddling the posterolateral surface of the vertebral body (left side)
    tumour = ((xw + 22.0) ** 2 + (yw + 8.0) ** 2 + (zw / 1.6) ** 2) <= 7.0 ** 2
    lab[tumour & (lab != 10) & (lab != 11)] = 12
    # water bath under the back, outside the body
    water = (~body) & (yw < -40.0) & (np.abs(xw) < 110.0)
    return lab, water


def _sonication(xw, yw, zw, sonication_s, peak_rise_c):
    """Heating of a posterolateral beam onto the tumour surface: ``(rise(t) in C, focus, transducer centre, axis)``.

    A Gaussian spot (7 x 3 x 3 mm) whose amplitude follows first-order heating during
    the sonication and diffusion (kappa 0.15 mm^2/s) with perfusion (tau 60 s) after it.
    """
    focus = np.array([-21.0, -13.0, 2.0])
    transducer_centre = np.array([-120.0, -60.0, 2.0])
    axis = focus - transducer_centre
    axis /= np.linalg.norm(axis)
    perp = np.array([-axis[1], axis[0], 0.0])
    rel = np.stack([xw - focus[0], yw - focus[1], zw - focus[2]], axis=-1)
    r_ax = rel @ axis
    r_pe = rel @ perp
    r_z = rel[..., 2]
    sig0 = np.array([7.0, 3.0, 3.0])  # along beam, across beam, through slice (mm)
    kappa = 0.15  # mm^2/s
    tau_heat, tau_perf = 8.0, 60.0
    t_on, t_off = sonication_s
    shape = xw.shape

    def rise(t):
        if t <= t_on:
            return np.zeros(shape)
        if t <= t_off:
            a = peak_rise_c * (1 - math.exp(-(t - t_on) / tau_heat)) / (1 - math.exp(-(t_off - t_on) / tau_heat))
            s = sig0
        else:
            s = np.sqrt(sig0 ** 2 + 2.0 * kappa * (t - t_off))
            a = peak_rise_c * float(np.prod(sig0 / s)) * math.exp(-(t - t_off) / tau_perf)
        return a * np.exp(-0.5 * ((r_ax / s[0]) ** 2 + (r_pe / s[1]) ** 2 + (r_z / s[2]) ** 2))

    return rise, focus, transducer_centre, axis


def _info(v: dict) -> dict:
    """``phantom.json`` from :func:`make_phantom`'s parameters and products (``v``: name -> value)."""
    n_base = min(v["baseline_frames"], v["n_frames"])
    nz, ny, nx = v["shape_zyx"]
    dz, dy, dx = v["voxel_mm"]
    k_rad, sigma = v["k_rad"], v["sigma"]
    return {
        "description": "synthetic MRgFUS ablation of a lumbar vertebral metastasis (mrtherm phantom)",
        "shape_tzyx": [v["n_frames"], nz, ny, nx], "voxel_mm_zyx": list(v["voxel_mm"]),
        "te_s": v["te_s"], "b0_t": v["b0_t"], "alpha_ppm_per_c": v["alpha_ppm_per_c"],
        "frame_time_s": float(v["frame_time_s"]), "baseline_frames": n_base,
        "snr_muscle": v["snr"], "noise_sigma": sigma,
        "predicted_sd_muscle_c": float(theoretical_sigma_celsius(
            TISSUE_MAGNITUDE[3] * (0.75 + 0.5 * math.exp(-((-44.0 + 60.0) / 90.0) ** 2)) / sigma,
            n_base, v["te_s"], v["b0_t"], v["alpha_ppm_per_c"])),
        "celsius_per_wrap": math.pi / abs(k_rad),
        "sonication_s": list(v["sonication_s"]), "peak_rise_c": v["peak_rise_c"], "body_temp_c": v["body_temp_c"],
        "peak_temperature_c": float(v["truth"].max()),
        "focus_world_mm": v["focus"].tolist(), "beam_axis": v["axis"].tolist(),
        "transducer_centre_world_mm": v["transducer_centre"].tolist(),
        "drift_rad_at_end": list(v["drift_rad"]),
        "transducer_suggestion": {"radius_mm": 100.0, "aperture_mm": 80.0, "n_elements": 256, "frequency_hz": 1.0e6,
                                  "focus_world_mm": v["focus"].tolist(), "axis": v["axis"].tolist()},
        "truth_lesion_volume_ml_240": float((v["dose"] >= 240).sum() * dx * dy * dz / 1000.0),
        "labels_present": sorted(int(lab) for lab in np.unique(v["labels"])),
        "label_names": {int(lab): LabelTable().name(int(lab)) for lab in np.unique(v["labels"])},
        "seed": v["seed"],
    }


def make_phantom(shape_zyx=(8, 128, 128), voxel_mm=(4.0, 2.0, 2.0), n_frames=40, frame_time_s=3.0,
                 te_s=0.012, b0_t=3.0, alpha_ppm_per_c=-0.01, snr=30.0, baseline_frames=5,
                 sonication_s=(15.0, 35.0), peak_rise_c=43.0, body_temp_c=37.0,
                 drift_rad=(0.9, 0.4, -0.3, 0.1), seed=0, motion_mm=0.0, breath_period_s=4.5,
                 b0_breath_rad=0.0) -> Phantom:
    """Build the synthetic exam.

    Parameters
    ----------
    shape_zyx : (nz, ny, nx)
    voxel_mm : (dz, dy, dx) in mm
    n_frames, frame_time_s : number of dynamics and their interval, s
    te_s, b0_t, alpha_ppm_per_c : acquisition and PRF parameters
    snr : muscle magnitude over per-channel noise SD
    baseline_frames : frames before any heating (recorded in ``info``)
    sonication_s : (on, off) times, s
    peak_rise_c : temperature rise at the focus at the end of sonication, C
    drift_rad : (offset, x, y, z) B0 drift in rad reached at the last frame, with
        x, y, z the coefficients of coordinates scaled to [-1, 1] over the field of view
    seed : random seed for the noise
    motion_mm : free-breathing displacement of soft tissue at inhale, mm (0: a static exam)
    breath_period_s : respiratory period, s
    b0_breath_rad : respiratory B0 phase modulation at inhale, rad (anterior edge of the field of view)
    """
    nz, ny, nx = shape_zyx
    dz, dy, dx = voxel_mm
    # voxel (i, j, k) -> world: centred field of view, vertebral body at (0, 0)
    affine = np.array([[dx, 0, 0, -dx * (nx - 1) / 2.0],
                       [0, dy, 0, -dy * (ny - 1) / 2.0 + 18.0],
                       [0, 0, dz, -dz * (nz - 1) / 2.0],
                       [0, 0, 0, 1.0]])
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    xw = affine[0, 0] * i + affine[0, 3]
    yw = affine[1, 1] * j + affine[1, 3]
    zw = affine[2, 2] * k + affine[2, 3]
    labels, water = _anatomy(xw, yw, zw)

    mag0 = np.vectorize(TISSUE_MAGNITUDE.get)(labels).astype(np.float64)
    mag0[water] = WATER_BATH_MAGNITUDE
    # receive-coil sensitivity: posterior (spine) array, brighter near the back
    mag0 *= 0.75 + 0.5 * np.exp(-((yw + 60.0) / 90.0) ** 2)

    times = np.arange(n_frames) * float(frame_time_s)
    if sonication_s[0] < times[baseline_frames - 1] if baseline_frames <= n_frames else False:
        raise ValueError("sonication starts within the baseline frames")
    rise, focus, transducer_centre, axis = _sonication(xw, yw, zw, sonication_s, peak_rise_c)

    k_rad = radians_per_celsius(te_s, b0_t, alpha_ppm_per_c)
    rng = np.random.default_rng(seed)
    sigma = TISSUE_MAGNITUDE[3] / snr
    prf_tissue = ~np.isin(labels, NO_PRF_LABELS)
    xn = (i - (nx - 1) / 2.0) / ((nx - 1) / 2.0)
    yn = (j - (ny - 1) / 2.0) / ((ny - 1) / 2.0)
    zn = (k - (nz - 1) / 2.0) / max((nz - 1) / 2.0, 1.0)
    background = 0.6 * xn - 0.4 * yn + 0.3 * zn + 0.5 * xn * yn
    fat_shift = np.where(np.isin(labels, (2, 6)), 2.1, 0.0)  # fat chemical shift phase at this TE (mod 2 pi)
    drift_shape = drift_rad[0] + drift_rad[1] * xn + drift_rad[2] * yn + drift_rad[3] * zn

    breath = respiration(times, breath_period_s) if motion_mm else None
    fields = {"mag0": mag0, "background": background, "fat": fat_shift, "prf": prf_tissue.astype(np.float64)}
    scene = dict(fields=fields, rise=rise, labels=labels, drift_shape=drift_shape, yn=yn, k_rad=k_rad,
                 sigma=sigma, body_temp_c=body_temp_c, breath=breath, shift_vox_y=motion_mm / dy,
                 b0_breath_rad=b0_breath_rad)
    mag, phase, truth, tissue_truth = _frames(scene, times, rng)
    dose = cem43(truth, times, axis=0)

    info = _info(dict(
        shape_zyx=shape_zyx, voxel_mm=voxel_mm, n_frames=n_frames, frame_time_s=frame_time_s, te_s=te_s, b0_t=b0_t,
        alpha_ppm_per_c=alpha_ppm_per_c, snr=snr, baseline_frames=baseline_frames, sonication_s=sonication_s,
        peak_rise_c=peak_rise_c, body_temp_c=body_temp_c, drift_rad=drift_rad, seed=seed, truth=truth, dose=dose,
        labels=labels, focus=focus, axis=axis, transducer_centre=transducer_centre, sigma=sigma, k_rad=k_rad))
    tissue_dose = None
    if breath is not None:
        tissue_dose = cem43(tissue_truth, times, axis=0)
        info["motion"] = _motion_info(motion_mm, breath_period_s, b0_breath_rad, tissue_dose, voxel_mm)
    return Phantom(magnitude=mag, phase_rad=phase, truth_temperature_c=truth, truth_dose_cem43_min=dose,
                   labels=labels, affine=affine, te_s=te_s, b0_t=b0_t, frame_times_s=times, info=info,
                   respiration=breath, truth_dose_tissue_cem43_min=tissue_dose,
                   truth_temperature_tissue_c=tissue_truth)


MOTION_DEFAULTS = dict(n_frames=50, baseline_frames=16, sonication_s=(51.0, 71.0), motion_mm=4.0,
                       breath_period_s=4.5, b0_breath_rad=0.6)
"""``mrtherm phantom --motion``: 16 free-breathing baseline frames, 4 mm of tissue motion, one heating."""


def _motion_info(motion_mm, breath_period_s, b0_breath_rad, tissue_dose, voxel_mm):
    """``phantom.json``'s ``motion`` section."""
    return {"model": "soft tissue slides along y (anterior) by motion_mm * r(t) against static bone; "
                     "r(t) = (1 - cos(2 pi t / period)) / 2; respiratory B0 phase b0_breath_rad * r(t) * (1 + y_n) / 2",
            "motion_mm": float(motion_mm), "breath_period_s": float(breath_period_s),
            "b0_breath_rad": float(b0_breath_rad),
            "truth_lesion_volume_ml_240_tissue": float((tissue_dose >= 240).sum() * np.prod(voxel_mm) / 1e3)}


def _frames(scene, times, rng):
    """Magnitude, phase, truth in image coordinates and (free breathing) in tissue coordinates, frame by frame."""
    sc = scene
    fields, breath = sc["fields"], sc["breath"]
    shape = (len(times),) + fields["mag0"].shape
    mag, phase, truth = (np.empty(shape, dtype=np.float32) for _ in range(3))
    tissue_truth = np.empty_like(mag) if breath is not None else None
    t_end = times[-1] if len(times) > 1 else 1.0
    for f, t in enumerate(times):
        d_t = sc["rise"](t)
        # complex signal of the tissue itself: magnitude, susceptibility and fat phase, PRF shift
        c = fields["mag0"] * np.exp(1j * (fields["background"] + fields["fat"] + sc["k_rad"] * d_t * fields["prf"]))
        if breath is not None:
            # A voxel an edge slides into holds both tissues: its signal is the complex sum (partial volume), so
            # the complex signal is interpolated, not magnitude and phase apart.
            here = _warped({"re": c.real, "im": c.imag}, d_t, sc["labels"], sc["shift_vox_y"] * breath[f])
            c = here["re"] + 1j * here["im"]
            tissue_truth[f] = sc["body_temp_c"] + d_t
            d_t = here["rise"]
        truth[f] = sc["body_temp_c"] + d_t
        field = sc["drift_shape"] * (t / t_end)
        if breath is not None:
            field = field + sc["b0_breath_rad"] * breath[f] * (1.0 + sc["yn"]) / 2.0
        s = c * np.exp(1j * field)
        s = s + sc["sigma"] * (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape))
        mag[f] = np.abs(s)
        phase[f] = np.angle(s)
    return mag, phase, truth, tissue_truth


def respiration(times_s, period_s):
    """Bellows signal ``(1 - cos(2 pi t / period)) / 2``: 0 at exhale, 1 at inhale.

    Parameters
    ----------
    times_s : array of float
    period_s : float

    Returns
    -------
    ndarray of float64
    """
    return (1.0 - np.cos(2.0 * np.pi * np.asarray(times_s, dtype=np.float64) / float(period_s))) / 2.0


def _warped(fields, rise_t, labels, shift_vox_y):
    """Fields in image coordinates: soft tissue sampled at ``y - shift`` (voxels), bone where it is."""
    from scipy import ndimage  # noqa: PLC0415
    bone = np.isin(labels, (5, 6))
    moving = ~bone
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in labels.shape), indexing="ij")
    coords = np.stack([zz, yy - shift_vox_y * moving, xx])
    # Linear (partial volume at a sliding edge): the image is then a continuous function of the displacement, so
    # equal breathing states give equal images.
    return {name: ndimage.map_coordinates(field, coords, order=1, mode="nearest")
            for name, field in list(fields.items()) + [("rise", rise_t)]}


PHASE_FORMATS = ("radians", "siemens", "ge-mrad")


def _encode_phase(phase_rad, fmt):
    """Phase array and (dtype, slope, inter) as a vendor would store it."""
    if fmt == "radians":
        return phase_rad.astype(np.float32), None
    if fmt == "siemens":  # dcm2niix: int16 stored, slope 2, intercept -4096, values -4096..4094
        stored = np.clip(np.round((phase_rad * 4096.0 / math.pi + 4096.0) / 2.0), 0, 4095).astype(np.int16)
        return stored, (2.0, -4096.0)
    if fmt == "ge-mrad":
        return np.round(phase_rad * 1000.0).astype(np.int16), None
    raise ValueError(f"phase format must be one of {PHASE_FORMATS}, got {fmt!r}")


def write_phantom(out_dir, phantom: Phantom | None = None, phase_format: str = "siemens", **kwargs) -> dict:
    """Write a phantom exam as NIfTI with dcm2niix-style JSON sidecars and ground truth.

    Files: ``magnitude.nii.gz``, ``phase.nii.gz`` (+ ``.json`` sidecars with
    ``EchoTime`` s, ``MagneticFieldStrength`` T), ``labels.nii.gz``,
    ``truth_temperature.nii.gz``, ``truth_dose_cem43.nii.gz``, ``phantom.json``; a free-breathing phantom
    also ``truth_dose_tissue_cem43.nii.gz`` (tissue coordinates) and ``respiration.tsv`` (time_s,
    respiration 0..1). Returns the paths.
    """
    ph = phantom or make_phantom(**kwargs)
    with atomic.staged(out_dir) as stage:
        step = float(ph.frame_times_s[1] - ph.frame_times_s[0]) if len(ph.frame_times_s) > 1 else None
        niftiio.save_volume(ph.magnitude, ph.affine, os.path.join(stage, "magnitude.nii.gz"), frame_time_s=step)
        stored, scaling = _encode_phase(ph.phase_rad, phase_format)
        niftiio.save_stored_integers(stored, ph.affine, os.path.join(stage, "phase.nii.gz"),
                                     *(scaling or (1.0, 0.0)), frame_time_s=step)
        side = {"EchoTime": ph.te_s, "MagneticFieldStrength": ph.b0_t, "RepetitionTime": 0.025,
                "Manufacturer": {"siemens": "Siemens", "ge-mrad": "GE"}.get(phase_format, "mrtherm phantom"),
                "ConversionSoftware": "mrtherm phantom"}
        for name, extra in (("magnitude", {"ImageType": ["ORIGINAL", "PRIMARY", "M"]}),
                            ("phase", {"ImageType": ["ORIGINAL", "PRIMARY", "P"]})):
            with open(os.path.join(stage, f"{name}.json"), "w", encoding="utf-8") as fh:
                json.dump({**side, **extra}, fh, indent=2)
        niftiio.save_volume(ph.labels, ph.affine, os.path.join(stage, "labels.nii.gz"))
        niftiio.save_volume(ph.truth_temperature_c, ph.affine, os.path.join(stage, "truth_temperature.nii.gz"),
                            frame_time_s=step)
        niftiio.save_volume(ph.truth_dose_cem43_min.astype(np.float32), ph.affine,
                            os.path.join(stage, "truth_dose_cem43.nii.gz"))
        if ph.respiration is not None:
            niftiio.save_volume(ph.truth_dose_tissue_cem43_min.astype(np.float32), ph.affine,
                                os.path.join(stage, "truth_dose_tissue_cem43.nii.gz"))
            with open(os.path.join(stage, "respiration.tsv"), "w", encoding="utf-8") as fh:
                fh.write("time_s\trespiration\n")  # a bellows / navigator log: 0 exhale .. 1 inhale
                fh.writelines(f"{t:.3f}\t{r:.6f}\n" for t, r in zip(ph.frame_times_s, ph.respiration))
        with open(os.path.join(stage, "phantom.json"), "w", encoding="utf-8") as fh:
            json.dump({**ph.info, "phase_format": phase_format}, fh, indent=2)
    out = os.path.abspath(os.fspath(out_dir))
    names = [("magnitude", "magnitude.nii.gz"), ("phase", "phase.nii.gz"), ("labels", "labels.nii.gz"),
             ("truth_temperature", "truth_temperature.nii.gz"), ("truth_dose", "truth_dose_cem43.nii.gz"),
             ("info", "phantom.json")]
    if ph.respiration is not None:
        names += [("truth_dose_tissue", "truth_dose_tissue_cem43.nii.gz"), ("respiration", "respiration.tsv")]
    return {n: os.path.join(out, f) for n, f in names}
