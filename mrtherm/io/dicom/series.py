"""A DICOM component streamed frame by frame: ``(z, y, x)`` float32 values after the vendor rescale."""

from __future__ import annotations

import numpy as np

from mrtherm.errors import InputFileError
from mrtherm.text import count
from mrtherm.io.dicom.files import pydicom, read_dataset
from mrtherm.io.dicom.images import rescaled


class DicomSeries:
    """One component of a DICOM exam (same interface as the NIfTI sources).

    Values are ``stored * RescaleSlope + RescaleIntercept`` per image; Philips
    magnitude (and real/imaginary) images are divided by ``RescaleSlope *
    ScaleSlope`` (2005,100E) to give Philips' floating-point value, as dcm2niix
    does. Phase stays in its rescaled unit (see :mod:`mrtherm.io.phase_scale`).
    """

    def __init__(self, stack, affine, slope, inter):
        self.role = stack.role
        self.stack = stack
        self.n_frames = len(stack.frames)
        first = stack.frames[0][0]
        self.shape_zyx = (len(stack.frames[0]), first.rows, first.cols)
        self.affine = affine
        self.integer_on_disk = True
        self.slope, self.inter = slope, inter
        self.paths = sorted({im.path for im in stack.images})
        self._cached = (None, None)

    def path_of(self, t: int) -> str:
        """A file of frame ``t`` (for messages)."""
        return self.stack.frames[t][0].path

    def describe(self):
        """Series, frames and slices of this component, for report.json."""
        return f"DICOM {self.stack.series_text()}: {count(self.n_frames, 'frame')} x {count(self.shape_zyx[0], 'slice')}"

    def _dataset(self, path):
        cached = self._cached  # one read of the attribute: safe when viewers read frames from threads
        if cached[0] != path:
            cached = (path, read_dataset(path, header_only=False))
            self._cached = cached
        return cached[1]

    def _pixels(self, im) -> np.ndarray:
        try:
            if im.frame is None:
                arr = read_dataset(im.path, header_only=False).pixel_array
            else:
                arr = pydicom().pixels.pixel_array(self._dataset(im.path), index=im.frame)
        except InputFileError:
            raise
        except Exception as exc:
            raise InputFileError(im.where, f"pixel data not readable ({type(exc).__name__}: {exc})") from None
        if arr.shape != (im.rows, im.cols):
            raise InputFileError(im.where, f"pixel data shape {arr.shape}, expected ({im.rows}, {im.cols})")
        return arr

    def read(self, t: int) -> np.ndarray:
        """Frame ``t`` as ``(z, y, x)`` float32 rescaled values."""
        frame = self.stack.frames[t]
        out = np.empty(self.shape_zyx, dtype=np.float32)
        for z, im in enumerate(frame):
            out[z] = rescaled(im, self._pixels(im), self.role)
        return out
