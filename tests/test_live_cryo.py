"""Cryoablation followed live: the ice ball is masked out of PRF frame by frame, as ``mrtherm run --modality cryo``
does for the same images, and a session that stops mid-freeze (its checkpoint reloaded by a new session) keeps the
ice found before the stop.

Truth: the cryo phantom's own ice volumes (radius known per frame); the batch run on the same DICOM files.
"""

import json
import os

import numpy as np
import pytest

from mrtherm.cryo import CryoParams
from mrtherm.cryo.phantom import make_cryo_phantom
from mrtherm.thermometry.params import ThermometryParams

pytest.importorskip("pydicom")

SHAPE, FRAMES, BASELINE = (2, 48, 48), 10, 3


@pytest.fixture(scope="module")
def cryo_dicom(tmp_path_factory):
    from mrtherm.io.dicom.synth import write_dicom_exam
    ph = make_cryo_phantom(shape_zyx=SHAPE, voxel_mm=(4.0, 2.0, 2.0), n_frames=FRAMES, frame_time_s=10.0,
                           baseline_frames=BASELINE, freeze_on_s=30.0, max_radius_mm=10.0, seed=3)
    folder = write_dicom_exam(str(tmp_path_factory.mktemp("cryo") / "dicom"), ph.magnitude, ph.phase_rad, ph.affine,
                              ph.te_s, ph.b0_t, ph.frame_times_s)
    from live_tools import scanner_order
    return ph, folder, [(p, open(p, "rb").read()) for p in scanner_order(folder)]


def _options(ph):
    tip = tuple(ph.info["cryo"]["tip_world_mm"])
    return {"params": ThermometryParams(baseline_frames=BASELINE), "slices": SHAPE[0],
            "cryo": CryoParams(tips_mm=(tip,)).validate()}


def _feed(out, ph, files):
    from mrtherm.live.session import LiveSession
    session = LiveSession(out, _options(ph))
    for path, data in files:
        assert session.receive(data, path) == 0
    return session


def _live_report(out):
    with open(os.path.join(out, "report.json"), encoding="utf-8") as fh:
        return json.load(fh)


def test_live_masks_the_ice_as_the_batch_run_does(cryo_dicom, tmp_path):
    from mrtherm.app.driver import run
    from mrtherm.app.options import RunRequest
    ph, folder, files = cryo_dicom
    session = _feed(tmp_path / "live", ph, files)
    session.close()
    (son,) = _live_report(tmp_path / "live")["sonications"]
    assert son["frames_processed"] == FRAMES
    cryo = son["cryo"]
    truth_ml = ph.info["cryo"]["visible_ice_ml_per_frame"][-1]
    assert truth_ml > 0.3
    assert cryo["max_ice_ml"] == pytest.approx(truth_ml, rel=0.35)  # segmentation against the phantom's ice
    tip = tuple(ph.info["cryo"]["tip_world_mm"])
    run(RunRequest(out=str(tmp_path / "batch"), dicom=folder, baseline_frames=BASELINE, modality="cryo",
                   cryo_tip=[list(tip)], no_figures=True, quiet=True))
    with open(tmp_path / "batch" / "report.json", encoding="utf-8") as fh:
        batch = json.load(fh)["cryo"]
    assert [f["ice_ml"] for f in cryo["frames"]] == pytest.approx([f["ice_ml"] for f in batch["frames"]], abs=1e-9)
    # the temperature of the last frame: NaN on the ice and its rim, as in the batch series
    import nibabel as nib
    live_t = nib.load(str(tmp_path / "live" / "temperature.nii.gz")).get_fdata()
    batch_t = np.asarray(nib.load(str(tmp_path / "batch" / "temperature.nii.gz")).dataobj[..., -1])
    np.testing.assert_array_equal(np.isnan(live_t), np.isnan(batch_t))
    assert np.isnan(live_t).sum() > 0


def test_a_stopped_session_resumes_with_the_ice_it_had(cryo_dicom, tmp_path):
    ph, _, files = cryo_dicom
    out = tmp_path / "live"
    first = _feed(out, ph, files[: len(files) * 8 // 10])  # stopped in the freeze
    first.close()
    before = _live_report(out)["sonications"][0]["cryo"]["frames"]
    assert before and before[-1]["ice_ml"] > 0
    second = _feed(out, ph, files)  # the scanner re-sends everything; the rest is new
    second.close()
    resumed = _live_report(out)["sonications"][0]["cryo"]
    whole = _feed(tmp_path / "whole", ph, files)
    whole.close()
    uninterrupted = _live_report(tmp_path / "whole")["sonications"][0]["cryo"]
    assert [f["ice_ml"] for f in resumed["frames"]] == [f["ice_ml"] for f in uninterrupted["frames"]]
    assert resumed["max_ice_ml"] == uninterrupted["max_ice_ml"]
