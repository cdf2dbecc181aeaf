"""Qt-free model code of the napari plugin: geometry, layer specifications, dose per frame, texts.

Geometry: a NIfTI affine maps voxel (i, j, k) = (x, y, z) to world RAS+ mm. napari arrays are
(z, y, x) (and (t, z, y, x)); the plugin uses world axes (Z, Y, X) in mm and, for series, time in
seconds. Each layer gets its voxel sizes as napari ``scale`` (so that one slider step is one slice)
and the rest of the NIfTI affine (rotation, obliquity, origin) as napari ``affine``; the time axis
has scale = frame interval and translate = first frame time. Images on other grids (a planning T2,
a CT) overlay in millimetres.

Decisions written down here:
- the dose layer and the lesion outlines are 4-D: the dose **accumulated up to each frame**, the
  exact piecewise-linear CEM43 of :func:`mrtherm.thermometry.dose.cem43_segment` over the saved
  temperatures (its last frame equals ``dose_cem43.nii.gz``), so nothing is drawn before heating;
- lesion colours belong to the level, not to its position in a list (240 CEM43 is always cyan);
- rays of a window check are clipped to the image volume, so that they do not widen the slider range.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from mrtherm.geometry import voxel_size_zyx_mm
from mrtherm.thermometry.dose import COMMERCIAL_LEVELS_CEM43_MIN

MRTHERM_MAPS = ("temperature.nii.gz", "dose_cem43.nii.gz", "tmax.nii.gz", "temperature_sd.nii.gz",
                "temperature_sd_theory.nii.gz", "snr.nii.gz", "mask.nii.gz", "drift_reference.nii.gz",
                "anatomy.nii.gz", "labels.nii.gz", "feasibility.nii.gz")
TEMPERATURE_RANGE_C = (37.0, 90.0)
TEMPERATURE_TRANSPARENT_BELOW_C = 40.0
DOSE_LOG10_RANGE = (0.0, 4.0)  # 1 to 10^4 CEM43 minutes
STATUS_COLOURS = {"clear": (0.1, 0.85, 0.2, 0.9), "degraded": (1.0, 0.6, 0.0, 0.9), "blocked": (0.95, 0.1, 0.1, 0.9)}
LEVEL_COLOURS = {17.0: ("#1e90ff", "blue"), 40.0: ("#7cfc00", "green"), 100.0: ("#ffff00", "yellow"),
                 200.0: ("#ff8c00", "orange"), 240.0: ("#00ffff", "cyan")}
OTHER_LEVEL_COLOURS = (("#ff00ff", "magenta"), ("#ffffff", "white"), ("#ff69b4", "pink"), ("#b0e0e6", "pale blue"))
LABEL_COLOURS = {0: (0, 0, 0, 0), 1: (0.6, 0.6, 0.6, 0.25), 2: (1.0, 0.9, 0.5, 0.35), 3: (0.8, 0.4, 0.4, 0.25),
                 4: (0.9, 0.7, 0.6, 0.35), 5: (1.0, 1.0, 0.85, 0.7), 6: (0.85, 0.75, 0.55, 0.5),
                 7: (0.3, 0.7, 1.0, 0.8), 8: (1.0, 1.0, 1.0, 1.0), 9: (0.6, 0.3, 0.8, 0.6),
                 10: (1.0, 0.0, 0.2, 1.0), 11: (1.0, 0.0, 0.8, 1.0), 12: (1.0, 0.85, 0.0, 0.8),
                 13: (0.4, 0.0, 0.0, 0.7)}
SPATIAL_AXIS_LABELS = ("z (mm)", "y (mm)", "x (mm)")
TIME_AXIS_LABEL = "t (s)"
_P = np.eye(4)[[2, 1, 0, 3]]  # (x, y, z) <-> (z, y, x)


# --------------------------------------------------------------------------- geometry
def napari_affine(nifti_affine, leading_axes: int = 0) -> np.ndarray:
    """napari (data z, y, x) -> world (Z, Y, X) mm affine from a NIfTI affine; extra leading axes identity."""
    spatial = _P @ np.asarray(nifti_affine, dtype=float) @ _P
    n = 3 + leading_axes
    out = np.eye(n + 1)
    out[leading_axes:n, leading_axes:n] = spatial[:3, :3]
    out[leading_axes:n, n] = spatial[:3, 3]
    return out


def nifti_affine_from_napari(affine) -> np.ndarray:
    """Inverse of :func:`napari_affine` for the last three axes of a napari affine matrix."""
    m = np.asarray(affine, dtype=float)
    n = m.shape[0] - 1
    spatial = np.eye(4)
    spatial[:3, :3] = m[n - 3:n, n - 3:n]
    spatial[:3, 3] = m[n - 3:n, n]
    return _P @ spatial @ _P


def layer_nifti_affine(layer) -> np.ndarray:
    """The NIfTI affine of a napari layer's last three axes (scale, rotation and affine together).

    Read through the public ``data_to_world`` mapping of the origin and the three unit steps.
    """
    base = np.zeros(layer.ndim)
    origin = np.asarray(layer.data_to_world(base), float)[-3:]
    spatial = np.eye(4)
    for col, step in enumerate(np.eye(layer.ndim)[-3:]):
        spatial[:3, col] = np.asarray(layer.data_to_world(base + step), float)[-3:] - origin
    spatial[:3, 3] = origin
    return _P @ spatial @ _P


def voxel_sizes_zyx(nifti_affine) -> np.ndarray:
    """Voxel sizes (z, y, x) in mm, as an array for napari's ``scale`` (:func:`mrtherm.geometry.voxel_size_zyx_mm`)."""
    return np.asarray(voxel_size_zyx_mm(nifti_affine), dtype=float)


