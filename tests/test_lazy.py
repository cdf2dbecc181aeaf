"""Large series read on demand: frames in any order equal the file's, the dose accumulated up to any frame equals
the running sum over the frames before it, the last frame equals the run's own dose map, and memory stays at a
few frames."""

import numpy as np
import nibabel as nib
import pytest

import mrtherm
from mrtherm.cli import main
from mrtherm.io.lazy import FrameReader, lazy_series
from mrtherm.thermometry.lazy_dose import CumulativeDose, lazy_cumulative_dose
from mrtherm.thermometry.dose import cem43_segment

da = pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lazy")
    mrtherm.write_phantom(str(root / "ph"), shape_zyx=(4, 32, 32), voxel_mm=(3.0, 2.0, 2.0), n_frames=30, seed=5)
    assert main(["run", "--magnitude", str(root / "ph" / "magnitude.nii.gz"), "--phase",
                 str(root / "ph" / "phase.nii.gz"), "--baseline-frames", "5", "--no-figures", "--quiet",
                 "--out", str(root / "out")]) == 0
    return root / "out"


def _eager(path):
    return np.asarray(nib.load(path).dataobj).transpose(3, 2, 1, 0)


@pytest.mark.parametrize("indexed", [True, False], ids=["indexed_gzip", "nibabel-gzip"])
def test_frames_in_any_order_equal_the_file(run, monkeypatch, indexed):
    if not indexed:
        import sys
        monkeypatch.setitem(sys.modules, "indexed_gzip", None)  # as if not installed
    path = str(run / "temperature.nii.gz")
    series = lazy_series(path)
    eager = _eager(path)
    assert isinstance(series, da.Array) and series.shape == eager.shape and series.chunks[0] == (1,) * 30
    for t in (29, 3, 17, 0, 28, 3):  # backwards seeks included
        np.testing.assert_array_equal(np.asarray(series[t]), eager[t])
    np.testing.assert_array_equal(np.asarray(series[5:9, 1, 10:20, 3]), eager[5:9, 1, 10:20, 3])


def test_cumulative_dose_any_frame_equals_the_running_sum_and_the_run_dose(run):
    path = str(run / "temperature.nii.gz")
    eager = _eager(path).astype(np.float64)
    times = np.arange(30) * FrameReader(path).time_step_s
    running = [np.where(np.isfinite(eager[0]), 0.0, np.nan)]
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, 30):
            running.append(running[-1] + cem43_segment(eager[k - 1], eager[k], (times[k] - times[k - 1]) / 60.0))
    reader = FrameReader(path, keep=2)
    dose = CumulativeDose(reader, times, checkpoint_every=7)
    for t in (29, 4, 15, 16, 0, 22, 8):  # jumps both ways, from checkpoints and from the last frame computed
        np.testing.assert_array_equal(dose.dose64(t), running[t])
    assert sorted(dose._checkpoints) == [7, 14, 21, 28]  # memory: one float64 volume per 7 frames, no more
    assert len(reader._cache) <= 2
    final = np.asarray(nib.load(run / "dose_cem43.nii.gz").dataobj).transpose(2, 1, 0)
    np.testing.assert_allclose(dose.dose64(29), final, rtol=1e-5, equal_nan=True)  # the run's own dose map
    lazy = lazy_cumulative_dose(FrameReader(path), times)
    np.testing.assert_array_equal(np.asarray(lazy[12]), np.minimum(running[12], np.finfo(np.float32).max)
                                  .astype(np.float32))


def test_result_temperature_series_is_lazy_when_not_kept(run, tmp_path):
    exam = mrtherm.load_exam(magnitude=str(run.parent / "ph" / "magnitude.nii.gz"),
                             phase=str(run.parent / "ph" / "phase.nii.gz"))
    from mrtherm.app.process import process_to_folder
    res = process_to_folder(exam, tmp_path / "o", figures=False, baseline_frames=5)
    series = res.temperature_series()
    assert isinstance(series, da.Array)
    np.testing.assert_array_equal(np.asarray(series[-1]), _eager(str(run / "temperature.nii.gz"))[-1])


def test_background_pass_lays_every_checkpoint_with_the_same_values(run):
    path = str(run / "temperature.nii.gz")
    reader = FrameReader(path)
    times = np.arange(30) * reader.time_step_s
    dose = CumulativeDose(reader, times, checkpoint_every=7)
    dose.start_background().join(timeout=120)
    assert sorted(dose._checkpoints) == [7, 14, 21, 28]
    alone = CumulativeDose(FrameReader(path), times, checkpoint_every=30)  # straight from frame 0, no checkpoint
    for t in (29, 13, 2):
        np.testing.assert_array_equal(dose.dose64(t), alone.dose64(t))
