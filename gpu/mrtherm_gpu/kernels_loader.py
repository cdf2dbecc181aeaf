"""Loading the ``.cu`` kernel sources with ``cupy.RawModule`` (compiled once per process)."""

from __future__ import annotations

import functools
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"


def kernel_sources() -> list[Path]:
    """Every CUDA source file shipped with the package."""
    return sorted(KERNEL_DIR.glob("*.cu"))


@functools.lru_cache(maxsize=None)
def load_module(name: str):
    """``cupy.RawModule`` of ``kernels/<name>.cu`` (NVRTC, C++14)."""
    import cupy as cp

    src = (KERNEL_DIR / f"{name}.cu").read_text(encoding="utf-8")
    return cp.RawModule(code=src, options=("--std=c++14",))
