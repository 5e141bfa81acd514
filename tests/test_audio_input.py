"""Audio in, offline: cards that take audio, the WAV reader, the input conditioning, the
pair (encoder → latents + offsets → decoder) and effects, ``pi-synth render --input``.

Real models (procedural ONNX graphs run by onnxruntime), real recordings (tests/data:
espeak-ng speech, a FluidSynth flute), real files written the way other tools write them.
The live side (capture through JACK, device loss) is tests/test_audio_input_live.py.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from pi_synth import config as config_mod
from pi_synth.app import Instrument
from pi_synth.audio.backends.null import NullBackend
from pi_synth.audio.backends.wav import WavBackend, load_input, read_wav
from pi_synth.audio.engine import render_offline
from pi_synth.audio.input import AudioInput, InputConditioner
from pi_synth.audio.pair import PairSynth
from pi_synth.audio.player import Deck
from pi_synth.errors import CardError, InputError, ModelError
from pi_synth.model.card import parse_card
from pi_synth.model.library import find_encoder, list_models
from pi_synth.model.runtime import Runtime
from pi_synth.patch import build_patch
from pi_synth.tools.procedural import build_effect, build_encoder, build_organ, encoder_card

DATA = Path(__file__).resolve().parent / "data"
VOICE, FLUTE = DATA / "voice.wav", DATA / "flute.wav"


@pytest.fixture
def pair(tmp_path):
    """Factory: the organ with a procedural encoder beside it (``organ.encoder.onnx``)."""

    def make(name="organ", block_size=256, control_frames=1, sample_rate=48000, **kw):
        path = tmp_path / f"{name}.onnx"
        build_organ(path, block_size=block_size, control_frames=control_frames, sample_rate=sample_rate)
        build_encoder(tmp_path / f"{name}.encoder.onnx", block_size=block_size, control_frames=control_frames,
                      sample_rate=sample_rate, **kw)
        return path

    return make


def write_wav(path, x: np.ndarray, rate: int, bits: int = 16, tag: int | None = None, extensible=False):
    """A WAV the way other tools write them: PCM 8/16/24/32 or float 32/64, any channels."""
    x = np.asarray(x, np.float64)
    x = x.reshape(len(x), -1) if x.ndim == 1 else x
    ch = x.shape[1]
    fmt = tag or (3 if bits == 64 or tag == 3 else 1)
    if fmt == 3:
        data = x.astype("<f4" if bits == 32 else "<f8").tobytes()
    elif bits == 8:
        data = np.clip(np.round(x * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    elif bits == 16:
        data = np.round(x * 32767).astype("<i2").tobytes()
    elif bits == 24:
        v = np.round(x * 8388607).astype("<i4").reshape(-1)
        data = np.stack([v & 255, (v >> 8) & 255, (v >> 16) & 255], 1).astype(np.uint8).tobytes()
    else:
        data = np.round(x * 2147483647).astype("<i4").tobytes()
    align = ch * bits // 8
    if extensible:  # WAVE_FORMAT_EXTENSIBLE, as sox and most DAWs write more than 2 channels
        guid = struct.pack("<H", fmt) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        body = struct.pack("<HHIIHHHHI", 0xFFFE, ch, rate, rate * align, align, bits, 22, bits, 0) + guid
    else:
        body = struct.pack("<HHIIHH", fmt, ch, rate, rate * align, align, bits)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", len(body)) + body + b"data" + struct.pack("<I", len(data)) + data
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    return path


def cfg(**sections):
    c = config_mod.load()
    for table, values in sections.items():
        c.values[table].update(values)
    return c


# -- cards ---------------------------------------------------------------------------------


def test_encoder_card_and_the_first_converters_card():
    new = parse_card(json.dumps(encoder_card(2048, 44100)))
    assert new.is_encoder and new.audio_input == "audio_in" and new.latent_output == "latent"
    assert not new.controls_input and not new.audio_output
    assert new.latent_controls == ("loudness", "brightness")
    # the card `pi-synth convert rave` wrote before: kind rave-encoder, the same tensor
    # named as controls and audio input, latent and audio output
    old = dict(encoder_card(2048, 44100), kind="rave-encoder",
               inputs={"controls": "audio_in", "audio": "audio_in"},
               outputs={"audio": "latent", "latent": "latent"})
    del old["latent_controls"]
    c = parse_card(json.dumps(old))
    assert c.is_encoder and c.latent_controls == () and not c.controls_input
    assert parse_card(json.dumps(c.to_json())) == c  # round trip


@pytest.mark.parametrize("edit,msg", [
    (lambda d: d["inputs"].pop("audio"), "needs inputs.audio"),
    (lambda d: d.update(latent_controls="loudness"), "latent_controls"),
    (lambda d: d.update(latent_controls=["a", "a"]), "latent_controls"),
    (lambda d: d.update(controls=[{"name": "x", "min": 0, "max": 1, "default": 0}]), "no inputs.controls"),
    (lambda d: d.update(encoder="../x.onnx"), "'encoder'"),
    (lambda d: d["outputs"].pop("latent"), "outputs.latent"),
])
def test_bad_encoder_cards_name_the_key(edit, msg):
    d = encoder_card(256, 48000)
    edit(d)
    with pytest.raises(CardError, match=msg):
        parse_card(json.dumps(d), where="enc.onnx")


def test_runtimes_of_an_encoder_and_an_effect(tmp_path):
    build_encoder(tmp_path / "e.onnx")
    enc = Runtime(tmp_path / "e.onnx", use_cache=False)
    x, _ = read_wav(VOICE)
    seen = []
    for k in range(40, 60):  # speech: the loudness latent follows the level
        enc.audio_in[:] = x[k * 256:(k + 1) * 256, 0]
        enc.step()
        seen.append(enc.latent.copy())
    z = np.array(seen)[:, :, 0]
    assert z.shape == (20, 2) and np.isfinite(z).all() and z[:, 0].max() > -40 and np.ptp(z[:, 0]) > 3
    build_effect(tmp_path / "d.onnx", kind="delay", delay=100)
    fx = Runtime(tmp_path / "d.onnx", use_cache=False)
    fx.audio_in[:] = np.arange(256)
    fx.step()
    fx.step()  # state carried: the last 100 samples of the first block come first
    assert np.array_equal(fx.audio[0, :100], np.arange(156, 256))


def test_encoders_are_found_beside_their_decoder_and_never_listed(pair, tmp_path, monkeypatch):
    p = pair("voice")
    from pi_synth.model.card import load_card

    assert find_encoder(p, load_card(p)) == tmp_path / "voice.encoder.onnx"
    i8 = tmp_path / "voice.int8.onnx"
    p.rename(i8)  # NAME.int8.onnx finds NAME.encoder.onnx too
    assert find_encoder(i8, load_card(i8)) == tmp_path / "voice.encoder.onnx"
    monkeypatch.setenv("PI_SYNTH_MODELS", str(tmp_path))
    assert [m.name for m in list_models() if m.parent == tmp_path] == ["voice.int8.onnx"]
    # a card naming an encoder that is not there (a decoder copied alone, a conversion cut
    # short): the decoder plays from its knobs — it was refused even by info and a run with no
    # input — and asked for audio, one line says what is missing
    from pi_synth.model.library import missing_encoder
    from pi_synth.patch import input_kind, no_input_error

    d = json.loads(json.dumps(load_card(i8).to_json()))
    d["encoder"] = "missing.encoder.onnx"
    card = parse_card(json.dumps(d))
    assert find_encoder(i8, card) is None and input_kind(i8, card) is None
    assert "missing.encoder.onnx" in missing_encoder(i8, card) and "not beside it" in str(no_input_error(i8, card))
    assert missing_encoder(i8, load_card(i8)) == ""


# -- WAV files in --------------------------------------------------------------------------


@pytest.mark.parametrize("bits,tag", [(8, 1), (16, 1), (24, 1), (32, 1), (32, 3), (64, 3)])
def test_read_wav_every_pcm_and_float_width(tmp_path, bits, tag):
    x, sr = read_wav(VOICE)
    x = x[:4800]
    path = write_wav(tmp_path / "v.wav", x, sr, bits=bits, tag=tag)
    y, sr2 = read_wav(path)
    assert sr2 == sr and y.shape == x.shape and y.dtype == np.float32
    tol = {8: 1 / 100, 16: 1e-4, 24: 1e-6, 32: 1e-6, 64: 1e-7}[bits]
    assert np.abs(y - x).max() < tol


def test_load_input_resamples_with_soxr_and_keeps_channels(tmp_path):
    x, sr = read_wav(FLUTE)
    six = np.repeat(x[:24000], 6, axis=1) * np.linspace(0.5, 1.0, 6)[None, :]
    path = write_wav(tmp_path / "six.wav", six, 192000, bits=24, extensible=True)
    y, notes = load_input(path, 48000)
    assert notes == ["resampled 192000 → 48000 Hz with soxr", "mixed 6 → 1 channels"]
    assert y.shape[1] == 6 and abs(len(y) - 6000) <= 1  # 24000 frames at 192 kHz
    # a 44.1 kHz file at 48 kHz: the same sound (its pitch), a real resampler's accuracy
    import soxr

    down = soxr.resample(x[:48000], 48000, 44100)
    path = write_wav(tmp_path / "cd.wav", down, 44100)
    y, notes = load_input(path, 48000)
    assert notes == ["resampled 44100 → 48000 Hz with soxr"]
    err = y[1000:40000, 0] - x[1000:40000, 0]
    assert np.sqrt(np.mean(err ** 2)) < 0.01 * np.sqrt(np.mean(x[1000:40000, 0] ** 2)) + 1e-4


@pytest.mark.parametrize("bad,msg", [
    ("text", "not a WAV file"), ("empty", "no audio frames"), ("nodata", "no 'data' chunk"),
    ("adpcm", "MS ADPCM 16-bit WAV is not supported"), ("mulaw", "µ-law 8-bit WAV"), ("missing", "cannot read"),
    ("flac", "looks like FLAC, not WAV"), ("m4a", "looks like MP4/M4A, not WAV"),  # a phone's recording
])
def test_bad_input_wav_is_one_line_exit_2(organ, pair, cli, tmp_path, bad, msg):
    p = pair()
    f = tmp_path / "in.wav"
    if bad == "text":
        f.write_text("this is not audio\n" * 10)
    elif bad == "empty":
        write_wav(f, np.zeros((0, 1)), 48000)
    elif bad == "nodata":
        f.write_bytes(b"RIFF" + struct.pack("<I", 28) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 48000, 96000, 2, 16))
    elif bad == "adpcm":
        write_wav(f, np.zeros((100, 1)), 48000, bits=16, tag=2)
    elif bad == "mulaw":  # a telephony recording
        write_wav(f, np.zeros((100, 1)), 8000, bits=8, tag=7)
    elif bad == "flac":  # a FLAC stream's first bytes: the magic, then STREAMINFO
        f.write_bytes(b"fLaC\x00\x00\x00\x22" + bytes(34) + bytes(200))
    elif bad == "m4a":  # an ISO base media file: a box size, then 'ftyp' and the brand
        f.write_bytes(struct.pack(">I", 32) + b"ftypM4A \x00\x00\x02\x00M4A isommp42" + bytes(200))
    r = cli("render", p, "--input", f, "-o", tmp_path / "o.wav")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and msg in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.wav").exists()


def test_converted_inputs_are_said(pair, cli, tmp_path):
    x, sr = read_wav(VOICE)
    stereo = np.concatenate([x, 0.5 * x], axis=1)[:48000]
    f = write_wav(tmp_path / "st.wav", stereo, 44100, bits=24)
    r = cli("render", pair(), "--input", f, "-o", tmp_path / "o.wav", check=0)
    assert "resampled 44100 → 48000 Hz with soxr, mixed 2 → 1 channels" in r.stdout
    y, sr2 = read_wav(tmp_path / "o.wav")
    assert sr2 == 48000 and np.abs(y).max() > 0.01


def test_a_decoder_without_an_encoder_says_how_to_make_one(organ, cli, tmp_path):
    from pi_synth.model.card import card_json, write_card

    plain = organ("plain")
    write_card(plain, dict(card_json(plain), kind="rave"))  # a converted RAVE decoder whose encoder was left behind
    r = cli("render", plain, "--input", VOICE, "-o", tmp_path / "o.wav")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "no encoder beside it (plain.encoder.onnx)" in r.stderr and "pi-synth convert rave" in r.stderr
    # a voice played by notes takes no audio: no RAVE advice for it
    r = cli("render", organ("notes"), "--input", VOICE, "-o", tmp_path / "o.wav")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "played by its controls and takes no audio in" in r.stderr and "--midi" in r.stderr, r.stderr


def test_an_encoder_alone_is_not_played(pair, cli, tmp_path):
    pair()
    r = cli("render", tmp_path / "organ.encoder.onnx", "-o", tmp_path / "o.wav")
    assert r.returncode == 2 and "encoder" in r.stderr and r.stderr.count("\n") == 1
    r = cli("info", tmp_path / "organ.encoder.onnx", check=0)
    assert "an encoder (audio → latents: loudness, brightness)" in r.stdout
    r = cli("info", tmp_path / "organ.onnx", check=0)
    assert "timbre transfer through its encoder organ.encoder.onnx" in r.stdout
    r = cli("info", "morph", check=0)  # the card's own latency is 0; with its encoder, 512
    assert "latency 512 samples with it (the dry path waits as long)" in r.stdout, r.stdout


# -- the conditioner -------------------------------------------------------------------------


def test_conditioner_mixes_removes_dc_gates_and_counts_clips():
    x, sr = read_wav(VOICE)
    f = 256
    c = InputConditioner(f, sr, gate_db=-50.0, dc_hz=5.0)
    out = np.zeros(f, np.float32)
    ys, gates = [], []
    # a stereo recording: the voice on the left, half of it on the right, plus DC on both
    st = np.concatenate([x, 0.5 * x], axis=1) + 0.2
    for k in range(len(x) // f):
        c.process(st[k * f:(k + 1) * f], out)
        ys.append(out.copy())
        gates.append(c.gate)
    y = np.concatenate(ys)
    mono = 0.75 * x[: len(y), 0]
    tail = slice(sr, len(y))  # after a second the 0.2 DC is gone (5 Hz corner)
    assert abs(float(np.mean(y[tail]))) < 0.01
    speech = np.abs(mono) > 0.1
    assert np.corrcoef(y[tail][speech[tail]], mono[tail][speech[tail]])[0, 1] > 0.98  # the mono mix
    assert min(gates) == 0.0 and max(gates) == 1.0  # closed in pauses, open on speech
    assert c.clips == 0
    c.process(np.full((f, 2), 1.0, np.float32), out)  # a clipped ADC
    assert c.clips == 1 and c.peak_hold > 0.5


def test_null_and_wav_inputs(tmp_path):
    inp = AudioInput(NullBackend(), 256, 48000)
    inp.open(256)
    out = np.ones(256, np.float32)
    inp.read(out)
    assert not out.any() and inp.status()["device"] == "ok"
    inp.close()
    x, sr = read_wav(VOICE)
    b = WavBackend(str(tmp_path / "o.wav"), capture=str(VOICE))
    inp = AudioInput(b, 1000, sr, gate_db=-120, dc_hz=0)
    inp.open(256)
    rec = inp.record(4000)
    for _ in range(4):
        inp.read(out := np.zeros(1000, np.float32))
    assert np.array_equal(rec, x[:4000, 0])  # untouched with no gain, gate or DC removal
    inp.close()


# -- the pair and effects --------------------------------------------------------------------


def render_pair(path, x, *, sets=(), block=None, config=None, seconds=None):
    """``pi-synth render PATH --input`` in-process: the output, and what the model heard."""
    c = config or cfg()
    sr = 48000
    inst = Instrument(c, model=str(path), audio_in=True, sets=sets,
                      seconds=seconds or len(x) / sr)
    b = WavBackend(str(Path(path).with_suffix(".out.wav")), capture=x)
    inst.connect_input(b)
    heard = inst.audio_input.record(len(x))
    render_offline(inst.player, b)
    y, _ = read_wav(b.device)
    return y[:, 0], heard, inst


def test_the_organ_follows_a_voice_and_the_latent_offsets_move_it(pair):
    x, sr = read_wav(VOICE)
    p = pair()
    y, heard, inst = render_pair(p, x, sets=[("pitch", 220.0)], config=cfg(input={"gate_db": -120.0}))
    assert inst.synth.takes_input and inst.voice is None
    assert inst.card.control_names == ("pitch", "loudness", "brightness", "input_gain", "latent_scale", "dry_wet")

    def env(v):  # RMS per 20 ms
        n = len(v) // 960 * 960
        return np.sqrt((v[:n].reshape(-1, 960) ** 2).mean(axis=1))

    ex, ey = env(x[:, 0]), env(y)
    n = min(len(ex), len(ey))
    loud = 20 * np.log10(ex[:n] + 1e-6)
    assert np.corrcoef(loud, 20 * np.log10(ey[:n] + 1e-6))[0, 1] > 0.8  # louder voice, louder organ
    # the loudness knob is now an offset: +12 dB on the encoder's reading
    y2, _, _ = render_pair(p, x, sets=[("pitch", 220.0), ("loudness", -68.0)], config=cfg(input={"gate_db": -120.0}))
    speech = loud > -30
    gain = 20 * np.log10(env(y2)[:n][speech] / env(y)[:n][speech])
    assert 10 < np.median(gain) < 14
    # latent_scale 0: the encoder's reading is ignored, the offset alone (default: silence)
    y3, _, _ = render_pair(p, x, sets=[("latent_scale", 0.0)])
    assert np.abs(y3).max() < 1e-3
    # dry_wet 0: the input itself (no model latency), through the output guard (whose
    # 1 Hz DC blocker moves it by a few thousandths)
    y4, heard4, _ = render_pair(p, x, sets=[("dry_wet", 0.0)], config=cfg(input={"gate_db": -120.0, "dc_hz": 0.0}))
    assert np.abs(y4[4800:len(heard4)] - heard4[4800:]).max() < 5e-3


def test_a_scattered_encoder_writes_its_own_controls(pair, tmp_path):
    """latent_controls in another order than the decoder's: each row to its control."""
    x, sr = read_wav(FLUTE)
    a, _, _ = render_pair(pair("a"), x, sets=[("pitch", 330.0)])
    b, _, _ = render_pair(pair("b", order=("brightness", "loudness")), x, sets=[("pitch", 330.0)])
    assert np.array_equal(a, b)


