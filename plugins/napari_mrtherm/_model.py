"""Qt-free model code of the napari plugin: geometry, layer specifications, curves, volumes.

Geometry: a NIfTI affine maps voxel (i, j, k) = (x, y, z) to world RAS+ mm. napari
arrays are (z, y, x) (and (t, z, y, x)); the plugin uses world axes (Z, Y, X) in mm,
so the napari affine is ``P @ A @ P`` with ``P`` reversing the three spatial axes.
Every layer built here carries that affine, so images on different grids (a
planning T2, a CT) overlay in millimetres, obliquity included.
"""

from __future__ import annotations

import json
import os

import numpy as np

MRTHERM_MAPS = ("temperature.nii.gz", "dose_cem43.nii.gz", "tmax.nii.gz", "temperature_sd.nii.gz",
                "temperature_sd_theory.nii.gz", "snr.nii.gz", "mask.nii.gz", "drift_reference.nii.gz",
                "anatomy.nii.gz", "labels.nii.gz", "feasibility.nii.gz")
TEMPERATURE_RANGE_C = (37.0, 90.0)
TEMPERATURE_TRANSPARENT_BELOW_C = 40.0
DOSE_LOG10_RANGE = (0.0, 4.0)  # 1 to 10^4 CEM43 minutes
STATUS_COLOURS = {"clear": (0.1, 0.85, 0.2, 0.9), "degraded": (1.0, 0.6, 0.0, 0.9), "blocked": (0.95, 0.1, 0.1, 0.9)}
LESION_COLOURS = ("cyan", "lime", "yellow", "orange", "magenta", "white")
LABEL_COLOURS = {0: (0, 0, 0, 0), 1: (0.6, 0.6, 0.6, 0.25), 2: (1.0, 0.9, 0.5, 0.35), 3: (0.8, 0.4, 0.4, 0.25),
                 4: (0.9, 0.7, 0.6, 0.35), 5: (1.0, 1.0, 0.85, 0.7), 6: (0.85, 0.75, 0.55, 0.5),
                 7: (0.3, 0.7, 1.0, 0.8), 8: (1.0, 1.0, 1.0, 1.0), 9: (0.6, 0.3, 0.8, 0.6),
                 10: (1.0, 0.0, 0.2, 1.0), 11: (1.0, 0.0, 0.8, 1.0), 12: (1.0, 0.85, 0.0, 0.8),
                 13: (0.4, 0.0, 0.0, 0.7)}


# --------------------------------------------------------------------------- geometry
def napari_affine(nifti_affine, leading_axes: int = 0) -> np.ndarray:
    """napari (data z, y, x) -> world (Z, Y, X) mm affine from a NIfTI affine; extra leading axes identity."""
    a = np.asarray(nifti_affine, dtype=float)
    p = np.eye(4)[[2, 1, 0, 3]]
    spatial = p @ a @ p
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
    p = np.eye(4)[[2, 1, 0, 3]]
    return p @ spatial @ p


def world_xyz_to_napari(points_xyz) -> np.ndarray:
    return np.asarray(points_xyz, dtype=float)[..., ::-1]


# --------------------------------------------------------------------------- colormaps
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


def label_colormap(values=None):
    from napari.utils.colormaps import DirectLabelColormap
    d = {None: (0, 0, 0, 0)}
    for v, c in LABEL_COLOURS.items():
        d[v] = c
    return DirectLabelColormap(color_dict=d)


def lesion_colormap(colour):
    from napari.utils.colormaps import DirectLabelColormap
    return DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: colour})


# --------------------------------------------------------------------------- data helpers
def load_zyx(path):
    """A NIfTI as ((t,) z, y, x) array and its affine."""
    import nibabel as nib
    img = nib.load(os.fspath(path))
    data = np.asarray(img.dataobj)
    return np.ascontiguousarray(data.transpose(tuple(range(data.ndim))[::-1])), np.asarray(img.affine)


def display_temperature(temp):
    """NaN (masked) shown as transparent: replaced by 0 C, below the transparent cut."""
    return np.nan_to_num(np.asarray(temp, dtype=np.float32), nan=0.0)


def display_dose(dose):
    d = np.nan_to_num(np.asarray(dose, dtype=np.float64), nan=0.0)
    return np.log10(np.maximum(d, 1e-3)).astype(np.float32)


def lesion_volumes_ml(dose, levels, voxel_volume_ml):
    d = np.nan_to_num(np.asarray(dose, dtype=np.float64), nan=0.0)
    return {float(lev): float((d >= lev).sum() * voxel_volume_ml) for lev in levels}


def roi_curves(temperature_tzyx, mask_zyx):
    """Mean and max temperature over a mask per frame (NaN-aware); (t,), (t,)."""
    t = np.asarray(temperature_tzyx)
    m = np.asarray(mask_zyx, bool)
    if not m.any():
        raise ValueError("the ROI contains no voxel")
    vals = t[:, m]
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(vals, axis=1), np.nanmax(vals, axis=1)


