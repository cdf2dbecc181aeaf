"""--compress: every output stays a valid .nii.gz with the same values; level 0 stores, level 9 shrinks."""

import gzip

import nibabel as nib
import numpy as np

from mrtherm.cli import main


def test_compression_levels_change_size_not_content(tmp_path):
    assert main(["phantom", "--out", str(tmp_path / "ph"), "--frames", "8"]) == 0
    ph = tmp_path / "ph"
    outs = {}
    for level in ("0", "9"):
        out = tmp_path / f"run{level}"
        assert main(["run", "--magnitude", str(ph / "magnitude.nii.gz"), "--phase", str(ph / "phase.nii.gz"),
                     "--baseline-frames", "3", "--compress", level, "--out", str(out), "--quiet", "--no-figures"]) == 0
        outs[level] = out
    for name in ("temperature.nii.gz", "dose_cem43.nii.gz", "mask.nii.gz"):
        a, b = nib.load(outs["0"] / name), nib.load(outs["9"] / name)
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)
    temp = outs["0"] / "temperature.nii.gz"
    raw = len(gzip.decompress(temp.read_bytes()))  # a valid gzip stream
    assert raw >= nib.load(temp).get_fdata().size * 4  # float32 data inside
    assert temp.stat().st_size >= raw  # level 0: stored, not compressed
    assert (outs["9"] / "temperature.nii.gz").stat().st_size < 0.9 * raw
    import pytest
    with pytest.raises(SystemExit) as exc:  # argparse: usage line and exit status 2
        main(["run", "--magnitude", str(ph / "magnitude.nii.gz"), "--phase", str(ph / "phase.nii.gz"),
              "--compress", "12", "--out", str(tmp_path / "bad"), "--quiet"])
    assert exc.value.code == 2


def test_isal_and_zlib_writers_give_the_same_standard_gzip_content(tmp_path, monkeypatch):
    """With the ``fast`` extra (ISA-L) and without it, the .nii.gz files decompress with Python's own gzip to the
    same NIfTI bytes."""
    from mrtherm.io import niftiio
    data = np.random.default_rng(0).standard_normal((3, 8, 9, 10)).astype(np.float32)
    paths = {}
    for name, has_isal in (("isal", True), ("zlib", False)):
        if not has_isal:
            monkeypatch.setattr(niftiio, "_isal_igzip", lambda: None)
        elif niftiio._isal_igzip() is None:
            continue  # the fast extra is not installed here
        paths[name] = tmp_path / f"{name}.nii.gz"
        with niftiio.gzip_level(1):
            niftiio.save_volume(data, np.eye(4), paths[name])
            assert niftiio.gzip_writer_name().startswith("isal" if has_isal else "zlib")
    raw = {k: gzip.decompress(p.read_bytes()) for k, p in paths.items()}
    assert len(set(raw.values())) == 1
    for p in paths.values():
        np.testing.assert_array_equal(np.asarray(nib.load(p).dataobj).transpose(3, 2, 1, 0), data)


def test_isal_reader_gives_nibabel_frames_and_names_a_truncated_file(tmp_path, monkeypatch):
    """Inputs read through ISA-L (the ``fast`` extra) give the frames nibabel's own reader gives, header scaling
    included, and a truncated ``.nii.gz`` is a one-line error naming the file on either path."""
    import pytest
    from mrtherm.errors import InputFileError
    from mrtherm.io import niftiio
    if niftiio._isal_igzip() is None:
        pytest.skip("the fast extra (isal) is not installed")
    stored = np.random.default_rng(1).integers(0, 4096, size=(5, 4, 6, 7)).astype(np.int16)  # (t, z, y, x)
    path = tmp_path / "phase.nii.gz"
    niftiio.save_stored_integers(stored, np.diag([2.0, 2.0, 3.0, 1.0]), path, 2.0, -4096.0, frame_time_s=3.0)
    ref = nib.load(path)
    img = niftiio.load_nifti(path)
    assert type(img.dataobj.file_like).__module__.startswith("isal")  # the fast path is the one under test
    assert niftiio.scaling_of(img) == (2.0, -4096.0)
    assert niftiio.time_step_s(img) == 3.0
    for t in range(5):  # hand calculation of the scaling, against nibabel's own reader
        np.testing.assert_array_equal(niftiio.read_volume(img, str(path), t), stored[t] * 2.0 - 4096.0)
        np.testing.assert_array_equal(niftiio.read_volume(img, str(path), t), niftiio.read_volume(ref, str(path), t))
    # the data outlive the image object they came from (the stream stays open for them)
    whole = np.asarray(niftiio.load_nifti(path).dataobj)
    np.testing.assert_array_equal(whole.transpose(3, 2, 1, 0), stored * 2.0 - 4096.0)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for has_isal in (True, False):
        if not has_isal:
            monkeypatch.setattr(niftiio, "_isal_igzip", lambda: None)
        with pytest.raises(InputFileError, match="cut.nii.gz"):
            bad = niftiio.load_nifti(cut)
            for t in range(5):
                niftiio.read_volume(bad, str(cut), t)
