"""Tissue coordinates under free breathing: in-plane registration of every frame before the thermometry.

What is done: per frame, one in-plane translation ``(dy, dx)`` in voxels,
common to all slices (breathing moves the tissue next to the spine or the ribs
mostly along one direction; rotation and through-plane motion are not
estimated), is found by Gauss-Newton (inverse-compositional Lucas-Kanade) on
the magnitude images: it minimises ``sum w (I_t(x + d) - R(x))^2`` over the
voxels of moving tissue (``w`` drawn in the reference position), with ``R`` the
reference position's magnitude (the first baseline frame). The tissue point at
reference voxel ``x`` sits at image position ``x + d`` in that frame.

The complex frame is then resampled at ``x + d`` (:func:`warp_complex`: Keys
cubic interpolation of the complex signal, 0 outside the field of view), and so is
every baseline library entry with its own shift. Everything downstream -- the
reliability mask, the per-frame validity, temporal unwrapping, the drift fit,
dose and Tmax -- then runs on tissue points, not image voxels: a tissue point
is measured in every frame where it is visible with signal, whichever image
voxel it occupies, and a band of tissue along a moving bone edge is no longer
lost because the bone sweeps through its image voxels. The phase reference is
still chosen by the image-position magnitudes (the breathing state carries the
scanner-fixed field and the respiratory B0 change); only the entries it
averages are registered.
"""


from __future__ import annotations

import math

import numpy as np

from mrtherm.backend import from_numpy, namespace, to_numpy

REGISTRATION_ITERATIONS = 8
REGISTRATION_TOLERANCE_VOX = 0.005  # 0.01 mm at 2 mm voxels
OWN_STATE_VOX = 0.5  # library entries within half a voxel of the first frame's shift share its breathing state
COVERED_BRIGHTER = 1.4
"""A tissue point 40 % brighter than its own magnitude is covered by something else (marrow and fat are 1.5-2 x
muscle in a T1-weighted gradient echo)."""
COVERED_NOISE_SD = 4.0
"""...and farther from its own magnitude than 4 noise SDs either way: at SNR 5 a fixed ratio alone would call 3 % of
frames covered (Rician noise); 4 SDs leave 3 in 10^5."""


def shift_whole_voxels(vol, sy: int, sx: int, xp, fill):
    """``vol[z, y + sy, x + sx]`` in every slice, ``fill`` outside the field of view.

    Parameters
    ----------
    vol : array, shape (z, y, x)
    sy, sx : int
        Shift, whole voxels.
    xp : array namespace of ``vol``
    fill : scalar
        Value outside the field of view.

    Returns
    -------
    array, shape (z, y, x), the dtype of ``vol``
    """
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
            term = shift_whole_voxels(vol, iy + oy, ix + ox, xp, fill) * w
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


CUBIC_A = -0.5
"""Keys' cubic convolution parameter (Keys 1981): third-order accurate, no overshoot on linear ramps."""


def _cubic_weights(f: float):
    """Keys cubic weights of the taps at offsets -1, 0, 1, 2 for a sample ``f`` in [0, 1) past tap 0."""
    a = CUBIC_A
    out = []
    for i in (-1, 0, 1, 2):
        s = abs(i - f)
        if s <= 1.0:
            out.append((a + 2.0) * s ** 3 - (a + 3.0) * s ** 2 + 1.0)
        elif s < 2.0:
            out.append(a * s ** 3 - 5.0 * a * s ** 2 + 8.0 * a * s - 4.0 * a)
        else:
            out.append(0.0)
    return out


