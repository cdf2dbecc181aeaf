"""A multi-echo water-fat phantom written from the physics, for the water-fat thermometry tests.

Every echo is the sum of a water line and six fat lines, each computed on its own (no code shared with
``mrtherm.thermometry.waterfat``): ``S = gain * exp(-R2* TE) * exp(i 2 pi psi_t TE) * (W exp(i 2 pi gammabar B0
alpha dT TE) + F sum_p a_p exp(i 2 pi gammabar B0 delta_p TE))`` with complex Gaussian noise of SD ``sigma`` per
channel. The slab holds columns of fat fraction 0 to 1 in steps of 0.1, a heated spot centred on the 0.5 column,
a smooth baseline field, a per-frame receive phase, and a field change per frame that is a narrow Gaussian bump (not
a low-order polynomial) plus a linear drift.
"""

import dataclasses

import numpy as np

GAMMABAR = 42.577478e6
PEAKS = [(-3.80, 0.087), (-3.40, 0.693), (-2.60, 0.128), (-1.94, 0.004), (-0.39, 0.039), (0.60, 0.048)]


@dataclasses.dataclass
class WaterFatPhantom:
    echoes: np.ndarray  # (t, n, z, y, x) complex
    te_s: np.ndarray
    b0_t: float
    times_s: np.ndarray
    fat_fraction: np.ndarray  # (z, y, x)
    truth_c: np.ndarray  # (t, z, y, x)
    field_change_hz: np.ndarray  # (t, z, y, x)
    voxel_mm: tuple
    sigma: float
    n_baseline: int


def make(shape=(2, 44, 66), n_frames=14, n_baseline=4, te_s=(1.2e-3, 2.4e-3, 3.6e-3, 4.8e-3, 6.0e-3, 7.2e-3),
         b0_t=3.0, peak_rise_c=25.0, snr=60.0, seed=0, bump_hz=6.0, alpha=-0.01, r2star=30.0):
    """The phantom: 11 columns of fat fraction 0, 0.1, ..., 1 (6 voxels wide), heat centred on the 0.5 column."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    te = np.asarray(te_s)
    ff = np.zeros(shape)
    for k in range(11):
        ff[:, :, k * 6:(k + 1) * 6] = k / 10.0
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    field0 = 15.0 + 20.0 * (xx / nx - 0.5) + 10.0 * (yy / ny - 0.5)  # Hz, baseline
    hot = np.exp(-((xx - 33.0) ** 2 + (yy - ny / 2) ** 2) / (2 * 5.0 ** 2))  # the 0.5 column is x = 30..35
    times = 3.0 * np.arange(n_frames)
    ramp = np.clip((np.arange(n_frames) - n_baseline + 1) / 5.0, 0, 1)
    truth = 37.0 + peak_rise_c * ramp[:, None, None, None] * hot[None, None]
    truth = np.broadcast_to(truth, (n_frames, nz, ny, nx)).copy()
    bump = np.exp(-((xx - 45.0) ** 2 + (yy - 8.0) ** 2) / (2 * 4.0 ** 2))  # in the fat fraction 0.7 column
    change = np.zeros((n_frames, nz, ny, nx))
    for t in range(n_frames):
        s = max(t - n_baseline + 1, 0) / max(n_frames - n_baseline, 1)
        change[t] = s * (bump_hz * bump + 2.0 * (xx / nx))
    fat_line = sum(a * np.exp(2j * np.pi * GAMMABAR * b0_t * d * 1e-6 * te) for d, a in PEAKS)
    echoes = np.empty((n_frames, len(te), nz, ny, nx), np.complex64)
    amp = 100.0
    for t in range(n_frames):
        gain = np.exp(1j * (0.3 * t))  # receive phase, the same for every echo
        for n, tn in enumerate(te):
            water = (1 - ff) * np.exp(2j * np.pi * GAMMABAR * b0_t * alpha * 1e-6 * (truth[t] - 37.0) * tn)
            sig = amp * gain * np.exp(-r2star * tn) * np.exp(2j * np.pi * (field0 + change[t]) * tn) * \
                (water + ff * fat_line[n])
            noise = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * (amp / snr)
            echoes[t, n] = sig + noise
    return WaterFatPhantom(echoes, te, b0_t, times, ff, truth, change, (4.0, 2.0, 2.0), amp / snr, n_baseline)
