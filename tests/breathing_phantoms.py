"""Free-breathing MR-thermometry phantoms of a bone-ablation target, with ground truth written independently.

This module imports nothing from ``mrtherm``: its truth (temperature, CEM43 dose, lesion volume, motion) is
computed from its own analytic scene and heat law with NumPy and SciPy only, so tests can hold the toolkit to it.

Scene
-----
A 2-D scene extruded through the slices (only the heat varies through-plane):

* a body outline (ellipse, centred in the field of view) with air (signal 0) outside;
* soft tissue (magnitude 100, PRF-sensitive, label 1; a small target blob around the focus is label 12);
* a long bone: a stadium (a straight segment of half-length ``bone_half_length_mm`` swept by a disc of radius
  ``bone_radius_mm``) with a dark cortical shell of ``cortex_mm`` (magnitude 3, label 5) around bright marrow
  (magnitude 150, label 6) that carries the fat chemical-shift phase ``2 pi gammabar B0 (-3.4 ppm) TE`` and no
  PRF shift. The long sides of the stadium are straight edges; the heat focus lies beside the middle of one of
  them, ``heat_distance_mm`` from the outer cortex surface along its normal (0 mm: on the cortex surface).

Motion
------
Breathing displacement along the unit vector ``motion_dir_yx``::

    d_mm(t) = motion_mm * (1 - cos(2 pi t / period_s + breathing_phase_rad)) / 2

All truth is relative to frame 0 (the REFERENCE position): ``shift_mm[t] = (d_mm(t) - d_mm(t0)) * motion_dir_yx``
and ``shift_vox = shift_mm / (voxel_y_mm, voxel_x_mm)``, with the convention that the tissue point at reference
position ``p`` (voxel units, (y, x)) is at image position ``p + shift_vox[t]`` in frame ``t``. Frames are
instantaneous snapshots at ``frame_times_s = arange(n_frames) * frame_time_s``.

* ``kind="rigid"``: bone, its susceptibility field, tissue, body outline and heat all move by ``shift``
  (ribs, pelvis). The motion direction is ``motion_angle_deg`` from the +y axis towards +x; the bone axis is
  ``motion_angle_deg - 50`` degrees (default -20 deg) so the motion crosses the cortex edge obliquely.
* ``kind="sliding"``: the bone and its susceptibility field stay fixed in the image; the soft tissue (with the
  body outline and the heat) slides parallel to the straight bone edge (prone spine): the bone axis IS the
  motion direction. Far from the focus, the rounded ends of the bone occlude the tissue that slides under them.

Phase (radians, summed, then wrapped to [-pi, pi))
-----------------------------------------------
* scanner background field: a quadratic polynomial in the image coordinates (fixed in the IMAGE) with a
  peak-to-peak of ``background_rad`` over the field of view, a small per-slice offset and a random constant
  (``seed``);
* bone susceptibility field: a chain of softened 2-D dipoles (``cos 2 phi`` pattern, ``r**-2`` decay, in-plane
  B0 component along +y) along the bone axis, with a smooth amplitude modulation along the axis; scaled so its
  largest magnitude on the outer cortex surface is ``bone_field_rad``; it moves with the bone;
* respiratory B0 (``resp_b0=True``): ``resp_b0_rad * b(t) * pattern(y, x)``, with ``b(t) = (1 - cos(2 pi t /
  period_s + breathing_phase_rad)) / 2`` the breathing signal and a smooth linear pattern (max |.| = 1 over the
  field of view), in IMAGE coordinates;
* drift: ``drift_rad * (t - t0) / (t_last - t0) * (1 + 0.3 x_n + 0.2 y_n)`` (linear in time, first order in
  space; x_n, y_n in [-1, 1] over the field of view);
* PRF (soft tissue only): ``dphi = 2 pi gammabar alpha B0 TE delta_T``, gammabar = 42.577478e6 Hz/T,
  alpha = -0.01e-6 per C: heating gives NEGATIVE phase;
* fat (marrow only): the chemical-shift phase above.

Signal and partial volume
-------------------------
Every voxel is rendered from ``supersample x supersample`` in-plane sub-samples of the continuous scene (complex
signal per sub-sample, averaged into the voxel), so an edge voxel holds the complex mean of the tissues in it and
motion is continuous (sub-voxel). Through-plane, each sub-sample carries the slice-averaged temperature (exact,
erf) and the fields at the slice centre. Complex Gaussian noise of SD ``sigma`` per channel is added last
(tissue SNR = 100 / sigma).

Heat law (a property of TISSUE points: it moves with the tissue)
----------------------------------------------------------------
Temperature ``T = body_temp_c + rise`` with, for a tissue point at reference position (y, x, z) mm::

    rise = dT0 * a(t) * (s0**2 / s2(t)) * exp(-r_xy**2 / (2 s2(t))) * (sz0 / sqrt(sz2(t))) * exp(-dz**2 / (2 sz2(t)))

* ``s0 = heat_fwhm_mm / 2.3548``, ``sz0 = heat_fwhm_z_mm / 2.3548`` (Gaussian in-plane isotropic);
* sonication from ``t_on`` (0.3 frame after the last baseline frame: baseline frames are exactly unheated) for
  ``sonication_s``: ``a = (1 - exp(-(t - t_on) / heat_tau_s)) / (1 - exp(-sonication_s / heat_tau_s))``, widths
  fixed (``s2 = s0**2``, ``sz2 = sz0**2``);
* after ``t_off = t_on + sonication_s``: diffusion spreading ``s2 = s0**2 + 2 D (t - t_off)`` (same for z) with
  D = ``diffusivity_mm2_per_s`` and perfusion decay ``a = exp(-(t - t_off) / perfusion_tau_s)``;
* ``dT0`` is chosen so that the VOXEL truth (below) of a voxel wholly of tissue at the focus voxel equals
  ``heat_peak_rise_c`` at ``t_off`` (``info["heat"]["point_peak_rise_c"]`` is the point amplitude dT0).

Truth
-----
* reference labels ``labels_ref``: per voxel the majority class of its sub-samples at frame 0 (ties: cortex,
  marrow, tissue, air); tissue voxels whose centre lies in the 3 mm target ellipsoid around the focus are 12.
* TISSUE coordinates (``*_tissue_*``): the voxel truth of a reference tissue voxel (label 1 or 12) is the mean
  of the temperature over its tissue sub-samples (slice-averaged through-plane), NaN elsewhere;
* ``dose_tissue_cem43_min``: CEM43 (R = 0.5 for T >= 43 C, 0.25 below; minutes) of the voxel truth curve of
  the analytic law sampled every <= ``fine_dt_s`` (0.05 s, with the nodes ``t_on`` and ``t_off``) from frame 0
  to the last frame, integrated exactly as piecewise linear; ``dose_tissue_framewise_cem43_min``: the exact
  integral of the piecewise-LINEAR interpolation of the truth between frame times (split at 43 C), i.e. the best
  a tool can measure from frames. Both NaN outside tissue. Unheated tissue at 37 C accrues
  0.25**6 * duration_s / 60 CEM43 (~1e-4).
* ``lesion_tissue_ml[240]``: number of tissue voxels with framewise dose >= 240 times the voxel volume (mL);
* ``temperature_image_c``: per frame in IMAGE coordinates: a voxel with >= 90 % of its sub-samples soft tissue
  gets the mean temperature over its tissue sub-samples (tissue point q - shift); NaN otherwise.

Examples
--------
>>> from breathing_phantoms import make_breathing_exam, family
>>> exam = make_breathing_exam(kind="sliding")
>>> exam.magnitude.shape
(44, 3, 64, 64)
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
from scipy import ndimage, special

GAMMABAR_HZ_PER_T = 42.577478e6
ALPHA_PER_C = -0.01e-6
FAT_SHIFT_PPM = -3.4
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

LABEL_AIR, LABEL_TISSUE, LABEL_CORTEX, LABEL_MARROW, LABEL_TARGET = 0, 1, 5, 6, 12
# internal sub-sample classes
CLS_AIR, CLS_TISSUE, CLS_CORTEX, CLS_MARROW = 0, 1, 2, 3
_CLASS_LABEL = np.array([LABEL_AIR, LABEL_TISSUE, LABEL_CORTEX, LABEL_MARROW])

KINDS = ("rigid", "sliding")


# ----------------------------------------------------------------------------------------------------------------
# small public helpers (independent physics)


def breathing_signal(t_s, period_s, breathing_phase_rad=0.0):
    """Breathing state ``b(t) = (1 - cos(2 pi t / period_s + phase)) / 2`` in [0, 1] (0 = end-expiration)."""
    return (1.0 - np.cos(2.0 * np.pi * np.asarray(t_s, float) / period_s + breathing_phase_rad)) / 2.0


def breathing_displacement_mm(t_s, motion_mm, period_s, breathing_phase_rad=0.0):
    """Absolute breathing displacement ``d_mm(t) = motion_mm * b(t)`` along the motion direction."""
    return motion_mm * breathing_signal(t_s, period_s, breathing_phase_rad)


def prf_rad_per_c(te_s, b0_t, alpha_per_c=ALPHA_PER_C):
    """PRF phase per degree C: ``2 pi gammabar alpha B0 TE`` (negative for alpha < 0)."""
    return 2.0 * np.pi * GAMMABAR_HZ_PER_T * alpha_per_c * b0_t * te_s


def wrap_rad(phase_rad):
    """Wrap to [-pi, pi)."""
    return np.mod(np.asarray(phase_rad) + np.pi, 2.0 * np.pi) - np.pi


def _segment_cem43_s(ta_c, tb_c, dt_s, r):
    """Exact integral (seconds) of ``r**(43 - T)`` for T linear from ``ta_c`` to ``tb_c`` over ``dt_s``."""
    c = -np.log(r)  # > 0: r**(43 - T) = exp(c (T - 43))
    x = c * (tb_c - ta_c)
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.where(np.abs(x) < 1e-9, 1.0 + x / 2.0, np.expm1(x) / np.where(x == 0, 1.0, x))
    return dt_s * np.exp(c * (ta_c - 43.0)) * phi


def cem43_linear_min(temperature_c, times_s, axis=0):
    """Exact CEM43 (minutes) of the piecewise-linear curve through ``temperature_c`` sampled at ``times_s``.

    ``CEM43 = integral R**(43 - T(t)) dt`` with R = 0.5 for T >= 43 C and 0.25 below; a segment that crosses
    43 C is split at the crossing. ``temperature_c`` has the time axis ``axis``; NaN propagates.
    """
    temp = np.moveaxis(np.asarray(temperature_c, dtype=np.float64), axis, 0)
    t = np.asarray(times_s, dtype=np.float64)
    if temp.shape[0] != t.shape[0]:
        raise ValueError("temperature and times disagree in length")
    if t.shape[0] < 2:
        return np.zeros(temp.shape[1:])
    dt = np.broadcast_to(np.diff(t).reshape((-1,) + (1,) * (temp.ndim - 1)), temp[1:].shape)
    t0, t1 = temp[:-1], temp[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        seg = _segment_cem43_s(t0, t1, dt, np.where((t0 + t1) / 2.0 >= 43.0, 0.5, 0.25))
        cross = (t0 - 43.0) * (t1 - 43.0) < 0
        if cross.any():  # split at the 43 C crossing
            a, b, d = t0[cross], t1[cross], dt[cross]
            frac = (43.0 - a) / (b - a)
            mid = np.full_like(a, 43.0)
            seg[cross] = (_segment_cem43_s(a, mid, d * frac, np.where(a >= 43.0, 0.5, 0.25))
                          + _segment_cem43_s(mid, b, d * (1.0 - frac), np.where(b >= 43.0, 0.5, 0.25)))
    return seg.sum(axis=0) / 60.0


# ----------------------------------------------------------------------------------------------------------------
# the scene


class BreathingScene:
    """The continuous scene, its motion, fields and heat law; renders frames at sub-sample resolution.

    Coordinates are millimetres in the image: ``y = iy * voxel_y_mm``, ``x = ix * voxel_x_mm``,
    ``z = iz * voxel_z_mm`` at voxel centres (the affine is diagonal with zero offset).
    """

    def __init__(self, *, kind, heat_distance_mm, motion_mm, period_s, breathing_phase_rad, resp_b0, shape_zyx,
                 voxel_mm, frame_times_s, n_baseline, te_s, b0_t, motion_angle_deg, bone_angle_deg, supersample,
                 body_temp_c, heat_peak_rise_c, heat_fwhm_mm, heat_fwhm_z_mm, heat_tau_s, sonication_s,
                 diffusivity_mm2_per_s, perfusion_tau_s, background_rad, bone_field_rad, resp_b0_rad, drift_rad,
                 bone_radius_mm, cortex_mm, bone_half_length_mm, magnitudes, rng):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.kind = kind
        self.bone_moves = kind == "rigid"
        self.nz, self.ny, self.nx = (int(n) for n in shape_zyx)
        self.vz, self.vy, self.vx = (float(v) for v in voxel_mm)
        self.S = int(supersample)
        if self.S < 4:
            raise ValueError("supersample must be >= 4")
        self.frame_times_s = np.asarray(frame_times_s, float)
        self.te_s, self.b0_t = float(te_s), float(b0_t)
        self.body_temp_c = float(body_temp_c)
        self.period_s, self.motion_mm, self.breathing_phase_rad = float(period_s), float(motion_mm), float(
            breathing_phase_rad)
        self.prf = prf_rad_per_c(te_s, b0_t)
        self.fat_phase_rad = float(wrap_rad(2 * np.pi * GAMMABAR_HZ_PER_T * b0_t * FAT_SHIFT_PPM * 1e-6 * te_s))
        self.mag_lut = np.array([0.0, magnitudes["tissue"], magnitudes["cortex"], magnitudes["marrow"]])

        # sub-sample coordinates (mm)
        S = self.S
        self.yq = (np.arange(self.ny * S) + 0.5) / S * self.vy - self.vy / 2.0
        self.xq = (np.arange(self.nx * S) + 0.5) / S * self.vx - self.vx / 2.0
        self.zc = np.arange(self.nz) * self.vz
        fov_y, fov_x = self.ny * self.vy, self.nx * self.vx
        self.cy, self.cx = (self.ny - 1) * self.vy / 2.0, (self.nx - 1) * self.vx / 2.0
        yn = (self.yq - self.cy) / (fov_y / 2.0)
        xn = (self.xq - self.cx) / (fov_x / 2.0)
        Yn, Xn = yn[:, None], xn[None, :]

        # motion
        self.motion_dir = np.array([math.cos(math.radians(motion_angle_deg)),
                                    math.sin(math.radians(motion_angle_deg))])
        if bone_angle_deg is None:
            bone_angle_deg = motion_angle_deg if kind == "sliding" else motion_angle_deg - 50.0
        if kind == "sliding" and abs(((bone_angle_deg - motion_angle_deg) + 90) % 180 - 90) > 1e-9:
            raise ValueError("sliding: the bone axis must be parallel to the motion")
        self.bone_angle_deg = float(bone_angle_deg)
        self.axis = np.array([math.cos(math.radians(bone_angle_deg)), math.sin(math.radians(bone_angle_deg))])
        self.normal = np.array([-self.axis[1], self.axis[0]])
        d = breathing_displacement_mm(self.frame_times_s, motion_mm, period_s, breathing_phase_rad)
        self.displacement_mm = d
        self.shift_mm = (d - d[0])[:, None] * self.motion_dir[None, :]
        self.breath = breathing_signal(self.frame_times_s, period_s, breathing_phase_rad)

        # geometry (reference = frame 0)
        self.body_axes = (0.40 * fov_y, 0.44 * fov_x)
        self.W, self.cortex_mm, self.L = float(bone_radius_mm), float(cortex_mm), float(bone_half_length_mm)
        self.bone_centre = (np.array([self.cy, self.cx]) - (self.W + 2.0) * self.normal + 0.6 * self.axis
                            + np.array([0.37, -0.23]))
        self.heat_distance_mm = float(heat_distance_mm)
        self.focus_yx = self.bone_centre + (self.W + self.heat_distance_mm) * self.normal - 0.6 * self.axis
        self.focus_z = self.zc[self.nz // 2]

        # static fields
        poly = 0.9 * Xn - 0.6 * Yn + 0.35 * Xn * Yn + 0.45 * Xn ** 2 - 0.3 * Yn ** 2
        self.bg2d = background_rad * poly / np.ptp(poly) + rng.uniform(-np.pi, np.pi)
        self.bgz = 0.12 * (np.arange(self.nz) - (self.nz - 1) / 2.0)
        rpat = 0.6 + 0.5 * Yn + 0.3 * Xn
        self.resp2d = (resp_b0_rad if resp_b0 else 0.0) * rpat / np.abs(rpat).max()
        self.drift2d = drift_rad * (1.0 + 0.3 * Xn + 0.2 * Yn)
        self.t_first, self.t_last = self.frame_times_s[0], self.frame_times_s[-1]
        # bone field: chain of softened 2-D dipoles along the axis, amplitude-modulated along it
        self._src_u = np.linspace(-self.L, self.L, 13)
        self._src_w = 1.0 + 0.35 * np.sin(2 * np.pi * self._src_u / 37.0 + 0.5)
        self._sus_scale = 1.0
        phi = np.linspace(0, 2 * np.pi, 721)[:-1]
        edge = []
        for u in np.linspace(-self.L, self.L, 161):
            for s in (1, -1):
                edge.append(self.bone_centre + u * self.axis + s * self.W * self.normal)
        for sgn in (1, -1):
            for p in phi:
                v = np.array([math.cos(p), math.sin(p)])
                if np.dot(v, self.axis) * sgn >= 0:
                    edge.append(self.bone_centre + sgn * self.L * self.axis + self.W * v)
        edge = np.array(edge)
        raw = self._sus_points(edge[:, 0], edge[:, 1], self.bone_centre)
        self._sus_scale = bone_field_rad / np.abs(raw).max()
        self.sus_static = self._sus_grid(np.zeros(2))  # sliding: fixed in the image

        # heat law
        self.s0 = heat_fwhm_mm / FWHM_PER_SIGMA
        self.sz0 = heat_fwhm_z_mm / FWHM_PER_SIGMA
        self.heat_tau_s, self.sonication_s = float(heat_tau_s), float(sonication_s)
        self.D, self.perfusion_tau_s = float(diffusivity_mm2_per_s), float(perfusion_tau_s)
        ft = self.frame_times_s
        dtf = ft[1] - ft[0] if ft.size > 1 else 1.0
        self.t_on = ft[n_baseline - 1] + 0.3 * dtf if n_baseline >= 1 else ft[0]
        self.t_off = self.t_on + self.sonication_s
        self.dT0 = 1.0
        iy, ix = int(round(self.focus_yx[0] / self.vy)), int(round(self.focus_yx[1] / self.vx))
        sub = (np.arange(S) + 0.5) / S - 0.5
        ys, xs = iy * self.vy + sub * self.vy, ix * self.vx + sub * self.vx
        g = np.exp(-(ys - self.focus_yx[0]) ** 2 / (2 * self.s0 ** 2)).mean() * np.exp(
            -(xs - self.focus_yx[1]) ** 2 / (2 * self.s0 ** 2)).mean()
        gz = self.slice_factor(np.array([self.t_off]))[self.nz // 2, 0]
        self.dT0 = heat_peak_rise_c / (g * gz)

        # reference classes and masks
        self.cls_ref = self.classify(np.zeros(2))
        self.tissue_sub_ref = self.cls_ref == CLS_TISSUE

    # -- geometry -------------------------------------------------------------------------------------------------
    def _bone_rseg(self, Y, X, centre):
        u = (Y - centre[0]) * self.axis[0] + (X - centre[1]) * self.axis[1]
        v = (Y - centre[0]) * self.normal[0] + (X - centre[1]) * self.normal[1]
        return np.hypot(np.maximum(np.abs(u) - self.L, 0.0), v)

    def classify(self, shift_mm):
        """Sub-sample classes (Y, X) of the image in the frame whose tissue shift is ``shift_mm`` (y, x)."""
        Y, X = self.yq[:, None], self.xq[None, :]
        bone_c = self.bone_centre + (shift_mm if self.bone_moves else 0.0)
        r = self._bone_rseg(Y, X, bone_c)
        ay, ax = self.body_axes
        body = ((Y - self.cy - shift_mm[0]) / ay) ** 2 + ((X - self.cx - shift_mm[1]) / ax) ** 2 <= 1.0
        cls = np.where(body, CLS_TISSUE, CLS_AIR).astype(np.int8)
        cls[r <= self.W] = CLS_CORTEX
        cls[r < self.W - self.cortex_mm] = CLS_MARROW
        return cls

    def _sus_points(self, Y, X, centre):
        out = 0.0
        r2soft = self.W ** 2 / 2.0
        for u, w in zip(self._src_u, self._src_w):
            py, px = centre + u * self.axis
            dy, dx = Y - py, X - px
            out = out + w * self.W ** 2 * (dy ** 2 - dx ** 2) / (dy ** 2 + dx ** 2 + r2soft) ** 2
        return self._sus_scale * out

    def _sus_grid(self, shift_mm):
        return self._sus_points(self.yq[:, None], self.xq[None, :], self.bone_centre + shift_mm)

    def susceptibility(self, frame):
        """Bone susceptibility phase (Y, X) at sub-samples in ``frame``."""
        return self._sus_grid(self.shift_mm[frame]) if self.bone_moves else self.sus_static

    # -- heat -----------------------------------------------------------------------------------------------------
    def heat_time(self, t_s):
        """``(dT0 * a(t), s2(t), sz2(t))`` of the heat law at times ``t_s``."""
        t = np.atleast_1d(np.asarray(t_s, float))
        a = np.zeros_like(t)
        s2 = np.full_like(t, self.s0 ** 2)
        sz2 = np.full_like(t, self.sz0 ** 2)
        on = (t > self.t_on) & (t <= self.t_off)
        a[on] = ((1 - np.exp(-(t[on] - self.t_on) / self.heat_tau_s))
                 / (1 - np.exp(-self.sonication_s / self.heat_tau_s)))
        post = t > self.t_off
        dtp = t[post] - self.t_off
        a[post] = np.exp(-dtp / self.perfusion_tau_s)
        s2[post] += 2 * self.D * dtp
        sz2[post] += 2 * self.D * dtp
        return self.dT0 * a, s2, sz2

    def point_rise_c(self, y_mm, x_mm, z_mm, t_s):
        """Point-wise rise (C) of the heat law at reference position(s) (broadcast) and time ``t_s`` (scalar)."""
        a, s2, sz2 = (v[0] for v in self.heat_time(t_s))
        r2 = (np.asarray(y_mm) - self.focus_yx[0]) ** 2 + (np.asarray(x_mm) - self.focus_yx[1]) ** 2
        return (a * self.s0 ** 2 / s2 * np.exp(-r2 / (2 * s2)) * self.sz0 / np.sqrt(sz2)
                * np.exp(-(np.asarray(z_mm) - self.focus_z) ** 2 / (2 * sz2)))

    def slice_factor(self, t_s):
        """(nz, nt) slice average of ``(sz0 / sz) exp(-dz**2 / (2 sz**2))`` (exact, erf)."""
        _, _, sz2 = self.heat_time(t_s)
        sz = np.sqrt(sz2)[None, :]
        lo = (self.zc[:, None] - self.vz / 2 - self.focus_z) / (math.sqrt(2) * sz)
        hi = (self.zc[:, None] + self.vz / 2 - self.focus_z) / (math.sqrt(2) * sz)
        return self.sz0 * math.sqrt(math.pi / 2) / self.vz * (special.erf(hi) - special.erf(lo))

    def _g1(self, coords_mm, centre_mm, s2):
        """(n, nt) in-plane 1-D factor ``sqrt(s0**2 / s2) exp(-(c - centre)**2 / (2 s2))``."""
        return np.sqrt(self.s0 ** 2 / s2)[None, :] * np.exp(
            -(coords_mm[:, None] - centre_mm) ** 2 / (2 * s2[None, :]))

    def roi(self, s2_max):
        """Voxel slices (y, x) outside which the in-plane factor is below 1e-15 of its peak at all times."""
        r = math.sqrt(2 * s2_max * math.log(1e15)) + max(self.vy, self.vx)
        y0 = max(0, int(math.floor((self.focus_yx[0] - r) / self.vy)))
        y1 = min(self.ny, int(math.ceil((self.focus_yx[0] + r) / self.vy)) + 1)
        x0 = max(0, int(math.floor((self.focus_yx[1] - r) / self.vx)))
        x1 = min(self.nx, int(math.ceil((self.focus_yx[1] + r) / self.vx)) + 1)
        return slice(y0, y1), slice(x0, x1)

    def tissue_rise_c(self, t_s, roi):
        """(nz, nyr, nxr, nt) voxel truth rise: mean over the voxel's reference tissue sub-samples (NaN if none)."""
        S = self.S
        ys, xs = roi
        a, s2, _ = self.heat_time(t_s)
        gz = self.slice_factor(t_s)  # (nz, nt)
        yy = self.yq[ys.start * S:ys.stop * S]
        xx = self.xq[xs.start * S:xs.stop * S]
        nyr, nxr = ys.stop - ys.start, xs.stop - xs.start
        gy = self._g1(yy, self.focus_yx[0], s2).reshape(nyr, S, -1)
        gx = self._g1(xx, self.focus_yx[1], s2).reshape(nxr, S, -1)
        m = self.tissue_sub_ref[ys.start * S:ys.stop * S, xs.start * S:xs.stop * S].reshape(nyr, S, nxr, S)
        mm = m.transpose(2, 0, 1, 3).reshape(nxr, nyr * S, S).astype(np.float64)
        tmp = np.matmul(mm, gx).reshape(nxr, nyr, S, -1)  # sum over x sub-samples
        gxy = np.einsum("xyat,yat->yxt", tmp, gy)
        n = m.sum(axis=(1, 3)).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            gxy = gxy / n[:, :, None]
        return a[None, None, None, :] * gz[:, None, None, :] * gxy[None]

    # -- rendering ------------------------------------------------------------------------------------------------
    def render_frame(self, frame, with_subsamples=False):
        """Noise-free complex image (nz, ny, nx) of ``frame`` and the image truth temperature (nz, ny, nx).

        With ``with_subsamples``, also the sub-sample complex signal (nz, ny*S, nx*S) and classes (ny*S, nx*S).
        """
        S, t = self.S, self.frame_times_s[frame]
        sh = self.shift_mm[frame]
        cls = self.classify(sh)
        tissue = cls == CLS_TISSUE
        base = (self.bg2d + self.susceptibility(frame) + self.breath[frame] * self.resp2d
                + (t - self.t_first) / max(self.t_last - self.t_first, 1e-12) * self.drift2d)
        base = base + np.where(cls == CLS_MARROW, self.fat_phase_rad, 0.0)
        mag = self.mag_lut[cls]
        a, s2, _ = self.heat_time(t)
        gz = self.slice_factor(t)[:, 0]
        rise2d = (a[0] * self._g1(self.yq - sh[0], self.focus_yx[0], s2)[:, 0][:, None]
                  * self._g1(self.xq - sh[1], self.focus_yx[1], s2)[:, 0][None, :]) * tissue
        phase = (base[None] + self.bgz[:, None, None] + self.prf * gz[:, None, None] * rise2d[None])
        sub = mag[None] * np.exp(1j * phase)
        img = sub.reshape(self.nz, self.ny, S, self.nx, S).mean(axis=(2, 4))
        ntis = tissue.reshape(self.ny, S, self.nx, S).sum(axis=(1, 3))
        rsum = rise2d.reshape(self.ny, S, self.nx, S).sum(axis=(1, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_rise = np.where(ntis >= 0.9 * S * S, rsum / ntis, np.nan)
        temp_img = self.body_temp_c + gz[:, None, None] * mean_rise[None]
        if with_subsamples:
            return img, temp_img, sub, cls
        return img, temp_img


# ----------------------------------------------------------------------------------------------------------------
# the exam


@dataclasses.dataclass
class BreathingExam:
    """A rendered free-breathing exam and its truth (see the module docstring for every convention).

    Attributes
    ----------
    magnitude, phase_rad : float32 (t, z, y, x); phase wrapped to [-pi, pi).
    frame_times_s : (t,) float64.
    affine : (4, 4) voxel (x, y, z) -> world mm, diagonal voxel sizes.
    labels_ref : int16 (z, y, x) in the reference (frame 0) position: 0 air, 1 tissue, 5 cortex, 6 marrow,
        12 target.
    temperature_tissue_c : float64 (t, z, y, x) truth in tissue coordinates, NaN off tissue.
    dose_tissue_cem43_min, dose_tissue_framewise_cem43_min : float64 (z, y, x), NaN off tissue.
    lesion_tissue_ml : {240: mL} of the framewise 240-CEM43 lesion.
    peak_temperature_c : max over tissue of the truth at frame times.
    cortex_band_ref : bool (z, y, x), tissue voxels with a cortex voxel in their in-plane 8-neighbourhood.
    heated_frames : int indices where the truth peak rise exceeds 5 C.
    shift_vox : (t, 2) true (dy, dx) tissue displacement (voxels) relative to frame 0.
    temperature_image_c : float64 (t, z, y, x) truth in image coordinates, NaN unless >= 90 % soft tissue.
    scene : the BreathingScene (for self-checks; not part of the data).
    """

    magnitude: np.ndarray
    phase_rad: np.ndarray
    frame_times_s: np.ndarray
    affine: np.ndarray
    te_s: float
    b0_t: float
    sigma: float
    n_baseline: int
    labels_ref: np.ndarray
    temperature_tissue_c: np.ndarray
    dose_tissue_cem43_min: np.ndarray
    dose_tissue_framewise_cem43_min: np.ndarray
    lesion_tissue_ml: dict
    peak_temperature_c: float
    cortex_band_ref: np.ndarray
    heated_frames: np.ndarray
    shift_vox: np.ndarray
    temperature_image_c: np.ndarray
    info: dict
    body_temp_c: float = 37.0
    scene: BreathingScene = dataclasses.field(default=None, repr=False)

    @property
    def voxel_ml(self):
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    @property
    def tissue_ref(self):
        """Bool (z, y, x): soft-tissue voxels (labels 1 and 12) in the reference position."""
        return np.isin(self.labels_ref, (LABEL_TISSUE, LABEL_TARGET))

    def complex_image(self):
        """complex64 (t, z, y, x) = magnitude * exp(i phase)."""
        return (self.magnitude * np.exp(1j * self.phase_rad.astype(np.float64))).astype(np.complex64)


def make_breathing_exam(kind="rigid", heat_distance_mm=4.0, motion_mm=4.0, period_s=4.0, resp_b0=True, seed=0,
                        shape_zyx=(3, 64, 64), voxel_mm=(4.0, 2.0, 2.0), n_baseline=16, n_frames=44,
                        frame_time_s=1.7, sigma=2.5, te_s=0.01, b0_t=3.0, motion_angle_deg=30.0, *,
                        breathing_phase_rad=0.0, bone_angle_deg=None, supersample=5, body_temp_c=37.0,
                        heat_peak_rise_c=35.0, heat_fwhm_mm=5.0, heat_fwhm_z_mm=10.0, heat_tau_s=8.0,
                        sonication_s=20.0, diffusivity_mm2_per_s=0.14, perfusion_tau_s=60.0,
                        background_rad=2.5, bone_field_rad=1.5, resp_b0_rad=0.5, drift_rad=0.3,
                        bone_radius_mm=10.0, cortex_mm=2.5, bone_half_length_mm=26.0, fine_dt_s=0.05,
                        dose_levels=(17, 40, 100, 200, 240)):
    """Render a free-breathing bone-ablation exam with its truth.

    Parameters
    ----------
    kind : {"rigid", "sliding"}
        "rigid": bone, bone field, tissue and heat move together; "sliding": bone and its field stay, tissue
        slides parallel to the straight bone edge.
    heat_distance_mm : float
        Distance of the heat focus from the outer cortex surface (along its normal, into soft tissue).
    motion_mm, period_s, breathing_phase_rad : float
        Breathing law ``d(t) = motion_mm (1 - cos(2 pi t / period_s + breathing_phase_rad)) / 2``.
    resp_b0 : bool
        Add a respiratory B0 field (``resp_b0_rad`` times the breathing signal) in image coordinates.
    seed : int
        ``numpy.random.default_rng(seed)``: noise and the background constant.
    shape_zyx, voxel_mm : tuple
        Volume shape and voxel size (z, y, x) mm.
    n_baseline, n_frames, frame_time_s : int, int, float
        Unheated baseline frames, total frames, frame spacing (s).
    sigma : float
        Noise SD per channel (tissue magnitude 100).
    te_s, b0_t : float
        Echo time (s) and field (T).
    motion_angle_deg : float
        Motion direction, degrees from +y towards +x.
    bone_angle_deg : float or None
        Bone axis (default: the motion direction for sliding, ``motion_angle_deg - 50`` for rigid).
    supersample : int
        In-plane sub-samples per voxel side (>= 4).
    body_temp_c, heat_peak_rise_c, heat_fwhm_mm, heat_fwhm_z_mm, heat_tau_s, sonication_s, diffusivity_mm2_per_s,
    perfusion_tau_s : float
        The heat law (module docstring); defaults 37 C, 35 C voxel peak rise, FWHM 5 mm in-plane and 10 mm
        through-plane, 8 s rise, 20 s sonication, 0.14 mm2/s, 60 s.
    background_rad, bone_field_rad, resp_b0_rad, drift_rad : float
        Field amplitudes: background peak-to-peak over the field of view (2.5), bone field max on the outer
        cortex (1.5), respiratory B0 at full inspiration (0.5), drift over the exam (0.3).
    bone_radius_mm, cortex_mm, bone_half_length_mm : float
        Stadium radius (10), cortical thickness (2.5), half-length of its straight part (26).
    fine_dt_s : float
        Largest time step of the fine dose truth (0.05 s).
    dose_levels : tuple
        Levels reported in ``info["truth"]["lesion_tissue_ml_levels"]`` (``lesion_tissue_ml`` holds 240 only).

    Returns
    -------
    BreathingExam
    """
    t_start = time.perf_counter()
    if n_baseline < 1 or n_baseline >= n_frames:
        raise ValueError("need 1 <= n_baseline < n_frames")
    rng = np.random.default_rng(seed)
    frame_times_s = np.arange(n_frames, dtype=np.float64) * float(frame_time_s)
    mags = {"tissue": 100.0, "cortex": 3.0, "marrow": 150.0}
    sc = BreathingScene(
        kind=kind, heat_distance_mm=heat_distance_mm, motion_mm=motion_mm, period_s=period_s,
        breathing_phase_rad=breathing_phase_rad, resp_b0=resp_b0, shape_zyx=shape_zyx, voxel_mm=voxel_mm,
        frame_times_s=frame_times_s, n_baseline=n_baseline, te_s=te_s, b0_t=b0_t,
        motion_angle_deg=motion_angle_deg, bone_angle_deg=bone_angle_deg, supersample=supersample,
        body_temp_c=body_temp_c, heat_peak_rise_c=heat_peak_rise_c, heat_fwhm_mm=heat_fwhm_mm,
        heat_fwhm_z_mm=heat_fwhm_z_mm, heat_tau_s=heat_tau_s, sonication_s=sonication_s,
        diffusivity_mm2_per_s=diffusivity_mm2_per_s, perfusion_tau_s=perfusion_tau_s,
        background_rad=background_rad, bone_field_rad=bone_field_rad, resp_b0_rad=resp_b0_rad,
        drift_rad=drift_rad, bone_radius_mm=bone_radius_mm, cortex_mm=cortex_mm,
        bone_half_length_mm=bone_half_length_mm, magnitudes=mags, rng=rng)
    nz, ny, nx, S = sc.nz, sc.ny, sc.nx, sc.S

    # ---- reference labels
    counts = np.stack([(sc.cls_ref == c).reshape(ny, S, nx, S).sum(axis=(1, 3))
                       for c in (CLS_CORTEX, CLS_MARROW, CLS_TISSUE, CLS_AIR)])
    win = np.array([CLS_CORTEX, CLS_MARROW, CLS_TISSUE, CLS_AIR])[np.argmax(counts, axis=0)]
    lab2d = _CLASS_LABEL[win]
    labels = np.repeat(lab2d[None], nz, axis=0).astype(np.int16)
    zz, yy, xx = np.meshgrid(sc.zc, np.arange(ny) * sc.vy, np.arange(nx) * sc.vx, indexing="ij")
    target = (((yy - sc.focus_yx[0]) ** 2 + (xx - sc.focus_yx[1]) ** 2) / 3.0 ** 2
              + (zz - sc.focus_z) ** 2 / 3.0 ** 2) <= 1.0
    labels[target & (labels == LABEL_TISSUE)] = LABEL_TARGET
    tissue = np.isin(labels, (LABEL_TISSUE, LABEL_TARGET))
    cortex = labels == LABEL_CORTEX
    band = tissue & ndimage.binary_dilation(cortex, structure=np.ones((1, 3, 3), bool))

    # ---- truth in tissue coordinates
    _, s2_last, _ = sc.heat_time(frame_times_s[-1:])
    roi = sc.roi(max(float(s2_last[0]), sc.s0 ** 2))
    ys, xs = roi
    temp_tissue = np.full((n_frames, nz, ny, nx), body_temp_c)
    rise_f = sc.tissue_rise_c(frame_times_s, roi)  # (nz, nyr, nxr, nt)
    temp_tissue[:, :, ys, xs] += np.moveaxis(rise_f, -1, 0)
    temp_tissue[:, ~tissue] = np.nan
    duration_s = frame_times_s[-1] - frame_times_s[0]
    still_dose = 0.25 ** (43.0 - body_temp_c) * duration_s / 60.0
    dose_fw = np.full((nz, ny, nx), still_dose)
    dose_fw[:, ys, xs] = cem43_linear_min(temp_tissue[:, :, ys, xs], frame_times_s, axis=0)
    # fine time grid with nodes at t_on and t_off
    nodes = np.unique(np.clip([frame_times_s[0], sc.t_on, sc.t_off, frame_times_s[-1]],
                              frame_times_s[0], frame_times_s[-1]))
    tf = [frame_times_s[:1]]
    for a, b in zip(nodes[:-1], nodes[1:]):
        n = max(1, int(math.ceil((b - a) / fine_dt_s - 1e-9)))
        tf.append(np.linspace(a, b, n + 1)[1:])
    tf = np.concatenate(tf)
    dose_fine = np.full((nz, ny, nx), still_dose)
    acc = np.zeros((nz, ys.stop - ys.start, xs.stop - xs.start))
    chunk = 200
    for i0 in range(0, tf.size - 1, chunk):
        i1 = min(i0 + chunk, tf.size - 1)
        tt = tf[i0:i1 + 1]
        temp = body_temp_c + sc.tissue_rise_c(tt, roi)
        acc += cem43_linear_min(temp, tt, axis=-1)
    dose_fine[:, ys, xs] = acc
    dose_fine[~tissue] = np.nan
    dose_fw[~tissue] = np.nan
    voxel_ml = sc.vz * sc.vy * sc.vx / 1000.0
    lesion_levels = {int(lv): float(np.sum(dose_fw >= lv) * voxel_ml) for lv in dose_levels}
    lesion_fine = {int(lv): float(np.sum(dose_fine >= lv) * voxel_ml) for lv in dose_levels}
    lesion = {240: float(np.sum(dose_fw >= 240.0) * voxel_ml)}
    peak_rise = np.nanmax(temp_tissue, axis=(1, 2, 3)) - body_temp_c
    heated = np.flatnonzero(peak_rise > 5.0)

    # ---- render
    cplx = np.empty((n_frames, nz, ny, nx), np.complex128)
    temp_img = np.empty((n_frames, nz, ny, nx))
    for f in range(n_frames):
        cplx[f], temp_img[f] = sc.render_frame(f)
    noisy = cplx + sigma * (rng.standard_normal(cplx.shape) + 1j * rng.standard_normal(cplx.shape))
    magnitude = np.abs(noisy).astype(np.float32)
    phase = wrap_rad(np.angle(noisy)).astype(np.float32)
    below_pi = np.nextafter(np.float32(np.pi), np.float32(0))
    phase = np.clip(phase, -below_pi, below_pi)  # float32(pi) > pi: keep strictly inside [-pi, pi)

    affine = np.diag([sc.vx, sc.vy, sc.vz, 1.0])
    shift_vox = sc.shift_mm / np.array([sc.vy, sc.vx])[None, :]
    inside = (labels != LABEL_AIR)
    bg_in = (sc.bg2d.reshape(ny, S, nx, S).mean(axis=(1, 3)))[inside[nz // 2]]
    sus_ref = sc._sus_grid(np.zeros(2))
    info = {
        "kind": kind, "heat_distance_mm": float(heat_distance_mm), "motion_mm": float(motion_mm),
        "period_s": float(period_s), "breathing_phase_rad": float(breathing_phase_rad), "resp_b0": bool(resp_b0),
        "seed": int(seed), "shape_zyx": tuple(int(n) for n in shape_zyx), "voxel_mm": tuple(map(float, voxel_mm)),
        "n_baseline": int(n_baseline), "n_frames": int(n_frames), "frame_time_s": float(frame_time_s),
        "sigma": float(sigma), "snr_tissue": mags["tissue"] / sigma if sigma > 0 else float("inf"),
        "te_s": float(te_s), "b0_t": float(b0_t), "body_temp_c": float(body_temp_c),
        "gammabar_hz_per_t": GAMMABAR_HZ_PER_T, "alpha_per_c": ALPHA_PER_C,
        "prf_rad_per_c": float(sc.prf), "fat_shift_ppm": FAT_SHIFT_PPM, "fat_phase_rad": sc.fat_phase_rad,
        "magnitudes": mags, "supersample": S, "reference": "frame 0",
        "motion_angle_deg": float(motion_angle_deg), "motion_dir_yx": sc.motion_dir.tolist(),
        "bone_moves": sc.bone_moves, "bone_angle_deg": sc.bone_angle_deg, "bone_axis_yx": sc.axis.tolist(),
        "bone_normal_yx": sc.normal.tolist(), "bone_centre_yx_mm": sc.bone_centre.tolist(),
        "bone_radius_mm": sc.W, "cortex_mm": sc.cortex_mm, "bone_half_length_mm": sc.L,
        "body_semi_axes_yx_mm": list(sc.body_axes), "body_centre_yx_mm": [sc.cy, sc.cx],
        "focus_yx_mm": sc.focus_yx.tolist(), "focus_z_mm": float(sc.focus_z),
        "focus_world_xyz_mm": [float(sc.focus_yx[1]), float(sc.focus_yx[0]), float(sc.focus_z)],
        "focus_voxel_zyx": [float(sc.focus_z / sc.vz), float(sc.focus_yx[0] / sc.vy), float(sc.focus_yx[1] / sc.vx)],
        "displacement_mm": sc.displacement_mm.tolist(), "breathing_signal": sc.breath.tolist(),
        "fields": {
            "background_rad_ptp_fov": float(background_rad), "background_rad_ptp_body": float(np.ptp(bg_in)),
            "background_slice_step_rad": 0.12, "bone_field_rad_max_at_cortex": float(bone_field_rad),
            "bone_field_rad_max_fov": float(np.abs(sus_ref).max()),
            "bone_field_dipole_axis": "y (cos 2 phi from +y)",
            "resp_b0_rad": float(resp_b0_rad if resp_b0 else 0.0), "drift_rad_over_exam": float(drift_rad),
            "drift_pattern": "1 + 0.3 x_n + 0.2 y_n",
        },
        "heat": {
            "peak_rise_voxel_c": float(heat_peak_rise_c), "point_peak_rise_c": float(sc.dT0),
            "fwhm_mm": float(heat_fwhm_mm), "fwhm_z_mm": float(heat_fwhm_z_mm), "tau_s": float(heat_tau_s),
            "sonication_s": float(sonication_s), "t_on_s": float(sc.t_on), "t_off_s": float(sc.t_off),
            "diffusivity_mm2_per_s": float(diffusivity_mm2_per_s), "perfusion_tau_s": float(perfusion_tau_s),
        },
        "truth": {
            "fine_dt_s": float(fine_dt_s), "fine_samples": int(tf.size), "dose_roi_yx": [
                [ys.start, ys.stop], [xs.start, xs.stop]], "unheated_dose_cem43_min": float(still_dose),
            "lesion_tissue_ml_levels": lesion_levels, "lesion_tissue_fine_ml_levels": lesion_fine,
            "peak_rise_c_per_frame": peak_rise.tolist(), "n_tissue_ref": int(tissue.sum()),
            "n_cortex_band_ref": int(band.sum()), "voxel_ml": voxel_ml,
            "image_tissue_fraction_min": 0.9,
        },
    }
    exam = BreathingExam(
        magnitude=magnitude, phase_rad=phase, frame_times_s=frame_times_s, affine=affine, te_s=float(te_s),
        b0_t=float(b0_t), sigma=float(sigma), n_baseline=int(n_baseline), labels_ref=labels,
        temperature_tissue_c=temp_tissue, dose_tissue_cem43_min=dose_fine,
        dose_tissue_framewise_cem43_min=dose_fw, lesion_tissue_ml=lesion,
        peak_temperature_c=float(np.nanmax(temp_tissue)), cortex_band_ref=band, heated_frames=heated,
        shift_vox=shift_vox, temperature_image_c=temp_img, info=info, body_temp_c=float(body_temp_c), scene=sc)
    info["generation_s"] = time.perf_counter() - t_start
    return exam


# ----------------------------------------------------------------------------------------------------------------
# the family


_FAMILY = [
    # kind, heat_distance_mm, motion_mm, period_s, resp_b0, breathing_phase_rad
    ("rigid", 4.0, 4.0, 4.0, True, 0.0),
    ("sliding", 4.0, 4.0, 4.0, True, 0.0),
    ("rigid", 2.0, 2.0, 3.0, True, 1.1),
    ("sliding", 2.0, 2.0, 3.0, False, 2.3),
    ("rigid", 0.0, 4.0, 6.0, True, 3.9),
    ("sliding", 0.0, 8.0, 3.0, True, 0.0),
    ("rigid", 8.0, 8.0, 6.0, False, 0.7),
    ("sliding", 8.0, 2.0, 6.0, True, 4.6),
    ("rigid", 4.0, 8.0, 3.0, False, 2.0),
    ("sliding", 4.0, 8.0, 6.0, False, 1.5),
    ("rigid", 2.0, 8.0, 6.0, True, 5.3),
    ("sliding", 2.0, 4.0, 6.0, True, 0.4),
    ("rigid", 0.0, 2.0, 3.0, False, 2.9),
    ("sliding", 8.0, 4.0, 3.0, False, 3.3),
]


def family():
    """A covering list (14) of ``make_breathing_exam`` keyword dicts.

    Every value of heat_distance_mm (0, 2, 4, 8), motion_mm (2, 4, 8), period_s (3, 6), kind (rigid, sliding)
    and resp_b0 (True, False) occurs; both kinds occur at distances 2 and 4 (and 0 and 8). The first two are the
    defaults of each kind. Each dict also sets ``seed`` and ``breathing_phase_rad``.
    """
    return [dict(kind=k, heat_distance_mm=d, motion_mm=m, period_s=p, resp_b0=r, breathing_phase_rad=ph, seed=i)
            for i, (k, d, m, p, r, ph) in enumerate(_FAMILY)]


def case_id(params):
    """A short id for a family dict, e.g. ``rigid-d4-m4-p4-resp``."""
    return (f"{params.get('kind', 'rigid')}-d{params.get('heat_distance_mm', 4.0):g}"
            f"-m{params.get('motion_mm', 4.0):g}-p{params.get('period_s', 4.0):g}"
            f"-{'resp' if params.get('resp_b0', True) else 'still'}")
