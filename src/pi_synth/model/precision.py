"""Which precision of a voice plays here: int8 or fp32, measured on this machine.

A shipped voice comes as ``NAME.int8.onnx`` beside ``NAME.fp32.onnx``. Whether int8 is
the faster one depends on the model and the CPU — how much of its time int8 kernels can
take over, and what the quantize and dequantize steps around them cost: on the x86
machine the benchmarks run on, the shipped flute's int8 file renders at ~0.8× the
speed of fp32 (its time is mostly synthesis, which stays float) and the pads' at ~2×
(``benchmarks/``); on a Pi it is whatever its NEON kernels make of them (``pi-synth
bench NAME`` times both there). fp32 is the reference (int8 costs its 30–36 dB
SNR), so ``[model] precision = "auto"`` plays fp32 unless int8 renders a block at least
``1 / INT8_MARGIN`` times as fast here, well past the noise of a short measurement.

The comparison — a few dozen blocks of each, interleaved, after warm-up — is made once
for a pair of files (by size and modification time), CPU, onnxruntime version and thread
count, and kept in the cache folder (``precision.json``), so it costs the first start
only (~0.3 s here).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

from pi_synth.errors import ModelError

log = logging.getLogger(__name__)

INT8_MARGIN = 0.9  # int8 plays when its block time is under this share of fp32's
PRECISIONS = ("auto", "int8", "fp32")


def choose(int8: Path, fp32: Path, *, threads: int = 1, cache_dir: str | os.PathLike | None = None) -> Path:
    """The file of the pair that should play on this machine (see the module doc)."""
    from pi_synth.model.runtime import default_cache_dir

    cache = Path(cache_dir or default_cache_dir()) / "precision.json"
    key = _key(int8, fp32, threads)
    known = _read(cache).get(key)
    if isinstance(known, dict) and known.get("choice") in ("int8", "fp32"):
        return int8 if known["choice"] == "int8" else fp32
    try:
        m = measure(int8, fp32, threads=threads)
    except ModelError as e:  # one of the two does not load: the other plays, nothing kept
        other = fp32 if getattr(e, "precision", "int8") == "int8" else int8
        log.warning("%s; playing %s", e, other.name)
        return other
    pick = int8 if m["choice"] == "int8" else fp32
    log.info("%s: playing %s — int8 renders a block at %.2f× the speed of fp32 on this machine "
             "(measured once, kept in %s; [model] precision = \"int8\" or \"fp32\" overrides)",
             int8.name.split(".")[0], pick.name, m["int8_speedup"], cache)
    _write(cache, key, m)
    return pick


def measure(int8: Path, fp32: Path, *, threads: int = 1, rounds: int = 5, blocks: int = 8) -> dict:
    """Block time of each file, interleaved: ``rounds`` × ``blocks`` blocks each, after the
    runtime's warm-up; per file the fastest round's median (another process only ever
    adds time). A file that does not load raises its ModelError, with ``precision`` set."""
    import numpy as np

    from pi_synth.model.runtime import Runtime

    rts = {}
    for k, path in (("int8", int8), ("fp32", fp32)):
        try:
            rts[k] = Runtime(path, threads=threads, warmup_blocks=8)
        except ModelError as e:
            e.precision = k
            raise
    best = {k: float("inf") for k in rts}
    perf = time.perf_counter
    for _ in range(rounds):
        for k, rt in rts.items():
            t = np.empty(blocks)
            for i in range(blocks):
                t0 = perf()
                rt.step()
                t[i] = perf() - t0
            best[k] = min(best[k], float(np.median(t)))
    speedup = best["fp32"] / best["int8"]
    return {"choice": "int8" if best["int8"] < INT8_MARGIN * best["fp32"] else "fp32",
            "int8_ms": best["int8"] * 1e3, "fp32_ms": best["fp32"] * 1e3, "int8_speedup": speedup,
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}


def cpu_model() -> str:
    """The CPU's (or the Pi's) model name: a Pi 4 and a Pi 5 are both aarch64, and the SD
    card may move between them. Also what the quantize report names."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            name, _, value = line.partition(":")
            # case matters: x86 has a numeric "model" line before "model name"; a Pi has "Model"
            if name.strip() in ("Model", "model name", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _key(int8: Path, fp32: Path, threads: int) -> str:
    import onnxruntime as ort

    def ident(p: Path) -> str:
        st = p.stat()
        return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"

    return f"{ident(int8)}|{ident(fp32)}|{cpu_model()}|{platform.machine()}|ort{ort.__version__}|threads{threads}"


def _read(cache: Path) -> dict:
    try:
        data = json.loads(cache.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(cache: Path, key: str, value: dict) -> None:
    """Atomically (a torn file would only cost a new measurement, but still)."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        data = _read(cache)
        data[key] = value
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, cache)
    except OSError as e:
        log.info("%s not updated (%s): it will be measured again next start", cache.name, e)
