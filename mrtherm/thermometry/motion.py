"""Dose on tissue, not on image positions: in-plane registration of free-breathing frames.

What is done: per frame, one in-plane translation ``(dy, dx)`` in voxels,
common to all slices (breathing moves the tissue next to the spine mostly
along one direction; rotation and through-plane motion are not estimated), is
found by Gauss-Newton (inverse-compositional Lucas-Kanade) on the magnitude
images: it minimises ``sum w (I_t(x + d) - R(x))^2`` over the voxels of moving
tissue (``w`` drawn in the reference position), with ``R``
the reference position's magnitude (the first baseline frame). The frame's
temperature map is then resampled at ``x + d`` (linear interpolation; NaN
where it samples a masked voxel or leaves the field of view), which puts every
tissue voxel back where it was in the reference frame, and the exact CEM43
dose and Tmax accumulate there (:class:`TissueDose`).

A tissue voxel counts only while it is measured: a voxel whose resampled
temperature is NaN in any frame keeps a NaN dose (not a guess), so the
tissue-coordinate dose map is measured on the voxels that stay inside the
reliable region in every breathing state.
"""

from __future__ import annotations

import math

import numpy as np

from mrtherm.backend import from_numpy, to_numpy
from mrtherm.thermometry.dose import cem43_segment

REGISTRATION_ITERATIONS = 8
REGISTRATION_TOLERANCE_VOX = 0.005  # 0.01 mm at 2 mm voxels


def _shifted(vol, sy: int, sx: int, xp, fill):
    """``vol[z, y + sy, x + sx]`` with ``fill`` outside the field of view."""
    nz, ny, nx = vol.shape
    out = xp.full(vol.shape, fill, dtype=vol.dtype)  # NumPy / CuPy: assigned in place below
    ys, yd = (slice(sy, ny), slice(0, ny - sy)) if sy >= 0 else (slice(0, ny + sy), slice(-sy, ny))
    xs, xd = (slice(sx, nx), slice(0, nx - sx)) if sx >= 0 else (slice(0, nx + sx), slice(-sx, nx))
    if abs(sy) >= ny or abs(sx) >= nx:
        return out
    out[:, yd, xd] = vol[:, ys, xs]
    return out


def shift_volume(vol, dy: float, dx: float, xp, fill=float("nan")):
    """Sample ``vol`` at ``(y + dy, x + dx)`` in every slice (linear interpolation).

    Parameters
    ----------
    vol : real array, shape (z, y, x)
    dy, dx : float
        Shift, voxels.
    xp : array namespace of ``vol``
    fill : float
        Value outside the field of view; NaN samples spread to every output voxel they touch with a non-zero weight.

    Returns
    -------
    array, shape (z, y, x), the dtype of ``vol``

    Examples
    --------
    >>> import numpy as np
    >>> v = np.arange(5.0)[None, None, :] * np.ones((1, 2, 1))
    >>> shift_volume(v, 0.0, 0.5, np)[0, 0].tolist()
    [0.5, 1.5, 2.5, 3.5, nan]
    """
    iy, ix = math.floor(dy), math.floor(dx)
    fy, fx = dy - iy, dx - ix
    out = None
    for oy, wy in ((0, 1.0 - fy), (1, fy)):
        for ox, wx in ((0, 1.0 - fx), (1, fx)):
            w = wy * wx
            if w == 0.0:  # skip: 0 * NaN would spread NaN from a neighbour that does not contribute
                continue
            term = _shifted(vol, iy + oy, ix + ox, xp, fill) * w
            out = term if out is None else out + term
    return xp.astype(out, vol.dtype)


def _gradients(img, xp):
    """Central differences along y and x (one-sided at the edges)."""
    gy = xp.concat([img[:, 1:2, :] - img[:, 0:1, :], (img[:, 2:, :] - img[:, :-2, :]) / 2.0,
                    img[:, -1:, :] - img[:, -2:-1, :]], axis=1)
    gx = xp.concat([img[:, :, 1:2] - img[:, :, 0:1], (img[:, :, 2:] - img[:, :, :-2]) / 2.0,
                    img[:, :, -1:] - img[:, :, -2:-1]], axis=2)
    return gy, gx


