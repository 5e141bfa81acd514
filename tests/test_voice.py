"""MonoVoice: real mido messages in (built by hand and through the byte parser), controls out."""

from __future__ import annotations

import math

import mido
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_synth.control.midi import parse
from pi_synth.control.voice import MonoVoice

BLOCK = 256 / 48000  # one model block, seconds


def on(note, velocity=100, channel=0):
    return mido.Message("note_on", note=note, velocity=velocity, channel=channel)


def off(note, channel=0):
    return mido.Message("note_off", note=note, channel=channel)


def cc(control, value, channel=0):
    return mido.Message("control_change", control=control, value=value, channel=channel)


def hz(note):
    return 440.0 * 2 ** ((note - 69) / 12)


def run(voice, seconds, block=BLOCK):
    for _ in range(math.ceil(seconds / block)):
        voice.advance(block)


def test_note_sets_pitch_and_gate():
    voice = MonoVoice()
    assert not voice.gate and voice.note is None and voice.loudness_db == -80.0
    voice.handle(on(60, 127))
    voice.advance(BLOCK)
    assert voice.gate and voice.note == 60 and voice.velocity == 127
    assert voice.pitch_hz == pytest.approx(hz(60))
    assert voice.pitch_hz == pytest.approx(261.6256, abs=1e-3)


def test_last_note_priority_and_return_to_held_note_legato():
    voice = MonoVoice()
    voice.handle(on(60, 100))
    run(voice, 0.05)
    level = voice.loudness_db
    voice.handle(on(64, 100))
    voice.handle(on(67, 100))
    voice.advance(BLOCK)
    assert voice.note == 67 and voice.pitch_hz == pytest.approx(hz(67))
    assert voice.held == (60, 64, 67)
    voice.handle(off(64))  # releasing a key that is not sounding changes nothing
    voice.advance(BLOCK)
    assert voice.note == 67
    voice.handle(off(67))  # back to the latest key still held
    voice.advance(BLOCK)
    assert voice.note == 60 and voice.pitch_hz == pytest.approx(hz(60))
    # Legato: the gate never dropped and the loudness did not dip.
    assert voice.gate and voice.loudness_db == pytest.approx(level)
    voice.handle(off(60))
    assert not voice.gate and voice.note is None and voice.velocity == 0


def test_repeated_key_moves_to_top_of_stack():
    voice = MonoVoice()
    for msg in (on(60), on(62), on(60)):
        voice.handle(msg)
    assert voice.held == (62, 60)
    voice.handle(off(60))
    assert voice.note == 62


def test_note_on_velocity_zero_is_note_off():
    voice = MonoVoice()
    # Running status "note on, velocity 0" from a DIN keyboard, through the byte parser.
    for msg in parse(bytes.fromhex("90 3C 64 3C 00")):
        voice.handle(msg)
    assert not voice.gate and voice.held == ()


def test_retrigger_on_overlap_when_not_legato():
    voice = MonoVoice(legato=False, attack_ms=5.0)
    voice.handle(on(60, 127))
    run(voice, 0.05)
    assert voice.loudness_db == pytest.approx(0.0)
    voice.handle(on(62, 127))
    voice.advance(0.001)
    assert voice.loudness_db < -10.0  # dipping: re-attacked, not a held level
    run(voice, 0.05)
    assert voice.loudness_db == pytest.approx(0.0) and voice.note == 62


def test_retrigger_on_return_to_held_note():
    voice = MonoVoice(retrigger=True)
    voice.handle(on(60, 127))
    voice.handle(on(62, 127))  # legato by default: no dip
    run(voice, 0.05)
    assert voice.loudness_db == pytest.approx(0.0)
    voice.handle(off(62))
    voice.advance(0.001)
    assert voice.loudness_db < -10.0
    run(voice, 0.05)
    assert voice.loudness_db == pytest.approx(0.0) and voice.note == 60


def test_re_attack_dip_has_no_hard_cut():
    voice = MonoVoice(legato=False, attack_ms=5.0)  # 80 dB in 5 ms
    voice.handle(on(60, 127))
    run(voice, 0.05)
    voice.handle(on(62, 127))
    voice.advance(0.001)
    assert voice.loudness_db == pytest.approx(-16.0)  # 1 ms at 16 dB/ms, not straight to -80


