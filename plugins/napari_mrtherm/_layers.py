"""Layer data tuples (Qt-free) for mrtherm runs, window reports, single maps and DICOM folders.

Every layer carries ``metadata["mrtherm"]`` with its ``kind`` (anatomy, labels, temperature, dose,
lesion, window, dicom), the NIfTI affine and what the operator view needs (frame times, per-frame
peak, report, linear dose per frame).
"""

from __future__ import annotations

import json
import os
import uuid

import numpy as np

from . import _model as m


def is_mrtherm_report(path) -> str | None:
    """'run', 'window' or 'evaluation' for an mrtherm report.json, else None."""
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
    if {"npv_ml", "levels", "map_values"} <= set(doc):
        return "evaluation"
    return None


EVALUATION_COLOURS = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (0.1, 0.85, 0.2, 0.6), 2: (1.0, 0.6, 0.0, 0.8),
                      3: (0.95, 0.1, 0.1, 0.8)}


def evaluation_layer(path):
    """An ``evaluation_<level>.nii.gz`` map: green predicted and non-perfused, orange predicted but perfused
    (under-treatment), red non-perfused but not predicted (over-treatment)."""
    data, aff = m.load_zyx(path)
    name = os.path.basename(os.fspath(path)).split(".nii")[0]
    return (np.asarray(data, np.int32), {"name": name.replace("evaluation_", "evaluation "),
                                         "colormap": EVALUATION_COLOURS, "opacity": 0.7, **m.placement(aff),
                                         "metadata": _meta("evaluation", aff)}, "labels")


def evaluation_layers(folder) -> list:
    """The maps of an ``mrtherm evaluate`` folder, one labels layer per level."""
    with open(os.path.join(folder, "report.json"), encoding="utf-8") as fh:
        report = json.load(fh)
    return [evaluation_layer(os.path.join(folder, n)) for n in report.get("outputs", [])
            if n.startswith("evaluation_") and n.endswith(".nii.gz")]


def _meta(kind, nifti_aff, base=None, **extra):
    return {"mrtherm": {**(base or {}), "kind": kind, "nifti_affine": np.asarray(nifti_aff), **extra}}


def anatomy_layer(data, nifti_aff, meta=None):
    """Grey anatomy (mean baseline magnitude) on its grid."""
    return (data, {"name": "anatomy", "colormap": "gray", **m.placement(nifti_aff),
                   "metadata": _meta("anatomy", nifti_aff, meta)}, "image")


def labels_layer(data, nifti_aff, meta=None, name="labels"):
    """Tissue labels with the DESIGN.md colours; hover shows the class name (``features``)."""
    values = np.unique(data)
    names = m.label_names((meta or {}).get("report"))
    features = {"index": values.astype(int), "structure": [names.get(int(v), f"label {int(v)}") for v in values]}
    return (np.asarray(data, np.int32), {"name": name, "opacity": 0.5, "colormap": m.label_colormap(),
                                         "features": features, **m.placement(nifti_aff),
                                         "metadata": _meta("labels", nifti_aff, meta, label_names=names)}, "labels")


def temperature_layer(temp_c, nifti_aff, meta=None, frame_times_s=None):
    """4-D temperature (C) image; NaN shown transparent; the time axis in seconds.

    ``temp_c`` may be a dask array (a large series opened lazily, :func:`open_temperature`): the layer then
    reads frames as they are shown, and the per-frame peak and hottest point come from the run's report.
    """
    lazy = m.is_lazy(temp_c)
    temp_c = temp_c if lazy else np.asarray(temp_c, np.float32)
    times = frame_times_s if frame_times_s is not None else (meta or {}).get("frame_times_s")
    times = list(times) if times is not None and len(times) == temp_c.shape[0] else list(range(temp_c.shape[0]))
    if lazy:
        display, peak = temp_c.map_blocks(m.display_temperature, dtype=np.float32), m.FramePeaks(temp_c)
        hottest = m.hottest_from_report((meta or {}).get("report"), times)
    else:
        display, peak, hottest = m.display_temperature(temp_c), m.frame_peaks(temp_c), m.hottest_index(temp_c)
    return (display, {
        "name": "temperature (C)", "colormap": m.temperature_colormap(), "contrast_limits": m.TEMPERATURE_RANGE_C,
        "blending": "translucent", "opacity": 0.9, **m.placement(nifti_aff, times, series=True),
        "metadata": _meta("temperature", nifti_aff, meta, temperature_c=temp_c, frame_times_s=times,
                          frame_peak_c=peak, hottest_tzyx=hottest)}, "image")


