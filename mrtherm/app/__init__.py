"""The application layer: one frame loop and one treatment driver under every mode.

Dependencies run one way: :mod:`mrtherm.io` (reading and writing files) -> :mod:`mrtherm.thermometry` (the
physics) -> :mod:`mrtherm.app` (runs: frame sources, the frame loop, treatments, summaries, writers) ->
:mod:`mrtherm.live`, :mod:`mrtherm.cohort`, :mod:`mrtherm.cli` and the napari plugin. ``tests/test_imports.py``
fails on an edge against that order and on any import cycle.

- :mod:`mrtherm.app.sonication`: :class:`SonicationRun`, the frame loop (baseline, Thermometer, respiration, cryo).
- :mod:`mrtherm.app.process`: an exam through the loop (:func:`process`, :func:`process_to_folder`).
- :mod:`mrtherm.app.treatment`: several sonications summed on a treatment grid (``run --dicom`` and ``live``).
- :mod:`mrtherm.app.summary`: the typed :class:`RunSummary` every mode returns.
"""
