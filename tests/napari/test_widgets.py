"""The four dock widgets under Xvfb: each in use, errors inline, docks together on a 1920x1080 screen."""

import pytest

napari = pytest.importorskip("napari")  # the plugin needs the napari extra

import json
import os
import time
import warnings

import numpy as np

import nibabel as nib

import mrtherm
from napari_helpers import PLUGIN, docs_dir, layer_named, save_png
from napari_mrtherm import _app, _model, _view


def _open(make_napari_viewer, run_folder, **kw):
    viewer = make_napari_viewer(**kw)
    viewer.open(run_folder, plugin=PLUGIN)
    viewer.screenshot(canvas_only=False)  # draws the hidden test window once, as showing it would
    return viewer


def _read_json(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _report_times(run_folder):
    return _read_json(os.path.join(run_folder, "report.json"))["exam"]["frame_times_s"]


def _wait_worker(qtbot, widget, timeout=60000):
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.worker.is_running, timeout=timeout)


def _window_shot(viewer, qtbot, folder, name):
    qtbot.wait(200)
    save_png(viewer.screenshot(canvas_only=False), folder, name)


def test_thermometry_widget_runs_in_background_and_replaces_layers(make_napari_viewer, qtbot, tmp_path, run_folder):
    from qtpy.QtCore import QTimer
    from napari_mrtherm._thermometry_widget import ThermometryWidget
    paths = mrtherm.write_phantom(tmp_path / "exam", shape_zyx=(4, 96, 96), n_frames=30)
    viewer = _open(make_napari_viewer, run_folder)
    w = ThermometryWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.magnitude_file.value = paths["magnitude"]
    w.labels_file.value = paths["labels"]
    w.baseline.value = 5
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    worker = w.start()
    assert worker is not None
    progress_seen = []
    worker.yielded.connect(progress_seen.append)
    _wait_worker(qtbot, w)
    qtbot.waitUntil(lambda: not w.status.value.startswith("running"), timeout=10000)
    timer.stop()
    assert w.status.value.startswith("done"), w.status.value
    names = [ly.name for ly in viewer.layers]
    assert names.count("anatomy") == 1 and names.count("temperature (C)") == 1, names  # replaced, no 'anatomy [1]'
    assert viewer.layers[0].name == "anatomy"  # below every overlay
    assert layer_named(viewer, "temperature").data.shape[0] == 30
    assert progress_seen and progress_seen[-1] == 30 and w.progress.value == 30
    assert len(ticks) >= 3  # the event loop kept running during the run
    assert np.diff(ticks).max() < 2.0, f"UI blocked for {np.diff(ticks).max():.2f} s"
    _window_shot(viewer, qtbot, docs_dir(tmp_path), "napari_thermometry_widget.png")


def test_thermometry_widget_passes_the_reference_choice(make_napari_viewer, monkeypatch, tmp_path):
    from napari_mrtherm import _thermometry_widget
    paths = mrtherm.write_phantom(tmp_path / "exam", shape_zyx=(2, 32, 32), n_frames=6)
    seen = {}
    monkeypatch.setattr(_thermometry_widget, "_run_worker", lambda exam, kwargs, out: seen.update(kwargs) or None)
    w = _thermometry_widget.ThermometryWidget(make_napari_viewer())
    w.magnitude_file.value = paths["magnitude"]
    assert w.reference.value == "auto" and w.reference.choices == ("auto", "mean", "library", "referenceless", "hybrid")
    w.reference.value = "library"
    try:
        w.start()
    except AttributeError:  # the stand-in worker is None: nothing to connect
        pass
    assert seen["reference"] == "library" and seen["target_mm"] is None
    w.target.value = "10, -5.5, 2"
    try:
        w.start()
    except AttributeError:
        pass
    assert seen["target_mm"] == (10.0, -5.5, 2.0)
    w.target.value = "10, -5.5"
    assert w.start() is None and "X, Y, Z in world mm" in w.status.value


def test_thermometry_widget_input_errors_inline(make_napari_viewer):
    from napari_mrtherm._thermometry_widget import ThermometryWidget
    viewer = make_napari_viewer()
    w = ThermometryWidget(viewer)
    assert w.start() is None
    assert w.status.value == "error: choose a magnitude file, or magnitude and phase layers"