def cubic_shift(vol, dy: float, dx: float, xp):
    """``vol`` sampled at ``(y + dy, x + dx)`` in every slice by Keys cubic convolution (separable, 0 outside).

    Linear interpolation of a frame averages neighbours and flattens a heated peak (a Gaussian of 8 mm FWHM
    sampled at 2 mm loses 4 % of its height at half-voxel shifts); cubic convolution keeps it within 0.5 %.

    Parameters
    ----------
    vol : real or complex array, shape (z, y, x)
    dy, dx : float
        Shift, voxels.
    xp : array namespace of ``vol``

    Returns
    -------
    array, shape (z, y, x), the dtype of ``vol``

    Examples
    --------
    >>> import numpy as np
    >>> v = (np.arange(6.0) ** 2)[None, None, :] * np.ones((1, 2, 1))
    >>> [float(x) for x in cubic_shift(v, 0.0, 0.5, np)[0, 0, 1:4]]  # (x + 0.5)^2: quadratics are reproduced
    [2.25, 6.25, 12.25]
    """
    out = vol
    for shift, along_y in ((dy, True), (dx, False)):
        base = math.floor(shift)
        frac = shift - base
        taps = ((0, 1.0),) if frac == 0.0 else tuple(zip((-1, 0, 1, 2), _cubic_weights(frac)))
        acc = None
        for off, w in taps:
            k = base + off
            term = shift_whole_voxels(out, k if along_y else 0, 0 if along_y else k, xp, 0) * w
            acc = term if acc is None else acc + term
        out = acc
    return xp.astype(out, vol.dtype)


