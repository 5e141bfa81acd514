#!/usr/bin/env bash
# The README's first command: install, then play the default model.
# With a sound card you hear the demo phrase; without one you get a WAV file and are told so.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
DEMO=src/pi_synth/data/demo.mid
if aplay -l 2>/dev/null | grep -q '^card '; then
    echo "pi-synth: playing the default model on the default sound card (Ctrl-C stops)"
    exec .venv/bin/pi-synth run --midi "$DEMO" --seconds 14
else
    echo "pi-synth: no sound card found (aplay -l lists none): rendering to pi-synth-demo.wav instead"
    .venv/bin/pi-synth render default --midi "$DEMO" -o pi-synth-demo.wav
    echo "pi-synth: listen to $(pwd)/pi-synth-demo.wav on any computer"
fi
