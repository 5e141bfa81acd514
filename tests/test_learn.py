"""MIDI learn on a real router: real MIDI bytes through the parser, real state files."""

import json
import time

import pytest

from pi_synth.model.card import load_card
from pi_synth.audio.bank import ControlBank
from pi_synth.control.learn import MidiLearn
from pi_synth.control.mapping import Mapping, Route
from pi_synth.control.router import Router
from pi_synth.tools.procedural import organ_card


@pytest.fixture
def rig(organ, tmp_path):
    card = load_card(organ())
    router = Router(card, ControlBank(card))
    learn = MidiLearn(router.mapping, tmp_path / "learn.json")
    router.listener = learn.listener
    return router, learn


def cc(router, control, value):
    router.midi_bytes(bytes([0xB0, control, value]))


def test_moving_a_cc_binds_it_and_saves(rig, tmp_path):
    router, learn = rig
    bank = router.bank
    assert learn.arm("brightness") == "brightness" and learn.armed
    for v in (64, 64, 65, 63, 64, 66):  # a CC at rest, a little jitter: no bind
        cc(router, 74, v)
    assert learn.armed and "cc74" not in router.mapping.routes
    assert bank.get("brightness") == pytest.approx(0.5)  # consumed while armed
    cc(router, 74, 90)  # a real move
    assert not learn.armed
    assert router.mapping.routes["cc74"] == Route("brightness")
    saved = json.loads((tmp_path / "learn.json").read_text())
    assert saved == {"format": 1, "bindings": {"cc74": {"control": "brightness"}}}
    cc(router, 74, 127)  # now it plays
    assert bank.get("brightness") == pytest.approx(1.0)
    cc(router, 74, 0)
    assert bank.get("brightness") == pytest.approx(0.0)


def test_baseline_is_where_the_source_was_before_arming(rig):
    router, learn = rig
    cc(router, 20, 10)  # unmapped, counted, remembered
    assert router.unmapped == 1
    learn.arm("loudness")
    cc(router, 20, 30)  # first reading after arming, but it moved from 10: bind
    assert router.mapping.routes["cc20"] == Route("loudness")


def test_a_knob_rebinds_and_readings_are_consumed_while_armed(rig):
    router, learn = rig
    bank = router.bank
    default = router.mapping.routes["knob1"]
    other = next(n for n in ("loudness", "brightness") if n != default.control)
    router.source("knob1", 0.5)
    before = bank.get(default.control)
    learn.arm(other)
    router.source("knob1", 0.52)  # noise
    router.source("knob1", 0.9)
    assert router.mapping.routes["knob1"] == Route(other)
    assert bank.get(default.control) == pytest.approx(before)  # consumed while armed
    router.source("knob1", 0.25)
    assert bank.get(other) == pytest.approx(bank.card.control(other).from_unit(0.25))
    assert bank.get(default.control) == pytest.approx(before)
    assert learn.forget("knob1") is True  # back to its default route
    assert router.mapping.routes["knob1"] == default
    assert learn.forget("knob1") is False


def test_arm_without_a_control_cycles_in_card_order(rig):
    _, learn = rig
    assert [learn.arm() for _ in range(4)] == ["pitch", "loudness", "brightness", "pitch"]
    learn.arm("loudness")
    assert learn.arm() == "brightness"
    assert learn.on_action(None) == "pitch"
    assert learn.on_action(0) == "loudness"  # an action route's default arg
    assert learn.on_action(3) == "brightness"  # the N-th control
    with pytest.raises(ValueError, match="1..3"):
        learn.on_action(4)
    assert learn.on_action("pitch") == "pitch"
    assert learn.on_action("cancel") is None and not learn.armed


def test_arm_an_unknown_control_names_the_controls(rig):
    _, learn = rig
    with pytest.raises(KeyError, match="pitch, loudness, brightness"):
        learn.arm("cutoff")
    assert not learn.armed


def test_the_router_action_arms_and_a_bad_name_does_not_crash(rig):
    router, learn = rig
    router.on_action = lambda name, arg: learn.on_action(arg) if name == "learn" else None
    router.action("learn", "cutoff")  # logged by the router, nothing else
    assert not learn.armed
    router.action("learn")
    assert learn.target == "pitch"


