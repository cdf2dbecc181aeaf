"""All-or-nothing outputs: a file under a hidden temporary name renamed into place, a folder staged then moved."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading

from mrtherm.errors import MrthermError


# the hidden temporary names below: ``.<name>.tmp-<pid>-<thread>`` files and ``.<folder>.tmp-<random>`` folders
_LEFTOVER = re.compile(r"^\..+\.tmp-[^/]*$")


def staging_dir(out_dir) -> str:
    """A fresh hidden folder beside ``out_dir`` (same file system, so renames are atomic)."""
    out = os.path.abspath(os.fspath(out_dir))
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)


def commit(staging: str, out_dir) -> None:
    """Move a finished staging folder to ``out_dir``.

    A new ``out_dir`` is one rename. An existing one keeps unrelated files; each
    output replaces its namesake with ``os.replace`` (atomic per file).
    """
    out = os.path.abspath(os.fspath(out_dir))
    if not os.path.exists(out):
        os.rename(staging, out)
        return
    for root, _dirs, files in os.walk(staging):
        rel = os.path.relpath(root, staging)
        dest_root = out if rel == "." else os.path.join(out, rel)
        os.makedirs(dest_root, exist_ok=True)
        for name in files:
            os.replace(os.path.join(root, name), os.path.join(dest_root, name))
    shutil.rmtree(staging, ignore_errors=True)


def discard(staging: str) -> None:
    """Remove a staging folder and everything in it."""
    shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def staged(out_dir):
    """``with staged(out) as stage:`` write into ``stage``; committed to ``out`` on success, discarded on error."""
    stage = staging_dir(out_dir)
    try:
        yield stage
    except BaseException:
        discard(stage)
        raise
    commit(stage, out_dir)


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb", **open_kwargs):
    """``with atomic_file(path, "w") as fh:`` write a file completely or not at all.

    The data go to a hidden temporary file beside ``path`` (same folder, so the
    rename is atomic; hidden, so folder watchers and globs skip it), renamed over
    ``path`` once the block ends; on an error the temporary file is removed and
    ``path`` is untouched.

    Parameters
    ----------
    path : str or PathLike
        Final file name.
    mode : str
        Write mode for :func:`open` (``"wb"`` or ``"w"``).
    **open_kwargs
        Passed to :func:`open` (``encoding=...``).

    Yields
    ------
    file object
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def remove_leftovers(folder) -> int:
    """Remove the temporary files and staging folders writers killed mid-write left anywhere under ``folder``.

    Only while no other process writes there (the live service holds its folder's lock first).

    Parameters
    ----------
    folder : str

    Returns
    -------
    int
        How many were removed.
    """
    removed = 0
    for root, dirs, files in os.walk(os.fspath(folder)):
        for name in [d for d in dirs if _LEFTOVER.match(d)]:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            dirs.remove(name)
            removed += 1
        for name in filter(_LEFTOVER.match, files):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(root, name))
                removed += 1
    return removed


def check_out_dir(out: str, inputs):
    """Refuse an output that is a file, or the folder of an input (outputs would mix with inputs).

    Parameters
    ----------
    out : str
        Output folder asked for; it may not exist yet.
    inputs : iterable of str or None
        Input paths; ``None`` entries (optional inputs not given) are skipped.

    Raises
    ------
    MrthermError
        ``out`` is an existing file, or the folder that holds one of ``inputs``.
    """
    out_abs = os.path.abspath(out)
    if os.path.exists(out_abs) and not os.path.isdir(out_abs):
        raise MrthermError(f"{out}: output exists and is not a folder")
    for p in inputs:
        if p is None:
            continue
        if os.path.abspath(os.path.dirname(os.path.abspath(p))) == out_abs:
            raise MrthermError(f"{out}: output folder is the folder of input {p}; choose another --out "
                               "(outputs would overwrite or mix with inputs)")