def open_temperature(path, frame_times_s=None):
    """A run's temperature series: in memory when it is small, else lazily (frames read as shown).

    Returns
    -------
    temperature : ndarray or dask.array.Array, shape (t, z, y, x)
    affine : ndarray, shape (4, 4)
    cumulative_dose : callable
        ``cumulative_dose(frame_times_s)``: the dose accumulated up to each frame, of the same kind.
    """
    if m.series_bytes(path) <= m.lazy_threshold_bytes():
        temp, aff = m.load_zyx(path)
        return temp, aff, lambda times: m.dose_per_frame(temp, times)
    from mrtherm.io.lazy import FrameReader, series_from_reader
    from mrtherm.thermometry.lazy_dose import lazy_cumulative_dose
    reader = FrameReader(path, keep=8)
    return (series_from_reader(reader), reader.affine,
            lambda times: lazy_cumulative_dose(reader, times, background=True))


def dose_layers(dose_tzyx, nifti_aff, levels, meta=None, frame_times_s=None, final_dose=None):
    """The dose accumulated up to each frame (log10 image) and one outline layer per lesion level.

    ``final_dose`` (the run's float64 ``dose_cem43.nii.gz``) is kept for final lesion volumes; by default
    the last frame of ``dose_tzyx``.
    """
    times = frame_times_s if frame_times_s is not None else (meta or {}).get("frame_times_s")
    times = list(times) if times is not None and len(times) == dose_tzyx.shape[0] else list(range(dose_tzyx.shape[0]))
    where = m.placement(nifti_aff, times, series=True)
    lazy = m.is_lazy(dose_tzyx)
    display = dose_tzyx.map_blocks(m.display_dose, dtype=np.float32) if lazy else m.display_dose(dose_tzyx)
    layers = [(display, {
        "name": "CEM43 dose (log10 min)", "colormap": m.dose_colormap(), "contrast_limits": m.DOSE_LOG10_RANGE,
        "blending": "translucent", "opacity": 0.45, **where,
        "metadata": _meta("dose", nifti_aff, meta, dose_per_frame_cem43_min=dose_tzyx, frame_times_s=times,
                          dose_cem43_min=dose_tzyx[-1] if final_dose is None else final_dose,
                          dose_levels_cem43_min=list(levels))}, "image")]
    layers += [lesion_layer(dose_tzyx, lev, nifti_aff, meta, times) for lev in levels]
    return layers


def lesion_layer(dose_tzyx, level, nifti_aff, meta=None, frame_times_s=None):
    """Outline (napari labels contour) of dose >= level at each frame, in the level's fixed colour."""
    def at_level(d):
        return (np.nan_to_num(np.asarray(d), nan=0.0) >= level).astype(np.uint8)

    mask = dose_tzyx.map_blocks(at_level, dtype=np.uint8) if m.is_lazy(dose_tzyx) else at_level(dose_tzyx)
    colour, colour_name = m.level_colour(level)
    series = mask.ndim == 4
    return (mask, {"name": f"lesion {level:g} CEM43 ({colour_name})", "opacity": 1.0,
                   "colormap": m.lesion_colormap(colour), **m.placement(nifti_aff, frame_times_s, series=series),
                   "metadata": _meta("lesion", nifti_aff, meta, level=float(level))}, "labels")


