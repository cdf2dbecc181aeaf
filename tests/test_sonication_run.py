"""The frame loop every mode shares (mrtherm.app.sonication.SonicationRun): baseline held then processed, each
temperature its own array, respiratory values counted per frame, and the frame's magnitude for the cryo watch."""

import numpy as np
import pytest

import mrtherm
from mrtherm.app.sonication import RunOptions, SonicationRun, magnitude_of
from mrtherm.thermometry.params import ThermometryParams

BASE = 4


@pytest.fixture(scope="module")
def ph():
    return mrtherm.make_phantom(shape_zyx=(2, 32, 32), voxel_mm=(4.0, 2.0, 2.0), n_frames=8, seed=4,
                                baseline_frames=BASE)


def _run(ph, **kw):
    return SonicationRun(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t,
                         RunOptions(ThermometryParams(baseline_frames=BASE)), **kw)


def _parts(ph, t):
    return ph.magnitude[t], ph.phase_rad[t], True


def test_baseline_is_held_then_every_frame_comes_out_once_and_as_process_gives_it(ph):
    run = _run(ph)
    out = []
    for t in range(ph.magnitude.shape[0]):
        parts = _parts(ph, t)
        assert run.to_device(parts) is parts or run.started  # the parts as they are until the Thermometer exists
        temps = run.feed(run.to_device(parts), ph.frame_times_s[t])
        assert len(temps) == (0 if t < BASE - 1 else (BASE if t == BASE - 1 else 1))
        assert run.started == (t >= BASE - 1)
        out += [np.array(x) for x in temps]
    assert len({id(x) for x in out}) == len(out)
    exam = mrtherm.load_exam(ph.magnitude, ph.phase_rad, te_s=ph.te_s, b0_t=ph.b0_t, frame_times_s=ph.frame_times_s,
                             affine=ph.affine)
    want = mrtherm.process(exam, baseline_frames=BASE).temperature_c
    np.testing.assert_array_equal(np.stack(out), want)


def test_respiratory_values_are_counted_frame_by_frame(ph):
    run = _run(ph, baseline_respiration=True)
    values = [0.1, 0.9, 0.5, 0.3, None, 0.7, None, 0.2]
    for t, v in enumerate(values):
        run.feed(_parts(ph, t), ph.frame_times_s[t], respiration=v)
    assert run.on_signal is True
    assert run.respiration_frames == {"signal": 6, "image": 2}
    assert not any("respiratory log" in w for w in run.th.warnings)


def test_a_baseline_without_every_value_is_matched_on_images_and_says_so(ph):
    run = _run(ph, baseline_respiration=True)
    for t, v in enumerate([0.1, None, 0.5, 0.3, 0.6, 0.7]):
        run.feed(_parts(ph, t), ph.frame_times_s[t], respiration=v)
    assert run.on_signal is False
    assert run.respiration_frames == {"signal": 0, "image": 6}
    assert sum("respiratory log did not cover every baseline frame" in w for w in run.th.warnings) == 1


def test_without_a_log_nothing_is_counted_and_nothing_is_kept_out(ph):
    run = _run(ph, warnings=["input warning"])
    for t in range(BASE + 1):
        run.feed(_parts(ph, t), ph.frame_times_s[t])
    assert run.respiration_frames == {"signal": 0, "image": 0} and run.on_signal is False
    assert run.th.warnings[0] == "input warning"  # the input's own warnings lead
    assert not any("respiratory" in w for w in run.th.warnings)
    assert run.not_prf() is None and run.state() is None


def test_magnitude_of_every_frame_form():
    mag = np.array([[[3.0, 0.5]]])
    phase = np.array([[[0.2, -2.0]]])
    np.testing.assert_array_equal(magnitude_of((mag, phase, True)), mag)
    np.testing.assert_allclose(magnitude_of((np.array([[[3.0, 0.0]]]), np.array([[[4.0, -0.5]]]), False)),
                               [[[5.0, 0.5]]])
    np.testing.assert_allclose(magnitude_of(np.array([[[3 + 4j, -0.5j]]])), [[[5.0, 0.5]]])
    np.testing.assert_array_equal(magnitude_of((-mag, phase, True)), mag)  # a negative stored magnitude: |.|