def test_cancel_and_timeout(organ, tmp_path):
    card = load_card(organ())
    router = Router(card, ControlBank(card))
    learn = MidiLearn(router.mapping, tmp_path / "learn.json", timeout=0.2)
    router.listener = learn.listener
    learn.arm("brightness")
    learn.cancel()
    cc(router, 74, 0)
    cc(router, 74, 127)
    assert "cc74" not in router.mapping.routes
    learn.arm("brightness")
    time.sleep(0.3)
    cc(router, 74, 0)
    cc(router, 74, 127)  # too late: learn mode has ended by itself
    assert not learn.armed and "cc74" not in router.mapping.routes
    assert not (tmp_path / "learn.json").exists()


def test_bindings_come_back_at_start_and_survive_another_model(organ, tmp_path):
    path = tmp_path / "learn.json"
    card = load_card(organ())
    router = Router(card, ControlBank(card))
    learn = MidiLearn(router.mapping, path)
    router.listener = learn.listener
    for control, number in (("brightness", 74), ("loudness", 7)):
        learn.arm(control)
        cc(router, number, 0)
        cc(router, number, 100)
    # restart on a model with no "brightness" (it has "tone")
    c = organ_card(256, 48000, name="organ2")
    c["controls"][2]["name"] = "tone"
    card2 = load_card(organ("organ2", card=c))
    m2 = Mapping(card2)
    learn2 = MidiLearn(m2, path)
    assert learn2.load() == ["cc74→brightness"]
    assert m2.routes["cc7"] == Route("loudness") and "cc74" not in m2.routes
    # learning on this model keeps what was learned on the other
    router2 = Router(card2, ControlBank(card2), m2)
    router2.listener = learn2.listener
    learn2.arm("tone")
    cc(router2, 71, 0)
    cc(router2, 71, 127)
    saved = json.loads(path.read_text())["bindings"]
    assert saved == {"cc7": {"control": "loudness"}, "cc71": {"control": "tone"},
                     "cc74": {"control": "brightness"}}
    # and back on the first model, the swap re-applies everything that fits
    m3 = Mapping(card)
    assert learn2.attach(m3) == ["cc71→tone"]
    assert m3.routes["cc74"] == Route("brightness")


def test_corrupt_learn_file_is_moved_aside_and_play_goes_on(rig, tmp_path):
    router, learn = rig
    path = tmp_path / "learn.json"
    path.write_text("{\"bindings\": {\"cc1\": ")
    assert learn.load() == []
    assert "learn.json" in learn.error
    assert (tmp_path / "learn.json.corrupt").read_text().startswith("{\"bindings\"")
    learn.arm("pitch")
    cc(router, 1, 0)
    cc(router, 1, 64)
    assert json.loads(path.read_text())["bindings"] == {"cc1": {"control": "pitch"}}


def test_a_failed_save_keeps_the_binding_and_never_raises_into_the_source(organ, tmp_path):
    card = load_card(organ())
    router = Router(card, ControlBank(card))
    blocker = tmp_path / "file"
    blocker.write_text("")
    learn = MidiLearn(router.mapping, blocker / "learn.json")  # its directory cannot exist
    router.listener = learn.listener
    learn.arm("brightness")
    cc(router, 74, 0)
    cc(router, 74, 127)
    assert router.mapping.routes["cc74"] == Route("brightness")
    assert learn.save_errors == 1 and "cannot save" in learn.error


def test_default_store_is_in_the_state_dir(organ, tmp_path, monkeypatch):
    monkeypatch.setenv("PI_SYNTH_STATE_DIR", str(tmp_path / "st"))
    card = load_card(organ())
    router = Router(card, ControlBank(card))
    learn = MidiLearn(router.mapping)
    router.listener = learn.listener
    learn.arm("loudness")
    router.source("fader", 0.0)
    router.source("fader", 1.0)
    assert json.loads((tmp_path / "st" / "learn.json").read_text())["bindings"] == {
        "fader": {"control": "loudness"}}


def test_routes_as_json_roundtrip_and_errors():
    from pi_synth.control.mapping import route_from_json, route_to_json, routes_from_json
    from pi_synth.errors import ConfigError

    r = Route("brightness", 0.25, 0.75, True)
    assert route_to_json(Route("pitch")) == {"control": "pitch"}
    assert route_from_json(route_to_json(r)) == r
    assert route_from_json("pitch") == Route("pitch")
    assert route_from_json({"control": "pitch", "from_the_future": 1}) == Route("pitch")
    for bad in ({"lo": 0.5}, {"control": 3}, {"control": "x", "lo": 2.0},
                {"control": "x", "invert": "yes"}, [1]):
        with pytest.raises(ConfigError, match="learn.json"):
            routes_from_json({"cc1": bad}, "learn.json")
