"""Real-time factor of a model on this machine: what ``pi-synth bench`` measures (on the
Pi too), and the pieces ``benchmarks/`` and the quantizer build on.

Blocks are timed one by one after warm-up, with controls moving through the card's
ranges (a model can be slower on some inputs). The same blocks are also run through
a bare ``session.run`` with the state carried by hand, so the wrapper's overhead is
a ratio measured in the same run, not a guess.
"""

from __future__ import annotations

import json
import platform
import time

import numpy as np

from pi_synth.model.card import parse_card
from pi_synth.model.runtime import Runtime
from pi_synth.model.session import session_options


def control_sequence(card, blocks: int, seed: int = 0) -> np.ndarray:
    """A realistic control sequence ``[blocks, n_controls, control_frames]`` (float32) for
    ``card`` (a :class:`~pi_synth.model.card.Card`, or its JSON): every control on a slow random walk
    through its range (random points every 0.1–1 s, joined linearly, along its curve); a
    pitch/loudness voice plays notes instead — loudness envelopes, legato moves, rests,
    a little vibrato. What ``pi-synth bench`` times, and what the quantizer calibrates on."""
    if isinstance(card, dict):  # a card held as JSON (the quantizer, the export scripts)
        card = parse_card(json.dumps(card))
    rng = np.random.default_rng(seed)
    ctrls = card.controls
    frames = card.control_frames
    block_s = card.block_size / card.sample_rate
    names = [c.name for c in ctrls]
    out = np.empty((blocks, len(ctrls), frames), np.float32)
    t = np.arange(blocks * frames) * block_s / frames
    for i, c in enumerate(ctrls):
        lo, hi = float(c.min), float(c.max)
        knots_t = np.cumsum(rng.uniform(0.1, 1.0, size=int(t[-1] / 0.1) + 3)) - 0.1
        knots_v = rng.uniform(0, 1, size=len(knots_t))
        u = np.interp(t, knots_t, knots_v)
        if c.curve == "log" and lo > 0 and hi > 0:
            v = lo * (hi / lo) ** u
        else:
            v = lo + (hi - lo) * u
        out[:, i, :] = v.reshape(blocks, frames)
    if "pitch" in names and "loudness" in names:
        ip, il = names.index("pitch"), names.index("loudness")
        cp, cl = ctrls[ip], ctrls[il]
        pitch = np.empty(len(t))
        loud = np.full(len(t), float(cl.min))
        k, lo_db, hi_db = 0, max(cl.min, -45.0), min(cl.max, -10.0)
        note = rng.uniform(np.log(cp.min), np.log(cp.max))
        while k < len(t):
            dur = min(int(rng.uniform(0.08, 0.7) / block_s * frames) + 1, len(t) - k)
            start = float(cl.min)
            if k > 0 and rng.random() < 0.5:  # legato: move the pitch a few semitones, keep sounding
                note = np.clip(note + rng.integers(-7, 8) * np.log(2) / 12, np.log(cp.min), np.log(cp.max))
                start = loud[k - 1]
            else:
                note = rng.uniform(np.log(cp.min), np.log(cp.max))
            level = rng.uniform(lo_db, hi_db)
            vib = 1 + 0.003 * np.sin(2 * np.pi * 5.5 * t[k : k + dur])
            pitch[k : k + dur] = np.exp(note) * vib
            env = np.minimum(1.0, np.arange(dur) / max(1, 0.03 / block_s * frames))
            loud[k : k + dur] = start + (level - start) * env
            k += dur
            if rng.random() < 0.3:  # a rest
                rest = int(rng.uniform(0.05, 0.4) / block_s * frames)
                pitch[k : k + rest] = pitch[k - 1]
                k += rest
        out[:, ip, :] = pitch[: len(t)].reshape(blocks, frames)
        out[:, il, :] = loud.reshape(blocks, frames)
    return out


