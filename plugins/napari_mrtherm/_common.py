"""Helpers shared by the widgets (thin: the logic is in ``_model``, ``_layers``, ``_text``, ``_view``)."""

from __future__ import annotations

import os

from . import _view


def add_layers(viewer, layer_tuples, bottom_kinds=("anatomy",)) -> list:
    """Add layer tuples without moving the slice or frame; anatomy goes below everything else."""
    added = []
    with _view.keep_position(viewer):
        for data, kwargs, kind in layer_tuples:
            layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
            if _view.meta(layer).get("kind") in bottom_kinds:
                viewer.layers.move(viewer.layers.index(layer), 0)
            added.append(layer)
    return added


def remove_layers(viewer, layers):
    """Remove layers without moving the slice or frame."""
    with _view.keep_position(viewer):
        for layer in list(layers):
            if layer in viewer.layers:
                viewer.layers.remove(layer)


def chosen_path(file_edit) -> str | None:
    """The path in a magicgui FileEdit, or None when empty (magicgui shows an empty path as '.')."""
    value = str(file_edit.value or "")
    return value if value and value != "." else None


def error_text(exc) -> str:
    """An inline error line: the message, never a traceback."""
    return f"error: {exc}"


def existing_file(path) -> bool:
    """True for an existing regular file."""
    return bool(path) and os.path.isfile(path)
