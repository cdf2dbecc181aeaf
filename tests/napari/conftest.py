import pytest

napari = pytest.importorskip("napari")


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory):
    """The napari sample: phantom, thermometry run and window check, in a temporary folder."""
    from napari_mrtherm._sample import build_sample
    return build_sample(str(tmp_path_factory.mktemp("sample")))
