#!/usr/bin/env bash
# Provision Raspberry Pi OS Lite (arm64, bookworm/trixie) for pi-synth, or a mounted image (--root).
#   sudo scripts/provision.sh [--hat hifiberry-dac|hifiberry-dacplus|iqaudio-dacplus|pisound|usb|none]
#                             [--no-onboard-audio] [--read-only] [--root DIR] [--skip-apt] [--dry-run]
# Idempotent: a second run prints "no changes". The work is done by provision.py (stdlib only);
# see its docstring or docs/raspberry-pi.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v python3 >/dev/null; then
    echo "provision: python3 is needed (sudo apt-get install -y python3)" >&2
    exit 2
fi
exec python3 "$here/provision.py" "$@"
