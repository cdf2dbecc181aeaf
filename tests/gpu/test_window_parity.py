"""CUDA ray march against the NumPy traversal: identical statuses and reasons (GPU only)."""

import numpy as np
import pytest

import mrtherm
from mrtherm.window.transducer import spherical_cap
from mrtherm.window import Scene, WindowConfig, active_fractions_numpy, trace


@pytest.fixture(scope="module")
def phantom_scene():
    ph = mrtherm.make_phantom(n_frames=2)
    return ph, Scene(ph.labels, ph.affine)


@pytest.mark.parametrize("scar_blocks", [True, False])
def test_statuses_match_on_phantom(phantom_scene, scar_blocks):
    import mrtherm_gpu
    ph, _ = phantom_scene
    lab = ph.labels.copy()
    lab[3:5, 40:44, 30:34] = 9  # a scar in part of the path
    lab[4, 45:47, 36:38] = 8    # and a metal fragment
    scene = Scene(lab, ph.affine, config=WindowConfig(scar_blocks=scar_blocks))
    sug = ph.info["transducer_suggestion"]
    tr = spherical_cap(sug["radius_mm"], sug["aperture_mm"], 512, sug["focus_world_mm"], sug["axis"])
    k, j, i = np.nonzero(lab == 12)
    foci = np.stack([i, j, k], axis=1)[::7] @ ph.affine[:3, :3].T + ph.affine[:3, 3]
    gpu = mrtherm_gpu.raymarch.trace_pairs(scene, tr.positions_mm, foci)
    for t, f in enumerate(foci):
        cpu = trace(scene, tr.positions_mm, np.broadcast_to(f, tr.positions_mm.shape))
        np.testing.assert_array_equal(gpu["reasons"][:, t], cpu["reasons"])
        np.testing.assert_array_equal(gpu["status"][:, t], cpu["status"])
    frac_gpu = mrtherm_gpu.raymarch.active_fractions(scene, tr, foci)
    np.testing.assert_allclose(frac_gpu, active_fractions_numpy(scene, tr, foci), atol=1e-12)


def test_backend_switch_in_check_window(phantom_scene):
    from mrtherm.window import check_window
    ph, scene = phantom_scene
    sug = ph.info["transducer_suggestion"]
    tr = spherical_cap(sug["radius_mm"], sug["aperture_mm"], 256, sug["focus_world_mm"], sug["axis"])
    # the GPU traversal decides the statuses and the verdict; they must be the NumPy traversal's, element by element
    gpu = check_window(scene, tr, sug["focus_world_mm"], backend="cupy")
    cpu = check_window(scene, tr, sug["focus_world_mm"], backend="numpy")
    assert gpu["verdict"] == cpu["verdict"]
    assert gpu["element_counts"] == cpu["element_counts"]
    assert [(e["status"], e["reasons"]) for e in gpu["elements"]] == [(e["status"], e["reasons"]) for e in cpu["elements"]]
    assert gpu["active_fraction"] == cpu["active_fraction"]
