"""A straightforward whole-array NumPy thermometry script: the benchmark's reference.

It does the same work as ``mrtherm run`` in the plainest way: load every frame,
complex baseline, temporal unwrap with ``np.unwrap``, order-1 weighted drift fit
per slice and frame, PRF, exact-ramp CEM43 vectorised over time, Tmax, and the
same NIfTI outputs (temperature, dose, Tmax, mask).

    python benchmarks/naive_numpy.py MAG.nii.gz PHASE.nii.gz OUTDIR TE_S B0_T N_BASELINE
"""

import math
import os
import sys

import nibabel as nib
import numpy as np


def main(mag_path, phase_path, out_dir, te_s, b0_t, n_base):
    mimg, pimg = nib.load(mag_path), nib.load(phase_path)
    mag = np.asarray(mimg.dataobj, dtype=np.float32).transpose(3, 2, 1, 0)
    phase = np.asarray(pimg.dataobj, dtype=np.float32).transpose(3, 2, 1, 0)
    if np.abs(phase).max() > 2 * np.pi:
        phase = phase * np.float32(np.pi / 4096)
    step = float(mimg.header.get_zooms()[3])
    nt, nz, ny, nx = mag.shape
    times = np.arange(nt) * step
    sig = (mag * np.exp(1j * phase)).astype(np.complex64)
    ref = sig[:n_base].mean(axis=0)
    dphi = np.angle(sig * np.conj(ref))
    unwrapped = np.unwrap(dphi, axis=0)
    base_mag = mag[:n_base].mean(axis=0)
    sigma = np.median(mag[:n_base].std(axis=0, ddof=1)[base_mag > np.percentile(base_mag, 50)])
    mask = base_mag / sigma >= 5.0
    y, x = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    a = np.stack([np.ones(ny * nx), x.ravel(), y.ravel()], axis=1)
    for t in range(nt):
        for z in range(nz):
            w = (np.abs(sig[t, z]) ** 2 * mask[z]).ravel()
            aw = a * w[:, None]
            c = np.linalg.solve(a.T @ aw, aw.T @ unwrapped[t, z].ravel())
            unwrapped[t, z] -= (a @ c).reshape(ny, nx)
    k = 2 * math.pi * 42.577478e6 * -0.01e-6 * b0_t * te_s
    temp = (37.0 + unwrapped / k).astype(np.float32)
    temp[:, ~mask] = np.nan
    t0 = temp[:-1].astype(np.float64)
    t1 = temp[1:].astype(np.float64)
    dt = (np.diff(times) / 60.0)[:, None, None, None]
    dose = np.zeros((nz, ny, nx))
    for lnr, lo in ((math.log(0.25), True), (math.log(0.5), False)):
        a0 = np.minimum(t0, 43.0) if lo else np.maximum(t0, 43.0)
        a1 = np.minimum(t1, 43.0) if lo else np.maximum(t1, 43.0)
        span = t1 - t0
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(span == 0, (t0 < 43.0) if lo else (t0 >= 43.0), (a1 - a0) / span)
            d = lnr * (a1 - a0)
            ratio = np.where(np.abs(d) < 1e-6, 1.0 - d / 2, -np.expm1(-d) / d)
        dose += (dt * frac * np.exp(lnr * (43.0 - a0)) * ratio).sum(axis=0)
    tmax = np.nanmax(temp, axis=0)
    os.makedirs(out_dir, exist_ok=True)
    aff = mimg.affine
    nib.save(nib.Nifti1Image(temp.transpose(3, 2, 1, 0), aff), os.path.join(out_dir, "temperature.nii.gz"))
    nib.save(nib.Nifti1Image(dose.astype(np.float32).T, aff), os.path.join(out_dir, "dose_cem43.nii.gz"))
    nib.save(nib.Nifti1Image(tmax.T, aff), os.path.join(out_dir, "tmax.nii.gz"))
    nib.save(nib.Nifti1Image(mask.astype(np.uint8).T, aff), os.path.join(out_dir, "mask.nii.gz"))


if __name__ == "__main__":
    m, p, o, te, b0, nb = sys.argv[1:7]
    main(m, p, o, float(te), float(b0), int(nb))
