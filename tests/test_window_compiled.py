"""The compiled feasibility traversal (numba, the ``fast`` extra) blocks exactly the rays the NumPy traversal
blocks, for every blocking reason and configuration branch.

Element areas are distinct powers of two, so a focus's active fraction spells out exactly which elements are
blocked: equal fractions mean equal blocked sets, not just equal counts.
"""

import numpy as np
import pytest

from mrtherm.errors import BackendUnavailableError
from mrtherm.window import Scene, WindowConfig, active_fractions_numpy, feasibility_map, trace
from mrtherm.window import trace_compiled
from mrtherm.window.scene import (BONE_PREFOCAL, CRITICAL_ANGLE, CRITICAL_CROSS, GAS, METAL, NO_PASS_ZONE,
                                  OUT_OF_VOLUME, SCAR, STATUS_BLOCKED)
from mrtherm.window.transducer import Transducer, spherical_cap

N = 40
AFF = np.array([[1.0, 0, 0, -20], [0, 1.0, 0, -20], [0, 0, 1.0, -20], [0, 0, 0, 1]])
FOCUS = np.array([0.0, 0.0, 8.0])


def _scene_labels():
    """Every blocking role somewhere between the transducer (below, -z) and the foci, and a tilted cortical plate
    through the foci (the target surface: incidence angle checked there)."""
    lab = np.ones((N, N, N), np.int16)
    lab[8:10, 4:14, 6:18] = 7  # gas
    lab[10, 22:24, 22:24] = 8  # metal bead
    lab[12:14, 26:34, 8:16] = 9  # scar
    lab[6:34, 4:6, 20:23] = 10  # spinal cord along z at the edge of the cone
    lab[14:16, 14:18, 26:32] = 13  # no-pass zone
    lab[17:19, 16:20, 14:18] = 6  # trabecular bone well before the foci
    k, j, i = np.indices(lab.shape)
    world = np.stack([i, j, k], axis=-1) @ AFF[:3, :3].T + AFF[:3, 3]
    normal = np.array([np.sin(0.6), 0.0, -np.cos(0.6)])  # plate tilted 34 degrees against the beam
    depth = -((world - FOCUS) @ normal)
    lab[(depth >= -1.0) & (depth <= 4.0) & (world[..., 1] > -12)] = 5
    return lab


def _transducer():
    """46 cap elements plus two that start outside the label volume, one exactly on the z axis through the
    focus (rays with zero x and y steps); areas 2**0 .. 2**47."""
    cap = spherical_cap(45.0, 60.0, 46, FOCUS, (0.0, 0.0, 1.0))
    extra = np.array([[0.0, 0.0, -60.0], [38.0, -30.0, -40.0]])
    pos = np.vstack([cap.positions_mm, extra])
    normals = FOCUS - pos
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return Transducer("powers of two", 1e6, pos, normals, 2.0 ** np.arange(pos.shape[0]))


def _foci():
    g = np.arange(-3, 4, 3.0)
    zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
    grid = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1) + FOCUS
    outside = np.array([[0.0, 0.0, 60.0], [-21.0, 3.0, 8.0]])  # beyond the volume; on its x face
    return np.vstack([grid, outside])


@pytest.fixture(scope="module")
def compiled():
    pytest.importorskip("numba")
    return trace_compiled.active_fractions_compiled


@pytest.mark.parametrize("config", [WindowConfig(), WindowConfig(scar_blocks=False),
                                    WindowConfig(critical_angle_deg=60.0, target_surface_mm=2.0)],
                         ids=["defaults", "scar-warns", "wide-angle-thin-surface"])
def test_compiled_blocks_the_same_rays_as_numpy(compiled, config):
    scene = Scene(_scene_labels(), AFF, config=config)
    tr, foci = _transducer(), _foci()
    want = active_fractions_numpy(scene, tr, foci)
    got = compiled(scene, tr, foci, chunk_foci=5)  # several chunks over the threads
    np.testing.assert_array_equal(got, want)
    # the rays cover every branch: each blocking reason, rays partly and wholly outside the volume
    n_el = tr.n_elements
    res = trace(scene, np.tile(tr.positions_mm, (foci.shape[0], 1)), np.repeat(foci, n_el, axis=0))
    seen = np.bitwise_or.reduce(res["reasons"])
    for bit in (GAS, METAL, SCAR, CRITICAL_CROSS, NO_PASS_ZONE, BONE_PREFOCAL, CRITICAL_ANGLE, OUT_OF_VOLUME):
        assert seen & bit, f"no ray met reason bit {bit}"
    blocked = res["status"] == STATUS_BLOCKED
    assert 0 < blocked.sum() < blocked.size
    assert want.min() < want.max() <= 1.0  # foci differ in what blocks them


def test_feasibility_map_uses_the_compiled_traversal_with_the_same_values(compiled, monkeypatch):
    scene = Scene(_scene_labels(), AFF)
    tr = _transducer()
    mask = np.zeros(scene.shape, bool)
    mask[26:30:2, 18:23:2, 18:23:4] = True
    with_numba = feasibility_map(scene, tr, mask)
    numpy_only = feasibility_map(scene, tr, mask, compiled=False)
    np.testing.assert_array_equal(with_numba, numpy_only)
    calls = []
    monkeypatch.setattr("mrtherm.window.feasibility.active_fractions_compiled",
                        lambda *a, **k: calls.append(1) or compiled(*a, **k))
    feasibility_map(scene, tr, mask)
    assert calls  # numba installed: the default is the compiled path


def test_compiled_without_numba_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(trace_compiled, "numba_available", lambda: False)
    monkeypatch.setattr("mrtherm.window.feasibility.numba_available", lambda: False)
    scene = Scene(_scene_labels(), AFF)
    mask = np.zeros(scene.shape, bool)
    mask[28, 20, 20] = True
    with pytest.raises(BackendUnavailableError, match="numba"):
        feasibility_map(scene, _transducer(), mask, compiled=True)
    assert np.isfinite(feasibility_map(scene, _transducer(), mask)[28, 20, 20])  # NumPy without numba
