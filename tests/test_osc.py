"""OSC on real UDP sockets into a real router on a real model (onnxruntime session)."""

import json
import math
import random
import socket
import threading
import time

import pytest
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from pi_synth.model.runtime import Runtime
from pi_synth.audio.bank import ControlBank
from pi_synth.control.learn import MidiLearn
from pi_synth.control.mapping import Route
from pi_synth.control.router import Router
from pi_synth.control.sources import source_class
from pi_synth.control.sources.osc import OscSource
from pi_synth.errors import DeviceError


def msg(address, *args) -> bytes:
    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def wait_for(cond, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.002)
    return cond()


@pytest.fixture
def router(organ):
    rt = Runtime(organ(), warmup_blocks=0)
    r = Router(rt.card, ControlBank(rt.card))
    r.runtime = rt  # keep the session alive with the router
    return r


@pytest.fixture
def osc(router):
    src = OscSource(router, port=0)
    src.open()
    yield src
    src.close()


@pytest.fixture
def client():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2.0)
    yield s
    s.close()


def send(client, osc, data: bytes):
    client.sendto(data, ("127.0.0.1", osc.port))


def sync(client, osc):
    """Round trip a status request: every datagram sent before it has been handled."""
    send(client, osc, msg("/pi-synth/status"))
    data, _ = client.recvfrom(65536)
    return data


def test_is_a_source_kind_and_binds_localhost_by_default(router):
    assert source_class("osc") is OscSource
    src = OscSource(router, port=0)
    assert src.host == "127.0.0.1" and src.kind == "osc"
    with src:
        assert src.port > 0
        assert src._server.socket.getsockname() == ("127.0.0.1", src.port)
        assert src.status()["open"] and src.status()["port"] == src.port


def test_control_sets_the_bank_in_card_units(osc, client, router):
    c = SimpleUDPClient("127.0.0.1", osc.port)
    c.send_message("/pi-synth/control/brightness", 0.3)
    c.send_message("/pi-synth/control/pitch", 330)  # an OSC int is fine
    assert wait_for(lambda: router.bank.get("pitch") == pytest.approx(330.0))
    assert router.bank.get("brightness") == pytest.approx(0.3)
    c.send_message("/pi-synth/control/pitch", 1e9)  # clamped by the bank to the card's range
    assert wait_for(lambda: router.bank.get("pitch") == pytest.approx(4000.0))


