"""Probe logs (issue 14): readings against MR at the probe with known lag and bias, exact probe dose, alarms, CLI."""

import json
import math

import numpy as np
import pytest

import mrtherm
from mrtherm.cli import main
from mrtherm.probes import read_probe_log, read_probe_positions
from mrtherm.probes.analysis import corners, probe_alarms, readings_summary
from mrtherm.probes.report import analyse

LAG_S, BIAS_C, NOISE_C = 4.0, 0.5, 0.1


def _truth_at(ph, position_mm):
    """Truth temperature at a world position, per frame: trilinear by hand from the truth series."""
    ijk = np.linalg.solve(ph.affine, np.append(position_mm, 1.0))[:3]
    x, y, z = ijk
    x0, y0, z0 = int(np.floor(x)), int(np.floor(y)), int(np.floor(z))
    fx, fy, fz = x - x0, y - y0, z - z0
    out = 0.0
    for dz, wz in ((0, 1 - fz), (1, fz)):
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                out = out + wz * wy * wx * ph.truth_temperature_c[:, z0 + dz, y0 + dy, x0 + dx]
    return out


def _log(ph, probes, seed=0):
    """Readings every 0.5 s: the truth, piecewise linear in time, late by LAG_S, offset by BIAS_C, noisy."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, ph.frame_times_s[-1] + 0.01, 0.5)
    rows = ["time_s,probe,temperature_c"]
    for name, pos in probes.items():
        truth = np.interp(t - LAG_S, ph.frame_times_s, _truth_at(ph, pos))
        temp = truth + BIAS_C + NOISE_C * rng.standard_normal(t.size)
        rows += [f"{a:.2f},{name},{b:.4f}" for a, b in zip(t, temp)]
    return "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def phantom():
    return mrtherm.make_phantom(shape_zyx=(4, 96, 96), n_frames=30, baseline_frames=5, sonication_s=(15.0, 45.0))


def _hot_position(ph, offset_vox=(0, 0, 0)):
    """World position near the hottest voxel (between voxels, so the interpolation matters)."""
    z, y, x = np.unravel_index(np.argmax(ph.truth_temperature_c.max(axis=0)), ph.labels.shape)
    ijk = np.array([x + 0.4 + offset_vox[2], y + 0.3 + offset_vox[1], z + offset_vox[0], 1.0])
    return (ph.affine @ ijk)[:3]


def _in_tissue(ph, position_mm):
    """All 8 corner voxels in PRF tissue (soft tissue, muscle, tumour)."""
    x, y, z = np.floor(np.linalg.solve(ph.affine, np.append(position_mm, 1.0))[:3]).astype(int)
    return bool(np.isin(ph.labels[z:z + 2, y:y + 2, x:x + 2], (1, 3, 12)).all())


def test_mr_at_the_probe_recovers_the_known_lag_and_bias(phantom, tmp_path):
    ph = phantom
    edge = next(o for o in ((0, 3, 3), (0, -3, 3), (0, 3, -3), (0, -3, -3), (0, 0, 4), (0, 4, 0))
                if _in_tissue(ph, _hot_position(ph, o)))
    positions = {"tip": _hot_position(ph), "edge": _hot_position(ph, edge)}
    (tmp_path / "log.csv").write_text(_log(ph, positions))
    (tmp_path / "pos.json").write_text(json.dumps({"probes": [
        {"name": n, "position_mm": p.tolist(), "watch": n == "edge"} for n, p in positions.items()]}))
    probes = read_probe_positions(tmp_path / "pos.json", read_probe_log(tmp_path / "log.csv"))
    exam = mrtherm.load_exam(ph.magnitude, ph.phase_rad, te_s=ph.te_s, b0_t=ph.b0_t, frame_times_s=ph.frame_times_s,
                             affine=ph.affine)
    res = mrtherm.process(exam, baseline_frames=5, labels=ph.labels)
    section, alarms, _ = analyse(probes, res.params, series=np.asarray(res.temperature_c),
                                 sd_map=np.asarray(res.temperature_sd_c), affine=ph.affine,
                                 frame_times_s=ph.frame_times_s)
    for e in section["probes"]:
        mr = e["mr"]
        print(e["name"], {k: mr[k] for k in ("lag_s", "bias_lag_corrected_c", "rmse_lag_corrected_c", "sd_c")})
        assert mr["lag_s"] == pytest.approx(LAG_S, abs=0.5)
        assert mr["bias_lag_corrected_c"] == pytest.approx(-BIAS_C, abs=0.25)  # MR - probe
        assert 0 < mr["sd_c"] < 1.0
    assert any(a["structure"] == "probe edge" for a in alarms) == (section["probes"][1]["peak_c"] >= 45)


def test_probe_dose_is_the_exact_ramp_integral_and_alarms_by_hand():
    """43 -> 47 C linearly over 10 min: CEM43 = 2.5 (2^4 - 1) / ln 2 = 54.10 min (by hand)."""
    t = np.linspace(0.0, 600.0, 11)
    probe = mrtherm.probes.Probe("p", t, 43.0 + 4.0 * t / 600.0, watch=True)
    assert readings_summary(probe)["dose_cem43_min"] == pytest.approx(2.5 * 15 / math.log(2), rel=1e-9)
    alarms = probe_alarms(probe, mrtherm.ThermometryParams())
    hot = [a for a in alarms if a["quantity"] == "temperature"][0]
    assert hot["time_s"] == 300.0 and hot["value"] == 45.0  # first reading >= 45 C
    dose = [a for a in alarms if a["quantity"] == "dose"][0]
    assert dose["time_s"] == 60.0  # 0 -> 60 s: 43 -> 43.4 C gives 1.0 * 1.5 / (0.4 ln 2) ... >= 1 CEM43 first here
    cold = mrtherm.probes.Probe("c", t, 37.0 - 0.05 * t, watch=True)  # cryo: 37 C down to 7 C
    cold_alarm = probe_alarms(cold, mrtherm.ThermometryParams(), cold_alarm_c=10.0)
    assert [(a["time_s"], a["comparison"]) for a in cold_alarm] == [(540.0, "<=")]
    assert probe_alarms(mrtherm.probes.Probe("u", t, 50 + 0 * t), mrtherm.ThermometryParams()) == []  # not watched


def test_probe_position_outside_the_grid_and_corner_weights():
    assert corners(np.eye(4), [100.0, 0, 0], (2, 2, 2)) is None
    start, w = corners(np.eye(4), [0.5, 0.5, 0.5], (2, 2, 2))
    assert start == (0, 0, 0) and np.allclose(w, 0.125)


def test_bad_probe_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "log.csv"
    bad.write_text("time_s,probe,temperature_c\n0,a,37\n1,a,hot\n")
    with pytest.raises(mrtherm.errors.InputFileError, match="log.csv.*row 3"):
        read_probe_log(bad)
    (tmp_path / "nocol.csv").write_text("t,probe,temp\n")
    with pytest.raises(mrtherm.errors.InputFileError, match="missing column"):
        read_probe_log(tmp_path / "nocol.csv")
    good = tmp_path / "good.csv"
    good.write_text("time_s,probe,temperature_c\n0,a,37\n1,a,38\n")
    (tmp_path / "pos.json").write_text(json.dumps({"probes": [{"name": "b", "position_mm": [0, 0, 0]}]}))
    with pytest.raises(mrtherm.errors.InputFileError, match="'b' is not in the probe log"):
        read_probe_positions(tmp_path / "pos.json", read_probe_log(good))


def test_run_with_probes_and_the_probes_command(tmp_path, capsys):
    assert main(["phantom", "--out", str(tmp_path / "ph")]) == 0
    ph_dir = tmp_path / "ph"
    info = json.load(open(ph_dir / "phantom.json"))
    ph = mrtherm.make_phantom()  # the phantom the command wrote (default parameters)
    pos = {"tip": np.array(info["focus_world_mm"]), "far": np.array([500.0, 0.0, 0.0])}
    (tmp_path / "log.csv").write_text(_log(ph, {"tip": pos["tip"]}) + "0.0,far,37.0\n200.0,far,37.0\n")
    (tmp_path / "pos.json").write_text(json.dumps({"probes": [
        {"name": "tip", "position_mm": pos["tip"].tolist(), "watch": True},
        {"name": "far", "position_mm": pos["far"].tolist()}]}))
    assert main(["run", "--magnitude", str(ph_dir / "magnitude.nii.gz"), "--phase", str(ph_dir / "phase.nii.gz"),
                 "--labels", str(ph_dir / "labels.nii.gz"), "--baseline-frames", "5", "--probes",
                 str(tmp_path / "log.csv"), "--probe-positions", str(tmp_path / "pos.json"), "--out",
                 str(tmp_path / "run"), "--quiet"]) == 0
    report = json.load(open(tmp_path / "run" / "report.json"))
    tip, far = report["probes"]["probes"]
    assert tip["mr"]["lag_s"] == pytest.approx(LAG_S, abs=0.6) and far["mr"] == {"inside_grid": False}
    assert any(a["structure"] == "probe tip" for a in report["alarms"])
    assert "figures/probe_tip.png" in report["outputs"] and (tmp_path / "run" / "figures" / "probe_tip.png").exists()
    capsys.readouterr()
    assert main(["probes", "--log", str(tmp_path / "log.csv"), "--probe-positions", str(tmp_path / "pos.json"),
                 "--out", str(tmp_path / "alone")]) == 0
    out = capsys.readouterr().out
    alone = json.load(open(tmp_path / "alone" / "report.json"))
    assert alone["probes"]["probes"][0]["dose_cem43_min"] == pytest.approx(tip["dose_cem43_min"])
    assert "ALARM probe tip: temperature" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,probe\n")
    rc = main(["probes", "--log", str(bad), "--out", str(tmp_path / "bad_out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "bad.csv" in err[0] and not (tmp_path / "bad_out").exists()
