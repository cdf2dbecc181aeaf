"""Reading MR thermometry exams: magnitude + phase (or real + imaginary) series.

An :class:`Exam` reads its frames lazily, one ``(z, y, x)`` frame at a time, so
processing memory does not grow with the number of frames. Sources are one 4-D
NIfTI file per component, a list of 3-D NIfTI files (one per frame), a folder of
DICOM files (:mod:`mrtherm.io.dicom`), or in-memory ``(t, z, y, x)`` arrays
(NumPy, CuPy or any array-API library).

What each file is (magnitude, phase, real, imaginary, or a B0 field map in Hz)
comes from its metadata first (sidecar ``ImageType``/``Units``, DICOM tags);
values only confirm it: a magnitude with negative values, or a "phase" that is
dark exactly where the magnitude is dark, is refused. Field maps in Hz are
refused. See :mod:`mrtherm.io.phase_scale` for the vendor phase encodings and
:mod:`mrtherm.io.acquisition` for echo time, field strength, frame times and
their cross-checks.
"""

from __future__ import annotations

import os

import numpy as np

from mrtherm.backend import to_numpy
from mrtherm.errors import InputFileError, ParameterError
from mrtherm.io import acquisition, echoes, partners, roles
from mrtherm.io.sidecar import load_sidecar
from mrtherm.io.sources import as_series, is_path_like, path_list
from mrtherm.text import count
from mrtherm.io.exam_data import Exam  # noqa: F401 -- re-exported: mrtherm.io.exam.Exam
from mrtherm.io.phase_scale import check_scale, detect_phase_scale

FLAGS = {roles.MAGNITUDE: "--magnitude", roles.PHASE: "--phase", roles.REAL: "--real", roles.IMAG: "--imag"}


# --------------------------------------------------------------------------- opening files
def _check_exist(*sources):
    for src in sources:
        for p in path_list(src):
            if not os.path.exists(p):
                raise InputFileError(p, "file not found")


def _complete_pair(magnitude, phase, provenance):
    """Find the missing one of magnitude/phase beside the given files (every frame of a list)."""
    if (magnitude is None) == (phase is None):
        return magnitude, phase
    given, want = (magnitude, roles.PHASE) if phase is None else (phase, roles.MAGNITUDE)
    if not is_path_like(given):
        return magnitude, phase
    found, rules_used = [], set()
    for p in path_list(given):
        q, rule = partners.find_partner(p, want)
        if q is None:
            raise InputFileError(p, f"no {want} given and no {want} partner found beside it (rules tried: "
                                 f"{partners.rules_text()})")
        found.append(q)
        rules_used.add(rule)
    provenance["partner_found"] = {"role": want, "rules": sorted(rules_used)}
    partner = found[0] if isinstance(given, (str, os.PathLike)) else found
    return (magnitude, partner) if want == roles.PHASE else (partner, phase)


def _check_roles(comps, meta):
    """Metadata decides what a file is: refuse field maps and files given in the wrong role."""
    provenance = {}
    for role, series in comps.items():
        for path, info in zip(series.paths, meta[role]):
            if info is None or info.role is None:
                continue
            if info.role == roles.FIELDMAP_HZ:
                raise InputFileError(path, f"{info.role_source} marks a B0 field map in Hz, not a phase image: "
                                     "PRF thermometry needs phase (or real/imaginary) images")
            if info.role != role:
                raise InputFileError(path, f"{info.role_source} marks {roles.ROLE_TEXT[info.role]}, but it was "
                                     f"given as {FLAGS[role]}")
        known = [i.role_source for i in meta[role] if i is not None and i.role is not None]
        provenance[role] = known[0] if known else "as given (no role in the metadata)"
    return provenance


def _check_values(comps, role_sources, first_frames):
    """Values confirm the roles: magnitudes are not negative; a phase is not an image of the anatomy."""
    mag = first_frames.get(roles.MAGNITUDE)
    if mag is not None:
        finite = mag[np.isfinite(mag)]
        neg = finite < 0
        if finite.size and neg.mean() > 0.01:
            raise InputFileError(comps[roles.MAGNITUDE].paths[0],
                                 f"{100 * neg.mean():.0f}% of the values are negative (min {finite.min():g}): not a "
                                 "magnitude image (a phase image given as --magnitude?)")
    ph = first_frames.get(roles.PHASE)
    if mag is not None and ph is not None and role_sources[roles.PHASE].startswith("as given"):
        if _looks_like_magnitude(ph, mag):
            raise InputFileError(comps[roles.PHASE].paths[0],
                                 "values are low wherever the magnitude is low, as in an image of the anatomy, "
                                 "not a phase (which is random in air): a magnitude image given as --phase?")


