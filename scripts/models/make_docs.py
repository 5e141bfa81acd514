"""Spectrograms for docs/models/: a held-out MIDI phrase rendered by FluidSynth next to the shipped models.

Usage: python scripts/models/make_docs.py [--models models] [--out docs/models]
Needs the rendered data in work/ (note_data.py, morph_data.py) and matplotlib.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "src"))
from common import ROOT, SR, WORK  # noqa: E402
from note_data import make_score  # noqa: E402

from pi_synth.tools.quantize import _session, read_card, render  # noqa: E402

VEL_DB = (-16.0, 40.0)  # FluidR3 flute sustain level: loudness_db ~= -16 + 40*log10(velocity/127)


def with_defaults(card, pitch_loud: np.ndarray, **knobs) -> np.ndarray:
    """[n, 2, 1] pitch and loudness -> [n, n_controls, 1], every other control at ``knobs`` or its default."""
    out = np.empty((len(pitch_loud), len(card["controls"]), 1), np.float32)
    for i, c in enumerate(card["controls"]):
        out[:, i] = knobs.get(c["name"], c["default"])
    out[:, :2] = pitch_loud
    return out


def midi_controls(timeline_vel, t0, t1, block, sr=SR, attack=0.03, release=0.12):
    """Drive a note voice straight from MIDI notes: note -> Hz, velocity -> dB, linear attack/release in dB."""
    n = int((t1 - t0) * sr / block)
    t = t0 + (np.arange(n) + 1) * block / sr
    pitch = np.full(n, 440.0)
    loud = np.full(n, -80.0)
    for on, off, note, vel in timeline_vel:
        hz = 440 * 2 ** ((note - 69) / 12)
        level = VEL_DB[0] + VEL_DB[1] * np.log10(vel / 127)
        m = (t >= on) & (t < off)
        pitch[t >= on] = hz
        loud[m] = np.maximum(loud[m], -80 + (level + 80) * np.minimum(1, (t[m] - on) / attack))
        r = (t >= off) & (t < off + release)
        loud[r] = np.maximum(loud[r], level - (level + 80) * (t[r] - off) / release)
    return np.stack([pitch, loud], 1)[:, :, None].astype(np.float32)


def spec(ax, x, title, fmax=12000):
    ax.specgram(x + 1e-9, NFFT=2048, Fs=SR, noverlap=1536, cmap="magma", vmin=-130, vmax=-20, scale="dB")
    ax.set_ylim(0, fmax)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("Hz")


def note_figure(models: Path, out: Path, name="flute", seed=1234):
    d = np.load(WORK / "note" / "test.npz")
    ev, timeline, _ = make_score(np.random.default_rng(seed + 1), 24, 9, 73)
    vels = [m.velocity for _, m in sorted(ev, key=lambda e: e[0]) if m.type == "note_on"]
    tv = [(on, off, p, v) for (on, off, p), v in zip(timeline, vels)]
    ph = tv[24:32]  # the first held-out legato phrase
    t0, t1 = ph[0][0] - 0.1, ph[-1][1] + 0.4
    path = models / f"{name}.int8.onnx"
    card = read_card(onnx.load(str(path)))
    block = card["block_size"]
    a, b = int(t0 * SR) // block, int(t1 * SR) // block
    ref = d["audio"][a * block : b * block]
    # the reference's f0 carries the flute's own vibrato: none added; MIDI notes get the default vibrato
    resyn = render(_session(path), card, with_defaults(card, np.stack([d["f0"][a:b], d["loudness"][a:b]], 1)[:, :, None],
                                                       vibrato_depth=0.0))[0]
    midi = render(_session(path), card, with_defaults(card, midi_controls(ph, a * block / SR, b * block / SR, block)))[0]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    spec(axes[0], ref, "FluidSynth reference (FluidR3_GM flute), held-out legato phrase")
    spec(axes[1], resyn, f"{name}.int8.onnx driven by the reference's f0 and loudness (block by block)")
    spec(axes[2], midi, f"{name}.int8.onnx driven by the MIDI notes (note->Hz, loudness = -16 + 40 log10(vel/127) dB), "
                        "default knobs")
    axes[2].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(out / f"{name}-phrase.png", dpi=80)
    plt.close(fig)


def knobs_figure(models: Path, out: Path, name="flute", hz=587.33, db=-20.0, seconds=4.0):
    """A held D5 while each timbre control sweeps its range (the others at their defaults)."""
    path = models / f"{name}.int8.onnx"
    card = read_card(onnx.load(str(path)))
    block = card["block_size"]
    n = int(seconds * SR / block)
    timbre = card["controls"][2:]
    fig, axes = plt.subplots(len(timbre), 1, figsize=(9, 2.3 * len(timbre)), sharex=True)
    for ax, c in zip(axes, timbre):
        deeper = {"vibrato_depth": 30.0} if c["name"] == "vibrato_rate" else {}  # so the rate shows
        ctl = with_defaults(card, np.tile(np.array([[hz], [db]], np.float32), (n, 1, 1)), **deeper)
        ramp = np.clip((np.arange(n) * block / SR - 0.5) / (seconds - 1.0), 0, 1)  # after 0.5 s, min -> max
        ctl[:, card["controls"].index(c), 0] = c["min"] + (c["max"] - c["min"]) * ramp
        y = render(_session(path), card, ctl)[0]
        fmax = 3000 if c["name"].startswith("vibrato") else 16000
        spec(ax, y, f"{c['name']} {c['min']:g} → {c['max']:g} {c['unit']} (from 0.5 s; default {c['default']:g})"
                    + (" at vibrato_depth 30" if deeper else ""), fmax=fmax)
        if c["name"].startswith("vibrato"):
            ax.set_ylim(hz * 0.8, hz * 3.3)  # the first harmonics, where the wobble shows
    axes[-1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(out / f"{name}-knobs.png", dpi=80)
    plt.close(fig)


def morph_figure(models: Path, out: Path, name="morph"):
    """A held-out stretch (a held-out program, then a training program at held-out notes) played through
    the encoder and the int8 decoder block by block, beside the reference."""
    from morph_export import LATENCY, run_encoder

    data = WORK / "morph"
    d = np.load(data / "test.npz")
    dec, enc = models / f"{name}.int8.onnx", models / f"{name}.encoder.onnx"
    dcard, ecard = read_card(onnx.load(str(dec))), read_card(onnx.load(str(enc)))
    block = dcard["block_size"]
    split = int(np.argmax(d["part"] == 1)) * block
    pieces = [(split, split + 7 * SR), (0, 5 * SR)]  # 7 s of held-out programs, 5 s of held-out notes
    ref = np.concatenate([d["audio"][a:b] for a, b in pieces])
    x = np.concatenate([ref, np.zeros(LATENCY, np.float32)])
    lat = run_encoder(enc, ecard, x)
    y = render(_session(dec), dcard, lat[:, :, None])[0][LATENCY: LATENCY + len(ref)]
    fig, axes = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    spec(axes[0], ref, "FluidSynth reference, held out: programs never trained on (0-7 s), "
                       "then training programs at notes never trained on")
    spec(axes[1], y, f"{name}.encoder.onnx -> {name}.int8.onnx, block by block (the encoder's {LATENCY}-sample "
                     "latency taken out)")
    axes[1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(out / f"{name}-phrase.png", dpi=80)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "models")
    ap.add_argument("--only", choices=["note", "latent"])
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "note"):
        note_figure(args.models, args.out)
        knobs_figure(args.models, args.out)
    if args.only in (None, "latent"):
        morph_figure(args.models, args.out)


if __name__ == "__main__":
    main()
