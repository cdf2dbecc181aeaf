"""``mrtherm run``: temperature and dose maps of one exam (NIfTI magnitude/phase, real/imaginary, or DICOM)."""

from __future__ import annotations

import os
import sys

from mrtherm.cli.common import BACKENDS, check_out_dir, float_list, frame_times, target_point
from mrtherm.errors import ParameterError

PARAM_FLAGS = ("baseline_frames", "alpha_ppm_per_c", "phase_sign", "body_temp_c", "drift_order", "snr_threshold",
               "max_sd_theory_c", "reference", "register_motion", "referenceless_order",
               "referenceless_basis", "min_signal_fraction", "target_margin_mm")


def params_from_args(args):
    """ThermometryParams with the fields the command line set."""
    from mrtherm.thermometry.params import ThermometryParams
    p = ThermometryParams()
    for name in PARAM_FLAGS:
        v = getattr(args, name, None)
        if v is not None:
            setattr(p, name, v)
    if getattr(args, "dose_levels", None) is not None:
        p.dose_levels_cem43_min = tuple(args.dose_levels)
    if getattr(args, "target", None) is not None:
        p.target_mm = args.target
    return p


def _input_paths(args):
    """The input files (for the output-folder check); refuses mixed input kinds."""
    if args.dicom:
        if args.magnitude or args.phase or args.real or args.imag:
            raise ParameterError("give --dicom or --magnitude/--phase (--real/--imag), not both")
        return [os.path.join(args.dicom, "x")]  # the output folder may not be the DICOM folder
    if args.echo is not None:
        raise ParameterError("--echo selects an echo of a DICOM series (--dicom); a NIfTI file holds one echo")
    if args.real or args.imag:
        if args.magnitude or args.phase:
            raise ParameterError("give --magnitude/--phase or --real/--imag, not both")
        return list(args.real or []) + list(args.imag or [])
    if not args.magnitude and not args.phase:
        raise ParameterError("--magnitude and/or --phase, --real and --imag, or --dicom are required")
    return list(args.magnitude or []) + list(args.phase or [])


def exam_from_args(args):
    """The exam named by the input flags (shared with ``mrtherm live``)."""
    from mrtherm.io.exam import load_exam
    one = lambda v: None if v is None else (v[0] if len(v) == 1 else v)  # noqa: E731
    return load_exam(magnitude=one(args.magnitude), phase=one(args.phase), real=one(args.real), imag=one(args.imag),
                     dicom=args.dicom, echo=args.echo, te_s=None if args.te_ms is None else args.te_ms / 1000.0,
                     b0_t=args.b0_t, frame_time_s=args.frame_time_s, frame_times_s=args.frame_times_s,
                     phase_scale=args.phase_scale)


def cmd_run(args):
    """Process one exam into ``--out`` and print the summary; returns the exit status."""
    from mrtherm.thermometry.pipeline import process_to_folder
    check_out_dir(args.out, _input_paths(args) + [args.labels, args.drift_roi, args.respiration, args.probes,
                                                  args.probe_positions])
    probes = probes_from_args(args)
    if args.dicom:
        exams = _dicom_sonications(args)
        if len(exams) > 1:
            if args.respiration or probes:
                raise ParameterError("--respiration and --probes apply to one series; this DICOM folder holds "
                                     f"{len(exams)} sonications")
            return _run_treatment(args, exams)
        exam = exams[0]
    else:
        if args.treatment_grid:
            raise ParameterError("--treatment-grid needs a DICOM treatment of several sonications (--dicom)")
        exam = exam_from_args(args)
    cryo = cryo_from_args(args)
    respiration = None
    if args.respiration:
        from mrtherm.io.respiration import read_respiration
        respiration = read_respiration(args.respiration, exam.frame_times_s)
    result = process_to_folder(exam, args.out, params_from_args(args), labels=args.labels, drift_roi=args.drift_roi,
                               label_table=args.label_table, backend=args.backend, progress=not args.quiet,
                               figures=not args.no_figures, respiration=respiration, probes=probes,
                               cold_alarm_c=_cold_alarm(args), cryo=cryo, gzip_level=args.compress)
    if not args.quiet:
        print(f"outputs written to {os.path.abspath(args.out)}")
        print(result.summary())
    # warnings go to stderr; those about blind spots and implausible heating even with --quiet (never silent)
    trust = set(result.report.get("trust", {}).get("warnings", []))
    for w in result.warnings:
        if not args.quiet or w in trust:
            print(f"warning: {w}", file=sys.stderr)
    return 0


def _dicom_sonications(args):
    from mrtherm.io.dicom.loader import load_dicom_treatment
    return load_dicom_treatment(args.dicom, echo=args.echo, te_s=None if args.te_ms is None else args.te_ms / 1000.0,
                                b0_t=args.b0_t, frame_time_s=args.frame_time_s, frame_times_s=args.frame_times_s,
                                phase_scale=args.phase_scale)


