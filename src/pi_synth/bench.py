"""Real-time factor of a model on this machine: the harness behind ``pi-synth bench``
and ``benchmarks/``.

Blocks are timed one by one after warm-up, with controls moving through the card's
ranges (a model can be slower on some inputs). The same blocks are also run through
a bare ``session.run`` with the state carried by hand, so the wrapper's overhead is
a ratio measured in the same run, not a guess.
"""

from __future__ import annotations

import platform
import time

import numpy as np

from pi_synth.audio.runtime import Runtime, session_options


def control_sequence(card, blocks: int, seed: int = 0) -> np.ndarray:
    """Smoothly moving controls inside each control's range: [blocks, C, F]."""
    rng = np.random.default_rng(seed)
    c, f = len(card.controls), card.control_frames
    out = np.empty((blocks, c, f), np.float32)
    t = np.arange(blocks * f).reshape(blocks, f) / max(1, f)
    for i, ctl in enumerate(card.controls):
        phase = rng.uniform(0, 2 * np.pi)
        x = 0.5 + 0.45 * np.sin(2 * np.pi * t / rng.uniform(40, 400) + phase)
        out[:, i, :] = [[ctl.from_unit(v) for v in row] for row in x]
    return out


def _stats(times: np.ndarray, block_seconds: float) -> dict:
    ms = times * 1e3
    return {
        "block_ms_median": float(np.median(ms)),
        "block_ms_p99": float(np.percentile(ms, 99)),
        "block_ms_max": float(ms.max()),
        "rtf": float(np.median(times) / block_seconds),
        "rtf_p99": float(np.percentile(times, 99) / block_seconds),
    }


def bench_runtime(rt: Runtime, blocks: int = 500, warmup: int = 20, seed: int = 0) -> dict:
    card = rt.card
    ctl = control_sequence(card, blocks + warmup, seed)
    times = np.empty(blocks)
    cpu0 = time.process_time()
    for k in range(blocks + warmup):
        rt.controls[...] = ctl[k]
        t0 = time.perf_counter()
        rt.step()
        if k >= warmup:
            times[k - warmup] = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    bs = card.block_size / card.sample_rate
    out = _stats(times, bs)
    out["cpu_per_block_ms"] = cpu / (blocks + warmup) * 1e3
    return out


def bench_bare(rt: Runtime, blocks: int = 500, warmup: int = 20, seed: int = 0) -> dict:
    """Same blocks through plain ``session.run`` (allocating outputs each call)."""
    import onnxruntime as ort

    card = rt.card
    sess = ort.InferenceSession(rt.path, session_options(rt.threads), providers=["CPUExecutionProvider"])
    ctl = control_sequence(card, blocks + warmup, seed)
    state = {s_in: np.zeros(rt.specs[s_in][0], rt.specs[s_in][1]) for s_in, _ in card.state}
    out_names = [card.audio_output] + [s_out for _, s_out in card.state]
    times = np.empty(blocks)
    for k in range(blocks + warmup):
        feeds = {card.controls_input: ctl[k][None]}
        feeds.update(state)
        t0 = time.perf_counter()
        res = sess.run(out_names, feeds)
        if k >= warmup:
            times[k - warmup] = time.perf_counter() - t0
        for (s_in, _), v in zip(card.state, res[1:]):
            state[s_in] = v
    return _stats(times, card.block_size / card.sample_rate)


def bench_model(path, *, threads: int = 1, blocks: int = 500, bare: bool = True) -> dict:
    t0 = time.perf_counter()
    rt = Runtime(path, threads=threads, warmup_blocks=8)
    load_s = time.perf_counter() - t0
    card = rt.card
    res = {
        "model": card.name,
        "path": str(path),
        "machine": platform.machine(),
        "threads": threads,
        "blocks": blocks,
        "block_size": card.block_size,
        "sample_rate": card.sample_rate,
        "load_s": load_s,
    }
    res.update(bench_runtime(rt, blocks))
    if bare:
        b = bench_bare(rt, blocks)
        res["bare_block_ms_median"] = b["block_ms_median"]
        res["wrapper_overhead_ratio"] = res["block_ms_median"] / b["block_ms_median"]
    return res


def engine_cpu(path, *, blocks: int = 2000, device: str = "pisynth_null", period: int = 256,
               threads: int = 1) -> dict:
    """CPU time of the whole engine (both threads, guard, ring, ALSA writes) over
    ``blocks`` blocks, against the CPU time of the same number of bare
    ``Runtime.step()`` calls. ``device`` is an ALSA PCM that does not pace (the tests'
    ``null`` PCM), so the run measures work, not waiting."""
    from pi_synth.audio.backends.alsa import AlsaBackend
    from pi_synth.audio.engine import Engine
    from pi_synth.audio.synth import Synth
    from pi_synth.audio.library import find_model
    from pi_synth.control.events import StopAt

    path = find_model(str(path))
    rt = Runtime(path, threads=threads, warmup_blocks=8)
    card = rt.card
    ctl = control_sequence(card, 1, seed=0)[0]
    rt.controls[...] = ctl
    for _ in range(50):
        rt.step()
    c0 = time.process_time()
    for _ in range(blocks):
        rt.step()
    pure = time.process_time() - c0

    rt2 = Runtime(path, threads=threads, warmup_blocks=8)
    synth = Synth(rt2)
    for i, v in enumerate(ctl[:, -1]):
        synth.bank.set_index(i, float(v))
    synth.guard.gain_step = 1.0  # fades would change nothing about the cost
    synth.hooks.append(StopAt(blocks * card.block_size, synth.fade_out))
    engine = Engine(synth, AlsaBackend(device), period=period, periods=2, ahead_blocks=1)
    c0, w0 = time.process_time(), time.perf_counter()
    engine.start()
    engine.wait(600)
    engine.stop(fade=False)
    eng = time.process_time() - c0
    wall = time.perf_counter() - w0
    n = synth.position // card.block_size
    return {
        "model": card.name, "blocks": blocks, "engine_blocks": n, "period": period,
        "pure_cpu_s": pure, "engine_cpu_s": eng * blocks / max(n, 1),
        "engine_cpu_ratio": (eng * blocks / max(n, 1)) / pure,
        "pure_us_per_block": pure / blocks * 1e6,
        "engine_us_per_block": eng / max(n, 1) * 1e6,
        "engine_wall_s": wall, "late_periods": engine.stats.late_periods,
    }
