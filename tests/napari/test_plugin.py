"""napari plugin under Xvfb (pytest-xvfb): reader, geometry, widgets, sample data, screenshot."""

import json
import os
import time

import numpy as np
import pytest

napari = pytest.importorskip("napari")
import nibabel as nib  # noqa: E402

import mrtherm  # noqa: E402
from mrtherm.io import niftiio  # noqa: E402
from napari_mrtherm import _model  # noqa: E402
from napari_mrtherm._reader import get_reader  # noqa: E402

PLUGIN = "mrtherm"  # npe2 requires the manifest name to equal the distribution name


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    from napari_mrtherm._sample import build_sample
    return build_sample(str(tmp_path_factory.mktemp("sample")))


def _layer(viewer, name_start):
    return next(ly for ly in viewer.layers if ly.name.startswith(name_start))


def test_reader_declines_foreign_paths(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    niftiio.save_volume(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "scan.nii.gz")
    assert get_reader(str(tmp_path / "other")) is None
    assert get_reader(str(tmp_path / "x.json")) is None
    assert get_reader(str(tmp_path / "scan.nii.gz")) is None
    assert get_reader(str(tmp_path / "missing.txt")) is None


def test_open_run_folder_layers_and_world_placement(make_napari_viewer, run_folder):
    viewer = make_napari_viewer()
    viewer.open(run_folder, plugin=PLUGIN)
    names = [ly.name for ly in viewer.layers]
    for expected in ("anatomy", "labels", "temperature (C)", "CEM43 dose (log10 min)", "lesion 240 CEM43",
                     "acoustic window rays"):
        assert any(n.startswith(expected) for n in names), names
    temp = _layer(viewer, "temperature")
    img = nib.load(os.path.join(run_folder, "temperature.nii.gz"))
    assert temp.data.shape == img.shape[::-1]
    assert tuple(temp.contrast_limits) == (37.0, 90.0)
    # voxel (x, y, z) = (11, 20, 3) at frame 5 lands at the NIfTI world position
    world = img.affine @ np.array([11, 20, 3, 1.0])
    got = temp.data_to_world((5, 3, 20, 11))
    np.testing.assert_allclose(np.asarray(got)[-3:], world[:3][::-1], atol=1e-6)
    anat = _layer(viewer, "anatomy")
    np.testing.assert_allclose(np.asarray(anat.data_to_world((3, 20, 11))), world[:3][::-1], atol=1e-6)
    labels = _layer(viewer, "labels")
    assert labels.colormap.map(np.array([10]))[0][0] == pytest.approx(1.0)  # the cord highlighted in red
    rays = _layer(viewer, "acoustic window rays")
    report = json.load(open(os.path.join(run_folder, "window", "report.json")))
    assert len(rays.data) == len(report["elements"])
    red = np.asarray(_model.STATUS_COLOURS["blocked"])
    blocked = [i for i, e in enumerate(report["elements"]) if e["status"] == "blocked"]
    np.testing.assert_allclose(rays.edge_color[blocked[0]], red, atol=1e-6)


def test_single_map_and_report_json_open(make_napari_viewer, run_folder):
    viewer = make_napari_viewer()
    viewer.open(os.path.join(run_folder, "tmax.nii.gz"), plugin=PLUGIN)
    viewer.open(os.path.join(run_folder, "report.json"), plugin=PLUGIN)
    assert viewer.layers[0].name == "tmax"
    assert any(ly.name.startswith("temperature") for ly in viewer.layers)


def test_oblique_affine(make_napari_viewer, tmp_path):
    rot = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([1.5, 1.2, 3.0]) @ np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)],
                                                            [0, np.sin(0.2), np.cos(0.2)]])
    aff[:3, 3] = [-20.0, 13.0, 7.5]
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    niftiio.save_volume(data, aff, tmp_path / "tmax.nii.gz")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "tmax.nii.gz"), plugin=PLUGIN)
    layer = viewer.layers[0]
    for zyx in [(0, 0, 0), (4, 5, 6), (2, 3, 1)]:
        expected = (aff @ np.array([zyx[2], zyx[1], zyx[0], 1.0]))[:3][::-1]
        np.testing.assert_allclose(np.asarray(layer.data_to_world(zyx)), expected, atol=1e-9)


