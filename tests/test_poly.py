"""Polyphony: a batched note model (the procedural organ built with ``voices``) played by
the poly voice — real onnxruntime sessions, real mido messages, the whole instrument
pulled offline, real MIDI files nobody tuned the allocator on (tests/data/README.md)."""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from pathlib import Path

import mido
import numpy as np
import pytest

from pi_synth import config
from pi_synth.app import Instrument
from pi_synth.control.events import load_midi_file, parse_events
from pi_synth.control.poly import PolyVoice
from pi_synth.control.voice import MonoVoice
from pi_synth.errors import CardError
from pi_synth.model.card import check_graph, load_card, parse_card
from pi_synth.model.runtime import Runtime
from pi_synth.model.voices import VoiceTable, block_curve, fit
from pi_synth.tools.procedural import build_organ, organ_card

MIDI = Path(__file__).parent / "data" / "midi"
BLOCK_S = 256 / 48000
SR = 48000


@pytest.fixture(scope="module")
def porgan(tmp_path_factory):
    """The organ with a dynamic ``voices`` dimension, 16 rows at most."""
    path = tmp_path_factory.mktemp("poly") / "porgan.onnx"
    build_organ(path, voices=16)
    return path


@pytest.fixture(scope="module")
def morgan(tmp_path_factory):
    path = tmp_path_factory.mktemp("mono") / "organ.onnx"
    build_organ(path)
    return path


def cfg_with(**values):
    """The built-in config with ``table__key=value`` overrides; 16 voices unless said
    (renders play what they are asked: no budget measured on a loaded test machine)."""
    cfg = config.Config(None, config.defaults())
    cfg.values["voice"]["max_voices"] = 16
    for k, v in values.items():
        table, key = k.split("__")
        cfg.values[table][key] = v
    return cfg


def play(model, events, seconds, cfg=None, hook=None):
    """The instrument pulled offline like ``pi-synth render``: (instrument, mono samples)."""
    inst = Instrument(cfg or cfg_with(), model=str(model), events=parse_events(events) if events and
                      isinstance(events[0], dict) else events, seconds=seconds, offline=True)
    out = []
    while True:
        if hook is not None:
            hook(inst)
        out.append(inst.player.next_block()[:, 0].copy())
        if inst.player.finished:
            break
    return inst, np.concatenate(out)


def on(note, vel=100, ch=0):
    return mido.Message("note_on", note=note, velocity=vel, channel=ch)


def off(note, ch=0):
    return mido.Message("note_off", note=note, channel=ch)


def cc(control, value, ch=0):
    return mido.Message("control_change", control=control, value=value, channel=ch)


def hz(note):
    return 440.0 * 2 ** ((note - 69) / 12)


def peaks_cents(x, notes, sr=SR):
    """Per note: (cents off, level relative to the strongest), from an FFT peak pick
    near the note's fundamental (parabolic interpolation on the log spectrum)."""
    w = np.hanning(len(x))
    S = np.abs(np.fft.rfft(x * w)) + 1e-12
    f = np.fft.rfftfreq(len(x), 1 / sr)
    out = []
    for n in notes:
        lo, hi = np.searchsorted(f, hz(n) * 2 ** (-0.5 / 12)), np.searchsorted(f, hz(n) * 2 ** (0.5 / 12))
        i = lo + int(np.argmax(S[lo:hi]))
        a, b, c = np.log(S[i - 1:i + 2])
        den = a - 2 * b + c
        p = 0.5 * (a - c) / den if den else 0.0
        est = (i + p) * (f[1] - f[0])
        out.append((1200 * math.log2(est / hz(n)), S[i] / S.max()))
    return out


def voice(budget=4, rows=None, **kw):
    t = VoiceTable(rows or budget)
    t.budget = budget
    return PolyVoice(t, block_seconds=BLOCK_S, **kw)


def adv(v, blocks=1):
    for _ in range(blocks):
        v.advance(BLOCK_S)


def ops(v):
    return [v.table.op(i) for i in range(v.table.n_ops)]


def notes(v):
    return sorted(d["note"] for d in v.voices())


# -- the model file and the runtime ---------------------------------------------------------


