#!/usr/bin/env bash
# Make the recorded test inputs in tests/data/ from real sources (see tests/data/README.md):
#   voice.wav — a sentence spoken by espeak-ng
#   flute.wav — the demo phrase's first bar played by FluidSynth on FluidR3_GM's flute
# both 48 kHz mono 16-bit, a few seconds. Build-time tools only (espeak-ng, fluidsynth,
# fluid-soundfont-gm, sox): the files are committed, so the tests never need them.
# Deterministic for a given version of each tool (recorded in the README).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$REPO/tests/data"
SF2="${SF2:-/usr/share/sounds/sf2/FluidR3_GM.sf2}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"

# the voice: espeak-ng writes 22050 Hz mono; sox brings it to 48 kHz, -3 dBFS peak
espeak-ng -v en -s 150 -w "$TMP/voice.wav" "Play your voice through the synthesizer, one block at a time."
sox -D "$TMP/voice.wav" -r 48000 -c 1 -b 16 "$OUT/voice.wav" norm -3 trim 0 3.5

# the flute: a short phrase as a MIDI file (program 73, flute), rendered by FluidSynth
"$PY" - "$TMP/flute.mid" <<'PY'
import sys
import mido
mid = mido.MidiFile(ticks_per_beat=480)
tr = mido.MidiTrack()
mid.tracks.append(tr)
tr.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100), time=0))
tr.append(mido.Message("program_change", program=73, time=0))
for note, beats, vel in [(74, 1, 90), (76, 0.5, 80), (78, 0.5, 85), (79, 1, 100), (81, 1.5, 110), (79, 0.5, 80)]:
    tr.append(mido.Message("note_on", note=note, velocity=vel, time=0))
    tr.append(mido.Message("note_off", note=note, velocity=0, time=int(beats * 480)))
mid.save(sys.argv[1])
PY
fluidsynth -ni -g 0.8 -r 48000 -F "$TMP/flute-st.wav" "$SF2" "$TMP/flute.mid" >/dev/null
sox -D "$TMP/flute-st.wav" -r 48000 -c 1 -b 16 "$OUT/flute.wav" remix - norm -3 trim 0 3.5
ls -l "$OUT"/voice.wav "$OUT"/flute.wav
