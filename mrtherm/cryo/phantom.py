"""Cryoablation phantom: an ice ball growing from a probe tip next to the spine, with truth.

Built on :func:`mrtherm.make_phantom` (same anatomy, noise, drift; no heating).
The ice ball is a sphere around the probe tip whose radius grows as
``R(t) = R_max sqrt((t - t_on) / (t_end - t_on))`` (freezing fronts advance
about as the square root of time). Inside it the signal is void (the noise
alone); outside, tissue cools towards the edge, ``T = 37 - 37 exp(-(r - R) / 4
mm)`` (0 C at the edge), which shifts the PRF phase where PRF works. The truth
temperature inside the ice follows the model of :mod:`mrtherm.cryo.model`
(so the interior tests the code against its stated model, the ice ball and the
cooled rim against independent truth). ``info["cryo"]`` has the tip, the radius
and the true ice volume of every frame (voxel centres inside the sphere), also
without cortical bone, gas and metal (``visible_ice_ml_per_frame``: voxels with
no signal at baseline cannot be seen to freeze on MR).
"""

from __future__ import annotations

import numpy as np

from mrtherm.cryo.model import CryoParams, temperature_in_ice_c
from mrtherm.io.atomic import atomic_file
from mrtherm.phantom import NO_PRF_LABELS, make_phantom
from mrtherm.thermometry.prf import radians_per_celsius

COOLING_LENGTH_MM = 4.0


def _tip(ph):
    """World position of the tumour's centre (label 12): next to a nerve root, as in spinal cryoablation."""
    z, y, x = np.argwhere(ph.labels == 12).mean(axis=0)
    return (ph.affine @ np.array([x, y, z, 1.0]))[:3]


def make_cryo_phantom(shape_zyx=(8, 96, 96), voxel_mm=(4.0, 2.0, 2.0), n_frames=24, frame_time_s=10.0,
                      baseline_frames=4, freeze_on_s=40.0, max_radius_mm=14.0, seed=0):
    """The cryo phantom (see the module docstring).

    Parameters
    ----------
    shape_zyx, voxel_mm, n_frames, frame_time_s, baseline_frames, seed
        As for :func:`mrtherm.make_phantom`.
    freeze_on_s : float
        Start of freezing, s (after the baseline frames).
    max_radius_mm : float
        Ice-ball radius at the last frame, mm.

    Returns
    -------
    Phantom
        With ``truth_temperature_c`` including the cooled rim and the model inside the ice, and
        ``info["cryo"]``.
    """
    ph = make_phantom(shape_zyx=shape_zyx, voxel_mm=voxel_mm, n_frames=n_frames, frame_time_s=frame_time_s,
                      baseline_frames=baseline_frames, sonication_s=(1e9, 1e9 + 1), peak_rise_c=0.0, seed=seed)
    tip = _tip(ph)
    k, j, i = np.meshgrid(*(np.arange(n) for n in ph.labels.shape), indexing="ij")
    world = np.einsum("ab,bzyx->azyx", ph.affine[:3, :3], np.stack([i, j, k]).astype(float))
    r = np.sqrt(((world + ph.affine[:3, 3, None, None, None] - tip[:, None, None, None]) ** 2).sum(axis=0))
    t = ph.frame_times_s
    radius = np.where(t > freeze_on_s, max_radius_mm * np.sqrt(np.clip((t - freeze_on_s) / (t[-1] - freeze_on_s),
                                                                      0, 1)), 0.0)
    k_rad = radians_per_celsius(ph.te_s, ph.b0_t, ph.info["alpha_ppm_per_c"])
    prf = ~np.isin(ph.labels, NO_PRF_LABELS)
    rng = np.random.default_rng(seed + 1000)
    sigma = ph.info["noise_sigma"]
    params = CryoParams()
    volumes, visible = [], []
    dark = np.isin(ph.labels, (5, 7, 8))  # cortical bone, gas, metal: no signal to lose, MR cannot see them freeze
    vox_ml = float(np.prod(voxel_mm)) / 1000.0
    for f, big_r in enumerate(radius):
        if big_r <= 0:
            volumes.append(0.0)
            visible.append(0.0)
            continue
        ice = r <= big_r
        cool = np.where(ice, 0.0, -37.0 * np.exp(-(r - big_r) / COOLING_LENGTH_MM))
        s = ph.magnitude[f] * np.exp(1j * (ph.phase_rad[f] + k_rad * cool * prf))
        void = sigma * (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape))
        s = np.where(ice, void, s)
        ph.magnitude[f], ph.phase_rad[f] = np.abs(s), np.angle(s)
        ph.truth_temperature_c[f] = np.where(ice, temperature_in_ice_c(r, big_r, params), 37.0 + cool)
        volumes.append(float(ice.sum() * vox_ml))
        visible.append(float((ice & ~dark).sum() * vox_ml))
    ph.truth_dose_cem43_min = np.zeros_like(ph.truth_dose_cem43_min)
    ph.info["cryo"] = {"tip_world_mm": tip.tolist(), "freeze_on_s": freeze_on_s, "max_radius_mm": max_radius_mm,
                       "radius_mm_per_frame": radius.tolist(), "ice_ml_per_frame": volumes,
                       "visible_ice_ml_per_frame": visible,
                       "cooling_length_mm": COOLING_LENGTH_MM, "probe_temperature_c": params.probe_temperature_c,
                       "probe_radius_mm": params.probe_radius_mm}
    ph.info["description"] = "synthetic MR-guided cryoablation next to a lumbar vertebra (mrtherm phantom --cryo)"
    return ph


