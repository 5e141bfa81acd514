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
from pathlib import Path

import numpy as np

from pi_synth.audio.engine import auto_choice
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


def block_times(rt: Runtime, blocks: int = 500, warmup: int = 20, seed: int = 0) -> tuple[np.ndarray, float]:
    """Wall time of each of ``blocks`` blocks of ``rt`` on moving controls, after ``warmup``;
    and the process CPU seconds of all of them."""
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
    return times, time.process_time() - cpu0


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


# -- the benchmark suite's additions (benchmarks/run.py) -------------------------------
# Everything below is new and used by ``benchmarks/``; the functions above keep their
# behaviour because ``pi-synth bench`` uses them.

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
    from pi_synth.audio.runtime import load_card

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
    instead of whichever ran last: timed one after the other, the pads' int8 once measured
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


def quantized_nodes(int8_path) -> list[str]:
    """The fp32 graph's Conv/MatMul/Gemm nodes an int8 file runs quantized. QDQ: those fed
    by a DequantizeLinear (the others were kept in float32). QOperator: the QLinearConv /
    QLinearMatMul / …Integer nodes, which onnxruntime's quantizer names ``<fp32 name>_quant``."""
    import onnx

    from pi_synth.quantize import QUANT_OPS

    m = onnx.load(str(int8_path))
    made_by = {o: n.op_type for n in m.graph.node for o in n.output}
    qdq = [n.name for n in m.graph.node
           if n.op_type in QUANT_OPS and any(made_by.get(i) == "DequantizeLinear" for i in n.input)]
    qop = [n.name[: -len("_quant")] for n in m.graph.node
           if (n.op_type.startswith("QLinear") or n.op_type.endswith("Integer")) and n.name.endswith("_quant")]
    return qdq + qop


def without_nodes(fp32_path, names, out_path) -> int:
    """Write ``fp32_path`` with each node in ``names`` replaced by the cheapest op that
    makes a tensor of its output's shape (one element of its input, broadcast): the same
    graph with those ops free. Returns how many were replaced."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.shape_inference.infer_shapes(onnx.load(str(fp32_path)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.output)}
    names, nodes, k = set(names), [], 0
    for n in m.graph.node:
        out = shapes.get(n.output[0])
        if n.name not in names or not out or not all(out):
            nodes.append(n)
            continue
        p = f"free{k}_"
        k += 1
        r = len(shapes.get(n.input[0]) or out)
        for nm, v in (("z", [0] * r), ("one", [1] * r), ("axes", list(range(r))), ("shape", out)):
            m.graph.initializer.append(numpy_helper.from_array(np.array(v, np.int64), p + nm))
        nodes.append(helper.make_node("Slice", [n.input[0], p + "z", p + "one", p + "axes"], [p + "x"]))
        nodes.append(helper.make_node("Expand", [p + "x", p + "shape"], [n.output[0]]))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, str(out_path))
    return k


def int8_kernels_on_arm(int8_path) -> dict:
    """How many of an int8 file's quantized ops onnxruntime runs as int8 kernels
    (QLinearConv, QLinearMatMul, …) under its ARM rule. An x86 CPU without VNNI keeps S8S8
    QDQ as float; ``session.qdqisint8allowed = 1`` applies the ARM graph transforms here,
    so the graph a Pi would run can be checked without one (its speed cannot). A QOperator
    file is made of those kernels already."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opt = str(Path(tmp) / "arm.onnx")
        so = session_options(1, opt)
        so.add_session_config_entry("session.qdqisint8allowed", "1")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # what saves portably
        ort.InferenceSession(str(int8_path), so, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(opt).graph.node]
    return {"quantized_ops": len(quantized_nodes(int8_path)),
            "int8_kernels": sum(op in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger") for op in ops)}


def int8_ceiling(fp32_path, int8_path, *, blocks: int = 500, threads: int = 1) -> dict:
    """The most int8 could speed a model up on this machine: the fp32 graph timed with
    the ops the int8 file quantizes made free (:func:`without_nodes`), over the fp32
    graph. What int8 saves is a share of those ops' time, less its quantize and
    dequantize steps; the rest of the graph (I/O, state, elementwise and shape ops, the
    layers kept in float) runs as before."""
    import tempfile

    names = quantized_nodes(int8_path)
    with tempfile.TemporaryDirectory() as tmp:
        free = Path(tmp) / "free.onnx"
        n = without_nodes(fp32_path, names, free)
        rts = [Runtime(fp32_path, threads=threads, warmup_blocks=8), Runtime(free, threads=threads, warmup_blocks=8)]
    ctl = control_sequence(rts[0].card, blocks, seed=0)
    times = np.empty((2, blocks))
    perf = time.perf_counter
    for k in range(blocks):  # interleaved block by block: load hits both alike
        for i, rt in enumerate(rts):
            rt.controls[...] = ctl[k]
            t0 = perf()
            rt.step()
            times[i, k] = perf() - t0
    ref, fr = np.median(times, axis=1) * 1e3
    return {"quantized_ops": len(names), "made_free": n, "blocks": blocks,
            "fp32_block_ms_median": float(ref), "free_block_ms_median": float(fr), "ceiling": float(ref / fr)}


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
    from pi_synth.audio.library import find_model

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
    import inspect

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
    kw = dict(period=period, periods=periods, ahead_blocks=1)
    if "mode" in inspect.signature(Engine).parameters:
        kw["mode"] = mode
    engine = Engine(player, AlsaBackend(device), **kw)
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
    from pi_synth.audio.library import find_model
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
    out, guard_in = synth._out, synth._guard_in
    try:
        for k in range(blocks):
            t0 = perf()
            for hook in player.hooks:
                hook(player.position)
            for hook in synth.hooks:
                hook(synth.position)
            synth.bank.fill(rt.controls)
            t1 = perf()
            audio = rt.step()
            t2 = perf()
            if synth._copy:
                np.copyto(out, audio.T)
            synth.guard.process(guard_in)
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
