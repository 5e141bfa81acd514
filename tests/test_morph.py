"""The shipped latent voice `morph` and its encoder, on the committed files with real onnxruntime:
cards, the encoder found beside the decoder, harmonic sound at the default knobs, every timbre knob
moving the sound, timbre transfer of a held-out clip (tests/data/morph-heldout.wav: a FluidR3 program
the voice never trained on) that follows the clip's pitch, dry/wet, and int8 against fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pi_synth.audio.backends.wav import read_wav
from pi_synth.model.card import load_card
from pi_synth.model.library import find_encoder
from pi_synth.model.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
FP32, INT8, ENC = MODELS / "morph.fp32.onnx", MODELS / "morph.int8.onnx", MODELS / "morph.encoder.onnx"
CLIP = ROOT / "tests" / "data" / "morph-heldout.wav"
SR = 48000
N_Z = 6  # timbre latents z0..z5 (scripts/models/morph_model.LATENT)
FLOOR_DB = -100.0  # loudness at and below which the voice is exactly silent (scripts/models/morph_model.FLOOR_DB)
# the clip's notes (MIDI 62 65 69 67) and when each sounds (s), from scripts/models/morph_data.py clip()
NOTES = [(0.05, 0.65, 62), (0.65, 1.15, 65), (1.15, 1.85, 69), (1.85, 2.65, 67)]


def f0_of(x: np.ndarray, lo: float = 60.0, hi: float = 1100.0) -> float:
    """The fundamental of a steady stretch: the first peak of the (unbiased) normalized autocorrelation
    within 90% of the highest one (so not an octave below), refined by a parabola."""
    x = x - x.mean()
    n = len(x)
    r = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * n)) ** 2)[:n]
    r = r / (r[0] + 1e-20) * n / (n - np.arange(n))
    a, b = int(SR / hi), int(SR / lo)
    seg = r[a:b]
    peaks = [i for i in range(1, len(seg) - 1) if seg[i] >= seg[i - 1] and seg[i] > seg[i + 1]]
    assert peaks, "no periodicity at all"
    best = max(seg[i] for i in peaks)
    k = next(i for i in peaks if seg[i] >= 0.9 * best)
    y0, y1, y2 = seg[k - 1], seg[k], seg[k + 1]
    return SR / (a + k + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2))


def cents(a: float, b: float) -> float:
    return abs(1200 * np.log2(a / b))


def harmonic_excess_db(x: np.ndarray, f0: float) -> float:
    """Energy at the first five harmonics over the energy between them (dB): a harmonic sound is far
    above 0, shaped noise near it."""
    n = len(x)
    p = np.abs(np.fft.rfft(x * np.hanning(n))) ** 2
    f = np.fft.rfftfreq(n, 1 / SR)
    d = np.abs(f / f0 - np.round(f / f0)) * f0
    low = (f > f0 / 2) & (f < 5.5 * f0)
    return 10 * np.log10(p[low & (d < f0 / 8)].sum() / p[low & (d > f0 / 4)].sum())


def play(path: Path, controls: np.ndarray) -> np.ndarray:
    """controls [n, 2 + N_Z] (one frame per block) through the decoder, block by block from zero state."""
    rt = Runtime(path)
    out = []
    for c in controls:
        rt.controls[:, 0] = c
        out.append(rt.step()[0].copy())
    return np.concatenate(out)


def defaults(card, n: int, **knobs) -> np.ndarray:
    return np.array([[knobs.get(c.name, c.default) for c in card.controls]] * n, np.float32)


def test_cards_and_the_encoder_beside_the_decoder():
    dec = load_card(FP32)
    assert dec.kind == "latent" and dec.sample_rate == SR and dec.block_size == 512
    assert dec.control_names == ("pitch", "loudness", *(f"z{i}" for i in range(N_Z)))
    for c in dec.controls:
        assert c.min < c.default < c.max or (c.name == "loudness" and c.min <= c.default < c.max), c
    loud = dec.control("loudness")
    assert loud.min == FLOOR_DB and loud.default > -40.0, "the default must make sound"
    assert dec.control("pitch").curve == "log" and dec.control("pitch").min < 110 < 880 < dec.control("pitch").max
    zs = [dec.control(f"z{i}") for i in range(N_Z)]
    # ranges from the data's spread, not a guessed ±3: unequal, and narrowing with importance
    assert len({(z.min, z.max) for z in zs}) == N_Z
    widths = [z.max - z.min for z in zs]
    assert widths[0] > widths[-1]
    assert load_card(INT8).control_names == dec.control_names
    for p in (FP32, INT8):
        assert find_encoder(p, load_card(p)) == ENC
    enc = load_card(ENC)
    assert enc.kind == "encoder" and enc.is_encoder and enc.latency_samples == 512
    assert enc.latent_controls == dec.control_names
    assert (enc.sample_rate, enc.block_size, enc.control_frames) == (dec.sample_rate, dec.block_size, dec.control_frames)
    rt = Runtime(ENC)  # the card matches the graph (onnxruntime's inputs and outputs)
    assert rt.latent.shape == (2 + N_Z, 1)


def test_render_at_the_default_knobs_is_harmonic(cli, tmp_path):
    """``pi-synth render morph -o x.wav``: a note voice with no notes given plays the demo phrase, at
    the default knobs: finite, sounding, and harmonic at an equal-tempered pitch (the phrase's notes)."""
    out = tmp_path / "x.wav"
    cli("render", "morph", "-o", out, check=0)
    y, sr = read_wav(out)
    y = y[:, 0]
    assert sr == SR and np.isfinite(y).all()
    w = int(0.25 * SR)
    rms = np.array([np.sqrt(np.mean(y[i:i + w] ** 2)) for i in range(0, len(y) - w, w // 2)])
    assert rms.max() > 10 ** (-40 / 20), f"near silent: {20 * np.log10(rms.max()):.1f} dB"
    loudest = np.argsort(rms)[::-1][:4]  # the four loudest quarter-seconds: each one harmonic
    for k in loudest:
        seg = y[k * w // 2:k * w // 2 + w]
        f0 = f0_of(seg)
        note = 69 + 12 * np.log2(f0 / 440)
        assert abs(note - round(note)) * 100 < 30, f"{f0:.1f} Hz is no note of the phrase"
        assert harmonic_excess_db(seg, f0) > 15


def test_a_note_at_the_default_knobs_plays_its_pitch(cli, tmp_path):
    ev = tmp_path / "a3.json"
    ev.write_text('[{"t": 0.0, "midi": [144, 57, 100]}, {"t": 1.6, "midi": [128, 57, 0]}]')
    out = tmp_path / "a3.wav"
    cli("render", "morph", "--events", ev, "-o", out, "--seconds", "1.8", check=0)
    y, _ = read_wav(out)
    tail = y[int(0.4 * SR):int(1.5 * SR), 0]
    assert np.sqrt(np.mean(tail**2)) > 10 ** (-45 / 20)
    f0 = f0_of(tail)
    assert cents(f0, 220.0) < 20, f"A3 played at {f0:.1f} Hz"
    assert harmonic_excess_db(tail, f0) > 20


def test_notes_that_start_late_start_from_silence(cli, tmp_path):
    """A latent voice sounds at its card's loudness while only knobs play it; notes in a
    render play it from the start: silence before the first key, an attack at it."""
    ev = tmp_path / "late.json"
    ev.write_text('[{"t": 1.0, "midi": [144, 57, 100]}, {"t": 1.5, "midi": [128, 57, 0]}]')
    out = tmp_path / "late.wav"
    cli("render", "morph", "--events", ev, "-o", out, check=0)
    y, _ = read_wav(out)
    rms = [np.sqrt(np.mean(y[int(a * SR):int(b * SR), 0] ** 2)) for a, b in ((0.05, 0.95), (1.1, 1.4))]
    assert rms[0] < 1e-5 and rms[1] > 10 ** (-45 / 20), rms


def test_it_answers_a_note_a_block_later_as_its_card_says(cli, tmp_path):
    """The model card and README say morph's sound answers a note a block (512 samples)
    after the block it came in, where the flute answers within a few samples (an outside
    tester timed it; the card's latency_samples says 0)."""
    t = 47 * 512 / SR  # on a block boundary
    ev = tmp_path / "n.json"
    ev.write_text(f'[{{"t": {t!r}, "midi": [144, 57, 100]}}]')
    onset = {}
    for name in ("morph", "flute"):
        out = tmp_path / f"{name}.wav"
        cli("render", name, "--events", ev, "-o", out, "--seconds", "0.8", check=0)
        y = np.abs(read_wav(out)[0][:, 0])
        b = 47 * 512
        onset[name] = int(np.argmax(y[b:] > 0.01 * y[b:b + 9600].max()))
    assert 480 <= onset["morph"] <= 560 and onset["flute"] < 32, onset


@pytest.mark.parametrize("pitch", [65.0, 82.0, 110.0, 147.0, 220.0, 330.0, 440.0, 660.0])
def test_the_pitch_control_plays_that_pitch_across_the_range(pitch):
    """The decoder alone, timbre at its defaults, held at each pitch: the fundamental heard is
    the one asked for (the model before the fundamental match played 220, 330 and 440 Hz an
    octave up: its fundamental below its second harmonic)."""
    card = load_card(FP32)
    y = play(FP32, defaults(card, 200, pitch=pitch))
    f0 = f0_of(y[len(y) // 2:])
    assert cents(f0, pitch) < 20, f"asked {pitch} Hz, heard {f0:.1f} Hz"


@pytest.mark.parametrize("i", range(N_Z))
def test_each_timbre_knob_moves_the_sound(i):
    """z_i from its min to its max: the spectral envelope (third-octave band levels of a held tone)
    moves by a measurable amount, and the sound stays harmonic at the pitch control's f0 (its
    partials at multiples of it; the fundamental itself may be weak in some timbres)."""
    card = load_card(FP32)
    z = card.control(f"z{i}")
    n = int(1.5 * SR / 512)

    def bands(y):
        y = y[int(0.5 * SR):]
        p = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
        f = np.fft.rfftfreq(len(y), 1 / SR)
        edges = 100 * 2 ** (np.arange(0, 22) / 3)  # 100 Hz .. 12.7 kHz
        return np.array([10 * np.log10(p[(f >= a) & (f < b)].sum() + 1e-12) for a, b in zip(edges, edges[1:])])

    lo, hi = (play(FP32, defaults(card, n, **{z.name: v})) for v in (z.min, z.max))
    moved = np.mean(np.abs(bands(lo) - bands(hi)))
    assert moved > 1.0, f"{z.name}: the band levels move {moved:.2f} dB on average"
    pitch = card.control("pitch").default
    for y in (lo, hi):  # white noise scores -3 dB here; some knob ends are breathier than the default
        assert harmonic_excess_db(y[int(0.5 * SR):], pitch) > 10


def test_a_held_out_clip_through_the_pair_follows_its_pitch(cli, tmp_path):
    out = tmp_path / "y.wav"
    r = cli("render", "morph", "--input", CLIP, "-o", out, "--format", "FLOAT_LE", check=0)
    assert "encoder" in r.stdout + r.stderr or out.exists()
    y, sr = read_wav(out)
    y = y[:, 0]
    assert sr == SR and np.isfinite(y).all() and np.abs(y).max() > 1e-3
    lat = load_card(ENC).latency_samples
    for on, off, note in NOTES:
        a, b = int((on + 0.15) * SR) + lat, int((off - 0.05) * SR) + lat
        want = 440 * 2 ** ((note - 69) / 12)
        got = f0_of(y[a:b])
        assert cents(got, want) < 50, f"note {note}: {got:.1f} Hz, the input's {want:.1f} Hz"
        assert harmonic_excess_db(y[a:b], got) > 15


def test_the_pitch_knob_through_the_pair_is_an_interval(cli, tmp_path):
    """Through the encoder, pitch is offset in log: the knob at 2 × its default plays the
    input an octave up on every note (an offset in Hz would be a different interval on each)."""
    card = load_card(MODELS / "morph.fp32.onnx")
    out = tmp_path / "up.wav"
    cli("render", "morph", "--input", CLIP, "-o", out, "--format", "FLOAT_LE",
        "--set", f"pitch={2 * card.control('pitch').default}", check=0)
    y, _ = read_wav(out)
    y = y[:, 0]
    lat = load_card(ENC).latency_samples
    for on, off, note in NOTES:
        a, b = int((on + 0.15) * SR) + lat, int((off - 0.05) * SR) + lat
        want = 2 * 440 * 2 ** ((note - 69) / 12)
        got = f0_of(y[a:b])
        assert cents(got, want) < 50, f"note {note}: {got:.1f} Hz, an octave up is {want:.1f} Hz"


def test_dry_wet_mixes_in_the_input_delayed_by_the_latency(cli, tmp_path):
    outs = {}
    for wet in ("1", "0.7"):
        outs[wet] = tmp_path / f"w{wet}.wav"
        cli("render", "morph", "--input", CLIP, "-o", outs[wet], "--format", "FLOAT_LE", "--set", f"dry_wet={wet}",
            check=0)
    full, part = (read_wav(outs[k])[0][:, 0] for k in ("1", "0.7"))
    x, _ = read_wav(CLIP)
    lat = load_card(ENC).latency_samples
    dry = (part - 0.7 * full)[1024:len(x[:, 0]) + lat]  # 0.3 × the input, a latency late (after the first ramp)
    ref = x[1024 - lat:len(x[:, 0]), 0]
    n = min(len(dry), len(ref))
    assert np.corrcoef(dry[:n], ref[:n])[0, 1] > 0.99
    assert abs(np.std(dry[:n]) / np.std(ref[:n]) - 0.3) < 0.05


def test_int8_against_fp32_at_the_default_knobs():
    card = load_card(FP32)
    c = defaults(card, int(2.0 * SR / 512))
    a, b = play(FP32, c), play(INT8, c)
    snr = 10 * np.log10(np.sum(a.astype(np.float64) ** 2) / np.sum((a - b).astype(np.float64) ** 2))
    assert snr >= 30.0, f"int8 against fp32: {snr:.1f} dB"


def snr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return 10 * np.log10(np.sum(a**2) / np.sum((a - b) ** 2))


def test_int8_against_fp32_at_20_random_knob_positions():
    """The issue's 20 random knob positions, drawn as scripts/models/morph_export.py int8_checks draws them
    (seeds 100..119: every control uniform over its range, then loudness at a level that sounds), each held
    3 s from zero state: int8 within 30 dB of fp32 at every one, not only on average."""
    card = load_card(FP32)
    n = int(3.0 * SR / 512)
    rts = [Runtime(FP32), Runtime(INT8)]
    got = []
    for seed in range(100, 120):
        rng = np.random.default_rng(seed)
        v = np.array([[c.min + (c.max - c.min) * rng.uniform()] for c in card.controls], np.float32)
        v[1] = rng.uniform(-45.0, card.control("loudness").max)
        outs = []
        for rt in rts:
            rt.reset()
            outs.append(rt.render(v[None].repeat(n, 0)))
        got.append(snr(*outs))
    assert np.isfinite(got).all()
    assert min(got) >= 30.0, f"int8 against fp32 at the 20 knob positions: {np.round(got, 1).tolist()}"


def test_int8_against_fp32_on_the_held_out_clip_through_the_encoder():
    """The clip (a program the voice never trained on) through the encoder, then each decoder."""
    x, _ = read_wav(CLIP)
    x = np.concatenate([x[:, 0], np.zeros(512, np.float32)])
    enc = Runtime(ENC)
    lat = []
    for j in range(len(x) // 512):
        enc.audio_in[:] = x[j * 512:(j + 1) * 512]
        enc.step()
        lat.append(enc.latent[:, 0].copy())
    ctl = np.array(lat, np.float32)[:, :, None]
    a, b = (Runtime(p).render(ctl) for p in (FP32, INT8))
    assert np.abs(a).max() > 1e-3
    assert snr(a, b) >= 30.0