def run_layers(folder) -> list:
    """Layer data tuples for an ``mrtherm run`` output folder (and its window check, if any)."""
    folder = os.fspath(folder)
    with open(os.path.join(folder, "report.json"), encoding="utf-8") as fh:
        report = json.load(fh)
    exam = report.get("exam", {})
    levels = report.get("parameters", {}).get("dose_levels_cem43_min", [240.0])
    meta = {"report_path": os.path.join(folder, "report.json"), "report": report, "batch": uuid.uuid4().hex,
            "frame_times_s": exam.get("frame_times_s"), "voxel_volume_ml": exam.get("voxel_volume_ml"),
            "dose_levels_cem43_min": levels}
    layers, grid = [], None
    p = os.path.join(folder, "anatomy.nii.gz")
    if os.path.exists(p):
        data, grid = m.load_zyx(p)
        layers.append(anatomy_layer(data, grid, meta))
        shape = data.shape
    p = os.path.join(folder, "labels.nii.gz")
    if os.path.exists(p):
        layers.append(labels_layer(*m.load_zyx(p), meta))
    p = os.path.join(folder, "temperature.nii.gz")
    if os.path.exists(p):
        temp, aff, cumulative_dose = open_temperature(p)
        grid, shape = aff, temp.shape[1:]
        cumulative = cumulative_dose(meta["frame_times_s"] or list(range(temp.shape[0])))
        p = os.path.join(folder, "dose_cem43.nii.gz")
        final = m.load_zyx(p)[0] if os.path.exists(p) else None
        layers += dose_layers(cumulative, aff, levels, meta, final_dose=final)
        layers.insert(len(layers) - len(levels), temperature_layer(temp, aff, meta))
    layers += cryo_layers(folder, report, meta)
    layers += model_layers(folder, report, meta)
    layers += probe_layers(report, meta, m.voxel_sizes_zyx(grid) if grid is not None else np.ones(3))
    window = os.path.join(folder, "window", "report.json")
    if is_mrtherm_report(window) == "window":
        bounds = m.volume_bounds_zyx(grid, shape) if grid is not None else None
        layers += window_layers(window, bounds, m.voxel_sizes_zyx(grid) if grid is not None else None)
    return layers


def result_layers(result) -> list:
    """Layers for an in-memory :class:`mrtherm.ThermometryResult` (from the thermometry widget)."""
    aff = result.affine
    levels = list(result.params.dose_levels_cem43_min)
    meta = {"report": result.report, "batch": uuid.uuid4().hex, "frame_times_s": [float(t) for t in result.frame_times_s],
            "voxel_volume_ml": result.report["exam"]["voxel_volume_ml"], "dose_levels_cem43_min": levels}
    temp = result.host("temperature_c")
    if temp is None:
        temp, _, cumulative_dose = open_temperature(result.temperature_path)
        cumulative = cumulative_dose(meta["frame_times_s"])
    else:
        cumulative = m.dose_per_frame(temp, meta["frame_times_s"])
    layers = [anatomy_layer(result.host("anatomy"), aff, meta)]
    if result.labels is not None:
        layers.append(labels_layer(np.asarray(result.labels), aff, meta))
    layers += dose_layers(cumulative, aff, levels, meta, final_dose=result.host("dose_cem43_min"))
    layers.insert(len(layers) - len(levels), temperature_layer(temp, aff, meta))
    return layers


def window_layers(report_or_path, bounds_zyx=None, scale_zyx=None) -> list:
    """Rays coloured by status (Shapes) and the target (Points), world (Z, Y, X) mm.

    With ``bounds_zyx`` the rays are clipped to that box (the image volume) so that they do not
    widen the slider range; ``scale_zyx`` gives the shapes the image's slider steps.
    """
    path = None
    if isinstance(report_or_path, (str, os.PathLike)):
        path = os.fspath(report_or_path)
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    else:
        report = report_or_path
    scale = np.asarray(scale_zyx if scale_zyx is not None else (1.0, 1.0, 1.0), float)
    where = m.points_placement(scale)
    meta = {"mrtherm": {"kind": "window", "report": report, "report_path": path}}
    target = m.world_xyz_to_napari(np.asarray(report["target_world_mm"], float))
    layers = []
    starts = report.get("element_positions_world_mm")
    if starts is not None:
        lines, colours = [], []
        for s, e in zip(starts, report["elements"]):
            seg = np.stack([m.world_xyz_to_napari(s), target])
            if bounds_zyx is not None:
                seg = m.clip_segment(seg[0], seg[1], *bounds_zyx)
            if seg is not None:
                lines.append(seg / scale)
                colours.append(m.STATUS_COLOURS[e["status"]])
        layers.append((lines, {"name": f"acoustic window rays ({report['verdict']})", "shape_type": "line",
                               "edge_color": colours, "edge_width": 0.4, "metadata": meta, **where}, "shapes"))
    layers.append(((target / scale)[None, :], {"name": "target", "size": 3, "face_color": "yellow",
                                               "metadata": meta, **where}, "points"))
    return layers


