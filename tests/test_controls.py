"""Control sources on emulated chips and real byte streams: gpiozero's MockFactory with
an emulated MCP3008 on its SPI pins, an emulated ADS1115 on an I2C bus, a pty at
31250 baud for DIN MIDI, JACK MIDI ports, mock GPIO pins for buttons and encoders."""

import json
import os
import time
import tty

import numpy as np
from types import SimpleNamespace

import mido
import pytest
from gpiozero import Device

from pi_synth.model.runtime import Runtime
from pi_synth.config import ARRAYS
from pi_synth.audio.bank import ControlBank
from pi_synth.control.cv import Calibration, save_calibration
from pi_synth.control.board import EmulatedBoard, use_board
from pi_synth.control.leds import StatusLeds
from pi_synth.control.mapping import Mapping, Route
from pi_synth.app import Instrument
from pi_synth.control.router import Router
from pi_synth.control.rig import Rig


def item(table, **kw):
    d = {k: spec.default for k, spec in ARRAYS[table].items()}
    d.update(kw)
    return SimpleNamespace(**d)


@pytest.fixture
def router(organ):
    rt = Runtime(organ(), warmup_blocks=0)
    bank = ControlBank(rt.card)
    return Router(rt.card, bank, Mapping(rt.card))


@pytest.fixture
def board():
    """The emulated board: gpiozero's MockFactory and emulated chips on its buses."""
    b = use_board(EmulatedBoard())
    yield b
    use_board(None)
    assert Device.pin_factory is None  # closing the board put gpiozero back


@pytest.fixture
def emu(board, monkeypatch, tmp_path):
    """The board with an MCP3008 on SPI 0.0, as ``--emulate`` wires one."""
    monkeypatch.setenv("PI_SYNTH_STATE_DIR", str(tmp_path / "state"))
    board.attach_adc("mcp3008")
    return board


def test_mcp3008_knobs_reach_the_model(router, emu):
    rig = Rig(router)
    src = rig.add("adc", "adc", chip="mcp3008", channels=[0, 1, 2], smooth_ms=0, deadband=0.004)
    assert src is not None
    emu.adc.volts[:3] = [0.0, 3.3, 1.65]
    rig.poll_once(0.0)
    # a note model: knob1 → brightness, knob2 → pitch, knob3 → loudness
    assert router.bank.get("brightness") == pytest.approx(0.0, abs=0.002)
    assert router.bank.get("pitch") == pytest.approx(4000, rel=0.01)
    assert router.bank.get("loudness") == pytest.approx(-40, abs=0.2)
    assert emu.adc.conversions >= 3  # through the chip's SPI protocol, not a shortcut
    rig.close()


def test_knobs_apply_where_they_stand_to_the_next_model(emu):
    """Knob1 at full, then a program change to another model: its first control sat at its
    default until the knob moved (the panel no longer matched the sound). A new model takes
    every knob where it stands, on the next poll."""
    from pi_synth import config as config_mod

    inst = Instrument(config_mod.load(), model="flute")
    rig = Rig(inst.router)
    rig.add("adc", "adc", chip="mcp3008", channels=[0], smooth_ms=0)
    emu.adc.volts[0] = 3.3  # knob1, at full
    rig.poll_once(0.0)
    assert inst.swap("morph")
    target = inst.mapping.routes["knob1"].control  # morph's first latent
    c = inst.controls.card.control(target)
    assert inst.controls.get(target) == pytest.approx(c.default)  # before a poll: the default
    rig.poll_once(0.01)
    assert inst.controls.get(target) == pytest.approx(max(c.min, c.max), rel=0.01)
    rig.close()


