"""Array-library selection: the one place where CuPy is optionally imported.

Core functions take NumPy, CuPy or any array-API arrays and return the same kind.
:func:`namespace` gives the array namespace of the inputs (through
``array_api_compat``). :func:`cupy_usable` decides whether CuPy *works* on this
machine: importing it is not enough, a GPU and driver must be present
(``cupy.is_available()``).
"""

from __future__ import annotations

import functools

import numpy as np
import array_api_compat
import array_api_compat.numpy as _compat_numpy

from mrtherm.errors import BackendUnavailableError, ParameterError

BACKENDS = ("auto", "numpy", "cupy")


@functools.lru_cache(maxsize=1)
def _cupy_module():
    """Return the cupy module if it imports, else None (cached)."""
    try:
        import cupy  # noqa: PLC0415 - optional dependency guarded here only
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return None
    return cupy


def cupy_module():
    """The cupy module, or None when it is not installed."""
    return _cupy_module()


@functools.lru_cache(maxsize=1)
def cupy_usable() -> bool:
    """True when CuPy is installed *and* a CUDA device can be used."""
    cp = _cupy_module()
    if cp is None:
        return False
    try:
        return bool(cp.is_available())
    except Exception:
        return False


def resolve_backend(backend: str) -> str:
    """Map ``"auto" | "numpy" | "cupy"`` to the backend actually used.

    ``auto`` picks CuPy when :func:`cupy_usable`, else NumPy. Asking for
    ``cupy`` without a usable GPU raises :class:`BackendUnavailableError`.
    """
    if backend not in BACKENDS:
        raise ParameterError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "cupy" if cupy_usable() else "numpy"
    if backend == "cupy" and not cupy_usable():
        if _cupy_module() is None:
            why = "CuPy is not installed (pip install 'mrtherm[cuda12]' or 'mrtherm[cuda13]')"
        else:
            why = "CuPy is installed but no usable CUDA GPU was found (cupy.is_available() is False)"
        raise BackendUnavailableError(f"backend 'cupy' requested but {why}")
    return backend


def namespace(*arrays):
    """Array namespace shared by ``arrays`` (NumPy, CuPy, array-api-strict, ...)."""
    arrays = [a for a in arrays if a is not None and not isinstance(a, (int, float, complex))]
    if not arrays:
        return _compat_numpy
    return array_api_compat.array_namespace(*arrays)


def compute_namespace(backend_used: str):
    """The array namespace for a resolved backend name (``"numpy"`` or ``"cupy"``)."""
    if backend_used == "cupy":
        import array_api_compat.cupy as compat_cupy  # noqa: PLC0415 - needs CuPy, guarded by resolve_backend
        return compat_cupy
    return _compat_numpy


def is_cupy_namespace(xp) -> bool:
    return array_api_compat.is_cupy_namespace(xp)


@functools.lru_cache(maxsize=1)
def gpu_engine_class():
    """``mrtherm_gpu.FusedEngine`` when the GPU package and a usable CuPy are present, else None.

    The only place the core reaches for the GPU package, lazily.
    """
    if not cupy_usable():
        return None
    try:
        from mrtherm_gpu import FusedEngine  # noqa: PLC0415
    except ImportError:
        return None
    return FusedEngine


def gpu_package():
    """The ``mrtherm_gpu`` package for CuPy work; a one-line error when it cannot be used."""
    resolve_backend("cupy")
    try:
        import mrtherm_gpu  # noqa: PLC0415
    except ImportError as exc:
        raise BackendUnavailableError(f"the GPU package mrtherm_gpu cannot be imported ({exc})") from None
    return mrtherm_gpu


def is_numpy(xp) -> bool:
    return array_api_compat.is_numpy_namespace(xp)


def is_cupy_array(x) -> bool:
    return array_api_compat.is_cupy_array(x)


def to_numpy(x) -> np.ndarray:
    """Copy any supported array to a NumPy array on the host."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    try:
        return np.from_dlpack(x)
    except Exception:
        return np.asarray(x)


def from_numpy(a: np.ndarray, like_xp):
    """Put a host array into namespace ``like_xp`` (no copy for NumPy)."""
    if is_numpy(like_xp):
        return a
    return like_xp.asarray(a)
