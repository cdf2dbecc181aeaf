"""``mrtherm live``: a treatment followed frame by frame, from the DICOM network or an export folder."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading

from mrtherm.app.options import PHASE_SCALES, add_options, float_list, params_from_request
from mrtherm.errors import ParameterError

LOG = logging.getLogger("mrtherm.live")


def _ae_list(text):
    return [v.strip() for v in text.split(",") if v.strip()]


@contextlib.contextmanager
def _logging(out, quiet):
    """The ``mrtherm.live`` log to the terminal and ``OUT/live.log`` for the command's duration: configured here,
    by the command line only, and taken down (file closed, handlers removed) when the command ends."""
    fmt = logging.Formatter("%(asctime)s mrtherm live: %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    console.setFormatter(fmt)
    os.makedirs(out, exist_ok=True)
    log_file = logging.FileHandler(os.path.join(out, "live.log"), encoding="utf-8")
    log_file.setLevel(logging.INFO)
    log_file.setFormatter(fmt)
    saved = (LOG.level, LOG.propagate, list(LOG.handlers))
    LOG.setLevel(logging.DEBUG)
    LOG.propagate = False
    LOG.handlers = [console, log_file]
    try:
        yield
    finally:
        LOG.setLevel(saved[0])
        LOG.propagate = saved[1]
        LOG.handlers = saved[2]
        log_file.close()


def options_from_args(args) -> dict:
    """The session options of the command line."""
    from mrtherm.app.driver import cold_alarm_c, cryo_from_request  # noqa: PLC0415
    params = params_from_request(args)
    params.water_fat = bool(args.water_fat)
    params.validate()
    mb = lambda v: None if v is None else int(v * 1024 * 1024)  # noqa: E731
    return {"params": params, "labels": args.labels, "drift_roi": args.drift_roi, "label_table": args.label_table,
            "backend": args.backend, "te_s": None if args.te_ms is None else args.te_ms / 1000.0, "b0_t": args.b0_t,
            "frame_time_s": args.frame_time_s, "phase_scale": args.phase_scale, "echo": args.echo,
            "echo_times_s": None if args.echo_times_ms is None else [v / 1000.0 for v in args.echo_times_ms],
            "treatment_grid": args.treatment_grid, "slices": args.slices, "frame_timeout_s": args.frame_timeout_s,
            "alarm_command": args.alarm_command, "max_image_bytes": mb(args.max_image_mb),
            "cryo": cryo_from_request(args), "respiration": args.respiration, "probes": args.probes,
            "probe_positions": args.probe_positions, "probe_time_offset_s": args.probe_time_offset_s,
            "probe_cold_alarm_c": cold_alarm_c(args), "new_study": args.new_study,
            "max_repetitions_ahead": args.max_repetitions_ahead, "port": args.port,
            "watch": None if args.watch is None else os.path.abspath(args.watch), "export_to": args.export_to,
            "export_called_ae": args.export_called_ae, "export_calling_ae": args.export_calling_ae}


def _check_water_fat(args):
    if args.echo_times_ms is not None and not args.water_fat:
        raise ParameterError("--echo-times-ms needs --water-fat")
    if not args.water_fat:
        return
    for flag, given in (("--echo", args.echo), ("--te-ms", args.te_ms), ("--respiration", args.respiration),
                        ("--modality cryo", args.modality == "cryo"), ("--drift-roi", args.drift_roi)):
        if given:
            raise ParameterError(f"--water-fat takes every echo and fat as the field reference: drop {flag}")


def _check(args):
    if (args.port is None) == (args.watch is None):
        raise ParameterError("give --port (DICOM network) or --watch FOLDER, one of them")
    if args.watch is not None and os.path.abspath(args.watch) == os.path.abspath(args.out):
        raise ParameterError("--out may not be the watched folder")
    for flag, given in (("--respiration", args.respiration), ("--probes", args.probes)):
        if given and args.frame_time_s is not None:
            raise ParameterError(f"{flag} needs the frames' acquisition times (the log's clock); drop --frame-time-s")
    _check_water_fat(args)
    if args.probe_positions and not args.probes:
        raise ParameterError("--probe-positions needs --probes LOG.csv")
    if args.export_to is not None:
        from mrtherm.export.common import host_port  # noqa: PLC0415
        host_port(args.export_to, "--export-to")
        if not args.export_called_ae:
            raise ParameterError("--export-to needs --export-called-ae (the PACS's AE title)")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ParameterError("--tls-cert and --tls-key go together")
    if args.port is not None and not 0 <= args.port <= 65535:
        raise ParameterError(f"--port must be 0..65535, got {args.port}")
    for flag, value in (("--max-associations", args.max_associations),
                        ("--max-associations-per-peer", args.max_associations_per_peer),
                        ("--max-repetitions-ahead", args.max_repetitions_ahead)):
        if value < 1:
            raise ParameterError(f"{flag} must be at least 1, got {value}")
    for flag, value in (("--association-setup-s", args.association_setup_s),
                        ("--idle-timeout-s", args.idle_timeout_s)):
        if not value > 0:
            raise ParameterError(f"{flag} must be > 0 s, got {value}")


def cmd_live(args):
    """Run until SIGINT or SIGTERM, then finish cleanly; returns the exit status."""
    _check(args)
    with _logging(args.out, args.quiet):
        return _serve(args)


def _serve(args):
    from mrtherm.live.session import LiveSession  # noqa: PLC0415
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    session = LiveSession(args.out, options_from_args(args))
    service = igtl = None
    try:
        if args.igtl_port is not None:
            from mrtherm.live.igtl import IgtlPublisher  # noqa: PLC0415
            igtl = IgtlPublisher(args.igtl_port, args.igtl_bind)
            session.listeners.append(igtl.publish)
        if args.port is not None:
            from mrtherm.live.scp import StorageService, tls_context  # noqa: PLC0415
            ctx = tls_context(args.tls_cert, args.tls_key, args.tls_ca) if args.tls_cert else None
            mb = args.max_association_mb
            limits = {"setup_s": args.association_setup_s, "max_associations": args.max_associations,
                      "max_per_peer": args.max_associations_per_peer, "idle_s": args.idle_timeout_s}
            service = StorageService(session, args.port, args.ae_title, args.bind, _ae_list(args.allow_ae or ""),
                                     None if mb is None else int(mb * 1024 * 1024), ctx, limits)
            stop.wait()
        else:
            from mrtherm.live.folder import FolderWatcher  # noqa: PLC0415
            FolderWatcher(session, args.watch, settle_s=args.settle_s).run(stop)
    finally:
        if service is not None:
            service.close()
        session.close()
        if igtl is not None:
            igtl.close()
    return 0


def add_parser(sub):
    """Add the ``live`` command to the sub-parsers ``sub``."""
    r = sub.add_parser("live", help="follow a treatment frame by frame (DICOM network or export folder)")
    src = r.add_argument_group("source")
    src.add_argument("--port", type=int, help="listen for DICOM C-STORE on this TCP port")
    src.add_argument("--ae-title", default="MRTHERM", help="our AE title (default MRTHERM)")
    src.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1; a scanner on the "
                     "network needs this host's address or 0.0.0.0)")
    src.add_argument("--allow-ae", metavar="SCANNER,ROUTER",
                     help="accept associations only from these calling AE titles")
    src.add_argument("--tls-cert", metavar="CERT.pem")
    src.add_argument("--tls-key", metavar="KEY.pem")
    src.add_argument("--tls-ca", metavar="CA.pem", help="require client certificates signed by this CA")
    src.add_argument("--max-image-mb", type=float, default=64.0, help="largest accepted image (default 64 MB)")
    src.add_argument("--max-association-mb", type=float, default=4096.0,
                     help="most data accepted in one association (default 4096 MB)")
    src.add_argument("--max-associations", type=int, default=32, help="open connections at most (default 32)")
    src.add_argument("--max-associations-per-peer", type=int, default=8,
                     help="open connections from one address at most (default 8)")
    src.add_argument("--association-setup-s", type=float, default=3.0, help="a connection is closed unless its "
                     "association request is complete this long after it opened (default 3 s)")
    src.add_argument("--idle-timeout-s", type=float, default=60.0,
                     help="an association silent this long is closed (default 60 s)")
    src.add_argument("--new-study", action="store_true", help="accept one new study (and frame of reference) of the "
                     "treatment's patient: the treatment continues in it; otherwise images of another study are "
                     "refused")
    src.add_argument("--watch", metavar="FOLDER", help="take DICOM files a console exports into FOLDER")
    src.add_argument("--settle-s", type=float, default=1.0, help="--watch: a file is read once unchanged this long")
    r.add_argument("--out", required=True, help="output folder, kept current after every frame; rerun the same "
                   "command to resume after a crash")
    acq = r.add_argument_group("acquisition")
    acq.add_argument("--te-ms", type=float)
    acq.add_argument("--b0-t", type=float)
    acq.add_argument("--phase-scale", choices=PHASE_SCALES, default="auto")
    acq.add_argument("--frame-time-s", type=float, help="frame interval in s (default: DICOM acquisition times)")
    acq.add_argument("--echo", type=int)
    acq.add_argument("--water-fat", action="store_true", help="multi-echo water-fat separated thermometry: every echo "
                     "of the series is part of each frame; fat is the field reference")
    acq.add_argument("--echo-times-ms", type=float_list, metavar="TE1,TE2,...",
                     help="--water-fat: the echo times in ms (default: each echo's DICOM EchoTime)")
    acq.add_argument("--slices", type=int, help="slices per frame when known (the first frame then needs no wait)")
    acq.add_argument("--frame-timeout-s", type=float, default=30.0,
                     help="skip a frame still incomplete this long after its last image (default 30)")
    acq.add_argument("--max-repetitions-ahead", type=int, default=256, help="refuse an image whose repetition lies "
                     "further beyond the highest of its sonication so far (default 256)")
    add_options(r, ["processing"], skip=("treatment_grid",))
    add_options(r, ["cryo", "probes"])
    r.add_argument("--treatment-grid", metavar="PLANNING.nii.gz", help="grid of the cumulative dose (default: the "
                   "first sonication's)")
    r.add_argument("--alarm-command", metavar="CMD", help="run CMD with each new alarm as JSON on stdin")
    out = r.add_argument_group("results to PACS and 3D Slicer")
    out.add_argument("--export-to", metavar="HOST:PORT", help="send each finished sonication's DICOM objects "
                     "(Parametric Maps, Segmentation, Measurement Report) to this PACS")
    out.add_argument("--export-called-ae", metavar="AE", help="the PACS's AE title (with --export-to)")
    out.add_argument("--export-calling-ae", metavar="AE", default="MRTHERM", help="our AE title towards the PACS")
    out.add_argument("--igtl-port", type=int, metavar="PORT", help="serve the current temperature and dose over "
                     "OpenIGTLink (3D Slicer's OpenIGTLinkIF, client mode) on this port")
    out.add_argument("--igtl-bind", default="127.0.0.1", help="address of the OpenIGTLink server (default 127.0.0.1)")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_live)
