"""Documentation contracts: numpydoc sections on the main API, and every docstring example runs as written."""

import doctest
import importlib
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import docstring_check  # noqa: E402

EXAMPLE_MODULES = ["mrtherm.geometry", "mrtherm.thermometry.dose", "mrtherm.thermometry.drift",
                   "mrtherm.thermometry.prf", "mrtherm.thermometry.thermometer", "mrtherm.thermometry.watch",
                   "mrtherm.window.acoustics", "mrtherm.window.trace", "mrtherm.app.treatment",
                   "mrtherm.io.dicom.sonications", "mrtherm.thermometry.reference", "mrtherm.thermometry.background",
                   "mrtherm.thermometry.motion", "mrtherm.probes.analysis", "mrtherm.evaluation.metrics",
                   "mrtherm.cryo.model"]


def test_public_functions_have_their_docstring_sections(capsys):
    assert docstring_check.main() == 0, capsys.readouterr().out


@pytest.mark.parametrize("name", EXAMPLE_MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
