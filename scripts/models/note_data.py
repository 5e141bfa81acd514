"""Render the note-voice dataset (FluidR3 flute) and extract per-frame f0 and loudness.

Train and test sets are rendered from different seeds, so the held-out notes and phrases are never seen.
Usage: python scripts/models/note_data.py [--out work/note] [--program 73]
Writes {out}/train.npz and {out}/test.npz with audio (float32, 48 kHz mono), f0 (Hz) and loudness
(dB RMS) per 256-sample frame, where frame i describes the end of block i.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mido
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NOTE_LOUDNESS, SR, WORK, loudness_db, midi_from_events, render_midi, seed_everything, yin_f0  # noqa: E402

HOP = 256
LOW, HIGH = 57, 98  # A3..D7 around the flute's range (C4..C7)


def midi_hz(n):
    return 440.0 * 2 ** ((np.asarray(n, float) - 69) / 12)


def make_score(rng: np.random.Generator, n_single: int, n_phrases: int, program: int):
    """Single notes across pitch and velocity, then legato and detached phrases. Returns events + timeline."""
    ev = [(0.0, mido.Message("program_change", program=program, channel=0))]
    timeline = []  # (t_on, t_off, note)
    t = 0.2
    pitches = np.linspace(LOW, HIGH, n_single).round().astype(int)
    rng.shuffle(pitches)
    for p in pitches:
        vel = int(rng.integers(30, 128))
        dur = float(rng.uniform(0.25, 1.6))
        ev += [(t, mido.Message("note_on", note=int(p), velocity=vel)), (t + dur, mido.Message("note_off", note=int(p)))]
        timeline.append((t, t + dur, int(p)))
        t += dur + float(rng.uniform(0.35, 0.7))
    for k in range(n_phrases):
        legato = k % 3 != 2
        if legato:
            ev.append((t - 0.01, mido.Message("control_change", control=68, value=127)))
        p = int(rng.integers(LOW + 3, HIGH - 3))
        vel = int(rng.integers(40, 128))
        for _ in range(int(rng.integers(5, 11))):
            dur = float(rng.uniform(0.12, 0.6))
            vel = int(np.clip(vel + rng.integers(-20, 21), 30, 127))
            ev.append((t, mido.Message("note_on", note=p, velocity=vel)))
            if legato:
                ev.append((t + dur + 0.005, mido.Message("note_off", note=p)))
            else:
                ev.append((t + dur * 0.8, mido.Message("note_off", note=p)))
            timeline.append((t, t + dur if legato else t + dur * 0.8, p))
            t += dur
            p = int(np.clip(p + rng.choice([-7, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 7]), LOW, HIGH))
        if legato:
            ev.append((t + 0.02, mido.Message("control_change", control=68, value=0)))
        t += float(rng.uniform(0.4, 0.8))
    return ev, timeline, t + 0.6


def expected_pitch(timeline, n_frames):
    """Most recently started note at each frame (held through releases and silence)."""
    tf = (np.arange(n_frames) + 1) * HOP / SR
    exp = np.full(n_frames, midi_hz(timeline[0][2]))
    for t_on, _t_off, p in sorted(timeline):
        exp[tf >= t_on] = midi_hz(p)
    return exp


def build(seed: int, n_single: int, n_phrases: int, program: int, out: Path):
    rng = np.random.default_rng(seed)
    ev, timeline, dur = make_score(rng, n_single, n_phrases, program)
    mid = midi_from_events(ev)
    mid.save(out.with_suffix(".mid"))
    audio = render_midi(mid, seconds=dur)
    n_frames = len(audio) // HOP
    audio = audio[: n_frames * HOP]
    loud = loudness_db(audio, HOP, **NOTE_LOUDNESS)
    f0, per = yin_f0(audio, HOP, expected_pitch(timeline, n_frames))
    np.savez(out, audio=audio, f0=f0, loudness=loud, periodicity=per)
    return dur


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=WORK / "note")
    ap.add_argument("--program", type=int, default=73, help="GM program (0-based); 73 = Flute")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args(argv)
    seed_everything(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    sets = [("train", args.seed, 168, 60), ("test", args.seed + 1, 24, 9)]
    for name, seed, n_single, n_phr in tqdm(sets, desc="render+analyse"):
        dur = build(seed, n_single, n_phr, args.program, args.out / name)
        tqdm.write(f"{name}: {dur:.1f} s")


if __name__ == "__main__":
    main()
