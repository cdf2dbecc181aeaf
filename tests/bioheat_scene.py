"""A small bioheat scene for tests that need the model running, not its accuracy (GPU parity, the viewer)."""

import numpy as np

import mrtherm


def small_scene():
    """A small bone scene (cortex over marrow under muscle and fat) whose PRF frames hold a heated spot in front of
    the bone; ``(shape, affine, labels, frames, params)`` for a Thermometer with the bioheat model."""
    shape, aff = (6, 40, 40), np.diag([2.0, 2.0, 3.0, 1.0])
    k, j, i = np.indices(shape)
    r = np.hypot(2.0 * i - 40.0, 2.0 * j - 52.0)
    labels = np.full(shape, 3, np.int16)
    labels[2.0 * j < 8.0] = 2
    labels[r <= 12.0], labels[r < 10.8] = 5, 6
    rng = np.random.default_rng(1)
    frames = []
    for n in range(16):
        rise = 12.0 * np.exp(-((2.0 * i - 40.0) ** 2 + (2.0 * j - 38.0) ** 2 + (3.0 * k - 9.0) ** 2) / 40.0) \
            * (3 <= n <= 10)
        phase = 2 * np.pi * 42.577478e6 * (-0.01e-6) * 3.0 * 0.012 * (rise + rng.normal(0, 0.5, shape))
        frames.append((np.where(labels == 5, 0.0, 100.0).astype(np.float32), phase.astype(np.float32), True))
    params = mrtherm.ThermometryParams(baseline_frames=3, bioheat=True, bioheat_beam_axis=(0, 1, 0),
                                       target_mm=(40.0, 40.0, 9.0))
    return shape, aff, labels, frames, params
