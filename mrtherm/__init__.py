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

# Public names resolve on first use (PEP 562): ``mrtherm --help`` and the command line's argument checks start
# without NumPy, SciPy or nibabel; ``import mrtherm`` stays cheap until a name is touched.
_PUBLIC = {
    "MrthermError": "mrtherm.errors", "InputFileError": "mrtherm.errors", "ParameterError": "mrtherm.errors",
    "BackendUnavailableError": "mrtherm.errors",
    "cem43": "mrtherm.thermometry.dose",
    "Exam": "mrtherm.io.exam", "load_exam": "mrtherm.io.exam",
    "process": "mrtherm.app.process", "ThermometryParams": "mrtherm.thermometry.params",
    "process_water_fat": "mrtherm.app.waterfat_run", "WaterFatThermometer": "mrtherm.thermometry.waterfat",
    "ThermometryResult": "mrtherm.thermometry.result",
    "Thermometer": "mrtherm.thermometry.thermometer",
    "make_phantom": "mrtherm.phantom", "write_phantom": "mrtherm.phantom",
    "Transducer": "mrtherm.window.transducer", "load_transducer": "mrtherm.window.transducer",
    "spherical_cap": "mrtherm.window.transducer",
    "Scene": "mrtherm.window", "WindowConfig": "mrtherm.window", "check_window": "mrtherm.window",
    "feasibility_map": "mrtherm.window", "load_labels": "mrtherm.window",
}
_SUBPACKAGES = ("cli", "cryo", "evaluation", "export", "io", "live", "probes", "thermometry", "window", "backend",
                "errors",
                "geometry", "phantom", "demo", "text")


def __getattr__(name):
    import importlib  # noqa: PLC0415
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"mrtherm.{name}")
    raise AttributeError(f"module 'mrtherm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


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
    "process_water_fat",
    "WaterFatThermometer",
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