def test_card_says_how_many_voices(porgan):
    card = load_card(porgan)
    assert card.voices == 16 and card.to_json()["voices"] == 16
    assert "voices" not in organ_card(256, 48000)  # a mono card stays as it was
    with pytest.raises(CardError, match="'voices' must be in 1..256"):
        parse_card(json.dumps(dict(organ_card(256, 48000), voices=0)), where="m.onnx")


def test_graph_and_card_must_agree_on_voices(porgan, morgan):
    import onnxruntime as ort

    batched = ort.InferenceSession(str(porgan), providers=["CPUExecutionProvider"])
    mono = ort.InferenceSession(str(morgan), providers=["CPUExecutionProvider"])
    mono_card = load_card(morgan)
    with pytest.raises(CardError, match="needs \"voices\": N in the card"):
        check_graph(mono_card, batched.get_inputs(), batched.get_outputs(), where="m.onnx")
    batched_card = parse_card(json.dumps(dict(organ_card(256, 48000), voices=4)))
    with pytest.raises(CardError, match="dynamic leading dimension named 'voices'"):
        check_graph(batched_card, mono.get_inputs(), mono.get_outputs(), where="m.onnx")
    specs = check_graph(load_card(porgan), batched.get_inputs(), batched.get_outputs())
    assert specs["controls"][0] == (1, 3, 1) and specs["phase_in"][0] == (1, 1)  # one voice's shape


def test_each_row_of_a_batched_run_is_a_mono_run(porgan, morgan):
    rng = np.random.default_rng(7)
    rows = 5
    rt = Runtime(porgan, rows=rows, warmup_blocks=2, use_cache=False)
    monos = [Runtime(morgan, warmup_blocks=2, use_cache=False) for _ in range(rows)]
    assert rt.rows == rows and rt.controls_rows.shape == (rows, 3, 1)
    for _ in range(12):
        ctl = np.stack([rng.uniform(60, 2000, rows), rng.uniform(-60, 0, rows), rng.uniform(0, 1, rows)],
                       axis=1)[:, :, None].astype(np.float32)
        rt.controls_rows[...] = ctl
        rt.step()
        for r, m in enumerate(monos):
            m.controls[...] = ctl[r]
            m.step()
            assert np.array_equal(rt.audio_rows[r], m.audio)
            for a, b in zip(rt.state_arrays(), m.state_arrays()):
                assert np.array_equal(a[r], b[0])


def test_only_the_first_k_rows_run_and_rows_move(porgan):
    rt = Runtime(porgan, rows=4, warmup_blocks=1, use_cache=False)
    rt.controls_rows[:, 1, :] = -10.0
    rt.step()
    audio_before = rt.audio_rows.copy()
    rt.set_rows(2)
    rt.step()
    assert not np.array_equal(audio_before[:2], rt.audio_rows[:2])  # rows 0, 1 ran on
    assert np.array_equal(audio_before[2:], rt.audio_rows[2:])  # rows 2, 3 were not run
    rt.move_row(1, 3)  # (rows past the active ones hold no voice: only moves and resets fill them)
    for a in rt.state_arrays():
        assert np.array_equal(a[3], a[1])
    rt.reset_row(1)
    for a in rt.state_arrays():
        assert not a[1].any()


# -- the allocator ----------------------------------------------------------------------------


def test_keys_take_rows_in_order_and_tails_keep_sounding():
    v = voice(budget=4, release_ms=50.0)
    for n in (60, 64, 67):
        v.handle(on(n))
    adv(v)
    assert v.active == 3 and notes(v) == [60, 64, 67]
    assert ops(v) == [(-1, 0), (-1, 1), (-1, 2)]  # three new voices: three rows reset
    assert v.table.pitch[:3] == pytest.approx([hz(60), hz(64), hz(67)])
    v.handle(off(60))
    adv(v)
    tail = [d for d in v.voices() if d["note"] == 60][0]
    assert v.active == 3 and not tail["gate"] and -80 < tail["loudness_db"] < v.table.loudness[1]
    adv(v, 12)  # 64 ms: the 50 ms release has ended
    assert notes(v) == [64, 67] and v.active == 2
    # the ended row 0 was refilled by the last row: a move, no gap
    assert v.table.pitch[:2] == pytest.approx([hz(67), hz(64)])


