"""``mrtherm phantom``: the synthetic bone-ablation exam with ground truth (NIfTI, and DICOM on request)."""

from __future__ import annotations

import os

from mrtherm.errors import ParameterError
# mrtherm.io.dicom.synth.VENDORS, spelled here so `mrtherm --help` does not import pydicom and NumPy
# (tests/test_cli_startup.py checks they agree)
VENDORS = ("siemens", "siemens-enhanced", "ge", "philips", "philips-enhanced")


def cmd_phantom(args):
    """Write the phantom (and its DICOM on request); returns the exit status."""
    from mrtherm.phantom import MOTION_DEFAULTS, make_phantom, write_phantom
    if args.cryo:
        return _cryo(args)
    frames = args.frames if args.frames is not None else (MOTION_DEFAULTS["n_frames"] if args.motion else 40)
    if frames < 2:
        raise ParameterError(f"--frames must be at least 2, got {frames}")
    kwargs = dict(MOTION_DEFAULTS) if args.motion else {}
    kwargs.update(n_frames=frames, seed=args.seed)
    if args.motion and args.motion_mm is not None:
        kwargs["motion_mm"] = args.motion_mm
    if args.motion and frames * 3.0 <= kwargs["sonication_s"][1]:
        raise ParameterError(f"--frames {frames} ends before the free-breathing phantom's sonication "
                             f"({kwargs['sonication_s'][0]:g}-{kwargs['sonication_s'][1]:g} s at 3 s per frame)")
    ph = make_phantom(**kwargs)
    paths = write_phantom(args.out, ph, phase_format=args.phase_format)
    if args.dicom:
        from mrtherm.io.dicom.synth import write_dicom_exam
        paths["dicom"] = write_dicom_exam(os.path.join(args.out, "dicom"), ph.magnitude, ph.phase_rad, ph.affine,
                                          ph.te_s, ph.b0_t, ph.frame_times_s, vendor=args.dicom)
    print(f"phantom written to {os.path.dirname(paths['magnitude'])}")
    for k, v in paths.items():
        print(f"  {k:18s} {os.path.basename(v)}")
    return 0


def _cryo(args):
    from mrtherm.cryo.phantom import make_cryo_phantom, write_cryo_extras
    from mrtherm.phantom import write_phantom
    if args.motion or args.dicom:
        raise ParameterError("--cryo does not combine with --motion or --dicom")
    ph = make_cryo_phantom(**({"n_frames": args.frames} if args.frames else {}), seed=args.seed)
    paths = write_phantom(args.out, ph, phase_format=args.phase_format)
    paths.update(write_cryo_extras(args.out, ph))
    print(f"cryo phantom written to {os.path.dirname(paths['magnitude'])}")
    for k, v in paths.items():
        print(f"  {k:18s} {os.path.basename(v)}")
    return 0


def add_parser(sub):
    """Add the ``phantom`` command to the sub-parsers ``sub``."""
    ph = sub.add_parser("phantom", help="write the synthetic bone-ablation exam with ground truth")
    ph.add_argument("--out", required=True, help="output folder")
    ph.add_argument("--phase-format", choices=("siemens", "radians", "ge-mrad"), default="siemens",
                    help="how phase is stored (default: dcm2niix Siemens int16)")
    ph.add_argument("--frames", type=int, help="number of frames (default 40; 50 with --motion)")
    ph.add_argument("--motion", action="store_true", help="free breathing: 16 baseline frames, soft tissue moving "
                    "4 mm against the bone, respiratory B0 change, heating attached to tissue (truth in image and "
                    "tissue coordinates, respiration.tsv)")
    ph.add_argument("--motion-mm", type=float, help="--motion: tissue displacement at inhale, mm (default 4)")
    ph.add_argument("--cryo", action="store_true", help="cryoablation: an ice ball growing from a probe tip next to "
                    "a nerve root (truth temperature and ice volume per frame), probes.json and a thermocouple log")
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--dicom", choices=VENDORS, help="also write the exam as DICOM in this vendor's convention, "
                    "in OUT/dicom")
    ph.set_defaults(func=cmd_phantom)
