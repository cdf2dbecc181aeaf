"""The ``mrtherm.gpu`` entry point: what the core may use from this package (see ``mrtherm.backend.GpuPlugin``)."""

from .raymarch import active_fractions, trace_pairs
from .thermometry import FusedEngine as engine_class

__all__ = ["engine_class", "trace_pairs", "active_fractions"]
