"""Cohorts on Dask: a manifest with a corrupt exam and a parameter sweep, on a real dask.distributed LocalCluster
(2 worker processes), against the same exams run one by one with ``mrtherm run``; re-runs, changed inputs and a
worker killed mid-task."""

import csv
import os
import shutil
import signal
import threading
import time

import nibabel as nib
import numpy as np
import pytest

import mrtherm
from mrtherm.cli import main
from mrtherm.cohort import load_tasks, run_cohort
from mrtherm.errors import InputFileError

distributed = pytest.importorskip("distributed")
pq = pytest.importorskip("pyarrow.parquet")

SHAPE, FRAMES = (4, 40, 40), 14


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Two phantom exams (different seeds), one with a truncated phase file, and a manifest: exam a twice (drift
    order 1 and 2), b once, the corrupt one once."""
    root = tmp_path_factory.mktemp("cohort")
    for name, seed in (("ex_a", 3), ("ex_b", 4)):
        mrtherm.write_phantom(str(root / name), shape_zyx=SHAPE, voxel_mm=(3.0, 2.0, 2.0), n_frames=FRAMES, seed=seed)
    bad = root / "ex_bad"
    shutil.copytree(root / "ex_a", bad)
    data = (bad / "phase.nii.gz").read_bytes()
    (bad / "phase.nii.gz").write_bytes(data[: len(data) // 2])
    rows = [("a", "ex_a", "1"), ("a", "ex_a", "2"), ("b", "ex_b", ""), ("broken", "ex_bad", "")]
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["exam", "magnitude", "phase", "baseline_frames", "drift_order", "no_figures"])
        for exam, folder, order in rows:
            w.writerow([exam, f"{folder}/magnitude.nii.gz", f"{folder}/phase.nii.gz", "4", order, "true"])
    return root


@pytest.fixture(scope="module")
def sequential(cohort, tmp_path_factory):
    """The same runs one by one through ``mrtherm run``: the reference outputs."""
    out = tmp_path_factory.mktemp("sequential")
    runs = {"a_drift-order-1": ("ex_a", ["--drift-order", "1"]), "a_drift-order-2": ("ex_a", ["--drift-order", "2"]),
            "b": ("ex_b", [])}
    for name, (folder, extra) in runs.items():
        assert main(["run", "--magnitude", str(cohort / folder / "magnitude.nii.gz"), "--phase",
                     str(cohort / folder / "phase.nii.gz"), "--baseline-frames", "4", "--no-figures", "--quiet",
                     "--out", str(out / name), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=50) as cluster, distributed.Client(cluster) as c:
        yield c


def _dose(folder):
    return np.asarray(nib.load(os.path.join(folder, "dose_cem43.nii.gz")).dataobj)


def test_local_cluster_matches_sequential_runs_and_records_the_corrupt_exam(cohort, sequential, client, tmp_path):
    out = tmp_path / "batch"
    rows = run_cohort(load_tasks(cohort / "manifest.csv"), str(out), client=client, progress=False)
    assert [(r["exam"], r["variant"], r["status"]) for r in rows] == [
        ("a", "drift-order-1", "ok"), ("a", "drift-order-2", "ok"), ("b", "", "ok"), ("broken", "", "failed")]
    broken = rows[-1]
    assert "ex_bad" in broken["error"] and "phase.nii.gz" in broken["error"] and "\n" not in broken["error"]
    for name in ("a_drift-order-1", "a_drift-order-2", "b"):
        np.testing.assert_array_equal(_dose(out / name), _dose(sequential / name))
    # the table: one row per exam x variant, parameters and metrics as the run's report.json gives them
    table = pq.read_table(out / "metrics.parquet").to_pylist()
    with open(out / "metrics.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 4
    import json
    rep = json.load(open(sequential / "b" / "report.json"))
    row_b = next(r for r in table if r["exam"] == "b")
    assert row_b["peak_temperature_c"] == pytest.approx(rep["results"]["peak_temperature_c"])
    assert row_b["lesion_240_ml"] == pytest.approx(rep["results"]["lesion_volumes_ml"]["240"])
    assert row_b["median_sd_baseline_c"] == pytest.approx(rep["noise"]["median_sd_baseline_c"])
    assert {r["param_drift_order"] for r in table if r["exam"] == "a"} == {"1", "2"}
    assert next(r for r in table if r["variant"] == "drift-order-1")["drift_order"] == 1
    # per-worker set-up: every worker runs the cohort's plugin (registered once, not entered per task)
    plugins = client.run(lambda dask_worker: sorted(dask_worker.plugins))
    assert all("mrtherm-cohort-worker" in names for names in plugins.values()) and len(plugins) == 2


def test_rerun_skips_finished_tasks_and_redoes_changed_ones(cohort, tmp_path):
    out = tmp_path / "batch"
    tasks = load_tasks(cohort / "manifest.csv")
    first = run_cohort(tasks, str(out), scheduler="threads", workers=2, progress=False)
    stamp = os.path.getmtime(out / "b" / "dose_cem43.nii.gz")
    again = run_cohort(tasks, str(out), scheduler="threads", workers=2, progress=False)
    assert [r["reused"] for r in again] == [True, True, True, False]  # the failed one is tried again
    assert os.path.getmtime(out / "b" / "dose_cem43.nii.gz") == stamp
    assert [r["peak_temperature_c"] for r in again[:3]] == [r["peak_temperature_c"] for r in first[:3]]
    # a changed input (its modification time) makes exactly the tasks that read it run again
    os.utime(cohort / "ex_b" / "phase.nii.gz", ns=(time.time_ns(), time.time_ns()))
    third = run_cohort(tasks, str(out), scheduler="sync", progress=False)
    assert [r["reused"] for r in third] == [True, True, False, False]


def test_worker_killed_mid_task_neither_loses_nor_duplicates(cohort, sequential, client, tmp_path):
    out = tmp_path / "batch"
    pids = client.run(os.getpid)
    killed = {}

    def kill_a_busy_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for addr, keys in client.processing().items():
                if keys and addr in pids and any(p.name.startswith(".") for p in out.glob("*")):
                    os.kill(pids[addr], signal.SIGKILL)  # mid-task: its staging folder exists
                    killed[addr] = keys
                    return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    rows = run_cohort(load_tasks(cohort / "manifest.csv"), str(out), client=client, progress=False)
    killer.join()
    assert killed, "no worker was caught mid-task"
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed"]
    for name in ("a_drift-order-1", "a_drift-order-2", "b"):
        np.testing.assert_array_equal(_dose(out / name), _dose(sequential / name))
    assert sorted(p.name for p in out.iterdir()) == ["a_drift-order-1", "a_drift-order-2", "b", "metrics.csv",
                                                     "metrics.parquet"]  # no half-written or stale folders


def test_manifest_errors_name_the_file_and_line(cohort, tmp_path):
    def bad(text, needle):
        p = tmp_path / "m.csv"
        p.write_text(text)
        with pytest.raises(InputFileError, match=needle) as exc:
            load_tasks(p)
        assert "m.csv" in str(exc.value)

    bad("magnitude,phase\nx,y\n", "'exam' column")
    bad("exam,magnitude,phase,drift_ordr\na,x,y,1\n", "'drift_ordr' is not a mrtherm run option")
    bad("exam,magnitude,phase,out\na,x,y,z\n", "'out'")
    bad("exam,magnitude,phase,no_figures\na,x,y,maybe\n", "line 2: column 'no_figures' is a flag")
    bad("exam,magnitude,phase,drift_order\na,x,y,1\na,x,y,1\n", "line 3: exam 'a' has several rows")
    bad("exam,magnitude,phase\na,,\n", "line 2: no inputs")


def test_batch_command_and_folder_of_exams(cohort, tmp_path, capsys):
    exams = tmp_path / "exams"
    for name in ("ex_a", "ex_b"):
        shutil.copytree(cohort / name, exams / name)
    (exams / "notes").mkdir()  # no inputs: not an exam
    assert [t.exam for t in load_tasks(exams)] == ["ex_a", "ex_b"]
    assert main(["batch", str(exams), "--out", str(tmp_path / "o"), "--scheduler", "sync", "--quiet"]) == 0
    assert (tmp_path / "o" / "ex_a" / "labels.nii.gz").exists()  # labels.nii.gz beside the exam is used
    assert main(["batch", str(cohort / "manifest.csv"), "--out", str(tmp_path / "m"), "--scheduler", "threads"]) == 1
    err = capsys.readouterr().out
    assert "3 ok" in err and "1 failed" in err and "failed: " in err


def test_feasibility_map_in_dask_chunks_equals_one_machine(client):
    from mrtherm.cohort import feasibility_map_dask
    from mrtherm.window import Scene, feasibility_map
    from mrtherm.window.transducer import spherical_cap
    ph = mrtherm.make_phantom(shape_zyx=(12, 40, 40), voxel_mm=(3.0, 3.0, 3.0), n_frames=1)
    scene = Scene(ph.labels, ph.affine)
    sug = ph.info["transducer_suggestion"]
    tr = spherical_cap(sug["radius_mm"], sug["aperture_mm"], 96, sug["focus_world_mm"], sug["axis"])
    mask = np.zeros(scene.shape, bool)
    mask[4:8, 10:30:2, 10:30:3] = True  # 280 foci over and around the target
    one = feasibility_map(scene, tr, mask)
    on_cluster = feasibility_map_dask(scene, tr, mask, client=client, chunk_foci=64)
    np.testing.assert_array_equal(on_cluster, one)
    np.testing.assert_array_equal(feasibility_map_dask(scene, tr, mask, chunk_foci=50, compiled=False), one)
    assert np.nanmin(one) < np.nanmax(one)  # the foci differ (the map is not trivially uniform)


def test_batch_command_on_a_scheduler_address(cohort, client, tmp_path, capsys):
    address = client.scheduler.address
    assert main(["batch", str(cohort / "manifest.csv"), "--out", str(tmp_path / "o"), "--scheduler", address]) == 1
    captured = capsys.readouterr()
    assert "dask dashboard: " in captured.err and "3 ok (0 reused), 1 failed" in captured.out
    assert main(["batch", str(cohort / "manifest.csv"), "--out", str(tmp_path / "x"), "--scheduler",
                 "tcp://127.0.0.1:9", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mrtherm: error: --scheduler tcp://127.0.0.1:9: cannot connect") and "\n" not in err