def test_steal_takes_a_released_voice_first_and_fades_it():
    v = voice(budget=2, release_ms=2000.0, fade_ms=10.0)  # two blocks of fade
    v.handle(on(60))
    v.handle(on(62))
    adv(v, 3)
    v.handle(off(60))  # 60 releases (a long tail); 62 is held
    adv(v)
    v.handle(on(64))
    adv(v)
    assert v.stolen == 1 and v.stolen_held == 0
    row60 = 0
    assert v.voices()[row60]["note"] == 60 and v.voices()[row60]["fading"]
    assert v.table.gain[row60] == pytest.approx(0.5) and v.table.gain[1] == 1.0
    adv(v)
    assert v.table.gain[row60] == 0.0  # faded out at the end of the second block
    adv(v)
    assert ops(v) == [(-1, row60)]  # then its row starts the new note from the initial state
    assert notes(v) == [62, 64] and v.table.gain[row60] == 1.0


@pytest.mark.parametrize("steal, victim", [("quietest", 60), ("oldest", 62)])
def test_steal_among_held_voices_by_policy(steal, victim):
    v = voice(budget=2, steal=steal)
    v.handle(on(62, vel=127))
    adv(v, 2)
    v.handle(on(60, vel=20))  # newer and quieter
    adv(v, 2)
    v.handle(on(64))
    adv(v)
    assert v.stolen == 1 and v.stolen_held == 1
    assert [d["note"] for d in v.voices() if d["fading"]] == [victim]


def test_sustain_pedal_keeps_released_keys_until_it_lifts():
    v = voice(budget=8, release_ms=10.0)
    v.handle(on(60))
    v.handle(cc(64, 127))
    v.handle(off(60))
    v.handle(on(64))
    v.handle(off(64))
    adv(v, 20)
    assert notes(v) == [60, 64] and all(d["gate"] for d in v.voices())
    v.handle(cc(64, 0))
    adv(v, 10)
    assert v.active == 0


def test_sostenuto_keeps_only_the_keys_held_when_it_went_down():
    v = voice(budget=8, release_ms=10.0)
    v.handle(on(48))
    v.handle(cc(66, 127))
    v.handle(on(60))
    v.handle(off(48))
    v.handle(off(60))
    adv(v, 10)
    assert notes(v) == [48]
    v.handle(cc(66, 0))
    adv(v, 10)
    assert v.active == 0


def test_the_same_key_again_re_attacks_its_own_voice():
    v = voice(budget=4, attack_ms=5.0)
    v.handle(on(60, vel=127))
    adv(v, 4)
    assert v.table.loudness[0] == pytest.approx(0.0)
    v.handle(on(60, vel=127))  # again, without a note-off (a second keyboard, a pedal)
    v.advance(0.001)
    assert ops(v) == [] and v.active == 1  # no new row, no reset: the same voice
    assert v.table.loudness[0] < -10.0  # dipping before the new attack (no hard cut)
    adv(v, 4)
    assert v.table.loudness[0] == pytest.approx(0.0) and v.started == 2


def test_a_note_on_and_off_in_one_block_still_sounds():
    v = voice(budget=4)
    v.handle(on(60))
    v.handle(off(60))
    adv(v)
    assert v.started == 1 and v.table.loudness[0] > -20.0  # it attacked for one block
    adv(v, 100)
    assert v.active == 0


def test_note_off_without_note_on_and_other_channels():
    v = voice(budget=4, channel=2)
    v.handle(off(60, ch=2))
    v.handle(on(60, ch=0))  # not our channel
    adv(v)
    assert v.active == 0 and v.started == 0
    v.handle(on(60, ch=2))
    adv(v)
    assert v.active == 1


