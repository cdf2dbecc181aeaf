"""A treatment: several sonications, each with its own baseline and Thermometer, dose summed in world coordinates.

Every sonication is processed on its own grid (its slices may be shifted or
oblique relative to the others). Its dose and Tmax are resampled onto the
treatment grid -- the first sonication's grid, or a planning volume given as
``grid`` -- through the two affines (linear interpolation; the identity when
the grids coincide, so the first sonication's values are carried exactly). The
cumulative dose is the sum, in sonication order, of the resampled doses
(CEM43 adds over time at a tissue point); cumulative Tmax is their maximum.
A voxel no sonication measured reliably is NaN.

:class:`Treatment` serves ``mrtherm live`` (one frame at a time, from the
scanner) and ``mrtherm run --dicom`` on a folder of several sonications (one
finished :class:`mrtherm.Thermometer` at a time); both sum through
:class:`CumulativeDose`, so the two give the same cumulative dose bit for bit.
"""

from __future__ import annotations

import numpy as np

from mrtherm.backend import to_numpy
from mrtherm.errors import InputFileError
from mrtherm.geometry import voxel_volume_ml
from mrtherm.io import labels as labels_mod
from mrtherm.io.dicom import assemble, geometry, loader
from mrtherm.io.phase_scale import phase_to_radians
from mrtherm.thermometry.dose import time_above_segment
from mrtherm.thermometry.result import cap_dose
from mrtherm.thermometry.thermometer import Thermometer

ABOVE_THRESHOLDS_C = (43.0, 45.0)


# --------------------------------------------------------------------------- the treatment grid
class TreatmentGrid:
    """Shape ``(z, y, x)``, affine and where they came from."""

    def __init__(self, shape_zyx, affine, source):
        self.shape = tuple(int(v) for v in shape_zyx)
        self.affine = np.asarray(affine, dtype=np.float64)
        self.source = source

    @classmethod
    def from_file(cls, path):
        """The grid of a 3-D NIfTI volume (a planning scan).

        Parameters
        ----------
        path : str

        Returns
        -------
        TreatmentGrid
        """
        from mrtherm.io import niftiio  # noqa: PLC0415
        data, affine = niftiio.load_3d(path, "treatment grid")
        return cls(data.shape[::-1], affine, f"file {path}")

    def describe(self) -> dict:
        """For report.json.

        Returns
        -------
        dict
        """
        return {"shape_zyx": list(self.shape), "affine": self.affine.tolist(), "source": self.source,
                "voxel_volume_ml": voxel_volume_ml(self.affine)}

    def resampler(self, shape_zyx, affine):
        """``f(volume_zyx, order, fill)``: a volume of grid (``shape_zyx``, ``affine``) on this grid.

        The identity (the array itself) when the grids coincide; else scipy's ``affine_transform`` with
        interpolation ``order`` (1 linear, 0 nearest) and ``fill`` outside the source.

        Parameters
        ----------
        shape_zyx : tuple of int
        affine : (4, 4) array
            Of the source grid.

        Returns
        -------
        callable
        """
        if tuple(shape_zyx) == self.shape and np.allclose(affine, self.affine, atol=1e-4):
            return lambda vol, order, fill: vol
        mat = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ self.affine
        out_xyz = self.shape[::-1]

        def resample(vol, order, fill):
            from scipy import ndimage  # noqa: PLC0415
            out = ndimage.affine_transform(np.asarray(vol).transpose(2, 1, 0), mat[:3, :3], offset=mat[:3, 3],
                                           output_shape=out_xyz, order=order, mode="constant", cval=fill)
            return np.ascontiguousarray(out.transpose(2, 1, 0))
        return resample


