"""A note model's knobs reach its voice too: attack, release, glide and octave are controls
like the model's own (knobs after the timbre controls, CC, OSC, presets)."""

import json

import numpy as np
import pytest

from pi_synth.audio.backends.wav import read_wav
from pi_synth.control.played import PlayedControls, played_card
from pi_synth.control.voice import MonoVoice
from pi_synth.model.card import load_card

PHRASE = [{"t": 0.0, "midi": [144, 60, 100]}, {"t": 0.4, "midi": [144, 67, 100]},  # legato up a fifth
          {"t": 0.45, "midi": [128, 60, 0]}, {"t": 0.9, "midi": [128, 67, 0]}]


def _render(cli, model, tmp_path, extra=()):
    ev = tmp_path / f"e{len(list(tmp_path.glob('e*.json')))}.json"
    ev.write_text(json.dumps(PHRASE + list(extra)))
    out = ev.with_suffix(".wav")
    cli("render", model, "-o", out, "--events", ev, "--seconds", "1.6", check=0)
    return read_wav(out)[0][:, 0]


def test_the_voice_controls_come_after_the_timbre_controls(organ):
    card = played_card(load_card(organ()), MonoVoice())
    assert card.control_names == ("brightness", "attack", "release", "glide", "octave", "pitch", "loudness")


def test_the_default_knobs_never_hold_a_note(organ, cli, tmp_path):
    """Eight pots left half-way (as the emulated board starts) used to reach loudness and
    drone before any key: the keys play pitch and loudness, the knobs timbre and voice."""
    from pi_synth import config as config_mod
    from pi_synth.patch import build_patch

    patch = build_patch(config_mod.load(None), organ())
    assert sorted(patch.mapping.routes) == ["knob1", "knob2", "knob3", "knob4", "knob5"]
    assert "pitch" not in {r.control for r in patch.mapping.routes.values()}
    ev = tmp_path / "knobs.json"
    ev.write_text(json.dumps([{"t": 0.0, "source": f"knob{i}", "value": 0.5} for i in range(1, 6)]))
    out = tmp_path / "quiet.wav"
    cli("render", organ(), "-o", out, "--events", ev, "--seconds", "0.5", check=0)
    assert np.abs(read_wav(out)[0]).max() < 1e-4  # silence until a key is pressed


@pytest.mark.parametrize("knob,control", [("knob2", "attack"), ("knob3", "release"), ("knob4", "glide"),
                                          ("knob5", "octave")])
def test_each_voice_knob_changes_the_sound(organ, cli, tmp_path, knob, control):
    model = organ()
    base = _render(cli, model, tmp_path)
    turned = _render(cli, model, tmp_path, [{"t": 0.0, "source": knob, "value": 0.95}])
    assert np.abs(base).max() > 0.05
    diff = np.sqrt(np.mean((turned - base) ** 2)) / np.sqrt(np.mean(base ** 2))
    assert diff > 0.1, (control, diff)  # measurably another sound, not a rounding change


def test_played_controls_set_the_voice_and_the_bank():
    from pi_synth.audio.bank import ControlBank
    from pi_synth.tools.procedural import organ_card
    from pi_synth.model.card import parse_card

    bank = ControlBank(parse_card(json.dumps(organ_card(256, 48000))))
    voice = MonoVoice(attack_ms=5, release_ms=250)
    c = PlayedControls(bank, voice)
    c.set("octave", 1.4)  # whole octaves
    c.set("release", 1e9)  # clamped to the range
    c.set("brightness", 0.25)
    c.set("attack", float("nan"))  # ignored
    assert voice.transpose == 12.0 and c.get("release") == 5000.0 and bank.get("brightness") == 0.25
    assert c.get("attack") == 5.0
    assert c.values()["octave"] == 1.0 and set(c.values()) == set(c.names)
    with pytest.raises(KeyError, match="glide"):
        c.index("portamento")
