"""Trust on inputs nobody here built: scanner-blanked backgrounds, cooling with one baseline frame, signal that
collapses in later frames, a gas pocket beside the focus, implausible heating, and the target.

The exams are built here from complex Gaussian noise of known sigma around a gel phantom (nothing from mrtherm):
the truth (tube temperatures, heat, pocket frames) is what the builder put in. PRF by hand:
k = 2 pi x 42.577478 MHz/T x -0.01 ppm/C x 3 T x 10 ms = -0.080264 rad/C (heating lowers the phase).
"""

import json

import numpy as np
import pytest

import mrtherm
from mrtherm.cli import main

K_RAD_PER_C = 2 * np.pi * 42.577478e6 * -0.01e-6 * 3.0 * 0.010
TE_S, B0_T, SIGMA = 0.010, 3.0, 26.0
PHILIPS_BLANK = -1.315  # what the scanner wrote into real and imaginary outside its own mask


def _grid(ny=96, nx=96):
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    return yy, xx


def _gel_exam(n_frames, rise_c, blank=True, seed=0, n_slices=2, signal=1000.0):
    """Gel cylinder (radius 36 voxels) with two water tubes (radius 5) whose temperatures follow ``rise_c``
    (n_frames, 2); smooth background phase and a small linear drift; air noise of SD 26 per channel outside,
    with the corners blanked by the scanner to real = imag = -1.315 (``blank``). Returns complex frames
    (t, z, y, x), the tube masks and the body mask."""
    rng = np.random.default_rng(seed)
    yy, xx = _grid()
    gel = np.hypot(yy - 48, xx - 48) < 36
    tubes = [np.hypot(yy - 40, xx - 34) < 5, np.hypot(yy - 56, xx - 60) < 5]
    background = 0.8 + 0.02 * (xx - 48) - 0.015 * (yy - 48)
    frames = []
    for t in range(n_frames):
        phase = background + 0.1 * t / n_frames
        for tube, rise in zip(tubes, rise_c[t]):
            phase = phase + np.where(tube, K_RAD_PER_C * rise, 0.0)
        s = np.where(gel, signal, 0.0) * np.exp(1j * phase)
        s = np.broadcast_to(s, (n_slices,) + s.shape) + SIGMA * (rng.standard_normal((n_slices,) + s.shape) +
                                                                1j * rng.standard_normal((n_slices,) + s.shape))
        frames.append(s)
    frames = np.array(frames)
    if blank:  # the scanner's own mask: a disc larger than the gel; outside it, the constant
        outside = np.hypot(yy - 48, xx - 48) > 44
        frames[:, :, outside] = PHILIPS_BLANK + 1j * PHILIPS_BLANK
    return frames.astype(np.complex64), tubes, gel


def _exam(frames, frame_time_s=3.0):
    return mrtherm.load_exam(magnitude=np.abs(frames), phase=np.angle(frames), te_s=TE_S, b0_t=B0_T,
                             frame_times_s=np.arange(frames.shape[0]) * frame_time_s, affine=np.diag([2, 2, 4, 1.0]))


# ---------------------------------------------------------------- blanked background, one baseline frame
def test_blanked_background_gives_the_true_noise_and_no_false_lesion():
    """Real and imaginary set to -1.315 outside the scanner's mask, air noise of SD 26 between it and the gel,
    nothing heated: the one-frame noise estimate is within 15 % of 26 and no air voxel is reported."""
    rise = np.zeros((8, 2))
    frames, tubes, gel = _gel_exam(8, rise)
    res = mrtherm.process(_exam(frames), mrtherm.ThermometryParams(baseline_frames=1))
    noise = res.report["noise"]
    assert abs(noise["sigma"] / SIGMA - 1) < 0.15, noise
    assert noise["blanked_fraction"] > 0.2 and "blanked" in noise["why"]
    mask = np.asarray(res.mask)
    assert not (mask & ~gel[None]).any()  # not one air voxel passes
    assert res.lesion_volumes_ml[240.0] == 0.0
    assert float(np.nanmax(res.tmax_c)) < 40.0
    assert not res.report["trust"]["implausible_heating"]