def test_dose_overlay_widget(make_napari_viewer, run_folder, qtbot, tmp_path):
    from napari_mrtherm._dose_widget import DoseOverlayWidget
    viewer = _open(make_napari_viewer, run_folder)
    w = DoseOverlayWidget(viewer)
    viewer.window.add_dock_widget(w, area="right")
    w.dose_layer.reset_choices()
    w.levels.value = "240, abc"
    assert w.apply() == {}
    assert w.volumes.value == "error: dose level 'abc' is not a number (CEM43 minutes, e.g. 240, 40)"
    w.levels.value = "17,240"
    vols = w.apply()
    img = nib.load(os.path.join(run_folder, "dose_cem43.nii.gz"))
    dose = np.asarray(img.dataobj)
    vox = abs(np.linalg.det(img.affine[:3, :3])) / 1000
    assert vols[240.0] == pytest.approx(float((np.nan_to_num(dose) >= 240).sum() * vox))
    assert vols[17.0] >= vols[240.0] > 0
    lesions = {ly.name for ly in viewer.layers if ly.name.startswith("lesion")}
    assert lesions == {"lesion 17 CEM43 (blue)", "lesion 240 CEM43 (cyan)"}  # colour per level, not per position
    assert all(not ly.editable and ly.contour > 0 for ly in viewer.layers if ly.name.startswith("lesion"))
    # volumes follow the frame: nothing at frame 0
    viewer.dims.set_point(0, viewer.dims.range[0].start)
    assert w.last_volumes["now"][240.0] == 0.0 and "0.000 mL at 0.0 s" in w.volumes.value
    viewer.dims.set_point(0, viewer.dims.range[0].stop)
    assert w.last_volumes["now"][240.0] == pytest.approx(vols[240.0])
    _window_shot(viewer, qtbot, docs_dir(tmp_path), "napari_dose_widget.png")
    w.contours.value = False
    assert not [ly for ly in viewer.layers if ly.name.startswith("lesion")]
    w.opacity.value = 0.3
    assert w.dose_layer.value.opacity == pytest.approx(0.3)


def test_temperature_curve_widget(make_napari_viewer, run_folder, qtbot, tmp_path):
    from napari_mrtherm._curve_widget import CANVAS_HEIGHT_PX, TemperatureCurveWidget
    viewer = _open(make_napari_viewer, run_folder)
    w = TemperatureCurveWidget(viewer)
    viewer.window.add_dock_widget(w, area="right")
    temp = layer_named(viewer, "temperature")
    truth = _model.load_zyx(os.path.join(run_folder, "temperature.nii.gz"))[0]
    times = _report_times(run_folder)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # masked voxels are NaN in every frame
        tmax = np.nanmax(truth, axis=0)
    hot = np.unravel_index(np.nanargmax(tmax), tmax.shape)
    world = temp.data_to_world((0,) + tuple(int(v) for v in hot))
    curve = w.plot_voxel(world)
    np.testing.assert_allclose(curve, truth[(slice(None),) + hot], equal_nan=True)
    labels = [t.get_text() for t in w.figure.axes[0].get_legend().get_texts()]
    assert labels.count("voxel") == 1 and "nerve root (max)" in labels and "current frame" in labels
    assert "ALARM nerve root" in w.alarms.value
    viewer.dims.set_point(0, times[7])
    assert w.marker_time_s() == pytest.approx(times[7])
    assert w.canvas.height() >= CANVAS_HEIGHT_PX
    _window_shot(viewer, qtbot, docs_dir(tmp_path), "napari_curve_widget.png")
    z, y, x = hot
    corners = [(z, y - 2, x - 2), (z, y - 2, x + 2), (z, y + 2, x + 2), (z, y + 2, x - 2)]
    poly = np.array([np.asarray(temp.data_to_world((0,) + c))[-3:] for c in corners])
    shapes = viewer.add_shapes([poly], shape_type="polygon", name="roi")
    w.roi_layer.reset_choices()
    w.roi_layer.value = shapes
    mean, mx = w.plot_roi()
    block = truth[:, z, y - 2:y + 3, x - 2:x + 3]
    assert np.nanmax(mx) <= np.nanmax(block) + 1e-6 and np.nanmax(mx) == pytest.approx(np.nanmax(tmax), abs=1e-4)
    assert np.all(mean <= mx + 1e-6)


