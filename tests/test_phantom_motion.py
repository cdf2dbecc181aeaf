"""The free-breathing phantom (``mrtherm phantom --motion``) against its stated motion, by hand."""

import json
import os

import numpy as np
import pytest

import mrtherm
from mrtherm.cli import main
from mrtherm.phantom import MOTION_DEFAULTS, respiration

SMALL = dict(shape_zyx=(2, 96, 96), voxel_mm=(4.0, 2.0, 2.0), n_frames=8, frame_time_s=3.0, baseline_frames=4,
             sonication_s=(10.0, 22.0), breath_period_s=4.5)
# With frames every 3 s and a 4.5 s breath, r(t) is 0 or 0.75; 16/3 mm at inhale moves tissue by 4 mm = 2 voxels.
TWO_VOXELS_MM = 4.0 / 0.75


def test_respiration_waveform():
    np.testing.assert_allclose(respiration([0.0, 2.25, 4.5, 3.0], 4.5), [0.0, 1.0, 0.0, 0.75], atol=1e-12)


def test_heating_and_tissue_move_together_and_bone_stays():
    ph = mrtherm.make_phantom(**SMALL, motion_mm=TWO_VOXELS_MM)
    r = ph.respiration
    hot = int(np.argmax(ph.truth_temperature_c.max(axis=(1, 2, 3))))
    assert r[hot] == pytest.approx(0.75)
    bone = np.isin(ph.labels, (5, 6))
    # Tissue coordinates: the exhale position, i.e. a frame where r = 0 has image = tissue coordinates.
    from mrtherm.phantom import _sonication  # the analytic heating, evaluated at the tissue positions
    nz, ny, nx = ph.labels.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    xw, yw, zw = (ph.affine[a, a] * idx + ph.affine[a, 3] for a, idx in ((0, i), (1, j), (2, k)))
    rise, *_ = _sonication(xw, yw, zw, SMALL["sonication_s"], 43.0)
    tissue_rise = rise(ph.frame_times_s[hot])
    image_rise = ph.truth_temperature_c[hot] - 37.0
    # away from bone (and its 2-voxel shadow), the image shows the tissue 2 voxels (4 mm) further along -y
    ok = ~bone
    ok[:, 2:] &= ~bone[:, :-2]
    np.testing.assert_allclose(image_rise[:, 2:][ok[:, 2:]], tissue_rise[:, :-2][ok[:, 2:]], atol=1e-4)
    np.testing.assert_allclose(image_rise[bone], tissue_rise[bone], atol=1e-4)  # bone does not move
    assert np.abs(image_rise - tissue_rise).max() > 5.0  # and the heated tissue did move


def test_bone_voxels_change_by_noise_only_tissue_at_its_edge_by_much_more():
    ph = mrtherm.make_phantom(**SMALL, motion_mm=4.0)
    sigma = ph.info["noise_sigma"]
    inhale = int(np.flatnonzero(ph.respiration > 0.5)[0])
    diff = ph.magnitude[inhale] - ph.magnitude[0]
    marrow = ph.labels == 6
    inner = marrow & np.roll(marrow, 3, axis=1) & np.roll(marrow, -3, axis=1)  # 3 voxels inside the marrow
    assert np.sqrt(np.mean(diff[inner] ** 2)) < 1.6 * sigma  # two noisy frames: sqrt(2) sigma
    edge = (~np.isin(ph.labels, (0, 5, 6, 7))) & (np.roll(ph.labels, 2, axis=1) == 5)
    assert np.sqrt(np.mean(diff[edge] ** 2)) > 5 * sigma


def test_respiratory_b0_change_in_static_marrow_matches_the_model():
    ph = mrtherm.make_phantom(**SMALL, motion_mm=4.0, b0_breath_rad=0.6, drift_rad=(0.0, 0.0, 0.0, 0.0))
    inhale = int(np.flatnonzero(ph.respiration > 0.5)[0])
    marrow = ph.labels == 6
    s0 = ph.magnitude[0] * np.exp(1j * ph.phase_rad[0])
    s1 = ph.magnitude[inhale] * np.exp(1j * ph.phase_rad[inhale])
    measured = float(np.angle(np.sum((s1 * np.conj(s0))[marrow])))
    ny = ph.labels.shape[1]
    yn = (np.arange(ny) - (ny - 1) / 2.0) / ((ny - 1) / 2.0)
    rows = np.nonzero(marrow)[1]
    expected = 0.6 * 0.75 * float(np.mean((1.0 + yn[rows]) / 2.0))
    assert measured == pytest.approx(expected, abs=0.02)


def test_static_exam_is_unchanged_by_the_motion_option():
    a = mrtherm.make_phantom(**SMALL)
    b = mrtherm.make_phantom(**SMALL, motion_mm=0.0, b0_breath_rad=0.7)
    np.testing.assert_array_equal(a.phase_rad, b.phase_rad)
    assert a.respiration is None and a.truth_dose_tissue_cem43_min is None


def test_phantom_motion_command_writes_truth_in_tissue_coordinates_and_the_respiration_log(tmp_path):
    assert main(["phantom", "--motion", "--out", str(tmp_path / "ph")]) == 0
    info = json.load(open(tmp_path / "ph" / "phantom.json"))
    assert info["baseline_frames"] == MOTION_DEFAULTS["baseline_frames"] == 16
    assert info["motion"]["motion_mm"] == 4.0 and info["shape_tzyx"][0] == 50
    lines = open(tmp_path / "ph" / "respiration.tsv").read().splitlines()
    assert lines[0] == "time_s\trespiration" and len(lines) == 51
    assert os.path.exists(tmp_path / "ph" / "truth_dose_tissue_cem43.nii.gz")
    assert main(["phantom", "--motion", "--frames", "10", "--out", str(tmp_path / "short")]) == 2
