"""From a heap of 2-D DICOM images to one thermometry exam: which images, which echo, which frame, which slice.

Rules (also in the README):

1. Images are grouped by grid (orientation, matrix, pixel spacing). The exam is
   the one grid holding magnitude + phase images (else real + imaginary);
   images on other grids (localisers, anatomy) and of other roles are ignored
   and listed in report.json. Two such grids: refused (point ``--dicom`` at one).
   Magnitude and phase may sit in different series (Siemens reconstructs them
   as consecutive series).
2. Echo: the phase's echo. A multi-echo phase needs ``--echo N``; a magnitude
   with several echoes is matched to the phase's echo.
3. Slices are sorted along the slice normal; every slice position must hold the
   same number of images (else missing or extra images), spacing must be uniform.
4. Frames: at each slice position the images are ordered by temporal position
   (TemporalPositionIdentifier / TemporalPositionIndex), acquisition time,
   series number, acquisition number and instance number; frame t is the t-th
   image of every slice. Frames must not interleave in time, and two images of
   one series at one position and time are duplicates (refused), whatever order
   the files come in.
5. Frame time: the mean acquisition time of the frame's slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrtherm.errors import InputFileError
from mrtherm.text import count
from mrtherm.io import roles
from mrtherm.io.dicom import geometry


@dataclass
class Stack:
    """One component: ``frames[t][z]`` DICOM images, slices sorted along the normal."""

    role: str
    frames: list
    times_s: np.ndarray | None
    positions_mm: np.ndarray

    @property
    def images(self):
        """Every image of the stack, frame by frame."""
        return [im for frame in self.frames for im in frame]

    def series_text(self) -> str:
        """The series the stack comes from, for messages and report.json."""
        seen = {}
        for im in self.images:
            seen.setdefault(im.series_uid, f"series {im.series_number} ({im.series_description})")
        return ", ".join(seen.values())


def _describe_group(imgs) -> str:
    rs = sorted({roles.ROLE_TEXT.get(i.role, "unknown role").split(" ", 1)[1] if i.role else "unknown role"
                 for i in imgs})
    series = sorted({(i.series_number or 0, i.series_description) for i in imgs})
    return (f"{imgs[0].rows}x{imgs[0].cols} grid, series " +
            ", ".join(f"{n} ({d})" for n, d in series) + ": " + ", ".join(rs))


def _dedupe(images):
    seen = {}
    for im in images:
        if im.sop_uid and im.sop_uid in seen:
            raise InputFileError(im.where, f"duplicate image: same SOP Instance UID as {seen[im.sop_uid].where}")
        seen[im.sop_uid] = im
    return images


def choose_grid(images, folder):
    """``(role_a, role_b, images of the exam grid, ignored description list)``."""
    groups = {}
    for im in _dedupe(images):
        groups.setdefault(geometry.geometry_key(im), []).append(im)
    candidates = []
    for key, imgs in groups.items():
        present = {i.role for i in imgs}
        for pair in ((roles.MAGNITUDE, roles.PHASE), (roles.REAL, roles.IMAG)):
            if set(pair) <= present:
                candidates.append((pair, key, imgs))
                break
    if not candidates:
        hz = [i for i in images if i.role == roles.FIELDMAP_HZ]
        if hz:
            raise InputFileError(hz[0].where, f"{hz[0].role_source}: a B0 field map in Hz, not a phase image; PRF "
                                 "thermometry needs phase (or real/imaginary) images")
        unknown = [i for i in images if i.role is None]
        summary = "; ".join(_describe_group(g) for g in groups.values())
        hint = " (no image says what it is: convert with dcm2niix and pass --magnitude/--phase)" if unknown else ""
        raise InputFileError(folder, f"no magnitude + phase (or real + imaginary) images on one grid among: {summary}{hint}")
    if len(candidates) > 1:
        listing = "; ".join(_describe_group(c[2]) for c in candidates)
        raise InputFileError(folder, f"{len(candidates)} thermometry stacks on different grids ({listing}): point --dicom at "
                             "the folder of one")
    (role_a, role_b), key, imgs = candidates[0]
    ignored = [_describe_group(g) for k, g in groups.items() if k != key]
    other_roles = [i for i in imgs if i.role not in (role_a, role_b)]
    if other_roles:
        ignored.append(f"{count(len(other_roles), 'image')} of other roles on the exam grid")
    return role_a, role_b, [i for i in imgs if i.role in (role_a, role_b)], ignored


def _echo_key(im):
    return (im.echo_number, None if im.te_ms is None else round(im.te_ms, 3))


def _echo_text(keys):
    def one(n, te):
        label = "" if n is None else f"{n} "
        return f"{label}(TE {te:g} ms)" if te is not None else label.strip() or "?"
    return ", ".join(one(n, te) for n, te in keys)


def choose_echo(role_a, role_b, imgs, echo):
    """Images of one echo: the phase's (``role_b``); ``echo`` picks one of several."""
    b = [i for i in imgs if i.role == role_b]
    a = [i for i in imgs if i.role == role_a]
    if echo is not None:
        b = [i for i in b if i.echo_number == echo]
        a = [i for i in a if i.echo_number == echo]
        if not b or not a:
            have = sorted({_echo_key(i) for i in imgs if i.role == role_b}, key=str)
            raise InputFileError(imgs[0].path, f"no echo {echo} in both {role_a} and {role_b} images "
                                 f"(phase echoes: {_echo_text(have)})")
        return a, b, f"echo {echo} (argument)"
    b_keys = sorted({_echo_key(i) for i in b}, key=str)
    if len(b_keys) > 1:
        raise InputFileError(b[0].where, f"multi-echo series ({len(b_keys)} echoes: {_echo_text(b_keys)}): "
                             "pass --echo N to choose one")
    a_match = [i for i in a if _echo_key(i) == b_keys[0]]
    if not a_match:
        a_match = [i for i in a if i.echo_number == b_keys[0][0]]
    if not a_match:
        a_keys = sorted({_echo_key(i) for i in a}, key=str)
        if len(a_keys) != 1:
            raise InputFileError(a[0].where, f"the {role_b} is echo {_echo_text(b_keys)} but the {role_a} has echoes "
                                 f"{_echo_text(a_keys)}: pass --echo N")
        a_match = a
    how = "the only echo of the phase" if len({_echo_key(i) for i in imgs if i.role == role_a}) > 1 else "single echo"
    return a_match, b, f"echo {_echo_text(b_keys)} ({how})"