# ---------------------------------------------------------------- cooling in every reference mode
@pytest.mark.parametrize("mode, n_base, tolerance_c", [("mean", 1, 0.5), ("referenceless", 1, 1.0),
                                                       ("hybrid", 3, 1.0), ("library", 3, 0.5)])
def test_cooling_tubes_are_measured_in_every_reference_mode(mode, n_base, tolerance_c):
    """Tubes heated before the exam cool by 9 and 16 C after the baseline: every mode measures the cooling
    (referenceless and hybrid with a two-signed prior), within the tolerance of the tubes' mean temperature."""
    n = 10
    ramp = np.clip(np.arange(n) - (n_base - 1), 0, None) / (n - n_base)
    rise = np.stack([-9.0 * ramp, -16.0 * ramp], axis=1)
    frames, tubes, gel = _gel_exam(n, rise, seed=1)
    res = mrtherm.process(_exam(frames), mrtherm.ThermometryParams(baseline_frames=n_base, reference=mode))
    last = np.asarray(res.temperature_c)[-1]
    for tube, want in zip(tubes, (37.0 - 9.0, 37.0 - 16.0)):
        inner = np.broadcast_to(tube, last.shape)
        got = float(np.nanmedian(last[inner]))
        assert abs(got - want) < tolerance_c, (mode, got, want)
    assert float(np.nanmax(res.tmax_c)) < 40.0  # no false peak (the first mrtherm gave 155 C referenceless)
    assert res.lesion_volumes_ml[240.0] == 0.0


# ---------------------------------------------------------------- per-frame validity
def test_signal_that_collapses_after_the_baseline_is_not_measured():
    """A region whose magnitude falls from 1000 to 90 (SNR 3.5) in frames 4-7: NaN there, no false peak, no
    dose; counted per frame in report.json."""
    frames, tubes, gel = _gel_exam(10, np.zeros((10, 2)), seed=2)
    yy, xx = _grid()
    void = (np.abs(yy - 48) < 4) & (np.abs(xx - 48) < 4)
    rng = np.random.default_rng(9)
    for t in range(4, 8):
        frames[t][:, void] = (90.0 * np.exp(1j * rng.uniform(-np.pi, np.pi, (2, void.sum())))).astype(np.complex64)
    res = mrtherm.process(_exam(frames), mrtherm.ThermometryParams(baseline_frames=3))
    temp = np.asarray(res.temperature_c)
    assert np.isnan(temp[4:8][:, :, void]).all() and np.isfinite(temp[8:][:, :, void]).all()
    assert float(np.nanmax(res.tmax_c)) < 39.0
    invalid = res.report["validity"]["invalid_voxels_per_frame"]
    assert all(invalid[t] >= 2 * void.sum() for t in range(4, 8)) and invalid[8] < void.sum()
    assert res.report["validity"]["reanchored_voxels_per_frame"][8] >= 2 * void.sum()