def test_deadband_stops_jitter(router, emu):
    rig = Rig(router)
    rig.add("adc", "adc", chip="mcp3008", channels=[0], smooth_ms=0, deadband=0.004)
    sent = []
    router.listener = lambda name, v: sent.append(v) or False
    for i in range(40):  # ±1 LSB of noise around mid-scale
        emu.adc.volts[0] = 1.65 + (0.0033 if i % 2 else -0.0033)
        rig.poll_once(i * 0.005)
    assert len(sent) == 1
    emu.adc.volts[0] = 2.5  # a real move goes through
    rig.poll_once(1.0)
    assert len(sent) == 2 and sent[-1] == pytest.approx(2.5 / 3.3, abs=0.002)
    rig.close()


def test_knob_smoothing_follows_the_clock_not_the_poll_count(router, emu):
    """smooth_ms is a time: polled at 20 Hz (the emulated chip's bit-banged SPI is slow) a
    20 ms smoothing settles within a few polls, not after 200 of them (it took ~1 s)."""
    rig = Rig(router, poll_hz=200.0)
    src = rig.add("adc", "adc", chip="mcp3008", channels=[0], smooth_ms=20, deadband=0.0)
    emu.adc.volts[0] = 0.0
    rig.poll_once(0.0)
    emu.adc.volts[0] = 3.3
    for i in range(1, 4):
        rig.poll_once(i * 0.05)  # 20 polls a second
    assert src.knobs[0].value > 0.99, src.knobs[0].value
    emu.adc.volts[0] = 0.0
    for i in range(4, 7):  # 200 polls a second: 15 ms is most of a 20 ms time constant's way
        rig.poll_once(0.15 + (i - 3) * 0.005)
    assert 0.4 < src.knobs[0].value < 0.6, src.knobs[0].value
    rig.close()


def test_floating_input_is_muted(router, emu, caplog):
    rig = Rig(router)
    src = rig.add("adc", "adc", chip="mcp3008", channels=[0, 1], smooth_ms=0)
    emu.adc.floating.add(1)
    for i in range(60):
        rig.poll_once(i * 0.005)
    assert [k.name for k in src.knobs if k.floating] == ["knob2"]
    assert "knob2" in caplog.text and "noise" in caplog.text
    before = router.bank.get("pitch")
    for i in range(20):
        rig.poll_once(1 + i * 0.005)
    assert router.bank.get("pitch") == before  # noise never reaches the sound
    emu.adc.floating.clear()
    emu.adc.volts[1] = 1.0
    for i in range(40):
        rig.poll_once(2 + i * 0.005)
    assert not src.knobs[1].floating
    rig.close()


def test_ads1115_over_emulated_i2c(router, board):
    chip = board.attach_adc("ads1115")  # on I2C bus 1 at 0x48, where the reader looks by default
    rig = Rig(router)
    rig.add("adc", "adc", chip="ads1115", channels=[0, 1, 2, 3], smooth_ms=0)
    chip.volts = [3.3, 0.0, 1.65, 0.5]
    before = chip.conversions
    rig.poll_once(0.0)
    assert router.bank.get("brightness") == pytest.approx(1.0, abs=0.002)
    assert router.bank.get("pitch") == pytest.approx(30, rel=0.01)
    assert chip.conversions - before == 4  # one single-shot conversion per channel
    bad = Rig(router)
    assert bad.add("adc", "adc", chip="ads1115", i2c_address=0x49) is None
    assert "0x49" in bad.failed[0]
    rig.close()


def test_knobs_past_the_chips_channels_are_said(router, board, caplog):
    """The template's eight knob channels on a four-channel ADS1115: knob5..knob8 were
    silently not read; a [[cv]] on channel 5 read garbage and said the CV was out of range."""
    board.attach_adc("ads1115")
    rig = Rig(router)
    cv = [item("cv", channel=5, role="pitch", frontend="bipolar5")]
    rig.add("adc", "adc", chip="ads1115", channels=list(range(8)), smooth_ms=0, cv=cv)
    said = [r.getMessage() for r in caplog.records if "channels the" in r.getMessage()]
    # (channel 5 is the CV's, so knob5..knob7 sit on 4, 6 and 7)
    assert len(said) == 1 and "wires knob5, knob6, knob7 to" in said[0] and "0..3" in said[0], said
    assert any("[[cv]] cv1: channel 5" in r.getMessage() and "not read" in r.getMessage() for r in caplog.records)
    rig.poll_once(0.0)
    assert not any("past the input stage" in r.getMessage() for r in caplog.records)
    rig.close()


