#!/usr/bin/env python3
"""Write src/pi_synth/data/demo.mid: the short phrase the quickstart plays.

A two-bar-phrase melody in the flute's middle register (D5–D6), with legato
(overlapping) notes and a few velocities, so a note voice shows pitch, legato and
dynamics. Deterministic: rerunning it writes the same bytes.
"""

from pathlib import Path

import mido

OUT = Path(__file__).resolve().parent.parent / "src" / "pi_synth" / "data" / "demo.mid"
# (note, beats, velocity, legato: overlap into the next note)
PHRASE = [
    (74, 1, 90, False), (76, 0.5, 80, True), (78, 0.5, 85, True), (79, 1, 100, False),
    (81, 1.5, 110, True), (79, 0.5, 80, False), (78, 1, 85, False), (76, 1, 75, True),
    (74, 2, 95, False), (0, 0.5, 0, False),
    (81, 0.5, 90, True), (83, 0.5, 95, True), (85, 0.5, 100, True), (86, 2.5, 115, False),
    (85, 0.5, 80, True), (83, 0.5, 80, True), (81, 1, 90, False), (78, 1, 85, True), (74, 3, 100, False),
]


def main() -> None:
    tpb = 480
    mid = mido.MidiFile(ticks_per_beat=tpb)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(96), time=0))
    # no program change: pi-synth maps program changes to its installed models
    pending_off = None  # (note, ticks late) for legato overlaps
    for note, beats, vel, legato in PHRASE:
        ticks = int(beats * tpb)
        if note == 0:  # rest
            if pending_off is not None:
                tr.append(mido.Message("note_off", note=pending_off, velocity=0, time=0))
                pending_off = None
            tr.append(mido.Message("note_on", note=0, velocity=0, time=ticks))
            continue
        tr.append(mido.Message("note_on", note=note, velocity=vel, time=0))
        if pending_off is not None:
            tr.append(mido.Message("note_off", note=pending_off, velocity=0, time=10))
            ticks -= 10
            pending_off = None
        if legato:
            tr.append(mido.MetaMessage("marker", text="", time=ticks))  # note stays on
            pending_off = note
        else:
            tr.append(mido.Message("note_off", note=note, velocity=0, time=ticks - 40))
            tr.append(mido.MetaMessage("marker", text="", time=40))
    if pending_off is not None:
        tr.append(mido.Message("note_off", note=pending_off, velocity=0, time=0))
    tr.append(mido.MetaMessage("end_of_track", time=0))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    mid.save(OUT)
    print(f"wrote {OUT} ({mid.length:.1f} s)")


if __name__ == "__main__":
    main()
