"""Outputs are written completely or not at all (DESIGN.md): files and folders."""

import os

import pytest

from mrtherm.io.atomic import atomic_file, staged


def test_a_file_appears_only_once_written_and_an_error_keeps_the_old_one(tmp_path):
    path = tmp_path / "report.json"
    with atomic_file(path, "w", encoding="utf-8") as fh:
        fh.write("first")
        assert not path.exists()  # nothing under the final name while writing
    assert path.read_text(encoding="utf-8") == "first"
    with pytest.raises(RuntimeError), atomic_file(path, "w", encoding="utf-8") as fh:
        fh.write("half")
        raise RuntimeError("disk full")
    assert path.read_text(encoding="utf-8") == "first"
    assert os.listdir(tmp_path) == ["report.json"]  # no temporary file left behind


def test_a_folder_is_committed_whole_or_discarded(tmp_path):
    out = tmp_path / "run"
    with staged(out) as stage:
        assert not out.exists()
        open(os.path.join(stage, "dose.nii.gz"), "wb").close()
    assert os.listdir(out) == ["dose.nii.gz"]
    with pytest.raises(RuntimeError), staged(out) as stage:
        open(os.path.join(stage, "tmax.nii.gz"), "wb").close()
        raise RuntimeError("interrupted")
    assert os.listdir(out) == ["dose.nii.gz"]
    assert sorted(os.listdir(tmp_path)) == ["run"]
