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


def test_core_import_is_light():
    """DESIGN.md: ``import mrtherm`` pulls in no cupy, GPU package, napari, Qt, matplotlib or scipy.stats."""
    heavy = ("cupy", "mrtherm_gpu", "napari", "napari_mrtherm", "PyQt6", "qtpy", "matplotlib", "scipy.stats")
    code = ("import sys, mrtherm, mrtherm.cli; "
            f"bad = [m for m in sys.modules if m.startswith({heavy!r})]; assert not bad, bad")
    subprocess.run([__import__("sys").executable, "-c", code], check=True)


def test_core_sources_never_name_the_gpu_or_plugin_packages():
    """Dependencies point one way: no module under mrtherm/ imports mrtherm_gpu or napari_mrtherm (entry points)."""
    import ast
    import pathlib
    offenders = []
    for path in pathlib.Path(mrtherm.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("mrtherm_gpu", "napari_mrtherm")]
    assert offenders == []


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
