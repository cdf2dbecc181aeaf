"""Array-library selection: the one place where CuPy is optionally imported.

Core functions take NumPy, CuPy or any array-API arrays and return the same kind.
:func:`namespace` gives the array namespace of the inputs (through
``array_api_compat``). :func:`cupy_usable` decides whether CuPy *works* on this
machine: importing it is not enough, a GPU and driver must be present
(``cupy.is_available()``).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Protocol

import numpy as np
import array_api_compat
import array_api_compat.numpy as _compat_numpy

from mrtherm.choices import BACKENDS
from mrtherm.errors import BackendUnavailableError, ParameterError



@functools.lru_cache(maxsize=1)
def _cupy_module():
    """Return the cupy module if it imports, else None (cached)."""
    from mrtherm.optional import optional  # noqa: PLC0415
    return optional("cupy", broken_counts_as_missing=True)  # a broken CUDA install raises at import


def cupy_module():
    """The cupy module, or None when it is not installed.

    Returns
    -------
    module or None
    """
    return _cupy_module()


@functools.lru_cache(maxsize=1)
def cupy_usable() -> bool:
    """True when CuPy is installed *and* a CUDA device can be used (``cupy.is_available()``; cached).

    Returns
    -------
    bool
    """
    cp = _cupy_module()
    if cp is None:
        return False
    try:
        return bool(cp.is_available())
    except Exception:
        return False


def resolve_backend(backend: str) -> str:
    """Map ``"auto" | "numpy" | "cupy"`` to the backend actually used.

    Parameters
    ----------
    backend : {"auto", "numpy", "cupy"}

    Returns
    -------
    {"numpy", "cupy"}

    Raises
    ------
    ParameterError
        Another name.
    BackendUnavailableError
        ``"cupy"`` without CuPy or without a usable GPU (the message says which).

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
    """Array namespace shared by ``arrays`` (NumPy, CuPy, array-api-strict, ...).

    Parameters
    ----------
    *arrays : array or None or Python scalar
        None and Python scalars are ignored.

    Returns
    -------
    module
        The array-API namespace; NumPy's (array_api_compat) when no array is given.
    """
    arrays = [a for a in arrays if a is not None and not isinstance(a, (int, float, complex))]
    if not arrays:
        return _compat_numpy
    return array_api_compat.array_namespace(*arrays)


def compute_namespace(backend_used: str):
    """The array namespace for a resolved backend name.

    Parameters
    ----------
    backend_used : {"numpy", "cupy"}
        As :func:`resolve_backend` returns it.

    Returns
    -------
    module
        array_api_compat's NumPy or CuPy namespace.
    """
    if backend_used == "cupy":
        import array_api_compat.cupy as compat_cupy  # noqa: PLC0415 - needs CuPy, guarded by resolve_backend
        return compat_cupy
    return _compat_numpy


def is_cupy_namespace(xp) -> bool:
    """True when ``xp`` is CuPy's array namespace.

    Parameters
    ----------
    xp : module

    Returns
    -------
    bool
    """
    return array_api_compat.is_cupy_namespace(xp)


GPU_PLUGIN_GROUP = "mrtherm.gpu"
"""Entry-point group under which a package offers GPU engines (``mrtherm_gpu`` registers ``cuda``)."""


class GpuPlugin(Protocol):
    """What the core uses from a GPU package (found by entry point, never imported by name)."""

    engine_class: type  # an mrtherm.thermometry.engine.Engine taking (xp, model, EngineConfig)

    def trace_pairs(self, scene, positions, foci) -> dict:
        """Statuses and reason bits of every (element, focus) ray.

        Parameters
        ----------
        scene : mrtherm.window.Scene
        positions : ndarray, shape (n_elements, 3)
            Element positions, world mm.
        foci : ndarray, shape (n_foci, 3)
            World mm.

        Returns
        -------
        dict
            ``status`` (int8) and ``reasons`` (int32 bits), host arrays of shape (n_elements, n_foci).
        """

    def active_fractions(self, scene, transducer, foci) -> np.ndarray:
        """Area-weighted active fraction of the transducer for each focus.

        Parameters
        ----------
        scene : mrtherm.window.Scene
        transducer : mrtherm.window.transducer.Transducer
        foci : ndarray, shape (n_foci, 3)
            World mm.

        Returns
        -------
        ndarray of float, shape (n_foci,)
        """


def first_entry_point(group: str):
    """The first entry point of ``group`` that loads (how the core finds the packages that build on it).

    Parameters
    ----------
    group : str
        Entry-point group, e.g. ``"mrtherm.gpu"`` or ``"mrtherm.viewer"``.

    Returns
    -------
    object or None
        The loaded object; None when none is installed or none loads (a broken optional package, or one whose
        own dependencies are missing, must not break the core).
    """
    from importlib.metadata import entry_points  # noqa: PLC0415
    for ep in entry_points(group=group):
        try:
            return ep.load()
        except Exception:
            continue
    return None