def warp_complex(signal, dy: float, dx: float, xp):
    """A complex frame sampled at ``(y + dy, x + dx)`` in every slice by Keys cubic convolution of the complex
    signal (partial volume mixes tissues as the scanner's voxels do; 0 outside the field of view).

    Cubic, not linear: linear interpolation flattens a heated peak (4 % of an 8 mm spot at half-voxel shifts).
    Not a Fourier shift either: exact for band-limited images, it rang at bone edges on the breathing phantoms
    (band RMS error 0.35 -> 0.6 C). Bone the tissue slides past is mixed in as it is in the frame's matched
    library entry, so the phase change cancels it; leaving static bone out of the resampling was tried and lost
    coverage along oblique cortex (0.98 -> 0.90) for no gain in peak or lesion.

    Parameters
    ----------
    signal : complex array, shape (z, y, x)
    dy, dx : float
        Shift, voxels.
    xp : array namespace of ``signal``

    Returns
    -------
    complex64 array, shape (z, y, x)

    Examples
    --------
    >>> import numpy as np
    >>> s = (np.arange(5.0) * (1 + 1j))[None, None, :].astype(np.complex64)
    >>> warp_complex(s, 0.0, 1.0, np)[0, 0].tolist()
    [(1+1j), (2+2j), (3+3j), (4+4j), 0j]
    """
    return xp.astype(cubic_shift(xp.astype(signal, xp.complex64), dy, dx, xp), xp.complex64)


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
    """Per-frame in-plane translation to the reference position (see the module docstring).

    The shift is estimated on the host: each frame's magnitude is downloaded once and the Gauss-Newton
    iterations (each of which needs five sums to decide its step and whether to stop) run there, so a GPU run
    does not stop for a transfer per iteration. The frames are resampled on the device (:meth:`warp`).

    Parameters
    ----------
    reference_mag : array, shape (z, y, x)
        Magnitude of the reference position (the first baseline frame), any array library (kept on the host,
        float64).
    weight : array, shape (z, y, x)
        :func:`moving_tissue_weight`, any array library (kept on the host).
    xp : array namespace
        The frames' array library (resampling, covered tissue).
    """

    def __init__(self, reference_mag, weight, xp):
        self.xp = xp
        self.reference_mag = np.asarray(to_numpy(reference_mag), dtype=np.float64)
        self.weight = to_numpy(weight)
        self.shifts_vox = []  # (dy, dx) per frame
        self.entry_shifts = None  # (n, 2): each library entry's shift, a starting point for frames matched to it
        self.own_mag = None  # (z, y, x): each tissue point's magnitude in the reference breathing state
        self.noise_sigma = 0.0
        self._host_xp = namespace(self.reference_mag)
        self._gradients = _gradients(self.reference_mag, self._host_xp)

    def _shift(self, magnitude, start=(0.0, 0.0)):
        """:func:`estimate_shift` of one magnitude on the host (one download of a device array)."""
        return estimate_shift(to_numpy(magnitude), self.reference_mag, self.weight, self._host_xp, start,
                              self._gradients)

    def register_entries(self, magnitudes):
        """Shift of every baseline frame (library entry): where it is resampled from, and the starting point of
        frames matched to it.

        Parameters
        ----------
        magnitudes : sequence of arrays, shape (z, y, x)

        Returns
        -------
        ndarray, shape (n, 2)
            ``(dy, dx)`` per entry, voxels.
        """
        self.entry_shifts = np.array([self._shift(m) for m in magnitudes])
        return self.entry_shifts

    def learn_own_magnitude(self, tissue_magnitudes, sigma):
        """Each tissue point's own magnitude: the mean of the registered baseline frames in the reference
        position's breathing state (shift within ``OWN_STATE_VOX`` of the first frame's).

        Parameters
        ----------
        tissue_magnitudes : sequence of arrays, shape (z, y, x)
            The registered baseline magnitudes (after :meth:`register_entries`).
        sigma : float
            Noise SD per channel.
        """
        self.noise_sigma = float(sigma)
        shifts = np.asarray(self.entry_shifts, dtype=np.float64)
        near = np.flatnonzero(np.hypot(*(shifts - shifts[0]).T) <= OWN_STATE_VOX)
        total = tissue_magnitudes[int(near[0])]
        for k in near[1:]:
            total = total + tissue_magnitudes[int(k)]
        self.own_mag = self.xp.astype(total / len(near), self.xp.float32)

    def uncovered(self, signal, min_fraction):
        """``signal`` (registered) with 0 where its tissue point is covered by something else in this frame.

        A tissue point that slides under bone (or that gas covers) takes the signal of what covers it: brighter
        than ``COVERED_BRIGHTER`` x its own (marrow, fat) or darker than ``min_fraction`` of it (cortex, gas),
        and in either case farther from it than ``COVERED_NOISE_SD`` noise SDs. Heating never brightens a
        gradient-echo magnitude. Zero signal is not measured (per-frame validity,
        :mod:`mrtherm.thermometry.engine`).

        Parameters
        ----------
        signal : complex array, shape (z, y, x)
            In tissue coordinates.
        min_fraction : float
            ``min_signal_fraction``.

        Returns
        -------
        complex array, shape (z, y, x)
        """
        xp = self.xp
        if self.own_mag is None:
            return signal
        mag = xp.abs(signal)
        margin = COVERED_NOISE_SD * self.noise_sigma
        brighter = (mag > COVERED_BRIGHTER * self.own_mag) & (mag > self.own_mag + margin)
        darker = (mag < min_fraction * self.own_mag) & (mag < self.own_mag - margin)
        covered = brighter | darker
        return xp.where(covered, xp.zeros_like(signal), signal)

    def warp(self, signal, shift):
        """``signal`` resampled into tissue coordinates (:func:`warp_complex`).

        Parameters
        ----------
        signal : complex array, shape (z, y, x)
            In image position.
        shift : (float, float)
            ``(dy, dx)``, voxels.

        Returns
        -------
        complex64 array, shape (z, y, x)
        """
        return warp_complex(signal, float(shift[0]), float(shift[1]), self.xp)

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

    def register(self, magnitude, start=None):
        """This frame's shift (recorded).

        Parameters
        ----------
        magnitude : array, shape (z, y, x)
            The frame's magnitude in image position, any array library (downloaded once).
        start : (float, float), optional
            Starting shift (from the matched library entries); else the previous frame's.

        Returns
        -------
        (float, float)
            ``(dy, dx)``, voxels: the tissue point at reference voxel ``x`` is at ``x + d``.
        """
        if start is None:
            start = self.shifts_vox[-1] if self.shifts_vox else (0.0, 0.0)
        shift = self._shift(magnitude, start)
        self.shifts_vox.append(shift)
        return shift

    def state(self) -> dict:
        """Host arrays: reference, weight and shifts.

        Returns
        -------
        dict of str to ndarray
        """
        out = {"reference_mag": self.reference_mag, "weight": self.weight,
               "shifts_vox": np.asarray(self.shifts_vox, dtype=np.float64).reshape(-1, 2)}
        if self.entry_shifts is not None:
            out["entry_shifts"] = self.entry_shifts
        if self.own_mag is not None:
            out["own_mag"] = to_numpy(self.own_mag)
            out["noise_sigma"] = np.asarray(self.noise_sigma)
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
        self = cls(state["reference_mag"], state["weight"], xp)
        self.shifts_vox = [(float(a), float(b)) for a, b in state["shifts_vox"]]
        self.entry_shifts = state.get("entry_shifts")
        self.own_mag = from_numpy(state["own_mag"], xp) if "own_mag" in state else None
        self.noise_sigma = float(state["noise_sigma"]) if "noise_sigma" in state else 0.0
        return self
