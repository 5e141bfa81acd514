"""Which precision of a voice plays here: int8 or fp32, measured on this machine.

A shipped voice comes as ``NAME.int8.onnx`` beside ``NAME.fp32.onnx``. Whether int8 is
the faster one depends on the model and the CPU — how much of its time int8 kernels can
take over, and what the quantize and dequantize steps around them cost: on the x86
machine the benchmarks run on, the shipped flute's int8 file renders at ~0.8× the
speed of fp32 (its time is mostly synthesis, which stays float) and the morph voice's at
~1.2× (its synthesis stays float too; ``benchmarks/``); on a Pi it is whatever its NEON kernels make of them (``pi-synth
bench NAME`` times both there). fp32 is the reference (int8 costs its 30–36 dB
SNR), so ``[model] precision = "auto"`` plays fp32 unless int8 renders a block at least
``1 / INT8_MARGIN`` times as fast here, well past the noise of a short measurement.

The comparison (:func:`measure`: alternating rounds until a 99 % confidence interval of
the speed ratio lies wholly on one side of the margin, at most a few seconds, fp32 when it
never does) is made once for a pair of files (by size and modification time), CPU,
onnxruntime version and thread count, and kept in the cache folder (``precision.json``),
so it costs the first start only (~0.2–0.5 s here).
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
CONFIDENCE = 0.99  # of the interval that must lie wholly on one side of the margin
MIN_ROUNDS = 8  # the fewest rounds before a decision (an interval at 99 % needs 8)
ROUND_S = 0.01  # seconds of blocks per file per round (at least 8 blocks)
BUDGET_S = 3.0  # more rounds while the interval straddles the margin, up to this long
PRECISIONS = ("auto", "int8", "fp32")


def choose(int8: Path, fp32: Path, *, threads: int = 1, cache_dir: str | os.PathLike | None = None) -> Path:
    """The file of the pair that should play on this machine (see the module doc)."""
    from pi_synth.model.runtime import default_cache_dir

    cache = Path(cache_dir or default_cache_dir()) / "precision.json"
    key = _key(int8, fp32, threads)
    known = _read(cache).get(key)
    if isinstance(known, dict) and known.get("choice") in ("int8", "fp32"):
        return int8 if known["choice"] == "int8" else fp32
    from pi_synth.service.realtime import release_heap

    try:
        m = measure(int8, fp32, threads=threads)
    except ModelError as e:  # one of the two does not load: the other plays, nothing kept
        other = fp32 if getattr(e, "precision", "int8") == "int8" else int8
        log.warning("%s; playing %s", e, other.name)
        return other
    finally:  # the two sessions measured are gone: their heap back to the system (first boot's RSS)
        release_heap()
    pick = int8 if m["choice"] == "int8" else fp32
    log.info("%s: playing %s — int8 renders a block at %.2f× the speed of fp32 on this machine%s "
             "(measured once, kept in %s; [model] precision = \"int8\" or \"fp32\" overrides)",
             int8.name.split(".")[0], pick.name, m["int8_speedup"],
             "" if m.get("decided", True) else ", within the noise: the reference plays", cache)
    _write(cache, key, m)
    return pick


def median_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median of ``values`` (order
    statistics, the binomial rule); None while there are too few values for it."""
    x = sorted(values)
    n = len(x)
    alpha = 1.0 - confidence
    j, cdf, term = 0, 0.0, 0.5 ** n  # P(Bin(n, 1/2) ≤ k), summed term by term
    for k in range(n):
        cdf += term
        if cdf > alpha / 2:
            break
        j = k + 1
        term *= (n - k) / (k + 1)
    if j == 0:
        return None
    return x[j - 1], x[n - j]


def measure(int8: Path, fp32: Path, *, threads: int = 1, budget_s: float = BUDGET_S,
            round_s: float = ROUND_S, min_rounds: int = MIN_ROUNDS) -> dict:
    """Which file renders faster here, decided only when the evidence is clear.

    The two files run in alternating rounds (int8 first, then fp32 first, …), each side
    at least ``round_s`` of blocks (≥ 8), after the runtime's warm-up; each round gives the
    ratio of the two medians, int8 over fp32. After ``min_rounds``, a confidence interval
    for the median ratio (:func:`median_interval`) decides: int8 if all of it lies below
    :data:`INT8_MARGIN`, fp32 if all of it lies above; within the noise, more rounds, up to
    ``budget_s`` — and if still undecided, fp32 (the reference), said as a tie. A slow
    spell of the machine hits one round, not the decision; two identical files can only
    come out as int8 if every round of a long run says int8 is 10 % faster.
    A file that does not load raises its ModelError, with ``precision`` set."""
    import numpy as np

    from pi_synth.model.runtime import Runtime

    rts = {}
    for k, path in (("int8", int8), ("fp32", fp32)):
        try:
            rts[k] = Runtime(path, threads=threads, warmup_blocks=8)
        except ModelError as e:
            e.precision = k
            raise
    perf = time.perf_counter
    block_s = {k: max(rt.warmup_rtf or 0.0, 1e-6) * rt.card.block_size / rt.card.sample_rate
               for k, rt in rts.items()}
    n_blocks = {k: max(8, min(4096, int(round_s / s))) for k, s in block_s.items()}
    ratios: list[float] = []
    med = {"int8": [], "fp32": []}
    t_end = perf() + budget_s
    choice, interval = None, None
    while choice is None:
        order = ("int8", "fp32") if len(ratios) % 2 == 0 else ("fp32", "int8")
        m = {}
        for k in order:
            rt, n = rts[k], n_blocks[k]
            t = np.empty(n)
            for i in range(n):
                t0 = perf()
                rt.step()
                t[i] = perf() - t0
            m[k] = float(np.median(t))
            med[k].append(m[k])
        ratios.append(m["int8"] / m["fp32"])
        if len(ratios) < min_rounds:
            continue
        interval = median_interval(ratios)
        if interval is not None and interval[1] < INT8_MARGIN:
            choice = "int8"
        elif interval is not None and interval[0] >= INT8_MARGIN:
            choice = "fp32"
        elif perf() > t_end:
            choice = "tie"
    ratio = float(np.median(ratios))
    return {"choice": "int8" if choice == "int8" else "fp32", "decided": choice != "tie",
            "int8_ms": float(np.median(med["int8"])) * 1e3, "fp32_ms": float(np.median(med["fp32"])) * 1e3,
            "int8_speedup": 1.0 / ratio, "rounds": len(ratios),
            "ratio_interval": [float(v) for v in interval] if interval else None,
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
