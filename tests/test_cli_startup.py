"""Start-up stays light: the command line's parser and ``import mrtherm`` load no NumPy, SciPy or nibabel."""

import subprocess
import sys

PROBE = """
import sys
import mrtherm
from mrtherm.cli.main import build_parser
build_parser()
heavy = sorted(m for m in ("numpy", "scipy", "nibabel", "pydicom", "matplotlib") if m in sys.modules)
print(",".join(heavy))
"""


def test_parser_and_import_load_no_heavy_library():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported at start-up: {out}"


def test_public_names_resolve_lazily_and_completely():
    import mrtherm
    for name in mrtherm.__all__:
        assert getattr(mrtherm, name) is not None, name
    assert "process" in dir(mrtherm)
    assert mrtherm.thermometry.prf.radians_per_celsius(0.01, 3.0) < 0  # sub-packages by attribute, as before


def test_phantom_vendor_list_matches_the_dicom_writer():
    from mrtherm.cli.phantom import VENDORS
    from mrtherm.io.dicom.synth import VENDORS as SYNTH
    assert tuple(VENDORS) == tuple(SYNTH)