def test_cv_pitch_calibrated_1v_per_octave(router, emu):
    # a ±5 V front-end with a 3 % gain error and an offset: nominal scaling is off
    def adc_volts(jack):
        return (jack * 1.03 + 5.0) / 10.0 * 3.3 + 0.02

    def reading(jack):
        return min(1023, int(adc_volts(jack) / 3.3 * 1024)) / 1024 + 0.5 / 1024

    cal = Calibration([(reading(v), v) for v in (-2.0, 0.0, 2.0, 4.0)])
    save_calibration("mcp3008-0.0", 6, cal)
    rig = Rig(router)
    cv = [item("cv", channel=6, role="pitch", frontend="bipolar5", base_note=60.0)]
    rig.add("adc", "adc", chip="mcp3008", channels=[0], cv=cv)
    for octave in (-1, 0, 1, 2, 3):
        emu.adc.volts[6] = adc_volts(float(octave))
        rig.poll_once(float(octave))
        want = 261.6256 * 2 ** octave
        cents = 1200 * abs(__import__("math").log2(router.bank.get("pitch") / want))
        assert cents < 8, (octave, router.bank.get("pitch"), want)
    rig.close()


@pytest.mark.parametrize("frontend,jack,adc", [("unipolar10", (0.0, 10.0), (0.0, 3.20)),
                                                ("bipolar5", (-5.0, 5.0), (0.10, 3.26)),
                                                ("bipolar10", (-10.0, 10.0), (0.16, 3.25))])
def test_nominal_scaling_is_the_documented_input_stage(frontend, jack, adc):
    """With no calibration, a reading means what docs/raspberry-pi.md's resistor table makes
    of the jack's voltage (the rounded ±5 V / 0..10 V ends were 3 % off: ~180 cents at 5 V)."""
    from pi_synth.control.cv import Calibration

    cal = Calibration.nominal(frontend)
    for v, a in zip(jack, adc):
        assert cal.volts(a / 3.3) == pytest.approx(v, abs=0.06), (frontend, v, a)


def test_emulated_cv_jacks_rest_at_0_volts(router, emu):
    """--emulate with [[cv]] tables started with the gate open and the pitch at the top: the
    emulated chip's channels sat at mid-scale (a knob's rest), not at an unpatched jack's 0 V."""
    rig = Rig(router)
    cv = [item("cv", channel=6, role="pitch", frontend="bipolar5", base_note=60.0),
          item("cv", channel=7, role="gate", frontend="unipolar10", threshold=1.0)]
    rig.add("adc", "adc", chip="mcp3008", channels=[0], cv=cv)
    rig.poll_once(0.0)
    assert not router.voice.gate
    assert router.bank.get("pitch") == pytest.approx(261.63, rel=0.01)  # 0 V: the base note
    rig.close()


def test_a_pitch_cv_past_the_input_range_is_said(router, emu, caplog):
    """-2 V into a 0..10 V input sat at the ADC's bottom and played 91 Hz for 65 Hz, and 15 V
    held the top, without a word: one line says the CV is past the input stage's range."""
    rig = Rig(router)
    cv = [item("cv", channel=6, role="pitch", frontend="unipolar10", base_note=60.0)]
    rig.add("adc", "adc", chip="mcp3008", channels=[], cv=cv)
    emu.adc.volts[6] = 0.0
    for k in range(30):
        rig.poll_once(0.005 * k)
    said = [r.getMessage() for r in caplog.records if "past the input stage's range" in r.getMessage()]
    assert len(said) == 1 and "cv1 reads the ADC's bottom" in said[0], said
    rig.close()


