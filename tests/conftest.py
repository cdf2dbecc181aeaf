import functools
import os
import pathlib

import numpy as np
import pytest

import mrtherm

try:
    import array_api_strict
except ImportError:  # pragma: no cover - test extra installs it
    array_api_strict = None


def _namespaces():
    out = [pytest.param(np, id="numpy")]
    if array_api_strict is not None:
        out.append(pytest.param(array_api_strict, id="array_api_strict"))
    return out


@pytest.fixture(params=_namespaces())
def xp(request):
    """Run a test with NumPy and with array-api-strict arrays."""
    return request.param


SMALL_PHANTOM = dict(shape_zyx=(6, 96, 96), voxel_mm=(4.0, 2.0, 2.0), n_frames=30, seed=3)


@functools.lru_cache(maxsize=1)
def _small_phantom():
    # cached at module level: `make mutation` forks a fresh pytest session per mutant from a process that
    # already built it, so each mutant skips the 3 s phantom (tests never modify it)
    return mrtherm.make_phantom(**SMALL_PHANTOM)


@pytest.fixture(scope="session")
def small_phantom():
    return _small_phantom()


@pytest.fixture(scope="session")
def phantom_files(tmp_path_factory, small_phantom):
    out = tmp_path_factory.mktemp("phantom") / "exam"
    return mrtherm.write_phantom(out, small_phantom, phase_format="siemens")


@pytest.fixture(scope="session")
def phantom_result(small_phantom):
    ph = small_phantom
    exam = mrtherm.load_exam(ph.magnitude, ph.phase_rad, te_s=ph.te_s, b0_t=ph.b0_t,
                             frame_times_s=ph.frame_times_s, affine=ph.affine)
    return mrtherm.process(exam, baseline_frames=ph.info["baseline_frames"], labels=ph.labels)


def write_nifti(folder, name, arr, sidecar=None, step=3.0, affine=None):
    """A ``(t, z, y, x)`` or ``(z, y, x)`` array as NIfTI (2 x 2 x 4 mm unless ``affine``) with an optional sidecar."""
    import json
    from mrtherm.io import niftiio
    p = os.path.join(folder, name)
    niftiio.save_volume(arr, np.diag([2.0, 2.0, 4.0, 1.0]) if affine is None else affine, p, frame_time_s=step)
    if sidecar is not None:
        with open(niftiio.sidecar_path(p), "w") as fh:
            json.dump(sidecar, fh)
    return p


def tree_digest(folder):
    """Map of file -> (size, mtime_ns, sha1) to prove inputs are untouched."""
    import hashlib
    out = {}
    for root, _d, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = (os.path.getsize(p), hashlib.sha1(fh.read()).hexdigest())
    return out


CUDACPU = pathlib.Path(__file__).resolve().parents[2] / "shared" / "tools" / "cudacpu"
REQUIRE_CUDACPU = os.environ.get("MRTHERM_REQUIRE_CUDACPU") == "1"


def cudacpu_available() -> bool:
    """cudacpu (the CUDA kernels on the CPU) beside the checkout; with ``MRTHERM_REQUIRE_CUDACPU=1`` its absence is
    an error, not a skip."""
    there = (CUDACPU / "cudacpu_rt.py").exists()
    if not there and REQUIRE_CUDACPU:
        raise RuntimeError(f"MRTHERM_REQUIRE_CUDACPU=1 but cudacpu is not at {CUDACPU}")
    return there


def pytest_terminal_summary(terminalreporter):
    """Never silent: when the kernel parity tests did not run, the last lines say so."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "cudacpu" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(f"KERNEL PARITY NOT CHECKED: {len(skipped)} tests skipped, cudacpu is not at "
                                    f"{CUDACPU} (MRTHERM_REQUIRE_CUDACPU=1 makes this an error)", red=True, bold=True)


def pytest_collection_modifyitems(config, items):
    """tests/gpu needs a usable CUDA device (skip on cupy.is_available(), not on import);
    tests/napari needs a display, which pytest-xvfb provides when Xvfb is installed."""
    from mrtherm.backend import cupy_usable
    gpu_ok = cupy_usable()
    display_ok = bool(os.environ.get("DISPLAY"))
    skip_gpu = pytest.mark.skip(reason="needs a usable CUDA GPU (cupy.is_available() is False)")
    skip_display = pytest.mark.skip(reason="needs a display: install Xvfb (make test does as root)")
    for item in items:
        path = str(item.fspath).replace("\\", "/")
        if "/tests/gpu/" in path and not gpu_ok:
            item.add_marker(skip_gpu)
        if "/tests/napari/" in path and not display_ok:
            item.add_marker(skip_display)


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory):
    """The napari sample: phantom, thermometry run and window check, in a temporary folder."""
    pytest.importorskip("napari")
    from napari_mrtherm._sample import build_sample
    return build_sample(str(tmp_path_factory.mktemp("sample")))
