"""onnxruntime sessions, set up in one place: the player's, the benchmarks', the tools'.

Why these options (measured on the shipped voices, see ``runtime.py``): one intra-op
thread gives the steadiest block times (two gave a worse p99 on a small model);
spinning is off, or idle pool threads burn a core after each run; sequential
execution; full graph optimization.
"""

from __future__ import annotations

import os

from pi_synth.errors import ModelError

PROVIDERS = ["CPUExecutionProvider"]


def session_options(threads: int = 1, optimized_path: str | None = None, *, optimize: bool = True):
    """The session options every pi-synth session uses; ``optimized_path``: where
    onnxruntime writes the optimized graph (the runtime's cache)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return so


def open_session(path, threads: int = 1, *, options=None):
    """An onnxruntime session on the CPU for the model at ``path`` (or a model's bytes);
    a file onnxruntime refuses is a :class:`ModelError` in one line."""
    import onnxruntime as ort

    path = path if isinstance(path, bytes) else os.fspath(path)
    try:
        return ort.InferenceSession(path, options or session_options(threads), providers=PROVIDERS)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(path, bytes):
            path = "model"
        else:
            _missing_external_data(path)
        raise ModelError(
            f"{path}: onnxruntime cannot load this model ({msg}); "
            "re-export it or check it with 'pi-synth info'"
        ) from None


def _missing_external_data(path: str) -> None:
    """Raise the one line a model whose ``.onnx.data`` was left behind deserves."""
    from pathlib import Path

    from pi_synth.model.onnxrewrite import external_files, missing_data_message

    try:
        files = external_files(Path(path).read_bytes(), path)
    except (OSError, ModelError):
        return
    missing = [f for f in files if not (Path(path).parent / f).is_file()]
    if missing:
        raise ModelError(missing_data_message(path, missing)) from None