def test_the_last_pitch_source_to_move_wins(router):
    """A patched CV pitch took every MIDI note's pitch for the rest of the run (a keyboard
    played one note). Now a key takes the pitch; the CV's noise does not take it back, a
    move of more than CV_TAKES_CENTS does, and so does its gate."""
    from pi_synth.control.router import CV_TAKES_CENTS

    def pitch():
        router.on_block(0)
        return router.bank.get("pitch")

    router.cv_pitch(261.63)
    assert pitch() == pytest.approx(261.63)
    router.midi_bytes(bytes([0x90, 67, 100]))  # a key: G4
    assert pitch() == pytest.approx(392.0, rel=1e-3)
    router.cv_pitch(261.63 * 2 ** (0.5 * CV_TAKES_CENTS / 1200))  # the CV's jitter
    assert pitch() == pytest.approx(392.0, rel=1e-3)
    router.cv_pitch(329.63)  # the sequencer moved: the CV plays again
    assert pitch() == pytest.approx(329.63)
    router.midi_bytes(bytes([0x90, 72, 100]))
    assert pitch() == pytest.approx(523.25, rel=1e-3)
    router.cv_gate(True)  # the rig's gate plays the rig's pitch
    assert pitch() == pytest.approx(329.63)


@pytest.mark.parametrize("text", ['{"points": [[0.3, 0], [0.2, 1], [0.4, 2]]}', '{"pts": []}',
                                  '{"points": [["a", 1], [0.5, 2]]}', '[1, 2]'])
def test_a_hand_edited_calibration_spoils_only_its_channel(router, emu, caplog, text):
    """A calibration file edited into nonsense (out of order, a wrong key, text) took the
    whole ADC source down: every knob dead, one line naming no file. Now that channel plays
    the nominal scaling, the line names the file, and the knobs play on."""
    from pi_synth.control.cv import calibration_path

    path = calibration_path("mcp3008-0.0", 6)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    rig = Rig(router)
    cv = [item("cv", channel=6, role="pitch", frontend="unipolar10", base_note=60.0)]
    src = rig.add("adc", "adc", chip="mcp3008", channels=[0], cv=cv, smooth_ms=0)
    assert src is not None, rig.failed
    emu.adc.volts[0] = 0.0
    emu.adc.volts[6] = 0.33  # ~1 V at the jack, nominally: ~C5
    rig.poll_once(0.0)
    assert router.bank.get("brightness") == pytest.approx(0.0, abs=0.002)  # knob1 plays
    from pi_synth.control.cv import FRONTENDS

    lo, hi = FRONTENDS["unipolar10"]
    assert router.bank.get("pitch") == pytest.approx(261.63 * 2 ** (lo + (hi - lo) * 0.1), rel=0.01)
    said = [r.getMessage() for r in caplog.records if "not a calibration" in r.getMessage()]
    assert len(said) == 1 and str(path) in said[0] and "nominal scaling" in said[0], said
    rig.close()


def test_gate_hysteresis_and_min_length(router, emu):
    rig = Rig(router)
    cv = [item("cv", channel=7, role="gate", frontend="direct", threshold=1.0, hysteresis=0.4, min_ms=10)]
    rig.add("adc", "adc", chip="mcp3008", channels=[], cv=cv)
    t = 0.0
    for v, expect in [(0.0, False), (1.1, False), (1.25, True), (0.9, True), (0.75, False)]:
        emu.adc.volts[7] = v
        t += 0.02
        rig.poll_once(t)
        assert router.voice.gate is expect, (v, expect)
    emu.adc.volts[7] = 2.0
    rig.poll_once(t + 0.02)
    emu.adc.volts[7] = 0.0
    rig.poll_once(t + 0.025)  # 5 ms later: shorter than min_ms, the gate holds
    assert router.voice.gate
    rig.poll_once(t + 0.04)
    assert not router.voice.gate
    rig.close()


