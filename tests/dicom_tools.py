"""Test helpers: run dcm2niix (an independent converter) and compare volumes in world coordinates."""

import glob
import gzip
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np

# Public real DICOM lives beside the checkout, never in the project (../shared/data/README.md)
DATA = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                                     "dcm_qa_dicom"))
DATA_MISSING = None if os.path.isdir(DATA) else f"real DICOM folder {DATA} is absent (../shared/data not beside the checkout)"


def dcm2niix_exe():
    exe = os.path.join(os.path.dirname(sys.executable), "dcm2niix")
    return exe if os.path.exists(exe) else shutil.which("dcm2niix")


def plain_copy(src, dst):
    """Copy a DICOM folder, decompressing ``.gz`` files (dcm2niix does not read gzip)."""
    for path in glob.glob(os.path.join(src, "**", "*"), recursive=True):
        if os.path.isdir(path):
            continue
        rel = os.path.relpath(path, src)
        out = os.path.join(dst, rel[:-3] if rel.endswith(".gz") else rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as fi, open(out, "wb") as fo:
                fo.write(fi.read())
        else:
            shutil.copyfile(path, out)
    return dst


def run_dcm2niix(src, out):
    """Convert ``src`` with dcm2niix into ``out`` as ``<series>_e<echo>[_ph].nii``; returns {name stem: path}."""
    os.makedirs(out, exist_ok=True)
    proc = subprocess.run([dcm2niix_exe(), "-o", str(out), "-f", "%s_e%e", "-z", "n", str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {os.path.basename(p)[:-4]: p for p in glob.glob(os.path.join(out, "*.nii"))}


def world_resample(ours_zyx, our_affine, nifti_path, t=None):
    """dcm2niix's voxel values at our voxel centres.

    Returns ``(values (z, y, x), max index residual, max corner distance mm)``: the
    residual is how far our voxel centres fall from their grid points (0 when the
    grids coincide), the distance compares world positions of our extreme corners.
    """
    img = nib.load(nifti_path)
    data = np.asarray(img.dataobj, dtype=np.float64)
    if data.ndim == 4:
        data = data[..., 0 if t is None else t]
    m = np.linalg.inv(img.affine) @ our_affine
    rot, off = np.round(m[:3, :3]), np.round(m[:3, 3])
    residual = max(float(np.abs(m[:3, :3] - rot).max()), float(np.abs(m[:3, 3] - off).max()))
    nz, ny, nx = ours_zyx.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()])
    theirs = (rot @ ijk + off[:, None]).astype(int)
    assert np.all(theirs >= 0) and all(np.all(theirs[a] < data.shape[a]) for a in range(3)), "grids do not overlap"
    vals = data[theirs[0], theirs[1], theirs[2]].reshape(ours_zyx.shape)
    corners = np.array([[0, 0, 0, 1], [nx - 1, ny - 1, nz - 1, 1]], dtype=float).T
    their_corners = img.affine @ np.vstack([rot @ corners[:3] + off[:, None], np.ones(2)])
    dist = float(np.abs(our_affine @ corners - their_corners).max())
    return vals, residual, dist
