"""Reading MR thermometry exams: magnitude + phase (or real + imaginary) series.

An :class:`Exam` reads its frames lazily, one ``(z, y, x)`` frame at a time, so
processing memory does not grow with the number of frames. Sources are one 4-D
NIfTI file per component, a list of 3-D NIfTI files (one per frame), or
in-memory ``(t, z, y, x)`` arrays (NumPy, CuPy or any array-API library).

Vendor phase scaling (``phase_scale``):

========== ===================================================== ======================
name       stored values                                          radians
========== ===================================================== ======================
radians    already radians (within +-2 pi)                        ``v``
siemens    dcm2niix Siemens, int16 slope 2 / intercept -4096,     ``v * pi / 4096``
           scaled values -4096..4094
siemens-raw  Siemens 12-bit without scaling, 0..4095              ``(v - 2048) * pi / 2048``
ge-mrad    GE-style integer milliradians, +-3142                  ``v / 1000``
========== ===================================================== ======================

``auto`` recognises them from the header scaling and the value range of the
first frame; the chosen scale is reported.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from dataclasses import dataclass, field

import numpy as np

from . import niftiio
from .backend import namespace, to_numpy
from .errors import InputFileError, ParameterError

PHASE_SCALES = ("auto", "radians", "siemens", "siemens-raw", "ge-mrad")
TR_QUIRK_MAX_S = 0.5
"""dcm2niix writes the sequence TR as the NIfTI time step; below this it cannot be a frame interval."""


# --------------------------------------------------------------------------- sources
class _FileSeries:
    """One component (e.g. phase) stored as a 4-D NIfTI or a list of 3-D NIfTI frames."""

    def __init__(self, paths, role):
        self.role = role
        self.paths = [os.fspath(p) for p in paths]
        self.images = []
        if len(self.paths) == 1:
            img = niftiio.load_nifti(self.paths[0])
            if img.ndim not in (3, 4):
                raise InputFileError(self.paths[0], f"expected a 3-D or 4-D image, got {img.ndim}-D shape {img.shape}")
            self.images = [img]
            self.n_frames = img.shape[3] if img.ndim == 4 else 1
            self.four_d = img.ndim == 4
        else:
            for p in self.paths:
                img = niftiio.load_nifti(p)
                if img.ndim == 4 and img.shape[3] == 1:
                    pass
                elif img.ndim != 3:
                    raise InputFileError(p, f"expected a 3-D frame in a list of frames, got shape {img.shape}")
                self.images.append(img)
            self.n_frames = len(self.images)
            self.four_d = False
            ref = self.images[0]
            for p, img in zip(self.paths[1:], self.images[1:]):
                if img.shape[:3] != ref.shape[:3]:
                    raise InputFileError(p, f"frame shape {img.shape[:3]} differs from {self.paths[0]} {ref.shape[:3]}")
                if not np.allclose(img.affine, ref.affine, atol=1e-3):
                    raise InputFileError(p, f"affine differs from the first frame {self.paths[0]}")
        img = self.images[0]
        sx, sy, sz = img.shape[:3]
        self.shape_zyx = (sz, sy, sx)
        self.affine = np.asarray(img.affine, dtype=np.float64)
        self.integer_on_disk = np.issubdtype(img.get_data_dtype(), np.integer)
        self.slope, self.inter = niftiio.scaling_of(img)

    def path_of(self, t: int) -> str:
        return self.paths[0] if self.four_d or len(self.paths) == 1 else self.paths[t]

    def read(self, t: int) -> np.ndarray:
        if self.four_d:
            return niftiio.read_volume(self.images[0], self.paths[0], t)
        return niftiio.read_volume(self.images[t], self.paths[t])

    def describe(self):
        return self.paths if len(self.paths) > 1 else self.paths[0]


class _ArraySeries:
    """One component held in memory as a ``(t, z, y, x)`` array of any array library."""

    def __init__(self, array, role):
        self.role = role
        if getattr(array, "ndim", None) == 3:
            xp = namespace(array)
            array = xp.reshape(array, (1,) + tuple(array.shape))
        if getattr(array, "ndim", None) != 4:
            raise ParameterError(f"{role} array must be (t, z, y, x), got shape {getattr(array, 'shape', None)}")
        self.array = array
        self.n_frames = int(array.shape[0])
        self.shape_zyx = tuple(int(s) for s in array.shape[1:])
        self.affine = None
        self.integer_on_disk = False
        self.slope, self.inter = 1.0, 0.0
        self.paths = []

    def path_of(self, t):
        return f"<{self.role} array>"

    def read(self, t):
        xp = namespace(self.array)
        return xp.astype(self.array[t, ...], xp.float32)

    def describe(self):
        return f"<in-memory {self.role} array {tuple(self.array.shape)}>"


def _as_series(src, role):
    if src is None:
        return None
    if isinstance(src, (str, os.PathLike)):
        return _FileSeries([src], role)
    if isinstance(src, (list, tuple)) and src and all(isinstance(p, (str, os.PathLike)) for p in src):
        return _FileSeries(src, role)
    return _ArraySeries(src, role)


# --------------------------------------------------------------------------- phase scale
def detect_phase_scale(values: np.ndarray, slope: float, inter: float, integer_on_disk: bool, path: str) -> str:
    """Recognise the phase encoding of ``values`` (one frame, after header scaling)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise InputFileError(path, "phase frame is all NaN or infinite")
    lo, hi = float(finite.min()), float(finite.max())
    peak = max(abs(lo), abs(hi))
    if peak <= 2 * math.pi * 1.001:
        return "radians"
    integral = bool(np.all(np.abs(finite - np.round(finite)) < 1e-3))
    if slope == 2.0 and inter == -4096.0:
        return "siemens"
    if integral and lo >= 0 and hi <= 4095 and integer_on_disk:
        return "siemens-raw"
    if integral and peak <= 3142.5:
        return "ge-mrad"
    if integral and lo >= -4096 and hi <= 4095:
        return "siemens"
    raise InputFileError(
        path, f"phase values span {lo:g}..{hi:g}: not radians, Siemens (-4096..4094) or GE milliradians "
        "(+-3142); pass --phase-scale")