class PluginRegistry:
    """The GPU plugin in use: one set explicitly (:meth:`use`: tests, embedding), else the first ``mrtherm.gpu``
    entry point that loads (looked up once, again after :meth:`reset`). An object with its state in view, not a
    list that only grows behind a cache.

    Parameters
    ----------
    group : str
        The entry-point group.
    """

    def __init__(self, group: str):
        self.group = group
        self.chosen = None
        self._found, self._looked = None, False

    def plugin(self):
        """The plugin in use, or None.

        Returns
        -------
        GpuPlugin or None
        """
        if self.chosen is not None:
            return self.chosen
        if not self._looked:
            self._found, self._looked = first_entry_point(self.group), True
        return self._found

    @contextlib.contextmanager
    def use(self, plugin):
        """Use ``plugin`` (None: none at all, not even an installed one) inside the block.

        Parameters
        ----------
        plugin : GpuPlugin or None

        Yields
        ------
        None
        """
        saved = (self.chosen, self._found, self._looked)
        self.chosen, self._found, self._looked = plugin, None, True
        try:
            yield
        finally:
            self.chosen, self._found, self._looked = saved

    def reset(self):
        """Forget the choice and the entry-point lookup (a package installed since is found next time)."""
        self.chosen, self._found, self._looked = None, None, False


GPU_PLUGINS = PluginRegistry(GPU_PLUGIN_GROUP)
"""The registry :func:`gpu_plugin` reads."""


def gpu_plugin(required: bool = False):
    """The GPU plugin when CuPy can use a GPU and a plugin is installed, else None.

    Parameters
    ----------
    required : bool
        Raise instead of returning None.

    Returns
    -------
    GpuPlugin or None
        The one :data:`GPU_PLUGINS` has in use (set with :meth:`PluginRegistry.use`, else the entry point).

    Raises
    ------
    BackendUnavailableError
        With ``required``: one line saying what is missing (CuPy, a GPU, or the plugin).
    """
    if not cupy_usable():
        if required:
            resolve_backend("cupy")  # raises with the reason
        return None
    plugin = GPU_PLUGINS.plugin()
    if plugin is None and required:
        raise BackendUnavailableError(f"no GPU plugin is installed (entry-point group {GPU_PLUGIN_GROUP!r}; "
                                      "pip install 'mrtherm[cuda13]' from a checkout that has gpu/)")
    return plugin


def is_numpy(xp) -> bool:
    """True when ``xp`` is NumPy's (array-API-compatible) namespace.

    Parameters
    ----------
    xp : module

    Returns
    -------
    bool
    """
    return array_api_compat.is_numpy_namespace(xp)


def is_cupy_array(x) -> bool:
    """True when ``x`` is a CuPy array.

    Parameters
    ----------
    x : object

    Returns
    -------
    bool
    """
    return array_api_compat.is_cupy_array(x)


def to_numpy(x) -> np.ndarray:
    """Any supported array as a NumPy array on the host.

    Parameters
    ----------
    x : array (NumPy, CuPy, or any DLPack or array-API array)

    Returns
    -------
    ndarray
        ``x`` itself for NumPy input, else a host copy.
    """
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    try:
        return np.from_dlpack(x)
    except Exception:
        return np.asarray(x)


def from_numpy(a: np.ndarray, like_xp):
    """Put a host array into namespace ``like_xp``.

    Parameters
    ----------
    a : ndarray
    like_xp : module
        Target array namespace.

    Returns
    -------
    array
        ``a`` itself for NumPy, else ``like_xp.asarray(a)`` (a device copy for CuPy).
    """
    if is_numpy(like_xp):
        return a
    return like_xp.asarray(a)


@contextlib.contextmanager
def single_threaded_blas():
    """Keep NumPy's BLAS to one thread inside the ``with`` block (threadpoolctl).

    The per-slice matrix products of the drift fit are small (slices x voxels x a few basis terms): OpenBLAS
    spreads them over its threads, whose spin-waiting between calls then takes the cores the read-ahead and writer
    threads need. Measured on the 2-core benchmark exam: 7.4 s of CPU for a 3.9-4.6 s run with BLAS threads,
    4.3-4.6 s of CPU for 3.5-3.9 s with one.
    """
    from threadpoolctl import threadpool_limits  # noqa: PLC0415 -- imported when a frame loop starts

    with threadpool_limits(limits=1, user_api="blas"):
        yield