def test_128_keys_at_once_and_a_note_on_storm_stay_within_the_budget():
    v = voice(budget=8, rows=16)
    for n in range(128):
        v.handle(on(n))
    adv(v)
    assert v.active == 8 and v.dropped == 120
    assert notes(v) == list(range(120, 128))  # the latest keys win
    for i in range(20000):  # a storm: the audio thread's work is per key, not per message
        v.handle(on(i % 128, vel=1 + i % 127))
        if i % 3:
            v.handle(off(i % 128))
    adv(v, 3)
    assert v.active <= 8 and len(v.voices()) <= 8
    v.panic()
    adv(v, v.fade_blocks + 2)
    assert v.active == 0


def test_all_notes_off_releases_and_all_sound_off_fades():
    v = voice(budget=8, release_ms=100.0, fade_ms=10.0)
    for n in (60, 64, 67):
        v.handle(on(n))
    v.handle(cc(64, 127))
    adv(v, 2)
    v.handle(cc(123, 0))
    adv(v)
    assert v.active == 3 and not any(d["gate"] for d in v.voices())  # releasing: tails
    assert not any(d["fading"] for d in v.voices())
    for n in (60, 64):
        v.handle(on(n))
    adv(v, 2)
    v.handle(cc(120, 0))  # all sound off: out within the fade
    adv(v, v.fade_blocks + 1)
    assert v.active == 0


def test_reset_all_controllers_lifts_pedals_and_centres_bend():
    v = voice(budget=4, release_ms=10.0)
    v.handle(on(60))
    v.handle(cc(64, 127))
    v.handle(mido.Message("pitchwheel", pitch=8191))
    v.handle(off(60))
    adv(v)
    assert v.table.pitch[0] == pytest.approx(hz(62))  # bend to all voices: +2 semitones
    v.handle(cc(121, 0))
    adv(v)
    assert v.table.pitch[0] == pytest.approx(hz(60)) and not v.sustain
    adv(v, 10)
    assert v.active == 0


def test_mpe_bends_only_the_notes_of_its_channel():
    v = voice(budget=4, mode="mpe", mpe_bend_range=48.0)
    v.handle(on(60, ch=1))
    v.handle(on(60, ch=2))  # the same key on two channels: two voices
    v.handle(mido.Message("pitchwheel", pitch=8191, channel=2))
    v.handle(mido.Message("pitchwheel", pitch=4096, channel=0))  # master: all of them
    adv(v)
    by_ch = {d["channel"]: d["pitch_hz"] for d in v.voices()}
    assert by_ch[1] == pytest.approx(hz(60 + 1.0), rel=1e-4)
    assert by_ch[2] == pytest.approx(hz(60 + 48 + 1.0), rel=1e-4)


def test_panic_clears_everything_within_the_fade():
    v = voice(budget=8, fade_ms=10.0)
    v.handle(cc(64, 127))
    for n in range(40, 52):
        v.handle(on(n))
    adv(v, 3)
    v.panic()
    adv(v, v.fade_blocks)
    assert all(d["fading"] for d in v.voices()) and v.table.gain[:v.active].max() == 0.0
    adv(v)
    assert v.active == 0 and v.held == () and not v.sustain


# -- the whole instrument ---------------------------------------------------------------------

CHORD = (60, 64, 67, 71)  # Cmaj7: no fundamental is another note's harmonic


def chord_events(notes_, t_on=0.1, t_off=1.0, vel=100):
    return ([{"t": t_on, "midi": [144, n, vel]} for n in notes_]
            + [{"t": t_off, "midi": [128, n, 0]} for n in notes_])


def test_every_note_of_a_chord_is_heard(porgan):
    inst, x = play(porgan, chord_events(CHORD), 1.5)
    assert isinstance(inst.voice, PolyVoice)
    seg = x[int(0.3 * SR):int(0.9 * SR)]
    for n, (cents, level) in zip(CHORD, peaks_cents(seg, CHORD)):
        assert abs(cents) < 3.0 and level > 0.2, (n, cents, level)
    # the same chord to a mono voice of the same file: only the last key is heard
    inst, x = play(porgan, chord_events(CHORD), 1.5, cfg_with(voice__mode="mono"))
    assert isinstance(inst.voice, MonoVoice) and inst.synth.runtime.rows == 1
    levels = [lv for _, lv in peaks_cents(x[int(0.3 * SR):int(0.9 * SR)], CHORD)]
    assert levels[-1] == 1.0 and max(levels[:3]) < 0.05