def test_unknown_control_is_counted_not_fatal(osc, client, router, caplog):
    for _ in range(3):
        send(client, osc, msg("/pi-synth/control/cutoff", 0.5))
    send(client, osc, msg("/pi-synth/control/loudness", -12.0))
    sync(client, osc)
    assert osc.unknown == 3
    assert router.bank.get("loudness") == pytest.approx(-12.0)
    assert sum("cutoff" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_source_goes_through_the_mapping(osc, client, router):
    route = router.mapping.routes["knob1"]
    ctl = router.card.control(route.control)
    send(client, osc, msg("/pi-synth/source/knob1", 0.25))
    sync(client, osc)
    assert router.bank.get(ctl.name) == pytest.approx(ctl.from_unit(0.25), rel=1e-5)
    send(client, osc, msg("/pi-synth/source/knob1", 7.0))  # out of 0..1: clamped
    send(client, osc, msg("/pi-synth/source/nothing", 0.5))  # unmapped: counted by the router
    sync(client, osc)
    assert router.bank.get(ctl.name) == pytest.approx(ctl.from_unit(1.0), rel=1e-5)
    assert router.unmapped == 1


def test_notes_move_the_voice(osc, client, router):
    send(client, osc, msg("/pi-synth/note", 69, 100))
    sync(client, osc)
    assert router.voice.gate and router.voice.target_pitch_hz == pytest.approx(440.0)
    send(client, osc, msg("/pi-synth/note", 57.0, 90.0))  # apps send floats
    sync(client, osc)
    assert router.voice.target_pitch_hz == pytest.approx(220.0)
    send(client, osc, msg("/pi-synth/note", 57, 0))
    send(client, osc, msg("/pi-synth/note", 69, 0))
    sync(client, osc)
    assert not router.voice.gate
    send(client, osc, msg("/pi-synth/note", 60))  # default velocity
    sync(client, osc)
    assert router.voice.note == 60 and router.voice.velocity == 100


def test_raw_midi_bytes_keep_running_status_across_messages(osc, client, router):
    send(client, osc, msg("/pi-synth/midi", 0x90, 57, 100))
    send(client, osc, msg("/pi-synth/midi", 64, 100))  # running status
    sync(client, osc)
    assert router.voice.held == (57, 64)
    assert router.voice.target_pitch_hz == pytest.approx(329.63, rel=1e-4)
    send(client, osc, msg("/pi-synth/midi", bytes([0xB0, 123, 0])))  # a blob: all notes off
    sync(client, osc)
    assert not router.voice.gate


def test_actions_reach_on_action(osc, client, router):
    got = []
    router.on_action = lambda name, arg: got.append((name, arg))
    send(client, osc, msg("/pi-synth/action/next_model"))
    send(client, osc, msg("/pi-synth/action/program", 5.0))
    send(client, osc, msg("/pi-synth/action/preset_save", 3))
    send(client, osc, msg("/pi-synth/action/learn", "brightness"))
    send(client, osc, msg("/pi-synth/action/format_disk"))  # not an action: counted
    sync(client, osc)
    assert got == [("next_model", None), ("program", 5), ("preset_save", 3), ("learn", "brightness")]
    assert osc.unknown == 1


def test_status_replies_to_the_sender(osc, client, router):
    router.bank.set("brightness", 0.125)
    reply = sync(client, osc)
    assert reply.startswith(b"/pi-synth/status\x00")
    from pythonosc.osc_message import OscMessage

    m = OscMessage(reply)
    assert m.address == "/pi-synth/status"
    assert json.loads(m.params[0]) == pytest.approx(router.bank.values())


def test_status_fn_and_reply_port(router, client):
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(2.0)
    with OscSource(router, port=0, status_fn=lambda: {"model": "organ", "xruns": 0}) as src:
        send(client, src, msg("/pi-synth/status", listener.getsockname()[1]))
        data, _ = listener.recvfrom(65536)
    listener.close()
    from pythonosc.osc_message import OscMessage

    assert json.loads(OscMessage(data).params[0]) == {"model": "organ", "xruns": 0,
                                                       "osc": {"garbage": 0, "unknown": 0}}


def test_garbage_never_crashes_the_server(osc, client, router):
    rng = random.Random(7)
    bad = [rng.randbytes(rng.randint(0, 600)) for _ in range(200)]
    bad += [b"/pi-synth/control/pitch\x00", b"#bundle\x00garbage", b"\x00" * 64,
            msg("/pi-synth/control/pitch")[:-3]]  # truncated
    for i, data in enumerate(bad):
        send(client, osc, data)
        if i % 40 == 39:
            sync(client, osc)  # pace the burst: the kernel drops what overflows its buffer
    wrong = [
        msg("/pi-synth/control/pitch", "loud"),
        msg("/pi-synth/control/pitch", float("nan")),
        msg("/pi-synth/control/pitch", float("inf")),
        msg("/pi-synth/control/pitch", True),
        msg("/pi-synth/control/pitch", 1.0, 2.0),
        msg("/pi-synth/source/knob1", float("nan")),
        msg("/pi-synth/note", 200, 100),
        msg("/pi-synth/note", 60.5, 100),
        msg("/pi-synth/note"),
        msg("/pi-synth/midi", 300),
        msg("/pi-synth/midi"),
        msg("/pi-synth/action/program", float("nan")),
        msg("/pi-synth/action/program", 1, 2),
        msg("/pi-synth/status", 0),
    ]
    for data in wrong:
        send(client, osc, data)
    for data in (msg("/other/app", 1), msg("/pi-synth/control"), msg("/pi-synth/nope/x", 1)):
        send(client, osc, data)
    sync(client, osc)
    assert osc.garbage >= len(wrong)
    assert osc.unknown == 3
    osc.status_fn, osc._full_status = (lambda: {"model": "x"}), True  # the instrument's status
    reply = sync(client, osc)  # carries these counters, as docs/osc.md says
    assert f'"osc": {{"garbage": {osc.garbage}, "unknown": 3}}'.encode() in reply, reply[-200:]
    assert osc.errors == 0
    assert osc._thread.is_alive()
    assert all(math.isfinite(v) for v in router.bank.values().values())
    assert router.bank.get("pitch") == pytest.approx(220.0)  # nothing got through
    send(client, osc, msg("/pi-synth/control/pitch", 300.0))
    sync(client, osc)
    assert router.bank.get("pitch") == pytest.approx(300.0)


def test_a_bundle_runs_at_once_even_with_a_far_future_time_tag(osc, client, router):
    b = OscBundleBuilder(time.time() + 3600)  # an hour ahead: must not stall the server
    m = OscMessageBuilder("/pi-synth/control/brightness")
    m.add_arg(0.75)
    b.add_content(m.build())
    send(client, osc, b.build().dgram)
    sync(client, osc)
    assert router.bank.get("brightness") == pytest.approx(0.75)


def test_learn_over_osc(osc, client, router, tmp_path):
    learn = MidiLearn(router.mapping, tmp_path / "learn.json")
    router.listener = learn.listener
    router.on_action = lambda name, arg: learn.on_action(arg) if name == "learn" else None
    send(client, osc, msg("/pi-synth/action/learn", "loudness"))
    send(client, osc, msg("/pi-synth/source/fader3", 0.1))
    send(client, osc, msg("/pi-synth/source/fader3", 0.6))
    sync(client, osc)
    assert router.mapping.routes["fader3"] == Route("loudness")
    assert json.loads((tmp_path / "learn.json").read_text())["bindings"] == {
        "fader3": {"control": "loudness"}}


def test_close_is_prompt_idempotent_and_frees_the_port(router):
    src = OscSource(router, port=0)
    src.open()
    port = src.port
    thread = src._thread
    t0 = time.monotonic()
    src.close()
    assert time.monotonic() - t0 < 1.0
    assert not thread.is_alive()
    src.close()
    again = OscSource(router, port=port)  # the port is free again
    with again:
        assert again.port == port
    with pytest.raises(RuntimeError):
        with again:
            again.open()


def test_a_busy_port_is_a_device_error(router, osc):
    with pytest.raises(DeviceError, match=f"127.0.0.1:{osc.port}"):
        OscSource(router, port=osc.port).open()


def test_close_while_a_sender_is_flooding(router):
    src = OscSource(router, port=0)
    src.open()
    stop = threading.Event()

    def flood():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        data = msg("/pi-synth/control/brightness", 0.5)
        while not stop.is_set():
            try:
                s.sendto(data, ("127.0.0.1", src.port))
            except OSError:
                pass
        s.close()

    t = threading.Thread(target=flood)
    t.start()
    try:
        assert wait_for(lambda: src.messages > 100)
        t0 = time.monotonic()
        src.close()
        assert time.monotonic() - t0 < 1.0
    finally:
        stop.set()
        t.join()


def test_a_flood_is_dropped_past_the_rate_and_the_audio_thread_keeps_its_cpu(router, caplog):
    """100k notes a second held the GIL from the audio thread (49 xruns in 5 s). Past
    RATE_PER_S datagrams a second the source drops and naps (the kernel drops the rest): a
    flood gets through at about that rate, one line says so, and a message sent after it
    is still heard."""
    from pi_synth.control.sources.osc import RATE_BURST, RATE_PER_S

    src = OscSource(router, port=0)
    src.open()
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        data = msg("/pi-synth/note", 60, 100)
        t0 = time.monotonic()
        for _ in range(30000):
            try:
                s.sendto(data, ("127.0.0.1", src.port))
            except OSError:
                pass
        wait_for(lambda: src.flooded > 0)
        time.sleep(0.3)
        took = time.monotonic() - t0
        assert src.flooded > 0 and src.status()["flooded"] == src.flooded
        assert src.messages <= RATE_BURST + RATE_PER_S * took * 1.1, (src.messages, took)
        assert sum("the excess is dropped so the audio plays on" in r.getMessage() for r in caplog.records) == 1
        time.sleep(RATE_BURST / RATE_PER_S)  # the bucket refills
        s.sendto(msg("/pi-synth/control/brightness", 0.25), ("127.0.0.1", src.port))
        assert wait_for(lambda: router.bank.get("brightness") == pytest.approx(0.25))
        s.close()
    finally:
        src.close()