def test_second_anatomy_on_another_grid_overlays(make_napari_viewer, run_folder):
    """A finer 'planning T2' with its own affine: world points give the same tissue in both layers."""
    viewer = make_napari_viewer()
    viewer.open(run_folder, plugin=PLUGIN)
    labels = _layer(viewer, "labels")
    lab_img = nib.load(os.path.join(run_folder, "labels.nii.gz"))
    lab = np.asarray(lab_img.dataobj).transpose(2, 1, 0)
    # T2 grid: half the voxel size in-plane, shifted by a quarter voxel, slices shared
    t2_aff = lab_img.affine.copy()
    t2_aff[:2, :2] /= 2.0
    t2_aff[:3, 3] += np.array([-0.5, -0.5, 0.0])
    nz, ny, nx = lab.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(2 * ny), np.arange(2 * nx), indexing="ij")
    world = np.stack([i, j, k, np.ones_like(i)], -1) @ t2_aff.T
    src = world @ np.linalg.inv(lab_img.affine).T
    si = np.clip(np.floor(src[..., :3] + 0.5).astype(int), 0, [nx - 1, ny - 1, nz - 1])
    t2 = lab[si[..., 2], si[..., 1], si[..., 0]].astype(np.float32)
    t2_layer = viewer.add_image(t2, affine=_model.napari_affine(t2_aff), name="T2")
    rng = np.random.default_rng(1)
    for _ in range(50):
        zyx_t2 = (int(rng.integers(nz)), int(rng.integers(2 * ny)), int(rng.integers(2 * nx)))
        w = t2_layer.data_to_world(zyx_t2)
        d = np.round(np.asarray(labels.world_to_data(w))).astype(int)
        assert lab[tuple(d)] == t2[zyx_t2]


def _wait_worker(qtbot, widget, timeout=60000):
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.worker.is_running, timeout=timeout)


def test_thermometry_widget_runs_in_background(make_napari_viewer, qtbot, tmp_path):
    from qtpy.QtCore import QTimer
    from napari_mrtherm._widgets import ThermometryWidget
    paths = mrtherm.write_phantom(tmp_path / "exam", shape_zyx=(4, 96, 96), n_frames=30)
    viewer = make_napari_viewer()
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
    assert any(ly.name.startswith("temperature") for ly in viewer.layers)
    assert progress_seen and progress_seen[-1] == 30 and w.progress.value == 30
    assert len(ticks) >= 3  # the event loop kept running during the run
    gaps = np.diff(ticks)
    assert gaps.max() < 2.0, f"UI blocked for {gaps.max():.2f} s"


def test_dose_overlay_widget(make_napari_viewer, run_folder):
    from napari_mrtherm._widgets import DoseOverlayWidget
    viewer = make_napari_viewer()
    viewer.open(run_folder, plugin=PLUGIN)
    w = DoseOverlayWidget(viewer)
    w.dose_layer.reset_choices()
    w.levels.value = "17,240"
    vols = w.apply()
    dose = np.asarray(nib.load(os.path.join(run_folder, "dose_cem43.nii.gz")).dataobj)
    vox = abs(np.linalg.det(nib.load(os.path.join(run_folder, "dose_cem43.nii.gz")).affine[:3, :3])) / 1000
    assert vols[240.0] == pytest.approx(float((np.nan_to_num(dose) >= 240).sum() * vox))
    assert vols[17.0] >= vols[240.0] > 0
    assert "240 CEM43" in w.volumes.value
    lesions = [ly for ly in viewer.layers if ly.name.startswith("lesion")]
    assert {ly.name for ly in lesions} == {"lesion 17 CEM43", "lesion 240 CEM43"}
    w.contours.value = False
    assert not [ly for ly in viewer.layers if ly.name.startswith("lesion")]
    w.opacity.value = 0.3
    assert w.dose_layer.value.opacity == pytest.approx(0.3)


def test_temperature_curve_widget(make_napari_viewer, run_folder):
    from napari_mrtherm._widgets import TemperatureCurveWidget
    viewer = make_napari_viewer()
    viewer.open(run_folder, plugin=PLUGIN)
    w = TemperatureCurveWidget(viewer)
    temp = _layer(viewer, "temperature")
    truth = _model.load_zyx(os.path.join(run_folder, "temperature.nii.gz"))[0]
    tmax = np.nanmax(truth, axis=0)
    hot = np.unravel_index(np.nanargmax(tmax), tmax.shape)
    world = temp.data_to_world((0,) + tuple(int(v) for v in hot))
    curve = w.plot_voxel(world)
    np.testing.assert_allclose(curve, truth[(slice(None),) + hot], equal_nan=True)
    assert "ALARM nerve root" in w.alarms.value
    # ROI: a square around the hot voxel on its slice, drawn in world coordinates
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


