"""Water-fat separated multi-echo PRF thermometry, with fat as the field reference.

Signal model (one voxel, echo ``n`` at echo time ``TE_n``; the project's sign convention: a frequency ``f`` adds
``+2 pi f TE`` of phase, so heating, which lowers the water frequency, lowers the phase)::

    S_n = a * exp((i 2 pi psi - R2*) TE_n) * (W * exp(i 2 pi df_w TE_n) + F * c_n)
    c_n = sum_p alpha_p exp(i 2 pi f_p TE_n),   f_p = delta_p * 1e-6 * gammabar * B0

- ``W``, ``F`` (complex): water and fat; ``c_n``: the 6-peak fat spectrum (:data:`FAT_PEAKS_PPM`, relative to
  water, and :data:`FAT_AMPLITUDES`, summing to 1: Hamilton et al., NMR Biomed 2011;24:784, the ISMRM Fat-Water
  Toolbox's default); ``psi`` (Hz): the field, common to water and fat; ``R2*`` (1/s); ``a``: a complex factor per
  frame (receive gain and phase, common to the echoes; its phase may drift but not differ between echoes).
- Temperature moves the water only: ``df_w = alpha * 1e-6 * gammabar * B0 * dT`` (about -1.28 Hz/C at 3 T);
  fat, whose protons do not shift, stays put. So in a voxel holding fat the water's shift *against the fat* is
  temperature and the shift common to both is the field drift.

Baseline (:func:`fit_baseline`, on the mean of the baseline frames): a variable-projection grid search over
``psi`` and ``R2*`` (for each candidate ``W``, ``F`` are linear), then the choice among each voxel's local minima
that avoids water-fat swaps. **Initialisation** (documented, as the swap is the method's known failure): the
voxels whose residual curve has one clear minimum (the second local minimum at least ``CONFIDENT_RATIO`` x the
first) fix a smooth field (per-slice weighted Gaussian smoothing, in-plane ``FIELD_SMOOTH_MM``); every voxel then
takes its local minimum nearest that field; twice. The field is assumed within half the echo-spacing period
(``1 / (2 dTE)``) of zero.

Per frame (:class:`WaterFatThermometer`): (1) in voxels with fat (fat fraction >= ``FAT_REFERENCE_MIN``) a
Gauss-Newton fit of the field change ``dpsi``, the water shift ``df_w`` and ``a`` against the baseline's ``W``,
``F``, ``R2*``; (2) the drift map: those ``dpsi`` smoothed in-plane (weights ``|F|^2``), which follows a local,
non-polynomial field change that a polynomial over water cannot; where no fat lies within reach (weight below
``DRIFT_WEIGHT_MIN`` of the slice's mean) a per-slice plane fitted to the fat voxels' ``dpsi`` (or, in a slice
without fat, 0: the drift then stays in the temperature, reported per voxel as ``drift_source``); (3) in every
voxel with enough water (water fraction >= ``WATER_FRACTION_MIN``), ``df_w`` and ``a`` with ``dpsi`` fixed at the
drift map; ``dT = df_w / (alpha gammabar B0)``. The fit starts from the previous frame's values: the temperature is
followed in time (the multi-echo model has no wrap within +-1 / (2 dTE), hundreds of C). Its standard deviation
comes from the fit's covariance with the noise SD of the baseline residuals.

Assumptions: the receive phase and gain change per frame but equally for all echoes; ``R2*`` and the fat spectrum
do not change with temperature; water and fat of a voxel share the field; the baseline is at body temperature.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

from mrtherm.thermometry.prf import DEFAULT_ALPHA_PPM_PER_C, GAMMABAR_HZ_PER_T

FAT_PEAKS_PPM = (-3.80, -3.40, -2.60, -1.94, -0.39, 0.60)
FAT_AMPLITUDES = (0.087, 0.693, 0.128, 0.004, 0.039, 0.048)
R2STAR_GRID_PER_S = (0.0, 25.0, 50.0, 100.0, 200.0)
FIELD_STEPS = 160  # field candidates over one echo-spacing period
CONFIDENT_RATIO = 2.0
FIELD_SMOOTH_MM = 12.0
FAT_REFERENCE_MIN = 0.3  # fat fraction from which a voxel reports the field change
WATER_FRACTION_MIN = 0.25  # estimated water fraction from which a voxel reports temperature: every voxel of true
# water fraction >= 0.3 is reported (the fat fraction's estimate errs by up to about 0.03 at SNR 60, 6 echoes)
DRIFT_SMOOTH_MM = 10.0
DRIFT_WEIGHT_MIN = 0.05
GN_ITERATIONS = 3  # from the previous frame's values: the change per frame is small


def fat_basis(te_s, b0_t, peaks_ppm=FAT_PEAKS_PPM, amplitudes=FAT_AMPLITUDES) -> np.ndarray:
    """The fat signal per echo, ``c_n = sum_p alpha_p exp(i 2 pi f_p TE_n)``.

    Parameters
    ----------
    te_s : sequence of float
        Echo times, s.
    b0_t : float
        Field strength, T.
    peaks_ppm, amplitudes : sequence of float
        The fat peaks relative to water (ppm) and their relative amplitudes.

    Returns
    -------
    ndarray of complex128, shape (n_echoes,)
    """
    te = np.asarray(te_s, dtype=np.float64)
    f = np.asarray(peaks_ppm, dtype=np.float64) * 1e-6 * GAMMABAR_HZ_PER_T * float(b0_t)
    amp = np.asarray(amplitudes, dtype=np.float64)
    amp = amp / amp.sum()  # the published amplitudes sum to 0.999 (rounding): F is then the whole fat signal
    return (amp[None, :] * np.exp(2j * math.pi * te[:, None] * f[None, :])).sum(1)


@dataclasses.dataclass
class WaterFatBaseline:
    """The baseline fit: water, fat, field and R2* per voxel (arrays (z, y, x)).

    Attributes
    ----------
    water, fat : ndarray of complex128
    field_hz, r2star_per_s, fat_fraction : ndarray of float64
    residual : ndarray of float64
        Sum of squared residuals over the echoes.
    te_s : ndarray of float64, shape (n_echoes,)
    b0_t : float
    basis : ndarray of complex128, shape (n_echoes,)
        The fat spectrum per echo.
    noise_sd : float
        Noise SD per real channel of the fitted data (the mean of the baseline frames), from the residuals of the
        signal voxels.
    """

    water: np.ndarray
    fat: np.ndarray
    field_hz: np.ndarray
    r2star_per_s: np.ndarray
    fat_fraction: np.ndarray
    residual: np.ndarray
    te_s: np.ndarray
    b0_t: float
    basis: np.ndarray
    noise_sd: float


def _projector_residuals(echoes, te, basis, field_hz, r2star):
    """Residual ``||S||^2 - ||P S||^2`` of every voxel for one (field, R2*) candidate; ``echoes`` (n, v)."""
    e = np.exp((2j * math.pi * field_hz - r2star) * te)
    a = np.stack([e, e * basis], axis=1)  # (n, 2)
    pinv = np.linalg.pinv(a)  # (2, n)
    x = pinv @ echoes
    fitted = a @ x
    return np.sum(np.abs(echoes - fitted) ** 2, axis=0)


def _residual_curves(echoes, te, basis):
    """Residual per voxel over the field grid (the best R2* at each field) and the grid, Hz."""
    period = 1.0 / float(np.median(np.diff(te)))
    fields = (np.arange(FIELD_STEPS) / FIELD_STEPS - 0.5) * period
    curves = np.empty((FIELD_STEPS, echoes.shape[1]))
    best_r2 = np.empty((FIELD_STEPS, echoes.shape[1]))
    for i, f in enumerate(fields):
        res = np.stack([_projector_residuals(echoes, te, basis, f, r) for r in R2STAR_GRID_PER_S])
        curves[i] = res.min(axis=0)
        best_r2[i] = np.asarray(R2STAR_GRID_PER_S)[res.argmin(axis=0)]
    return curves, best_r2, fields


def _local_minima(curves):
    """Boolean (steps, v): a candidate lower than both neighbours (the grid wraps around)."""
    return (curves <= np.roll(curves, 1, axis=0)) & (curves < np.roll(curves, -1, axis=0))


def _smooth_field(field, weight, shape, voxel_mm):
    """Weighted in-plane Gaussian smoothing per slice (normalised convolution)."""
    sigma = [0.0, FIELD_SMOOTH_MM / voxel_mm[1], FIELD_SMOOTH_MM / voxel_mm[2]]
    w = weight.reshape(shape)
    num = ndimage.gaussian_filter(field.reshape(shape) * w, sigma, mode="nearest")
    den = ndimage.gaussian_filter(w, sigma, mode="nearest")
    return (num / np.where(den > 0, den, 1.0)).reshape(-1)


def _choose_field(curves, fields, shape, voxel_mm, signal):
    """Each voxel's local minimum nearest a smooth field grown from the confident voxels (module docstring)."""
    minima = _local_minima(curves)
    masked = np.where(minima, curves, np.inf)
    order = np.sort(masked, axis=0)
    best, second = order[0], order[1]
    confident = np.isfinite(best) & (second >= CONFIDENT_RATIO * np.maximum(best, 1e-30))
    chosen = fields[np.argmin(masked, axis=0)]
    weight = signal * confident
    for _ in range(2):
        smooth = _smooth_field(chosen, weight, shape, voxel_mm)
        distance = np.abs(fields[:, None] - smooth[None, :])
        chosen = fields[np.argmin(np.where(minima, distance, np.inf), axis=0)]
        weight = signal
    return chosen