def test_dry_path_lines_up_with_the_models_latency(tmp_path):
    """A delay effect says latency_samples = 300: half dry, half wet is the delayed input
    exactly, so the dry path was delayed by what the card says, not a sample off."""
    build_effect(tmp_path / "late.onnx", kind="delay", delay=300)
    x, sr = read_wav(VOICE)
    x = x[:24000]
    c = cfg(input={"gate_db": -120.0, "dc_hz": 0.0})
    half, heard, inst = render_pair(tmp_path / "late.onnx", x, sets=[("dry_wet", 0.5)], config=c)
    assert inst.card.extra["audio_in"]["latency_samples"] == 300
    wet, _, _ = render_pair(tmp_path / "late.onnx", x, config=c)
    want = np.concatenate([np.zeros(300, np.float32), heard])[:len(heard)]
    # the wet path is the input 300 samples late (the output guard's DC blocker moves it
    # by a few thousandths; a sample off would be off by up to 0.05 on this voice)
    assert np.abs(wet[:len(want)] - want).max() < 5e-3
    # and half of it with half of the dry is the same signal, to the last bit of 16
    assert np.abs(half - wet).max() <= 2 / 32767


@pytest.mark.parametrize("model_block,engine_block", [(512, 256), (300, 256), (256, 1024)])
def test_blocks_that_do_not_line_up_are_primed(tmp_path, model_block, engine_block):
    """Engine block ≠ model block: the deck's FIFO starts B − gcd(B, f) frames early, the
    least that never starves; the output is the input delayed by exactly that."""
    import math

    from pi_synth.audio.safety import OutputGuard

    build_effect(tmp_path / "d.onnx", kind="delay", delay=1, block_size=model_block)
    rt = Runtime(tmp_path / "d.onnx", use_cache=False)
    s = PairSynth(rt, guard=OutputGuard(model_block, 1, 48000, fade_in=False, dc_hz=0.0))
    deck = Deck(s, engine_block)
    x, _ = read_wav(VOICE)
    x = x[:40 * 1024, 0]
    out = []
    for k in range(len(x) // engine_block):
        deck.feed(x[k * engine_block:(k + 1) * engine_block])
        out.append(deck.pull().copy())
    y = np.concatenate(out)[:, 0]
    prime = model_block - math.gcd(model_block, engine_block)
    assert s.starved == 0
    want = np.concatenate([np.zeros(prime + 1, np.float32), x])[:len(y)]
    assert np.abs(y - want).max() < 1e-3


def test_render_with_input_repeats_and_events_and_sets_still_apply(pair, cli, tmp_path):
    p = pair()
    ev = tmp_path / "ev.json"
    ev.write_text(json.dumps([{"t": 1.5, "set": {"dry_wet": 0.0}}]))
    outs = []
    for i in range(2):
        o = tmp_path / f"o{i}.wav"
        cli("render", p, "--input", VOICE, "--events", ev, "--set", "pitch=330", "-o", o, check=0)
        outs.append(o.read_bytes())
    assert outs[0] == outs[1]  # deterministic
    y, _ = read_wav(tmp_path / "o0.wav")
    x, _ = read_wav(VOICE)
    late = slice(int(1.6 * 48000), int(3.3 * 48000))  # after the event: the dry voice itself
    assert np.corrcoef(y[late, 0], x[late, 0])[0, 1] > 0.99
    early = slice(int(0.5 * 48000), int(1.4 * 48000))  # before: the organ, not the voice
    assert abs(np.corrcoef(y[early, 0], x[early, 0])[0, 1]) < 0.5


def test_notes_do_not_gate_a_pair_of_a_note_voice(cli, tmp_path):
    """morph (a pitch/loudness voice with its encoder) played from a recording: a note in the
    events used to bring a voice with it, whose loudness floor between keys silenced the
    input before the first note and after the last. Notes do not play a model that takes
    audio (as its patch says); the render is the one without them, and says so."""
    ev = tmp_path / "ev.json"
    ev.write_text(json.dumps([{"t": 0.5, "midi": [144, 60, 100]}, {"t": 1.0, "midi": [128, 60, 0]}]))
    with_notes = cli("render", "morph", "--input", VOICE, "--events", ev, "-o", tmp_path / "n.wav", check=0)
    cli("render", "morph", "--input", VOICE, "-o", tmp_path / "plain.wav", check=0)
    assert "the events' 1 note(s) do not play it" in with_notes.stderr, with_notes.stderr
    y, _ = read_wav(tmp_path / "n.wav")
    assert np.sqrt(np.mean(y[: int(0.45 * 48000)] ** 2)) > 0.01  # sound before the first note
    assert (tmp_path / "n.wav").read_bytes() == (tmp_path / "plain.wav").read_bytes()


def test_build_patch_makes_a_pair_only_when_asked_and_possible(pair, organ):
    c = cfg()
    p = pair()
    assert not build_patch(c, p).synth.takes_input  # plays from its knobs
    assert build_patch(c, p, audio_in="auto").synth.takes_input
    assert not build_patch(c, organ("solo"), audio_in="auto").synth.takes_input
    with pytest.raises(InputError, match="takes no audio in"):
        build_patch(c, organ("solo2"), audio_in=True)


def test_a_mismatched_encoder_is_refused_in_one_line(tmp_path):
    build_organ(tmp_path / "m.onnx", block_size=256)
    build_encoder(tmp_path / "m.encoder.onnx", block_size=512)
    with pytest.raises(ModelError, match="block_size is 512, the decoder's 256"):
        build_patch(cfg(), tmp_path / "m.onnx", audio_in=True)


def test_an_encoder_converted_from_another_model_is_refused(tmp_path):
    """Two RAVE conversions' files side by side under one name (an encoder copied beside the
    wrong decoder) played without a word: their latents mean nothing to each other. The
    cards carry each .ts's sha256; they must agree."""
    import dataclasses

    from pi_synth.audio.pair import latent_targets
    from pi_synth.model.card import load_card

    build_organ(tmp_path / "m.onnx", block_size=256)
    build_encoder(tmp_path / "m.encoder.onnx", block_size=256)
    dec, enc = load_card(tmp_path / "m.onnx"), load_card(tmp_path / "m.encoder.onnx")

    def made_from(card, ts, sha):
        return dataclasses.replace(card, extra={**card.extra, "rave": {"ts": ts, "ts_sha256": sha}})

    assert latent_targets(made_from(dec, "a.ts", "ab" * 32), made_from(enc, "a.ts", "ab" * 32))
    assert latent_targets(dec, made_from(enc, "a.ts", "ab" * 32))  # not a conversion: nothing to compare
    with pytest.raises(ModelError, match="the encoder was converted from b.ts, the decoder from a.ts"):
        latent_targets(made_from(dec, "a.ts", "ab" * 32), made_from(enc, "b.ts", "cd" * 32))


def test_a_clipping_input_lights_the_clip_led_and_the_status_says_so(pair, tmp_path):
    """A singer too loud for the ADC (a recording clipped at full scale): the input's
    clipped blocks are counted, the status shows them, and the clip LED lights."""
    from gpiozero import Device

    from pi_synth.control.board import EmulatedBoard, use_board
    from pi_synth.control.leds import StatusLeds

    x, sr = read_wav(VOICE)
    hot = np.clip(4.0 * x, -1.0, 1.0)
    y, heard, inst = render_pair(pair(), hot)
    st = inst.status()["input"]
    assert st["clips"] > 10 and st["xruns"] == 0
    use_board(EmulatedBoard())
    try:
        leds = StatusLeds(inst.router, {"clip": 23}, status_fn=inst.status)
        leds.open()
        leds.poll(100.0)
        assert Device.pin_factory.pin(23).state  # lit: the counter moved
        leds.poll(101.0)
        assert not Device.pin_factory.pin(23).state  # and out again once it stops moving
        leds.close()
    finally:
        use_board(None)


def test_wavs_as_recorders_leave_them(tmp_path):
    """A recording whose header was never finished (data size 0, or 0x7FFFFFFF / 0xFFFFFFFF as
    a streaming recorder writes it), a broadcast WAV with bext and LIST chunks around an
    odd-sized one, and RF64/BW64 files: all read to the samples that are there."""
    x = np.round(0.3 * np.sin(2 * np.pi * 220 * np.arange(4410) / 44100) * 32767) / 32767
    pcm = np.round(x * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, 44100, 88200, 2, 16)

    def chunk(tag, body, size=None):
        return tag + struct.pack("<I", len(body) if size is None else size) + body + b"\0" * (len(body) & 1)

    def riff(*chunks, size=None):
        body = b"WAVE" + b"".join(chunks)
        return b"RIFF" + struct.pack("<I", len(body) if size is None else size) + body

    files = {
        "unfinished": riff(chunk(b"fmt ", fmt), chunk(b"data", pcm, 0), size=0),
        "streamed": riff(chunk(b"fmt ", fmt), chunk(b"data", pcm, 0x7FFFFFFF), size=0x7FFFFFFF),
        "streamed-ffff": riff(chunk(b"fmt ", fmt), chunk(b"data", pcm, 0xFFFFFFFF), size=0xFFFFFFFF),
        "bwf": riff(chunk(b"bext", b"b" * 603), chunk(b"fmt ", fmt), chunk(b"LIST", b"INFOabc"), chunk(b"data", pcm)),
        # RF64 / BW64 (a field recorder's long take): the sizes in a ds64 chunk, 0xFFFFFFFF in
        # the headers; a JUNK chunk after the data that the data's own size field would run into
        "rf64": b"RF64" + riff(chunk(b"ds64", struct.pack("<QQQI", 0, len(pcm), 4410, 0)), chunk(b"fmt ", fmt),
                               chunk(b"data", pcm, 0xFFFFFFFF), chunk(b"JUNK", b"\x7f" * 64))[4:],
        "bw64": b"BW64" + riff(chunk(b"ds64", struct.pack("<QQQI", 0, len(pcm), 4410, 0)), chunk(b"fmt ", fmt),
                               chunk(b"data", pcm, 0xFFFFFFFF), size=0xFFFFFFFF)[4:],
    }
    for name, raw in files.items():
        (tmp_path / f"{name}.wav").write_bytes(raw)
        y, rate = read_wav(tmp_path / f"{name}.wav")
        assert rate == 44100 and y.shape == (4410, 1), name
        assert np.max(np.abs(y[:, 0] - x)) < 1e-6, name


def test_wavs_that_writers_got_wrong(tmp_path):
    """What a tester's odd writers made: an odd-sized chunk with no pad byte before the data
    (read as "no 'data' chunk"), a second 'fmt ' chunk (the last won: a wrong rate), and the
    ones refused with the reason named — a 14-byte WAVEFORMAT, a Wave64 file, 65535 channels
    (said to be "empty")."""
    x = (np.sin(np.arange(4800) * 0.05) * 20000).astype("<i2").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 48000, 96000, 2, 16)

    def riff(body):
        return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body

    nopad = riff(b"fmt " + fmt + b"LIST" + struct.pack("<I", 5) + b"INFOa" + b"data" + struct.pack("<I", len(x)) + x)
    (tmp_path / "nopad.wav").write_bytes(nopad)
    assert read_wav(tmp_path / "nopad.wav")[0].shape == (4800, 1)
    other = struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    (tmp_path / "twofmt.wav").write_bytes(riff(b"fmt " + fmt + b"fmt " + other + b"data" + struct.pack("<I", len(x)) + x))
    assert read_wav(tmp_path / "twofmt.wav")[1] == 48000
    # a stream's "length unknown" (or an unfinished 0) with a tagger's LIST chunk after the
    # samples: the LIST was read as samples, a click at the end
    listed = b"LIST" + struct.pack("<I", 26) + b"INFOISFT" + struct.pack("<I", 13) + b"Lavf60.16.100\0"
    for size in (0xFFFFFFFF, 0):
        (tmp_path / "tagged.wav").write_bytes(riff(b"fmt " + fmt + b"data" + struct.pack("<I", size) + x + listed))
        y = read_wav(tmp_path / "tagged.wav")[0]
        assert y.shape == (4800, 1) and np.array_equal(y[:, 0], np.frombuffer(x, "<i2") / np.float32(32767)), size
    cases = {
        "waveformat": (riff(b"fmt " + struct.pack("<I", 14) + fmt[4:18] + b"data" + struct.pack("<I", len(x)) + x),
                       "a 14-byte 'fmt ' chunk (the old WAVEFORMAT"),
        "w64": (b"riff\x2e\x91\xcf\x11" + bytes(200), "looks like Sony Wave64 (.w64), not WAV"),
        "channels": (riff(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 65535, 48000, 96000, 2, 16) + b"data"
                          + struct.pack("<I", len(x)) + x), "a WAV with 65535 channels"),
    }
    for name, (raw, msg) in cases.items():
        (tmp_path / f"{name}.wav").write_bytes(raw)
        with pytest.raises(InputError, match=re.escape(msg)):
            read_wav(tmp_path / f"{name}.wav")


