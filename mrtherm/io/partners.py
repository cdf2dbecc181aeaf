"""Finding the magnitude partner of a phase file, or the phase partner of a magnitude file.

Rules, tried in order; the first that names exactly one existing file wins:

1. **BIDS**: ``..._part-mag_...`` <-> ``..._part-phase_...``.
2. **dcm2niix ``_ph``**: ``NAME`` <-> ``NAME_ph`` (magnitude and phase in one series).
3. **dcm2niix series numbering**: Siemens reconstructs magnitude and phase of one
   acquisition into consecutive series, which dcm2niix names
   ``..._<N>[_e<k>]`` and ``..._<N+1>[_e<k>]_ph`` (the prefixes may differ, e.g.
   by the folder name). A single ``*_<N+1>[_e<k>]_ph`` file (or, for a phase,
   ``*_<N-1>[_e<k>]``) in the same folder is the partner.
4. **Sidecars**: a single NIfTI in the same folder whose sidecar names the
   wanted role (``ImageType``) and has the same ``AcquisitionTime`` and
   ``EchoNumber``.
5. **Words**: ``magnitude`` <-> ``phase`` in the file name.

When no rule matches, the error lists every rule tried.
"""

from __future__ import annotations

import os
import re

from mrtherm.io import niftiio
from mrtherm.io import roles
from mrtherm.io.sidecar import load_sidecar

_SERIES_RE = re.compile(r"^(?P<pre>.*)_(?P<series>\d+)(?P<echo>_e\d+)?(?P<ph>_ph)?$")


def _stem(path: str) -> str:
    return niftiio.strip_nifti_suffix(os.path.basename(path))


def _existing(folder, stems, exclude):
    out = []
    for stem in stems:
        for suf in niftiio.NIFTI_SUFFIXES:
            p = os.path.join(folder, stem + suf)
            if os.path.exists(p) and os.path.abspath(p) != os.path.abspath(exclude):
                out.append(p)
                break
    return out


def _nifti_files(folder):
    try:
        names = sorted(os.listdir(folder or "."))
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if n.endswith(niftiio.NIFTI_SUFFIXES)]


def _rule_bids(path, want):
    stem, folder = _stem(path), os.path.dirname(path)
    a, b = ("_part-mag", "_part-phase") if want == roles.PHASE else ("_part-phase", "_part-mag")
    return _existing(folder, [stem.replace(a, b)], path) if a in stem else []


def _rule_ph_suffix(path, want):
    stem, folder = _stem(path), os.path.dirname(path)
    if want == roles.PHASE:
        return _existing(folder, [stem + "_ph"], path)
    return _existing(folder, [stem[:-3]], path) if stem.endswith("_ph") else []


def _rule_series_number(path, want):
    m = _SERIES_RE.match(_stem(path))
    if not m or bool(m.group("ph")) != (want == roles.MAGNITUDE):
        return []
    series, echo = int(m.group("series")), m.group("echo") or ""
    other = series + 1 if want == roles.PHASE else series - 1
    out = []
    for cand in _nifti_files(os.path.dirname(path)):
        c = _SERIES_RE.match(_stem(cand))
        if c and int(c.group("series")) == other and (c.group("echo") or "") == echo \
                and bool(c.group("ph")) == (want == roles.PHASE):
            out.append(cand)
    return out


def _rule_sidecar(path, want):
    me = load_sidecar(path)
    if me is None or me.acquisition_clock_s is None:
        return []
    out = []
    for cand in _nifti_files(os.path.dirname(path)):
        if os.path.abspath(cand) == os.path.abspath(path):
            continue
        info = load_sidecar(cand)
        if info is None or info.role != want or info.acquisition_clock_s is None:
            continue
        if abs(info.acquisition_clock_s - me.acquisition_clock_s) < 1e-3 and info.echo_number == me.echo_number:
            out.append(cand)
    return out


def _rule_words(path, want):
    stem, folder = _stem(path), os.path.dirname(path)
    a, b = ("magnitude", "phase") if want == roles.PHASE else ("phase", "magnitude")
    return _existing(folder, [stem.replace(a, b)], path) if a in stem else []


RULES = (
    ("BIDS part-mag/part-phase", _rule_bids),
    ("dcm2niix _ph suffix", _rule_ph_suffix),
    ("dcm2niix series numbering (_<N>_e<k> and _<N+1>_e<k>_ph)", _rule_series_number),
    ("a sidecar with the partner's ImageType, AcquisitionTime and EchoNumber", _rule_sidecar),
    ("the words magnitude/phase in the name", _rule_words),
)


def find_partner(path, want: str):
    """``(partner path or None, rule name or None)`` for the ``want`` role (``"magnitude"`` or ``"phase"``)."""
    path = os.fspath(path)
    for name, rule in RULES:
        found = rule(path, want)
        if len(found) == 1:
            return found[0], name
    return None, None


def rules_text() -> str:
    """The names of the partner rules, in order, for messages."""
    return "; ".join(name for name, _ in RULES)
