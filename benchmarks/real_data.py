"""Figures on the public real DICOM sets (../shared/data/dcm_qa_dicom): roles, scaling, dcm2niix agreement, unheated pair.

    python benchmarks/real_data.py [--out benchmarks/results]

Prints a table and writes ``real_data.json`` / ``real_data.txt`` to ``--out`` when given.
dcm2niix (PyPI) is the independent reference for geometry and values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile

import nibabel as nib
import numpy as np

import mrtherm
from mrtherm.errors import MrthermError

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from dicom_tools import plain_copy, run_dcm2niix  # noqa: E402  (the tests' dcm2niix runner)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "dcm_qa_dicom")
SETS = [("siemens_fmap", None, [("2_e2", "3_e2_ph"), ("5_e2", "4_e2_ph")]),
        ("siemens_xa30_fmap", None, [("8_e2", "9_e2_ph")]),
        ("philips_fmap_classic", 2, [("2001_e2", "2001_e2_ph")]),
        ("philips_fmap_enhanced", 1, [("2001_e1", "2001_e1_ph")]),
        ("ge_b0map", None, [])]


def dcm2niix(src, work):
    return run_dcm2niix(plain_copy(src, os.path.join(work, "dicom")), os.path.join(work, "nifti"))


def agreement(ours, affine, path, t):
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float64)
    data = data[..., t] if data.ndim == 4 else data
    m = np.linalg.inv(img.affine) @ affine
    rot, off = np.round(m[:3, :3]), np.round(m[:3, 3])
    nz, ny, nx = ours.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    idx = (rot @ np.stack([i.ravel(), j.ravel(), k.ravel()]) + off[:, None]).astype(int)
    theirs = data[idx[0], idx[1], idx[2]].reshape(ours.shape)
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    mm = float(np.abs(affine @ ijk - img.affine @ np.vstack([idx, np.ones(i.size)])).max())
    return theirs, mm


def one_set(name, echo, pairs):
    folder = os.path.join(DATA, name)
    row = {"set": name}
    try:
        exam = mrtherm.load_exam(dicom=folder, echo=echo)
    except MrthermError as exc:
        row["refused"] = str(exc).split(": ", 1)[1]
        return row
    row.update(shape_tzyx=list(exam.shape), roles=exam.provenance["roles"], phase_scale=exam.phase_scale,
               phase_scale_source=exam.provenance["phase_scale_source"], te_ms=exam.te_s * 1e3, b0_t=exam.b0_t,
               te_source=exam.provenance["te_source"], frame_times_s=[float(v) for v in exam.frame_times_s])
    with tempfile.TemporaryDirectory() as work:
        files = dcm2niix(folder, work)
        worst = {"position_mm": 0.0, "magnitude_rel": 0.0, "phase_rad": 0.0}
        for t, (mname, pname) in enumerate(pairs):
            mag = exam.components["magnitude"].read(t)
            theirs, mm = agreement(mag, exam.affine, files[mname], t if len(pairs) == 1 else None)
            worst["position_mm"] = max(worst["position_mm"], mm)
            worst["magnitude_rel"] = max(worst["magnitude_rel"], float(np.abs(mag - theirs).max() / np.abs(theirs).max()))
            ph = exam.components["phase"].read(t).astype(np.float64)
            theirs, mm = agreement(ph, exam.affine, files[pname], t if len(pairs) == 1 else None)
            ours_rad = mrtherm.io.phase_scale.phase_to_radians(ph, exam.phase_scale)
            theirs_rad = theirs * np.pi / 4096 if exam.phase_scale == "siemens" else theirs
            worst["phase_rad"] = max(worst["phase_rad"], float(np.abs(np.angle(np.exp(1j * (ours_rad - theirs_rad)))).max()))
        row["dcm2niix_max_difference"] = worst
    if exam.n_frames >= 2:
        result = mrtherm.process(exam, baseline_frames=1)
        m = result.mask
        t = result.temperature_c[-1][m]
        row["unheated"] = {"reliable_voxels": int(m.sum()), "median_c": float(np.median(t)), "sd_c": float(np.std(t)),
                           "robust_sd_c": float(1.4826 * np.median(np.abs(t - np.median(t)))),
                           "median_sd_theory_c": result.report["noise"]["median_sd_theory_c"],
                           "peak_c": result.report["results"]["peak_temperature_c"],
                           "lesion_240_ml": result.lesion_volumes_ml[240.0],
                           "noise": result.report["noise"]["method"]}
    else:
        from mrtherm.thermometry.noise import estimate_noise_sigma
        sigma, method, _w = estimate_noise_sigma(exam.components["magnitude"].read(0)[None])
        row["one_acquisition"] = {"noise_sigma": sigma, "noise_method": method}
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = [one_set(*s) for s in SETS]
    lines = [f"mrtherm {mrtherm.__version__} on {platform.node()} ({platform.machine()}), real DICOM in ../shared/data/dcm_qa_dicom"]
    for r in rows:
        lines.append(f"\n{r['set']}")
        if "refused" in r:
            lines.append(f"  refused: {r['refused']}")
            continue
        lines.append(f"  shape (t,z,y,x) {r['shape_tzyx']}, roles {r['roles']}")
        lines.append(f"  phase scale {r['phase_scale']} ({r['phase_scale_source']}); TE {r['te_ms']:.4g} ms "
                     f"({r['te_source']}); B0 {r['b0_t']:g} T; frame times {np.round(r['frame_times_s'], 2).tolist()} s")
        d = r["dcm2niix_max_difference"]
        lines.append(f"  vs dcm2niix: voxel centres within {d['position_mm']:.2e} mm, magnitude rel diff "
                     f"{d['magnitude_rel']:.1e}, phase {d['phase_rad'] * 1e3:.3f} mrad")
        if "unheated" in r:
            u = r["unheated"]
            lines.append(f"  unheated 2nd frame: median {u['median_c']:.2f} C, SD {u['sd_c']:.2f} C, robust SD "
                         f"{u['robust_sd_c']:.2f} C (noise-predicted {u['median_sd_theory_c']:.2f} C), peak "
                         f"{u['peak_c']:.1f} C, lesion(240) {u['lesion_240_ml']:.3f} mL, {u['reliable_voxels']} voxels")
        else:
            o = r["one_acquisition"]
            lines.append(f"  one acquisition (no temperature change to measure): noise sigma {o['noise_sigma']:.4g} "
                         f"({o['noise_method']})")
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "real_data.txt"), "w") as fh:
            fh.write(text + "\n")
        with open(os.path.join(args.out, "real_data.json"), "w") as fh:
            json.dump(rows, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