def polygon_mask(vertices_yx, shape_yx):
    """Boolean (y, x) mask of a polygon given in (row, col) data coordinates."""
    from matplotlib.path import Path
    yy, xx = np.mgrid[: shape_yx[0], : shape_yx[1]]
    pts = np.stack([yy.ravel(), xx.ravel()], axis=1)
    return Path(np.asarray(vertices_yx)).contains_points(pts).reshape(shape_yx)


# --------------------------------------------------------------------------- layers
def is_mrtherm_report(path) -> str | None:
    """'run' or 'window' for an mrtherm report.json, else None."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    if "mrtherm_version" in doc and "results" in doc:
        return "run"
    if {"verdict", "elements", "rules", "active_fraction"} <= set(doc):
        return "window"
    return None


def temperature_layer(temp_c, nifti_aff, meta=None):
    """4-D temperature (C) as an image layer tuple; NaN shown transparent."""
    return (display_temperature(temp_c), {
        "name": "temperature (C)", "colormap": temperature_colormap(), "contrast_limits": TEMPERATURE_RANGE_C,
        "affine": napari_affine(nifti_aff, leading_axes=1), "blending": "translucent", "opacity": 0.9,
        "metadata": {"mrtherm": {**(meta or {}), "kind": "temperature", "nifti_affine": nifti_aff,
                                 "temperature_c": temp_c}}}, "image")


def dose_layer(dose, nifti_aff, meta=None):
    """CEM43 dose as a log10 image layer tuple; the linear dose stays in the metadata."""
    return (display_dose(dose), {
        "name": "CEM43 dose (log10 min)", "colormap": dose_colormap(), "contrast_limits": DOSE_LOG10_RANGE,
        "affine": napari_affine(nifti_aff), "blending": "translucent", "opacity": 0.6,
        "metadata": {"mrtherm": {**(meta or {}), "kind": "dose", "nifti_affine": nifti_aff,
                                 "dose_cem43_min": dose}}}, "image")


def anatomy_layer(data, nifti_aff, meta=None):
    return (data, {"name": "anatomy", "colormap": "gray", "affine": napari_affine(nifti_aff),
                   "metadata": {"mrtherm": {**(meta or {}), "kind": "anatomy", "nifti_affine": nifti_aff}}}, "image")


def run_layers(folder) -> list:
    """Layer data tuples for an ``mrtherm run`` output folder."""
    folder = os.fspath(folder)
    with open(os.path.join(folder, "report.json"), encoding="utf-8") as fh:
        report = json.load(fh)
    exam = report.get("exam", {})
    levels = report.get("parameters", {}).get("dose_levels_cem43_min", [240.0])
    vox_ml = exam.get("voxel_volume_ml")
    meta = {"report_path": os.path.join(folder, "report.json"), "report": report,
            "frame_times_s": exam.get("frame_times_s"), "voxel_volume_ml": vox_ml, "dose_levels_cem43_min": levels}
    layers = []
    p = os.path.join(folder, "anatomy.nii.gz")
    if os.path.exists(p):
        layers.append(anatomy_layer(*load_zyx(p), meta))
    p = os.path.join(folder, "labels.nii.gz")
    if os.path.exists(p):
        data, aff = load_zyx(p)
        layers.append((data.astype(np.int32), {"name": "labels", "affine": napari_affine(aff), "opacity": 0.5,
                                               "colormap": label_colormap(),
                                               "metadata": {"mrtherm": {**meta, "kind": "labels", "nifti_affine": aff}}},
                       "labels"))
    p = os.path.join(folder, "temperature.nii.gz")
    if os.path.exists(p):
        layers.append(temperature_layer(*load_zyx(p), meta))
    p = os.path.join(folder, "dose_cem43.nii.gz")
    if os.path.exists(p):
        dose, aff = load_zyx(p)
        layers.append(dose_layer(dose, aff, meta))
        for i, lev in enumerate(levels):
            layers.append(lesion_layer(dose, lev, aff, LESION_COLOURS[i % len(LESION_COLOURS)], meta))
    for cand in (os.path.join(folder, "window", "report.json"), os.path.join(os.path.dirname(folder), "window", "report.json")):
        if os.path.exists(cand) and is_mrtherm_report(cand) == "window":
            layers.extend(window_layers(cand))
            break
    return layers


def looks_like_dicom_folder(folder, max_files: int = 64) -> bool:
    """True when one of the first files under ``folder`` is DICOM (Part 10 marker); cheap, no pydicom."""
    from mrtherm.io.dicom.files import walk  # noqa: PLC0415
    for n, path in enumerate(walk(os.fspath(folder))):
        if n >= max_files:
            break
        try:
            with open(path, "rb") as fh:
                head = fh.read(132)
        except OSError:
            continue
        if head[128:132] == b"DICM":
            return True
    return False


def dicom_layers(folder) -> list:
    """A DICOM thermometry folder as lazy (dask) 4-D magnitude and phase (rad) layers placed in world mm.

    Frames are read when napari shows them, so long series open at once. Refusals of
    :func:`mrtherm.load_exam` (field maps, several stacks, multi-echo) surface as their one-line error.
    """
    import dask
    import dask.array as da
    import mrtherm
    exam = mrtherm.load_exam(dicom=os.fspath(folder))
    shape = exam.shape_zyx
    meta = {"kind": "dicom", "nifti_affine": exam.affine, "frame_times_s": [float(t) for t in exam.frame_times_s],
            "provenance": exam.provenance, "te_s": exam.te_s, "b0_t": exam.b0_t}

    def component(t, which):
        a, b, _polar = exam.frame_parts(t)
        return np.asarray(a if which == 0 else b, dtype=np.float32)

    def lazy(which):
        return da.stack([da.from_delayed(dask.delayed(component)(t, which), shape, np.float32)
                         for t in range(exam.n_frames)])

    aff = napari_affine(exam.affine, leading_axes=1)
    names = ("magnitude", "phase (rad)") if "phase" in exam.components else ("real", "imaginary")
    mag = (lazy(0), {"name": names[0], "colormap": "gray", "affine": aff,
                     "metadata": {"mrtherm": {**meta, "component": names[0]}}}, "image")
    ph_kw = {"colormap": "twilight_shifted", "contrast_limits": (-np.pi, np.pi)} if names[1].startswith("phase") \
        else {"colormap": "gray"}
    ph = (lazy(1), {"name": names[1], "affine": aff, "visible": False, **ph_kw,
                    "metadata": {"mrtherm": {**meta, "component": names[1]}}}, "image")
    return [mag, ph]


def lesion_layer(dose, level, nifti_aff, colour, meta=None):
    mask = (np.nan_to_num(dose, nan=0.0) >= level).astype(np.uint8)
    return (mask, {"name": f"lesion {level:g} CEM43", "affine": napari_affine(nifti_aff), "opacity": 1.0,
                   "colormap": lesion_colormap(colour),
                   "metadata": {"mrtherm": {**(meta or {}), "kind": "lesion", "level": float(level)}}}, "labels")


def window_layers(report_or_path) -> list:
    """Rays coloured by status (Shapes, world Z, Y, X mm) and the target (Points)."""
    if isinstance(report_or_path, (str, os.PathLike)):
        with open(report_or_path, encoding="utf-8") as fh:
            report = json.load(fh)
    else:
        report = report_or_path
    target = np.asarray(report["target_world_mm"], float)
    elements = report["elements"]
    starts = report.get("element_positions_world_mm")
    if starts is None:
        return [(world_xyz_to_napari(target)[None, :], {"name": "target", "size": 3, "face_color": "yellow"}, "points")]
    lines = [np.stack([world_xyz_to_napari(s), world_xyz_to_napari(target)]) for s in starts]
    colours = [STATUS_COLOURS[e["status"]] for e in elements]
    meta = {"mrtherm": {"kind": "window", "report": report}}
    return [(lines, {"name": f"acoustic window rays ({report['verdict']})", "shape_type": "line",
                     "edge_color": colours, "edge_width": 0.4, "metadata": meta}, "shapes"),
            (world_xyz_to_napari(target)[None, :], {"name": "target", "size": 3, "face_color": "yellow",
                                                   "metadata": meta}, "points")]


def map_layer(path) -> list:
    """One mrtherm NIfTI map as a layer, styled by its file name."""
    data, aff = load_zyx(path)
    name = os.path.basename(os.fspath(path))
    if name == "temperature.nii.gz":
        return [temperature_layer(data, aff)]
    if name == "dose_cem43.nii.gz":
        return [dose_layer(data, aff)]
    if name in ("labels.nii.gz", "mask.nii.gz", "drift_reference.nii.gz") or name.startswith("lesion_"):
        kw = {"colormap": label_colormap()} if name == "labels.nii.gz" else {}
        return [(data.astype(np.int32), {"name": name.split(".")[0], "affine": napari_affine(aff), **kw}, "labels")]
    kw = {"colormap": "gray"} if name == "anatomy.nii.gz" else {"colormap": "magma"}
    return [(np.nan_to_num(data.astype(np.float32)), {"name": name.split(".")[0], "affine": napari_affine(aff), **kw},
             "image")]


def result_layers(result, folder=None) -> list:
    """Layers for an in-memory :class:`mrtherm.ThermometryResult` (from the thermometry widget)."""
    aff = result.affine
    meta = {"report": result.report, "frame_times_s": list(map(float, result.frame_times_s)),
            "voxel_volume_ml": result.report["exam"]["voxel_volume_ml"],
            "dose_levels_cem43_min": list(result.params.dose_levels_cem43_min)}
    dose = result.host("dose_cem43_min")
    temp = result.host("temperature_c")
    layers = [anatomy_layer(result.host("anatomy"), aff, meta), temperature_layer(temp, aff, meta),
              dose_layer(dose, aff, meta)]
    for i, lev in enumerate(result.params.dose_levels_cem43_min):
        layers.append(lesion_layer(dose, lev, aff, LESION_COLOURS[i % len(LESION_COLOURS)], meta))
    return layers


def radiological_view(viewer):
    """Axial radiological convention: anterior (+Y) up, patient's right (+X) on the screen's left."""
    try:
        viewer.camera.orientation2d = ("up", "left")
    except (AttributeError, ValueError):  # older napari without camera orientation
        pass
