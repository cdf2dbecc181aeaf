"""What crosses to the host per frame in the reference modes: per-slice scalars and a few unknowns, never a volume.

The reference modes' per-frame code (library matching, the hybrid blend and its smooth turn, the referenceless
background fit with its robust medians, the sparse heat solve) is written for any array library; on CuPy arrays
every download goes through :func:`mrtherm.backend.to_numpy` (or the engine's :func:`stats_to_host`). Here the same
code runs on NumPy with those downloads recorded: after the baseline, no download per frame is larger than a few
hundred numbers (a 2 x 48 x 48 frame has 4608 voxels).
"""

import numpy as np
import pytest

import mrtherm
from mrtherm.thermometry import background, engine, frame_reference, reference

MODULES = (background, engine, frame_reference, reference)


@pytest.mark.parametrize("mode", ["referenceless", "hybrid", "library"])
def test_reference_modes_download_no_volume_per_frame(mode, monkeypatch):
    ph = mrtherm.make_phantom(shape_zyx=(2, 48, 48), n_frames=16, baseline_frames=6, sonication_s=(20.0, 35.0),
                              motion_mm=3.0, breath_period_s=4.5, b0_breath_rad=0.5)
    frames = [(ph.magnitude[t], ph.phase_rad[t], True) for t in range(16)]
    params = mrtherm.ThermometryParams(baseline_frames=6, reference=mode, register_motion="off")
    th = mrtherm.Thermometer(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t, frames[:6], params,
                             labels=ph.labels, backend="numpy")
    sizes = []

    def recording(real):
        def to_host(x):
            out = real(x)
            sizes.append(int(np.size(out)))
            return out
        return to_host
    for module in MODULES:
        for name in ("to_numpy", "stats_to_host"):
            if hasattr(module, name):
                real = getattr(module, name)
                if name == "to_numpy":
                    monkeypatch.setattr(module, name, recording(real))
                else:
                    monkeypatch.setattr(module, name, lambda *a, real=real: [sizes.append(int(np.size(v))) or v
                                                                           for v in real(*a)])
    for t in range(16):
        th.update(frames[t], ph.frame_times_s[t])
    voxels = int(np.prod(ph.magnitude.shape[1:]))
    assert sizes, "the per-frame code downloaded nothing: the recording is not in place"
    assert max(sizes) <= 200 < voxels, (mode, max(sizes))
    report = th.frame_reference.report()
    if mode == "referenceless":
        assert len(report["referenceless_frames"]) == 16  # every frame ran the smooth background fit
