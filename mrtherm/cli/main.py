"""Command line: ``mrtherm phantom | demo | run`` (see DESIGN.md for the contract).

User mistakes (bad files, bad parameters) end with one line on stderr naming the
file or argument and the problem, and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

from mrtherm import __version__
from mrtherm.errors import MrthermError, ParameterError

EXIT_USER_ERROR = 2


def _float_list(text: str):
    try:
        return [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _frame_times(text: str):
    """Comma-separated times, or a text file with one time (s) per line or comma-separated."""
    if os.path.exists(text):
        try:
            with open(text, encoding="utf-8") as fh:
                return _float_list(fh.read().replace("\n", ","))
        except argparse.ArgumentTypeError:
            raise MrthermError(f"{text}: frame times file does not hold numbers") from None
    return _float_list(text)


def _check_out_dir(out: str, inputs):
    out_abs = os.path.abspath(out)
    if os.path.exists(out_abs) and not os.path.isdir(out_abs):
        raise MrthermError(f"{out}: output exists and is not a folder")
    for p in inputs:
        if p is None:
            continue
        if os.path.abspath(os.path.dirname(os.path.abspath(p))) == out_abs:
            raise MrthermError(f"{out}: output folder is the folder of input {p}; choose another --out "
                               "(outputs would overwrite or mix with inputs)")


# --------------------------------------------------------------------------- commands
def cmd_phantom(args):
    from mrtherm.phantom import make_phantom, write_phantom
    if args.frames < 2:
        raise ParameterError(f"--frames must be at least 2, got {args.frames}")
    ph = make_phantom(n_frames=args.frames, seed=args.seed)
    paths = write_phantom(args.out, ph, phase_format=args.phase_format)
    if args.dicom:
        from mrtherm.io.dicom.synth import write_dicom_exam
        paths["dicom"] = write_dicom_exam(os.path.join(args.out, "dicom"), ph.magnitude, ph.phase_rad, ph.affine,
                                          ph.te_s, ph.b0_t, ph.frame_times_s, vendor=args.dicom)
    print(f"phantom written to {os.path.dirname(paths['magnitude'])}")
    for k, v in paths.items():
        print(f"  {k:18s} {os.path.basename(v)}")
    return 0


def _run_pipeline(exam, out, params, labels, drift_roi, label_table, backend, progress, figures=True):
    from mrtherm.io import atomic
    from mrtherm.thermometry.pipeline import process
    stage = atomic.staging_dir(out)
    try:
        result = process(exam, params, labels=labels, drift_roi=drift_roi, label_table=label_table,
                         backend=backend, keep_temperature=False,
                         temperature_path=os.path.join(stage, "temperature.nii.gz"), progress=progress)
        result.write_into(stage, figures=figures)
    except BaseException:
        atomic.discard(stage)
        raise
    atomic.commit(stage, out)
    result.temperature_path = os.path.join(os.path.abspath(out), "temperature.nii.gz")
    return result


def _params_from_args(args):
    from mrtherm.thermometry.pipeline import ThermometryParams
    p = ThermometryParams()
    for name in ("baseline_frames", "alpha_ppm_per_c", "phase_sign", "body_temp_c", "drift_order", "snr_threshold",
                 "max_sd_theory_c"):
        v = getattr(args, name, None)
        if v is not None:
            setattr(p, name, v)
    if args.dose_levels is not None:
        p.dose_levels_cem43_min = tuple(args.dose_levels)
    return p


def cmd_run(args):
    from mrtherm.io.exam import load_exam
    if args.dicom:
        if args.magnitude or args.phase or args.real or args.imag:
            raise ParameterError("give --dicom or --magnitude/--phase (--real/--imag), not both")
        inputs = [os.path.join(args.dicom, "x")]  # the output folder may not be the DICOM folder
    elif args.real or args.imag:
        if args.magnitude or args.phase:
            raise ParameterError("give --magnitude/--phase or --real/--imag, not both")
        inputs = list(args.real or []) + list(args.imag or [])
    else:
        if not args.magnitude and not args.phase:
            raise ParameterError("--magnitude and/or --phase, --real and --imag, or --dicom are required")
        inputs = list(args.magnitude or []) + list(args.phase or [])
    if args.echo is not None and not args.dicom:
        raise ParameterError("--echo selects an echo of a DICOM series (--dicom); a NIfTI file holds one echo")
    inputs += [args.labels, args.drift_roi]
    _check_out_dir(args.out, inputs)
    one = lambda v: None if v is None else (v[0] if len(v) == 1 else v)  # noqa: E731
    exam = load_exam(magnitude=one(args.magnitude), phase=one(args.phase), real=one(args.real), imag=one(args.imag),
                     dicom=args.dicom, echo=args.echo,
                     te_s=None if args.te_ms is None else args.te_ms / 1000.0, b0_t=args.b0_t,
                     frame_time_s=args.frame_time_s, frame_times_s=args.frame_times_s, phase_scale=args.phase_scale)
    params = _params_from_args(args)
    result = _run_pipeline(exam, args.out, params, args.labels, args.drift_roi, args.label_table, args.backend,
                           progress=not args.quiet, figures=not args.no_figures)
    if not args.quiet:
        print(f"outputs written to {os.path.abspath(args.out)}")
        print(result.summary())
        for w in result.warnings:
            print(f"warning: {w}")
    return 0


def truth_comparison(result, truth_temperature_c, truth_dose) -> dict:
    """Errors of a run against the phantom's ground truth (reliable voxels only)."""
    import nibabel as nib
    temp = result.temperature_c
    if temp is None:
        temp = np.asarray(nib.load(result.temperature_path).dataobj, dtype=np.float32).transpose(3, 2, 1, 0)
    mask = result.host("mask").astype(bool)
    err = temp[:, mask] - truth_temperature_c[:, mask]
    rise = truth_temperature_c[:, mask] - result.params.body_temp_c
    heated = rise > 5.0
    vox_ml = result.report["exam"]["voxel_volume_ml"]
    out = {
        "rmse_c": float(np.sqrt(np.mean(err ** 2))),
        "bias_c": float(np.mean(err)),
        "rmse_heated_c": float(np.sqrt(np.mean(err[heated] ** 2))) if heated.any() else None,
        "predicted_sd_c_median": float(np.nanmedian(result.host("temperature_sd_theory_c")[mask])),
        "peak_c": float(np.nanmax(result.host("tmax_c"))),
        "truth_peak_reliable_c": float(truth_temperature_c[:, mask].max()),
        "lesion_240_ml": result.lesion_volumes_ml.get(240.0),
        "truth_lesion_240_ml": float(((truth_dose >= 240.0) & mask).sum() * vox_ml),
    }
    return out


