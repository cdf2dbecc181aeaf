"""Backend selection and the CUDA sources (compile-checked with nvcc where installed)."""

import shutil
import subprocess

import numpy as np
import pytest

import mrtherm
from mrtherm import BackendUnavailableError, ParameterError
from mrtherm.backend import cupy_usable, resolve_backend


def test_auto_picks_what_works():
    assert resolve_backend("auto") == ("cupy" if cupy_usable() else "numpy")
    assert resolve_backend("numpy") == "numpy"
    with pytest.raises(ParameterError, match="backend"):
        resolve_backend("opencl")


@pytest.mark.skipif(cupy_usable(), reason="a GPU is usable here")
def test_cupy_without_gpu_is_a_clear_error():
    with pytest.raises(BackendUnavailableError, match="backend 'cupy'"):
        resolve_backend("cupy")
    mag = np.ones((4, 2, 8, 8), np.float32)
    exam = mrtherm.load_exam(mag, np.zeros_like(mag), te_s=0.01, b0_t=3.0, frame_time_s=1.0)
    with pytest.raises(BackendUnavailableError):
        mrtherm.process(exam, backend="cupy")


def test_core_import_does_not_import_cupy_or_gpu_package():
    code = ("import sys, mrtherm; "
            "assert 'cupy' not in sys.modules and 'mrtherm_gpu' not in sys.modules, sorted(sys.modules)")
    subprocess.run([__import__("sys").executable, "-c", code], check=True)


def test_kernel_sources_present():
    from mrtherm_gpu.kernels_loader import kernel_sources
    names = {p.name for p in kernel_sources()}
    assert "thermometry.cu" in names


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_every_kernel_compiles_for_sm90(tmp_path):
    from mrtherm_gpu.kernels_loader import kernel_sources
    for src in kernel_sources():
        out = tmp_path / (src.stem + ".cubin")
        proc = subprocess.run(["nvcc", "-arch=sm_90", "--cubin", "-o", str(out), str(src)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_size > 0
