#!/usr/bin/env bash
# Build (or reuse) the RAVE venv and the RAVE streaming exports used by the converter's tests and
# benchmarks, cached under work/rave-fixtures/ (gitignored). Idempotent; a few minutes on 1 core.
#   scripts/rave/make-fixtures.sh [NAME ...]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${RAVE_VENV:-$REPO/.venv-rave}"
bash "$REPO/scripts/rave/make-venv.sh"
OMP_NUM_THREADS=1 "$VENV/bin/python" "$REPO/scripts/rave/make_fixtures.py" \
    --out "${RAVE_FIXTURES:-$REPO/work/rave-fixtures}" "$@"