ISOTHERM_COLOURS = {0.0: (0.3, 0.8, 1.0, 1.0), -20.0: (0.2, 0.4, 1.0, 1.0), -40.0: (0.6, 0.2, 1.0, 1.0)}


def in_plane_outline(mask_zyx):
    """The in-plane boundary of a mask (int32 1 on it): an isotherm drawn as a line over the anatomy."""
    from scipy import ndimage  # noqa: PLC0415
    mask = np.asarray(mask_zyx) > 0
    inner = ndimage.binary_erosion(mask, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool))
    return (mask & ~inner).astype(np.int32)


def cryo_layers(folder, report, meta) -> list:
    """Outline layers of the cryo isotherms (ice edge 0 C, lethal -20 / -40 C) of a ``--modality cryo`` run."""
    cryo = report.get("cryo")
    if not cryo:
        return []
    layers = []
    for iso in cryo.get("isotherms_c", []):
        path = os.path.join(folder, f"isotherm_{iso:g}c.nii.gz")
        if not os.path.exists(path):
            continue
        data, aff = m.load_zyx(path)
        colour = ISOTHERM_COLOURS.get(float(iso), (1.0, 1.0, 1.0, 1.0))
        layers.append((in_plane_outline(data), {
            "name": f"{iso:g} °C isotherm" + (" (ice edge)" if iso == 0 else " (model)"),
            "colormap": {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: colour}, "opacity": 1.0, **m.placement(aff),
            "metadata": _meta("isotherm", aff, meta, isotherm_c=float(iso))}, "labels"))
    return layers


def model_layers(folder, report, meta) -> list:
    """The bioheat model's layers beside the measured ones (``--bioheat``): its temperature, its SD (hidden) and
    its lesion outlines, every name marked "model" so an operator never takes them for measurements."""
    if not report.get("bioheat"):
        return []
    layers = []
    path = os.path.join(folder, "temperature_model.nii.gz")
    if os.path.exists(path):
        temp, aff = m.load_zyx(path)
        data, kw, kind = temperature_layer(temp if temp.ndim == 4 else temp[None], aff, meta)
        kw["name"] = "MODEL temperature (C, bioheat)"
        kw["visible"] = False  # the measured temperature stays the default view
        kw["metadata"]["mrtherm"]["kind"] = "model_temperature"
        layers.append((data, kw, kind))
    path = os.path.join(folder, "temperature_model_sd.nii.gz")
    if os.path.exists(path):
        sd, aff = m.load_zyx(path)
        layers.append((sd, {"name": "MODEL temperature SD (C, bioheat)", "colormap": "magma", "visible": False,
                            "contrast_limits": (0.0, 5.0), **m.placement(aff, meta.get("frame_times_s"),
                                                                          series=sd.ndim == 4),
                            "metadata": _meta("model_sd", aff, meta)}, "image"))
    for level in meta.get("dose_levels_cem43_min") or []:
        path = os.path.join(folder, f"lesion_model_{level:g}".replace(".", "p") + ".nii.gz")
        if os.path.exists(path):
            mask, aff = m.load_zyx(path)
            colour, colour_name = m.level_colour(level)
            layers.append((in_plane_outline(mask), {
                "name": f"MODEL lesion {level:g} CEM43 ({colour_name}, bioheat)", "opacity": 1.0,
                "colormap": m.lesion_colormap(colour), **m.placement(aff),
                "metadata": _meta("model_lesion", aff, meta, level=float(level))}, "labels"))
    return layers