def time_axis(frame_times_s):
    """(first time, interval) in s of a frame series (median interval; 1 s for one frame)."""
    t = np.asarray(frame_times_s if frame_times_s is not None else [0.0], float)
    step = float(np.median(np.diff(t))) if t.size > 1 else 1.0
    return float(t[0]), step if step > 0 else 1.0


def placement(nifti_affine, frame_times_s=None, *, series: bool = False) -> dict:
    """napari ``scale``/``affine``/``axis_labels``/``units`` of a (t,) z, y, x layer on a NIfTI grid.

    The voxel sizes go into ``scale`` (one slider step per slice, one per frame for series) and the
    remaining rotation and origin into ``affine``; ``data_to_world`` equals the NIfTI mapping.
    """
    spatial = _P @ np.asarray(nifti_affine, dtype=float) @ _P
    sizes = np.linalg.norm(spatial[:3, :3], axis=0)
    lead = 1 if series else 0
    n = 3 + lead
    aff = np.eye(n + 1)
    aff[lead:n, lead:n] = spatial[:3, :3] / sizes
    aff[lead:n, n] = spatial[:3, 3]
    scale = list(sizes)
    labels, units = list(SPATIAL_AXIS_LABELS), ["mm"] * 3
    if series:
        t0, dt = time_axis(frame_times_s)
        scale = [dt] + scale
        aff[0, n] = t0
        labels, units = [TIME_AXIS_LABEL] + labels, ["s"] + units
    return {"scale": tuple(float(s) for s in scale), "affine": aff, "axis_labels": tuple(labels),
            "units": tuple(units)}


def points_placement(scale_zyx) -> dict:
    """napari kwargs for points/shapes given in world mm divided by ``scale_zyx`` (same slider steps)."""
    return {"scale": tuple(float(s) for s in scale_zyx), "axis_labels": SPATIAL_AXIS_LABELS,
            "units": ("mm",) * 3}


def world_xyz_to_napari(points_xyz) -> np.ndarray:
    """World (x, y, z) mm points as napari world (Z, Y, X)."""
    return np.asarray(points_xyz, dtype=float)[..., ::-1]


def volume_bounds_zyx(nifti_affine, shape_zyx):
    """World (Z, Y, X) bounding box (lo, hi) of a volume's voxel centres, mm (inside the slider range)."""
    corners = np.array([[i, j, k, 1.0] for i in (0, shape_zyx[2] - 1) for j in (0, shape_zyx[1] - 1)
                        for k in (0, shape_zyx[0] - 1)])
    world = (corners @ np.asarray(nifti_affine, float).T)[:, :3][:, ::-1]
    return world.min(axis=0), world.max(axis=0)