def test_acoustic_window_widget(make_napari_viewer, qtbot, run_folder, tmp_path):
    from mrtherm.window.transducer import spherical_cap
    from napari_mrtherm._widgets import AcousticWindowWidget
    viewer = make_napari_viewer()
    viewer.open(run_folder, plugin=PLUGIN)
    for ly in [ly for ly in viewer.layers if ly.name.startswith(("acoustic", "target"))]:
        viewer.layers.remove(ly)
    info = json.load(open(os.path.join(os.path.dirname(run_folder), "exam", "phantom.json")))
    sug = info["transducer_suggestion"]
    tr = spherical_cap(sug["radius_mm"], sug["aperture_mm"], 64, sug["focus_world_mm"], sug["axis"])
    tr.save(tmp_path / "t.json")
    viewer.add_points(_model.world_xyz_to_napari(np.asarray(sug["focus_world_mm"]))[None, :], name="my target")
    w = AcousticWindowWidget(viewer)
    w.labels_layer.reset_choices()
    w.labels_layer.value = _layer(viewer, "labels")
    w.points_layer.reset_choices()
    w.points_layer.value = _layer(viewer, "my target")
    w.transducer_file.value = str(tmp_path / "t.json")
    assert w.start() is not None
    _wait_worker(qtbot, w)
    qtbot.waitUntil(lambda: w.report is not None, timeout=10000)
    assert w.verdict.value.startswith(f"verdict {w.report['verdict']}")
    assert "active_fraction" in w.rules.value
    rays = _layer(viewer, "acoustic window rays")
    assert len(rays.data) == 64


def test_sample_data_and_readme_screenshot(make_napari_viewer, tmp_path):
    """The README screenshot: written to a temporary folder, or to $MRTHERM_DOCS_DIR by ``make docs``."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "phantom")
    temp = _layer(viewer, "temperature")
    data = temp.data
    t_peak = int(np.argmax(data.reshape(data.shape[0], -1).max(axis=1)))
    z_peak = int(np.unravel_index(np.argmax(data[t_peak]), data.shape[1:])[0])
    for ly in viewer.layers:
        if ly.name.startswith(("acoustic", "target", "labels")):
            ly.visible = False
    viewer.dims.set_point(0, t_peak)
    viewer.dims.set_point(1, float(temp.data_to_world((t_peak, z_peak, 0, 0))[1]))
    viewer.window.resize(900, 800)
    _model.radiological_view(viewer)
    viewer.reset_view()
    viewer.screenshot(canvas_only=False)  # renders the hidden window once; canvas-only shots are black before
    shot = viewer.screenshot(canvas_only=True)
    rgb = shot[..., :3].astype(int)
    colourful = rgb.max(axis=-1) - rgb.min(axis=-1) > 80       # overlay colours over grey anatomy
    dose_green = colourful & (rgb[..., 1] > rgb[..., 0] + 40) & (rgb[..., 1] > rgb[..., 2])  # viridis high dose
    heat = colourful & (rgb[..., 0] > rgb[..., 1] + 40)        # inferno temperature (purple to orange)
    grey = (np.abs(rgb[..., 0] - rgb[..., 1]) < 8) & (np.abs(rgb[..., 1] - rgb[..., 2]) < 8) & (rgb[..., 0] > 40)
    from PIL import Image
    Image.fromarray(shot).save(os.path.join(os.environ.get("MRTHERM_DOCS_DIR") or tmp_path, "dose_overlay.png"))
    assert dose_green.sum() > 30 and heat.sum() > 10 and grey.sum() > 5000


def test_open_dicom_thermometry_folder(make_napari_viewer, tmp_path):
    """A DICOM folder opens as magnitude and phase (rad) placed by the DICOM geometry, frames read lazily."""
    from mrtherm.io.dicom.synth import write_dicom_exam
    ph = mrtherm.make_phantom(shape_zyx=(4, 48, 48), voxel_mm=(4.0, 2.0, 2.0), n_frames=6, seed=1)
    rot = np.eye(4)
    rot[:3, :3] = [[np.cos(0.4), -np.sin(0.4), 0], [np.sin(0.4), np.cos(0.4), 0], [0, 0, 1]]
    aff = rot @ ph.affine
    folder = write_dicom_exam(tmp_path / "dicom", ph.magnitude, ph.phase_rad, aff, ph.te_s, ph.b0_t,
                              ph.frame_times_s, vendor="philips")
    viewer = make_napari_viewer()
    viewer.open(folder, plugin=PLUGIN)
    mag, phase = _layer(viewer, "magnitude"), _layer(viewer, "phase (rad)")
    assert mag.data.shape == (6, 4, 48, 48) and phase.data.shape == (6, 4, 48, 48)
    world = aff @ np.array([7, 30, 2, 1.0])  # voxel (x, y, z) = (7, 30, 2)
    np.testing.assert_allclose(np.asarray(mag.data_to_world((3, 2, 30, 7)))[-3:], world[:3][::-1], atol=1e-5)
    got = np.asarray(phase.data[4, 2])
    err = np.angle(np.exp(1j * (got - ph.phase_rad[4, 2])))
    assert np.abs(err).max() < 2e-3  # Philips stores 4096 levels over 2 pi
