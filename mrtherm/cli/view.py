"""``mrtherm view``: open a run folder (or report.json, a map, a DICOM folder) in napari, operator docks included.

napari itself asks which plugin should read a folder whenever two installed readers accept folders
(its builtins always do); this command names the mrtherm reader, so the view opens in one step.

The core does not import the napari plugin: the viewer is found under the entry-point group
:data:`VIEWER_GROUP` (``napari_mrtherm`` registers ``napari``), as GPU engines are under ``mrtherm.gpu``.
"""

from __future__ import annotations

import os

from mrtherm.errors import MrthermError

VIEWER_GROUP = "mrtherm.viewer"
"""Entry-point group of viewers: a callable ``run_view(path, *, docks: bool, neurological: bool) -> int``."""


def find_viewer():
    """The installed viewer.

    Returns
    -------
    callable or None
        ``run_view``; None when no viewer (or its GUI toolkit) is installed.
    """
    from mrtherm.backend import first_entry_point  # NumPy and array-api-compat: not for `--help`
    return first_entry_point(VIEWER_GROUP)


def cmd_view(args):
    """Open the path in a napari window and run the Qt event loop; returns the exit status."""
    if not os.path.exists(args.path):
        raise MrthermError(f"{args.path}: no such file or folder")
    run_view = find_viewer()
    if run_view is None:
        raise MrthermError("the napari viewer is not installed: pip install 'mrtherm[napari]'")
    return run_view(args.path, docks=not args.no_docks, neurological=args.neurological)


def add_parser(sub):
    """Add the ``view`` command to the sub-parsers ``sub``."""
    vi = sub.add_parser("view", help="open a run folder in napari with the operator docks")
    vi.add_argument("path", help="run folder, its report.json, an mrtherm map, a window folder or a DICOM folder")
    vi.add_argument("--no-docks", action="store_true", help="only the layers, no dock widgets")
    vi.add_argument("--neurological", action="store_true",
                    help="patient's right on the screen's right (default: radiological)")
    vi.set_defaults(func=cmd_view)