def cmd_demo(args):
    import nibabel as nib
    from mrtherm.io.exam import load_exam
    from mrtherm.phantom import write_phantom
    from mrtherm.thermometry.pipeline import ThermometryParams
    out = os.path.abspath(args.out)
    print(f"mrtherm {__version__} demo -> {out}")
    print("1/2 writing the synthetic lumbar bone-ablation exam ...")
    paths = write_phantom(os.path.join(out, "exam"), phase_format="siemens")
    import json
    with open(paths["info"], encoding="utf-8") as fh:
        info = json.load(fh)
    print(f"    {info['shape_tzyx'][0]} frames of {info['shape_tzyx'][1:]} (z, y, x), TE {info['te_s']*1e3:g} ms, "
          f"B0 {info['b0_t']:g} T, SNR {info['snr_muscle']:g} (muscle), one wrap = {info['celsius_per_wrap']:.1f} C, "
          f"phase stored as Siemens int16 (slope 2, intercept -4096)")
    print("2/2 thermometry (baseline, temporal unwrap, drift, PRF, CEM43) ...")
    exam = load_exam(paths["magnitude"])  # phase partner, TE and B0 from the sidecars
    params = ThermometryParams(baseline_frames=info["baseline_frames"], dose_levels_cem43_min=(240.0,))
    result = _run_pipeline(exam, os.path.join(out, "run"), params, paths["labels"], None, None, args.backend,
                           progress=not args.quiet)
    truth_t = np.asarray(nib.load(paths["truth_temperature"]).dataobj, dtype=np.float32).transpose(3, 2, 1, 0)
    truth_d = np.asarray(nib.load(paths["truth_dose"]).dataobj, dtype=np.float64).transpose(2, 1, 0)
    cmp_ = truth_comparison(result, truth_t, truth_d)
    print()
    print("summary")
    print("-------")
    print(result.summary())
    print(f"phase scaling recognised: {exam.phase_scale}; drift reference: {result.report['drift']['mode']} "
          f"({result.report['drift']['voxels']} voxels), drift removed up to {result.report['drift']['max_abs_offset_c']:.1f} C")
    print()
    print("error against ground truth (reliable voxels, all frames)")
    print(f"  RMSE {cmp_['rmse_c']:.3f} C (noise-predicted sigma_T median {cmp_['predicted_sd_c_median']:.3f} C), "
          f"bias {cmp_['bias_c']:+.3f} C")
    if cmp_["rmse_heated_c"] is not None:
        print(f"  RMSE where heated > 5 C: {cmp_['rmse_heated_c']:.3f} C")
    print(f"  peak {cmp_['peak_c']:.1f} C vs truth {cmp_['truth_peak_reliable_c']:.1f} C")
    print(f"  lesion (240 CEM43) {cmp_['lesion_240_ml']:.3f} mL vs truth {cmp_['truth_lesion_240_ml']:.3f} mL "
          "(both in voxels where PRF works)")
    print()
    print("acoustic window of the planned sonication")
    from mrtherm.cli.window import window_summary, write_window_outputs
    from mrtherm.window.transducer import spherical_cap
    from mrtherm.window.check import check_window, load_labels
    sug = info["transducer_suggestion"]
    transducer = spherical_cap(sug["radius_mm"], sug["aperture_mm"], sug["n_elements"], sug["focus_world_mm"],
                               sug["axis"], sug["frequency_hz"], "phantom plan")
    transducer.save(os.path.join(out, "exam", "transducer.json"))
    scene = load_labels(paths["labels"])
    window = check_window(scene, transducer, sug["focus_world_mm"])
    wdir = os.path.join(out, "window")
    os.makedirs(wdir, exist_ok=True)
    write_window_outputs(wdir, window)
    print(window_summary(window))
    print(f"outputs: {os.path.join(out, 'run')}, {wdir}")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser():
    p = argparse.ArgumentParser(prog="mrtherm", description="MR thermometry for MRgFUS bone ablation")
    p.add_argument("--version", action="version", version=f"mrtherm {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    ph = sub.add_parser("phantom", help="write the synthetic bone-ablation exam with ground truth")
    ph.add_argument("--out", required=True, help="output folder")
    ph.add_argument("--phase-format", choices=("siemens", "radians", "ge-mrad"), default="siemens",
                    help="how phase is stored (default: dcm2niix Siemens int16)")
    ph.add_argument("--frames", type=int, default=40, help="number of frames (default 40)")
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--dicom", choices=("siemens", "siemens-enhanced", "ge", "philips", "philips-enhanced"),
                    help="also write the exam as DICOM in this vendor's convention, in OUT/dicom")
    ph.set_defaults(func=cmd_phantom)

    de = sub.add_parser("demo", help="phantom + thermometry run + summary against ground truth")
    de.add_argument("--out", default="mrtherm_demo", help="output folder (default ./mrtherm_demo)")
    de.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto")
    de.add_argument("--quiet", action="store_true")
    de.set_defaults(func=cmd_demo)

    r = sub.add_parser("run", help="temperature and dose maps from a magnitude/phase exam")
    r.add_argument("--magnitude", nargs="+", metavar="M.nii[.gz]", help="4-D file or a list of 3-D frames")
    r.add_argument("--phase", nargs="+", metavar="P.nii[.gz]")
    r.add_argument("--real", nargs="+", metavar="R.nii[.gz]")
    r.add_argument("--imag", nargs="+", metavar="I.nii[.gz]")
    r.add_argument("--dicom", metavar="DIR", help="folder of MR DICOM files (searched recursively)")
    r.add_argument("--echo", type=int, metavar="N", help="echo number of a multi-echo DICOM series")
    r.add_argument("--out", required=True, help="output folder (not an input folder)")
    r.add_argument("--te-ms", type=float, help="echo time in ms (default: sidecar EchoTime)")
    r.add_argument("--b0-t", type=float, help="field strength in T (default: sidecar MagneticFieldStrength)")
    r.add_argument("--alpha-ppm-per-c", type=float, help="PRF coefficient (default -0.01)")
    r.add_argument("--phase-sign", type=int, choices=(1, -1))
    r.add_argument("--phase-scale", choices=("auto", "radians", "siemens", "siemens-raw", "mrad", "ge-mrad"),
                   default="auto")
    r.add_argument("--body-temp-c", type=float)
    r.add_argument("--baseline-frames", type=int)
    r.add_argument("--frame-time-s", type=float, help="frame interval in s (default: NIfTI time step)")
    r.add_argument("--frame-times-s", type=_frame_times, metavar="T0,T1,...|FILE",
                   help="explicit frame times in s")
    r.add_argument("--drift-roi", metavar="MASK.nii.gz")
    r.add_argument("--drift-order", type=int, choices=(0, 1, 2))
    r.add_argument("--labels", metavar="LABELS.nii.gz")
    r.add_argument("--label-table", metavar="TABLE.json")
    r.add_argument("--dose-levels", type=_float_list, metavar="240,...", help="CEM43 levels for lesion masks")
    r.add_argument("--snr-threshold", type=float, help="mask voxels below this baseline SNR (default 5)")
    r.add_argument("--max-sd-theory-c", type=float,
                   help="mask voxels whose noise-predicted temperature SD exceeds this, C (default 2)")
    r.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto")
    r.add_argument("--no-figures", action="store_true")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_run)

    from mrtherm.cli.window import add_parsers
    add_parsers(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Library warnings (numerical edge cases, deprecations) never reach the terminal in Python's multi-line
    # format: mrtherm's own warnings go to report.json and the summary; anything else becomes one line.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = int(args.func(args) or 0)
        except MrthermError as exc:
            print(f"mrtherm: error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("mrtherm: interrupted", file=sys.stderr)
            return 130
    if not getattr(args, "quiet", False):
        for text in dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught):
            print(f"mrtherm: note: {text}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