def estimate_shift(moving, reference, weight, xp, start=(0.0, 0.0), ref_gradients=None):
    """In-plane translation ``d`` (voxels) with ``moving(x + d) ~ reference(x)`` (see the module docstring).

    Inverse-compositional Gauss-Newton: the reference's gradients are fixed, so each iteration resamples only
    the moving image and sums five products.

    Parameters
    ----------
    moving, reference : real arrays, shape (z, y, x)
        Magnitudes of the frame and of the reference position.
    weight : real array, shape (z, y, x)
        1 on the moving tissue compared, 0 elsewhere (in the reference position).
    xp : array namespace
    start : (float, float)
        Initial ``(dy, dx)`` (the previous frame's, for speed).
    ref_gradients : tuple of arrays, optional
        ``(gy, gx)`` of ``reference`` from an earlier call.

    Returns
    -------
    (float, float)
        ``(dy, dx)``, voxels.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[0:40, 0:40].astype(float)
    >>> ref = np.exp(-((yy - 20) ** 2 + (xx - 18) ** 2) / 40.0)[None]
    >>> mov = np.exp(-((yy - 21.3) ** 2 + (xx - 17.6) ** 2) / 40.0)[None]
    >>> [round(v, 2) for v in estimate_shift(mov, ref, np.ones_like(ref), xp=np)]
    [1.3, -0.4]
    """
    moving = xp.astype(moving, xp.float64)
    reference = xp.astype(reference, xp.float64, copy=False)  # MotionRegistration keeps it float64: no copy per frame
    gy, gx = ref_gradients if ref_gradients is not None else _gradients(reference, xp)
    dy, dx = (float(v) for v in start)
    for _ in range(REGISTRATION_ITERATIONS):
        warped = shift_volume(moving, dy, dx, xp)  # I(x + d)
        w = xp.where(xp.isfinite(warped), xp.astype(weight, xp.float64), 0.0)
        r = xp.where(w > 0, warped - reference, 0.0)
        # R(x + e) ~ R + grad R . e = I(x + d)  ->  e; then d <- d - e (the reference moved by e instead)
        sums = xp.stack([xp.sum(w * gy * gy), xp.sum(w * gy * gx), xp.sum(w * gx * gx),
                         xp.sum(w * gy * r), xp.sum(w * gx * r)])
        a, b, c, py, px = (float(v) for v in to_numpy(sums))
        det = a * c - b * b
        if not det > 0:
            break
        ey, ex = (c * py - b * px) / det, (a * px - b * py) / det
        dy, dx = dy - ey, dx - ex
        if max(abs(ey), abs(ex)) < REGISTRATION_TOLERANCE_VOX:
            break
    return dy, dx


class TissueDose:
    """Exact CEM43 and Tmax accumulated in the reference position (tissue coordinates).

    Parameters
    ----------
    shape : tuple of int
        ``(z, y, x)``.
    xp : array namespace
    """

    def __init__(self, shape, xp):
        self.xp = xp
        self.dose = xp.zeros(shape, dtype=xp.float64)
        self.tmax = xp.full(shape, -np.inf, dtype=xp.float32)
        self.lost = xp.zeros(shape, dtype=xp.bool)
        self.prev = None

    def update(self, temp_registered, dt_min):
        """Add one registered temperature frame.

        Parameters
        ----------
        temp_registered : array of float32, shape (z, y, x)
            C in the reference position, NaN where not measured.
        dt_min : float or None
            Minutes since the previous frame (None for the first).
        """
        xp = self.xp
        self.lost = self.lost | ~xp.isfinite(temp_registered)
        if self.prev is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                seg = cem43_segment(self.prev, temp_registered, float(dt_min))
            self.dose = self.dose + xp.where(xp.isfinite(seg), seg, 0.0)
        self.tmax = xp.where(xp.isfinite(temp_registered), xp.maximum(self.tmax, temp_registered), self.tmax)
        self.prev = temp_registered

    def maps(self):
        """Dose (CEM43 min, float64) and Tmax (C, float32), NaN on voxels not measured in every frame.

        Returns
        -------
        dose, tmax : arrays, shape (z, y, x)
        """
        xp = self.xp
        return (xp.where(self.lost, xp.asarray(float("nan"), dtype=xp.float64), self.dose),
                xp.where(self.lost, xp.asarray(float("nan"), dtype=xp.float32), self.tmax))

    def state(self) -> dict:
        """Host arrays of the accumulators.

        Returns
        -------
        dict of str to ndarray
        """
        out = {"dose": to_numpy(self.dose), "tmax": to_numpy(self.tmax), "lost": to_numpy(self.lost)}
        if self.prev is not None:
            out["prev"] = to_numpy(self.prev)
        return out

    def restore(self, state: dict):
        """Continue from :meth:`state`.

        Parameters
        ----------
        state : dict of str to ndarray
        """
        self.dose = from_numpy(state["dose"], self.xp)
        self.tmax = from_numpy(state["tmax"], self.xp)
        self.lost = from_numpy(state["lost"], self.xp)
        self.prev = from_numpy(state["prev"], self.xp) if "prev" in state else None


