"""The options of a run: one table from which the command line builds its flags and a cohort its columns.

Each :class:`Option` names its field of :class:`RunRequest`, its flag, its group and the argparse details (type,
choices, default, help). ``mrtherm run`` and ``mrtherm live`` add the groups they take
(:func:`add_options`), a cohort manifest's columns are parsed cell by cell with the same types
(:func:`parse_cell`), and both end in a typed :class:`RunRequest` that :func:`mrtherm.app.driver.run` takes. No
one builds or re-parses an argv.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from mrtherm.choices import BACKENDS, PHASE_SCALES, REFERENCES
from mrtherm.errors import MrthermError, ParameterError

__all__ = ["BACKENDS", "OPTIONS", "PHASE_SCALES", "Option", "RunRequest", "add_options", "float_list",
           "frame_times", "options_by_name", "params_from_request", "parse_cell", "request_from_namespace",
           "target_point"]


def float_list(text: str):
    """``"240,40"`` to ``[240.0, 40.0]`` (argparse type).

    Parameters
    ----------
    text : str

    Returns
    -------
    list of float
    """
    try:
        return [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def target_point(text: str):
    """``X,Y,Z`` (world mm) as a tuple, or a path to a window report / transducer JSON (argparse type).

    Parameters
    ----------
    text : str

    Returns
    -------
    tuple of float or str
    """
    if os.path.exists(text) or text.lower().endswith(".json"):
        return text
    values = float_list(text)
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected X,Y,Z in world mm or a JSON file, got {text!r}")
    return tuple(values)


def frame_times(text: str):
    """Comma-separated times, or a text file with one time (s) per line or comma-separated (argparse type).

    Parameters
    ----------
    text : str

    Returns
    -------
    list of float
    """
    if os.path.exists(text):
        try:
            with open(text, encoding="utf-8") as fh:
                return float_list(fh.read().replace("\n", ","))
        except argparse.ArgumentTypeError:
            raise MrthermError(f"{text}: frame times file does not hold numbers") from None
    return float_list(text)


@dataclasses.dataclass(frozen=True)
class Option:
    """One run option.

    Attributes
    ----------
    name : str
        The :class:`RunRequest` field (and the cohort manifest column).
    group : str
        ``input``, ``acquisition``, ``processing``, ``probes``, ``cryo`` or ``output``.
    argparse : dict
        ``add_argument`` keywords besides the flag (``type``, ``choices``, ``default``, ``help``, ``nargs``,
        ``action``, ``metavar``).
    param : bool
        A :class:`mrtherm.ThermometryParams` field of the same name.
    path : bool
        Its values are file or folder paths (a manifest resolves them against its own folder).
    """

    name: str
    group: str
    argparse: dict = dataclasses.field(default_factory=dict)
    param: bool = False
    path: bool = False

    @property
    def flag(self) -> str:
        """``--name-with-dashes``."""
        return "--" + self.name.replace("_", "-")

    @property
    def default(self):
        """The value when the option is not given."""
        return self.argparse.get("default", False if self.argparse.get("action") == "store_true" else None)

    @property
    def is_flag(self) -> bool:
        """A switch without a value (``--no-figures``)."""
        return self.argparse.get("action") == "store_true"


def _o(name, group, param=False, path=False, **kw):
    return Option(name, group, kw, param, path)


_FRAMES = "4-D file or a list of 3-D frames"
OPTIONS = (
    _o("magnitude", "input", path=True, nargs="+", metavar="M.nii[.gz]", help=_FRAMES),
    _o("phase", "input", path=True, nargs="+", metavar="P.nii[.gz]"),
    _o("real", "input", path=True, nargs="+", metavar="R.nii[.gz]"),
    _o("imag", "input", path=True, nargs="+", metavar="I.nii[.gz]"),
    _o("dicom", "input", path=True, metavar="DIR", help="folder of MR DICOM files (searched recursively)"),
    _o("echo", "input", type=int, metavar="N", help="echo number of a multi-echo DICOM series"),
    _o("water_fat", "input", action="store_true", help="multi-echo water-fat separated thermometry: each --magnitude/"
       "--phase (or --real/--imag) file is one echo, in increasing echo time; fat is the field reference"),
    _o("echo_times_ms", "acquisition", type=float_list, metavar="TE1,TE2,...",
       help="--water-fat: the echo times in ms (default: each file's sidecar EchoTime)"),
    _o("te_ms", "acquisition", type=float, help="echo time in ms (default: sidecar EchoTime)"),
    _o("b0_t", "acquisition", type=float, help="field strength in T (default: sidecar MagneticFieldStrength)"),
    _o("phase_scale", "acquisition", choices=PHASE_SCALES, default="auto"),
    _o("frame_time_s", "acquisition", type=float, help="frame interval in s (default: NIfTI time step)"),
    _o("frame_times_s", "acquisition", type=frame_times, metavar="T0,T1,...|FILE", help="explicit frame times in s"),
    _o("alpha_ppm_per_c", "processing", param=True, type=float, help="PRF coefficient (default -0.01)"),
    _o("phase_sign", "processing", param=True, type=int, choices=(1, -1)),
    _o("body_temp_c", "processing", param=True, type=float),
    _o("baseline_frames", "processing", param=True, type=int),
    _o("drift_roi", "processing", path=True, metavar="MASK.nii.gz"),
    _o("drift_order", "processing", param=True, type=int, choices=(0, 1, 2)),
    _o("labels", "processing", path=True, metavar="LABELS.nii.gz"),
    _o("target", "processing", type=target_point, metavar="X,Y,Z|FILE.json",
       help="treatment target in world mm, or a window check's report.json / a transducer JSON (its focus); "
            "default: the TARGET label's centroid. report.json says per frame whether it and --target-margin-mm "
            "around it are measured, and warns where they are not"),
    _o("target_margin_mm", "processing", param=True, type=float, help="margin around the target, mm (default 5)"),
    _o("min_signal_fraction", "processing", param=True, type=float,
       help="a voxel is not measured in a frame whose magnitude falls below this fraction of its reference's "
            "(default 0.3; gas pockets, signal voids)"),
    _o("label_table", "processing", path=True, metavar="TABLE.json"),
    _o("dose_levels", "processing", type=float_list, metavar="240,...", help="CEM43 levels for lesion masks"),
    _o("snr_threshold", "processing", param=True, type=float, help="mask voxels below this baseline SNR (default 5)"),
    _o("max_sd_theory_c", "processing", param=True, type=float,
       help="mask voxels whose noise-predicted temperature SD exceeds this, C (default 2)"),
    _o("reference", "processing", param=True, choices=REFERENCES,
       help="phase reference: auto (default: hybrid when the baseline frames move beyond noise, else mean), mean of "
            "the baseline frames, library (best-matching baseline frames), referenceless (smooth fit of each frame's "
            "phase) or hybrid (library + smooth correction with a sparse heat prior)"),
    _o("referenceless_order", "processing", param=True, type=int, choices=range(1, 7), metavar="{1..6}",
       help="polynomial order of the referenceless background (default 2)"),
    _o("referenceless_basis", "processing", param=True, choices=("polynomial", "harmonic"),
       help="referenceless background: all monomials (default) or harmonic polynomials (near-harmonic)"),
    _o("register_motion", "processing", param=True, choices=("auto", "on", "off"),
       help="dose and Tmax in tissue coordinates (in-plane translation to the first frame): auto (default: when the "
            "baseline frames move beyond noise), on or off"),
    _o("backend", "processing", choices=BACKENDS, default="auto"),
    _o("bioheat", "processing", param=True, action="store_true",
       help="model-based temperature and dose in every voxel of the body, bone and fat included: a Pennes model with "
            "a source fitted to PRF (needs --labels, --target X,Y,Z (the focus) and --bioheat-beam-axis)"),
    _o("bioheat_beam_axis", "processing", param=True, type=float_list, metavar="X,Y,Z",
       help="--bioheat: the beam's direction of propagation, world RAS+"),
    _o("bioheat_focal_radius_mm", "processing", param=True, type=float,
       help="--bioheat: focal waist radius (1/e^2 intensity), mm (default 1.5)"),
    _o("bioheat_rayleigh_mm", "processing", param=True, type=float,
       help="--bioheat: focal Rayleigh length, mm (default 8)"),
    _o("bioheat_resolution_mm", "processing", param=True, type=float,
       help="--bioheat: the model grid's in-plane spacing near the focus, mm (default 0.5; through-plane twice it)"),
    _o("bioheat_cortical_thickness_mm", "processing", param=True, type=float,
       help="--bioheat: cortex kept where only image-grid labels draw the bone, mm (default 1.2)"),
    _o("respiration", "processing", path=True, metavar="LOG.tsv",
       help="respiratory signal (bellows/navigator; columns time_s and respiration): library entries are matched on "
            "it instead of on image similarity (live: a log still being written, time_s on the DICOM acquisition "
            "clock, s since 1970; frames it does not reach are matched on the image)"),
    _o("treatment_grid", "processing", path=True, metavar="PLANNING.nii.gz",
       help="several sonications: grid of the cumulative dose (default: the first's)"),
    _o("probes", "probes", path=True, metavar="LOG.csv", help="probe log: CSV time_s,probe,temperature_c"),
    _o("probe_positions", "probes", path=True, metavar="POS.json",
       help='probe positions {"probes": [{"name", "position_mm": [x, y, z], "watch"}]} (world mm)'),
    _o("probe_time_offset_s", "probes", type=float, default=0.0,
       help="added to the probe log's times to put them on the MR frame clock (s)"),
    _o("probe_cold_alarm_c", "probes", type=float,
       help="cold alarm of watched probes (cryoablation), C (default: none for hifu, 10 for cryo)"),
    _o("modality", "cryo", choices=("hifu", "cryo"), default="hifu",
       help="cryo: segment the ice ball per frame, mask it out of PRF, model isotherms inside it, margins to the "
            "cord and nerve roots"),
    _o("cryo_tip", "cryo", action="append", type=float_list, metavar="X,Y,Z",
       help='cryoprobe tip, world mm (repeat per probe; also probes with "kind": "cryoprobe" in --probe-positions)'),
    _o("cryo_probe_temp_c", "cryo", type=float, default=-150.0, help="cryoprobe surface temperature (C)"),
    _o("cryo_margin_mm", "cryo", type=float, default=3.0,
       help="alarm when an isotherm comes this close to the cord or a nerve root (mm)"),
    _o("compress", "output", type=int, choices=range(10), default=1, metavar="{0..9}",
       help="gzip level of the .nii.gz outputs: 0 stores them uncompressed (fastest; still .nii.gz that every "
            "NIfTI reader opens), 1 default, 9 smallest"),
    _o("no_figures", "output", action="store_true"),
    _o("quiet", "output", action="store_true"),
)


def options_by_name() -> dict:
    """``{name: Option}`` of :data:`OPTIONS`.

    Returns
    -------
    dict of str to Option
    """
    return {o.name: o for o in OPTIONS}


RunRequest = dataclasses.make_dataclass(
    "RunRequest", [("out", "str | None", dataclasses.field(default=None))] +
    [(o.name, "object", dataclasses.field(default=o.default)) for o in OPTIONS], frozen=True)
RunRequest.__module__ = __name__
RunRequest.__doc__ = """A run asked for: ``out`` (the output folder) and one field per :data:`OPTIONS` entry, with the
option's default when not given. Build it with keywords, :func:`request_from_namespace` (the command line) or a
cohort manifest row; :func:`mrtherm.app.driver.run` takes it."""


def add_options(parser, groups, skip=()):
    """Add the flags of the options in ``groups`` to an argparse parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser or argument group
    groups : sequence of str
        Option groups, in the order their flags are added.
    skip : sequence of str
        Option names to leave out (a command that spells them its own way).
    """
    for group in groups:
        for o in OPTIONS:
            if o.group == group and o.name not in skip:
                parser.add_argument(o.flag, dest=o.name, **o.argparse)


def request_from_namespace(ns, out=None) -> "RunRequest":
    """The request of parsed command-line arguments (options the parser lacks keep their defaults).

    Parameters
    ----------
    ns : argparse.Namespace
    out : str, optional
        Overrides ``ns.out``.

    Returns
    -------
    RunRequest
    """
    values = {o.name: getattr(ns, o.name) for o in OPTIONS if hasattr(ns, o.name)}
    return RunRequest(out=out if out is not None else getattr(ns, "out", None), **values)


def parse_cell(option: Option, text: str, base_dir: str | None = None):
    """A manifest cell's value for ``option``, parsed with the option's own type and choices.

    Parameters
    ----------
    option : Option
    text : str
        The cell (``;`` separates the values of a multi-value option; a switch takes true/false).
    base_dir : str, optional
        Relative paths are resolved against it.

    Returns
    -------
    object
        The typed value, or the option's default for an empty cell.

    Raises
    ------
    ParameterError
        The cell does not parse, or is not one of the option's choices.
    """
    text = text.strip()
    if option.is_flag:
        if text.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            raise ParameterError(f"column {option.name!r} is a flag: true or false, got {text!r}")
        return text.lower() in ("1", "true", "yes", "on")
    if text == "":
        return option.default
    multi = option.argparse.get("nargs") in ("+", "*") or option.argparse.get("action") == "append"
    values = [_typed(option, v.strip(), base_dir) for v in (text.split(";") if multi else [text])]
    return values if multi else values[0]


def _typed(option, text, base_dir):
    if option.path and base_dir is not None and not os.path.isabs(text):
        text = os.path.normpath(os.path.join(base_dir, text))
    convert = option.argparse.get("type", str)
    try:
        value = convert(text)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise ParameterError(f"column {option.name!r}: {exc}") from None
    choices = option.argparse.get("choices")
    if choices is not None and value not in choices:
        raise ParameterError(f"column {option.name!r}: {text!r} is not one of {', '.join(map(str, choices))}")
    return value


def params_from_request(request):
    """The :class:`mrtherm.ThermometryParams` a request sets (fields it leaves None keep their defaults).

    Parameters
    ----------
    request : RunRequest or argparse.Namespace

    Returns
    -------
    ThermometryParams
    """
    from mrtherm.thermometry.params import ThermometryParams  # noqa: PLC0415
    p = ThermometryParams()
    for o in OPTIONS:
        v = getattr(request, o.name, None)
        if o.param and v is not None:
            setattr(p, o.name, v)
    if getattr(request, "dose_levels", None) is not None:
        p.dose_levels_cem43_min = tuple(request.dose_levels)
    if getattr(request, "target", None) is not None:
        p.target_mm = request.target
    return p