def test_din_midi_through_a_pty_at_31250(router):
    master, slave = os.openpty()
    tty.setraw(slave)
    rig = Rig(router)
    src = rig.add("din", "din", device=os.ttyname(slave), baud=31250)
    assert src is not None
    # note on A4 then, by running status, E5; a clock byte inside the second message
    os.write(master, bytes([0x90, 69, 100, 76, 0xF8, 90]))
    deadline = time.monotonic() + 3
    while router.voice.note != 76 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert router.voice.note == 76 and router.voice.held == (69, 76)
    os.write(master, bytes([0x80, 76, 0, 69, 0]))  # both off, running status
    deadline = time.monotonic() + 3
    while router.voice.gate and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not router.voice.gate and src.status()["bytes"] == 11
    rig.close()
    os.close(master)
    os.close(slave)


def test_din_lets_held_notes_go_when_the_keyboard_goes_away(router, caplog):
    """A chord held when the cable is pulled droned on until each key came back. A keyboard
    that sends active sensing and then falls silent for 300 ms has gone (MIDI 1.0): its
    notes are let go; so are they when the port itself fails."""

    def wait(cond, s=3.0):
        end = time.monotonic() + s
        while not cond() and time.monotonic() < end:
            time.sleep(0.01)
        return cond()

    master, slave = os.openpty()
    tty.setraw(slave)
    rig = Rig(router)
    src = rig.add("din", "din", device=os.ttyname(slave), baud=31250)
    os.write(master, bytes([0xFE, 0x90, 60, 100, 0xFE]))
    assert wait(lambda: router.voice.gate)
    for _ in range(3):  # sensing every 100 ms: the note holds
        time.sleep(0.1)
        os.write(master, bytes([0xFE]))
    assert router.voice.gate
    t0 = time.monotonic()
    assert wait(lambda: not router.voice.gate), "the note held after active sensing stopped"
    assert 0.25 < time.monotonic() - t0 < 1.0 and src.status()["released"] == 1
    assert any("no byte for 300 ms after active sensing" in r.getMessage() for r in caplog.records)
    os.write(master, bytes([0x90, 64, 100]))  # a keyboard with no active sensing: held until
    assert wait(lambda: router.voice.gate)   # its note-off, or its port fails
    time.sleep(0.5)
    assert router.voice.gate
    os.close(master)  # the cable pulled (a USB-serial adapter gone: reads fail)
    assert wait(lambda: not router.voice.gate), "the note held after the port failed"
    rig.close()
    os.close(slave)


def test_din_missing_device_is_one_line(router):
    rig = Rig(router)
    assert rig.add("din", "din", device="/dev/nonexistent-uart") is None
    assert "nonexistent-uart" in rig.failed[0] and "midi.din" in rig.failed[0]


@pytest.mark.jack
def test_midi_port_hotplug_over_jack(router, jack_server):
    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)
    rig = Rig(router)
    src = rig.add("midi_ports", "midi", ports="pisynth-kbd", api="UNIX_JACK", rescan_s=0.2)
    assert src is not None and src.ports == {}
    out = backend.open_output("pisynth-kbd", virtual=True)  # plugged in after start
    deadline = time.monotonic() + 5
    while not src.ports and time.monotonic() < deadline:
        time.sleep(0.05)
    assert src.ports, "the new port was not picked up"
    time.sleep(0.2)
    out.send(mido.Message("note_on", note=64, velocity=90))
    deadline = time.monotonic() + 3
    while router.voice.note != 64 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert router.voice.note == 64
    out.close()
    rig.close()


