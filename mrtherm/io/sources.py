"""Where one component of an exam (magnitude, phase, real, imaginary) comes from.

Every source streams ``(z, y, x)`` float32 frames with :meth:`read` and tells its
shape, affine and file names. Sources: one 4-D NIfTI, a list of 3-D NIfTI
frames, an in-memory ``(t, z, y, x)`` array, or a DICOM series
(:mod:`mrtherm.io.dicom`).
"""

from __future__ import annotations

import os

import numpy as np

from mrtherm.io import niftiio
from mrtherm.backend import namespace
from mrtherm.errors import InputFileError, ParameterError


class FileSeries:
    """One component stored as a 4-D NIfTI or a list of 3-D NIfTI frames."""

    def __init__(self, paths, role):
        self.role = role
        self.paths = [os.fspath(p) for p in paths]
        self.images = []
        if len(self.paths) == 1:
            img = niftiio.load_nifti(self.paths[0])
            if img.ndim not in (3, 4):
                raise InputFileError(self.paths[0], f"expected a 3-D or 4-D image, got {img.ndim}-D shape {img.shape}")
            self.images = [img]
            self.n_frames = img.shape[3] if img.ndim == 4 else 1
            self.four_d = img.ndim == 4
        else:
            for p in self.paths:
                img = niftiio.load_nifti(p)
                if not (img.ndim == 3 or (img.ndim == 4 and img.shape[3] == 1)):
                    raise InputFileError(p, f"expected a 3-D frame in a list of frames, got shape {img.shape}")
                self.images.append(img)
            self.n_frames = len(self.images)
            self.four_d = False
            ref = self.images[0]
            for p, img in zip(self.paths[1:], self.images[1:]):
                if img.shape[:3] != ref.shape[:3]:
                    raise InputFileError(p, f"frame shape {img.shape[:3]} differs from {self.paths[0]} {ref.shape[:3]}")
                if not np.allclose(img.affine, ref.affine, atol=1e-3):
                    raise InputFileError(p, f"affine differs from the first frame {self.paths[0]}")
        img = self.images[0]
        sx, sy, sz = img.shape[:3]
        self.shape_zyx = (sz, sy, sx)
        self.affine = np.asarray(img.affine, dtype=np.float64)
        self.integer_on_disk = np.issubdtype(img.get_data_dtype(), np.integer)
        self.slope, self.inter = niftiio.scaling_of(img)

    def path_of(self, t: int) -> str:
        """The file holding frame ``t`` (for messages)."""
        return self.paths[0] if self.four_d or len(self.paths) == 1 else self.paths[t]

    def read(self, t: int) -> np.ndarray:
        """Frame ``t`` as a ``(z, y, x)`` float32 array."""
        if self.four_d:
            return niftiio.read_volume(self.images[0], self.paths[0], t)
        return niftiio.read_volume(self.images[t], self.paths[t])

    def describe(self):
        """The source for report.json."""
        return self.paths if len(self.paths) > 1 else self.paths[0]


class ArraySeries:
    """One component held in memory as a ``(t, z, y, x)`` array of any array library."""

    def __init__(self, array, role):
        self.role = role
        if getattr(array, "ndim", None) == 3:
            xp = namespace(array)
            array = xp.reshape(array, (1,) + tuple(array.shape))
        if getattr(array, "ndim", None) != 4:
            raise ParameterError(f"{role} array must be (t, z, y, x), got shape {getattr(array, 'shape', None)}")
        self.array = array
        self.n_frames = int(array.shape[0])
        self.shape_zyx = tuple(int(s) for s in array.shape[1:])
        self.affine = None
        self.integer_on_disk = False
        self.slope, self.inter = 1.0, 0.0
        self.paths = []

    def path_of(self, t):
        """The file holding frame ``t`` (for messages)."""
        return f"<{self.role} array>"

    def read(self, t):
        """Frame ``t`` as a ``(z, y, x)`` float32 array."""
        xp = namespace(self.array)
        return xp.astype(self.array[t, ...], xp.float32)

    def describe(self):
        """The source for report.json."""
        return f"<in-memory {self.role} array {tuple(self.array.shape)}>"


def as_series(src, role):
    """A source for ``src``: a path, a list of paths (3-D frames), or an array."""
    if src is None:
        return None
    if isinstance(src, (str, os.PathLike)):
        return FileSeries([src], role)
    if isinstance(src, (list, tuple)) and src and all(isinstance(p, (str, os.PathLike)) for p in src):
        return FileSeries(src, role)
    return ArraySeries(src, role)


def is_path_like(src) -> bool:
    """True for a path or a non-empty list of paths."""
    return isinstance(src, (str, os.PathLike)) or (
        isinstance(src, (list, tuple)) and bool(src) and all(isinstance(p, (str, os.PathLike)) for p in src))


def path_list(src) -> list[str]:
    """The file names of a path or list of paths (empty for arrays and None)."""
    if isinstance(src, (str, os.PathLike)):
        return [os.fspath(src)]
    if is_path_like(src):
        return [os.fspath(p) for p in src]
    return []
