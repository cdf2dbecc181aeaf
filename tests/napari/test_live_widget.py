"""The Live dock widget under Xvfb: it follows a live folder while ``mrtherm live`` (in process) gets frames."""

import os
import sys
import time

import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pynetdicom")

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from live_tools import make_treatment, scanner_order  # noqa: E402

from mrtherm.live.session import LiveSession  # noqa: E402
from mrtherm.thermometry.params import ThermometryParams  # noqa: E402
from napari_helpers import layer_named  # noqa: E402
from napari_mrtherm import _model, _view  # noqa: E402
from napari_mrtherm._live_widget import LiveWidget  # noqa: E402


def _frame_of(widget):
    return widget.status.value


def test_live_widget_follows_the_folder_frame_by_frame(make_napari_viewer, qtbot, tmp_path):
    src, _ = make_treatment(tmp_path / "dicom", n_sonications=1, shape_zyx=(2, 24, 24), n_frames=10)
    files = scanner_order(src)  # 10 frames x 2 slices x 2 components
    out = tmp_path / "live"
    session = LiveSession(out, {"params": ThermometryParams(baseline_frames=3), "slices": 2})
    viewer = make_napari_viewer()
    widget = LiveWidget(viewer)
    widget.start(str(out))
    try:
        for k in range(10):
            for path in files[4 * k: 4 * k + 4]:
                assert session.receive(open(path, "rb").read(), path) == 0
            if k < 2:
                continue
            t_sent = time.monotonic()
            qtbot.waitUntil(lambda: f"frame {k + 1} " in _view.text_overlay(viewer).text, timeout=3000)
            if k > 2:  # after the first snapshot (baseline, layers created): within a second of the frame
                assert time.monotonic() - t_sent < 1.0, k
        dose_layer = layer_named(viewer, "live CEM43 dose")
        expected = _model.load_zyx(out / "dose_cem43.nii.gz")[0]
        np.testing.assert_array_equal(dose_layer.data, _model.display_dose(expected))
        assert layer_named(viewer, "live temperature").data.shape == (2, 24, 24)
        assert layer_named(viewer, "live lesion 240").contour == 1
        assert viewer.layers[0].name == "live anatomy"
        text = _view.text_overlay(viewer).text
        assert "LIVE  sonication 1  frame 10" in text and "peak" in text and "°C" in text
    finally:
        worker = widget.worker
        widget.stop()
        session.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=2000)  # a stopped follower leaves no thread behind