def _run_treatment(args, exams):
    """Several sonications in one DICOM folder: per-sonication outputs and the cumulative maps (as ``live``)."""
    from mrtherm.live.batch import process_treatment
    from mrtherm.thermometry.watch import format_alarm
    report = process_treatment(exams, args.out, params_from_args(args), treatment_grid=args.treatment_grid,
                               figures=not args.no_figures, labels=args.labels, drift_roi=args.drift_roi,
                               label_table=args.label_table, backend=args.backend, progress=not args.quiet)
    if not args.quiet:
        print(f"outputs written to {os.path.abspath(args.out)}")
        for s in report["sonications"]:
            peak = s.get("peak_temperature_c")
            print(f"sonication {s['sonication']}: {s['frames_processed']} frames, peak "
                  f"{'n/a' if peak is None else f'{peak:.1f} C'}, time above 43 C {s.get('time_above_43c_s', 0):.1f} s")
        c = report["cumulative"]
        for lev, v in c["lesion_volumes_ml"].items():
            print(f"cumulative lesion volume at {lev} CEM43: {v:.3f} mL")
        print("\n".join(format_alarm(a) for a in report["alarms"]) or "alarms: none")
    return 0


def add_input_arguments(r):
    """Input and acquisition flags (``run``, and the commands that read exams like it)."""
    r.add_argument("--magnitude", nargs="+", metavar="M.nii[.gz]", help="4-D file or a list of 3-D frames")
    r.add_argument("--phase", nargs="+", metavar="P.nii[.gz]")
    r.add_argument("--real", nargs="+", metavar="R.nii[.gz]")
    r.add_argument("--imag", nargs="+", metavar="I.nii[.gz]")
    r.add_argument("--dicom", metavar="DIR", help="folder of MR DICOM files (searched recursively)")
    r.add_argument("--echo", type=int, metavar="N", help="echo number of a multi-echo DICOM series")
    r.add_argument("--te-ms", type=float, help="echo time in ms (default: sidecar EchoTime)")
    r.add_argument("--b0-t", type=float, help="field strength in T (default: sidecar MagneticFieldStrength)")
    r.add_argument("--phase-scale", choices=("auto", "radians", "siemens", "siemens-raw", "mrad", "ge-mrad"),
                   default="auto")
    r.add_argument("--frame-time-s", type=float, help="frame interval in s (default: NIfTI time step)")
    r.add_argument("--frame-times-s", type=frame_times, metavar="T0,T1,...|FILE", help="explicit frame times in s")


def add_processing_arguments(r):
    """Thermometry parameter flags."""
    r.add_argument("--alpha-ppm-per-c", type=float, help="PRF coefficient (default -0.01)")
    r.add_argument("--phase-sign", type=int, choices=(1, -1))
    r.add_argument("--body-temp-c", type=float)
    r.add_argument("--baseline-frames", type=int)
    r.add_argument("--drift-roi", metavar="MASK.nii.gz")
    r.add_argument("--drift-order", type=int, choices=(0, 1, 2))
    r.add_argument("--labels", metavar="LABELS.nii.gz")
    r.add_argument("--target", type=target_point, metavar="X,Y,Z|FILE.json",
                   help="treatment target in world mm, or a window check's report.json / a transducer JSON (its "
                        "focus); default: the TARGET label's centroid. report.json says per frame whether it and "
                        "--target-margin-mm around it are measured, and warns where they are not")
    r.add_argument("--target-margin-mm", type=float, help="margin around the target, mm (default 5)")
    r.add_argument("--min-signal-fraction", type=float,
                   help="a voxel is not measured in a frame whose magnitude falls below this fraction of its "
                        "reference's (default 0.3; gas pockets, signal voids)")
    r.add_argument("--label-table", metavar="TABLE.json")
    r.add_argument("--dose-levels", type=float_list, metavar="240,...", help="CEM43 levels for lesion masks")
    r.add_argument("--snr-threshold", type=float, help="mask voxels below this baseline SNR (default 5)")
    r.add_argument("--max-sd-theory-c", type=float,
                   help="mask voxels whose noise-predicted temperature SD exceeds this, C (default 2)")
    r.add_argument("--reference", choices=("auto", "mean", "library", "referenceless", "hybrid"),
                   help="phase reference: auto (default: hybrid when the baseline frames move beyond noise, "
                        "else mean), mean of the baseline frames, library (best-matching baseline frames), "
                        "referenceless (smooth fit of each frame's phase) or hybrid (library + smooth correction "
                        "with a sparse heat prior)")
    r.add_argument("--referenceless-order", type=int, choices=range(1, 7), metavar="{1..6}",
                   help="polynomial order of the referenceless background (default 2)")
    r.add_argument("--referenceless-basis", choices=("polynomial", "harmonic"),
                   help="referenceless background: all monomials (default) or harmonic polynomials (near-harmonic)")
    r.add_argument("--register-motion", choices=("auto", "on", "off"),
                   help="dose and Tmax in tissue coordinates (in-plane translation to the first frame): auto "
                        "(default: when the baseline frames move beyond noise), on or off")
    r.add_argument("--backend", choices=BACKENDS, default="auto")


