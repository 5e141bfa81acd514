"""The instrument's OSC requests (what the web page uses): a real Instrument on a real model,
asked over real UDP sockets by the web process's own client."""

import json
import shutil

import pytest

from pi_synth import config as config_mod
from pi_synth.app import Instrument
from pi_synth.control.sources.osc import MAX_REPLY, OscSource, Request
from pi_synth.surface import requests
from pi_synth.web.oscclient import InstrumentUnreachable, ask


@pytest.fixture
def inst(organ, tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(organ("organ"), models / "organ.onnx")
    from pi_synth.tools.procedural import organ_card

    shutil.copy(organ("bright", harmonics=4, card=organ_card(256, 48000, name="bright")),
                models / "bright.onnx")
    monkeypatch.setenv("PI_SYNTH_MODELS", str(models))
    cfg = config_mod.load(None)
    return Instrument(cfg, model="organ", fade_in=False)


@pytest.fixture
def osc(inst):
    src = OscSource(inst.router, port=0, status_fn=inst.status, requests=requests(inst))
    src.open()
    yield src
    src.close()


def test_models_list_and_select_crossfades(osc, inst):
    r = ask(osc.port, "models")
    names = [m["name"] for m in r["models"]]
    assert r["ok"] and {"organ", "bright"} <= set(names) and r["playing"] == "organ"
    r = ask(osc.port, "model/select", "bright", timeout=30)
    assert r == {"ok": True, "model": "bright", "path": r["path"]}
    st = ask(osc.port, "status")  # mid-crossfade: the model chosen, its path and controls agree
    assert st["crossfading"] is True and st["model"] == "bright" and st["model_path"] == r["path"]
    assert set(st["controls"]) == set(inst.controls.card.control_names)
    while inst.player.swapping:  # the audio thread's part: pull blocks through the crossfade
        inst.player.next_block()
    assert inst.card.name == "bright" and inst.player.swaps == 1
    st = json.loads(json.dumps(ask(osc.port, "status")))
    assert st["model"] == "bright" and st["crossfading"] is False


def test_select_refuses_paths_and_unknown_names(osc, inst, tmp_path):
    for name in ("/etc/passwd", "../organ", "nothing"):
        r = ask(osc.port, "model/select", name, timeout=10)
        assert r["ok"] is False and "no model named" in r["error"], r
    assert inst.card.name == "organ" and osc.refused == 3


def test_set_replies_and_names_the_controls_of_the_playing_model(osc, inst):
    assert ask(osc.port, "set", "brightness", 0.5) == {"ok": True, "control": "brightness"}
    assert inst.controls.values()["brightness"] == pytest.approx(0.5)
    r = ask(osc.port, "set", "cutoff", 0.5)
    assert r["ok"] is False and "organ has no control 'cutoff'" in r["error"] and "brightness" in r["error"]
    assert ask(osc.port, "set", "brightness", "loud")["ok"] is False


def test_card_has_ranges_and_values_that_follow_the_knobs(osc, inst):
    inst.router.set("brightness", 0.25)
    c = ask(osc.port, "card")
    ctl = {x["name"]: x for x in c["controls"]}
    assert ctl["brightness"]["value"] == pytest.approx(0.25)
    assert ctl["pitch"]["min"] == 30.0 and ctl["pitch"]["curve"] == "log"
    assert ask(osc.port, "status")["controls"]["brightness"] == pytest.approx(0.25)


def test_presets_save_load_rename_delete(osc, inst):
    inst.router.set("brightness", 0.5)
    assert ask(osc.port, "preset/save", 3, "warm")["ok"]
    inst.router.set("brightness", 0.1)
    assert ask(osc.port, "preset/load", 3)["ok"]
    assert inst.synth.bank.get("brightness") == pytest.approx(0.5)
    assert ask(osc.port, "preset/rename", 3, "warmer")["ok"]
    assert ask(osc.port, "presets")["presets"] == [{"slot": 3, "name": "warmer", "model": "organ"}]
    assert ask(osc.port, "preset/save", 3)["ok"]  # no name: keeps "warmer"
    assert ask(osc.port, "presets")["presets"][0]["name"] == "warmer"
    assert ask(osc.port, "preset/delete", 3)["ok"]
    assert ask(osc.port, "presets")["presets"] == []
    for bad in (("preset/load", 3), ("preset/save", 200), ("preset/rename", 1, "x"),
                ("preset/save", 1, "a\nb"), ("preset/delete", 3)):
        r = ask(osc.port, *bad)
        assert r["ok"] is False and r["error"], bad


def test_mapping_set_delete_and_learn(osc, inst):
    r = ask(osc.port, "mapping/set", "cc74", json.dumps({"control": "brightness", "lo": 0.2, "invert": True}))
    assert r["ok"] and r["saved"]
    inst.router.source("cc74", 0.0)
    assert inst.synth.bank.get("brightness") == pytest.approx(1.0)  # inverted, 0.2..1 of 0..1
    m = ask(osc.port, "mapping")
    assert m["routes"]["cc74"] == {"control": "brightness", "lo": 0.2, "invert": True}
    assert "cc74" in m["learned"] and "brightness" in m["controls"]
    # saved like a learned binding: a new Instrument (a restart) has it
    again = Instrument(inst.cfg, model="organ", fade_in=False)
    assert again.mapping.routes["cc74"].control == "brightness"
    for bad in (("cc74", json.dumps({"control": "cutoff"})), ("cc74", "{not json"),
                ("cc74", json.dumps({"action": "format_disk"})), ("", json.dumps({"control": "pitch"})),
                ("cc74", json.dumps({"action": "program", "arg": 300})),
                ("cc74", json.dumps({"control": "brightness", "action": "panic"}))):
        r = ask(osc.port, "mapping/set", *bad)
        assert r["ok"] is False and r["error"], bad
    assert ask(osc.port, "mapping/delete", "cc74")["ok"]
    assert "cc74" not in ask(osc.port, "mapping")["routes"]
    r = ask(osc.port, "learn", "loudness")
    assert r == {"ok": True, "armed": True, "target": "loudness"}
    inst.router.source("fader9", 0.1)
    inst.router.source("fader9", 0.8)
    assert inst.mapping.routes["fader9"].control == "loudness"
    assert ask(osc.port, "status")["learn"] == {"armed": False, "target": None}


def test_reload_rereads_the_config_and_says_why_not(osc, inst, tmp_path):
    conf = tmp_path / "pi-synth.toml"
    conf.write_text("[midi]\nchannel = 3\n")
    inst.config_path = str(conf)
    r = ask(osc.port, "reload", timeout=30)
    assert r["ok"] and r["restart"] == []
    assert inst.router.channel == 2
    conf.write_text("[midi]\nchannel = 3\n[osc]\nport = 9232\n[audio]\nperiod = 512\n")
    r = ask(osc.port, "reload", timeout=30)  # read at start only: said, not silently "ok"
    assert r["ok"] and r["restart"] == ["audio.period", "osc.port"], r
    conf.write_text("[midi]\nchannel = 99\n")
    r = ask(osc.port, "reload", timeout=30)
    assert r["ok"] is False and r["error"].startswith(f"{conf}:2: key 'midi.channel' must be in")
    assert inst.router.channel == 2  # the old config holds
    # a model that is not there (a SIGHUP with this stopped the instrument): refused before any change
    conf.write_text('[midi]\nchannel = 5\n[model]\npath = "nonexistent"\n')
    playing = inst.model_path
    assert inst.reload(str(conf)) is False
    assert f"{conf}:4: [model] path: no model named 'nonexistent'" in inst.last_error
    assert inst.router.channel == 2 and inst.model_path == playing
    conf.write_text("[midi]\nchannel = 4\n")  # osc.port back to what runs: nothing to restart
    assert inst.reload(str(conf)) and inst.needs_restart == []


def test_a_reload_keeps_what_the_command_line_set(organ, tmp_path):
    """`run --period 128 --backend null`, then SIGHUP with the file unchanged: the flags
    outrank the file for the whole run, so nothing is "restart needed" (it said both)."""
    conf = tmp_path / "pi-synth.toml"
    conf.write_text("[midi]\nchannel = 4\n")
    cfg = config_mod.load(str(conf))
    config_mod.override(cfg, "audio.period", 128, "--period")
    config_mod.override(cfg, "audio.backend", "null", "--backend")
    inst = Instrument(cfg, model=str(organ()), fade_in=False)
    assert inst.reload(str(conf)) and inst.needs_restart == [] and inst.cfg.audio.period == 128
    assert inst.cfg.where("audio.backend") == "--backend" and inst.router.channel == 3


def test_wrong_arguments_get_a_one_line_answer(osc):
    r = ask(osc.port, "preset/load")
    assert r == {"ok": False, "error": "/pi-synth/preset/load takes <slot 0..127>"}
    assert ask(osc.port, "models", 1)["ok"] is False
    for args in (("set", "brightness", float("nan")), ("set", "brightness", float("inf")),
                 ("preset/save", float("nan"))):  # no reply at all before: the sender timed out
        r = ask(osc.port, *args)
        assert r["ok"] is False and "expected a finite number" in r["error"], (args, r)


def test_a_reply_bigger_than_a_datagram_arrives_in_parts(inst):
    big = {"ok": True, "blob": "x" * (3 * MAX_REPLY + 17)}
    src = OscSource(inst.router, port=0, requests={"big": Request(lambda: big)})
    with src:
        assert ask(src.port, "big") == big


def test_slow_requests_do_not_stop_the_knobs(inst):
    import threading

    release = threading.Event()

    def slow():
        release.wait(5)
        return {"ok": True}

    src = OscSource(inst.router, port=0, requests={"slow": Request(slow, slow=True)})
    with src:
        t = threading.Thread(target=lambda: ask(src.port, "slow", timeout=10))
        t.start()
        from pi_synth.web.oscclient import message
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(message("/pi-synth/control/brightness", 0.75), ("127.0.0.1", src.port))
        ask(src.port, "status")  # answered while the slow request waits
        assert inst.synth.bank.get("brightness") == pytest.approx(0.75)
        release.set()
        t.join(10)


def test_slow_requests_past_the_queue_are_busy_and_say_behind_what(inst):
    """One slow request running and SLOW_QUEUE waiting: the next is answered busy (a flag
    the web page turns into 503 + Retry-After) naming the one running — it said "a model
    load or reload is already running" whatever ran."""
    import threading
    import time

    from pi_synth.control.sources.osc import SLOW_QUEUE

    release = threading.Event()
    src = OscSource(inst.router, port=0, requests={"recording": Request(lambda: release.wait(5) and {"ok": True},
                                                                         slow=True)})
    with src:
        waiting = [threading.Thread(target=lambda: ask(src.port, "recording", timeout=10)) for _ in range(SLOW_QUEUE + 1)]
        for t in waiting:
            t.start()
            time.sleep(0.05)  # in order: the first runs, the rest queue
        reply = ask(src.port, "recording")
        release.set()
        for t in waiting:
            t.join(10)
    assert reply["ok"] is False and reply["busy"] is True, reply
    assert f"{SLOW_QUEUE} slow requests are waiting behind /pi-synth/recording" in reply["error"], reply


def test_no_instrument_is_one_line(tmp_path):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never answers
        with pytest.raises(InstrumentUnreachable, match="no reply to /pi-synth/status"):
            ask(port, "status", timeout=0.3)


def test_every_request_is_documented(inst):
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "osc.md").read_text()
    for address in requests(inst):
        assert f"`/pi-synth/{address}`" in doc, address


def test_program_numbers_keep_the_shipped_voices_and_do_not_wrap(organ, tmp_path, monkeypatch, caplog):
    """An upload used to take a program number before the shipped voices (its name sorted
    first) and move theirs; a number past the last wrapped round to another model."""
    added = tmp_path / "added"
    added.mkdir()
    (added / "aaa.onnx").write_bytes(organ("aaa").read_bytes())
    monkeypatch.setenv("PI_SYNTH_MODELS", str(added))
    inst = Instrument(config_mod.load(), model="organ", fade_in=False)
    names = inst.model_names()
    assert names[-1] == "aaa" and names[:-1] == sorted(names[:-1]) and "flute" in names
    with caplog.at_level("INFO", logger="pi_synth"):
        inst.action("program", 100)
    assert f"program 100: there are {len(names)} models" in caplog.text
    assert inst.player.swaps == 0 and str(inst.model_path).endswith("organ.onnx")
