#!/usr/bin/env bash
# The README's second command: install what the tests need and run them.
# Extra arguments go to pytest, e.g.  scripts/test.sh -m "not slow"  (skips the slow tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --dev
exec .venv/bin/python -m pytest "$@"
