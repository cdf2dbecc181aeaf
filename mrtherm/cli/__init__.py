"""The ``mrtherm`` command line (one module per command; see DESIGN.md for the contract)."""

from mrtherm.cli.main import main

__all__ = ["main"]
