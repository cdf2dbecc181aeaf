"""Images in any arrival order to complete frames, sonication by sonication (no network, no files).

A frame is one repetition of a sonication: every slice of both components
(magnitude + phase, or real + imaginary). The repetition of an image is its
temporal position (TemporalPositionIdentifier / TemporalPositionIndex), else
its AcquisitionNumber. Frames leave in order: sonication by sonication,
repetition by repetition.

The slices of a sonication are those of its first frame. Its first frame is
complete once a later repetition has begun (or ``slices`` images per component
are in); later frames are complete the moment their last image arrives. An
image at another slice position or on another grid than its sonication's is
refused, as is one displaced in its plane (all images of a sonication share one
in-plane origin: a slice shifted along its rows or columns lies on another
grid even at the same position along the normal). A frame still incomplete
``frame_timeout_s`` after its last image, while later frames wait, is skipped
(logged, listed in report.json); a run of repetitions that never arrived is
skipped in one step, however long.

The work per image is bounded: a repetition more than ``max_repetitions_ahead``
beyond the highest of its sonication so far is refused (a stray
TemporalPositionIdentifier such as 2147483647 would otherwise leave a gap of
billions of frames to wait for).

Water-fat (``water_fat=True``): every echo of the series belongs to the frame; a slot is (component, slice, echo
number), the echoes of a sonication are those of its first frame (like its slices), and a frame's arrays are
``(n_echoes, z, y, x)`` in increasing echo number, with the echo times in ``Frame.echo_times_ms``.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from mrtherm.errors import MrthermError
from mrtherm.io.dicom import geometry
from mrtherm.io.dicom.sonications import PAIRS, THERMOMETRY_ROLES, SeriesPairing

LOG = logging.getLogger("mrtherm.live")

# DICOM C-STORE failure statuses (PS3.4 Annex B.2.3): A9xx "data set does not match SOP class",
# Cxxx "cannot understand"; the low byte tells the cases apart in the scanner's log.
STATUS_NOT_MR = 0xA900
STATUS_UNREADABLE = 0xC210
STATUS_GEOMETRY = 0xC211
STATUS_NO_REPETITION = 0xC212
STATUS_DUPLICATE_SLOT = 0xC213
STATUS_REPETITION_RANGE = 0xC214  # a repetition far beyond the stream
STATUS_TOO_LARGE = 0xA700  # "out of resources": per-image and per-association size limits


class RefusedImage(MrthermError):
    """An image the service refuses, with the DICOM status it answers."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Frame:
    """One complete frame of a sonication.

    Attributes
    ----------
    sonication : int
        0-based sonication index.
    rep : int
        Repetition number (temporal position or acquisition number).
    roles : tuple of str
        ``(role_a, role_b)``: ``("magnitude", "phase")`` or ``("real", "imaginary")``.
    images_a, images_b : list of DicomImage
        One per slice, sorted along the slice normal.
    a, b : ndarray of float32, shape (z, y, x)
        Rescaled values (phase not yet in radians).
    received_s : float
        ``time.monotonic()`` when its last image arrived.
    echo_times_ms : tuple of float or None, optional
        Water-fat frames: each echo's EchoTime (None where an image does not give it); ``images_a``/``images_b``
        are then the first echo's and ``a``, ``b`` have shape (n_echoes, z, y, x).
    """

    sonication: int
    rep: int
    roles: tuple
    images_a: list
    images_b: list
    a: np.ndarray
    b: np.ndarray
    received_s: float
    echo_times_ms: tuple | None = None


def repetition_of(im) -> int:
    """The repetition of an image; RefusedImage when the DICOM does not say.

    Parameters
    ----------
    im : DicomImage

    Returns
    -------
    int
    """
    rep = im.temporal_index if im.temporal_index is not None else im.acquisition_number
    if rep is None:
        raise RefusedImage(STATUS_NO_REPETITION, f"{im.where}: no TemporalPositionIdentifier, TemporalPositionIndex "
                           "or AcquisitionNumber: its repetition is unknown")
    return int(rep)


MAX_REPETITIONS_AHEAD = 256  # default: a frame this far ahead of the stream is not a repetition of it
IN_PLANE_TOL_FRACTION = 0.05  # of a pixel: DICOM positions are decimal strings, rounded at about 1e-4 mm


