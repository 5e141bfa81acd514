#!/usr/bin/env bash
# Rebuild the shipped models from nothing but Debian's fluidsynth + fluid-soundfont-gm:
# render data -> train -> export (streaming ONNX + card) -> int8 -> spectrograms -> MODEL_CARD.md.
# The note voice's export plays N voices per call (a dynamic `voices` dimension) and has timbre
# controls; its card takes the voice-count curve from benchmarks/bench_voices.py, run here too.
#
#   scripts/models/build-all.sh [all|note|latent|docs]
#
# Environment: PY (python of a venv with the training packages; created as .venv-train if missing),
# THREADS (torch threads, default 2: a 2-core machine's both cores. torch's threads spin while
# they wait, so any other busy process slows a 2-thread run several-fold: measured here on
# 2026-12-05 under another job's load, a morph training step took 2.5 s with 2 threads and
# 0.43 s with 1: use THREADS=1 on a shared machine), NOTE_STEPS (training steps; the flute: 6000,
# since 4000 on one thread ended 0.4% behind the held-out spectral distance of the flute it
# replaced), LATENT_MINUTES (the morph voice's training budget in wall-clock minutes, default 46:
# its learning-rate schedule runs on the time spent, so a busier machine gets fewer steps. The rest
# of the latent target took ~6 min with 14 training programs (data 0.6, export 5.1: 47.7 min with 42
# of training); 20 programs (morph_data.EXTRA_TRAIN_PROGRAMS) render ~40% more training audio, so
# 46 min keeps the whole target, data to card, under an hour).
# Generated data goes to work/ (gitignored); models to models/, spectrograms to docs/models/.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PY:-.venv-train/bin/python}
THREADS=${THREADS:-2}
NOTE_STEPS=${NOTE_STEPS:-6000}
LATENT_MINUTES=${LATENT_MINUTES:-46}
what=${1:-all}

if [ ! -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || ! command -v fluidsynth >/dev/null; then
    echo "need fluidsynth and FluidR3_GM.sf2: sudo apt-get install fluidsynth fluid-soundfont-gm" >&2
    exit 2
fi
if [ ! -x "$PY" ]; then
    python3 -m venv .venv-train
    # torch is pinned: any other version resolves to a multi-GB CUDA build
    .venv-train/bin/pip install torch==2.13.0 onnx onnxruntime numpy scipy tqdm mido matplotlib
    PY=.venv-train/bin/python
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"

note() {
    "$PY" scripts/models/note_data.py
    "$PY" scripts/models/note_train.py --threads "$THREADS" --steps "$NOTE_STEPS"
    "$PY" scripts/models/note_export.py --name flute
}
latent() {  # the latent voice "morph" (harmonic + noise decoder) and its streaming encoder
    "$PY" scripts/models/morph_data.py
    "$PY" scripts/models/morph_train.py --threads "$THREADS" --minutes "$LATENT_MINUTES"
    "$PY" scripts/models/morph_export.py --name morph
}
voices() {  # the flute's block time at 1..16 voices, for its card (benchmarks/results/ is not committed)
    "$PY" benchmarks/bench_voices.py --out benchmarks/results/voices
}
docs() {
    "$PY" scripts/models/make_docs.py
    voices
    "$PY" benchmarks/bench_quantize.py --json benchmarks/results/bench_quantize.json  # repeat timing for the cards
    "$PY" scripts/models/model_card.py
}

case "$what" in
    note) note; "$PY" scripts/models/make_docs.py --only note; voices; "$PY" scripts/models/model_card.py --only note ;;
    latent) latent; "$PY" scripts/models/make_docs.py --only latent; "$PY" scripts/models/model_card.py --only latent ;;
    docs) docs ;;
    all) note; latent; docs ;;
    *) echo "usage: $0 [all|note|latent|docs]" >&2; exit 2 ;;
esac