def clip_segment(a, b, lo, hi):
    """Part of segment a->b inside the box [lo, hi] (Liang-Barsky), or None when it misses the box."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    t0, t1 = 0.0, 1.0
    for k in range(a.size):
        if d[k] == 0.0:
            if a[k] < lo[k] or a[k] > hi[k]:
                return None
            continue
        ta, tb = (lo[k] - a[k]) / d[k], (hi[k] - a[k]) / d[k]
        t0, t1 = max(t0, min(ta, tb)), min(t1, max(ta, tb))
        if t0 > t1:
            return None
    return np.stack([a + t0 * d, a + t1 * d])


# --------------------------------------------------------------------------- colours
def temperature_colormap():
    """Inferno over 37-90 C, transparent below 40 C."""
    import matplotlib
    from napari.utils.colormaps import Colormap
    lo, hi = TEMPERATURE_RANGE_C
    cut = (TEMPERATURE_TRANSPARENT_BELOW_C - lo) / (hi - lo)
    ramp = matplotlib.colormaps["inferno"](np.linspace(0.25, 1.0, 32))
    colors = np.vstack([[0, 0, 0, 0], [0, 0, 0, 0], ramp])
    controls = np.concatenate([[0.0, cut - 1e-4], np.linspace(cut, 1.0, 32)])
    return Colormap(colors=colors, controls=controls, name="mrtherm temperature", interpolation="linear")


def dose_colormap():
    """Viridis over log10 CEM43 from 1 to 10^4 minutes, transparent below 1 minute."""
    import matplotlib
    from napari.utils.colormaps import Colormap
    ramp = matplotlib.colormaps["viridis"](np.linspace(0.0, 1.0, 32))
    colors = np.vstack([[0, 0, 0, 0], ramp])
    controls = np.concatenate([[0.0], np.linspace(1e-3, 1.0, 32)])
    return Colormap(colors=colors, controls=controls, name="mrtherm dose", interpolation="linear")


def label_colormap():
    """Fixed colours of the DESIGN.md label table (cord red, nerve roots magenta)."""
    from napari.utils.colormaps import DirectLabelColormap
    return DirectLabelColormap(color_dict={None: (0, 0, 0, 0), **LABEL_COLOURS})


def level_colour(level: float) -> tuple[str, str]:
    """(hex, name) of a dose level's outline; fixed per level value, whatever the list it comes in."""
    level = float(level)
    if level in LEVEL_COLOURS:
        return LEVEL_COLOURS[level]
    return OTHER_LEVEL_COLOURS[int(round(math.log10(max(level, 1e-3)) * 7)) % len(OTHER_LEVEL_COLOURS)]


def lesion_colormap(colour):
    """Labels colormap drawing value 1 in ``colour`` and nothing else."""
    from napari.utils.colormaps import DirectLabelColormap
    return DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: colour})


def legend_text(levels) -> str:
    """One line naming each lesion level's outline colour."""
    return "outlines: " + ", ".join(f"{lev:g} {level_colour(lev)[1]}" for lev in sorted(levels)) + " (CEM43 min)"


# --------------------------------------------------------------------------- data helpers
def load_zyx(path):
    """A NIfTI as ((t,) z, y, x) array and its affine."""
    import nibabel as nib
    img = nib.load(os.fspath(path))
    data = np.asarray(img.dataobj)
    return np.ascontiguousarray(data.transpose(tuple(range(data.ndim))[::-1])), np.asarray(img.affine)


LAZY_SERIES_BYTES = 1 << 30  # series larger than this in memory (float32) open lazily


def lazy_threshold_bytes() -> int:
    """Bytes above which a temperature series opens lazily (``MRTHERM_NAPARI_LAZY_BYTES`` overrides)."""
    return int(os.environ.get("MRTHERM_NAPARI_LAZY_BYTES", LAZY_SERIES_BYTES))


def series_bytes(path) -> int:
    """Size of a NIfTI series in memory as float32, from its header alone."""
    import nibabel as nib
    return int(np.prod(nib.load(os.fspath(path)).shape)) * 4


def is_lazy(array) -> bool:
    """True for a dask array (a series read on demand)."""
    return hasattr(array, "dask") and hasattr(array, "compute")


def frame_peaks(temp):
    """Peak temperature of each frame (None for an all-NaN frame)."""
    with np.errstate(invalid="ignore"):
        flat = np.asarray(temp).reshape(temp.shape[0], -1)
        return [float(np.nanmax(f)) if np.isfinite(f).any() else None for f in flat]


class FramePeaks:
    """Per-frame peaks of a lazy series, each computed (and kept) when first asked for."""

    def __init__(self, series):
        self.series, self._peaks = series, {}

    def __len__(self):
        return int(self.series.shape[0])

    def __getitem__(self, t):
        t = int(t)
        if t not in self._peaks:
            self._peaks[t] = frame_peaks(np.asarray(self.series[t : t + 1]))[0]
        return self._peaks[t]


def hottest_index(temp):
    """(t, z, y, x) of the highest temperature, or None when all NaN."""
    temp = np.asarray(temp)
    if not np.isfinite(temp).any():
        return None
    return tuple(int(v) for v in np.unravel_index(np.nanargmax(temp), temp.shape))


