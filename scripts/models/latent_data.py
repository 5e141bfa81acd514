"""Render the latent-voice dataset: sustained FluidR3 timbres (strings, choir, warm pad) as single notes and
phrases, monophonic, across pitch and velocity. Also extracts f0 and loudness (for the sawtooth baseline).

Usage: python scripts/models/latent_data.py [--out work/latent]
Writes {out}/train.npz and {out}/test.npz (audio float32 48 kHz mono, f0 and loudness per 1024-sample block).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mido
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SR, WORK, loudness_db, midi_from_events, render_midi, seed_everything, yin_f0  # noqa: E402

HOP = 1024
PROGRAMS = {48: "String Ensemble 1", 52: "Choir Aahs", 89: "Pad 2 (warm)"}
LOW, HIGH = 45, 76


def midi_hz(n):
    return 440.0 * 2 ** ((np.asarray(n, float) - 69) / 12)


def make_score(rng, n_notes_per_prog, n_phrases_per_prog):
    ev, timeline = [], []
    t = 0.2
    for ch, prog in enumerate(PROGRAMS):
        ev.append((0.0, mido.Message("program_change", program=prog, channel=ch)))
    for ch, _prog in enumerate(PROGRAMS):
        for p in rng.integers(LOW, HIGH + 1, n_notes_per_prog):
            vel = int(rng.integers(40, 128))
            dur = float(rng.uniform(0.5, 2.5))
            ev += [(t, mido.Message("note_on", channel=ch, note=int(p), velocity=vel)),
                   (t + dur, mido.Message("note_off", channel=ch, note=int(p)))]
            timeline.append((t, int(p)))
            t += dur + float(rng.uniform(0.6, 1.2))
        for _ in range(n_phrases_per_prog):
            p = int(rng.integers(LOW + 3, HIGH - 3))
            vel = int(rng.integers(50, 128))
            for _ in range(int(rng.integers(4, 8))):
                dur = float(rng.uniform(0.3, 0.9))
                vel = int(np.clip(vel + rng.integers(-15, 16), 40, 127))
                ev += [(t, mido.Message("note_on", channel=ch, note=p, velocity=vel)),
                       (t + dur, mido.Message("note_off", channel=ch, note=p))]
                timeline.append((t, p))
                t += dur
                p = int(np.clip(p + rng.choice([-5, -3, -2, 2, 3, 4, 5]), LOW, HIGH))
            t += float(rng.uniform(0.8, 1.4))
    return ev, timeline, t + 1.0


def build(seed, n_notes, n_phrases, out: Path):
    rng = np.random.default_rng(seed)
    ev, timeline, dur = make_score(rng, n_notes, n_phrases)
    mid = midi_from_events(ev)
    mid.save(out.with_suffix(".mid"))
    audio = render_midi(mid, seconds=dur)
    n_frames = len(audio) // HOP
    audio = audio[: n_frames * HOP]
    tf = (np.arange(n_frames) + 1) * HOP / SR
    exp = np.full(n_frames, midi_hz(timeline[0][1]))
    for t_on, p in sorted(timeline):
        exp[tf >= t_on] = midi_hz(p)
    f0, _ = yin_f0(audio, HOP, exp)
    np.savez(out, audio=audio, f0=f0, loudness=loudness_db(audio, HOP))
    return dur


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=WORK / "latent")
    ap.add_argument("--seed", type=int, default=4321)
    args = ap.parse_args(argv)
    seed_everything(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, seed, n, ph in tqdm([("train", args.seed, 40, 12), ("test", args.seed + 1, 6, 2)], desc="render+analyse"):
        tqdm.write(f"{name}: {build(seed, n, ph, args.out / name):.1f} s")


if __name__ == "__main__":
    main()
