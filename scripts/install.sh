#!/usr/bin/env bash
# Install pi-synth into ./.venv, with the system packages it needs.
#   scripts/install.sh          runtime only (what the Pi needs)
#   scripts/install.sh --dev    + what the tests need (jackd2, libasound2-plugins, pytest, ansible, …)
# Works on Debian 12 / Raspberry Pi OS (bookworm or later), as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then SUDO="sudo"; fi

PKGS=(python3 python3-venv python3-dev gcc libasound2-dev alsa-utils)
if [[ $DEV -eq 1 ]]; then
    # jackd2 + libasound2-plugins: real-time pacing without a sound card in the tests;
    # systemd: systemd-analyze verifies the service unit; debootstrap, fdisk, dosfstools,
    # mtools, e2fsprogs, xz-utils: the provisioning and image-builder tests;
    # qemu-user-static, gcc-aarch64-linux-gnu: our code on arm64, emulated (tests/test_arm64.py);
    # chromium + chromium-driver: the web page in a real browser (tests/test_web_browser.py);
    # openssh-client: Ansible reaches the fleet test's boxes over ssh (tests/test_fleet.py)
    PKGS+=(jackd2 libasound2-plugins systemd debootstrap fdisk dosfstools mtools e2fsprogs xz-utils
           qemu-user-static gcc-aarch64-linux-gnu chromium chromium-driver openssh-client)
fi
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "pi-synth: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    # jackd2 asks whether to enable realtime scheduling: answer for it.
    echo "jackd2 jackd/tweak_rt_limits boolean false" | $SUDO debconf-set-selections 2>/dev/null || true
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if [[ $DEV -eq 1 ]]; then
    .venv/bin/python -m pip install -q -e ".[dev,web,fleet]" 2>&1 | grep -v "^WARNING: Location" || true
else
    .venv/bin/python -m pip install -q -e . 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv/bin/pi-synth --version >/dev/null
echo "pi-synth: installed in $(pwd)/.venv ($(.venv/bin/pi-synth --version))"