def _looks_like_magnitude(ph, mag) -> bool:
    """True when the 'phase' is dark exactly where the magnitude is (air): phase in air is uniform."""
    ok = np.isfinite(ph) & np.isfinite(mag)
    if ok.sum() < 100:
        return False
    p, m = ph[ok], mag[ok]
    dark = m <= np.quantile(m, 0.2)
    lo, hi = float(p.min()), float(p.max())
    if not hi > lo or dark.sum() < 20:
        return False
    bottom = p[dark] <= lo + 0.1 * (hi - lo)
    return bool(bottom.mean() > 0.5)


def _check_pair_geometry(comps):
    first_name, first = next(iter(comps.items()))
    for name, s in comps.items():
        if s is first:
            continue
        where = s.paths[0] if s.paths else f"<{name} array>"
        if s.n_frames != first.n_frames or s.shape_zyx != first.shape_zyx:
            raise InputFileError(where, f"shape {s.shape_zyx} x {count(s.n_frames, 'frame')} does not match "
                                 f"{first_name} {first.shape_zyx} x {count(first.n_frames, 'frame')}")
        if s.affine is not None and first.affine is not None and not np.allclose(s.affine, first.affine, atol=1e-3):
            raise InputFileError(where, f"affine does not match {first_name} {first.describe()}")


def _choose_affine(first, affine, warnings):
    if first.affine is not None:
        if affine is not None:
            raise ParameterError("affine is taken from the input files; do not pass affine with file inputs")
        return first.affine
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise ParameterError(f"affine must be 4x4, got {aff.shape}")
    if affine is None:
        warnings.append("no affine given for in-memory arrays: identity (1 mm voxels) assumed")
    return aff


def _choose_phase_scale(comps, phase_scale, provenance, first_phase=None):
    if "phase" not in comps:
        provenance["phase_scale"] = None
        return None
    ph = comps["phase"]
    if phase_scale == "auto":
        values = first_phase if first_phase is not None else to_numpy(ph.read(0))
        scale = detect_phase_scale(values, ph.slope, ph.inter, ph.integer_on_disk, ph.path_of(0))
        provenance["phase_scale_source"] = "auto (header scaling and value range)"
    else:
        scale = phase_scale
        provenance["phase_scale_source"] = "argument"
    provenance["phase_header_scaling"] = {"slope": ph.slope, "intercept": ph.inter}
    provenance["phase_scale"] = scale
    return scale


def _components(magnitude, phase, real, imag, provenance) -> dict:
    """The two sources of an exam given as magnitude/phase (a missing partner found) or real/imag."""
    if real is not None or imag is not None:
        if real is None or imag is None:
            raise ParameterError("real and imag must be given together")
        if magnitude is not None or phase is not None:
            raise ParameterError("give magnitude/phase or real/imag, not both")
        _check_exist(real, imag)
        return {roles.REAL: as_series(real, "real"), roles.IMAG: as_series(imag, "imag")}
    _check_exist(magnitude, phase)
    magnitude, phase = _complete_pair(magnitude, phase, provenance)
    if magnitude is None or phase is None:
        raise ParameterError("magnitude and phase (or real and imag) are required")
    return {roles.MAGNITUDE: as_series(magnitude, "magnitude"), roles.PHASE: as_series(phase, "phase")}


def _is_folder(src) -> bool:
    return isinstance(src, (str, os.PathLike)) and os.path.isdir(src)


