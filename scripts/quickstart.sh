#!/usr/bin/env bash
# The README's first command: install, then play the default model.
# With a sound card you hear the demo phrase; without one, through the desktop's sound
# server (PipeWire, PulseAudio or JACK) when one runs; with neither you get a WAV file
# and are told so.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
if aplay -l 2>/dev/null | grep -q '^card '; then
    echo "pi-synth: playing the demo phrase with the default model on the default sound card (Ctrl-C stops)"
    exec .venv/bin/pi-synth run --midi demo
elif .venv/bin/python -c "from pi_synth.audio.backends.desktop import running_servers as r; raise SystemExit(not r())"; then
    echo "pi-synth: no sound card, but a sound server runs: playing the demo phrase through it (Ctrl-C stops)"
    exec .venv/bin/pi-synth run --backend desktop --midi demo
else
    echo "pi-synth: no sound card and no sound server found: rendering the demo phrase to pi-synth-demo.wav instead"
    .venv/bin/pi-synth render default --midi demo -o pi-synth-demo.wav
    echo "pi-synth: listen to $(pwd)/pi-synth-demo.wav on any computer; 'pi-synth doctor' says how to listen here"
fi
