"""The fused CUDA engine, unmodified, on the CPU (cudacpu's fakecupy) against the NumPy engine, every option branch.

cudacpu lives in ../shared/tools/cudacpu beside the checkout; where it is absent (a fresh clone elsewhere) these
tests skip. It proves kernel logic, not GPU rounding, stream concurrency or speed (see its README).
Tolerances: temperature 1e-4 C, dose 1e-4 relative; normal equations 1e-4 in units of the slice's weight sum (their
right-hand side then differs by less than 1e-4 rad of mean phase) and voxel counts exactly. The frames' drift
changes less per frame than the outlier cut, so no voxel sits on the cut (where float32 and float64 may decide
differently).
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import cudacpu_available

CUDACPU = pathlib.Path(__file__).resolve().parents[2] / "shared" / "tools" / "cudacpu"
DRIVER = pathlib.Path(__file__).resolve().parent / "kernel_parity_driver.py"
pytestmark = pytest.mark.skipif(not cudacpu_available(), reason="cudacpu not beside the checkout")


@pytest.mark.parametrize("corrupt", [False, True], ids=["clean", "corrupt-samples"])
@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("polar", [True, False])
@pytest.mark.parametrize("auto", [True, False])
def test_fused_engine_matches_numpy_on_every_branch(order, polar, auto, corrupt):
    """With ``corrupt``: NaN, +-inf and zero samples in 2 % of the voxels of a baseline frame and two consecutive
    dynamic frames (magnitude or phase, real or imaginary): the same temperature, Tmax, dose and NaN pattern."""
    host = (order + polar + auto + corrupt) % 2 == 0  # host frames (pinned staging, copy stream, events) or device
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(DRIVER.parents[1] / "gpu"),
                                                                      os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, str(DRIVER), str(CUDACPU), str(order), str(int(polar)), str(int(auto)),
                          str(int(host)), str(int(corrupt))], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    d = json.loads(run.stdout.strip().splitlines()[-1])
    assert d["temperature"] < 1e-4 and d["tmax"] < 1e-4 and d["dose_rel"] < 1e-4, d
    assert d["stats"] < 1e-4 and d["base_sum"] < 1e-4 and d["fallback_stats"] < 1e-4, d
    assert d.get("fallback_differs", False) == auto  # automatic mode: a separate pass, and it excluded voxels
    # per-frame validity: the same voxels valid and re-anchored in every frame, the same counts
    assert d["validity_mismatch"] == 0 and d["valid_frames_mismatch"] == 0 and d["base_count_mismatch"] == 0, d
    assert d["invalid_voxel_frames"] > 0 and d["reanchored_voxel_frames"] > 0 and d["never_valid"] == 2 * 2 * 4, d
    # heat 4.5 rad (past a wrap) when the dark patch comes back: re-anchored, not a wrap off (8.7 C/rad x 2 pi)
    assert d["patch_vs_neighbours_c"] < 5.0, d
    if corrupt:  # corrupt samples are no measurement; the voxels come back on their neighbours' wrap
        assert d["corrupt_voxels"] > 40 and d["corrupt_back_error_c"] < 2.0, d


THERMOMETER_DRIVER = pathlib.Path(__file__).resolve().parent / "thermometer_parity_driver.py"


def test_a_thermometer_on_the_fused_engine_matches_the_array_engine_on_corrupt_samples():
    """A whole Thermometer (baseline, drift, unwrapping, dose) on frames with NaN, +-inf and zero samples in a baseline
    frame and two consecutive dynamic frames, polar and complex: same temperatures, Tmax, dose and NaN pattern."""
    run = subprocess.run([sys.executable, str(THERMOMETER_DRIVER), str(CUDACPU), str(DRIVER.parents[1])],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads(line) for line in run.stdout.strip().splitlines()[-2:]]
    assert [r["polar"] for r in results] == [True, False]
    for r in results:
        assert r["engines"][1] == "fused CUDA" and r["engines"][0] != r["engines"][1], r
        assert r["finite_mismatch"] == 0 and r["tmax_nan_mismatch"] == 0, r
        assert r["temperature"] < 1e-4 and r["tmax"] < 1e-4 and r["dose_rel"] < 1e-4, r
        assert r["corrupt_unmeasured"] > 0 and r["peak_c"] > 45.0, r  # corrupt samples are no measurement