def test_buttons_and_encoder_on_mock_pins(router, emu):
    actions = []
    router.on_action = lambda name, arg: actions.append(name)
    rig = Rig(router)
    router.mapping.add("enc1", Route("brightness"))
    src = rig.add("gpio", "gpio", buttons=[item("button", pin=17, action="next_model",
                                                 hold_action="panic", hold_s=0.1)],
                  encoders=[item("encoder", a=5, b=6, step=0.05, accel=1.0)])
    assert src is not None and rig.add_indicator(StatusLeds(router, {"activity": 22})) is not None
    pin = Device.pin_factory.pin(17)
    pin.drive_low()
    time.sleep(0.02)
    pin.drive_high()  # short press
    time.sleep(0.05)
    pin.drive_low()
    time.sleep(0.3)  # held past hold_s
    pin.drive_high()
    time.sleep(0.05)
    assert actions == ["next_model", "panic"]
    a, b = Device.pin_factory.pin(5), Device.pin_factory.pin(6)
    for _ in range(3):  # three detents clockwise: A leads B
        for va, vb in ((0, 1), (0, 0), (1, 0), (1, 1)):
            (a.drive_low if not va else a.drive_high)()
            (b.drive_low if not vb else b.drive_high)()
    assert router.bank.get("brightness") != 0.5
    led = Device.pin_factory.pin(22)
    rig.poll_once(10.0)
    assert led.state  # activity lit after input
    rig.poll_once(11.0)
    assert not led.state
    rig.close()


def test_calibrate_interactive_on_the_emulated_chip(emu, router):
    """The user patches each voltage when asked (the one physical act we stand in for);
    the readings come through the chip's SPI protocol; the saved calibration then puts
    a CV input in tune."""
    from pi_synth.control.calibrate import interactive
    from pi_synth.control.chips import open_adc

    def adc_volts(jack):  # a ±5 V front-end, 2 % gain error, 30 mV offset
        return (jack * 1.02 + 5.0) / 10.0 * 3.3 + 0.03

    adc = open_adc("mcp3008", emu)
    asked = []

    def ask(prompt):
        v = float(prompt.split()[1])
        asked.append(v)
        emu.adc.volts[5] = adc_volts(v)
        return ""

    cal = interactive(lambda: adc.read(5), 5, [-1.0, 0.0, 1.0, 2.0, 3.0], ask=ask, say=lambda s: None)
    assert asked == [-1.0, 0.0, 1.0, 2.0, 3.0] and len(cal.points) == 5
    for v in (-0.5, 0.25, 1.5, 2.75):
        reading = min(1023, int(adc_volts(v) / 3.3 * 1024)) / 1024 + 0.5 / 1024
        assert abs(cal.volts(reading) - v) * 1200 < 10  # within 10 cents at 1 V/oct