def test_a_gas_pocket_beside_the_focus_is_not_measured_and_the_hot_tissue_after_it_is():
    """A Gaussian heat peaking at +45 C (more than one wrap: 3.6 rad); a gas pocket (noise only) covers part of
    the hot spot in frames 6-9 while it heats past a wrap; afterwards the tissue is measured again at the right
    temperature (re-anchored to its tracked neighbours), and the pocket adds no dose while it lasts."""
    n, n_base = 16, 3
    yy, xx = _grid()
    heat = np.exp(-((yy - 48) ** 2 + (xx - 48) ** 2) / (2 * 4.0 ** 2))
    curve = np.concatenate([np.zeros(n_base), np.linspace(5, 45, 8), np.full(n - n_base - 8, 45.0)])
    rng = np.random.default_rng(3)
    frames = []
    for t in range(n):
        s = 1000.0 * np.exp(1j * (0.5 + K_RAD_PER_C * curve[t] * heat))
        frames.append(s[None] + SIGMA * (rng.standard_normal((1, 96, 96)) + 1j * rng.standard_normal((1, 96, 96))))
    frames = np.array(frames).astype(np.complex64)
    pocket = np.hypot(yy - 48, xx - 51) < 2.5
    for t in range(6, 10):
        frames[t][:, pocket] = (SIGMA * (rng.standard_normal(pocket.sum()) + 1j * rng.standard_normal(pocket.sum())))
    res = mrtherm.process(_exam(frames, 2.0), mrtherm.ThermometryParams(baseline_frames=n_base))
    temp = np.asarray(res.temperature_c)[:, 0]
    truth = 37.0 + curve[:, None, None] * heat[None]
    assert np.isnan(temp[6:10][:, pocket]).all()
    after = np.abs(temp[10:][:, pocket] - truth[10:][:, pocket])
    assert after.max() < 3.0, after.max()  # no wrap (78 C) carried through the gap
    assert res.report["validity"]["reanchored_voxels_per_frame"][10] >= pocket.sum()
    # dose in the pocket accrues only over segments between valid frames: less than the truth's
    dose = np.asarray(res.dose_cem43_min)[0]
    times = np.arange(n) * 2.0
    full = mrtherm.thermometry.dose.cem43(truth[:, 48, 51][:, None], times, axis=0)[0]
    assert 0 < dose[48, 51] < full


# ---------------------------------------------------------------- plausibility
def test_heating_in_air_or_scattered_far_from_the_focus_is_never_silent():
    """A noise floor forced far below the truth (snr_threshold 0.01 lets air into the mask): the false heat in
    air is reported as implausible, in report.json and on the terminal."""
    frames, tubes, gel = _gel_exam(8, np.zeros((8, 2)), blank=False, seed=4, signal=300.0)
    res = mrtherm.process(_exam(frames), mrtherm.ThermometryParams(baseline_frames=1, snr_threshold=0.01,
                                                                   max_sd_theory_c=1e9))
    false = res.report["trust"]["implausible_heating"]
    assert any("outside the body or in air-dark voxels" in w for w in false), (false, res.lesion_volumes_ml)
    assert all(w in res.warnings for w in false)


# ---------------------------------------------------------------- the target
def _hot_exam(tmp_path):
    """A heated gel written as NIfTI (3 baseline frames, heat at voxel (x, y) = (48, 48) -> world (96, 96) mm)."""
    import nibabel as nib
    n = 10
    yy, xx = _grid()
    heat = np.exp(-((yy - 48) ** 2 + (xx - 48) ** 2) / (2 * 3.0 ** 2))
    curve = np.concatenate([np.zeros(3), np.linspace(5, 30, n - 3)])
    rng = np.random.default_rng(5)
    s = np.array([1000.0 * np.exp(1j * (0.5 + K_RAD_PER_C * c * heat))[None] for c in curve])
    s = s + SIGMA * (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape))
    s[:, :, 30:36, 30:36] = 0.0  # a void (no signal at all) that the target margin will reach
    affine = np.diag([2.0, 2.0, 4.0, 1.0])
    paths = {}
    for name, data in (("magnitude", np.abs(s)), ("phase", np.angle(s))):
        img = nib.Nifti1Image(data.transpose(3, 2, 1, 0).astype(np.float32), affine)
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = 2.0
        paths[name] = str(tmp_path / f"{name}.nii.gz")
        nib.save(img, paths[name])
    return paths