def test_respiration_reaches_the_library_and_its_warning_is_exact(ph):
    run = SonicationRun(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t,
                        RunOptions(ThermometryParams(baseline_frames=BASE, reference="library")),
                        baseline_respiration=True)
    for t, v in enumerate([0.1, 0.9, 0.5, 0.3, 0.6]):
        run.feed(_parts(ph, t), ph.frame_times_s[t], respiration=v)
    assert list(run.th.frame_reference.library.respiration) == [0.1, 0.9, 0.5, 0.3]
    lacking = _run(ph, baseline_respiration=True)
    for t, v in enumerate([0.1, None, 0.5, 0.3]):
        lacking.feed(_parts(ph, t), ph.frame_times_s[t], respiration=v)
    assert lacking.th.warnings[-1] == ("the respiratory log did not cover every baseline frame: library entries are "
                                       "matched on the image for this sonication")
    assert _run(ph).on_signal is False and _run(ph).affine.dtype == np.float64


def test_the_frames_respiratory_value_chooses_its_library_entry(ph):
    """The same frame, given the value of baseline frame 0 or of frame 1, is referenced to that frame: the two
    temperatures differ by the two frames' noise (matched on the image, both would be the same)."""
    def after_baseline(value):
        run = SonicationRun(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t,
                            RunOptions(ThermometryParams(baseline_frames=BASE, reference="library")),
                            baseline_respiration=True)
        for t, v in enumerate([0.1, 0.9, 0.5, 0.3]):
            run.feed(_parts(ph, t), ph.frame_times_s[t], respiration=v)
        return np.array(run.feed(_parts(ph, BASE), ph.frame_times_s[BASE], respiration=value)[0])
    a, b = after_baseline(0.1), after_baseline(0.9)
    assert np.nanmax(np.abs(a - b)) > 0.05


def test_the_cryo_watch_sees_every_frame_and_comes_back_from_its_state(tmp_path):
    from mrtherm.cryo import CryoParams, CryoWatch
    from mrtherm.cryo.phantom import make_cryo_phantom
    cph = make_cryo_phantom(shape_zyx=(2, 40, 40), voxel_mm=(4.0, 2.0, 2.0), n_frames=9, frame_time_s=10.0,
                            baseline_frames=3, freeze_on_s=20.0, max_radius_mm=8.0, seed=2)
    cryo = CryoParams(tips_mm=(tuple(cph.info["cryo"]["tip_world_mm"]),)).validate()
    opts = RunOptions(ThermometryParams(baseline_frames=3), labels=cph.labels, cryo=cryo)
    run = SonicationRun(cph.magnitude.shape[1:], cph.affine, cph.te_s, cph.b0_t, opts)
    temps = []
    for t in range(9):
        temps += [np.array(x) for x in run.feed(_parts(cph, t), cph.frame_times_s[t])]
    # the watch built by hand from the same Thermometer, fed the PRF temperatures, finds the same ice
    th = run.th
    by_hand = CryoWatch(cryo, th.anatomy, np.asarray(th.reliability.snr) >= th.params.snr_threshold, th.affine,
                        th.labels, table=th.table)
    assert run.cryo_watch.frames[-1]["ice_ml"] > 0
    assert run.not_prf() is run.cryo_watch.masked_extent and run.not_prf().any()
    assert np.isnan(temps[-1][run.cryo_watch.ice_extent]).all()  # the ice is not PRF
    plain = SonicationRun(cph.magnitude.shape[1:], cph.affine, cph.te_s, cph.b0_t,
                          RunOptions(ThermometryParams(baseline_frames=3), labels=cph.labels))
    plain_temps = [np.array(x) for t in range(9) for x in plain.feed(_parts(cph, t), cph.frame_times_s[t])]
    outside = ~run.not_prf() & th.reliability.mask
    assert outside.sum() > 100
    np.testing.assert_array_equal(temps[-1][outside], plain_temps[-1][outside])  # PRF untouched outside
    arrays, meta = run.state()
    assert set(arrays) == {"tmin", "ice_extent", "masked_extent"} and meta["frames"] == run.cryo_watch.frames
    path = th.save_state(str(tmp_path / "th.npz"))
    again = SonicationRun(cph.magnitude.shape[1:], cph.affine, cph.te_s, cph.b0_t, opts)
    again.restore(mrtherm.Thermometer.load_state(path), (arrays, meta))
    assert again.started and again.pending == []
    assert again.cryo_watch.frames == run.cryo_watch.frames
    np.testing.assert_array_equal(again.not_prf(), run.not_prf())
    fresh = SonicationRun(cph.magnitude.shape[1:], cph.affine, cph.te_s, cph.b0_t, opts)
    fresh.restore(mrtherm.Thermometer.load_state(path))  # no cryo state: a new watch, nothing found yet
    assert fresh.cryo_watch.frames == [] and not fresh.not_prf().any()
    assert by_hand.structure_distance.keys() == run.cryo_watch.structure_distance.keys()
    np.testing.assert_array_equal(by_hand.reliable, run.cryo_watch.reliable)
    np.testing.assert_array_equal(by_hand.base, run.cryo_watch.base)
    np.testing.assert_array_equal(by_hand.tips, run.cryo_watch.tips)