def test_acoustic_window_widget_keeps_the_slice(make_napari_viewer, qtbot, run_folder, tmp_path):
    from napari_mrtherm._window_widget import AcousticWindowWidget
    viewer = _open(make_napari_viewer, run_folder)
    w = AcousticWindowWidget(viewer)
    viewer.window.add_dock_widget(w, area="left")
    assert w.transducer_file.value is not None and str(w.transducer_file.value).endswith("transducer.json")
    info = _read_json(os.path.join(os.path.dirname(run_folder), "exam", "phantom.json"))
    viewer.add_points(_model.world_xyz_to_napari(np.asarray(info["transducer_suggestion"]["focus_world_mm"]))[None],
                      name="my target")
    w.labels_layer.reset_choices()
    w.labels_layer.value = layer_named(viewer, "labels")
    w.points_layer.reset_choices()
    w.points_layer.value = layer_named(viewer, "my target")
    viewer.dims.set_point(1, viewer.dims.range[1].start + viewer.dims.range[1].step)
    before = tuple(viewer.dims.point)
    nsteps = viewer.dims.nsteps
    assert w.start() is not None
    _wait_worker(qtbot, w)
    qtbot.waitUntil(lambda: w.report is not None, timeout=10000)
    assert tuple(viewer.dims.point) == pytest.approx(before) and viewer.dims.nsteps == nsteps
    assert w.verdict.value.startswith(f"verdict {w.report['verdict']}: active area")
    text = w.rules.value
    assert "active transducer area" in text and "{" not in text and "None" not in text
    assert "focus to spinal cord / nerve root" in text and " mm" in text
    assert len(layer_named(viewer, "acoustic window rays").data) == w.report["transducer"]["elements"]
    _window_shot(viewer, qtbot, docs_dir(tmp_path), "napari_window_widget.png")


def test_acoustic_window_widget_errors_inline(make_napari_viewer):
    from napari_mrtherm._window_widget import AcousticWindowWidget
    viewer = make_napari_viewer()
    viewer.add_labels(np.ones((3, 4, 4), np.int32), name="labels")
    viewer.add_points(np.array([[1.0, 2.0, 2.0]]), name="t")
    w = AcousticWindowWidget(viewer)
    w.labels_layer.reset_choices()
    w.points_layer.reset_choices()
    assert w.start() is None
    assert w.verdict.value == "error: choose a transducer JSON file (mrtherm window transducer writes one)"


def test_orientation_stays_when_docks_open(make_napari_viewer, run_folder):
    viewer = _open(make_napari_viewer, run_folder)
    before = tuple(_view.camera(viewer).orientation2d)
    assert before == _view.ORIENTATION
    _app.add_docks(viewer, ("dose", "curve", "thermometry", "window"))
    assert tuple(_view.camera(viewer).orientation2d) == before


def test_four_docks_fit_a_1080p_screen_and_readme_view(make_napari_viewer, run_folder, qtbot, tmp_path):
    """All four docks beside the canvas on 1920x1080; the README image (opened run, hottest frame)."""
    viewer = _open(make_napari_viewer, run_folder)
    window = viewer.window._qt_window
    window.resize(1920, 1080)
    docks = _app.add_docks(viewer, ("dose", "curve", "thermometry", "window"))
    docks["dose"].apply()
    temp = layer_named(viewer, "temperature")
    hot = np.unravel_index(np.nanargmax(_view.meta(temp)["temperature_c"]), temp.data.shape)
    docks["curve"].plot_voxel(temp.data_to_world(hot))
    qtbot.wait(300)
    assert window.height() <= 1080 and window.width() <= 1920
    assert docks["curve"].canvas.height() >= 250
    folder = docs_dir(tmp_path)
    save_png(viewer.screenshot(canvas_only=False), folder, "napari_four_docks_1080p.png")
    for ly in viewer.layers:
        if ly.name.startswith(("acoustic", "target")):
            ly.visible = False
    for dock in list(viewer.window._dock_widgets.values()):
        viewer.window.remove_dock_widget(dock)
    window.resize(1100, 850)
    qtbot.wait(200)
    viewer.reset_view()
    viewer.layers.selection.active = temp  # its controls, not a (locked) lesion layer's
    cam = _view.camera(viewer)
    cam.center = tuple(np.asarray(temp.data_to_world(hot))[-2:])
    cam.zoom = cam.zoom * 2.5
    save_png(viewer.screenshot(canvas_only=False), folder, "dose_overlay.png")


def test_mrtherm_view_opens_the_run_with_docks(run_folder, qtbot):
    viewer = _app.open_view(run_folder, docks=("dose", "curve"), show=False)
    try:
        assert any(ly.name.startswith("temperature") for ly in viewer.layers)
        assert set(viewer.window._dock_widgets) >= {"Dose overlay", "Temperature curve"}
    finally:
        viewer.close()


def test_mrtherm_view_finds_the_napari_viewer_by_entry_point():
    from mrtherm.cli.view import find_viewer
    assert find_viewer() is _app.run_view


def test_mrtherm_view_refuses_what_it_cannot_open(tmp_path, capsys):
    from mrtherm.cli import main
    (tmp_path / "empty").mkdir()
    assert main(["view", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"mrtherm: error: {tmp_path / 'missing'}: no such file or folder"
    assert main(["view", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mrtherm: error: {tmp_path / 'empty'}: not an mrtherm run folder") and "\n" not in err