def test_target_from_the_command_line_and_from_a_transducer_focus(tmp_path, capsys):
    paths = _hot_exam(tmp_path)
    base = ["run", "--magnitude", paths["magnitude"], "--phase", paths["phase"], "--te-ms", "10", "--b0-t", "3",
            "--baseline-frames", "3", "--no-figures", "--quiet"]
    assert main(base + ["--target", "96,96,0", "--out", str(tmp_path / "a")]) == 0
    target = json.load(open(tmp_path / "a" / "report.json"))["target"]
    assert target["world_mm"] == [96.0, 96.0, 0.0] and target["voxel_zyx"] == [0, 48, 48]
    assert target["measured_per_frame"] == [True] * 10 and target["margin_mm"] == 5.0
    # 5 mm around (96, 96): voxels within 2.5 voxels in-plane, 1 slice: 21 (counted by hand: |dx|,|dy| <= 2 and
    # dx^2 + dy^2 <= 6.25)
    assert target["margin_voxels"] == 21 and min(target["margin_measured_fraction_per_frame"]) == 1.0
    # a transducer whose elements point at (64, 64, 0): its focus is the target; the margin (12 mm) reaches the void
    elements = [{"position_mm": [64 + 80 * np.sin(a), 64, -80 * np.cos(a)], "normal": [-np.sin(a), 0, np.cos(a)],
                 "area_mm2": 10.0} for a in np.linspace(-0.5, 0.5, 7)]
    (tmp_path / "t.json").write_text(json.dumps({"name": "cap", "frequency_hz": 1e6, "elements": elements}))
    capsys.readouterr()
    assert main(base + ["--target", str(tmp_path / "t.json"), "--target-margin-mm", "12",
                        "--out", str(tmp_path / "b")]) == 0
    report = json.load(open(tmp_path / "b" / "report.json"))
    assert report["target"]["voxel_zyx"] == [0, 32, 32] and report["target"]["source"].startswith("geometric focus")
    assert report["target"]["measured_per_frame"] == [False] * 10  # the focus lies in the void
    blind = report["trust"]["blind_spots"]
    assert any("target at (64, 64, 0) mm is not measured in 10 of 10 frames" in w for w in blind), blind
    err = capsys.readouterr().err
    assert "not measured in 10 of 10 frames" in err  # on the terminal too
    # a target outside the field of view: one line, non-zero exit, no output folder
    assert main(base + ["--target", "500,0,0", "--out", str(tmp_path / "c")]) != 0
    assert "outside the field of view" in capsys.readouterr().err and not (tmp_path / "c").exists()


# ---------------------------------------------------------------- real scanner data
def test_real_siemens_pair_one_baseline_frame_has_no_false_lesion():
    """The unheated real Siemens pair (dcm_qa_fmap via dcm2niix, ../shared/data/dcm_qa_nifti): with one baseline
    frame the first mrtherm estimated sigma 5.1 from the dimmest voxels, admitted the background and reported a
    false 142 mL lesion. Now the background fit and the tissue estimate agree (within 10 %) and nothing heats."""
    import os
    folder = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "dcm_qa_nifti", "siemens_fmap_2acq")
    if not os.path.isdir(folder):
        pytest.skip(f"real data folder {folder} is absent (../shared/data not beside the checkout)")
    f = lambda name: os.path.join(folder, name)  # noqa: E731
    exam = mrtherm.load_exam([f("2_gre_field_magph_20210715135916_e2.nii.gz"),
                              f("5_gre_field_mag_20210715135916_e2.nii.gz")],
                             [f("3_gre_field_magph_20210715135916_e2_ph.nii.gz"),
                              f("4_gre_field_ph_20210715135916_e2_ph.nii.gz")])
    res = mrtherm.process(exam, mrtherm.ThermometryParams(baseline_frames=1))
    cands = res.report["noise"]["candidates"]
    assert cands["rayleigh_background"] and cands["tissue_wavelet"]
    assert abs(cands["rayleigh_background"] / cands["tissue_wavelet"] - 1) < 0.1
    mask = np.asarray(res.mask)
    corners = np.zeros(mask.shape, bool)
    corners[:, :8, :8] = corners[:, :8, -8:] = corners[:, -8:, :8] = corners[:, -8:, -8:] = True
    assert mask[corners].mean() < 0.05
    assert res.lesion_volumes_ml[240.0] == 0.0 and float(np.nanmax(res.tmax_c)) < 43.0
