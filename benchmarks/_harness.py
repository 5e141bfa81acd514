"""The benchmark suite's measurements beyond ``pi-synth bench``: FLOP counts and the Pi
projection, the thread sweep, the engine's CPU against pure inference, and a block's
time stage by stage. Desktop only (needs ``onnx``); ``benchmarks/run.py`` calls these.
"""

from __future__ import annotations

import time

import numpy as np

from pi_synth.audio.engine import auto_choice
from pi_synth.bench import bench_model, control_sequence
from pi_synth.model.runtime import Runtime

_ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Pow", "Neg", "Abs", "Sqrt", "Reciprocal", "Exp", "Log", "Sin", "Cos",
    "Tanh", "Sigmoid", "Relu", "LeakyRelu", "Elu", "Selu", "Gelu", "Erf", "Clip", "Floor", "Ceil", "Round",
    "Min", "Max", "Where", "Less", "Greater", "Equal", "LessOrEqual", "GreaterOrEqual", "Mod", "Sign",
    "HardSigmoid", "Softplus", "PRelu", "BiasGelu", "FastGelu", "QuickGelu",
}
_REDUCTIONS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL2", "CumSum", "Softmax",
               "LogSoftmax", "LayerNormalization", "InstanceNormalization", "BatchNormalization",
               "GlobalAveragePool"}
_QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def graph_flops(path) -> dict:
    """Multiply-adds and FLOPs of one call of the model, counted from the ONNX graph.

    Conv / ConvTranspose / MatMul / Gemm (and their integer and QLinear forms) are counted
    exactly from the shapes onnx's shape inference gives (MACs; 1 MAC = 2 FLOPs).
    Elementwise ops count one FLOP per output element, reductions and softmax one per
    input element (rough, and small beside the convolutions of a neural voice). Quantize /
    dequantize and pure data movement (Slice, Concat, Gather, Cast…) are counted as
    elements apart, not as FLOPs. Needs ``onnx`` (the dev extra), never the firmware.
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # a custom op that onnx does not know: count what has shapes
        pass
    g = model.graph
    shapes: dict[str, list] = {}

    def take(vi):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            shapes[vi.name] = dims

    for vi in list(g.input) + list(g.output) + list(g.value_info):
        take(vi)
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    consts = {}
    for n in g.node:  # Constant nodes (fp32 exports keep weights there)
        if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR:
            arr = numpy_helper.to_array(n.attribute[0].t)
            shapes[n.output[0]] = list(arr.shape)
            consts[n.output[0]] = arr

    def shape(name):
        s = shapes.get(name)
        if s is None or any(d is None for d in s):
            return None
        return s

    def prod(s):
        out = 1
        for d in s:
            out *= int(d)
        return out

    macs, elementwise, qdq, moved = 0, 0, 0, 0
    by_op: dict[str, int] = {}
    unknown: list[str] = []
    for n in g.node:
        op = n.op_type
        out = shape(n.output[0]) if n.output else None
        m = 0
        if op in ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose"):
            w = shape(n.input[3 if op == "QLinearConv" else 1])
            if op == "ConvTranspose":
                x = shape(n.input[0])
                if w is None or x is None:
                    unknown.append(op)
                    continue
                m = prod(x) * prod(w[1:])
            else:
                if w is None or out is None:
                    unknown.append(op)
                    continue
                m = prod(out) * prod(w[1:])
        elif op in ("MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul"):
            a = shape(n.input[0])
            if a is None or out is None:
                unknown.append(op)
                continue
            m = prod(out) * int(a[-1])
        elif op == "Gemm":
            a = shape(n.input[0])
            if a is None or out is None:
                unknown.append(op)
                continue
            trans_a = any(at.name == "transA" and at.i for at in n.attribute)
            m = prod(out) * int(a[0] if trans_a else a[-1])
        elif op in _ELEMENTWISE:
            if out is None:
                unknown.append(op)
                continue
            elementwise += prod(out)
        elif op in _REDUCTIONS:
            x = shape(n.input[0])
            if x is None:
                unknown.append(op)
                continue
            elementwise += prod(x) * (5 if "Softmax" in op or "Normalization" in op else 1)
        elif op in _QDQ:
            if out is not None:
                qdq += prod(out)
        elif op != "Constant" and out is not None:
            moved += prod(out)
        if m:
            macs += m
            by_op[op] = by_op.get(op, 0) + m
    return {"macs": macs, "flops": 2 * macs + elementwise, "elementwise_flops": elementwise,
            "macs_by_op": by_op, "qdq_elements": qdq, "moved_elements": moved,
            "nodes": len(g.node), "unknown_shape_ops": unknown}


def flops_report(path, block_ms_median: float | None = None) -> dict:
    """FLOPs per call and per second of audio; GFLOP/s achieved if a block time is given."""
    from pi_synth.model.card import load_card

    card = load_card(path)
    f = graph_flops(path)
    calls_per_s = card.sample_rate / card.block_size
    out = {**f, "block_size": card.block_size, "sample_rate": card.sample_rate,
           "flops_per_block": f["flops"], "mflops_per_audio_second": f["flops"] * calls_per_s / 1e6,
           "mmacs_per_audio_second": f["macs"] * calls_per_s / 1e6}
    if block_ms_median:
        out["gflops_achieved"] = f["flops"] / (block_ms_median * 1e-3) / 1e9
    return out


# Sustained single-core fp32 throughput assumed for small convolutions in onnxruntime
# (MLAS NEON kernels), and single-thread speed relative to an x86 server core. Both are
# assumptions (see benchmarks/README.md for where they come from), stated so a projection
# can be checked against a real Pi with `pi-synth bench`.
PI_CPUS = {
    "pi4": {"name": "Raspberry Pi 4 (Cortex-A72 @ 1.8 GHz)", "peak_gflops": 28.8, "sustained_gflops": 6.0,
            "slowdown_vs_x86": 4.5},
    "pi5": {"name": "Raspberry Pi 5 (Cortex-A76 @ 2.4 GHz)", "peak_gflops": 38.4, "sustained_gflops": 15.0,
            "slowdown_vs_x86": 1.7},
    "zero2w": {"name": "Raspberry Pi Zero 2 W (Cortex-A53 @ 1.0 GHz)", "peak_gflops": 8.0,
               "sustained_gflops": 1.5, "slowdown_vs_x86": 9.0},
}


def project(flops_per_block: float, block_ms_here: float, block_size: int, sample_rate: int,
            cpus: dict | None = None) -> dict:
    """A *projection* (not a measurement) of block time and real-time factor on Pi CPUs.

    Two estimates, the larger taken: compute-bound (FLOPs / sustained GFLOP/s) and
    overhead-bound (this machine's measured block time × a single-thread slowdown
    factor: per-op dispatch, not arithmetic, dominates small models)."""
    block_s = block_size / sample_rate
    out = {}
    for key, c in (cpus or PI_CPUS).items():
        compute_ms = flops_per_block / (c["sustained_gflops"] * 1e9) * 1e3
        scaled_ms = block_ms_here * c["slowdown_vs_x86"]
        ms = max(compute_ms, scaled_ms)
        out[key] = {"cpu": c["name"], "assumed_sustained_gflops": c["sustained_gflops"],
                    "assumed_slowdown_vs_here": c["slowdown_vs_x86"], "compute_bound_ms": compute_ms,
                    "scaled_ms": scaled_ms, "block_ms": ms, "rtf": ms * 1e-3 / block_s,
                    "headroom": block_s / (ms * 1e-3),
                    # what auto would open on a 256×2 buffer: the periods, and the engine
                    **_auto_256(ms * 1e-3 / block_s, block_size)}
    return out


def _auto_256(rtf: float, block: int) -> dict:
    mode, n = auto_choice(rtf, block, 256, 2)
    return {"auto_periods_256": n, "engine_256": mode}


def bench_sweep(path, *, threads=(1, 2), blocks: int = 500) -> list[dict]:
    """:func:`bench_model` at each thread count (the model's own block size: fixed by
    the card). One row per thread count, the wrapper-vs-bare ratio in each."""
    return [bench_model(path, threads=t, blocks=blocks) for t in threads]


def engine_overhead(path, *, blocks: int = 2000, device: str = "pisynth_null", period: int = 256,
                    periods: int = 2, mode: str = "auto", threads: int = 1, profile: str | None = None,
                    repeats: int = 1, sessions: int = 1) -> dict:
    """Engine CPU over pure inference CPU, as ``pi-synth run`` builds the engine: the
    Player (block hooks, crossfade-ready), guard, the engine in ``mode`` (``auto``: the
    one ``pi-synth run`` picks) and real libasound writes into a non-pacing PCM
    (``pisynth_null``).

    Both sides run the same controls on the same onnxruntime session (a session's memory
    layout alone moves its speed by a few per cent from one to the next, more than the
    engine's share); the baseline is bare ``Runtime.step()`` in a loop. The two
    alternate, ``pure, engine, pure, …, pure``
    (``repeats`` engine runs); the figure is the fastest engine run over the fastest
    baseline run, and the median of each engine run over the mean of the baselines either
    side of it is reported beside it.

    ``sessions`` > 1 does all that on as many sessions, one after the other, and reports
    the session with the median ratio: which session is fast moves the figure by ±2 %
    here, as much as the repeats within one do not.
    ``profile`` = a path: cProfile the (last) engine run there (all threads, via
    ``threading.setprofile``) for where the rest goes."""
    from pi_synth.model.library import find_model

    path = find_model(str(path))
    per = [_engine_session(path, blocks, device, period, periods, mode, threads,
                           profile if k == sessions - 1 else None, repeats) for k in range(max(1, sessions))]
    res = sorted(per, key=lambda r: r["engine_cpu_ratio"])[(len(per) - 1) // 2]
    res["sessions"] = len(per)
    res["engine_cpu_ratio_sessions"] = [r["engine_cpu_ratio"] for r in per]
    return res


def _engine_session(path, blocks, device, period, periods, mode, threads, profile, repeats) -> dict:
    """:func:`engine_overhead` on one onnxruntime session."""
    rt = Runtime(path, threads=threads, warmup_blocks=8)
    card = rt.card
    ctl = control_sequence(card, 1, seed=0)[0]
    rt.controls[...] = ctl
    for _ in range(50):
        rt.step()

    def pure_run() -> float:
        rt.controls[...] = ctl  # as the engine run before it left them: the same values
        c0 = time.process_time()
        for _ in range(blocks):
            rt.step()
        return (time.process_time() - c0) / blocks

    pures = [pure_run()]
    runs = []
    for k in range(max(1, repeats)):
        last = k == max(1, repeats) - 1
        runs.append(_engine_run(rt, card, ctl, blocks, device, period, periods, mode,
                                profile if last else None))
        pures.append(pure_run())
    ratios = [r["cpu_per_block"] / ((pures[k] + pures[k + 1]) / 2) for k, r in enumerate(runs)]
    engine = [r["cpu_per_block"] for r in runs]
    # The figure: best engine run over best baseline run. Another tenant or a clock change
    # only ever adds time, to either side, for a second or so: the fastest run of each is
    # its own cost (as timeit takes the minimum); the paired median is kept beside it.
    e_min, p_min = min(engine), min(pures)
    return {"model": card.name, "path": str(path), "blocks": blocks, "engine_blocks": runs[-1]["blocks"],
            "period": period, "engine_mode": runs[-1]["mode"], "repeats": len(runs),
            "pure_us_per_block": p_min * 1e6, "engine_us_per_block": e_min * 1e6,
            "engine_us_per_block_runs": [x * 1e6 for x in engine],
            "pure_us_per_block_runs": [x * 1e6 for x in pures],
            "engine_cpu_ratio": e_min / p_min, "engine_cpu_ratios": ratios,
            "engine_cpu_ratio_paired_median": float(np.median(ratios)),
            "engine_wall_s": runs[-1]["wall"], "late_periods": max(r["late_periods"] for r in runs)}


def _engine_run(rt, card, ctl, blocks, device, period, periods, mode, profile) -> dict:
    """One engine run for :func:`engine_overhead`, on the baseline's own session ``rt``:
    process CPU per block rendered between start() and the end of the stream."""
    import gc

    from pi_synth.audio.backends.alsa import AlsaBackend
    from pi_synth.audio.engine import Engine
    from pi_synth.audio.player import Player
    from pi_synth.audio.synth import Synth
    from pi_synth.control.events import StopAt

    rt.reset()
    synth = Synth(rt)
    for i, v in enumerate(ctl[:, -1]):
        synth.bank.set_index(i, float(v))
    synth.guard.gain_step = 1.0
    player = Player(synth)
    player.hooks.append(StopAt(blocks * card.block_size, player.fade_out))
    engine = Engine(player, AlsaBackend(device), period=period, periods=periods, ahead_blocks=1, mode=mode)
    prof = None
    if profile:
        import cProfile
        import threading

        prof = cProfile.Profile()
        threading.setprofile(lambda *a: prof.enable(subcalls=True, builtins=True))
    gc.collect()  # so the engine's own collect-and-freeze at start costs little
    w0 = time.perf_counter()
    engine.start()
    # the window: from after start() (device open, GC freeze, thread start) to the end of
    # the stream, per block rendered inside it — steady-state cost, not set-up
    c0, p0 = time.process_time(), player.position
    engine.wait(600)
    eng = time.process_time() - c0
    p1 = player.position
    engine.stop(fade=False)
    wall = time.perf_counter() - w0
    if prof is not None:
        import threading

        threading.setprofile(None)
        prof.disable()
        prof.dump_stats(profile)
    return {"cpu_per_block": eng / max(1, (p1 - p0) // card.block_size), "wall": wall,
            "blocks": player.position // card.block_size, "mode": getattr(engine, "mode", "threaded"),
            "late_periods": engine.stats.late_periods}


def block_breakdown(path, *, blocks: int = 2000, device: str = "pisynth_null", period: int = 256) -> dict:
    """Where one block's time goes outside the model, stage by stage, in one thread, as
    the direct engine does it: block hooks + control bank, ``Runtime.step``, the output
    guard, and the device (the backend's sink: wait for room, format conversion,
    libasound). Median µs per stage (medians: a loaded machine's preemptions land in the
    mean). The threaded engine adds the ring copy and two thread hand-offs per block on
    top; the direct engine adds only its counters."""
    from pi_synth.audio.backends.alsa import AlsaBackend
    from pi_synth.model.library import find_model
    from pi_synth.audio.player import Player
    from pi_synth.audio.synth import Synth

    path = find_model(str(path))
    rt = Runtime(path, warmup_blocks=8)
    card = rt.card
    ctl = control_sequence(card, 1, seed=0)[0]
    synth = Synth(rt)
    for i, v in enumerate(ctl[:, -1]):
        synth.bank.set_index(i, float(v))
    player = Player(synth)
    backend = AlsaBackend(device)
    backend.open(card.sample_rate, card.channels, period, 2)
    write, wait = backend.sink(card.block_size)
    perf = time.perf_counter
    t = np.zeros((blocks, 4))
    try:
        for k in range(blocks):
            t0 = perf()
            for hook in player.hooks:
                hook(player.position)
            synth.bank.fill(rt.controls)
            t1 = perf()
            rt.step()
            t2 = perf()
            out = synth.finish()
            t3 = perf()
            wait(min(card.block_size, period))
            write(out)
            t4 = perf()
            t[k] = (t1 - t0, t2 - t1, t3 - t2, t4 - t3)
    finally:
        backend.close()
    med = np.median(t, axis=0) * 1e6
    names = ("hooks_and_bank_us", "runtime_step_us", "copy_and_guard_us", "backend_write_us")  # write: the sink
    res = {"model": card.name, "path": str(path), "blocks": blocks, **{n: float(v) for n, v in zip(names, med)}}
    res["outside_model_us"] = float(med[0] + med[2] + med[3])
    res["outside_model_ratio"] = float((med.sum()) / med[1])
    return res