def probe_readout(entry, frame) -> str:
    """One probe's label: at ``frame`` its reading and MR (with its SD) when known, else its peaks and lag."""
    mr = entry.get("mr") or {}
    name = entry["name"] + (" (watched)" if entry.get("watch") else "")
    if frame is not None and mr.get("temperature_c") and frame < len(mr["temperature_c"]):
        probe, here = mr["probe_at_frames_c"][frame], mr["temperature_c"][frame]
        parts = [f"probe {probe:.1f} °C" if probe is not None else "probe -",
                 f"MR {here:.1f} ± {mr['sd_c'] or 0:.1f} °C" if here is not None else "MR masked"]
        return f"{name}: " + ", ".join(parts)
    line = f"{name}: probe peak {entry['peak_c']:.1f} °C" if entry.get("peak_c") is not None else name
    if mr.get("peak_c") is not None:
        line += f", MR peak {mr['peak_c']:.1f} °C, lag {mr['lag_s'] or 0:.1f} s"
    return line


def probe_layers(report, meta, scale_zyx) -> list:
    """Probes with positions as a points layer, each labelled with its readings' peak and, when known, MR's."""
    entries = [e for e in (report.get("probes") or {}).get("probes", []) if e.get("position_mm") is not None]
    if not entries:
        return []
    coords = np.array([e["position_mm"][::-1] for e in entries], dtype=float)  # world (Z, Y, X) mm
    texts = [probe_readout(e, None) for e in entries]
    colours = ["red" if e.get("watch") else "white" for e in entries]
    scale = np.asarray(scale_zyx, dtype=float)
    style = {"name": "probes", "size": 3, "face_color": colours, "features": {"readout": texts},
             "text": {"string": "{readout}", "size": 9, "color": "white", "anchor": "upper_left"},
             "metadata": {"mrtherm": {**meta, "kind": "probes", "entries": entries}}, **m.points_placement(scale)}
    return [(coords / scale, style, "points")]


def map_layer(path) -> list:
    """One mrtherm NIfTI map as a layer, styled by its file name."""
    name = os.path.basename(os.fspath(path))
    if name == "temperature.nii.gz":
        temp, aff, _ = open_temperature(path)
        return [temperature_layer(temp, aff)]
    data, aff = m.load_zyx(path)
    if name == "dose_cem43.nii.gz":
        return dose_layers(np.asarray(data, np.float32)[None], aff, [240.0])[:1]
    if name == "labels.nii.gz":
        return [labels_layer(data, aff)]
    if name.startswith("evaluation_"):
        return [evaluation_layer(path)]
    if name in ("mask.nii.gz", "drift_reference.nii.gz") or name.startswith("lesion_"):
        return [(data.astype(np.int32), {"name": name.split(".")[0], **m.placement(aff)}, "labels")]
    kw = {"colormap": "gray"} if name == "anatomy.nii.gz" else {"colormap": "magma"}
    return [(np.nan_to_num(data.astype(np.float32)), {"name": name.split(".")[0], **m.placement(aff), **kw},
             "image")]


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
    times = [float(t) for t in exam.frame_times_s]
    meta = {"kind": "dicom", "nifti_affine": exam.affine, "frame_times_s": times,
            "provenance": exam.provenance, "te_s": exam.te_s, "b0_t": exam.b0_t}

    def component(t, which):
        a, b, _polar = exam.frame_parts(t)
        return np.asarray(a if which == 0 else b, dtype=np.float32)

    def lazy(which):
        return da.stack([da.from_delayed(dask.delayed(component)(t, which), shape, np.float32)
                         for t in range(exam.n_frames)])

    where = m.placement(exam.affine, times, series=True)
    names = ("magnitude", "phase (rad)") if "phase" in exam.components else ("real", "imaginary")
    mag = (lazy(0), {"name": names[0], "colormap": "gray", **where,
                     "metadata": {"mrtherm": {**meta, "component": names[0]}}}, "image")
    ph_kw = {"colormap": "twilight_shifted", "contrast_limits": (-np.pi, np.pi)} if names[1].startswith("phase") \
        else {"colormap": "gray"}
    ph = (lazy(1), {"name": names[1], "visible": False, **ph_kw, **where,
                    "metadata": {"mrtherm": {**meta, "component": names[1]}}}, "image")
    return [mag, ph]