def test_calibrate_command_from_points(cli, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('[knobs]\nchip = "mcp3008"\n')
    state = tmp_path / "st"
    p = cli("calibrate", "6", "--config", conf, "--points", "0.25:-2.5,0.5:0,0.75:2.5",
            env={"PI_SYNTH_STATE_DIR": str(state)}, check=0)
    saved = state / "calibration" / "mcp3008-0.0-ch6.json"
    assert saved.is_file() and "3-point" in p.stdout
    bad = cli("calibrate", "6", "--config", conf, "--points", "0.5:0,0.5:1")
    assert bad.returncode == 2 and "same" in bad.stderr and bad.stderr.count("\n") == 1
    # what a tester got saved without a word: readings outside the ADC's 0..1, a voltage no
    # jack carries, a point at the ADC's limit, a channel the chip lacks
    env = {"PI_SYNTH_STATE_DIR": str(state)}
    for points, words in (("0.1:0,5:1", "a reading is the ADC's 0..1"), ("0.1:0,0.2:1000", "not a voltage"),
                          ("0.1:0,0.5:4,1.0:12", "outside the input stage's range")):
        p = cli("calibrate", "6", "--config", conf, "--points", points, env=env)
        assert p.returncode == 2 and words in p.stderr and p.stderr.count("\n") == 1, p.stderr
    ads = tmp_path / "ads.toml"
    ads.write_text('[knobs]\nchip = "ads1115"\n')
    p = cli("calibrate", "6", "--config", ads, "--points", "0.25:0,0.5:1", env=env)
    assert p.returncode == 2 and "a ads1115 has channels 0..3" in p.stderr, p.stderr
    # an I2C chip's calibrations are keyed by its bus and address (two ADS1115s: two sets)
    p = cli("calibrate", "2", "--config", ads, "--points", "0.25:0,0.5:1", env=env, check=0)
    assert (state / "calibration" / "ads1115-i2c1-0x48-ch2.json").is_file(), p.stdout
    p = cli("calibrate", "0", "--config", conf, "--points", "0.5:-15,0.6:15", env=env)  # 300 V over the range
    assert p.returncode == 2 and "300 V over the ADC's whole range" in p.stderr, p.stderr
    p = cli("calibrate", "0", "--config", conf, "--points", "0.25:0,0.5:1", "--volts", "0,2", env=env, check=0)
    assert "--volts is for patching voltages in turn" in p.stderr
    # a negative voltage list as a ±5 V rig types it (argparse took "-3,…" for an option)
    from pi_synth.cli import _joined_negatives, build_parser

    args = build_parser().parse_args(_joined_negatives(["calibrate", "6", "--volts", "-3,-2,0"]))
    assert args.volts == "-3,-2,0"


def test_a_calibration_saved_under_the_old_key_still_plays(monkeypatch, tmp_path):
    """I2C chips' calibrations were saved as ``ads1115-0.0`` (an SPI chip select): still read."""
    from pi_synth.control.cv import Calibration, adc_key, calibration_path, legacy_key, load_calibration

    monkeypatch.setenv("PI_SYNTH_STATE_DIR", str(tmp_path))
    old = calibration_path(legacy_key("ads1115"), 1)
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps(Calibration([(0.1, 0.0), (0.5, 2.0)]).to_json()))
    cal = load_calibration(adc_key("ads1115"), 1, "unipolar10", legacy=legacy_key("ads1115"))
    assert cal.volts(0.5) == pytest.approx(2.0)


def test_mapping_from_config_with_range_curve_invert_smoothing_and_action(organ, tmp_path):
    from pi_synth import config as config_mod

    conf = tmp_path / "c.toml"
    conf.write_text('''
[[map]]
source = "cc74"
control = "brightness"
min = 0.2
max = 0.6
invert = true
smooth_ms = 100.0

[[map]]
source = "cc20"
action = "next_model"

[[map]]
source = "knob8"
control = "no_such_control"

[[map]]
source = "knob7"
control = "brightness"
curve = "log"
''')
    cfg = config_mod.load(str(conf))
    rt = Runtime(organ(), warmup_blocks=0)
    bank = ControlBank(rt.card)
    mapping = Mapping.from_config(rt.card, cfg.map)
    assert len(mapping.skipped) == 1 and "no_such_control" in mapping.skipped[0]
    # a log curve over a range that reaches 0 plays linearly: said (it was silent)
    assert len(mapping.notes) == 1 and 'curve = "log" needs a range above 0' in mapping.notes[0], mapping.notes
    assert not cfg.warnings  # cc74, cc20 and knob8 are sources this config has
    mapping.configure(bank)
    router = Router(rt.card, bank, mapping)
    actions = []
    router.on_action = lambda name, arg: actions.append(name)
    router.midi_bytes(bytes([0xB0, 74, 127]))  # inverted: top of the knob → bottom of the range
    assert bank.get("brightness") == pytest.approx(0.2, abs=1e-6)
    out = np.zeros((3, 1), np.float32)
    bank.fill(out)  # smoothing: the first block moves only part of the way from 0.5
    assert 0.2 < out[2, 0] < 0.5
    for _ in range(200):  # 200 blocks of 5.3 ms ≫ 100 ms
        bank.fill(out)
    assert out[2, 0] == pytest.approx(0.2, abs=1e-3)
    router.midi_bytes(bytes([0xB0, 20, 127, 20, 127, 20, 0, 20, 100]))  # press, hold, release, press
    assert actions == ["next_model", "next_model"]