def fit_baseline(echoes, te_s, b0_t, voxel_mm=(1.0, 1.0, 1.0)) -> WaterFatBaseline:
    """Water, fat, field and R2* of a (mean) baseline frame (see the module docstring).

    Parameters
    ----------
    echoes : complex ndarray, shape (n_echoes, z, y, x)
    te_s : sequence of float
        Echo times, s, increasing.
    b0_t : float
        T.
    voxel_mm : (dz, dy, dx)
        For the in-plane smoothing of the field initialisation.

    Returns
    -------
    WaterFatBaseline
    """
    te = np.asarray(te_s, dtype=np.float64)
    n, shape = echoes.shape[0], echoes.shape[1:]
    flat = np.asarray(echoes, dtype=np.complex128).reshape(n, -1)
    basis = fat_basis(te, b0_t)
    curves, best_r2, fields = _residual_curves(flat, te, basis)
    signal = np.sum(np.abs(flat) ** 2, axis=0)
    field = _choose_field(curves, fields, shape, voxel_mm, signal)
    step = fields[1] - fields[0]
    field = _refine_field(curves, fields, field, step)
    r2 = _refine_r2star(flat, te, basis, field)
    water, fat, residual = _linear_fit(flat, te, basis, field, r2)
    total = np.abs(water) + np.abs(fat)
    ff = np.where(total > 0, np.abs(fat) / np.where(total > 0, total, 1.0), 0.0)
    strong = signal > np.percentile(signal, 50)
    dof = max(2 * n - 6, 1)  # real measurements minus W, F (complex), field and R2*
    median_chi2 = dof * (1.0 - 2.0 / (9.0 * dof)) ** 3  # the median of chi-square with dof degrees (Wilson-Hilferty)
    noise = float(np.sqrt(np.median(residual[strong]) / median_chi2)) if strong.any() else 0.0
    as_map = lambda a: a.reshape(shape)  # noqa: E731
    return WaterFatBaseline(as_map(water), as_map(fat), as_map(field), as_map(r2), as_map(ff), as_map(residual), te,
                            float(b0_t), basis, noise)


