"""The engine protocol: what :class:`mrtherm.Thermometer` and its frame reference ask of a per-frame engine.

:class:`mrtherm.thermometry.engine.ArrayEngine` (any array library) and the fused CUDA engine of ``mrtherm_gpu``
implement it; callers use nothing else (``tests/test_engine_protocol.py``). :class:`EngineConfig` is what an engine
is built with besides the array namespace and the drift model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Engine", "EngineConfig", "protocol_members"]


@dataclass
class EngineConfig:
    """What an engine needs besides the array namespace and the drift model.

    Attributes
    ----------
    mask, ref : (z, y, x) bool NumPy arrays: reliable voxels; drift-reference candidates
    s_ref : (z, y, x) complex64 array (any library): the complex baseline reference
    auto : bool, automatic reference (the per-frame changed and outlier exclusions apply)
    outlier_rad : float, outlier cut of the automatic reference, rad
    to_celsius : float, C per rad (``phase_sign / (2 pi gammabar alpha B0 TE)``)
    body_temp_c : float; heated_c : float, change (either sign) that excludes a voxel from the reference for good
    valid_floor : float, magnitude below which a voxel is not measured in a frame (SNR threshold x sigma)
    valid_fraction : float, fraction of ``|S_ref|`` below which a voxel is not measured in a frame
    """

    mask: np.ndarray
    ref: np.ndarray
    s_ref: Any
    auto: bool
    outlier_rad: float
    to_celsius: float
    body_temp_c: float
    heated_c: float
    valid_floor: float = 0.0
    valid_fraction: float = 0.0


@runtime_checkable
class Engine(Protocol):
    """Per-frame thermometry work: every member :class:`mrtherm.Thermometer` and
    :class:`mrtherm.thermometry.frame_reference.FrameReference` use, on any device.

    Callers use nothing else (``tests/test_engine_protocol.py`` runs them on a proxy that exposes only these
    members). Arrays returned live on the engine's device (its array library); shapes are the frame's
    ``(z, y, x)``. A CUDA engine may return views of its own buffers: read them before the next :meth:`pass1`
    or :meth:`pass2`, or copy them.

    Per frame the order is: :meth:`set_reference` (optional), :meth:`pass1`, then any of :meth:`fit_inputs`,
    :meth:`fallback_stats`, :meth:`drift_candidates`, :meth:`changed_flags`, then :meth:`pass2`.

    Attributes
    ----------
    name : str
        The engine's name, recorded with a saved state (a state resumes on the same kind of engine).
    """

    name: str

    def to_device(self, a, b) -> tuple:
        """The two frame components on the engine's device.

        Parameters
        ----------
        a, b : array, shape (z, y, x)
            (magnitude, phase rad) or (real, imag), any array library.

        Returns
        -------
        tuple of array
            The same two arrays on the engine's device (uploads may be asynchronous on CUDA engines).
        """

    def set_reference(self, s_ref) -> None:
        """Use ``s_ref`` as the complex reference from the next frame on.

        Parameters
        ----------
        s_ref : complex array, shape (z, y, x)
            Any array library; stored as complex64 on the engine's device. Its magnitude is the voxel's reference
            signal for the per-frame validity rule.
        """

    def pass1(self, a, b, polar: bool) -> tuple:
        """Phase change, validity, temporal unwrapping and the drift fit's per-slice normal equations.

        Parameters
        ----------
        a, b : array, shape (z, y, x)
            One frame: (magnitude, phase rad) when ``polar``, else (real, imag); float32 on CUDA engines.
        polar : bool

        Returns
        -------
        tuple of ndarray
            ``(packed, rhs, count)`` float64 on the host, shapes (z, n_pairs), (z, k), (z,): see
            :meth:`mrtherm.thermometry.drift.DriftModel.normal_equations` (``count``: voxels in the fit).
        """

    def fallback_stats(self) -> tuple:
        """The last :meth:`pass1`'s normal equations without the automatic reference's outlier exclusion.

        Returns
        -------
        tuple of ndarray
            ``(packed, rhs, count)`` on the host, as :meth:`pass1`.
        """

    def fit_inputs(self) -> tuple:
        """The last :meth:`pass1`'s unwrapped phase change and its drift-fit weights (no outlier exclusion).

        Returns
        -------
        u : array of float32, shape (z, y, x)
            Unwrapped (and re-anchored) phase change against the reference, rad.
        weight : array of float64, shape (z, y, x)
            ``|S_t|^2`` (signal units squared) on drift-reference voxels tracked since the previous frame (valid,
            in the first frame), changed voxels left out in automatic mode; 0 elsewhere.
        """

    def drift_candidates(self):
        """The drift-reference region the engine was built with.

        Returns
        -------
        bool array, shape (z, y, x)
            True on drift-reference candidates (``EngineConfig.ref``).
        """

    def changed_flags(self):
        """Voxels whose temperature has changed, either sign, by more than ``EngineConfig.heated_c`` in a valid frame
        so far (kept out of the automatic drift reference and of the referenceless fits for good).

        Returns
        -------
        bool array, shape (z, y, x)
        """

    def pass2(self, coeffs: np.ndarray, dt_min: float | None, is_baseline: bool) -> Any:
        """Drift subtraction, PRF, mask, dose, Tmax, baseline sums, changed flags; returns the frame's temperature.

        Parameters
        ----------
        coeffs : ndarray of float64, shape (z, k)
            Drift coefficients per slice, rad.
        dt_min : float or None
            Minutes since the previous frame; None for the first frame (no dose yet).
        is_baseline : bool
            Add this frame to the baseline-noise sums.

        Returns
        -------
        array of float32, shape (z, y, x)
            Temperature, C, NaN where the voxel is not valid in this frame (outside the mask, or its signal gone).
        """

    def frame_validity(self) -> tuple:
        """The last frame's validity on the device.

        Returns
        -------
        valid, reanchored : bool arrays, shape (z, y, x)
            Measured in the last frame; re-anchored in it (valid again after a gap, or for the first time).
        """

    def dose_cem43_min(self):
        """Thermal dose accumulated so far.

        Returns
        -------
        array of float64, shape (z, y, x)
            CEM43 minutes over the segments between two frames in which the voxel was valid; 0 elsewhere.
        """

    def tmax_c(self):
        """Maximum temperature so far over the frames in which the voxel was valid.

        Returns
        -------
        array of float32, shape (z, y, x), or None
            C, NaN where never valid; None before the first :meth:`pass2`.
        """

    def measured_frames(self):
        """Frames in which each voxel was valid.

        Returns
        -------
        array of int32, shape (z, y, x)
        """

    def baseline_stats(self) -> tuple:
        """Sums over the baseline frames (``is_baseline`` in :meth:`pass2`) in which the voxel was valid.

        Returns
        -------
        total : array of float64, shape (z, y, x)
            Sum of the temperature change, C.
        total_sq : array of float64, shape (z, y, x)
            Sum of its square, C^2.
        count : array of int32, shape (z, y, x)
            Baseline frames summed.
        """

    def state(self) -> dict:
        """Everything that carries over between frames, as host arrays.

        Returns
        -------
        dict of str to ndarray
        """

    def restore(self, state: dict) -> None:
        """Continue from :meth:`state`.

        Parameters
        ----------
        state : dict of str to ndarray
            What :meth:`state` returned (possibly after a round trip through a file).
        """

    def enable_timing(self) -> None:
        """Time the kernels (CUDA engines)."""

    def kernel_seconds(self) -> dict:
        """Kernel time per pass.

        Returns
        -------
        dict of str to float
            s per pass, summed over frames (empty without CUDA timing).
        """


def protocol_members(protocol=None) -> tuple:
    """The names a protocol class declares (methods and annotated attributes), sorted.

    Parameters
    ----------
    protocol : type, optional
        A ``typing.Protocol`` class; default :class:`Engine`.

    Returns
    -------
    tuple of str

    Examples
    --------
    >>> "pass1" in protocol_members() and "name" in protocol_members()
    True
    """
    protocol = Engine if protocol is None else protocol
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {k for k, v in vars(protocol).items() if callable(v) and not k.startswith("_")}
    return tuple(sorted(names))
