#!/usr/bin/env bash
# Build the RAVE venv (.venv-rave): acids-rave beside torch 2.13.0 (CPU), plus what the
# pi-synth converter needs (onnx, onnxruntime, tqdm) and pi-synth itself (editable).
# Idempotent: a finished venv is marked with .venv-rave/.pi-synth-rave-ok and reused.
#
#   scripts/rave/make-venv.sh            build or reuse /work/main/.venv-rave (next to the repo)
#   RAVE_VENV=/some/dir scripts/rave/make-venv.sh
#
# Why it looks like this (measured 2026-11):
# - torch is pinned to 2.13.0: any other version makes pip pull multi-GB CUDA wheels.
# - acids-rave, nn-tilde and cached-conv go in with --no-deps (nn-tilde pins torch==2.5).
# - `import rave` imports torchaudio; torchaudio 2.11.0 goes in with --no-deps and its
#   compiled libs (torchaudio/lib/*.so, which want CUDA) are removed: it then loads as
#   pure Python, which the export path is fine with.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${RAVE_VENV:-$REPO/.venv-rave}"
MARK="$VENV/.pi-synth-rave-ok"
STAMP="rave-venv v3"

if [[ -f "$MARK" && "$(cat "$MARK")" == "$STAMP" ]]; then
    # still make sure pi-synth is the editable checkout here (cheap)
    "$VENV/bin/python" -c "import pi_synth, rave" 2>/dev/null && { echo "rave venv: ready ($VENV)"; exit 0; }
fi

PY="${PYTHON:-python3}"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
quiet() { grep -v -e "^WARNING: Location" -e "^$" || true; }

echo "rave venv: installing torch 2.13.0 (CPU) and RAVE's dependencies into $VENV"
"${PIP[@]}" --upgrade pip 2>&1 | quiet
"${PIP[@]}" "torch==2.13.0" 2>&1 | quiet
"${PIP[@]}" "torch==2.13.0" "numpy==1.26.4" "scipy==1.10.0" "setuptools<81" \
    "pytorch-lightning==1.9.0" torchmetrics gin-config einops librosa lmdb GPUtil Flask udls \
    absl-py onnx onnxruntime tqdm pytest mido pyserial gpiozero 2>&1 | quiet
"${PIP[@]}" --no-deps "acids-rave==2.3.1" "nn-tilde==1.6.0" "cached-conv==2.5.0" "torchaudio==2.11.0" 2>&1 | quiet
# torchaudio's compiled extensions need CUDA libraries: drop them, keep the Python.
TA_DIR="$("$VENV/bin/python" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("torchaudio")
print(os.path.dirname(spec.origin) if spec and spec.origin else "")
PY
)"
if [[ -n "$TA_DIR" && -d "$TA_DIR/lib" ]]; then
    rm -f "$TA_DIR"/lib/*.so
fi
# pi-synth itself, editable, without touching the pinned dependencies (its pure-Python
# runtime dependencies are installed above, so render/info work here too)
"${PIP[@]}" --no-deps -e "$REPO" 2>&1 | quiet

"$VENV/bin/python" - <<'PY'
import torch, rave, cached_conv, onnx, onnxruntime, pi_synth  # noqa: F401
assert torch.__version__.startswith("2.13.0"), torch.__version__
print(f"rave venv: torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}")
PY
echo "$STAMP" > "$MARK"
echo "rave venv: ready ($VENV)"