def test_no_voice_costs_no_model_call(porgan):
    calls = []
    inst, x = play(porgan, chord_events(CHORD, t_off=0.3), 1.5,
                   hook=lambda i: calls.append((i.voice.active, i.synth.runtime.blocks, i.synth.voices.engaged)))
    playing = [c for (a, c, engaged) in calls if engaged and a > 0]
    idle = [c for (a, c, engaged) in calls if engaged and a == 0 and c > playing[0]]
    assert len(playing) > 20 and playing[-1] - playing[0] == len(playing) - 1  # a call a block
    assert len(idle) > 50  # the tails ended long before the end
    assert idle[0] == idle[-1]  # and not one model call since
    assert np.abs(x[-int(0.5 * SR):]).max() < 1e-4  # silence (the guard's DC tracker settling)


def test_the_gain_law_keeps_a_chord_as_loud_as_one_voice_and_off_the_limiter(porgan):
    _, one = play(porgan, chord_events((60,), vel=127), 1.2)
    inst, eight = play(porgan, chord_events((48, 52, 55, 60, 64, 67, 71, 72), vel=127), 1.2)
    rms = lambda x: float(np.sqrt(np.mean(x[int(0.3 * SR):int(0.9 * SR)] ** 2)))  # noqa: E731
    assert 0.7 < rms(eight) / rms(one) < 1.5
    assert inst.synth.guard.limited_blocks == 0 and np.abs(eight).max() < 0.89


def test_max_voices_one_plays_the_mono_voice_exactly(porgan, morgan):
    ev = chord_events((60, 64))
    inst_b, xb = play(porgan, ev, 1.2, cfg_with(voice__max_voices=1))
    inst_m, xm = play(morgan, ev, 1.2)
    assert isinstance(inst_b.voice, MonoVoice)
    assert np.array_equal(xb, xm)  # the batched file on one row == the mono file


def max_step_around(x, t, ms=30):
    a, b = int(t * SR), int((t + ms / 1000) * SR)
    return float(np.abs(np.diff(x[a:b])).max())


def test_steals_and_panic_do_not_click(porgan):
    """Four voices held at full level, a fifth key steals one, then panic: the largest
    sample-to-sample step around each stays that of the sound itself."""
    ev = ([{"t": 0.1, "midi": [144, n, 127]} for n in (48, 55, 64, 72)]
          + [{"t": 0.6, "midi": [144, 60, 127]}, {"t": 1.0, "midi": [176, 120, 0]}])  # all sound off
    inst, x = play(porgan, ev, 1.4, cfg_with(voice__max_voices=4))
    assert inst.voice.stolen == 1
    steady = float(np.abs(np.diff(x[int(0.3 * SR):int(0.58 * SR)])).max())
    assert max_step_around(x, 0.59) < 1.3 * steady
    assert max_step_around(x, 0.99) < 1.3 * steady
    assert np.abs(x[int(1.02 * SR):]).max() < 1e-3  # silent within the fade (5 ms) and a block


def test_bad_input_stays_bounded_and_panic_clears_it(porgan):
    ev = [{"t": 0.05, "midi": [176, 64, 127]}]  # a stuck pedal
    ev += [{"t": 0.1, "midi": [144, n, 100]} for n in range(128)]  # 128 keys at once
    ev += [{"t": 0.2 + i * 0.0005, "midi": [144, 30 + i % 60, 1 + i % 126]} for i in range(2000)]  # a storm
    ev += [{"t": 1.3, "midi": [128, 61, 0, 128, 5, 0]}]  # note-offs for nothing held
    panic_at = 240  # blocks: 1.28 s, after the storm
    most = []
    inst, x = play(porgan, ev, 1.5, cfg_with(voice__max_voices=8),
                   hook=lambda i: (most.append(i.voice.active),
                                   i.router.action("panic") if i.player.position == panic_at * 256 else None))
    v = inst.voice
    assert v.budget == 8 and max(most) == 8 and v.dropped > 0
    assert np.isfinite(x).all() and np.abs(x).max() < 0.95
    steady = float(np.abs(np.diff(x[int(0.5 * SR):int(1.2 * SR)])).max())
    assert max_step_around(x, panic_at * 256 / SR - 0.005, ms=20) < 1.3 * steady
    assert np.abs(x[(panic_at + 3) * 256:]).max() < 1e-3  # the panic silenced it all