def _refine_field(curves, fields, field, step):
    """Parabolic interpolation of the residual curve around each chosen grid field."""
    idx = np.clip(np.round((field - fields[0]) / step).astype(int), 0, len(fields) - 1)
    cols = np.arange(curves.shape[1])
    lo, mid, hi = curves[(idx - 1) % len(fields), cols], curves[idx, cols], curves[(idx + 1) % len(fields), cols]
    den = lo - 2 * mid + hi
    shift = np.where(den > 0, 0.5 * (lo - hi) / np.where(den > 0, den, 1.0), 0.0)
    return fields[idx] + np.clip(shift, -0.5, 0.5) * step


def _refine_r2star(flat, te, basis, field):
    """R2* per voxel at its field: the best of a 5/s grid over 0-300/s, refined by a parabola through its neighbours."""
    grid = np.arange(0.0, 300.0 + 1e-9, 5.0)
    res = np.stack([_linear_fit(flat, te, basis, field, np.full(field.shape, r))[2] for r in grid])
    i = np.clip(np.argmin(res, axis=0), 1, len(grid) - 2)
    cols = np.arange(res.shape[1])
    lo, mid, hi = res[i - 1, cols], res[i, cols], res[i + 1, cols]
    den = lo - 2 * mid + hi
    shift = np.where(den > 0, 0.5 * (lo - hi) / np.where(den > 0, den, 1.0), 0.0)
    return np.maximum(grid[i] + np.clip(shift, -1.0, 1.0) * 5.0, 0.0)