def moving_tissue_weight(reference_mag, labels, threshold):
    """Voxels registration compares: signal above ``threshold`` and, with labels, away from bone.

    Bone does not move with breathing; tissue sliding along it is not a translation there, so bone and the two
    voxels around it are left out (labels 5 and 6 of the default table).

    Parameters
    ----------
    reference_mag : ndarray, shape (z, y, x)
        Host magnitude of the reference position.
    labels : ndarray of int, shape (z, y, x), or None
    threshold : float
        Magnitude below which a voxel is noise.

    Returns
    -------
    ndarray of float64, shape (z, y, x)
        1 where compared, else 0.
    """
    keep = reference_mag > threshold
    if labels is not None:
        from scipy import ndimage  # noqa: PLC0415
        bone = np.isin(labels, (5, 6))
        keep &= ~ndimage.binary_dilation(bone, structure=np.ones((1, 5, 5), bool))
    return keep.astype(np.float64)


class MotionRegistration:
    """Per-frame in-plane translation to the reference position and the tissue-coordinate dose.

    Parameters
    ----------
    reference_mag : array, shape (z, y, x)
        Magnitude of the reference position (the first baseline frame), on the device.
    weight : array, shape (z, y, x)
        :func:`moving_tissue_weight`, on the device.
    xp : array namespace
    """

    def __init__(self, reference_mag, weight, xp):
        self.xp = xp
        self.reference_mag = xp.astype(reference_mag, xp.float64)
        self.weight = weight
        self.tissue = TissueDose(tuple(reference_mag.shape), xp)
        self.shifts_vox = []  # (dy, dx) per frame
        self.entry_shifts = None  # (n, 2): each library entry's shift, a starting point for frames matched to it
        self._gradients = _gradients(self.reference_mag, xp)

    def register_entries(self, magnitudes):
        """Shift of every library entry, so a frame matched to entries starts from theirs.

        Parameters
        ----------
        magnitudes : sequence of arrays, shape (z, y, x)
        """
        self.entry_shifts = np.array([estimate_shift(m, self.reference_mag, self.weight, self.xp,
                                                     ref_gradients=self._gradients) for m in magnitudes])

    def start_for(self, entries, blend=((), 0.0)):
        """Starting shift for a frame matched to ``entries`` (and blended towards ``blend``'s entries).

        Parameters
        ----------
        entries : sequence of int
        blend : (sequence of int, float)
            Second group and its weight.

        Returns
        -------
        tuple of float or None
            None without entry shifts or entries.
        """
        if self.entry_shifts is None or not entries:
            return None
        start = self.entry_shifts[list(entries)].mean(axis=0)
        other, w = blend
        if other and w > 0:
            start = (1.0 - w) * start + w * self.entry_shifts[list(other)].mean(axis=0)
        return float(start[0]), float(start[1])

    def update(self, magnitude, temperature, dt_min, start=None):
        """Register one frame and add its temperature to the tissue dose.

        Parameters
        ----------
        magnitude : array, shape (z, y, x)
        temperature : array of float32, shape (z, y, x)
            C in image coordinates, NaN where masked.
        dt_min : float or None
        start : (float, float), optional
            Starting shift (from the matched library entries); else the previous frame's.
        """
        if start is None:
            start = self.shifts_vox[-1] if self.shifts_vox else (0.0, 0.0)
        dy, dx = estimate_shift(magnitude, self.reference_mag, self.weight, self.xp, start, self._gradients)
        self.shifts_vox.append((dy, dx))
        self.tissue.update(shift_volume(temperature, dy, dx, self.xp), dt_min)

    def state(self) -> dict:
        """Host arrays: reference, weight, shifts and the tissue accumulators.

        Returns
        -------
        dict of str to ndarray
        """
        out = {f"tissue_{k}": v for k, v in self.tissue.state().items()}
        out.update(reference_mag=to_numpy(self.reference_mag), weight=to_numpy(self.weight),
                   shifts_vox=np.asarray(self.shifts_vox, dtype=np.float64).reshape(-1, 2))
        if self.entry_shifts is not None:
            out["entry_shifts"] = self.entry_shifts
        return out

    @classmethod
    def from_state(cls, state: dict, xp):
        """Continue from :meth:`state`.

        Parameters
        ----------
        state : dict of str to ndarray
        xp : array namespace

        Returns
        -------
        MotionRegistration
        """
        self = cls(from_numpy(state["reference_mag"], xp), from_numpy(state["weight"], xp), xp)
        self.tissue.restore({k[7:]: v for k, v in state.items() if k.startswith("tissue_")})
        self.shifts_vox = [(float(a), float(b)) for a, b in state["shifts_vox"]]
        self.entry_shifts = state.get("entry_shifts")
        return self
