"""Exceptions for user-facing input problems.

Every error a user can cause by passing a bad file or parameter derives from
:class:`MrthermError` (itself a ``ValueError``, as in nibabel), so the command
line can print one line and exit non-zero instead of a traceback.
"""

from __future__ import annotations

import os


class MrthermError(ValueError):
    """A problem with the user's input, reported as one line."""


class InputFileError(MrthermError):
    """A problem with one named input file.

    Parameters
    ----------
    path : str or os.PathLike
        The file at fault; its name starts the message.
    problem : str
        What is wrong with it.
    """

    def __init__(self, path, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ParameterError(MrthermError):
    """A bad parameter value; the message names the argument."""


class BackendUnavailableError(MrthermError):
    """The requested array backend (CuPy) cannot be used on this machine."""
