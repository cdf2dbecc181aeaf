"""Results into a real PACS (Orthanc on 127.0.0.1): ``mrtherm export ... --send`` and ``mrtherm live --export-to``.

What Orthanc returns through its REST API is compared with what was exported: the same SOP Instance UIDs, the same
Parametric Map values, the scanner's study for a live treatment."""

import io
import os
import shutil
import subprocess
import time

import numpy as np
import pydicom
import pytest

from mrtherm.cli import main
from orthanc_tools import orthanc_available, start_orthanc

pytest.importorskip("highdicom")
pytestmark = pytest.mark.skipif(not orthanc_available(), reason="Orthanc (Debian package orthanc) not installed")


@pytest.fixture
def orthanc(tmp_path):
    server = start_orthanc(tmp_path / "orthanc")
    try:
        yield server
    finally:
        server.stop()


def test_export_send_stores_every_object_and_orthanc_returns_the_same_maps(orthanc, tmp_path, capsys):
    from live_tools import make_treatment
    src, _ = make_treatment(tmp_path / "dicom", n_sonications=1, shape_zyx=(2, 24, 24), n_frames=8)
    run = tmp_path / "run"
    assert main(["run", "--dicom", str(src), "--out", str(run), "--quiet"]) == 0
    out = tmp_path / "exported"
    assert main(["export", str(run), "--dicom", str(out), "--send", f"127.0.0.1:{orthanc.dicom_port}",
                 "--called-ae", "ORTHANC"]) == 0
    assert "sent 5 of 5 objects to ORTHANC" in capsys.readouterr().out
    local = {str(pydicom.dcmread(out / n).SOPInstanceUID): out / n for n in os.listdir(out)}
    assert orthanc.sop_instance_uids() == set(local)
    for instance in orthanc.instances():
        back = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance)))
        mine = pydicom.dcmread(local[str(back.SOPInstanceUID)])
        if "FloatPixelData" in mine or "DoubleFloatPixelData" in mine:
            assert np.array_equal(back.pixel_array, mine.pixel_array, equal_nan=True)


def test_live_export_to_sends_each_finished_sonication_into_the_scanners_study(orthanc, tmp_path):
    from live_tools import make_treatment, scanner_order
    from mrtherm.live.session import LiveSession
    from mrtherm.thermometry.params import ThermometryParams
    src, _ = make_treatment(tmp_path / "dicom", n_sonications=2, shape_zyx=(2, 24, 24), n_frames=8)
    files = scanner_order(src)
    session = LiveSession(tmp_path / "live", {"params": ThermometryParams(), "export_to":
                                             f"127.0.0.1:{orthanc.dicom_port}", "export_called_ae": "ORTHANC"})
    for path in files:
        assert session.receive(open(path, "rb").read(), path) == 0
    deadline = time.time() + 120
    while time.time() < deadline and session.state.frames_processed < 16:
        time.sleep(0.05)
    session.close()  # the second sonication ends here; close waits for its export
    study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    stored = [orthanc.instance_tags(i) for i in orthanc.instances()]
    assert len(stored) == 2 * 4  # per sonication: two Parametric Maps, the Segmentation, the Measurement Report
    assert {t["StudyInstanceUID"] for t in stored} == {study}
    assert sorted(os.listdir(tmp_path / "live" / "dicom")) == ["sonication_01", "sonication_02"]
    if shutil.which("dciodvfy"):
        for path in (tmp_path / "live" / "dicom").rglob("*.dcm"):
            run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
            assert not [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")], path