class _Sonication:
    def __init__(self, index, first):
        self.index = index
        self.grid = geometry.geometry_key(first)
        self.normal = first.normal
        self.origin, self.axes = np.asarray(first.position, dtype=np.float64), first.orientation.reshape(2, 3)
        self.in_plane_tol_mm = max(geometry.POSITION_TOL_MM, IN_PLANE_TOL_FRACTION * min(first.pixel_spacing))
        self.top_rep: int | None = None  # the highest repetition placed so far
        self.positions: list[float] = []
        self.frozen = False
        self.reps: dict[int, dict] = {}
        self.last_s: dict[int, float] = {}
        self.next_rep: int | None = None
        self.echo = None
        self.echo_numbers: list[int] = []  # water-fat: the echoes of the first frame (fixed with its slices)
        self.roles = None
        self.known_slices = None  # from a checkpoint: a resumed sonication's frames need no later repetition

    def slot(self, im):
        """Canonical slice position of ``im`` (appended while the slices are not yet fixed)."""
        shift = self.axes @ (np.asarray(im.position, dtype=np.float64) - self.origin)
        if np.abs(shift).max() > self.in_plane_tol_mm:
            raise RefusedImage(STATUS_GEOMETRY, f"{im.where}: displaced in its plane by ({shift[0]:.2f}, "
                               f"{shift[1]:.2f}) mm along its rows and columns from sonication {self.index + 1}'s "
                               "grid")
        pos = float(np.dot(self.normal, im.position))
        for p in self.positions:
            if abs(p - pos) <= geometry.POSITION_TOL_MM:
                return p
        if self.frozen:
            raise RefusedImage(STATUS_GEOMETRY, f"{im.where}: slice position {pos:.2f} mm is not one of sonication "
                               f"{self.index + 1}'s {len(self.positions)} slices")
        self.positions.append(pos)
        return pos

    def withdraw(self, ids):
        """Remove the images whose ``id()`` is in ``ids`` (and a first-frame slice position only they had)."""
        for rep in list(self.reps):
            got = self.reps[rep]
            for key in [k for k, v in got.items() if id(v[0]) in ids]:
                del got[key]
            if not got:
                del self.reps[rep]
                self.last_s.pop(rep, None)
        if not self.frozen:
            held = {k[1] for got in self.reps.values() for k in got}
            self.positions = [p for p in self.positions if p in held]
            echoes = {k[2] for got in self.reps.values() for k in got if len(k) == 3}
            self.echo_numbers = [e for e in self.echo_numbers if e in echoes]
        self.top_rep = max(self.reps, default=None)

    def head(self):
        """The repetition that must leave next (None when nothing waits)."""
        if not self.reps:
            return None
        if self.next_rep is None:
            return min(self.reps)
        return self.next_rep if any(r >= self.next_rep for r in self.reps) else None

    def complete(self, rep, slices, final, n_echoes=None):
        got = self.reps.get(rep)
        if not got:
            return False
        if not self.frozen:
            later = any(r > rep for r in self.reps)
            slices = self.known_slices or slices
            if slices is not None and (n_echoes is not None or not self.echo_numbers):
                if len(self.positions) < slices or len(self.echo_numbers) < (n_echoes or 0):
                    return False
            elif not later and not final:
                return False
        return len(got) == 2 * len(self.positions) * max(len(self.echo_numbers), 1)

    def waited_s(self, rep, now):
        """Seconds since anything of ``rep`` (or, for a missing one, of a later repetition) arrived."""
        if rep in self.last_s:
            return now - self.last_s[rep]
        later = [t for r, t in self.last_s.items() if r > rep]
        return now - min(later) if later else 0.0