class CumulativeDose:
    """Dose, Tmax and coverage of the finished sonications on the treatment grid, plus the current one's."""

    def __init__(self, grid: TreatmentGrid):
        self.grid = grid
        self.dose = np.zeros(grid.shape, dtype=np.float64)
        self.tmax = np.full(grid.shape, -np.inf, dtype=np.float32)
        self.covered = np.zeros(grid.shape, dtype=bool)

    def contribution(self, th: Thermometer):
        """A sonication's dose, Tmax and reliable voxels on the treatment grid.

        Parameters
        ----------
        th : Thermometer

        Returns
        -------
        tuple
            ``(dose float64, tmax float32, reliable bool)`` on the treatment grid; 0, body temperature and False
            where the sonication did not measure.
        """
        resample = self.grid.resampler(th.shape, th.affine)
        # the sonication's dose as the Thermometer reports it: in tissue coordinates when it registers motion
        dose_np = to_numpy(th.dose_cem43_min)
        mask = th.reliability.mask & np.isfinite(dose_np)
        dose = resample(np.where(mask, dose_np, 0.0), 1, 0.0)
        tmax = to_numpy(th.tmax_c) if th.frames_processed else np.full(th.shape, np.nan, np.float32)
        body = th.params.body_temp_c
        tmax = resample(np.where(mask & np.isfinite(tmax), tmax, body).astype(np.float32), 1, body)
        covered = resample(mask.astype(np.uint8), 0, 0).astype(bool)
        return dose, tmax, covered

    def add(self, contribution):
        """Add a finished sonication.

        Parameters
        ----------
        contribution : tuple
            From :meth:`contribution`.
        """
        dose, tmax, covered = contribution
        self.dose = self.dose + dose
        self.tmax = np.fmax(self.tmax, tmax)
        self.covered = self.covered | covered

    def maps(self, contribution=None):
        """``(dose CEM43 min float64, Tmax C float32, covered)`` including ``contribution``; NaN where uncovered.

        Parameters
        ----------
        contribution : tuple, optional
            The running sonication's.

        Returns
        -------
        tuple of ndarray
        """
        dose, tmax, covered = self.dose, self.tmax, self.covered
        if contribution is not None:
            dose, tmax, covered = dose + contribution[0], np.fmax(tmax, contribution[1]), covered | contribution[2]
        return (np.where(covered, dose, np.nan), np.where(covered, tmax, np.float32(np.nan)).astype(np.float32),
                covered)

    def state(self) -> dict:
        """Arrays for the checkpoint.

        Returns
        -------
        dict of str to ndarray
        """
        return {"dose": self.dose, "tmax": self.tmax, "covered": self.covered}

    def restore(self, arrays):
        """Back from :meth:`state`.

        Parameters
        ----------
        arrays : dict of str to ndarray
        """
        self.dose, self.tmax, self.covered = arrays["dose"], arrays["tmax"], arrays["covered"].astype(bool)


# --------------------------------------------------------------------------- one sonication
def _stack(role, images):
    return assemble.Stack(role=role, frames=[list(images)], times_s=None,
                          positions_mm=geometry.slice_positions(images))


def mean_time_s(images):
    """A frame's acquisition time: the mean over its slices (as the batch loader), None if a slice has none.

    Parameters
    ----------
    images : list of DicomImage

    Returns
    -------
    float or None
        s.
    """
    if any(im.time_s is None for im in images):
        return None
    return float(np.array([[im.time_s for im in images]]).mean(axis=1)[0])


