"""mrtherm_gpu: fused CUDA kernels for mrtherm, run through CuPy.

Kernel sources are ``.cu`` files in ``kernels/`` loaded with ``cupy.RawModule``,
so ``nvcc -arch=sm_90 --cubin`` can compile-check them on a machine without a GPU.
The core never imports this package by name: it finds :mod:`mrtherm_gpu.plugin`
through the ``mrtherm.gpu`` entry point (``mrtherm.backend.gpu_plugin``), lazily
and only when ``cupy.is_available()``.
"""

from . import raymarch
from .kernels_loader import KERNEL_DIR, kernel_sources, load_module
from .thermometry import FusedEngine

__all__ = ["FusedEngine", "KERNEL_DIR", "kernel_sources", "load_module", "raymarch"]