def test_status_reports_voices_and_the_panel_plays_chords(porgan, monkeypatch):
    from pi_synth.control.panel import Panel

    inst, _ = play(porgan, chord_events(CHORD, t_off=5.0), 0.5)
    st = inst.status()
    assert st["voices"]["active"] == 4 and st["voices"]["max"] == 16
    inst, _ = play(porgan, [], 0.1)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    panel = Panel(inst, board=None, rig=None, stop=None)
    for ch in "asd":
        panel._key(ch)
    panel._key("S")  # shift: let that note go
    assert sorted(inst.voice.held) == [60, 64] and panel.notes == [60, 64]  # a, s, d = C, D, E
    panel._key(" ")
    assert inst.voice.held == ()


def test_osc_status_shows_the_voices(porgan):
    from pi_synth.control.sources.osc import OscSource
    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import OscMessageBuilder

    inst, _ = play(porgan, chord_events((60, 64), t_off=5.0), 0.3)
    src = OscSource(inst.router, port=0, status_fn=inst.status)
    src.open()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        s.sendto(OscMessageBuilder(address="/pi-synth/status").build().dgram, ("127.0.0.1", src.port))
        reply = json.loads(OscMessage(s.recv(65536)).params[0])
    finally:
        s.close()
        src.close()
    assert reply["voices"]["active"] == 2 and reply["voices"]["max"] == 16


# -- the budget -------------------------------------------------------------------------------


def test_fit_takes_the_most_voices_within_the_allowance():
    assert fit([1.0, 1.5, 2.0, 2.6, 3.0], 2.5) == 3
    assert fit([1.0, 3.0, 2.0], 2.5) == 1  # every smaller count must fit too
    assert fit([5.0, 6.0], 2.5) == 1  # one voice always plays


def test_block_curve_is_measured_once_and_kept(porgan, tmp_path):
    rt = Runtime(porgan, rows=6, warmup_blocks=1, use_cache=False)
    curve = block_curve(rt, rounds=1, blocks=4, cache_dir=tmp_path)
    assert len(curve) == 6 and all(s > 0 for s in curve)
    kept = json.loads((tmp_path / "voices.json").read_text())
    (entry,) = kept.values()
    assert entry["block_ms"] == [round(s * 1e3, 5) for s in curve]
    entry["block_ms"] = [9.0] * 6  # what the cache says is what the next start believes
    (tmp_path / "voices.json").write_text(json.dumps({k: entry for k in kept}))
    assert block_curve(rt, cache_dir=tmp_path) == pytest.approx([9e-3] * 6)


def test_the_budget_caps_voices_live_but_a_render_plays_what_it_is_asked(porgan):
    from pi_synth.patch import load_synth

    from pi_synth.audio.engine import DIRECT_MAX_RTF, direct_periods
    from pi_synth.patch import THREADED_MAX_RTF

    # a 16-frame period leaves a direct budget of 83 µs: fewer voices than 16 fit here; on a
    # machine where even one voice's block takes longer, the threaded engine plays it and its
    # allowance (half real time) applies
    cfg = cfg_with(audio__period=16, voice__max_voices=16)
    live = load_synth(cfg, porgan)
    curve = block_curve(live.runtime)
    if direct_periods(curve[0] / BLOCK_S, 256, 16, DIRECT_MAX_RTF) <= cfg.audio.periods:
        allowed = 0.25 * 16 / SR
    else:
        allowed = THREADED_MAX_RTF * BLOCK_S
    assert live.voices.budget == fit(curve, allowed) < 16 or curve[15] <= allowed
    assert live.rtf_hint == pytest.approx(curve[live.voices.budget - 1] / BLOCK_S, rel=1e-3)
    assert live.voice_allowed_s == pytest.approx(allowed)
    offline = load_synth(cfg, porgan, offline=True)
    assert offline.voices.budget == 16 and offline.voice_allowed_s is None
    auto = load_synth(cfg_with(voice__max_voices=0), porgan)  # 256×2
    assert auto.voices.budget == fit(block_curve(auto.runtime), 0.25 * 256 / SR)