@pytest.mark.parametrize(
    ("velocity", "expected_db"), [(127, 0.0), (1, -36.0), (64, -18.0), (0, None)]
)
def test_velocity_curve_linear_in_db(velocity, expected_db):
    voice = MonoVoice(attack_ms=0.0)
    voice.handle(on(60, velocity))
    voice.advance(BLOCK)
    if expected_db is None:  # velocity 0 is a note off
        assert not voice.gate and voice.loudness_db == -80.0
    else:
        assert voice.loudness_db == pytest.approx(expected_db)


def test_velocity_curve_exponent_and_max_db():
    voice = MonoVoice(max_db=-6.0, velocity_db_range=30.0, velocity_curve=2.0)
    assert voice.velocity_db(127) == pytest.approx(-6.0)
    assert voice.velocity_db(1) == pytest.approx(-36.0)
    assert voice.velocity_db(64) == pytest.approx(-6.0 - 30.0 * (1 - 0.5**2))
    levels = [voice.velocity_db(v) for v in range(1, 128)]
    assert levels == sorted(levels)


def test_channel_pressure_adds_loudness_when_enabled():
    voice = MonoVoice(attack_ms=0.0, pressure_db=12.0)
    voice.handle(on(60, 64))
    voice.handle(mido.Message("aftertouch", value=127))
    voice.advance(BLOCK)
    assert voice.loudness_db == pytest.approx(-18.0 + 12.0)
    assert voice.pressure == 127
    plain = MonoVoice(attack_ms=0.0)  # default: pressure is recorded but does nothing
    plain.handle(on(60, 64))
    plain.handle(mido.Message("aftertouch", value=127))
    plain.advance(BLOCK)
    assert plain.loudness_db == pytest.approx(-18.0) and plain.pressure == 127


@pytest.mark.parametrize("bend_range", [2.0, 12.0])
def test_pitch_bend_reaches_plus_minus_range(bend_range):
    voice = MonoVoice(bend_range=bend_range)
    voice.handle(on(69))
    for pitch, semitones in ((8191, bend_range), (-8192, -bend_range), (0, 0.0)):
        voice.handle(mido.Message("pitchwheel", pitch=pitch))
        voice.advance(BLOCK)
        assert voice.pitch_hz == pytest.approx(440.0 * 2 ** (semitones / 12))
    voice.handle(mido.Message("pitchwheel", pitch=-4096))
    voice.advance(BLOCK)
    assert voice.bend_semitones == pytest.approx(-bend_range / 2)


def test_pitch_bend_from_raw_bytes_is_14_bit():
    voice = MonoVoice()
    voice.handle(on(69))
    for msg in parse(bytes.fromhex("E0 7F 7F")):  # full up
        voice.handle(msg)
    voice.advance(BLOCK)
    assert voice.pitch_hz == pytest.approx(440.0 * 2 ** (2 / 12))


def test_transpose_and_tuning():
    voice = MonoVoice(transpose=12, tuning_hz=432.0)
    voice.handle(on(69))
    voice.advance(BLOCK)
    assert voice.pitch_hz == pytest.approx(864.0)


def test_channel_filtering():
    voice = MonoVoice(channel=3)
    voice.handle(on(60, channel=2))
    voice.handle(cc(1, 99, channel=2))
    assert not voice.gate and voice.cc == {}
    voice.handle(on(60, channel=3))
    assert voice.note == 60
    voice.handle(off(60, channel=2))  # another channel's note off does not release it
    assert voice.gate
    omni = MonoVoice()
    for channel in range(16):
        omni.handle(on(40 + channel, channel=channel))
    assert omni.note == 55


def test_release_reaches_floor():
    voice = MonoVoice(release_ms=250.0)
    voice.handle(on(60, 127))
    run(voice, 0.05)
    voice.handle(off(60))
    run(voice, 0.1)
    assert -80.0 < voice.loudness_db < 0.0 and voice.sounding  # falling, smoothly
    run(voice, 3 * 0.25)
    assert voice.loudness_db == -80.0 and not voice.sounding