class FrameAssembler:
    """Collects images into frames (see the module docstring).

    Parameters
    ----------
    slices : int, optional
        Slices per frame, when known in advance (the first frame then leaves without waiting for the second).
    frame_timeout_s : float
        An incomplete frame is skipped this long after its last image when later frames wait.
    echo : int, optional
        Accept only this echo (EchoNumbers); default: the echo of a sonication's first phase image.
    resume : dict, optional
        ``{sonication index: (first repetition not yet processed, slices)}`` from a checkpoint: images of
        earlier repetitions are dropped as already processed.
    max_repetitions_ahead : int
        An image whose repetition lies further beyond the highest of its sonication so far is refused.
    water_fat : bool
        Every echo belongs to the frame (module docstring).
    n_echoes : int, optional
        Water-fat: echoes per frame, when known in advance (with ``slices`` the first frame needs no wait).
    """

    def __init__(self, slices=None, frame_timeout_s=30.0, echo=None, resume=None,
                 max_repetitions_ahead=MAX_REPETITIONS_AHEAD, water_fat=False, n_echoes=None):
        self.water_fat, self.n_echoes = bool(water_fat), n_echoes
        self.max_repetitions_ahead = int(max_repetitions_ahead)
        self.slices = slices
        self.frame_timeout_s = float(frame_timeout_s)
        self.echo = echo
        self.pairing = SeriesPairing()
        self.sonications: list[_Sonication] = []
        self._waiting: dict[str, list] = {}
        self.resume = {int(k): (int(v[0]), int(v[1])) for k, v in (resume or {}).items()}
        self.skipped: list[dict] = []
        self.ignored = {"not thermometry": 0, "other echo": 0, "already processed": 0, "unpaired series dropped": 0}
        self.max_waiting_images = 4096

    # ------------------------------------------------------------------ images in
    def add(self, im, pixels, now: float) -> str:
        """Take one image.

        Parameters
        ----------
        im : DicomImage
        pixels : ndarray of float32, shape (rows, cols)
            Its rescaled values.
        now : float
            ``time.monotonic()``.

        Returns
        -------
        str
            ``"placed"``, ``"waiting"`` (its series is not yet paired) or ``"ignored"``.

        Raises
        ------
        RefusedImage
            Another grid or slice position than its sonication's, no repetition number, or a second image for
            one slot of a frame.
        """
        if im.role not in THERMOMETRY_ROLES:
            self.ignored["not thermometry"] += 1
            return "ignored"
        repetition_of(im)
        son_index = self.pairing.assign(im)
        if son_index is None:
            self._wait(im, pixels, now)
            return "waiting"
        while len(self.sonications) <= son_index:
            self.sonications.append(None)
        waiting = []
        for uid in self.pairing.series_of(son_index):
            waiting = self._waiting.pop(uid, []) + waiting
        for args in waiting:  # kept earlier: one that does not fit its sonication is dropped, not the others
            try:
                self._place(son_index, *args)
            except RefusedImage as exc:
                self.ignored["unpaired series dropped"] += 1
                LOG.warning("an image kept while its series waited for its partner does not fit: %s", exc)
        return self._place(son_index, im, pixels, now)

    def _wait(self, im, pixels, now):
        self._waiting.setdefault(im.series_uid, []).append((im, pixels, now))
        while sum(len(v) for v in self._waiting.values()) > self.max_waiting_images:
            oldest = next(iter(self._waiting))
            dropped = self._waiting.pop(oldest)
            self.ignored["unpaired series dropped"] += len(dropped)
            LOG.warning("series %s was never paired with its other component: %d images dropped", oldest,
                        len(dropped))

    def _place(self, index, im, pixels, now):
        son = self.sonications[index]
        if son is None:
            son = self.sonications[index] = _Sonication(index, im)
            son.next_rep, son.known_slices = self.resume.get(index, (None, None))
        if geometry.geometry_key(im) != son.grid:
            raise RefusedImage(STATUS_GEOMETRY, f"{im.where}: grid (orientation, matrix, pixel spacing) differs from "
                               f"sonication {index + 1}'s")
        if not self._echo_ok(son, im):
            self.ignored["other echo"] += 1
            return "ignored"
        rep = repetition_of(im)
        if son.next_rep is not None and rep < son.next_rep:
            self.ignored["already processed"] += 1
            return "ignored"
        self._check_range(son, im, rep)
        pos = son.slot(im)
        key = (im.role, pos) if not self.water_fat else (im.role, pos, self._echo_slot(son, im))
        frame = son.reps.setdefault(rep, {})
        if key in frame:
            raise RefusedImage(STATUS_DUPLICATE_SLOT, f"{im.where}: a second {im.role} image at slice {pos:.2f} mm of "
                               f"repetition {rep}{'' if len(key) == 2 else f' echo {key[2]}'} (first: "
                               f"{frame[key][0].where})")
        frame[key] = (im, pixels)
        son.last_s[rep] = now
        son.top_rep = rep if son.top_rep is None else max(son.top_rep, rep)
        if son.roles is None:
            son.roles = next(p for p in PAIRS if im.role in p)
        return "placed"

    def _check_range(self, son, im, rep):
        top = son.top_rep if son.top_rep is not None else son.next_rep
        if top is not None and rep > top + self.max_repetitions_ahead:
            raise RefusedImage(STATUS_REPETITION_RANGE, f"{im.where}: repetition {rep} is more than "
                               f"{self.max_repetitions_ahead} beyond sonication {son.index + 1}'s stream (at {top})")

    def withdraw(self, records) -> None:
        """Take back images :meth:`add` placed (their store failed: the scanner is told so and will retry).

        Parameters
        ----------
        records : sequence of DicomImage
        """
        ids = {id(r) for r in records}
        for uid in list(self._waiting):
            self._waiting[uid] = [w for w in self._waiting[uid] if id(w[0]) not in ids]
            if not self._waiting[uid]:
                del self._waiting[uid]
        for son in self.sonications:
            if son is not None:
                son.withdraw(ids)

    def _echo_slot(self, son, im):
        """Water-fat: the image's echo number (a new one joins the sonication's echoes until its first frame left)."""
        number = im.echo_number if im.echo_number is not None else 1
        if number not in son.echo_numbers:
            if son.frozen:
                raise RefusedImage(STATUS_GEOMETRY, f"{im.where}: echo {number} is not one of sonication "
                                   f"{son.index + 1}'s echoes {son.echo_numbers}")
            son.echo_numbers.append(number)
        return number

    def _echo_ok(self, son, im):
        if self.water_fat:
            return True
        if self.echo is not None:
            return im.echo_number == self.echo
        key = (im.echo_number, None if im.te_ms is None else round(im.te_ms, 3))
        if im.role in (PAIRS[0][1], PAIRS[1][1]) and son.echo is None:
            son.echo = key
        return son.echo is None or key == son.echo or im.echo_number == son.echo[0]

    # ------------------------------------------------------------------ frames out
    def ready(self, now: float, final: bool = False) -> list[Frame]:
        """Frames that may leave now, in order; skips incomplete frames that timed out.

        Parameters
        ----------
        now : float
            ``time.monotonic()``.
        final : bool
            The stream ended: a sonication's only repetition counts as complete; incomplete frames stay.

        Returns
        -------
        list of Frame
        """
        out = []
        for son in self.sonications:
            if son is None:
                continue
            while (rep := son.head()) is not None:
                if son.complete(rep, self.slices, final, self.n_echoes if self.water_fat else None):
                    out.append(self._pop(son, rep))
                elif not final and son.waited_s(rep, now) > self.frame_timeout_s and self._later_exists(son, rep):
                    self._skip(son, rep)
                else:
                    break
            if son.head() is not None:
                break  # later sonications wait for this one
        return out

    def _later_exists(self, son, rep):
        return any(r > rep for r in son.reps) or any(s is not None and s.index > son.index and s.reps
                                                     for s in self.sonications)

    def _skip(self, son, rep):
        n_expected = 2 * len(son.positions) * max(len(son.echo_numbers), 1)
        if rep not in son.reps:  # nothing of it (nor of those up to the next that arrived) came: one step
            last = min(r for r in son.reps if r > rep) - 1 if any(r > rep for r in son.reps) else rep
            son.next_rep = last + 1
            self.skipped.append({"sonication": son.index + 1, "repetition": rep, "last_repetition": last,
                                 "images": 0, "images_expected": n_expected * (last - rep + 1)})
            LOG.warning("sonication %d repetitions %d-%d: never received after %.0f s: skipped", son.index + 1, rep,
                        last, self.frame_timeout_s)
            return
        got = son.reps.pop(rep)
        son.last_s.pop(rep, None)
        son.next_rep = rep + 1
        self.skipped.append({"sonication": son.index + 1, "repetition": rep, "images": len(got),
                             "images_expected": n_expected})
        LOG.warning("sonication %d repetition %d: incomplete (%d of %d images) after %.0f s: skipped",
                    son.index + 1, rep, len(got), n_expected, self.frame_timeout_s)

    def _pop(self, son, rep):
        got = son.reps.pop(rep)
        received = son.last_s.pop(rep)
        if not son.frozen:
            son.positions.sort()
            son.echo_numbers.sort()
            son.frozen = True
        son.next_rep = rep + 1
        role_a, role_b = son.roles
        if self.water_fat:
            return _multi_echo_frame(son, rep, got, received)
        ims_a = [got[(role_a, p)][0] for p in son.positions]
        ims_b = [got[(role_b, p)][0] for p in son.positions]
        a = np.stack([got[(role_a, p)][1] for p in son.positions])
        b = np.stack([got[(role_b, p)][1] for p in son.positions])
        return Frame(son.index, rep, (role_a, role_b), ims_a, ims_b, a, b, received)

    def pending(self) -> list[dict]:
        """Frames still incomplete: ``{"sonication", "repetition", "images"}`` each.

        Returns
        -------
        list of dict
        """
        return [{"sonication": s.index + 1, "repetition": r, "images": len(got)}
                for s in self.sonications if s is not None for r, got in sorted(s.reps.items())]


def _multi_echo_frame(son, rep, got, received):
    """A water-fat frame: arrays (n_echoes, z, y, x) in increasing echo number, the first echo's images."""
    role_a, role_b = son.roles
    stack = lambda role: np.stack([np.stack([got[(role, p, e)][1] for p in son.positions])  # noqa: E731
                                   for e in son.echo_numbers])
    first = son.echo_numbers[0]
    te = tuple(got[(role_b, son.positions[0], e)][0].te_ms for e in son.echo_numbers)
    return Frame(son.index, rep, (role_a, role_b), [got[(role_a, p, first)][0] for p in son.positions],
                 [got[(role_b, p, first)][0] for p in son.positions], stack(role_a), stack(role_b), received, te)