def test_a_machine_slower_than_measured_loses_voices_not_blocks(porgan):
    """Calls at the budget that keep overrunning the allowance lower the budget by one:
    after that, a new key steals instead of adding a row the machine cannot afford."""
    from pi_synth.audio.synth import OVERRUNS_TO_DROP
    from pi_synth.patch import load_synth

    synth = load_synth(cfg_with(voice__max_voices=4), porgan)
    synth.voice_allowed_s = 1e-9  # nothing fits: as if the machine had slowed down
    t = synth.voices
    t.engaged, t.active, t.budget = True, 4, 4
    for _ in range(OVERRUNS_TO_DROP - 1):
        synth.next_block()
    assert t.budget == 4  # a spell shorter than that is forgiven
    synth.next_block()
    assert t.budget == 3 and synth.budget_drops == 1
    t.active = 2  # under the budget: the calls are not held against it
    for _ in range(2 * OVERRUNS_TO_DROP):
        synth.next_block()
    assert t.budget == 3


# -- held-out MIDI files ----------------------------------------------------------------------


def note_ons(events, last_block):
    """Note-ons the timeline applied: those due by the start of the last block."""
    n = 0
    for ev in events:
        if round(ev.t * SR) > last_block:
            break
        data = ev.data
        if len(data) == 3 and data[0] & 0xF0 == 0x90 and data[2] > 0:
            n += 1
    return n


@pytest.mark.parametrize("name, seconds", [
    ("pianobooster-chord-of-c-major.mid", 12.0),
    ("pianobooster-amazing-grace.mid", 12.0),
    ("music21-test03-piano-pedal.mid", 25.0),
    ("music21-test13-format0-chords.mid", 7.0),
])
def test_held_out_midi_drops_no_note_on_within_the_budget(porgan, name, seconds):
    check_midi(porgan, name, seconds)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pianobooster-amazing-grace.mid", "music21-test03-piano-pedal.mid"])
def test_held_out_midi_whole_files(porgan, name):
    check_midi(porgan, name, None)


def check_midi(porgan, name, seconds):
    events = load_midi_file(MIDI / name)
    end = seconds or events[-1].t + 1.0
    inst, x = play(porgan, events, end, cfg_with(voice__max_voices=16))
    v = inst.voice
    played = note_ons(events, inst.player.position - 256)
    assert v.dropped == 0 and v.stolen_held == 0, (v.dropped, v.stolen_held)
    assert v.started + v.merged == played
    assert np.isfinite(x).all() and inst.synth.guard.nonfinite_blocks == 0


def test_a_hot_swap_between_batched_voices_keeps_the_chord(porgan, tmp_path):
    other = tmp_path / "porgan2.onnx"
    build_organ(other, voices=16, harmonics=6)
    inst, _ = play(porgan, chord_events(CHORD, t_off=5.0), 0.3)
    voice, table = inst.voice, inst.synth.voices
    assert inst.swap(other)
    assert inst.voice is voice and inst.player._pending.synth.voices is table  # the same keys, the same rows
    out = [inst.player.next_block()[:, 0].copy() for _ in range(40)]  # through the crossfade
    assert inst.synth.voices is table and voice.active == 4
    seg = np.concatenate(out)[-int(0.1 * SR):]
    assert all(level > 0.2 for _, level in peaks_cents(seg, CHORD))


