"""All-or-nothing output folders: write into a hidden staging folder, then move into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


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