def thermocouple(ph, step_s=1.0, seed=0):
    """A watched thermocouple at the nerve-root voxel nearest the probe tip, read every ``step_s``.

    Parameters
    ----------
    ph : Phantom
        From :func:`make_cryo_phantom`.
    step_s : float
    seed : int

    Returns
    -------
    position_mm : ndarray, shape (3,)
    times_s, temperature_c : ndarray
        Readings: the truth at that voxel, linear between frames, plus 0.1 C of noise.
    """
    tip = np.asarray(ph.info["cryo"]["tip_world_mm"])
    roots = np.argwhere(ph.labels == 11)
    world = (ph.affine @ np.c_[roots[:, ::-1], np.ones(len(roots))].T).T[:, :3]
    z, y, x = roots[int(np.argmin(np.linalg.norm(world - tip, axis=1)))]
    times = np.arange(0.0, ph.frame_times_s[-1] + 1e-9, step_s)
    temps = np.interp(times, ph.frame_times_s, ph.truth_temperature_c[:, z, y, x])
    temps = temps + 0.1 * np.random.default_rng(seed).standard_normal(times.size)
    return (ph.affine @ np.array([x, y, z, 1.0]))[:3], times, temps


def write_cryo_extras(out_dir, ph):
    """``probes.json`` (the cryoprobe tip and the watched thermocouple) and ``probe_log.csv`` beside a phantom.

    Parameters
    ----------
    out_dir : str
    ph : Phantom

    Returns
    -------
    dict of str to str
        Paths.
    """
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415
    pos, times, temps = thermocouple(ph)
    probes = {"probes": [{"name": "cryoprobe", "kind": "cryoprobe", "position_mm": ph.info["cryo"]["tip_world_mm"],
                          "watch": False},
                         {"name": "root", "position_mm": pos.tolist(), "watch": True}]}
    paths = {"probe_positions": os.path.join(out_dir, "probes.json"), "probe_log": os.path.join(out_dir,
                                                                                               "probe_log.csv")}
    for key, write in (("probe_positions", lambda fh: json.dump(probes, fh, indent=2)),
                       ("probe_log", lambda fh: fh.write("time_s,probe,temperature_c\n" + "".join(
                           f"{t:.1f},root,{v:.3f}\n" for t, v in zip(times, temps))))):
        with atomic_file(paths[key], "w", encoding="utf-8") as fh:
            write(fh)
    return paths