def test_the_voices_benchmark_runs_through_the_product(porgan):
    """benchmarks/voices.py (figures live there, not here): a smoke run, and its 8-voice
    Pi figure is labelled a projection."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import voices as bench

    r = bench.measure_voices(porgan, rows=8, blocks=3, rounds=1)
    assert len(r["block_ms"]["synth"]) == 9 and r["block_ms"]["runtime"][0] == float("inf")
    assert {"ratio_8v_1v_runtime", "ratio_8v_1v_synth", "ratio_8v_1v_with_allocator", "idle_ms"} <= set(r)
    pj = bench.projection(r, 8)
    assert pj["flops_per_block"] == pytest.approx(8 * bench.per_voice_flops(porgan))
    text = "\n".join(bench.lines([dict(r, label="organ", projection_8v=pj)]))
    assert "*Projection* (not a measurement) for 8 voices" in text and "| 8 |" in text


def test_a_batched_voice_with_another_block_size_is_refused_in_one_line(porgan, tmp_path):
    other = tmp_path / "porgan512.onnx"
    build_organ(other, voices=16, block_size=512)
    inst, _ = play(porgan, chord_events(CHORD, t_off=5.0), 0.2)
    assert not inst.swap(other)
    assert "512-frame blocks" in inst.last_error and "\n" not in inst.last_error
    assert inst.voice.active == 4  # the chord plays on


def test_mpe_listens_to_every_channel_whatever_the_midi_channel(porgan):
    ev = [{"t": 0.1, "midi": [0x92, 60, 100]}, {"t": 0.1, "midi": [0x95, 64, 100]},
          {"t": 0.1, "midi": [0xE5, 0x7F, 0x7F]}]  # channel 6 bends its own note up
    inst, _ = play(porgan, ev, 0.4, cfg_with(voice__mode="mpe", midi__channel=1, voice__mpe_bend_range=12.0))
    assert inst.router.channel is None and inst.voice.mode == "mpe"
    by_ch = {d["channel"]: d["pitch_hz"] for d in inst.voice.voices()}
    assert by_ch[2] == pytest.approx(hz(60), rel=1e-4) and by_ch[5] == pytest.approx(hz(76), rel=1e-4)
    inst, _ = play(porgan, ev, 0.4, cfg_with(midi__channel=3))  # poly on channel 3 only
    assert inst.router.channel == 2 and [d["note"] for d in inst.voice.voices()] == [60]


def test_a_render_plays_every_voice_whatever_the_machines_speed(porgan, tmp_path, monkeypatch):
    """``pi-synth render`` is deterministic: on a machine that would cap live voices at 1
    (an emulated Pi: ~3 ms a block), a render still plays all the file's voices, the same
    samples as anywhere else. (Found by the arm64 test: its render of a chord was mono.)"""
    from pi_synth import patch
    from pi_synth.app import render
    from pi_synth.audio.backends.wav import read_wav
    from pi_synth.config import load

    ev = tmp_path / "chord.json"
    ev.write_text(json.dumps([{"t": 0.05, "midi": m} for m in ([144, 60, 100], [144, 64, 100], [144, 67, 100])]
                             + [{"t": 1.0, "midi": m} for m in ([128, 60, 0], [128, 64, 0], [128, 67, 0])]))
    from pi_synth.control.events import load_events

    def rendered(name):
        out = tmp_path / name
        render(load(None), model=str(porgan), output=str(out), events=load_events(ev), seconds=1.5)
        return read_wav(out)[0]

    here = rendered("here.wav")
    monkeypatch.setattr(patch, "block_curve", lambda rt, **kw: [1.0] * rt.rows)
    slow = rendered("slow.wav")
    assert np.array_equal(here, slow)
    chord = peaks_cents(here[int(0.3 * SR):int(0.9 * SR), 0], [60, 64, 67])
    assert all(abs(c) < 20 and level > 0.2 for c, level in chord), chord  # three notes, not one


def test_no_note_yet_costs_no_model_call_until_a_knob_raises_the_loudness(porgan):
    """Before the first note a batched model plays its bank (knobs alone can play it): at
    the loudness floor, as it starts, that is silence without a model call."""
    inst = Instrument(cfg_with(), model=str(porgan), offline=True)
    rt = inst.synth.runtime
    before = rt.blocks
    for _ in range(40):
        x = inst.player.next_block()
    assert rt.blocks == before and not inst.synth.voices.engaged and not np.abs(x).any()
    inst.router.set("loudness", -20.0)  # a knob on loudness: it plays
    for _ in range(10):
        x = inst.player.next_block()
    assert rt.blocks == before + 10 and np.abs(x).max() > 0.01
