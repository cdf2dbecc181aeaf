"""The names a user picks from, defined once (no imports: the command line's parser reads them at start-up).

The modules that act on them (:mod:`mrtherm.backend`, :mod:`mrtherm.io.phase_scale`,
:mod:`mrtherm.thermometry.params`) and the option table (:mod:`mrtherm.app.options`) import these tuples.
"""

BACKENDS = ("auto", "numpy", "cupy")
"""Array backends: ``auto`` takes CuPy when a GPU is usable."""

PHASE_SCALES = ("auto", "radians", "siemens", "siemens-raw", "mrad", "ge-mrad")
"""Vendor phase encodings (:mod:`mrtherm.io.phase_scale`)."""

REFERENCES = ("auto", "mean", "library", "referenceless", "hybrid")
"""Phase-reference modes (:mod:`mrtherm.thermometry.reference`)."""