def _linear_fit(flat, te, basis, field, r2):
    """Per voxel: ``W``, ``F`` by least squares at its field and R2*, and the residual."""
    e = np.exp((2j * math.pi * field[None, :] - r2[None, :]) * te[:, None])  # (n, v)
    a1, a2 = e, e * basis[:, None]
    g11, g22 = np.sum(np.abs(a1) ** 2, 0), np.sum(np.abs(a2) ** 2, 0)
    g12 = np.sum(np.conj(a1) * a2, 0)
    b1, b2 = np.sum(np.conj(a1) * flat, 0), np.sum(np.conj(a2) * flat, 0)
    det = g11 * g22 - np.abs(g12) ** 2
    det = np.where(np.abs(det) > 0, det, 1.0)
    water = (g22 * b1 - g12 * b2) / det
    fat = (g11 * b2 - np.conj(g12) * b1) / det
    residual = np.sum(np.abs(flat - a1 * water - a2 * fat) ** 2, 0)
    return water, fat, residual


def _solve_batched(xp, h, g, damping=1e-9):
    """Per-voxel solve of ``h x = g`` ((v, k, k), (v, k)) with a relative Levenberg damping."""
    k = h.shape[-1]
    diag = xp.diagonal(h, axis1=1, axis2=2)
    h = h + (damping * xp.maximum(diag, 1e-30))[:, :, None] * xp.eye(k)[None]
    return xp.linalg.solve(h, g[..., None])[..., 0]


def _normal_equations(xp, columns, residual):
    """``(Re(J^H J), Re(J^H r))`` per voxel from complex Jacobian columns [(n, v)] and the residual (n, v)."""
    k = len(columns)
    h = xp.empty((residual.shape[1], k, k))
    g = xp.empty((residual.shape[1], k))
    for i in range(k):
        g[:, i] = xp.real(xp.sum(xp.conj(columns[i]) * residual, 0))
        for j in range(i, k):
            h[:, i, j] = h[:, j, i] = xp.real(xp.sum(xp.conj(columns[i]) * columns[j], 0))
    return h, g


def array_modules(backend_used="numpy"):
    """The array module and its ndimage for a resolved backend (``"numpy"`` or ``"cupy"``).

    Parameters
    ----------
    backend_used : {"numpy", "cupy"}

    Returns
    -------
    xp : module
        numpy or cupy.
    ndi : module
        scipy.ndimage or cupyx.scipy.ndimage.
    """
    if backend_used == "cupy":
        import cupy  # noqa: PLC0415 -- only with a usable GPU (resolve_backend)
        import cupyx.scipy.ndimage as cundi  # noqa: PLC0415
        return cupy, cundi
    return np, ndimage


_BASELINE_FIELDS = ("water", "fat", "field_hz", "r2star_per_s", "fat_fraction", "residual", "te_s", "basis")
_FRAME_STATE = ("dpsi", "dfw", "gain", "drift_hz", "drift_source", "sd_c")


