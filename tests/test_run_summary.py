"""The typed run summary: what ``mrtherm run``, a treatment and a cohort return, checked against report.json as
written on disk (read here by its documented keys) and against the phantom's ground truth."""

import csv
import dataclasses
import json

import numpy as np
import pytest

import mrtherm
from mrtherm.app.driver import run
from mrtherm.app.options import RunRequest
from mrtherm.app.summary import SonicationSummary, StructureResult

SHAPE, FRAMES = (4, 48, 48), 16


@pytest.fixture(scope="module")
def exam_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("summary")
    mrtherm.write_phantom(str(root / "exam"), shape_zyx=SHAPE, voxel_mm=(3.0, 2.0, 2.0), n_frames=FRAMES, seed=7)
    return root / "exam"


@pytest.fixture(scope="module")
def phantom_run(exam_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "run"
    req = RunRequest(out=str(out), magnitude=[str(exam_dir / "magnitude.nii.gz")],
                     phase=[str(exam_dir / "phase.nii.gz")], labels=str(exam_dir / "labels.nii.gz"),
                     baseline_frames=4, no_figures=True, quiet=True)
    summary = run(req)
    with open(out / "report.json", encoding="utf-8") as fh:
        return summary, json.load(fh)


def test_structures_carry_the_maxima_report_json_holds(phantom_run):
    summary, report = phantom_run
    (son,) = summary.sonications
    assert SonicationSummary.from_report(report) == son  # what the run returned is what its report.json says
    written = {r["structure"]: r for r in report["protected_structures"]}
    assert {"spinal cord", "nerve root"} <= set(written)
    for s in son.structures:
        assert s.max_temperature_c == written[s.structure]["max_temperature_c"]
        assert s.max_dose_cem43_min == written[s.structure]["max_dose_cem43_min"]
        assert s.max_temperature_c is not None and 30.0 < s.max_temperature_c < 80.0


def test_cohort_row_has_the_structure_columns(phantom_run):
    """The bug this guards: the metrics table read ``max_c`` where the watch writes ``max_temperature_c``, so the
    spinal-cord and nerve-root columns were always empty."""
    _, report = phantom_run
    row = SonicationSummary.from_report(report).metrics_row()
    by_name = {r["structure"]: r for r in report["protected_structures"]}
    assert row["spinal_cord_max_c"] == by_name["spinal cord"]["max_temperature_c"] is not None
    assert row["nerve_root_max_c"] == by_name["nerve root"]["max_temperature_c"] is not None
    assert row["nerve_root_max_dose_cem43_min"] == by_name["nerve root"]["max_dose_cem43_min"]


def test_every_summary_field_is_read(phantom_run):
    """A renamed report key leaves a field None: every field of a real run's summary must be filled."""
    _, report = phantom_run
    son = SonicationSummary.from_report(report, "sonication_02")
    empty = [f.name for f in dataclasses.fields(son) if getattr(son, f.name) is None]
    assert empty == []
    assert son.frames == FRAMES == report["exam"]["shape_tzyx"][0]
    assert son.peak_temperature_c == report["results"]["peak_temperature_c"]
    assert son.lesion_volumes_ml == {float(k): v for k, v in report["results"]["lesion_volumes_ml"].items()}
    # each field against its key as the README documents it, read here by hand
    assert (son.sonication, son.time_of_peak_s, son.max_dose_cem43_min) == (
        "sonication_02", report["results"]["time_of_peak_s"], report["results"]["max_dose_cem43_min"])
    assert (son.reference_mode, son.drift_order, son.drift_max_abs_offset_c, son.drift_frames_with_fallback_fit) == (
        report["reference"]["mode"], report["drift"]["order"], report["drift"]["max_abs_offset_c"],
        report["drift"]["frames_with_fallback_fit"])
    assert (son.median_sd_baseline_c, son.median_sd_theory_c, son.reliable_voxels) == (
        report["noise"]["median_sd_baseline_c"], report["noise"]["median_sd_theory_c"],
        report["mask"]["reliable_voxels"])
    assert list(son.alarms) == report["alarms"] and list(son.warnings) == report["warnings"]
    assert list(son.trust_warnings) == report["trust"]["warnings"]
    row = son.metrics_row()
    assert (row["sonication"], row["frames"], row["alarms"], row["warnings"], row["reference_mode"]) == (
        "sonication_02", FRAMES, len(report["alarms"]), len(report["warnings"]), report["reference"]["mode"])
    assert (row["peak_temperature_c"], row["time_of_peak_s"], row["max_dose_cem43_min"]) == (
        son.peak_temperature_c, son.time_of_peak_s, son.max_dose_cem43_min)
    assert (row["drift_order"], row["drift_max_abs_offset_c"], row["drift_frames_with_fallback_fit"]) == (
        son.drift_order, son.drift_max_abs_offset_c, son.drift_frames_with_fallback_fit)
    assert (row["median_sd_baseline_c"], row["median_sd_theory_c"], row["reliable_voxels"]) == (
        son.median_sd_baseline_c, son.median_sd_theory_c, son.reliable_voxels)
    assert row["lesion_240_ml"] == son.lesion_volumes_ml[240.0]


def test_lesion_volume_against_the_phantom_truth(phantom_run, exam_dir):
    """Independent of the code under test: the phantom's true dose map, counted by hand."""
    import nibabel as nib
    summary, _ = phantom_run
    ph = mrtherm.make_phantom(shape_zyx=SHAPE, voxel_mm=(3.0, 2.0, 2.0), n_frames=FRAMES, seed=7)
    vox_ml = 3.0 * 2.0 * 2.0 / 1000.0
    truth_ml = float((ph.truth_dose_cem43_min >= 240.0).sum() * vox_ml)
    got = summary.sonications[0].lesion_volumes_ml[240.0]
    assert abs(got - truth_ml) <= max(0.25 * truth_ml, 3 * vox_ml)
    assert nib.load(str(exam_dir / "labels.nii.gz")).shape[::-1] == SHAPE


def test_structure_rows_round_trip():
    s = StructureResult(10, "spinal cord", 12, 9, 41.5, 20.0, 0.25, 45.0, 3.5, (37.0, 41.5), (37.0, 39.0))
    row = s.as_report()
    assert row["max_time_above_45c_s"] == 3.5 and row["max_c_curve"] == [37.0, 41.5]
    assert StructureResult.from_report(json.loads(json.dumps(row))) == s
    unmeasured = StructureResult(11, "nerve root", 4, 0).as_report()
    assert set(unmeasured) == {"label", "structure", "voxels", "reliable_voxels"}


def test_summary_of_an_older_report_keeps_what_it_has():
    son = SonicationSummary.from_report({"results": {"peak_temperature_c": 51.0, "lesion_volumes_ml": {"240": 0.5}}})
    assert son.peak_temperature_c == 51.0 and son.lesion_volumes_ml == {240.0: 0.5} and son.structures == ()


@pytest.mark.parametrize("scheduler", ["sync", "processes"])
def test_cohort_table_column_is_filled(exam_dir, tmp_path, scheduler):
    pytest.importorskip("pyarrow")
    from mrtherm.cohort import load_tasks, run_cohort
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["exam", "magnitude", "phase", "labels", "baseline_frames", "no_figures"])
        w.writerow(["p", exam_dir / "magnitude.nii.gz", exam_dir / "phase.nii.gz", exam_dir / "labels.nii.gz", "4",
                    "true"])
    rows = run_cohort(load_tasks(manifest), str(tmp_path / "out"), scheduler=scheduler, workers=1, progress=False)
    assert rows[0]["status"] == "ok", rows[0]["error"]
    with open(tmp_path / "out" / "p" / "report.json", encoding="utf-8") as fh:
        cord = next(r for r in json.load(fh)["protected_structures"] if r["structure"] == "spinal cord")
    with open(tmp_path / "out" / "metrics.csv", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert float(table[0]["spinal_cord_max_c"]) == pytest.approx(cord["max_temperature_c"])
    assert np.isfinite(float(table[0]["nerve_root_max_c"]))


def test_every_reader_gives_a_frame_source(exam_dir):
    """The driver works on the protocol, not on a reader: an opened exam is a sonication's frames."""
    from mrtherm.app.sources import ExamSource, FrameSource, SonicationFrames
    exam = mrtherm.load_exam(str(exam_dir / "magnitude.nii.gz"), str(exam_dir / "phase.nii.gz"))
    assert isinstance(exam, SonicationFrames) and isinstance(ExamSource(exam), FrameSource)
    (son,) = ExamSource(exam).sonications()
    a, b, polar = son.frame_parts(son.n_frames - 1)
    assert polar and a.shape == SHAPE and son.frame_times_s.shape == (FRAMES,)


def test_terminal_lines_say_peak_lesions_structures_and_alarms():
    """The terminal summary, checked line by line against figures written by hand."""
    from mrtherm.app.summary import CumulativeSummary, RunSummary
    cord = StructureResult(10, "spinal cord", 12, 9, 41.25, 20.0, 0.5)
    root = StructureResult(11, "nerve root", 4, 0)  # not measured: no line
    son = SonicationSummary("sonication_01", 12, 55.04, 31.0, 812.0, {240.0: 1.25}, (cord, root),
                            warnings=("w1", "w2"), trust_warnings=("w2",))
    alarm = {"structure": "spinal cord", "quantity": "temperature", "value": 47.0, "threshold": 45.0, "unit": "C",
             "time_s": 20.0}
    run_summary = RunSummary("/out", (son, dataclasses.replace(son, sonication="sonication_02", warnings=("w1",))),
                             CumulativeSummary.from_figures({"peak_temperature_c": 56.0, "max_dose_cem43_min": 900.0,
                                                             "lesion_volumes_ml": {"240": 2.5},
                                                             "reliable_voxels": 77}), (alarm,))
    assert son.lines() == ["sonication_01: 12 frames, peak 55.0 C at t = 31.0 s",
                           "sonication_01: lesion volume at 240 CEM43: 1.250 mL",
                           "sonication_01: spinal cord: max 41.2 C, max dose 0.5 CEM43"]
    lines = run_summary.lines()
    assert lines == son.lines() + [x.replace("sonication_01", "sonication_02") for x in son.lines()] + [
        "cumulative lesion volume at 240 CEM43: 2.500 mL", "ALARM spinal cord: temperature 47 C >= 45 C at t = 20.0 s"]
    assert run_summary.cumulative == CumulativeSummary(56.0, 900.0, {240.0: 2.5}, 77)
    assert run_summary.warnings == ("w1", "w2") and run_summary.trust_warnings == ("w2",)
    single = SonicationSummary("", 3, None, None, None, {})
    assert single.lines() == ["3 frames, peak n/a"]
    assert RunSummary(None, (single,)).lines() == ["3 frames, peak n/a", "alarms: none"]


def test_a_report_without_sections_gives_an_empty_summary():
    son = SonicationSummary.from_report({})
    assert son.sonication == "" and son.frames == 0 and son.structures == () and son.lesion_volumes_ml == {}
    assert (son.peak_temperature_c, son.reference_mode, son.drift_order, son.median_sd_baseline_c,
            son.reliable_voxels) == (None, None, None, None, None)
    assert son.alarms == () and son.warnings == () and son.trust_warnings == ()