def load_exam(magnitude=None, phase=None, *, real=None, imag=None, dicom=None, echo=None, te_s=None, b0_t=None,
              frame_time_s=None, frame_times_s=None, phase_scale="auto", affine=None, water_fat=False,
              echo_times_s=None):
    """Open a thermometry exam.

    Parameters
    ----------
    magnitude, phase : path, list of paths (3-D frames), or ``(t, z, y, x)`` array
        Magnitude and phase series. When only one of the two is given as files, its
        partner is looked for beside it (see :mod:`mrtherm.io.partners`). A folder
        given as ``magnitude`` alone is read as DICOM.
    real, imag : same, instead of magnitude and phase
    dicom : path to a folder, optional
        DICOM files (searched recursively), see :mod:`mrtherm.io.dicom`.
    echo : int, optional
        Echo number to use from a multi-echo DICOM series.
    te_s : float, optional
        Echo time, s. Default: sidecar ``EchoTime`` (``EchoTime2 - EchoTime1`` for a
        phase-difference image) or the DICOM tags.
    b0_t : float, optional
        Field strength, T. Default: sidecar ``MagneticFieldStrength`` or DICOM.
    frame_time_s : float, optional
        Interval between frames, s. Default: the phase sidecars' ``AcquisitionTime``
        (lists of 3-D frames), the NIfTI time step (4-D), or the DICOM times.
    frame_times_s : sequence of float, optional
        Explicit, strictly increasing frame times, s (overrides ``frame_time_s``).
    phase_scale : {"auto", "radians", "siemens", "siemens-raw", "mrad", "ge-mrad"}
    affine : (4, 4) array, optional
        Voxel-to-world affine for in-memory arrays (identity if omitted).
    water_fat : bool
        Returns the list of a multi-echo exam's echoes (one Exam each): :func:`mrtherm.io.echoes.load_echoes`.
    echo_times_s : sequence of float, optional
        With ``water_fat``: the echo times, s (default: sidecars or DICOM).

    Raises
    ------
    InputFileError, ParameterError
        One-line messages naming the file or argument and the problem.
    """
    check_scale(phase_scale)
    if water_fat:
        return echoes.load_echoes(load_exam, magnitude, phase, real=real, imag=imag, dicom=dicom, affine=affine,
                                  echo_times_s=echo_times_s, b0_t=b0_t, frame_time_s=frame_time_s,
                                  frame_times_s=frame_times_s, phase_scale=phase_scale)
    if dicom is not None or (_is_folder(magnitude) and phase is None and real is None and imag is None):
        if magnitude is not None and dicom is not None:
            raise ParameterError("give dicom or magnitude/phase files, not both")
        from mrtherm.io.dicom import load_dicom_exam  # noqa: PLC0415 - pydicom only when DICOM is read
        return load_dicom_exam(dicom if dicom is not None else magnitude, echo=echo, te_s=te_s, b0_t=b0_t,
                               frame_time_s=frame_time_s, frame_times_s=frame_times_s, phase_scale=phase_scale)
    if echo is not None:
        raise ParameterError("echo selects an echo of a DICOM series; a NIfTI file holds one echo")
    provenance, warnings = {"inputs": {}}, []
    comps = _components(magnitude, phase, real, imag, provenance)
    for name, s in comps.items():
        provenance["inputs"][name] = s.describe()
    _check_pair_geometry(comps)
    first = next(iter(comps.values()))
    aff = _choose_affine(first, affine, warnings)

    meta = {name: [load_sidecar(p) for p in s.paths] for name, s in comps.items()}
    provenance["roles"] = _check_roles(comps, meta)
    first_frames = {}
    if roles.PHASE in comps:  # read once: the value checks and the phase-scale detection share them
        first_frames = {name: to_numpy(s.read(0)) for name, s in comps.items()}
        _check_values(comps, provenance["roles"], first_frames)

    ph_role = roles.PHASE if roles.PHASE in comps else roles.IMAG
    mg_role = roles.MAGNITUDE if roles.MAGNITUDE in comps else roles.REAL
    main_path = (comps[ph_role].paths or [f"<{ph_role} array>"])[0]
    te_s = acquisition.echo_time(te_s, meta[ph_role], meta[mg_role], provenance, warnings, main_path)
    b0_t = acquisition.field_strength(b0_t, meta[ph_role], meta[mg_role], provenance, main_path)
    te_s, b0_t = acquisition.validate_te_b0(te_s, b0_t)
    n_frames = first.n_frames
    times = acquisition.frame_times(n_frames, frame_time_s, frame_times_s, comps[ph_role], comps[mg_role],
                                    meta[ph_role], meta[mg_role], provenance, warnings)
    times = acquisition.check_increasing(times, provenance, main_path)
    scale = _choose_phase_scale(comps, phase_scale, provenance, first_frames.get(roles.PHASE))
    return Exam(components=comps, shape=(n_frames,) + tuple(first.shape_zyx), affine=aff, te_s=te_s, b0_t=b0_t,
                frame_times_s=times, phase_scale=scale, provenance=provenance, warnings=warnings)
