"""Helpers of the napari tests."""

import os

import numpy as np

PLUGIN = "mrtherm"  # npe2 requires the manifest name to equal the distribution name


def layer_named(viewer, name_start):
    return next(ly for ly in viewer.layers if ly.name.startswith(name_start))


def docs_dir(tmp_path):
    """Screenshots go to $MRTHERM_DOCS_DIR (``make docs``), else to the test's temporary folder."""
    return os.environ.get("MRTHERM_DOCS_DIR") or str(tmp_path)


def save_png(array, folder, name):
    from PIL import Image
    Image.fromarray(array).save(os.path.join(folder, name))


def colour_pixels(shot):
    """Masks of viridis-green dose, inferno temperature and grey anatomy pixels of a screenshot."""
    rgb = shot[..., :3].astype(int)
    colourful = rgb.max(axis=-1) - rgb.min(axis=-1) > 80
    dose = colourful & (rgb[..., 1] > rgb[..., 0] + 40) & (rgb[..., 1] > rgb[..., 2])
    heat = colourful & (rgb[..., 0] > rgb[..., 1] + 40)
    grey = (np.abs(rgb[..., 0] - rgb[..., 1]) < 8) & (np.abs(rgb[..., 1] - rgb[..., 2]) < 8) & (rgb[..., 0] > 40)
    return dose, heat, grey


def canvas_shot(viewer, size=(900, 800)):
    viewer.window.resize(*size)
    viewer.screenshot(canvas_only=False)  # renders the window once; canvas-only shots are black before
    return viewer.screenshot(canvas_only=True)
