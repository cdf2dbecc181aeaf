"""Water-fat thermometry inside the Thermometer and live: the same physics targets as tests/test_waterfat.py, now
through :class:`mrtherm.Thermometer` (dose, watch, checkpoint) and ``mrtherm live`` (multi-echo frames assembled from
images in any order, over a real DICOM association). The truth is the independent phantom's
(tests/waterfat_phantom.py)."""

import json
import random

import numpy as np
import pytest

import mrtherm
from mrtherm.errors import ParameterError
from mrtherm.thermometry.dose import cem43
from waterfat_phantom import make

pytest.importorskip("pydicom")


def _affine(ph):
    return np.diag([ph.voxel_mm[2], ph.voxel_mm[1], ph.voxel_mm[0], 1.0])


def _thermometer(ph, **params):
    p = mrtherm.ThermometryParams(baseline_frames=ph.n_baseline, water_fat=True, **params)
    return mrtherm.Thermometer(ph.echoes.shape[2:], _affine(ph), ph.te_s, ph.b0_t, list(ph.echoes[:ph.n_baseline]),
                               p)


@pytest.fixture(scope="module")
def phantom():
    return make()


def test_the_thermometer_meets_the_physics_targets_and_accumulates_the_exact_dose(phantom):
    ph = phantom
    th = _thermometer(ph)
    temps = np.stack([np.array(th.update(ph.echoes[t], ph.times_s[t])) for t in range(len(ph.echoes))])
    water = (1.0 - ph.fat_fraction) >= 0.3
    err = (temps - ph.truth_c)[ph.n_baseline:][:, water]
    assert np.isfinite(err).all() and np.sqrt(np.mean(err ** 2)) <= 1.0
    assert not np.isfinite(temps[:, (1.0 - ph.fat_fraction) <= 0.1]).any()  # nothing in near-pure fat
    # the dose is the exact CEM43 of the temperatures it reported (trapezoid-free, by dose.cem43 on the series)
    by_series = cem43(np.where(np.isfinite(temps), temps, 37.0), ph.times_s)
    assert np.allclose(np.asarray(th.dose_cem43_min)[water], by_series[water], rtol=1e-6, atol=1e-9)
    est, truth = by_series >= 240.0, cem43(ph.truth_c, ph.times_s) >= 240.0
    assert truth[water].sum() > 50 and abs(int(est[water].sum()) - int(truth[water].sum())) <= 0.2 * truth[water].sum()


def test_a_checkpoint_resumes_with_a_bit_identical_dose(phantom, tmp_path):
    ph = phantom
    whole, part = _thermometer(ph), _thermometer(ph)
    for t in range(len(ph.echoes)):
        whole.update(ph.echoes[t], ph.times_s[t])
    for t in range(7):
        part.update(ph.echoes[t], ph.times_s[t])
    resumed = mrtherm.Thermometer.load_state(part.save_state(tmp_path / "state.npz"))
    for t in range(7, len(ph.echoes)):
        resumed.update(ph.echoes[t], ph.times_s[t])
    assert np.array_equal(np.asarray(resumed.dose_cem43_min), np.asarray(whole.dose_cem43_min), equal_nan=True)
    assert np.array_equal(np.asarray(resumed.tmax_c), np.asarray(whole.tmax_c), equal_nan=True)


def test_the_result_writes_the_water_fat_maps_and_report(phantom, tmp_path):
    import nibabel as nib
    ph = phantom
    th = _thermometer(ph)
    for t in range(len(ph.echoes)):
        th.update(ph.echoes[t], ph.times_s[t])
    result = mrtherm.ThermometryResult.from_thermometer(th)
    result.save(tmp_path / "out", figures=False)
    ff = np.transpose(np.asarray(nib.load(tmp_path / "out" / "fat_fraction.nii.gz").dataobj), (2, 1, 0))
    assert np.abs(ff - ph.fat_fraction).max() <= 0.05
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    wf = report["water_fat"]
    assert wf["echo_times_ms"] == pytest.approx([1e3 * t for t in ph.te_s])
    assert wf["drift_source_voxels_last_frame"]["1"] > 0 and "water-fat" in report["mask"]["rules"][0]
    assert "water-fat" in report["parameters"]["backend"]


def test_modes_water_fat_cannot_take_are_refused_by_name(phantom):
    for kw, word in (({"reference": "library"}, "reference"), ({"register_motion": "on"}, "register_motion")):
        with pytest.raises(ParameterError, match=word):
            _thermometer(phantom, **kw)
    th = _thermometer(phantom)
    with pytest.raises(ParameterError, match="no per-frame reference"):
        th.update(phantom.echoes[0], 0.0, reference=phantom.echoes[0, 0])


