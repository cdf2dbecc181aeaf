"""Never a silent blind spot or a silent false map: checks on a finished (or paused) run's maps.

Blind spots. PRF measures nothing in bone, gas, fat or voids, and a voxel whose
signal left it in some frames has a dose that is only a lower bound. When the
heat reaches such voxels the true peak may be higher than the reported one:

- without a target, the *hot region* -- the voxels connected to the hottest
  measured voxel whose rise is at least half the peak rise (and at least
  ``HOT_RISE_MIN_C``) -- is grown by one voxel; unmeasured voxels it then
  touches raise "heating runs into unmeasured voxels (bone/void) at X: the true
  peak may be higher";
- with a target, the same for the hot region, and also: the target voxel not
  measured in some frames, and unmeasured voxels within the target's margin.

Unmeasured means never measured (outside the reliability mask, or invalid in
every frame) or missed in at least one frame (per-frame validity).

False maps. A map's heating is implausible where it lies outside the body, in
air-dark voxels, or scattered far from the hot region:

- heated voxels (rise >= ``HEATED_RISE_C``) or lesion voxels outside the body
  (labels 0 with labels; else outside the body outline drawn from the anatomy:
  the largest connected bright component, holes filled slice by slice) or
  darker than the air floor;
- more than ``FAR_VOXELS_MIN`` heated voxels (and more than ``FAR_FRACTION`` of
  them) farther than ``FAR_MM`` from the hot region.

Each check gives one warning line (terminal, report.json ``trust``, napari
canvas) with world coordinates, never an exception: the maps are still written.
"""

from __future__ import annotations

import numpy as np

RULES = ("blind spots: the hot region (connected to the hottest measured voxel, rise >= half the peak and >= 5 C), "
         "grown by one voxel, touching voxels not measured in every frame; the target not measured, or unmeasured "
         "voxels within its margin. Implausible heating: heated (>= 10 C) or lesion voxels outside the body or in "
         "air-dark voxels; more than 10 (and 10 %) heated voxels farther than 20 mm from the hot region.")

from mrtherm.geometry import voxel_size_zyx_mm

HOT_RISE_MIN_C = 5.0  # a peak rise below this is not "heating" (noise reaches a few C in single voxels)
HOT_FRACTION = 0.5  # the hot region: rise >= half the peak rise
HEATED_RISE_C = 10.0  # a voxel counts as heated for the plausibility checks (2 sigma_T of a poor voxel is < 4 C)
FAR_MM = 20.0  # beyond one focal spot's reach (MRgFUS spots 4-10 mm, conduction a few mm more)
FAR_VOXELS_MIN = 10
FAR_FRACTION = 0.1


def _world(affine, zyx) -> list:
    """World mm of voxel ``(z, y, x)``, rounded to 0.1 mm."""
    p = np.asarray(affine, dtype=np.float64) @ np.array([zyx[2], zyx[1], zyx[0], 1.0])
    return [round(float(v), 1) for v in p[:3]]


def _fmt(mm) -> str:
    return "(" + ", ".join(f"{v + 0.0:g}" for v in mm) + ") mm"  # + 0.0: no "-0"


def hot_region(tmax_c, body_temp_c):
    """The hot region (module docstring) and the hottest voxel.

    Parameters
    ----------
    tmax_c : ndarray, shape (z, y, x)
        C, NaN where never measured.
    body_temp_c : float

    Returns
    -------
    region : ndarray of bool, shape (z, y, x), or None
        None when the peak rise is under ``HOT_RISE_MIN_C``.
    hottest : tuple of int or None
        ``(z, y, x)``.
    """
    from scipy import ndimage  # noqa: PLC0415
    rise = np.where(np.isfinite(tmax_c), tmax_c - body_temp_c, -np.inf)
    peak = float(rise.max()) if rise.size else -np.inf
    if not peak >= HOT_RISE_MIN_C:
        return None, None
    hottest = np.unravel_index(int(np.argmax(rise)), rise.shape)
    components, _ = ndimage.label(rise >= max(HOT_FRACTION * peak, HOT_RISE_MIN_C))
    return components == components[hottest], hottest


def _nearest(candidates, origin, spacing):
    idx = np.argwhere(candidates)
    d = (((idx - np.asarray(origin)) * np.asarray(spacing)) ** 2).sum(axis=1)
    return tuple(int(v) for v in idx[int(np.argmin(d))])


def blind_spot_warnings(tmax_c, measured_frames, n_frames, affine, body_temp_c, target=None) -> list:
    """Warnings where heating (or the target) touches voxels not measured in every frame.

    Parameters
    ----------
    tmax_c : ndarray, shape (z, y, x)
        C, NaN where never measured.
    measured_frames : ndarray of int, shape (z, y, x)
        Frames in which each voxel was measured.
    n_frames : int
    affine : (4, 4) array
    body_temp_c : float
    target : TargetWatch, optional

    Returns
    -------
    list of str
    """
    from scipy import ndimage  # noqa: PLC0415
    spacing = voxel_size_zyx_mm(affine)
    unmeasured = np.asarray(measured_frames) < n_frames
    out = []
    hot, hottest = hot_region(np.asarray(tmax_c, dtype=np.float64), body_temp_c)
    if hot is not None:
        touch = ndimage.binary_dilation(hot, np.ones((3, 3, 3), bool)) & unmeasured
        if touch.any():
            at = _nearest(touch, hottest, spacing)
            out.append(f"heating runs into unmeasured voxels (bone/void) at {_fmt(_world(affine, at))}, next to the "
                       f"hot region around {_fmt(_world(affine, hottest))}: the true peak may be higher")
    if target is not None:
        out += _target_warnings(target, unmeasured, n_frames, affine, spacing)
    return out