def phase_to_radians(values, scale: str):
    if scale == "radians":
        return values
    if scale == "siemens":
        return values * (math.pi / 4096.0)
    if scale == "siemens-raw":
        return (values - 2048.0) * (math.pi / 2048.0)
    if scale == "ge-mrad":
        return values * 1e-3
    raise ParameterError(f"phase_scale must be one of {', '.join(PHASE_SCALES)}, got {scale!r}")


# --------------------------------------------------------------------------- partners
def find_partner(path, want: str) -> str | None:
    """Find the magnitude (``want="magnitude"``) or phase partner of a NIfTI file.

    Recognises BIDS ``part-mag`` / ``part-phase`` entities, the dcm2niix
    ``_ph`` suffix for phase, and the words ``magnitude`` / ``phase`` in the name.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    stem = niftiio.strip_nifti_suffix(name)
    cands = []
    if want == "phase":
        if "_part-mag" in stem:
            cands.append(stem.replace("_part-mag", "_part-phase"))
        cands.append(stem + "_ph")
        if "magnitude" in stem:
            cands.append(stem.replace("magnitude", "phase"))
    else:
        if "_part-phase" in stem:
            cands.append(stem.replace("_part-phase", "_part-mag"))
        if stem.endswith("_ph"):
            cands.append(stem[:-3])
        if "phase" in stem:
            cands.append(stem.replace("phase", "magnitude"))
    for c in cands:
        for suf in niftiio.NIFTI_SUFFIXES:
            p = os.path.join(folder, c + suf)
            if os.path.exists(p) and os.path.abspath(p) != os.path.abspath(path):
                return p
    return None


# --------------------------------------------------------------------------- exam
@dataclass
class Exam:
    """A thermometry exam opened for streaming.

    Use :func:`load_exam` to make one. Frames come from :meth:`frame` as complex64
    ``(z, y, x)`` arrays (NumPy for files; the array library of in-memory inputs).

    Attributes
    ----------
    shape : tuple ``(t, z, y, x)``
    affine : (4, 4) ndarray, voxel (i, j, k) = (x, y, z) to world RAS+ mm
    te_s, b0_t : float
    frame_times_s : (t,) float64 ndarray, strictly increasing
    phase_scale : str, the vendor phase scaling applied (``None`` for real/imag input)
    provenance : dict describing the inputs and where each parameter came from
    warnings : list of str
    """

    components: dict
    shape: tuple
    affine: np.ndarray
    te_s: float
    b0_t: float
    frame_times_s: np.ndarray
    phase_scale: str | None
    provenance: dict
    warnings: list = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return self.shape[0]

    @property
    def shape_zyx(self) -> tuple:
        return self.shape[1:]

    @property
    def voxel_volume_ml(self) -> float:
        return abs(float(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    @property
    def input_paths(self) -> list[str]:
        out = []
        for s in self.components.values():
            out.extend(s.paths)
        return out

    @property
    def in_memory_namespace(self):
        first = next(iter(self.components.values()))
        return namespace(first.array) if isinstance(first, _ArraySeries) else None

    def frame_parts(self, t: int):
        """``(a, b, polar)`` of frame ``t``: (magnitude, phase rad, True) or (real, imag, False)."""
        c = self.components
        if "phase" in c:
            mag = c["magnitude"].read(t)
            ph = c["phase"].read(t)
            xp = namespace(mag, ph)
            if not bool(xp.any(xp.isfinite(ph))):
                raise InputFileError(c["phase"].path_of(t), f"phase frame {t} is all NaN")
            return mag, phase_to_radians(ph, self.phase_scale), True
        return c["real"].read(t), c["imag"].read(t), False

    def frame(self, t: int):
        """Complex64 ``(z, y, x)`` signal of frame ``t`` (non-finite samples set to 0)."""
        from .engine import signal_from_parts
        a, b, polar = self.frame_parts(t)
        return signal_from_parts(a, b, polar, namespace(a, b))



def _sidecars(series_list):
    docs = []
    for s in series_list:
        if s is not None and s.paths:
            doc = niftiio.read_sidecar(s.paths[0])
            if doc is not None:
                docs.append((niftiio.sidecar_path(s.paths[0]), doc))
    return docs


def _from_sidecars(docs, key):
    for path, doc in docs:
        if key in doc:
            try:
                value = float(doc[key])
            except (TypeError, ValueError):
                raise InputFileError(path, f"{key} is not a number: {doc[key]!r}") from None
            return value, path
    return None, None


def _parse_clock(value: str) -> float:
    """dcm2niix AcquisitionTime 'HH:MM:SS.ffffff' to seconds after midnight."""
    t = _dt.time.fromisoformat(str(value))
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond * 1e-6


def load_exam(magnitude=None, phase=None, *, real=None, imag=None, te_s=None, b0_t=None,
              frame_time_s=None, frame_times_s=None, phase_scale="auto", affine=None) -> Exam:
    """Open a thermometry exam.

    Parameters
    ----------
    magnitude, phase : path, list of paths (3-D frames), or ``(t, z, y, x)`` array
        Magnitude and phase series. When only one of the two paths is given, its
        partner is looked for (BIDS ``part-mag``/``part-phase``, dcm2niix ``_ph``).
    real, imag : same, instead of magnitude and phase
    te_s : float, optional
        Echo time, s. Default: ``EchoTime`` of a JSON sidecar.
    b0_t : float, optional
        Field strength, T. Default: ``MagneticFieldStrength`` of a JSON sidecar.
    frame_time_s : float, optional
        Interval between frames, s. Default: the NIfTI time step (4-D) or the
        sidecars' ``AcquisitionTime`` (lists of 3-D frames).
    frame_times_s : sequence of float, optional
        Explicit, strictly increasing frame times, s (overrides ``frame_time_s``).
    phase_scale : {"auto", "radians", "siemens", "siemens-raw", "ge-mrad"}
    affine : (4, 4) array, optional
        Voxel-to-world affine for in-memory arrays (identity if omitted).

    Raises
    ------
    InputFileError, ParameterError
        One-line messages naming the file or argument and the problem.
    """
    if phase_scale not in PHASE_SCALES:
        raise ParameterError(f"phase_scale must be one of {', '.join(PHASE_SCALES)}, got {phase_scale!r}")
    provenance = {"inputs": {}}
    warnings = []
    if real is not None or imag is not None:
        if real is None or imag is None:
            raise ParameterError("real and imag must be given together")
        if magnitude is not None or phase is not None:
            raise ParameterError("give magnitude/phase or real/imag, not both")
        comps = {"real": _as_series(real, "real"), "imag": _as_series(imag, "imag")}
    else:
        if isinstance(magnitude, (str, os.PathLike)) and phase is None:
            phase = find_partner(magnitude, "phase")
            if phase is None:
                raise InputFileError(magnitude, "no phase given and no phase partner (part-phase or _ph) found beside it")
            provenance["partner_found"] = "phase"
        elif isinstance(phase, (str, os.PathLike)) and magnitude is None:
            magnitude = find_partner(phase, "magnitude")
            if magnitude is None:
                raise InputFileError(phase, "no magnitude given and no magnitude partner (part-mag) found beside it")
            provenance["partner_found"] = "magnitude"
        if magnitude is None or phase is None:
            raise ParameterError("magnitude and phase (or real and imag) are required")
        comps = {"magnitude": _as_series(magnitude, "magnitude"), "phase": _as_series(phase, "phase")}

    first_name, first = next(iter(comps.items()))
    for name, s in comps.items():
        provenance["inputs"][name] = s.describe()
        if s is first:
            continue
        where = s.paths[0] if s.paths else f"<{name} array>"
        if s.n_frames != first.n_frames or s.shape_zyx != first.shape_zyx:
            raise InputFileError(where, f"shape {s.shape_zyx} x {s.n_frames} frames does not match "
                                 f"{first_name} {first.shape_zyx} x {first.n_frames} frames")
        if s.affine is not None and first.affine is not None and not np.allclose(s.affine, first.affine, atol=1e-3):
            raise InputFileError(where, f"affine does not match {first_name} {first.describe()}")
    n_frames = first.n_frames
    shape = (n_frames,) + tuple(first.shape_zyx)

    if first.affine is not None:
        aff = first.affine
        if affine is not None:
            raise ParameterError("affine is taken from the NIfTI files; do not pass affine with file inputs")
    else:
        aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ParameterError(f"affine must be 4x4, got {aff.shape}")
        if affine is None:
            warnings.append("no affine given for in-memory arrays: identity (1 mm voxels) assumed")

    docs = _sidecars([comps.get("phase"), comps.get("imag"), comps.get("magnitude"), comps.get("real")])
    main_path = (comps.get("phase") or comps.get("imag") or first).describe()
    if isinstance(main_path, list):
        main_path = main_path[0]

    # --- echo time and field strength: flags override sidecars
    if te_s is None:
        te_s, src = _from_sidecars(docs, "EchoTime")
        if te_s is None:
            raise InputFileError(main_path, "echo time unknown: no EchoTime in a JSON sidecar; pass --te-ms / te_s")
        provenance["te_source"] = src
    else:
        provenance["te_source"] = "argument"
    if b0_t is None:
        b0_t, src = _from_sidecars(docs, "MagneticFieldStrength")
        if b0_t is None:
            raise InputFileError(main_path, "field strength unknown: no MagneticFieldStrength in a JSON sidecar; pass --b0-t / b0_t")
        provenance["b0_source"] = src
    else:
        provenance["b0_source"] = "argument"
    te_s, b0_t = float(te_s), float(b0_t)
    if not (te_s > 0 and math.isfinite(te_s)):
        raise ParameterError(f"te_s must be positive, got {te_s}")
    if te_s > 1.0:
        raise ParameterError(f"te_s = {te_s} s is implausible; echo time is in seconds (use --te-ms for ms)")
    if not (b0_t > 0 and math.isfinite(b0_t)):
        raise ParameterError(f"b0_t must be positive, got {b0_t}")

    # --- frame times
    times = _frame_times(first, comps, n_frames, frame_time_s, frame_times_s, docs, provenance, warnings, main_path)

    # --- phase scaling from the first frame
    scale = None
    if "phase" in comps:
        ph = comps["phase"]
        if phase_scale == "auto":
            v = to_numpy(ph.read(0))
            scale = detect_phase_scale(v, ph.slope, ph.inter, ph.integer_on_disk, ph.path_of(0))
            provenance["phase_scale_source"] = "auto"
        else:
            scale = phase_scale
            provenance["phase_scale_source"] = "argument"
        provenance["phase_header_scaling"] = {"slope": ph.slope, "intercept": ph.inter}
    provenance["phase_scale"] = scale

    return Exam(components=comps, shape=shape, affine=aff, te_s=te_s, b0_t=b0_t,
                frame_times_s=times, phase_scale=scale, provenance=provenance, warnings=warnings)


def _frame_times(first, comps, n_frames, frame_time_s, frame_times_s, docs, provenance, warnings, main_path):
    if frame_times_s is not None:
        times = np.asarray([float(t) for t in (frame_times_s.tolist() if hasattr(frame_times_s, "tolist") else frame_times_s)])
        provenance["frame_times_source"] = "argument (explicit list)"
        if times.shape != (n_frames,):
            raise ParameterError(f"frame_times_s has {times.size} values for {n_frames} frames")
    elif frame_time_s is not None:
        step = float(frame_time_s)
        if not (step > 0 and math.isfinite(step)):
            raise ParameterError(f"frame_time_s must be positive, got {frame_time_s}")
        times = np.arange(n_frames) * step
        provenance["frame_times_source"] = "argument (interval)"
    elif isinstance(first, _FileSeries) and not first.four_d and len(first.paths) > 1:
        clocks = []
        for p in first.paths:
            doc = niftiio.read_sidecar(p)
            if not doc or "AcquisitionTime" not in doc:
                raise InputFileError(p, "frame time unknown: no AcquisitionTime in its sidecar; pass --frame-time-s")
            try:
                clocks.append(_parse_clock(doc["AcquisitionTime"]))
            except ValueError:
                raise InputFileError(niftiio.sidecar_path(p), f"AcquisitionTime {doc['AcquisitionTime']!r} is not HH:MM:SS") from None
        times = np.asarray(clocks) - clocks[0]
        provenance["frame_times_source"] = "sidecar AcquisitionTime"
    elif isinstance(first, _FileSeries) and first.four_d:
        step = niftiio.time_step_s(first.images[0])
        tr, _ = _from_sidecars(docs, "RepetitionTime")
        if step is None:
            raise InputFileError(first.paths[0], "frame time unknown: the NIfTI time step is missing; pass --frame-time-s")
        if tr is not None and abs(step - tr) <= 1e-3 * tr and step < TR_QUIRK_MAX_S:
            raise InputFileError(first.paths[0], f"the NIfTI time step {step:g} s is the sequence TR "
                                 "(dcm2niix), not the frame interval; pass --frame-time-s")
        if first.images[0].header.get_xyzt_units()[1] == "unknown":
            warnings.append(f"time units of {first.paths[0]} unknown: time step {step:g} taken as seconds")
        times = np.arange(n_frames) * step
        provenance["frame_times_source"] = "NIfTI time step"
    elif n_frames == 1:
        times = np.zeros(1)
        provenance["frame_times_source"] = "single frame"
    else:
        raise ParameterError("frame times unknown for in-memory arrays: pass frame_time_s or frame_times_s")
    if not np.all(np.isfinite(times)):
        raise ParameterError("frame times must be finite")
    if np.any(np.diff(times) <= 0):
        bad = int(np.argmax(np.diff(times) <= 0)) + 1
        where = "frame times" if provenance["frame_times_source"].startswith("argument") else main_path
        raise InputFileError(where, f"frame times are not strictly increasing (frame {bad}: {times[bad-1]:g} s then {times[bad]:g} s)")
    return times.astype(np.float64)
