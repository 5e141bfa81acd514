#!/usr/bin/env bash
# RAVE exports made by an older RAVE (2.1.21 with cached_conv 2.4.1, what most models shared in
# 2023 were exported with), for the converter's tests: the same configs and random weights as
# make-fixtures.sh, exported by that version's own `rave export` (which writes into the run
# folder). The old packages go beside the RAVE venv (pip --target, --no-deps: the venv's torch
# 2.13 runs them) and shadow the new ones only for this build. Idempotent.
#   scripts/rave/make-old-fixtures.sh [NAME ...]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${RAVE_VENV:-$REPO/.venv-rave}"
OLD_RAVE="${OLD_RAVE:-2.1.21}"
OLD_CC="${OLD_CC:-2.4.1}"
bash "$REPO/scripts/rave/make-venv.sh"
LIB="$VENV/rave-$OLD_RAVE"
if [[ ! -f "$LIB/.ok" ]]; then
    rm -rf "$LIB"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --target "$LIB" \
        "acids-rave==$OLD_RAVE" "cached-conv==$OLD_CC" 2>&1 | grep -v -e "^WARNING: Location" -e "^$" || true
    PYTHONPATH="$LIB" "$VENV/bin/python" -c "import importlib.metadata as m, sys; \
v = m.version('acids-rave'); sys.exit(v != '$OLD_RAVE' and f'acids-rave {v} instead of $OLD_RAVE')"
    touch "$LIB/.ok"
fi
[[ $# -gt 0 ]] || set -- raspberry-l128 raspberry-l8 v2-l128 v1-noise-l8
PYTHONPATH="$LIB" OMP_NUM_THREADS=1 "$VENV/bin/python" "$REPO/scripts/rave/make_fixtures.py" \
    --out "${RAVE_FIXTURES:-$REPO/work/rave-fixtures}/rave-$OLD_RAVE" "$@"
