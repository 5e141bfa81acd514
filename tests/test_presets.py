"""Presets: numbered slots of control values (and mapping), atomic, recallable on any model."""

import json

import pytest

from pi_synth.model.card import load_card
from pi_synth.audio.bank import ControlBank
from pi_synth.control.mapping import routes_to_json
from pi_synth.control.mapping import Mapping, Route
from pi_synth.control.presets import PresetStore, apply
from pi_synth.errors import ConfigError
from pi_synth.tools.procedural import organ_card


@pytest.fixture
def bank(organ):
    return ControlBank(load_card(organ()))


def test_save_load_roundtrip_from_a_real_bank(tmp_path, bank):
    store = PresetStore(tmp_path / "presets")
    bank.set("pitch", 330.0)
    bank.set("brightness", 0.25)
    path = store.save(3, model=bank.card.name, values=bank.values())
    assert path == tmp_path / "presets" / "preset-03.json"
    on_disk = json.loads(path.read_text())
    assert on_disk["format"] == 1 and on_disk["model"] == "organ" and on_disk["slot"] == 3
    p = store.load(3)
    assert p["values"] == pytest.approx({"pitch": 330.0, "loudness": -80.0, "brightness": 0.25})
    assert "mapping" not in p
    assert store.load(4) is None


def test_slots_delete_and_names(tmp_path):
    store = PresetStore(tmp_path)
    for s in (127, 0, 42):
        store.save(s, model="m", values={"x": float(s)})
    (tmp_path / ".preset-05.json.abc123.tmp").write_text("{\"half")  # an interrupted save
    (tmp_path / "notes.txt").write_text("")
    assert store.slots() == [0, 42, 127]
    assert (tmp_path / "preset-127.json").is_file() and (tmp_path / "preset-00.json").is_file()
    assert store.delete(42) is True
    assert store.delete(42) is False
    assert store.slots() == [0, 127]
    assert store.load(127)["values"] == {"x": 127.0}


@pytest.mark.parametrize("slot", [-1, 128, 1000, True, "3", 3.0, None])
def test_bad_slot(tmp_path, slot):
    store = PresetStore(tmp_path)
    for call in (lambda: store.save(slot, model="m", values={}), lambda: store.load(slot),
                 lambda: store.delete(slot)):
        with pytest.raises(ValueError, match=r"^preset slot must be a whole number 0\.\.127, got "):
            call()


def test_non_finite_values_are_refused_and_nothing_written(tmp_path):
    store = PresetStore(tmp_path)
    with pytest.raises(ValueError, match="pitch"):
        store.save(1, model="m", values={"pitch": float("inf")})
    with pytest.raises(TypeError, match="gain"):
        store.save(1, model="m", values={"gain": "loud"})
    assert store.slots() == []
    assert list(tmp_path.iterdir()) == []


def test_default_directory_is_under_the_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PI_SYNTH_STATE_DIR", str(tmp_path / "st"))
    store = PresetStore()
    store.save(7, model="m", values={"a": 1.0})
    assert (tmp_path / "st" / "presets" / "preset-07.json").is_file()


def test_corrupt_preset_is_a_config_error_naming_the_file(tmp_path):
    store = PresetStore(tmp_path)
    (tmp_path / "preset-09.json").write_text("{\"values\": ")
    with pytest.raises(ConfigError, match="preset-09.json"):
        store.load(9)
    (tmp_path / "preset-10.json").write_text(json.dumps({"values": {"a": "x"}}))
    with pytest.raises(ConfigError, match="preset-10.json.*values"):
        store.load(10)
    assert store.slots() == [9, 10]  # still listed: the user can see and delete them


def test_apply_to_another_model_sets_shared_controls_and_reports_the_rest(tmp_path, bank):
    store = PresetStore(tmp_path)
    # saved on a latent model that shares only "brightness" with the organ
    store.save(0, model="latent", values={"z1": 0.5, "z2": -1.0, "brightness": 0.9})
    skipped = apply(store.load(0), bank)
    assert skipped == ["z1", "z2"]
    assert bank.get("brightness") == pytest.approx(0.9)
    assert bank.get("pitch") == pytest.approx(220.0)  # untouched


def test_apply_clamps_to_the_card_range(tmp_path, bank):
    store = PresetStore(tmp_path)
    store.save(1, model="organ", values={"pitch": 99999.0, "loudness": -6.0})
    assert apply(store.load(1), bank) == []
    assert bank.get("pitch") == pytest.approx(4000.0)
    assert bank.get("loudness") == pytest.approx(-6.0)


def test_mapping_saved_and_applied(tmp_path, organ):
    card = load_card(organ())
    bank = ControlBank(card)
    routes = {"cc74": Route("brightness", 0.2, 0.8, True), "cc1": Route("vibrato")}
    store = PresetStore(tmp_path)
    store.save(5, model="organ", values=bank.values(), mapping=routes_to_json(routes))
    fresh = Mapping(card)
    skipped = apply(store.load(5), bank, fresh)
    assert skipped == ["vibrato"]
    assert fresh.routes["cc74"] == Route("brightness", 0.2, 0.8, True)
    assert "cc1" not in fresh.routes


def test_apply_on_a_renamed_model(tmp_path, organ):
    """A real second model whose third control is called "tone", not "brightness"."""
    c = organ_card(256, 48000, name="organ2")
    c["controls"][2]["name"] = "tone"
    other = ControlBank(load_card(organ("organ2", card=c)))
    store = PresetStore(tmp_path)
    store.save(2, model="organ", values={"pitch": 440.0, "brightness": 0.1})
    assert apply(store.load(2), other) == ["brightness"]
    assert other.get("pitch") == pytest.approx(440.0)


def test_a_preset_saved_on_another_model_switches_to_it(organ):
    """A preset is a patch: its model and its settings. Recalled while the flute played, an
    organ preset set the flute's brightness (dB/octave) to the organ's 0..1 value and put the
    organ's knob order on the flute; now it switches to the organ, then sets it."""
    from pi_synth import config as config_mod
    from pi_synth.app import Instrument

    inst = Instrument(config_mod.load(), model=str(organ("organ")))
    inst.controls.set("brightness", 0.25)
    inst.save_preset(0)
    assert inst.swap("flute") and inst.controls.card.name == "flute"
    skipped, model = inst.recall_preset(0)
    assert model == "organ" and inst.controls.card.name == "organ"
    assert inst.controls.get("brightness") == pytest.approx(0.25)


def test_a_preset_whose_model_is_gone_sets_only_what_means_the_same(organ, caplog):
    from pi_synth import config as config_mod
    from pi_synth.app import Instrument

    inst = Instrument(config_mod.load(), model="flute")
    before = inst.controls.get("brightness")
    mapping = dict(inst.mapping.routes)
    inst.presets.save(5, model="gone", file="gone", values={"brightness": 0.5, "breath": 3.0},
                      units={"brightness": "", "breath": "db"}, mapping={"knob1": {"control": "breath"}})
    with caplog.at_level("WARNING", logger="pi_synth"):
        skipped, model = inst.recall_preset(5)
    assert model == "flute" and skipped == ["brightness"]  # organ-like 0..1 is not the flute's dB/octave
    assert inst.controls.get("brightness") == before and inst.controls.get("breath") == pytest.approx(3.0)
    assert dict(inst.mapping.routes) == mapping  # the other model's knobs are not put on this one
    assert "saved on gone, which is not installed" in caplog.text
