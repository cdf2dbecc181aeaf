"""The operator window: a viewer with an mrtherm path open and the dock widgets placed to fit 1920x1080."""

from __future__ import annotations

import os

from . import _view
from ._reader import get_reader

# dock name -> (module, class, area); the set-up widgets share the left area as tabs, the ones used during a
# treatment stay visible on the right
DOCK_WIDGETS = {
    "dose": ("._dose_widget", "DoseOverlayWidget", "right", "Dose overlay"),
    "curve": ("._curve_widget", "TemperatureCurveWidget", "right", "Temperature curve"),
    "thermometry": ("._thermometry_widget", "ThermometryWidget", "left", "Thermometry"),
    "window": ("._window_widget", "AcousticWindowWidget", "left", "Acoustic window"),
}


def open_view(path, docks=(), *, neurological=False, show=True):
    """A napari viewer showing ``path`` through the mrtherm reader, with the named docks.

    Raises
    ------
    MrthermError
        ``path`` is not something mrtherm reads.
    """
    import napari

    from mrtherm.errors import MrthermError
    if get_reader(os.fspath(path)) is None:
        raise MrthermError(f"{path}: not an mrtherm run folder, report.json, map, window check or DICOM folder")
    viewer = napari.Viewer(show=show, title=f"mrtherm - {os.path.abspath(path)}")
    viewer.open(os.fspath(path), plugin="mrtherm")
    if neurological:
        _view.set_orientation(viewer, _view.NEUROLOGICAL)
    add_docks(viewer, docks)
    return viewer


def run_view(path, *, docks: bool = True, neurological: bool = False) -> int:
    """``mrtherm view``: open ``path`` with every dock (or none) and run the Qt event loop; returns 0.

    Found by the core under the ``mrtherm.viewer`` entry-point group, so the core never imports this package.

    Parameters
    ----------
    path : str or PathLike
        Run folder, report.json, an mrtherm map, a window-check folder or a DICOM folder.
    docks : bool
        Add the four operator docks (:data:`DOCK_WIDGETS`).
    neurological : bool
        Patient's right on the screen's right (default radiological).

    Raises
    ------
    MrthermError
        ``path`` is not something mrtherm reads.
    """
    import napari

    open_view(path, docks=tuple(DOCK_WIDGETS) if docks else (), neurological=neurological)
    napari.run()
    return 0


def add_docks(viewer, names) -> dict:
    """Add dock widgets by name (see :data:`DOCK_WIDGETS`); returns {name: widget}."""
    import importlib
    added, left = {}, []
    for name in names:
        module, cls, area, title = DOCK_WIDGETS[name]
        widget = getattr(importlib.import_module(module, __package__), cls)(viewer)
        viewer.window.add_dock_widget(widget, name=title, area=area, tabify=area == "left" and bool(left))
        if area == "left":
            left.append(widget)
        added[name] = widget
    return added