def test_release_is_smooth_in_db():
    voice = MonoVoice(release_ms=100.0)  # 0.8 dB per ms
    voice.handle(on(60, 127))
    run(voice, 0.05)
    voice.handle(off(60))
    levels = []
    for _ in range(40):
        voice.advance(0.001)
        levels.append(voice.loudness_db)
    steps = [a - b for a, b in zip([0.0, *levels], levels, strict=False)]
    assert all(step == pytest.approx(0.8) for step in steps[:-1])


def test_attack_time():
    voice = MonoVoice(attack_ms=20.0)  # full scale (80 dB) in 20 ms
    voice.handle(on(60, 127))
    voice.advance(0.010)
    assert voice.loudness_db == pytest.approx(-40.0)
    voice.advance(0.010)
    assert voice.loudness_db == pytest.approx(0.0)
    quiet = MonoVoice(attack_ms=20.0)
    quiet.handle(on(60, 1))  # -36 dB target: 44 dB to go
    run(quiet, 3 * 0.020)
    assert quiet.loudness_db == pytest.approx(-36.0)


def test_portamento_glides_in_log_frequency():
    voice = MonoVoice(portamento_ms=100.0)
    voice.handle(on(60))
    voice.advance(0.001)
    assert voice.pitch_hz == pytest.approx(hz(60))  # the first note does not glide in
    voice.handle(on(72))
    voice.advance(0.050)
    assert voice.pitch_hz == pytest.approx(hz(66))  # halfway in semitones, not in Hz
    voice.advance(0.050)
    assert voice.pitch_hz == pytest.approx(hz(72))
    voice.advance(0.050)
    assert voice.pitch_hz == pytest.approx(hz(72))


def test_no_portamento_jumps():
    voice = MonoVoice()
    voice.handle(on(60))
    voice.advance(BLOCK)
    voice.handle(on(84))
    voice.advance(1e-6)
    assert voice.pitch_hz == pytest.approx(hz(84))


def test_pitch_keeps_last_note_after_release():
    voice = MonoVoice()
    voice.handle(on(50))
    voice.handle(off(50))
    run(voice, 0.01)
    assert voice.pitch_hz == pytest.approx(hz(50))  # the release sings the same note


def test_panic_silences_fast_and_clears_everything():
    voice = MonoVoice(attack_ms=5.0, release_ms=2000.0)
    voice.handle(on(60, 127))
    voice.handle(on(62, 127))
    voice.handle(mido.Message("pitchwheel", pitch=8191))
    run(voice, 0.05)
    voice.panic()
    assert not voice.gate and voice.held == () and voice.bend_semitones == 0.0
    run(voice, 0.006)  # at the attack rate, not the 2 s release
    assert voice.loudness_db == -80.0
    voice.handle(on(60, 127))  # and it plays again normally afterwards
    run(voice, 0.05)
    assert voice.loudness_db == pytest.approx(0.0)


def test_all_sound_off_cc120_mutes_fast():
    voice = MonoVoice(release_ms=2000.0)
    voice.handle(on(60, 127))
    voice.handle(on(62, 127))
    run(voice, 0.05)
    voice.handle(cc(120, 0))
    assert voice.held == ()
    run(voice, 0.006)
    assert voice.loudness_db == -80.0


@pytest.mark.parametrize("control", [123, 124, 125, 126, 127])
def test_all_notes_off_releases_normally(control):
    voice = MonoVoice(release_ms=250.0)
    voice.handle(on(60, 127))
    voice.handle(on(62, 127))
    run(voice, 0.05)
    voice.handle(cc(control, 0))
    assert voice.held == () and not voice.gate
    run(voice, 0.05)
    assert -80.0 < voice.loudness_db < 0.0  # releasing
    run(voice, 0.25)
    assert voice.loudness_db == -80.0


def test_reset_message_clears_notes_and_controllers():
    voice = MonoVoice()
    for msg in parse(bytes.fromhex("90 3C 64 B0 01 40 FF")):
        voice.handle(msg)
    assert voice.held == () and voice.cc == {}