def _order_key(im):
    return (im.temporal_index or 0, im.time_s if im.time_s is not None else 0.0, im.series_number or 0,
            im.acquisition_number or 0, im.instance_number or 0)


def build_stack(role, images) -> Stack:
    """Sort one component's images into frames x slices; refuse gaps, duplicates and interleaved frames.

    Parameters
    ----------
    role : str
        Component name used in errors (``"magnitude"``, ``"phase"``, ...).
    images : list of DicomImage
        Every 2-D image of that component, in any order.

    Returns
    -------
    Stack
        ``frames[t][z]`` ordered by time and by position along the slice normal, frame times (s) and slice
        positions (mm along the normal).

    Raises
    ------
    InputFileError
        Slices with different image counts, non-uniform slice spacing, or two images at the same position and time.
    """
    pos = geometry.slice_positions(images)
    distinct = geometry.distinct_positions(pos)
    index = np.abs(pos[:, None] - distinct[None, :]).argmin(axis=1)
    per_slice = [[] for _ in distinct]
    for im, k in zip(images, index):
        per_slice[k].append(im)
    counts = np.array([len(s) for s in per_slice])
    if counts.min() != counts.max():
        lo, hi = int(counts.argmin()), int(counts.argmax())
        raise InputFileError(per_slice[lo][0].where,
                             f"{role}: {count(int(counts[lo]), 'image')} at slice position {distinct[lo]:.2f} mm but "
                             f"{int(counts[hi])} at {distinct[hi]:.2f} mm: missing or extra images")
    geometry.check_spacing(distinct, [s[0] for s in per_slice])
    for s in per_slice:
        s.sort(key=_order_key)
        for a, b in zip(s, s[1:]):
            if a.series_uid == b.series_uid and (a.temporal_index, a.acquisition_number, a.time_s) == \
                    (b.temporal_index, b.acquisition_number, b.time_s):
                raise InputFileError(b.where, f"{role}: duplicated slice at {distinct[index[0]]:.2f} mm "
                                     f"(same position, series and time as {a.where})")
    n_frames = int(counts[0])
    frames = [[s[t] for s in per_slice] for t in range(n_frames)]
    times = _frame_times(role, frames)
    return Stack(role=role, frames=frames, times_s=times, positions_mm=distinct)


def _frame_times(role, frames):
    if any(im.time_s is None for fr in frames for im in fr):
        return None
    t = np.array([[im.time_s for im in fr] for fr in frames])
    for k in range(len(frames) - 1):
        if t[k].max() >= t[k + 1].min() and not np.allclose(t[k], t[k + 1]):
            raise InputFileError(frames[k + 1][0].where, f"{role}: frames {k + 1} and {k + 2} interleave in time: "
                                 "cannot tell repetitions apart")
    ti = [fr[0].temporal_index for fr in frames]
    if None not in ti and len(set(ti)) == len(ti):
        for fr in frames:
            if len({im.temporal_index for im in fr}) != 1:
                raise InputFileError(fr[0].where, f"{role}: slices of one frame carry different temporal positions")
    return t.mean(axis=1)


def check_pair(a: Stack, b: Stack):
    """Refuse two stacks (magnitude and phase) with different frame counts or slices.

    Parameters
    ----------
    a, b : Stack
        The two components; errors name a file of ``b``.

    Raises
    ------
    InputFileError
        Different numbers of frames, or slice positions that differ by more than ``POSITION_TOL_MM``.
    """
    if len(a.frames) != len(b.frames):
        raise InputFileError(b.frames[0][0].where, f"{count(len(a.frames), a.role + ' frame')} but "
                             f"{count(len(b.frames), b.role + ' frame')}: not one exam")
    if a.positions_mm.shape != b.positions_mm.shape or \
            np.max(np.abs(a.positions_mm - b.positions_mm)) > geometry.POSITION_TOL_MM:
        raise InputFileError(b.frames[0][0].where, f"{b.role} slices ({len(b.positions_mm)} at "
                             f"{b.positions_mm[0]:.2f}..{b.positions_mm[-1]:.2f} mm) differ from the {a.role} slices "
                             f"({len(a.positions_mm)} at {a.positions_mm[0]:.2f}..{a.positions_mm[-1]:.2f} mm)")