def test_a_label_table_of_its_own_reaches_the_thermometer_and_the_cryo_watch(ph, tmp_path):
    """The protected structures renumbered (cord 40, roots 41) with a table saying so: found by name in both."""
    import json as _json

    from mrtherm.cryo import CryoParams
    from mrtherm.io.labels import LabelTable
    table = LabelTable()
    remap = {10: 40, 11: 41}
    rows = [{**c, "value": remap.get(c["value"], c["value"])} for c in table.to_json()]
    path = tmp_path / "table.json"
    path.write_text(_json.dumps({"labels": rows}))
    labels = ph.labels.copy()  # this small phantom has no cord or root: two drawn by hand, numbered as the table says
    labels[:, 14:16, 6:8], labels[:, 20:22, 24:26] = 40, 41
    tip = tuple((ph.affine @ np.array([16.0, 16.0, 0.0, 1.0]))[:3])
    opts = RunOptions(ThermometryParams(baseline_frames=BASE), labels=labels, label_table=str(path),
                      cryo=CryoParams(tips_mm=(tip,)).validate())
    run = SonicationRun(ph.magnitude.shape[1:], ph.affine, ph.te_s, ph.b0_t, opts)
    for t in range(BASE + 1):
        run.feed(_parts(ph, t), ph.frame_times_s[t])
    rows_out, _ = run.th.protected_structures()
    assert {(r["label"], r["structure"]) for r in rows_out} == {(40, "spinal cord"), (41, "nerve root")}
    assert set(run.cryo_watch.structure_distance) == {"spinal cord", "nerve root"}


def test_baseline_temperatures_are_copied_out_of_a_reused_buffer(ph, monkeypatch):
    """A CUDA engine hands back one buffer per update; the baseline frames, processed together, must each come out
    as their own values (the last one may stay in the buffer). Checked with a Thermometer that reuses one buffer."""
    import mrtherm.app.sonication as sonication

    class OneBuffer:
        def __init__(self, shape, *args, **kwargs):
            import array_api_compat.numpy as xp
            self.xp, self.buffer, self.warnings, self.n = xp, np.zeros(shape, np.float32), [], 0

        def update(self, parts, time_s, respiration=None):
            self.n += 1
            self.buffer[...] = self.n  # frame n's temperature, written over the previous one
            return self.buffer

    monkeypatch.setattr(sonication, "Thermometer", OneBuffer)
    run = _run(ph)
    temps = []
    for t in range(BASE + 1):
        temps.append([float(np.asarray(x).flat[0]) for x in run.feed(_parts(ph, t), ph.frame_times_s[t])])
    assert temps == [[], [], [], [1.0, 2.0, 3.0, 4.0], [5.0]]
