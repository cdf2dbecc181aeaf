"""mrtherm: MR thermometry for MR-guided focused-ultrasound ablation of bone metastases.

The public API for notebooks:

- :func:`load_exam` reads a magnitude/phase (or real/imaginary) NIfTI exam lazily.
- :func:`process` turns an exam into temperature, CEM43 dose, masks and uncertainty,
  streaming frame by frame, and returns a :class:`ThermometryResult` (``.save(dir)``).
- :func:`cem43` computes CEM43 minutes by the exact integral for temperature linear
  between frames.
- :func:`make_phantom` builds the synthetic lumbar bone-ablation exam with ground truth.

Conventions (see README): arrays are ``(t, z, y, x)`` in memory, NIfTI affines are
carried unchanged, heating gives negative phase change for ``alpha_ppm_per_c < 0``.
"""

__version__ = "0.1.0"

from mrtherm.errors import MrthermError, InputFileError, ParameterError, BackendUnavailableError
from mrtherm.thermometry.dose import cem43
from mrtherm.io.exam import Exam, load_exam
from mrtherm.thermometry.pipeline import process, ThermometryParams
from mrtherm.thermometry.result import ThermometryResult
from mrtherm.thermometry.thermometer import Thermometer
from mrtherm.phantom import make_phantom, write_phantom
from mrtherm.window.transducer import Transducer, load_transducer, spherical_cap
from mrtherm.window import Scene, WindowConfig, check_window, feasibility_map, load_labels

__all__ = [
    "__version__",
    "MrthermError",
    "InputFileError",
    "ParameterError",
    "BackendUnavailableError",
    "cem43",
    "Exam",
    "load_exam",
    "process",
    "ThermometryParams",
    "ThermometryResult",
    "Thermometer",
    "make_phantom",
    "write_phantom",
    "Transducer",
    "load_transducer",
    "spherical_cap",
    "Scene",
    "WindowConfig",
    "check_window",
    "feasibility_map",
    "load_labels",
]