@pytest.mark.parametrize("frames", [1, 4])
def test_bank_idles_once_settled_and_wakes_on_any_set(organ, frames):
    """Once the ramp (and the glide) has run out, fill leaves the model's input alone (no
    numpy call on the audio thread); the next set, from any source, is in the next block."""
    rt = Runtime(organ(block_size=256 * frames, control_frames=frames))
    bank = ControlBank(rt.card)
    out = rt.controls
    i = bank.index("loudness")
    bank.set("loudness", -20.0)
    for _ in range(3):
        bank.fill(out)
    assert np.allclose(out[i], -20.0)
    out[i] = 123.0  # a marker: an idle fill must not write
    bank.fill(out)
    assert out[i, -1] == 123.0
    bank.set("loudness", -10.0)
    bank.fill(out)
    # ramped from the last value the bank gave (the marker is not the model's state)
    assert out[i, -1] == pytest.approx(-10.0) and out[i, 0] == pytest.approx(-20.0 + 10.0 / frames)
    for _ in range(2):
        bank.fill(out)
    assert np.allclose(out[i], -10.0)
    # a glide runs until it has arrived (to 1e-6 of the step), then idles there
    bank.set_smoothing("loudness", 0.05)
    bank.fill(out)
    bank.set("loudness", -30.0)
    n = 0
    while True:
        before = out.copy()
        bank.fill(out)
        n += 1
        if np.array_equal(before, out) and n > 2:
            break
        assert n < 2000
    assert np.allclose(out[i], -30.0, atol=1e-4) and n > 10


def test_emulate_panel_fits_an_80_column_terminal(organ, tmp_path):
    """The panel redraws its lines in place: a line wider than the terminal would wrap, and
    every redraw would then scroll. Real terminal (a pty sized 80×24), real `pi-synth run`,
    keys typed: knob 2, up twice, then q."""
    import fcntl
    import os
    import pty
    import re
    import select
    import struct
    import subprocess
    import sys
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "pi_synth", "run", "--emulate", "--backend", "unpaced",
                          "--model", str(organ())], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out, t0, typed = b"", time.monotonic(), []

    def second_knob(data: bytes):
        m = re.findall(rb"\[2 (\S+) (-?[\d.]+)", data)  # the selected knob 2: its control and value
        return m[-1] if m else None

    try:
        while time.monotonic() - t0 < 60:
            if b"keys: 1-8 knob" in out and not typed:  # the panel is up (the terminal in cbreak mode)
                os.write(master, b"2")
                typed.append(time.monotonic())
            if len(typed) == 1 and second_knob(out):
                first = second_knob(out)
                os.write(master, b"++")
                typed.append(time.monotonic())
            if len(typed) == 2 and (second_knob(out) != first or time.monotonic() - typed[1] > 20):
                os.write(master, b"q")  # once the panel showed the turn (or long after: then it fails)
                typed.append(time.monotonic())
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif p.poll() is not None:
                break
    finally:
        if p.poll() is None:
            p.terminate()
        p.wait(30)
        os.close(master)
    text = out.decode(errors="replace")
    assert p.returncode == 0 and len(typed) == 3, text[-2000:]  # q stopped it
    frames = text.split("\x1b[J")[1:]  # each redraw: back to the panel's first line, erase, draw
    lines = []
    for f in frames:  # the panel's five lines (a log line may come first, printed above it)
        rows = [ln.strip("\r").split("\x1b[")[0] for ln in f.split("\n")]
        top = [i for i, ln in enumerate(rows) if ln.startswith("organ (organ.onnx)")]
        if top:
            lines += rows[top[0]:top[0] + 5]
    assert len(frames) >= 2 and lines, text[-2000:]
    assert all(len(ln) <= 79 for ln in lines), max(lines, key=len)
    assert second_knob(out) != first, text[-2000:]  # the turn reached the model's control