def test_signal(sample_rate: int, seconds: float = 8.0, seed: int = 3):
    """A deterministic stand-in for a voice or an instrument, to measure an encoder on: a
    harmonic tone gliding over three octaves (55 → 440 Hz) with vibrato, a syllable-like
    envelope and breath noise, plus short noise bursts. ``[samples]`` float32 at ±0.5."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = 55.0 * 2.0 ** (3.0 * t / seconds) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 24) if k * f0.max() < sample_rate / 2)
    env = 0.5 - 0.5 * np.cos(2 * np.pi * np.minimum(1.0, (t * 2.5) % 1.0))
    y = tone * env + 0.05 * rng.standard_normal(n) + (rng.standard_normal(n) * ((t * 1.3) % 1 < 0.06))
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


def input_sequence(card, blocks: int, seed: int = 0) -> np.ndarray:
    """``[blocks, block_size]`` of :func:`test_signal`, looped: what a model that takes audio
    (an encoder, an effect) is timed on."""
    x = test_signal(card.sample_rate, seed=3 + seed)
    return np.resize(x, blocks * card.block_size).reshape(blocks, card.block_size)


def _stats(times: np.ndarray, block_seconds: float) -> dict:
    ms = times * 1e3
    return {
        "block_ms_median": float(np.median(ms)),
        "block_ms_p99": float(np.percentile(ms, 99)),
        "block_ms_max": float(ms.max()),
        "rtf": float(np.median(times) / block_seconds),
        "rtf_p99": float(np.percentile(times, 99) / block_seconds),
    }


def paced_times(call, blocks: int, *, warmup: int = 0, period: float | None = None,
                prepare=None) -> np.ndarray:
    """Wall time of ``call(k)`` for each of ``blocks`` blocks after ``warmup`` (``prepare(k)``
    first, untimed). ``period``: one call per period, asleep in between, as the instrument
    calls a model (the caches cool meanwhile); None: back to back."""
    times = np.empty(blocks)
    nxt = time.perf_counter()
    for k in range(blocks + warmup):
        if prepare is not None:
            prepare(k)
        t0 = time.perf_counter()
        call(k)
        if k >= warmup:
            times[k - warmup] = time.perf_counter() - t0
        if period:
            nxt += period
            time.sleep(max(0.0, nxt - time.perf_counter()))
    return times


def block_times(rt: Runtime, blocks: int = 500, warmup: int = 20, seed: int = 0,
                cadence: bool = False) -> tuple[np.ndarray, float]:
    """Wall time of each of ``blocks`` blocks of ``rt`` on moving controls, after ``warmup``;
    and the process CPU seconds of all of them. ``cadence``: at the block period
    (:func:`paced_times`); otherwise back to back."""
    card = rt.card
    ctl = control_sequence(card, blocks + warmup, seed)
    x = input_sequence(card, blocks + warmup, seed) if card.audio_input else None

    def prepare(k):
        rt.controls[...] = ctl[k]
        if x is not None:
            rt.audio_in[:] = x[k]

    cpu0 = time.process_time()
    times = paced_times(lambda k: rt.step(), blocks, warmup=warmup,
                        period=card.block_size / card.sample_rate if cadence else None, prepare=prepare)
    return times, time.process_time() - cpu0


CADENCE_SECONDS = 3.0  # the most `bench` spends playing at the block cadence


def bench_runtime(rt: Runtime, blocks: int = 500, warmup: int = 20, seed: int = 0) -> dict:
    times, cpu = block_times(rt, blocks, warmup, seed)
    out = _stats(times, rt.card.block_size / rt.card.sample_rate)
    out["cpu_per_block_ms"] = cpu / (blocks + warmup) * 1e3
    return out


def bench_bare(rt: Runtime, blocks: int = 500, warmup: int = 20, seed: int = 0) -> dict:
    """Same blocks through plain ``session.run`` (allocating outputs each call)."""
    import onnxruntime as ort

    card = rt.card
    sess = ort.InferenceSession(rt.path, session_options(rt.threads), providers=["CPUExecutionProvider"])
    ctl = control_sequence(card, blocks + warmup, seed)
    x = input_sequence(card, blocks + warmup, seed) if card.audio_input else None
    state = {s_in: np.zeros(rt.specs[s_in][0], rt.specs[s_in][1]) for s_in, _ in card.state}
    out_names = [card.audio_output or card.latent_output] + [s_out for _, s_out in card.state]
    times = np.empty(blocks)
    for k in range(blocks + warmup):
        feeds = {card.controls_input: ctl[k][None]} if card.controls_input else {}
        if x is not None:
            feeds[card.audio_input] = x[k].reshape(1, 1, -1)
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
    period = card.block_size / card.sample_rate
    n = max(10, min(blocks, int(CADENCE_SECONDS / period)))
    times, _ = block_times(rt, n, warmup=5, seed=1, cadence=True)
    cad = _stats(times, period)
    res["at_cadence"] = {"blocks": n, "block_ms_median": cad["block_ms_median"], "block_ms_p99": cad["block_ms_p99"],
                         "rtf": cad["rtf"], "rtf_p99": cad["rtf_p99"]}
    if bare:
        b = bench_bare(rt, blocks)
        res["bare_block_ms_median"] = b["block_ms_median"]
        res["wrapper_overhead_ratio"] = res["block_ms_median"] / b["block_ms_median"]
    return res


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-noise ratio of ``test`` against ``reference`` (same shape), in dB."""
    ref = np.asarray(reference, np.float64).ravel()
    err = ref - np.asarray(test, np.float64).ravel()
    pe = float(np.sum(err * err))
    ps = float(np.sum(ref * ref))
    if pe == 0.0:
        return float("inf")
    return 10.0 * np.log10(max(ps, 1e-30) / pe)