def test_a_truncated_or_over_full_scale_input_is_said(tmp_path):
    """A recording cut short (its header promises more) or a float file past full scale
    plays, and the render's line says what is odd about it."""
    x = (np.sin(np.arange(48000) * 0.05) * 20000).astype("<i2").tobytes()
    head = (b"RIFF" + struct.pack("<I", 36 + len(x)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 48000, 96000, 2, 16)
            + b"data" + struct.pack("<I", len(x)))
    cut = tmp_path / "cut.wav"
    cut.write_bytes(head + x[: len(x) // 2])
    y, notes = load_input(cut, 48000)
    assert len(y) == 24000 and notes == ["the file ends early: 24000 of the 48000 frames its header promises (truncated?)"]
    f = (np.sin(np.arange(4800) * 0.05) * 500).astype("<f4").tobytes()
    hot = tmp_path / "hot.wav"
    hot.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(f)) + b"WAVEfmt "
                    + struct.pack("<IHHIIHH", 16, 3, 1, 48000, 192000, 4, 32) + b"data" + struct.pack("<I", len(f)) + f)
    y, notes = load_input(hot, 48000)
    assert notes == ["its float samples reach +54.0 dBFS, past full scale: lower [input] gain_db, or normalise the file"]
    assert load_input(VOICE, 48000)[1] == []  # a whole, ordinary file: nothing to say
    # a 16-bit recording clipped at the converter: runs of samples at ±32767 (said; `run
    # --capture` counted its clipped blocks, a render said nothing); one full-scale peak is not
    clipped = np.clip(np.sin(np.arange(48000) * 0.05) * 40000, -32768, 32767).astype("<i2").tobytes()
    (tmp_path / "clipped.wav").write_bytes(head + clipped)
    notes = load_input(tmp_path / "clipped.wav", 48000)[1]
    assert len(notes) == 1 and "sit at full scale side by side: it was clipped when recorded" in notes[0]
    peak = (np.sin(np.arange(48000) * 0.05) * 20000).astype("<i2")
    peak[1000] = 32767
    (tmp_path / "peak.wav").write_bytes(head + peak.tobytes())
    assert load_input(tmp_path / "peak.wav", 48000)[1] == []
