"""``mrtherm view``: open a run folder (or report.json, a map, a DICOM folder) in napari, operator docks included.

napari itself asks which plugin should read a folder whenever two installed readers accept folders
(its builtins always do); this command names the mrtherm reader, so the view opens in one step.
"""

from __future__ import annotations

import os

from mrtherm.errors import MrthermError

DOCKS = ("dose", "curve", "thermometry", "window")


def cmd_view(args):
    """Open the path in a napari window and run the Qt event loop; returns the exit status."""
    if not os.path.exists(args.path):
        raise MrthermError(f"{args.path}: no such file or folder")
    try:
        import napari
        from napari_mrtherm import _app
    except ImportError:
        raise MrthermError("the napari viewer is not installed: pip install 'mrtherm[napari]'") from None
    _app.open_view(args.path, docks=() if args.no_docks else DOCKS, neurological=args.neurological)
    napari.run()
    return 0


def add_parser(sub):
    """Add the ``view`` command to the sub-parsers ``sub``."""
    vi = sub.add_parser("view", help="open a run folder in napari with the operator docks")
    vi.add_argument("path", help="run folder, its report.json, an mrtherm map, a window folder or a DICOM folder")
    vi.add_argument("--no-docks", action="store_true", help="only the layers, no dock widgets")
    vi.add_argument("--neurological", action="store_true",
                    help="patient's right on the screen's right (default: radiological)")
    vi.set_defaults(func=cmd_view)
