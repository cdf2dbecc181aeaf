"""The opened exam: what every reader (NIfTI files, DICOM folders, in-memory arrays) returns.

:class:`Exam` reads its frames lazily, one ``(z, y, x)`` frame at a time. The readers live in
:mod:`mrtherm.io.exam` (NIfTI, arrays) and :mod:`mrtherm.io.dicom` (DICOM); both import this module, and it
imports neither, so the two readers never import each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mrtherm.backend import namespace
from mrtherm.errors import InputFileError
from mrtherm.geometry import voxel_volume_ml
from mrtherm.io.phase_scale import phase_to_radians
from mrtherm.io.signal import signal_from_parts
from mrtherm.io.sources import ArraySeries

__all__ = ["Exam", "polar_parts"]


def polar_parts(magnitude, phase, phase_scale: str, where: str, index: int) -> tuple:
    """``(magnitude, phase rad, True)`` of a stored magnitude/phase frame: the one place every reader (files,
    arrays, live DICOM frames) converts the phase and refuses a frame without any.

    Parameters
    ----------
    magnitude, phase : array, shape (z, y, x)
        As stored (phase in the vendor's encoding).
    phase_scale : str
        The encoding (:mod:`mrtherm.io.phase_scale`).
    where : str
        The phase frame's file, for the message.
    index : int
        The frame's number, for the message.

    Returns
    -------
    tuple

    Raises
    ------
    InputFileError
        The phase frame is all NaN.
    """
    xp = namespace(magnitude, phase)
    if not bool(xp.any(xp.isfinite(phase))):
        raise InputFileError(where, f"phase frame {index} is all NaN")
    return magnitude, phase_to_radians(phase, phase_scale), True


@dataclass
class Exam:
    """A thermometry exam opened for streaming.

    Use :func:`load_exam` to make one. Frames come from :meth:`frame` as complex64
    ``(z, y, x)`` arrays (NumPy for files; the array library of in-memory inputs).

    Attributes
    ----------
    shape : tuple ``(t, z, y, x)``
    affine : (4, 4) ndarray, voxel (i, j, k) = (x, y, z) to world RAS+ mm
    te_s, b0_t : float
        Echo time scaling the phase (TE2 - TE1 for a phase difference), field strength.
    frame_times_s : (t,) float64 ndarray, strictly increasing
    phase_scale : str, the vendor phase scaling applied (``None`` for real/imag input)
    provenance : dict describing the inputs and where each parameter came from
    warnings : list of str
    """

    components: dict
    shape: tuple
    affine: np.ndarray
    te_s: float
    b0_t: float
    frame_times_s: np.ndarray
    phase_scale: str | None
    provenance: dict
    warnings: list = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return self.shape[0]

    @property
    def shape_zyx(self) -> tuple:
        """Frame shape ``(z, y, x)``."""
        return self.shape[1:]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel, mL."""
        return voxel_volume_ml(self.affine)

    @property
    def input_paths(self) -> list[str]:
        """Every input file."""
        out = []
        for s in self.components.values():
            out.extend(s.paths)
        return out

    @property
    def in_memory_namespace(self):
        """Array namespace of in-memory inputs, None for files."""
        first = next(iter(self.components.values()))
        return namespace(first.array) if isinstance(first, ArraySeries) else None

    def frame_parts(self, t: int):
        """``(a, b, polar)`` of frame ``t``: (magnitude, phase rad, True) or (real, imag, False)."""
        c = self.components
        if "phase" in c:
            return polar_parts(c["magnitude"].read(t), c["phase"].read(t), self.phase_scale, c["phase"].path_of(t), t)
        return c["real"].read(t), c["imag"].read(t), False

    def frame(self, t: int):
        """Complex64 ``(z, y, x)`` signal of frame ``t`` (non-finite samples set to 0)."""
        a, b, polar = self.frame_parts(t)
        return signal_from_parts(a, b, polar, namespace(a, b))