def add_probe_arguments(r):
    """``--probes`` and its companions (``run``)."""
    r.add_argument("--probes", metavar="LOG.csv", help="probe log: CSV time_s,probe,temperature_c")
    r.add_argument("--probe-positions", metavar="POS.json",
                   help='probe positions {"probes": [{"name", "position_mm": [x, y, z], "watch"}]} (world mm)')
    r.add_argument("--probe-time-offset-s", type=float, default=0.0,
                   help="added to the probe log's times to put them on the MR frame clock (s)")
    r.add_argument("--probe-cold-alarm-c", type=float,
                   help="cold alarm of watched probes (cryoablation), C (default: none for hifu, 10 for cryo)")


def _cold_alarm(args):
    if args.probe_cold_alarm_c is not None:
        return args.probe_cold_alarm_c
    return 10.0 if args.modality == "cryo" else None


def cryo_from_args(args):
    """CryoParams for ``--modality cryo`` (tips from --cryo-tip and cryoprobes in --probe-positions), else None."""
    if args.modality != "cryo":
        if args.cryo_tip:
            raise ParameterError("--cryo-tip needs --modality cryo")
        return None
    from mrtherm.cryo import CryoParams
    tips = [tuple(t) for t in args.cryo_tip or []]
    if any(len(t) != 3 for t in tips):
        raise ParameterError("--cryo-tip takes X,Y,Z in world mm")
    if args.probe_positions:
        import json
        try:
            with open(args.probe_positions, encoding="utf-8") as fh:
                tips += [tuple(p["position_mm"]) for p in json.load(fh)["probes"] if p.get("kind") == "cryoprobe"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # read_probe_positions reports a malformed file
    return CryoParams(probe_temperature_c=args.cryo_probe_temp_c, margin_alarm_mm=args.cryo_margin_mm,
                      tips_mm=tuple(tips)).validate()


def probes_from_args(args):
    """The probe set of ``--probes`` / ``--probe-positions`` (or None)."""
    if not getattr(args, "probes", None):
        if getattr(args, "probe_positions", None) and getattr(args, "modality", "hifu") != "cryo":
            raise ParameterError("--probe-positions needs --probes LOG.csv")
        return None
    from mrtherm.probes import read_probe_log, read_probe_positions
    probes = read_probe_log(args.probes, args.probe_time_offset_s)
    if args.probe_positions:
        probes = read_probe_positions(args.probe_positions, probes)
    return probes


def add_parser(sub):
    """Add the ``run`` command to the sub-parsers ``sub``."""
    r = sub.add_parser("run", help="temperature and dose maps from a magnitude/phase exam")
    add_input_arguments(r)
    r.add_argument("--out", required=True, help="output folder (not an input folder)")
    add_processing_arguments(r)
    add_probe_arguments(r)
    r.add_argument("--modality", choices=("hifu", "cryo"), default="hifu",
                   help="cryo: segment the ice ball per frame, mask it out of PRF, model isotherms inside it, "
                        "margins to the cord and nerve roots")
    r.add_argument("--cryo-tip", action="append", type=float_list, metavar="X,Y,Z",
                   help="cryoprobe tip, world mm (repeat per probe; also probes with \"kind\": \"cryoprobe\" in "
                        "--probe-positions)")
    r.add_argument("--cryo-probe-temp-c", type=float, default=-150.0, help="cryoprobe surface temperature (C)")
    r.add_argument("--cryo-margin-mm", type=float, default=3.0,
                   help="alarm when an isotherm comes this close to the cord or a nerve root (mm)")
    r.add_argument("--respiration", metavar="LOG.tsv",
                   help="respiratory signal (bellows/navigator; columns time_s and respiration): library entries "
                        "are matched on it instead of on image similarity")
    r.add_argument("--treatment-grid", metavar="PLANNING.nii.gz",
                   help="--dicom with several sonications: grid of the cumulative dose (default: the first's)")
    r.add_argument("--compress", type=int, choices=range(10), default=1, metavar="{0..9}",
                   help="gzip level of the .nii.gz outputs: 0 stores them uncompressed (fastest; still .nii.gz that "
                        "every NIfTI reader opens), 1 default, 9 smallest")
    r.add_argument("--no-figures", action="store_true")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_run)
