"""Optional packages, guarded in one place (after nibabel's ``optpkg``): which extra brings each, and one line
naming it when a feature needs a package that is not installed.

:func:`optional` returns the module or None (a feature with a fallback: numba, ISA-L, indexed_gzip, CuPy);
:func:`require` returns the module or raises a one-line :class:`mrtherm.errors.MrthermError` naming the feature
and the ``pip install`` that brings it (pydicom, pynetdicom, dask, distributed, pyarrow).
"""

from __future__ import annotations

import importlib
import threading

from mrtherm.errors import MrthermError

__all__ = ["EXTRAS", "optional", "require"]

EXTRAS = {
    "cupy": "cuda13",
    "pydicom": "dicom",
    "pynetdicom": "live",
    "highdicom": "export",
    "pyigtl": "igtl",
    "numba": "fast",
    "isal.igzip": "fast",
    "indexed_gzip": "napari",
    "dask": "cohort",
    "dask.array": "cohort",
    "distributed": "cohort",
    "pyarrow": "cohort",
    "pyarrow.csv": "cohort",
    "pyarrow.parquet": "cohort",
}
"""Import name -> the mrtherm extra that installs it."""

_MISSING: set = set()
_LOCK = threading.Lock()


def optional(name: str, *, broken_counts_as_missing: bool = False):
    """The module ``name``, or None when it is not installed.

    Parameters
    ----------
    name : str
        Import name, one of :data:`EXTRAS`.
    broken_counts_as_missing : bool
        Also None when importing it raises something other than ImportError (a CUDA library that cannot load).

    Returns
    -------
    module or None
    """
    if name not in EXTRAS:
        raise ValueError(f"{name!r} is not an optional package of mrtherm")
    if name in _MISSING:
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 -- only where the caller has a fallback for a broken install
        if not broken_counts_as_missing:
            raise
    with _LOCK:
        _MISSING.add(name)
    return None


def require(name: str, purpose: str):
    """The module ``name``; a one-line error naming ``purpose`` and the extra when it is not installed.

    Parameters
    ----------
    name : str
        Import name, one of :data:`EXTRAS`.
    purpose : str
        What needs it, e.g. ``"reading DICOM"``.

    Returns
    -------
    module

    Raises
    ------
    MrthermError
        ``"<purpose> needs <package>: pip install 'mrtherm[<extra>]'"``.
    """
    mod = optional(name)
    if mod is None:
        raise MrthermError(f"{purpose} needs {name.split('.')[0]}: pip install 'mrtherm[{EXTRAS[name]}]'")
    return mod
