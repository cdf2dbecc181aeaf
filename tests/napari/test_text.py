"""Operator texts (Qt-free), against hand-written expectations."""

import pytest

from napari_mrtherm import _model, _text


def test_rule_lines_read_as_sentences_with_units():
    central = {"rule": "central_ray_clear", "value": ["CRITICAL_STRUCTURE"], "unit": "reasons", "result": "PASS",
               "threshold": "no blocking reason"}
    assert _text.rule_line(central) == ("PASS  central ray: not blocked; passes near the spinal cord / a nerve root "
                                        "(degrades)")
    assert _text.rule_line(dict(central, value=["GAS"], result="FAIL")) == "FAIL  central ray: blocked by gas"
    clear = dict(central, value=["clear"])
    assert _text.rule_line(clear) == "PASS  central ray: clear"
    focus = {"rule": "focus_to_critical_structure", "value": 6.32, "unit": "mm", "result": "WARN",
             "threshold": {"warn_below": 10.0, "fail_below": 5.0}}
    assert _text.rule_line(focus) == ("WARN  focus to spinal cord / nerve root: 6.32 mm  "
                                      "(warn below 10 mm; fail below 5 mm)")
    none = dict(focus, value=None, result="PASS")
    assert _text.rule_line(none) == "PASS  focus to spinal cord / nerve root: none  (warn below 10 mm; fail below 5 mm)"
    area = {"rule": "active_fraction", "value": 0.8125, "unit": "fraction of transducer area", "result": "PASS",
            "threshold": {"pass": 0.7, "warn": 0.5}}
    assert _text.rule_line(area) == "PASS  active transducer area: 81%  (pass at >= 70%; warn at >= 50%)"


def test_status_never_shows_a_future_alarm():
    alarm = {"structure": "nerve root", "quantity": "temperature", "value": 45.3, "threshold": 45.0, "unit": "C",
             "time_s": 21.0}
    text, active = _text.status_lines(5, 40, 18.0, 41.2, [alarm])
    assert text == "t = 18.0 s  (frame 6/40)   peak 41.2 °C" and not active
    text, active = _text.status_lines(7, 40, 21.0, 45.9, [alarm], legend="outlines: 240 cyan (CEM43 min)")
    assert active and text.splitlines() == ["t = 21.0 s  (frame 8/40)   peak 45.9 °C",
                                            "ALARM nerve root: temperature 45.3 °C >= 45 °C at t = 21.0 s",
                                            "outlines: 240 cyan (CEM43 min)"]


def test_levels_parse_and_refuse_with_the_bad_entry():
    assert _model.parse_levels("240, 40;17") == (240.0, 40.0, 17.0)
    for text, message in (("240, abc", "'abc' is not a number"), ("-3", "must be a positive"), (" , ", "at least one")):
        with pytest.raises(ValueError, match=message):
            _model.parse_levels(text)


def test_level_colours_do_not_depend_on_the_list():
    assert _model.level_colour(240) == ("#00ffff", "cyan")
    assert _model.legend_text([240, 17]) == "outlines: 17 blue, 240 cyan (CEM43 min)"


def test_clip_segment_to_a_box():
    seg = _model.clip_segment([-10.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, -1.0, -1.0], [10.0, 1.0, 1.0])
    assert seg.tolist() == [[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]
    assert _model.clip_segment([-10.0, 5.0, 0.0], [-5.0, 5.0, 0.0], [0.0, -1.0, -1.0], [10.0, 1.0, 1.0]) is None


def test_dose_per_frame_against_hand_values():
    import numpy as np
    # one voxel at 43 C for 60 s then 44 C for 60 s: 1 min at R^0 then a linear ramp 43->44 (0.5**(43-T) from 1
    # to 2: integral = 1/ln 2 min), then 2 min of 44 C
    temps = np.array([43.0, 43.0, 44.0, 44.0]).reshape(4, 1, 1, 1)
    got = _model.dose_per_frame(temps, [0.0, 60.0, 120.0, 180.0])[:, 0, 0, 0]
    np.testing.assert_allclose(got, [0.0, 1.0, 1.0 + 1 / np.log(2), 3.0 + 1 / np.log(2)], rtol=1e-6)


def test_status_shows_the_target_at_this_frame_and_every_trust_warning():
    target = {"margin_mm": 5.0, "measured_per_frame": [True, False], "margin_measured_fraction_per_frame": [1.0, 0.6]}
    trust = ["heating runs into unmeasured voxels (bone/void) at (1, 2, 3) mm, next to the hot region around "
             "(1, 4, 3) mm: the true peak may be higher"]
    text, active = _text.status_lines(1, 2, 3.0, 50.0, [], trust=trust, target=target)
    assert not active
    assert text.splitlines() == ["t = 3.0 s  (frame 2/2)   peak 50.0 °C",
                                 "target NOT MEASURED at this frame; 60 % of the 5 mm margin measured",
                                 "warning: " + trust[0]]
    text, _ = _text.status_lines(0, 2, 0.0, 37.0, [], target=target)
    assert text.splitlines()[1] == "target measured at this frame; 100 % of the 5 mm margin measured"


def test_target_field_parses_and_refuses_with_the_problem():
    assert _model.parse_target("") is None and _model.parse_target(" 1, 2.5;-3 ") == (1.0, 2.5, -3.0)
    for text in ("1, 2", "1, x, 3", "1, 2, nan"):
        with pytest.raises(ValueError, match="X, Y, Z in world mm"):
            _model.parse_target(text)