def test_reset_all_controllers_cc121():
    voice = MonoVoice(pressure_db=6.0)
    voice.handle(on(69))
    voice.handle(mido.Message("pitchwheel", pitch=8191))
    voice.handle(mido.Message("aftertouch", value=100))
    voice.handle(cc(121, 0))
    assert voice.bend_semitones == 0.0 and voice.pressure == 0 and voice.gate


def test_cc_values_are_kept_per_controller():
    voice = MonoVoice()
    voice.handle(cc(1, 10))
    voice.handle(cc(74, 99))
    voice.handle(cc(1, 20))
    assert voice.cc == {1: 20, 74: 99}


def test_program_change_calls_back():
    programs = []
    voice = MonoVoice(on_program=programs.append)
    voice.handle(mido.Message("program_change", program=5))
    assert voice.program == 5 and programs == [5]


def test_broken_program_callback_does_not_raise():
    def broken(program):
        raise RuntimeError("no such model")

    voice = MonoVoice(on_program=broken)
    voice.handle(mido.Message("program_change", program=7))
    assert voice.program == 7 and voice.callback_errors == 1


@pytest.mark.parametrize(
    "msg",
    [
        mido.Message("sysex", data=[1, 2, 3]),
        mido.Message("clock"),
        mido.Message("songpos", pos=100),
        mido.Message("polytouch", note=60, value=10),
        mido.Message("quarter_frame"),
        mido.MetaMessage("set_tempo", tempo=500000),
    ],
)
def test_irrelevant_messages_are_ignored(msg):
    voice = MonoVoice()
    voice.handle(on(60))
    voice.handle(msg)
    assert voice.note == 60


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="channel"):
        MonoVoice(channel=16)
    with pytest.raises(ValueError, match="floor_db"):
        MonoVoice(floor_db=0.0)
    with pytest.raises(ValueError, match="release_ms"):
        MonoVoice(release_ms=-1)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.lists(st.floats(0.0, 0.1), min_size=1, max_size=20))
def test_any_midi_stream_never_raises_and_stays_in_range(raw, blocks):
    voice = MonoVoice(portamento_ms=30.0, pressure_db=6.0, channel=None, legato=False)
    for msg in parse(raw):
        voice.handle(msg)
        voice.advance(blocks[0])
    for seconds in blocks:
        voice.advance(seconds)
    assert math.isfinite(voice.pitch_hz) and voice.pitch_hz > 0
    assert -80.0 <= voice.loudness_db <= 6.0
    assert voice.gate == bool(voice.held)


def test_sustain_pedal_keeps_let_go_keys_until_it_lifts():
    """CC64 on a mono voice: keys let go under the pedal keep sounding (the latest one),
    a new key takes over as usual, and lifting the pedal releases what only it held."""
    voice = MonoVoice()
    voice.handle(cc(64, 127))
    voice.handle(on(60))
    voice.handle(off(60))
    run(voice, 0.5)
    assert voice.gate and voice.note == 60 and voice.loudness_db > -30  # held by the pedal
    voice.handle(on(64))
    voice.handle(off(64))
    voice.advance(BLOCK)
    assert voice.note == 64 and voice.held == (60, 64)
    voice.handle(on(67))  # held by the hand through the pedal lift
    voice.handle(cc(64, 0))
    voice.advance(BLOCK)
    assert voice.held == (67,) and voice.note == 67
    voice.handle(off(67))
    run(voice, 1.0)
    assert not voice.gate and voice.loudness_db == -80.0
    # re-struck under the pedal and let go again: still one key, released at the lift
    voice.handle(cc(64, 100))
    for _ in range(2):
        voice.handle(on(62))
        voice.handle(off(62))
    assert voice.held == (62,)
    voice.handle(cc(121, 0))  # reset-all-controllers lifts the pedal
    assert not voice.gate
    voice.handle(cc(64, 127))
    voice.handle(on(65))
    voice.handle(off(65))
    voice.handle(cc(123, 0))  # all notes off: sustained keys too
    assert not voice.gate
    voice.handle(cc(64, 0))
    assert voice.held == ()
