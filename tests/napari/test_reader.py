"""napari reader and operator view under Xvfb (pytest-xvfb): layers, geometry, time, dose per frame, overlay."""

import pytest

napari = pytest.importorskip("napari")  # the plugin needs the napari extra

import json
import os

import numpy as np

import nibabel as nib

import mrtherm
from mrtherm.io import niftiio
from napari_helpers import PLUGIN, canvas_shot, colour_pixels, docs_dir, layer_named, save_png
from napari_mrtherm import _layers, _model, _view
from napari_mrtherm._reader import get_reader


def _open_run(make_napari_viewer, run_folder):
    viewer = make_napari_viewer()
    # plugin=None: napari picks the reader itself, as for a drag or `napari path` (viewer.open's default in
    # napari 0.9 is its builtins); only mrtherm reads report.json, so no reader dialog
    viewer.open(os.path.join(run_folder, "report.json"), plugin=None)
    return viewer


def _report(run_folder):
    with open(os.path.join(run_folder, "report.json")) as fh:
        return json.load(fh)


def test_reader_declines_foreign_paths(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    niftiio.save_volume(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "scan.nii.gz")
    assert get_reader(str(tmp_path / "other")) is None
    assert get_reader(str(tmp_path / "x.json")) is None
    assert get_reader(str(tmp_path / "scan.nii.gz")) is None
    assert get_reader(str(tmp_path / "missing.txt")) is None


def test_run_opens_with_operator_view(make_napari_viewer, run_folder):
    viewer = _open_run(make_napari_viewer, run_folder)
    kinds = {ly.name: (_view.meta(ly).get("kind"), type(ly).__name__) for ly in viewer.layers}
    assert kinds["anatomy"] == ("anatomy", "Image") and kinds["labels"] == ("labels", "Labels")
    assert kinds["temperature (C)"] == ("temperature", "Image")
    assert kinds["CEM43 dose (log10 min)"] == ("dose", "Image")
    assert kinds["lesion 240 CEM43 (cyan)"] == ("lesion", "Labels") and kinds["lesion 40 CEM43 (green)"][0] == "lesion"
    assert any(n.startswith("acoustic window rays") for n in kinds)
    temp, dose = layer_named(viewer, "temperature"), layer_named(viewer, "CEM43 dose")
    assert temp.colorbar.visible and dose.colorbar.visible
    assert _view.scale_bar(viewer).visible and _view.text_overlay(viewer).visible
    for ly in viewer.layers:
        if ly.name.startswith(("lesion", "labels")):
            assert not ly.editable  # no paint tools: one click cannot edit them
        if ly.name.startswith("lesion"):
            assert ly.contour > 0  # outlines, not fills
    # sliders: one step per frame in seconds, one per slice in mm; nothing widened by the rays
    report = _report(run_folder)
    times = report["exam"]["frame_times_s"]
    nt, nz = report["exam"]["shape_tzyx"][:2]
    vz = report["exam"]["voxel_size_mm_zyx"][0]
    assert viewer.dims.axis_labels[:2] == ("t (s)", "z (mm)")
    assert viewer.dims.nsteps[:2] == (nt, nz)
    assert viewer.dims.range[0].start == pytest.approx(times[0])
    assert viewer.dims.range[0].step == pytest.approx(times[1] - times[0])
    assert viewer.dims.range[1].step == pytest.approx(vz)
    # opens at the hottest frame and slice
    assert layer_named(viewer, "temperature").data[_view.install(viewer).current_frame()].max() == \
        pytest.approx(np.nanmax(nib.load(os.path.join(run_folder, "tmax.nii.gz")).get_fdata()), abs=1e-3)


def test_world_placement_and_geometry(make_napari_viewer, run_folder):
    viewer = _open_run(make_napari_viewer, run_folder)
    temp = layer_named(viewer, "temperature")
    img = nib.load(os.path.join(run_folder, "temperature.nii.gz"))
    assert temp.data.shape == img.shape[::-1]
    assert tuple(temp.contrast_limits) == (37.0, 90.0)
    times = _report(run_folder)["exam"]["frame_times_s"]
    world = img.affine @ np.array([11, 20, 3, 1.0])  # voxel (x, y, z) = (11, 20, 3) at frame 5
    got = np.asarray(temp.data_to_world((5, 3, 20, 11)))
    np.testing.assert_allclose(got[1:], world[:3][::-1], atol=1e-6)
    assert got[0] == pytest.approx(times[5])
    anat = layer_named(viewer, "anatomy")
    np.testing.assert_allclose(np.asarray(anat.data_to_world((3, 20, 11))), world[:3][::-1], atol=1e-6)
    np.testing.assert_allclose(_model.layer_nifti_affine(anat), img.affine, atol=1e-9)
    labels = layer_named(viewer, "labels")
    assert labels.colormap.map(np.array([10]))[0][0] == pytest.approx(1.0)  # the cord in red
    rays = layer_named(viewer, "acoustic window rays")
    with open(os.path.join(run_folder, "window", "report.json")) as fh:
        report = json.load(fh)
    assert len(rays.data) == len(report["elements"])
    red = np.asarray(_model.STATUS_COLOURS["blocked"])
    blocked = [i for i, e in enumerate(report["elements"]) if e["status"] == "blocked"]
    np.testing.assert_allclose(rays.edge_color[blocked[0]], red, atol=1e-6)
    # each ray ends at the target, in world mm
    target = np.asarray(report["target_world_mm"])[::-1]
    np.testing.assert_allclose(np.asarray(rays.data_to_world(rays.data[0][-1]))[-3:], target, atol=1e-6)


def test_dose_follows_the_time_slider(make_napari_viewer, run_folder):
    """The dose layer at frame k is the dose accumulated up to k: nothing before heating, the run's dose at the end."""
    viewer = _open_run(make_napari_viewer, run_folder)
    dose_layer = layer_named(viewer, "CEM43 dose")
    final = _model.load_zyx(os.path.join(run_folder, "dose_cem43.nii.gz"))[0]
    per_frame = _view.meta(dose_layer)["dose_per_frame_cem43_min"]
    assert np.nanmax(per_frame[0]) == 0.0
    np.testing.assert_allclose(per_frame[-1], final, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.all(np.nan_to_num(np.diff(per_frame, axis=0)) >= 0)  # dose never decreases
    lesion = layer_named(viewer, "lesion 240")
    assert lesion.data[0].sum() == 0
    np.testing.assert_array_equal(lesion.data[-1], (np.nan_to_num(final) >= 240).astype(np.uint8))


def test_screenshot_frame0_has_no_dose_and_last_frame_has(make_napari_viewer, run_folder, tmp_path):
    viewer = _open_run(make_napari_viewer, run_folder)
    for ly in viewer.layers:
        if ly.name.startswith(("acoustic", "target", "labels")):
            ly.visible = False
        if hasattr(ly, "colorbar"):
            ly.colorbar.visible = False  # the bars hold every colour of their maps
    _view.text_overlay(viewer).visible = False
    viewer.dims.set_point(0, viewer.dims.range[0].start)
    dose0, heat0, grey0 = colour_pixels(canvas_shot(viewer))
    viewer.dims.set_point(0, viewer.dims.range[0].stop)
    shot = canvas_shot(viewer)
    dose1, _heat1, _grey1 = colour_pixels(shot)
    save_png(shot, str(tmp_path), "last_frame.png")
    assert dose0.sum() == 0 and heat0.sum() == 0 and grey0.sum() > 5000
    assert dose1.sum() > 30


def test_canvas_text_frame_time_peak_and_alarms(make_napari_viewer, run_folder):
    viewer = _open_run(make_napari_viewer, run_folder)
    report = _report(run_folder)
    times = report["exam"]["frame_times_s"]
    alarm = report["alarms"][0]
    k = alarm["frame"]
    viewer.dims.set_point(0, times[k - 1])
    before = _view.text_overlay(viewer).text
    assert before.startswith(f"t = {times[k - 1]:.1f} s  (frame {k}/{len(times)})") and "ALARM" not in before
    assert tuple(_view.text_overlay(viewer).color)[:3] == (1.0, 1.0, 1.0)
    assert "outlines: 40 green, 240 cyan (CEM43 min)" in before
    viewer.dims.set_point(0, times[k])
    after = _view.text_overlay(viewer).text
    assert f"ALARM {alarm['structure']}" in after and tuple(_view.text_overlay(viewer).color)[0] == 1.0
    assert tuple(_view.text_overlay(viewer).color)[1] < 0.5
    temp = np.asarray(_model.load_zyx(os.path.join(run_folder, "temperature.nii.gz"))[0][k])
    assert f"peak {np.nanmax(temp):.1f} °C" in after


def test_cursor_readout_units_and_tissue_names(make_napari_viewer, run_folder):
    viewer = _open_run(make_napari_viewer, run_folder)
    view = _view.install(viewer)
    labels = layer_named(viewer, "labels")
    cord = np.argwhere(labels.data == 10)[0]
    text = view.readout_at(labels.data_to_world(tuple(cord)))
    assert "spinal cord" in text.lower()
    tmax = nib.load(os.path.join(run_folder, "tmax.nii.gz")).get_fdata().transpose(2, 1, 0)
    hot = np.unravel_index(np.nanargmax(tmax), tmax.shape)
    text = view.readout_at(labels.data_to_world(tuple(int(v) for v in hot)))
    assert "°C" in text and "CEM43 min" in text


def test_single_map_and_report_json_open(make_napari_viewer, run_folder):
    viewer = make_napari_viewer()
    viewer.open(os.path.join(run_folder, "tmax.nii.gz"), plugin=PLUGIN)
    assert viewer.layers[0].name == "tmax"
    viewer.open(os.path.join(run_folder, "report.json"), plugin=None)
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
    viewer = _open_run(make_napari_viewer, run_folder)
    labels = layer_named(viewer, "labels")
    lab_img = nib.load(os.path.join(run_folder, "labels.nii.gz"))
    lab = np.asarray(lab_img.dataobj).transpose(2, 1, 0)
    t2_aff = lab_img.affine.copy()
    t2_aff[:2, :2] /= 2.0
    t2_aff[:3, 3] += np.array([-0.5, -0.5, 0.0])
    nz, ny, nx = lab.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(2 * ny), np.arange(2 * nx), indexing="ij")
    world = np.stack([i, j, k, np.ones_like(i)], -1) @ t2_aff.T
    src = world @ np.linalg.inv(lab_img.affine).T
    si = np.clip(np.floor(src[..., :3] + 0.5).astype(int), 0, [nx - 1, ny - 1, nz - 1])
    t2 = lab[si[..., 2], si[..., 1], si[..., 0]].astype(np.float32)
    t2_layer = viewer.add_image(t2, **_model.placement(t2_aff), name="T2")
    rng = np.random.default_rng(1)
    for _ in range(50):
        zyx_t2 = (int(rng.integers(nz)), int(rng.integers(2 * ny)), int(rng.integers(2 * nx)))
        w = t2_layer.data_to_world(zyx_t2)
        d = np.round(np.asarray(labels.world_to_data(w))).astype(int)
        assert lab[tuple(d)] == t2[zyx_t2]


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
    mag, phase = layer_named(viewer, "magnitude"), layer_named(viewer, "phase (rad)")
    assert mag.data.shape == (6, 4, 48, 48) and phase.data.shape == (6, 4, 48, 48)
    world = aff @ np.array([7, 30, 2, 1.0])  # voxel (x, y, z) = (7, 30, 2)
    np.testing.assert_allclose(np.asarray(mag.data_to_world((3, 2, 30, 7)))[-3:], world[:3][::-1], atol=1e-5)
    got = np.asarray(phase.data[4, 2])
    err = np.angle(np.exp(1j * (got - ph.phase_rad[4, 2])))
    assert np.abs(err).max() < 2e-3  # Philips stores 4096 levels over 2 pi


def test_layers_module_is_qt_free():
    import subprocess
    import sys
    code = ("import sys, napari_mrtherm._layers, napari_mrtherm._text, napari_mrtherm._model; "
            "print(any(m.startswith(('PyQt', 'qtpy', 'PySide')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_layers_of_a_result_match_the_files(run_folder):
    names = [kw["name"] for _d, kw, _k in _layers.run_layers(run_folder)]
    assert names.index("anatomy") < names.index("CEM43 dose (log10 min)") < names.index("temperature (C)") \
        < names.index("lesion 240 CEM43 (cyan)")


def test_cryo_run_shows_isotherm_contours_and_probes(make_napari_viewer, tmp_path):
    """A --modality cryo run: one outline layer per isotherm where the maps say, and the probes as points at their
    world positions with their readouts."""
    from mrtherm.cli import main
    assert main(["phantom", "--cryo", "--frames", "16", "--out", str(tmp_path / "ph")]) == 0
    ph = tmp_path / "ph"
    assert main(["run", "--magnitude", str(ph / "magnitude.nii.gz"), "--phase", str(ph / "phase.nii.gz"),
                 "--labels", str(ph / "labels.nii.gz"), "--baseline-frames", "4", "--modality", "cryo",
                 "--probes", str(ph / "probe_log.csv"), "--probe-positions", str(ph / "probes.json"),
                 "--out", str(tmp_path / "run"), "--quiet", "--no-figures"]) == 0
    viewer = _open_run(make_napari_viewer, str(tmp_path / "run"))
    edge = layer_named(viewer, "0 °C isotherm")
    lethal = layer_named(viewer, "-40 °C isotherm")
    ice = nib.load(tmp_path / "run" / "isotherm_0c.nii.gz")
    mask = np.asarray(ice.dataobj).transpose(2, 1, 0) > 0
    assert edge.data.any() and lethal.data.any() and lethal.data.sum() < edge.data.sum()
    assert not (edge.data.astype(bool) & ~mask).any()  # a line on the ice ...
    interior = mask.copy()
    interior[:, 1:-1, 1:-1] &= mask[:, :-2, 1:-1] & mask[:, 2:, 1:-1] & mask[:, 1:-1, :-2] & mask[:, 1:-1, 2:]
    assert not (edge.data.astype(bool) & interior).any()  # ... along its edge only
    z, y, x = np.argwhere(edge.data > 0)[0]
    np.testing.assert_allclose(edge.data_to_world([z, y, x]), (ice.affine @ [x, y, z, 1])[:3][::-1], atol=1e-6)
    probes = layer_named(viewer, "probes")
    positions = {p["name"]: p["position_mm"] for p in json.load(open(ph / "probes.json"))["probes"]}
    np.testing.assert_allclose(probes.data_to_world(probes.data[0]), positions["root"][::-1], atol=1e-6)
    # readouts follow the time slider: at the last frame the root reads the log and MR there
    entry = [e for e in json.load(open(tmp_path / "run" / "report.json"))["probes"]["probes"] if e["name"] == "root"][0]
    temp = layer_named(viewer, "temperature")
    last = temp.data.shape[0] - 1
    viewer.dims.set_point(0, float(temp.data_to_world([last, 0, 0, 0])[0]))
    reading = entry["mr"]["probe_at_frames_c"][last]
    assert probes.features["readout"][0].startswith(f"root (watched): probe {reading:.1f} °C")
    viewer.dims.set_point(0, float(temp.data_to_world([0, 0, 0, 0])[0]))
    assert probes.features["readout"][0].startswith(f"root (watched): probe {entry['mr']['probe_at_frames_c'][0]:.1f}")


def test_evaluation_folder_opens_as_an_overlay_on_the_npv_grid(make_napari_viewer, tmp_path):
    """``mrtherm evaluate`` output: one labels layer per level, placed on the NPV grid, 1/2/3 coloured."""
    from mrtherm.cli import main
    affine = np.diag([2.0, 2.0, 4.0, 1.0])
    affine[:3, 3] = (-40.0, -30.0, -8.0)
    dose = np.zeros((5, 32, 32))
    dose[1:4, 10:20, 10:20] = 300.0
    run = tmp_path / "run"
    run.mkdir()
    niftiio.save_volume(dose, affine, run / "dose_cem43.nii.gz")
    (run / "report.json").write_text(json.dumps({"parameters": {"dose_levels_cem43_min": [240.0]}}))
    npv = np.zeros((5, 32, 32), np.uint8)
    npv[1:4, 12:22, 10:20] = 1  # two voxels further along y
    niftiio.save_volume(npv, affine, tmp_path / "npv.nii.gz")
    assert main(["evaluate", "--run", str(run), "--npv", str(tmp_path / "npv.nii.gz"), "--out",
                 str(tmp_path / "eval"), "--quiet", "--no-figures"]) == 0
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "eval" / "report.json"), plugin=None)  # a folder: napari builtins claim it too
    layer = layer_named(viewer, "evaluation 240")
    assert set(np.unique(layer.data)) == {0, 1, 2, 3}
    z, y, x = np.argwhere(layer.data == 2)[0]  # predicted, perfused: rows 10-11
    assert 10 <= y < 12
    np.testing.assert_allclose(layer.data_to_world([z, y, x]), (affine @ [x, y, z, 1])[:3][::-1], atol=1e-6)