def _target_warnings(target, unmeasured, n_frames, affine, spacing) -> list:
    out = []
    missed = sum(not m for m in target.measured)
    where = _fmt([round(v, 1) for v in target.target_mm])
    if missed:
        out.append(f"the target at {where} is not measured in {missed} of {n_frames} frames (no signal there: "
                   "bone, void or outside the reliability mask): its temperature and dose are not known")
    inside = target.margin & unmeasured
    if inside.any():
        at = _nearest(inside, target.voxel_zyx, spacing)
        out.append(f"{int(inside.sum())} voxels within {target.margin_mm:g} mm of the target at {where} are not "
                   f"measured in every frame (nearest at {_fmt(_world(affine, at))}): heating there is not seen")
    return out


BODY_CLASS_RATIO = 3.0
"""The body outline also uses Otsu's split of the log-magnitude histogram when its two classes differ this much
(air against tissue): a noise estimate that errs low (the failure these checks exist for) must not also draw
the body around the air."""


def body_outline(anatomy, threshold):
    """The body: the largest connected component above ``threshold`` (or above the air/tissue split of the
    histogram, when it splits), holes filled slice by slice.

    Parameters
    ----------
    anatomy : ndarray, shape (z, y, x)
        Mean baseline magnitude.
    threshold : float
        Magnitude that counts as signal (the SNR threshold x sigma).

    Returns
    -------
    ndarray of bool, shape (z, y, x)
    """
    from scipy import ndimage  # noqa: PLC0415
    from mrtherm.thermometry.noise_background import log_otsu_split  # noqa: PLC0415
    a = np.asarray(anatomy, dtype=np.float64)
    positive = a[np.isfinite(a) & (a > 0)]
    if positive.size >= 100:
        split, ratio = log_otsu_split(positive)
        if ratio >= BODY_CLASS_RATIO:
            threshold = max(threshold, split)
    bright = a >= threshold
    components, n = ndimage.label(bright)
    if n == 0:
        return bright
    sizes = ndimage.sum(bright, components, index=np.arange(1, n + 1))
    body = components == 1 + int(np.argmax(sizes))
    return np.stack([ndimage.binary_fill_holes(s) for s in body])


def implausible_heating_warnings(tmax_c, dose_cem43_min, anatomy, body, air_level, affine, body_temp_c,
                                 lowest_level_cem43_min) -> list:
    """Warnings for heating outside the body, in air-dark voxels, or scattered far from the hot region.

    Parameters
    ----------
    tmax_c, dose_cem43_min, anatomy : ndarrays, shape (z, y, x)
    body : ndarray of bool, shape (z, y, x)
        The body (labels != 0, or :func:`body_outline`).
    air_level : float or None
        Magnitude below which a voxel is air (:func:`mrtherm.thermometry.masks.air_threshold`).
    affine : (4, 4) array
    body_temp_c, lowest_level_cem43_min : float

    Returns
    -------
    list of str
    """
    from scipy import ndimage  # noqa: PLC0415
    tmax = np.asarray(tmax_c, dtype=np.float64)
    heated = np.isfinite(tmax) & (tmax - body_temp_c >= HEATED_RISE_C)
    heated |= np.nan_to_num(np.asarray(dose_cem43_min, dtype=np.float64)) >= lowest_level_cem43_min
    out = []
    dark = np.zeros(heated.shape, bool) if air_level is None else np.asarray(anatomy) < air_level
    outside = heated & (~np.asarray(body) | dark)
    if outside.any():
        at = tuple(int(v) for v in np.argwhere(outside)[0])
        out.append(f"{int(outside.sum())} heated or lesion voxels lie outside the body or in air-dark voxels "
                   f"(first at {_fmt(_world(affine, at))}): no tissue heats there -- noise or an artefact, not "
                   "ablation; check the reliability mask and the noise estimate")
    hot, _ = hot_region(tmax, body_temp_c)
    if hot is not None and heated.any():
        dist = ndimage.distance_transform_edt(~hot, sampling=voxel_size_zyx_mm(affine))
        far = heated & (dist > FAR_MM)
        if far.sum() > max(FAR_VOXELS_MIN, FAR_FRACTION * heated.sum()):
            at = tuple(int(v) for v in np.argwhere(far)[0])
            out.append(f"{int(far.sum())} heated voxels lie more than {FAR_MM:g} mm from the hot region (first at "
                       f"{_fmt(_world(affine, at))}): scattered heating is not one sonication -- check for noise, "
                       "motion or a wrong reference")
    return out
