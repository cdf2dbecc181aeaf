"""napari-mrtherm: temperature, thermal dose and acoustic-window overlays for MRgFUS operators.

Installed with ``pip install "mrtherm[napari]"``. The npe2 manifest is
``napari.yaml``; model code (no Qt) is in ``_model``, the reader in ``_reader``,
sample data in ``_sample`` and the thin Qt/magicgui widgets in ``_widgets``.
"""

from mrtherm import __version__

__all__ = ["__version__"]
