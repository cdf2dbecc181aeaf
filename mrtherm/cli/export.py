"""``mrtherm export RUN --dicom OUT [--send HOST:PORT --called-ae AE]``: a run's results as DICOM, to a PACS."""

from __future__ import annotations

import os

from mrtherm.cli.common import check_out_dir
from mrtherm.errors import MrthermError, ParameterError


def send_and_report(paths, target, called_ae, calling_ae, quiet=False) -> int:
    """C-STORE ``paths`` to ``target`` (``HOST:PORT``); one line per refused object; the exit status.

    Parameters
    ----------
    paths : list of str
    target : str
    called_ae, calling_ae : str
    quiet : bool

    Returns
    -------
    int
        0 when every object was stored, 1 otherwise.
    """
    import sys  # noqa: PLC0415
    from mrtherm.export.common import host_port  # noqa: PLC0415  (numpy: not at start-up)
    from mrtherm.export.send import send_files  # noqa: PLC0415
    host, port = host_port(target)
    results = send_files(paths, host, port, called_ae, calling_ae)
    failed = [r for r in results if not r["ok"]]
    for r in failed:
        print(f"mrtherm: error: {r['error']}", file=sys.stderr)
    if not quiet:
        print(f"sent {len(results) - len(failed)} of {len(results)} objects to {called_ae} at {host}:{port}")
    return 1 if failed else 0


def cmd_export(args):
    """Write the DICOM objects (and send them when asked); returns the exit status."""
    from mrtherm.export.dicom_objects import export_run  # noqa: PLC0415
    if not os.path.isdir(args.run):
        raise MrthermError(f"{args.run}: not a folder (give a mrtherm run output folder)")
    if args.send and not args.called_ae:
        raise ParameterError("--send needs --called-ae (the PACS's AE title)")
    check_out_dir(args.dicom, [args.run])
    paths = export_run(args.run, args.dicom, source_dicom=args.source, patient_id=args.patient_id,
                       study_uid=args.study_uid, temperature=args.temperature)
    if not args.quiet:
        print(f"{len(paths)} DICOM objects written to {args.dicom}: {', '.join(os.path.basename(p) for p in paths)}")
    if args.send:
        return send_and_report(paths, args.send, args.called_ae, args.calling_ae, args.quiet)
    return 0


def add_parser(sub):
    """Add the ``export`` command to the sub-parsers ``sub``."""
    p = sub.add_parser("export", help="a run's results as DICOM objects (Parametric Maps, Segmentation, SR, "
                       "Secondary Capture), optionally sent to a PACS")
    p.add_argument("run", metavar="RUN_FOLDER", help="a mrtherm run output folder")
    p.add_argument("--dicom", required=True, metavar="OUT_DIR", help="folder for the DICOM objects")
    p.add_argument("--source", metavar="DICOM_DIR", help="the DICOM folder the run read (default: report.json's)")
    p.add_argument("--patient-id", help="PatientID instead of the source's (or the de-identified placeholder's)")
    p.add_argument("--study-uid", help="StudyInstanceUID instead of the source's (or the placeholder's)")
    p.add_argument("--temperature", action="store_true", help="also the 4-D temperature, one map per frame")
    p.add_argument("--send", metavar="HOST:PORT", help="C-STORE the objects to this PACS")
    p.add_argument("--called-ae", metavar="AE", help="the PACS's AE title (with --send)")
    p.add_argument("--calling-ae", metavar="AE", default="MRTHERM", help="our AE title (default MRTHERM)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_export)