class Sonication:
    """One sonication fed frame by frame: its geometry and acquisition from its first frame, then a Thermometer.

    The first ``baseline_frames`` frames are held until the last of them arrives; then the Thermometer is built
    from them and takes them, and every later frame, in order.
    """

    def __init__(self, index, frame, options):
        self.index = index
        self.options = options
        self.roles = frame.roles
        self.series = sorted({im.series_uid for im in frame.images_a + frame.images_b})
        self.affine = geometry.stack_affine(frame.images_a)
        self.shape = frame.a.shape
        self.provenance, self.warnings = {}, []
        a_stack, b_stack = _stack(self.roles[0], frame.images_a), _stack(self.roles[1], frame.images_b)
        te = loader.echo_time(b_stack, options.get("te_s"), self.provenance, self.warnings)
        b0 = loader.field_strength(a_stack, b_stack, options.get("b0_t"), self.provenance)
        from mrtherm.io import acquisition  # noqa: PLC0415
        self.te_s, self.b0_t = acquisition.validate_te_b0(te, b0)
        self.phase_scale = loader.phase_scale_of(lambda: frame.b, b_stack, options.get("phase_scale", "auto"),
                                                 self.provenance)
        self.first_rep = frame.rep
        self.t0 = self._clock(frame)
        self.baseline = []
        self.th = None
        self.last_temperature = None
        self.next_rep = frame.rep
        self.finished = False

    def _clock(self, frame):
        dt = self.options.get("frame_time_s")
        if dt is not None:
            return (frame.rep - self.first_rep) * float(dt)
        for images in (frame.images_b, frame.images_a):
            t = mean_time_s(images)
            if t is not None:
                return t
        raise InputFileError(frame.images_b[0].where, "frame times unknown: no AcquisitionTime in the DICOM; "
                             "pass --frame-time-s")

    def time_of(self, frame) -> float:
        """Frame time, s after the sonication's first frame.

        Parameters
        ----------
        frame : Frame

        Returns
        -------
        float
        """
        if self.options.get("frame_time_s") is not None:
            return self._clock(frame)
        return self._clock(frame) - self.t0

    def parts(self, frame):
        """``(a, b, polar)`` for the Thermometer: phase to radians with the sonication's phase encoding.

        Parameters
        ----------
        frame : Frame

        Returns
        -------
        tuple
        """
        if self.phase_scale is None:
            return frame.a, frame.b, False
        if not np.isfinite(frame.b).any():
            raise InputFileError(frame.images_b[0].where, f"phase frame {frame.rep} is all NaN")
        return frame.a, phase_to_radians(frame.b, self.phase_scale), True

    def feed(self, frame) -> int:
        """Take the next frame; returns how many frames the Thermometer took (0 while the baseline fills).

        Parameters
        ----------
        frame : Frame

        Returns
        -------
        int
        """
        item = (self.parts(frame), self.time_of(frame))
        self.next_rep = frame.rep + 1
        if self.th is not None:
            self.last_temperature = to_numpy(self.th.update(*item)).copy()
            return 1
        self.baseline.append(item)
        n_base = self.options["params"].baseline_frames
        if len(self.baseline) < n_base:
            return 0
        o = self.options
        self.th = Thermometer(self.shape, self.affine, self.te_s, self.b0_t, [p for p, _ in self.baseline],
                              o["params"], labels=o.get("labels"), drift_roi=o.get("drift_roi"),
                              label_table=o.get("label_table"), backend=o.get("backend", "auto"))
        for parts, t in self.baseline:
            temp = self.th.update(parts, t)
        self.last_temperature = to_numpy(temp).copy()
        self.baseline = []
        return n_base

    @classmethod
    def from_meta(cls, meta, options):
        """A sonication back from :meth:`meta` (without its Thermometer, which the caller restores).

        Parameters
        ----------
        meta : dict
        options : dict

        Returns
        -------
        Sonication
        """
        self = cls.__new__(cls)
        self.index, self.options = meta["sonication"] - 1, options
        self.roles, self.series = tuple(meta["components"]), list(meta["series_instance_uids"])
        self.affine, self.shape = np.asarray(meta["affine"]), tuple(meta["shape_zyx"])
        self.te_s, self.b0_t, self.phase_scale = meta["te_s"], meta["b0_t"], meta["phase_scale"]
        self.provenance, self.warnings = meta["provenance"], []
        self.first_rep, self.next_rep = meta["first_repetition"], meta["next_repetition"]
        self.t0 = meta["time_origin_s"]
        self.finished, self.baseline, self.th, self.last_temperature = meta["finished"], [], None, None
        return self

    def meta(self) -> dict:
        """JSON-able description (report.json and the checkpoint).

        Returns
        -------
        dict
        """
        return {"sonication": self.index + 1, "series_instance_uids": self.series, "components": list(self.roles),
                "shape_zyx": list(self.shape), "affine": self.affine.tolist(), "te_s": self.te_s, "b0_t": self.b0_t,
                "phase_scale": self.phase_scale, "provenance": self.provenance, "first_repetition": self.first_rep,
                "next_repetition": self.next_rep, "time_origin_s": self.t0, "finished": self.finished}


# --------------------------------------------------------------------------- figures for report.json
def time_above_s(curve_c, times_s, threshold_c) -> float:
    """Seconds a temperature curve spent strictly above ``threshold_c`` (linear between frames, exact crossings).

    Examples
    --------
    >>> time_above_s([37.0, 47.0, 47.0, 37.0], [0.0, 10.0, 20.0, 30.0], 42.0)
    20.0

    Parameters
    ----------
    curve_c : sequence of float
        C, NaN segments skipped.
    times_s : sequence of float
    threshold_c : float

    Returns
    -------
    float
        s.
    """
    c, t = np.asarray(curve_c, dtype=np.float64), np.asarray(times_s, dtype=np.float64)
    total = 0.0
    for k in range(1, c.size):
        if np.isfinite(c[k - 1]) and np.isfinite(c[k]):
            total += float(time_above_segment(c[k - 1], c[k], t[k] - t[k - 1], threshold_c))
    return total