def hottest_from_report(report, times):
    """(t, z, y, x) of the hottest voxel from a run's report (a lazy series is not scanned), or None."""
    res = (report or {}).get("results") or {}
    zyx, when = res.get("hottest_voxel_zyx"), res.get("time_of_peak_s")
    if zyx is None or when is None or not len(times):
        return None
    t = int(np.argmin(np.abs(np.asarray(times, float) - float(when))))
    return (t, *(int(v) for v in zyx))


def display_temperature(temp):
    """NaN (masked) shown as transparent: replaced by 0 C, below the transparent cut."""
    return np.nan_to_num(np.asarray(temp, dtype=np.float32), nan=0.0)


def display_dose(dose):
    """log10 of CEM43 minutes (float32), 1e-3 min where the dose is 0 or NaN (transparent)."""
    d = np.nan_to_num(np.asarray(dose, dtype=np.float64), nan=0.0)
    return np.log10(np.maximum(d, 1e-3)).astype(np.float32)


def dose_per_frame(temperature_tzyx, frame_times_s) -> np.ndarray:
    """CEM43 accumulated up to each frame, float32 (t, z, y, x); 0 at the first frame, NaN where masked.

    Exact for temperatures linear between frames (the rule the pipeline uses), so the last frame
    equals the run's final dose up to float32 rounding.
    """
    from mrtherm.thermometry.lazy_dose import as_display_float32, dose_start, dose_step  # the lazy series' own steps
    temp = np.asarray(temperature_tzyx)
    times = np.asarray(frame_times_s, float)
    out = np.empty(temp.shape, np.float32)
    acc = dose_start(temp[0])
    out[0] = acc
    for k in range(1, temp.shape[0]):
        acc = dose_step(acc, temp[k - 1], temp[k], (times[k] - times[k - 1]) / 60.0)
        out[k] = as_display_float32(acc)
    return out


def lesion_volumes_ml(dose, levels, voxel_volume_ml):
    """{level: mL} of voxels at or above each level (NaN counts as 0): the thermometry's own definition."""
    from mrtherm.thermometry.dose import lesion_volumes_ml as volumes  # noqa: PLC0415
    return volumes(dose, levels, voxel_volume_ml)


def parse_target(text: str):
    """The target from 'X, Y, Z' (world mm), or None for an empty field; ValueError naming the problem."""
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    if not parts:
        return None
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"target {text.strip()!r}: give X, Y, Z in world mm") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"target {text.strip()!r}: give three numbers X, Y, Z in world mm")
    return values


def parse_levels(text: str) -> tuple[float, ...]:
    """Dose levels from '240, 40'; ValueError naming the bad entry (shown in the widget)."""
    levels = []
    for part in text.replace(";", ",").split(","):
        if not part.strip():
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"dose level {part.strip()!r} is not a number (CEM43 minutes, e.g. 240, 40)") from None
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"dose level {part.strip()} must be a positive number of CEM43 minutes")
        levels.append(value)
    if not levels:
        raise ValueError("give at least one dose level (CEM43 minutes, e.g. 240)")
    return tuple(dict.fromkeys(levels))


def roi_curves(temperature_tzyx, mask_zyx):
    """Mean and max temperature over a mask per frame (NaN-aware); (t,), (t,)."""
    import warnings
    m = np.asarray(mask_zyx, bool)
    if not m.any():
        raise ValueError("the ROI contains no voxel")
    if is_lazy(temperature_tzyx):  # frame by frame: memory of one frame, one pass over the series
        vals = np.stack([np.asarray(temperature_tzyx[k])[m] for k in range(temperature_tzyx.shape[0])])
    else:
        vals = np.asarray(temperature_tzyx)[:, m]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN frames (ROI outside the mask) give NaN
        return np.nanmean(vals, axis=1), np.nanmax(vals, axis=1)


def polygon_mask(vertices_yx, shape_yx):
    """Boolean (y, x) mask of a polygon given in (row, col) data coordinates."""
    from matplotlib.path import Path
    yy, xx = np.mgrid[: shape_yx[0], : shape_yx[1]]
    pts = np.stack([yy.ravel(), xx.ravel()], axis=1)
    return Path(np.asarray(vertices_yx)).contains_points(pts).reshape(shape_yx)


def label_names(report) -> dict:
    """{label value: class name} from a run report's label table, else the default table."""
    table = ((report or {}).get("mask") or {}).get("label_table")
    if table:
        return {int(e["value"]): str(e["name"]) for e in table}
    from mrtherm.io.labels import LabelTable
    return {v: c.name for v, c in LabelTable().classes.items()}