def test_large_series_open_lazily_and_show_the_same(make_napari_viewer, run_folder, monkeypatch):
    """Above the size threshold the temperature, the dose per frame and the outlines are dask arrays read frame by
    frame, and the viewer shows what it shows for the series in memory."""
    da = pytest.importorskip("dask.array")
    eager_view = _open_run(make_napari_viewer, run_folder)
    monkeypatch.setenv("MRTHERM_NAPARI_LAZY_BYTES", "1")  # every series counts as large
    viewer = _open_run(make_napari_viewer, run_folder)
    temp, dose = layer_named(viewer, "temperature"), layer_named(viewer, "CEM43 dose")
    lesion = layer_named(viewer, "lesion 240")
    assert all(isinstance(ly.data, da.Array) for ly in (temp, dose, lesion))
    times = _report(run_folder)["exam"]["frame_times_s"]
    last = len(times) - 1
    for k in (last, 0, last // 2):
        np.testing.assert_array_equal(np.asarray(temp.data[k]), layer_named(eager_view, "temperature").data[k])
        np.testing.assert_array_equal(np.asarray(dose.data[k]), layer_named(eager_view, "CEM43 dose").data[k])
        np.testing.assert_array_equal(np.asarray(lesion.data[k]), layer_named(eager_view, "lesion 240").data[k])
    k = _report(run_folder)["alarms"][0]["frame"]
    viewer.dims.set_point(0, times[k])
    eager_view.dims.set_point(0, times[k])
    assert _view.text_overlay(viewer).text == _view.text_overlay(eager_view).text  # frame, time, peak, alarm
    view, eager = _view.install(viewer), _view.install(eager_view)
    hot = _view.meta(layer_named(eager_view, "temperature"))["hottest_tzyx"]
    assert _view.meta(temp)["hottest_tzyx"] == hot  # from the report: the series is not scanned
    where = temp.data_to_world(hot)[-3:]
    viewer.dims.set_point(0, times[hot[0]])
    eager_view.dims.set_point(0, times[hot[0]])
    assert view.readout_at(where) == eager.readout_at(where)


def test_a_bioheat_run_shows_the_model_layers_beside_the_measured(make_napari_viewer, tmp_path):
    """--bioheat: the model's temperature, SD and lesion outline open beside the measured layers, every name
    marked MODEL, the model layers hidden until asked for (the measured temperature stays the default view)."""
    from bioheat_scene import small_scene
    from mrtherm.cli import main
    shape, aff, labels, frames, params = small_scene()
    for name, arr in (("mag", np.stack([f[0] for f in frames])), ("phase", np.stack([f[1] for f in frames]))):
        nib.save(nib.Nifti1Image(np.transpose(arr, (3, 2, 1, 0)), aff), tmp_path / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(np.transpose(labels, (2, 1, 0)), aff), tmp_path / "labels.nii.gz")
    out = tmp_path / "run"
    assert main(["run", "--magnitude", str(tmp_path / "mag.nii.gz"), "--phase", str(tmp_path / "phase.nii.gz"),
                 "--te-ms", "12", "--b0-t", "3", "--frame-time-s", "2.5", "--baseline-frames", "3",
                 "--labels", str(tmp_path / "labels.nii.gz"), "--bioheat", "--target", "40,40,9",
                 "--bioheat-beam-axis", "0,1,0", "--out", str(out), "--quiet", "--no-figures"]) == 0
    viewer = _open_run(make_napari_viewer, str(out))
    model = [layer for layer in viewer.layers if "MODEL" in layer.name]
    assert [layer.name for layer in model][:2] == ["MODEL temperature (C, bioheat)",
                                                   "MODEL temperature SD (C, bioheat)"]
    assert not any(layer.visible for layer in model[:2])
    assert layer_named(viewer, "temperature (C)").visible
    temp = layer_named(viewer, "MODEL temperature (C, bioheat)")
    assert temp.data.shape[0] == len(frames)  # the model's series, frame by frame like the measured one
    np.testing.assert_allclose(np.nanmax(np.asarray(temp.metadata["mrtherm"]["temperature_c"])),
                               _report(str(out))["bioheat"]["results"]["peak_temperature_c"], atol=1e-4)