def lesion_volumes_ml(dose, affine, levels) -> dict:
    """``{"240": mL, ...}``: volume at or above each CEM43 level (NaN voxels excluded).

    Parameters
    ----------
    dose : ndarray
        CEM43 min.
    affine : (4, 4) array
    levels : sequence of float

    Returns
    -------
    dict of str to float
    """
    d = np.nan_to_num(dose, nan=0.0)
    vox = voxel_volume_ml(affine)
    return {f"{lev:g}": float((d >= lev).sum() * vox) for lev in levels}


def sonication_figures(th: Thermometer, index: int) -> dict:
    """Per-sonication figures of report.json: peak, times above 43/45 C, dose, lesions, structures, alarms.

    Parameters
    ----------
    th : Thermometer
    index : int
        0-based sonication index.

    Returns
    -------
    dict
    """
    out = {"frames_processed": th.frames_processed}
    if not th.frames_processed:
        return out
    tmax = to_numpy(th.tmax_c)
    dose, capped = cap_dose(to_numpy(th.dose_cem43_min))
    curve, times = np.asarray(th.peak_curve_c), np.asarray(th.times_s)
    finite = np.isfinite(curve)
    rows, alarms = th.protected_structures()
    out.update({
        "peak_temperature_c": float(np.nanmax(tmax)) if np.isfinite(tmax).any() else None,
        "time_of_peak_s": float(times[int(np.nanargmax(curve))]) if finite.any() else None,
        **{f"time_above_{thr:g}c_s": time_above_s(curve, times, thr) for thr in ABOVE_THRESHOLDS_C},
        "max_dose_cem43_min": float(np.nanmax(dose)) if np.isfinite(dose).any() else None,
        "capped_dose_voxels": capped,
        "lesion_volumes_ml": lesion_volumes_ml(dose, th.affine, th.params.dose_levels_cem43_min),
        "frame_times_s": [float(v) for v in times], "peak_curve_c": [float(v) for v in curve],
        "protected_structures": rows,
        "alarms": [{**a, "sonication": index + 1} for a in alarms],
    })
    return out


def labels_on_grid(options, grid):
    """``(labels on the treatment grid or None, label table)`` from the ``labels`` / ``label_table`` options.

    Parameters
    ----------
    options : dict
        ``labels`` (path or array) and ``label_table`` (path), both optional.
    grid : TreatmentGrid

    Returns
    -------
    labels : ndarray of int16, shape grid.shape, or None
    table : LabelTable
    """
    table = labels_mod.LabelTable.from_json(options["label_table"]) if options.get("label_table") \
        else labels_mod.LabelTable()
    if options.get("labels") is None:
        return None, table
    labels, _ = labels_mod.load_on_grid(options["labels"], grid.shape, grid.affine, "labels", table)
    return labels, table


def cumulative_figures(dose, tmax, affine, levels) -> dict:
    """report.json's cumulative figures: max dose, peak Tmax, lesion volumes, voxels measured.

    Parameters
    ----------
    dose, tmax : ndarray
    affine : (4, 4) array
    levels : sequence of float

    Returns
    -------
    dict
    """
    finite = np.isfinite(dose)
    return {"max_dose_cem43_min": float(np.nanmax(dose)) if finite.any() else None,
            "peak_temperature_c": float(np.nanmax(tmax)) if np.isfinite(tmax).any() else None,
            "lesion_volumes_ml": lesion_volumes_ml(dose, affine, levels), "reliable_voxels": int(finite.sum())}


def cumulative_alarms(dose, labels, table, params, time_s, sonication) -> list[dict]:
    """Alarms on the cumulative dose in protected structures (treatment-grid labels).

    Parameters
    ----------
    dose : ndarray
        Cumulative, treatment grid.
    labels : ndarray of int or None
        On the treatment grid.
    table : LabelTable
    params : ThermometryParams
    time_s : float
    sonication : int
        1-based, the running one.

    Returns
    -------
    list of dict
    """
    if labels is None:
        return []
    out = []
    d = np.nan_to_num(dose, nan=0.0)
    for value in labels_mod.PROTECTED:
        sel = labels == value
        if not sel.any():
            continue
        peak = float(d[sel].max())
        if peak >= params.alarm_dose_cem43_min:
            out.append({"structure": table.name(value), "label": int(value), "quantity": "cumulative dose",
                        "threshold": float(params.alarm_dose_cem43_min), "unit": "CEM43 min", "value": peak,
                        "time_s": float(time_s), "sonication": sonication})
    return out