ROUND = 25


def alternate_stats(runtimes: list, blocks: int = 500) -> list[dict]:
    """Block-time stats of each runtime, timed in alternation, ``ROUND`` blocks at a time.

    A slow spell of the machine (another tenant, a clock change) then hits every file alike
    instead of whichever ran last: timed one after the other, the first latent voice's int8 once measured
    ×1.18 against ×1.6 both before and after."""
    times = [[] for _ in runtimes]
    for r in range(max(1, blocks // ROUND)):
        for t, rt in zip(times, runtimes):
            t.append(block_times(rt, ROUND, warmup=2, seed=r)[0])
    return [_stats(np.concatenate(t), rt.card.block_size / rt.card.sample_rate) for t, rt in zip(times, runtimes)]


def compare_precisions(fp32_path, int8_path, *, blocks: int = 500, seconds: float = 10.0,
                       threads: int = 1) -> dict:
    """int8 vs fp32 of one model: speed ratio (median block time, same run) and SNR of the
    int8 render against the fp32 render of the same moving controls."""
    from pi_synth.errors import ModelError
    from pi_synth.model.library import not_one_model

    if why := not_one_model(int8_path, fp32_path):
        raise ModelError(f"{int8_path} and {fp32_path} are not one model's two precisions ({why}); bench one "
                         "file by its path, or delete the older")
    ref_rt = Runtime(fp32_path, threads=threads, warmup_blocks=8)
    q_rt = Runtime(int8_path, threads=threads, warmup_blocks=8)
    card = ref_rt.card
    n = max(1, int(round(seconds * card.sample_rate / card.block_size)))
    ctl = control_sequence(card, n, seed=1)
    ref = ref_rt.render(ctl)
    q = q_rt.render(ctl)
    f, i = alternate_stats([ref_rt, q_rt], blocks)
    rounds = max(1, blocks // ROUND)
    return {"fp32": str(fp32_path), "int8": str(int8_path), "blocks": rounds * ROUND, "rounds": rounds,
            "fp32_block_ms_median": f["block_ms_median"], "int8_block_ms_median": i["block_ms_median"],
            "fp32_block_ms_p99": f["block_ms_p99"], "int8_block_ms_p99": i["block_ms_p99"],
            "speedup": f["block_ms_median"] / i["block_ms_median"], "snr_db": snr_db(ref, q),
            "snr_seconds": n * card.block_size / card.sample_rate}