class WaterFatThermometer:
    """Temperature frame by frame from multi-echo frames, fat as the field reference (module docstring).

    The baseline fit runs on the host (once); the per-frame fits run in ``backend``'s array library (NumPy, or CuPy
    on a GPU: the same code, the arrays choose the path).

    Parameters
    ----------
    baseline_frames : sequence of complex ndarray, shape (n_echoes, z, y, x)
        The baseline frames (their mean is fitted), at body temperature.
    te_s : sequence of float
        Echo times, s.
    b0_t : float
        T.
    voxel_mm : (dz, dy, dx)
    alpha_ppm_per_c : float
    body_temp_c : float
    snr_min : float
        Water (for temperature) or fat (for the field) amplitude in noise SDs below which a voxel does not count.
    backend : {"numpy", "cupy"}
        Where the per-frame fits run (resolved: see :func:`mrtherm.backend.resolve_backend`).
    """

    def __init__(self, baseline_frames, te_s, b0_t, voxel_mm=(1.0, 1.0, 1.0),
                 alpha_ppm_per_c=DEFAULT_ALPHA_PPM_PER_C, body_temp_c=37.0, snr_min=5.0, backend="numpy"):
        frames = [np.asarray(_host(f), dtype=np.complex128) for f in baseline_frames]
        base = fit_baseline(np.mean(np.stack(frames), axis=0), te_s, b0_t, voxel_mm)
        self._setup(base, len(frames), voxel_mm, alpha_ppm_per_c, body_temp_c, snr_min, backend)

    @classmethod
    def from_baseline(cls, base, n_baseline, voxel_mm, alpha_ppm_per_c=DEFAULT_ALPHA_PPM_PER_C, body_temp_c=37.0,
                      snr_min=5.0, backend="numpy"):
        """A thermometer on an existing baseline fit (a restored state), without fitting again.

        Parameters
        ----------
        base : WaterFatBaseline
        n_baseline : int
            Frames the baseline fit averaged.
        voxel_mm, alpha_ppm_per_c, body_temp_c, snr_min, backend
            As for the class.

        Returns
        -------
        WaterFatThermometer
        """
        self = cls.__new__(cls)
        self._setup(base, n_baseline, voxel_mm, alpha_ppm_per_c, body_temp_c, snr_min, backend)
        return self

    def _setup(self, b, n_baseline, voxel_mm, alpha_ppm_per_c, body_temp_c, snr_min, backend):
        self.xp, self.ndi = xp, _ = array_modules(backend)
        self.base, self.n_baseline, self.snr_min = b, int(n_baseline), float(snr_min)
        self.alpha_ppm_per_c = float(alpha_ppm_per_c)
        self.noise_sd = b.noise_sd * math.sqrt(n_baseline)  # of one frame: the fit saw their mean
        self.reference_factor = math.sqrt(1.0 + 1.0 / n_baseline)  # the baseline's own noise, as PRF
        self.shape, self.voxel_mm, self.body_temp_c = b.water.shape, tuple(voxel_mm), float(body_temp_c)
        self.hz_per_c = self.alpha_ppm_per_c * 1e-6 * GAMMABAR_HZ_PER_T * float(b.b0_t)
        te = b.te_s[:, None]
        e = np.exp((2j * math.pi * b.field_hz.reshape(-1)[None, :] - b.r2star_per_s.reshape(-1)[None, :]) * te)
        m_water = e * b.water.reshape(-1)[None, :]
        m_fat = e * b.fat.reshape(-1)[None, :] * b.basis[:, None]
        floor = snr_min * max(self.noise_sd, 1e-30) * math.sqrt(2.0 / len(b.te_s))
        ff = b.fat_fraction.reshape(-1)
        # host masks (what the caller reports) and their device twins (what the fits select with)
        self.fat_reference = (ff >= FAT_REFERENCE_MIN) & (np.abs(b.fat.reshape(-1)) >= floor)
        self.measured = (1.0 - ff >= WATER_FRACTION_MIN) & (np.abs(b.water.reshape(-1)) >= floor)
        on = lambda a: xp.asarray(a)  # noqa: E731
        self._fat_sel, self._water_sel = on(self.fat_reference), on(self.measured)
        self.two_pi_te = on(2.0 * math.pi * te)
        # the baseline's water and fat signals of the voxels each stage fits, selected once (not per frame)
        self._fat_parts = (on(m_water[:, self.fat_reference]), on(m_fat[:, self.fat_reference]))
        self._water_parts = (on(m_water[:, self.measured]), on(m_fat[:, self.measured]))
        self._fat_weight = on((np.abs(b.fat.reshape(-1)) ** 2) * self.fat_reference).reshape(self.shape)
        yy, xx = np.mgrid[0:self.shape[1], 0:self.shape[2]]
        self._plane = on(np.stack([np.ones(yy.size), yy.ravel(), xx.ravel()], 1).astype(np.float64))  # (y x, 3)
        self._slices_with_fat = np.flatnonzero(self.fat_reference.reshape(self.shape).any(axis=(1, 2)))
        v = ff.size
        self.dpsi, self.dfw, self.gain = xp.zeros(v), xp.zeros(v), xp.ones(v, dtype=xp.complex128)
        self.drift_hz = xp.zeros(v)
        self.drift_source = xp.zeros(v, dtype=xp.uint8)  # 1: fat nearby, 2: the slice's fat plane, 0: none
        self.sd_c = xp.full(v, np.nan)

    def _model(self, parts, dpsi, dfw, gain):
        """The model of the selected voxels, its water part and its derivative in ``gain``."""
        xp = self.xp
        m_water, m_fat = parts
        g = xp.exp(1j * self.two_pi_te * dpsi[None, :])
        water = m_water * xp.exp(1j * self.two_pi_te * dfw[None, :])
        return gain[None, :] * g * (water + m_fat), gain[None, :] * g * water, g * (water + m_fat)

    def _fit_fat_voxels(self, y):
        """Gauss-Newton of (dpsi, dfw, gain) in the fat reference voxels (their dpsi)."""
        if not self.fat_reference.any():
            return
        xp, sel = self.xp, self._fat_sel
        dpsi, dfw, gain, ys, te = self.dpsi[sel], self.dfw[sel], self.gain[sel], y[:, sel], self.two_pi_te
        for _ in range(GN_ITERATIONS):
            model, water, unit = self._model(self._fat_parts, dpsi, dfw, gain)
            h, g = _normal_equations(xp, [1j * te * model, 1j * te * water, unit, 1j * unit], ys - model)
            h[:, 1, 1] += 1e-3 * h[:, 0, 0]  # keeps dfw where a nearly pure fat voxel cannot tell it
            step = _solve_batched(xp, h, g)
            dpsi, dfw, gain = dpsi + step[:, 0], dfw + step[:, 1], gain + step[:, 2] + 1j * step[:, 3]
        self.dpsi[sel], self.dfw[sel], self.gain[sel] = dpsi, dfw, gain

    def _drift_map(self):
        """The field change everywhere: the fat voxels' dpsi smoothed in-plane, else the slice's plane, else 0."""
        xp, shape, vox = self.xp, self.shape, self.voxel_mm
        w = self._fat_weight
        dpsi = self.dpsi.reshape(shape)
        num, den = self._smooth_in_plane(dpsi * w), self._smooth_in_plane(w)
        drift = xp.zeros(shape)
        source = xp.zeros(shape, dtype=xp.uint8)
        plane = self._plane
        for z in self._slices_with_fat:  # known on the host: no device sync per slice
            wz = w[z]
            near = den[z] >= DRIFT_WEIGHT_MIN * xp.sum(den[z] * (wz > 0)) / xp.sum(wz > 0)
            drift[z] = xp.where(near, num[z] / xp.where(near, den[z], 1.0), 0.0)
            source[z] = xp.where(near, 1, 2)
            sw = xp.sqrt(wz.ravel())  # the plane where no fat lies within reach (always fitted: no sync to ask)
            coef = xp.linalg.lstsq(plane * sw[:, None], dpsi[z].ravel() * sw, rcond=None)[0]
            drift[z] = xp.where(near, drift[z], (plane @ coef).reshape(shape[1:]))
        self.drift_hz, self.drift_source = drift.reshape(-1), source.reshape(-1)

    def _smooth_in_plane(self, a):
        """Gaussian smoothing along y and x only (1-D passes: no zero-width kernel along z on any library)."""
        for axis, vox in ((1, self.voxel_mm[1]), (2, self.voxel_mm[2])):
            a = self.ndi.gaussian_filter1d(a, DRIFT_SMOOTH_MM / vox, axis=axis, mode="constant")
        return a

    def _fit_water_voxels(self, y):
        """Gauss-Newton of (dfw, gain) with the field change fixed at the drift map; the SD of dfw."""
        xp, sel = self.xp, self._water_sel
        dpsi, dfw, gain, ys, te = self.drift_hz[sel], self.dfw[sel], self.gain[sel], y[:, sel], self.two_pi_te
        for _ in range(GN_ITERATIONS):
            model, water, unit = self._model(self._water_parts, dpsi, dfw, gain)
            h, g = _normal_equations(xp, [1j * te * water, unit, 1j * unit], ys - model)
            step = _solve_batched(xp, h, g)
            dfw, gain = dfw + step[:, 0], gain + step[:, 1] + 1j * step[:, 2]
        cov = xp.linalg.inv(h + 1e-30 * xp.eye(3)[None])
        self.dfw[sel], self.gain[sel] = dfw, gain
        self.sd_c[sel] = self.reference_factor * self.noise_sd * xp.sqrt(xp.maximum(cov[:, 0, 0], 0.0)) / \
            abs(self.hz_per_c)

    def predicted_sd_c(self) -> np.ndarray:
        """The temperature SD the water fit predicts at the baseline (no change), C, NaN where not measured.

        Returns
        -------
        ndarray of float32, shape (z, y, x)
            Host array.
        """
        xp, n = self.xp, int(self.measured.sum())
        sd = np.full(self.measured.size, np.nan)
        if n:
            _, water, unit = self._model(self._water_parts, xp.zeros(n), xp.zeros(n), xp.ones(n, dtype=xp.complex128))
            h, _ = _normal_equations(xp, [1j * self.two_pi_te * water, unit, 1j * unit], xp.zeros_like(water))
            cov = xp.linalg.inv(h + 1e-30 * xp.eye(3)[None])
            sd[self.measured] = _host(self.reference_factor * self.noise_sd * xp.sqrt(xp.maximum(cov[:, 0, 0], 0.0))
                                      / abs(self.hz_per_c))
        return sd.reshape(self.shape).astype(np.float32)

    def update(self, echoes):
        """Temperature of one multi-echo frame.

        Parameters
        ----------
        echoes : complex array, shape (n_echoes, z, y, x)
            NumPy or the backend's arrays.

        Returns
        -------
        array of float32, shape (z, y, x)
            C, in the backend's array library; NaN where the water fraction or the water signal is too low to
            measure.
        """
        xp = self.xp
        y = xp.asarray(echoes).astype(xp.complex128).reshape(len(self.base.te_s), -1)
        y = xp.where(xp.isfinite(y), y, 0.0)
        self._fit_fat_voxels(y)
        self._drift_map()
        self._fit_water_voxels(y)
        temp = xp.where(self._water_sel, self.body_temp_c + self.dfw / self.hz_per_c, xp.nan)
        return temp.reshape(self.shape).astype(xp.float32)

    def state(self) -> dict:
        """The baseline fit and the per-voxel values the next frame starts from, as host arrays.

        Returns
        -------
        dict of str to ndarray
        """
        b = self.base
        out = {f"base_{k}": np.asarray(getattr(b, k)) for k in _BASELINE_FIELDS}
        out.update({k: _host(getattr(self, k)) for k in _FRAME_STATE})
        out["scalars"] = np.array([b.b0_t, b.noise_sd, self.n_baseline, self.alpha_ppm_per_c, self.body_temp_c,
                                   self.snr_min, *self.voxel_mm])
        return out

    @classmethod
    def from_state(cls, state, backend="numpy"):
        """Continue from :meth:`state` (the next frame gives what an uninterrupted run gives).

        Parameters
        ----------
        state : dict of str to ndarray
        backend : {"numpy", "cupy"}

        Returns
        -------
        WaterFatThermometer
        """
        b0, noise, n, alpha, body, snr_min, *vox = [float(v) for v in state["scalars"]]
        base = WaterFatBaseline(**{k: np.asarray(state[f"base_{k}"]) for k in _BASELINE_FIELDS}, b0_t=b0,
                                noise_sd=noise)
        self = cls.from_baseline(base, int(n), tuple(vox), alpha, body, snr_min, backend)
        for k in _FRAME_STATE:
            setattr(self, k, self.xp.asarray(state[k]))
        return self


def _host(a):
    """``a`` as a NumPy array (CuPy arrays copied from the device)."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)