def _multi_echo_dicom(ph, folder):
    import pydicom

    from mrtherm.io.dicom.synth import write_dicom_exam
    identity = {k: pydicom.uid.generate_uid() for k in ("study", "frame_of_reference", "series_m", "series_p")}
    top = float(np.abs(ph.echoes).max())
    for n, te in enumerate(ph.te_s):
        write_dicom_exam(folder / f"e{n + 1}", np.abs(ph.echoes[:, n]), np.angle(ph.echoes[:, n]), _affine(ph),
                         float(te), ph.b0_t, ph.times_s, identity=identity, echo_number=n + 1, magnitude_max=top)
    return sorted(folder.rglob("*.dcm"))


def test_the_assembler_builds_multi_echo_frames_from_images_in_any_order(tmp_path):
    import pydicom

    from mrtherm.live.assembler import FrameAssembler, RefusedImage
    from mrtherm.live.session import decode

    def read_image(path):
        _, recs, arrays = decode(open(path, "rb").read(), path)
        return recs[0], arrays[0]
    ph = make(shape=(2, 12, 20), n_frames=3, n_baseline=1)
    files = _multi_echo_dicom(ph, tmp_path / "dicom")
    random.Random(3).shuffle(files)
    asm = FrameAssembler(slices=2, water_fat=True, n_echoes=6)
    frames = []
    for path in files:
        im, pixels = read_image(str(path))
        asm.add(im, pixels, 0.0)
        frames += asm.ready(0.0)
    assert [f.rep for f in frames] == [1, 2, 3]
    assert frames[0].a.shape == (6, 2, 12, 20)
    assert frames[0].echo_times_ms == pytest.approx([1e3 * t for t in ph.te_s])
    # the magnitude of echo 3, slice 1 of the second frame, as stored (quantised to 0..3000 of the series' maximum)
    top = float(np.abs(ph.echoes).max())
    assert np.allclose(frames[1].a[2, 1], np.abs(ph.echoes[1, 2, 1]) / top * 3000.0, atol=0.51)
    seventh = pydicom.dcmread(files[0])
    seventh.EchoNumbers = 7
    seventh.TemporalPositionIdentifier = 4  # a new repetition: not dropped as already processed
    seventh.save_as(tmp_path / "e7.dcm")
    im, pixels = read_image(str(tmp_path / "e7.dcm"))
    with pytest.raises(RefusedImage, match="echo 7 is not one of"):
        asm.add(im, pixels, 0.0)


def test_live_water_fat_over_the_network_matches_the_truth(tmp_path):
    import nibabel as nib
    from live_tools import free_port, report, send, start_live, stop_live, wait_frames
    ph = make(shape=(2, 44, 66), n_frames=10)
    files = _multi_echo_dicom(ph, tmp_path / "dicom")
    by_frame = {}
    import pydicom
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        by_frame.setdefault(int(ds.get("TemporalPositionIdentifier", ds.get("AcquisitionNumber"))), []).append(path)
    order = []
    for rep in sorted(by_frame):  # frame after frame, the images of a frame in any order (echoes interleaved)
        random.Random(rep).shuffle(by_frame[rep])
        order += by_frame[rep]
    port, out = free_port(), tmp_path / "live"
    proc = start_live(port, out, "--water-fat", "--baseline-frames", "4", "--slices", "2", "--quiet")
    try:
        assert set(send(order, port)) == {0}
        wait_frames(out, len(ph.times_s))
    finally:
        code, err = stop_live(proc)
    assert code == 0, err
    temp = np.transpose(np.asarray(nib.load(out / "temperature.nii.gz").dataobj), (2, 1, 0))
    water = (1.0 - ph.fat_fraction) >= 0.3
    err_c = temp[water] - ph.truth_c[-1][water]
    assert np.isfinite(err_c).all() and np.sqrt(np.mean(err_c ** 2)) <= 1.0
    son = out / "sonication_01"
    ff = np.transpose(np.asarray(nib.load(son / "fat_fraction.nii.gz").dataobj), (2, 1, 0))
    assert np.abs(ff - ph.fat_fraction).max() <= 0.05
    rep = json.loads((son / "report.json").read_text())
    assert rep["water_fat"]["echo_times_ms"] == pytest.approx([1e3 * t for t in ph.te_s])
    assert report(out)["frames_processed"] == len(ph.times_s)


def test_live_water_fat_mistakes_are_one_line_errors(tmp_path, capsys):
    from mrtherm.cli import main
    for extra, words in ((["--echo", "2"], "drop --echo"), (["--te-ms", "5"], "drop --te-ms")):
        code = main(["live", "--watch", str(tmp_path), "--out", str(tmp_path / "o"), "--water-fat", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and words in err[0], err
    code = main(["live", "--watch", str(tmp_path), "--out", str(tmp_path / "o"), "--echo-times-ms", "1,2,3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "needs --water-fat" in err[0]
