#!/usr/bin/env python3
"""Converted RAVE decoders vs the TorchScript they came from: same decoder, same blocks, one run.

For each fixture (a real ``rave export --streaming`` ``.ts``, built by ``scripts/rave/make-fixtures.sh``):
convert it (fp32, and int8 as ``convert rave --quantize`` writes it: ``rave.quantize_decoder``), then time it against
TorchScript ``decode`` on the same random latent blocks, 1 thread each, caches starting from zeros on
both sides, warm-up excluded (TorchScript's first calls JIT), in two ways:

* **rounds**: the engines alternate in rounds of ``ROUND`` blocks, the converted models played as
  pi-synth plays them (``Runtime.step``: io_binding, state ping-pong);
* **block by block**, as an outsider would measure it: a plain ``onnxruntime.InferenceSession``
  (1 thread, default options otherwise) and ``session.run`` with a feeds dict, outputs allocated by
  onnxruntime and the state carried by hand, one block of it right after one block of TorchScript.
  Each call then finds the caches full of the other engine's data: both pay it. The same
  calls are then timed after an idle wait as long as TorchScript's decode instead (a spin that
  touches no memory): on a shared host the caches empty in that time anyway.

Reports median ms per block, the speed ratio TorchScript/ONNX in both ways (fp32 and int8), the
multiply-adds per block and the GFLOP/s achieved (2 × multiply-adds / time), the max abs error of the
fp32 model against the ``.ts`` and the int8 SNR against fp32. ``--legacy`` adds the decoder as
converted before the rows form (one state per cache, the plain PQMF convolution) as a further
player, so before and after come out of one run; ``--baseline DIR`` adds ``DIR/FIXTURE.onnx`` (the
fixture converted by another checkout, say main) the same way.
Targets (issue 26): ≥ 5× TorchScript for raspberry and v2, both ways (issue 4's were 3× / 4×).

Usage (in the RAVE venv, which has torch):
    .venv-rave/bin/python benchmarks/bench_rave.py [FIXTURE ...] [--blocks 300] [--no-int8] [--legacy]
        [--baseline DIR] [--profile] [--out DIR] [--frames 1 2 4 8] [--seconds 8]   # and the real-time factor by block size (2048 … 16384)
    .venv-rave/bin/python benchmarks/bench_rave.py --pair raspberry-l128 [--blocks 300]
        # timbre transfer: the converted encoder + decoder (and the whole PairSynth block) against
        # TorchScript ``forward`` (encode + decode) on the same recorded voice, 1 thread (issue 21)
Writes DIR/rave.json (default DIR: benchmarks/results). Interleaving makes the ratio fair on a busy
machine; the absolute times are only as good as the machine was quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Each engine plays ROUND blocks in a row, then the next engine the same blocks: as on a Pi,
# where one engine runs alone. Interleaved block by block, each call came right after the other
# engine had evicted its weights from the caches: a cost neither pays in use, and one that
# moved with the other tenants of this host (raspberry: 3.0-4.4x from run to run).
ROUND = 10
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _env import machine  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", "1")

TARGETS = {"raspberry": 5.0, "v2": 5.0}


def _target(name: str) -> float | None:
    for k, v in TARGETS.items():
        if name.startswith(k):
            return v
    return None


def bench_one(ts_path: Path, work: Path, blocks: int, int8: bool, legacy: bool = False,
              baseline: Path | None = None) -> dict:
    import numpy as np
    import torch

    from pi_synth.model.runtime import Runtime
    from pi_synth.model.card import load_card
    from pi_synth.tools.convert import rave

    torch.set_num_threads(1)
    name = ts_path.stem
    out = work / f"{name}.onnx"
    summary = rave.convert(ts_path, out, encoder=False)
    macs = summary["multiply_adds_per_block"]
    card = load_card(out)
    paths = {"fp32": out}
    res: dict = {"fixture": name, "multiply_adds_per_block": macs, "states": summary["states"],
                 "block_size": card.block_size, "sample_rate": card.sample_rate, "latents": len(card.controls),
                 "nodes": {"fp32": graph_nodes(out)}}
    if legacy:
        old = work / f"{name}.legacy.onnx"
        s_old = rave.convert(ts_path, old, encoder=False, layout="legacy")
        paths["fp32_legacy"] = old
        res["states_legacy"] = s_old["states"]
        res["nodes"]["fp32_legacy"] = graph_nodes(old)
    if baseline is not None:  # the same fixture converted by another checkout (e.g. main), same run
        b = baseline / f"{name}.onnx"
        if not b.exists():
            raise SystemExit(f"--baseline {baseline}: no {b.name}; convert the fixture there first")
        paths["baseline"] = b
        res["nodes"]["baseline"] = graph_nodes(b)
    if int8:  # what `pi-synth convert rave --quantize` writes: int8 weights where the bytes are
        q = work / f"{name}.int8.onnx"
        rep = rave.quantize_decoder(out, q)
        paths["int8"] = q
        res["int8_snr_db"] = rep["snr_db"]
        res["int8_nodes"] = rep["int8_nodes"]
        res["nodes"]["int8"] = graph_nodes(q)
        res["weight_bytes"] = {"fp32": out.stat().st_size, "int8": q.stat().st_size}
    m = rave.load_ts(ts_path)
    k = len(card.controls)
    runtimes = {label: Runtime(p, use_cache=False) for label, p in paths.items()}
    rng = np.random.default_rng(0)
    warm = ROUND  # the first round: TorchScript's JIT, onnxruntime's memory planning
    zs = rng.standard_normal((blocks + warm, 1, k, card.control_frames)).astype(np.float32)
    refs, err = {}, 0.0

    def ts(i):
        with torch.no_grad():
            refs[i] = m.decode(torch.from_numpy(zs[i])).numpy().reshape(1, 1, -1)

    def play(rt):
        def step(i):
            rt.controls[...] = zs[i][0]
            return rt.step()
        return step

    def seen(label, i, y):  # untimed: the fp32 models against TorchScript, block by block
        nonlocal err
        if label.startswith("fp32") or label == "baseline":
            err = max(err, float(np.max(np.abs(y[None] - refs[i]))))

    def zero_state():  # the measured blocks start from zero state on every side
        rave.zero_caches(m)
        for rt in runtimes.values():
            rt.reset()

    rave.zero_caches(m)
    times = alternate(len(zs), warm, {"ts": ts, **{label: play(rt) for label, rt in runtimes.items()}},
                      at_warm=zero_state, seen=seen)
    med = {label: 1e3 * float(np.median(v)) for label, v in times.items()}
    res["ms_per_block"] = {label: round(v, 3) for label, v in med.items()}
    res["speedup_vs_torchscript"] = {label: round(med["ts"] / med[label], 2) for label in paths}
    res["gflops"] = {label: round(2 * macs / (med[label] * 1e-3) / 1e9, 2) for label in med}
    res["max_abs_err_fp32"] = err
    res["realtime_budget_ms"] = round(1e3 * card.block_size / card.sample_rate, 2)
    res["block_by_block"] = block_by_block(ts_path, paths, zs, warm)
    tgt = _target(name)
    if tgt:
        res["target_speedup"] = tgt
        res["target_met"] = {label: {"rounds": res["speedup_vs_torchscript"][label] >= tgt,
                                     "block_by_block": res["block_by_block"]["speedup_vs_torchscript"][label] >= tgt}
                             for label in ("fp32", "int8") if label in paths}
    return res


class Plain:
    """A model as someone trying the file from Python would play it: a plain ``session.run``
    (feeds dict, outputs allocated by onnxruntime), 1 thread, the state carried by hand.
    Called with the model's input (latents for a decoder, audio for an encoder), returns its
    output (audio, latents)."""

    def __init__(self, path):
        import numpy as np
        import onnxruntime as ort

        from pi_synth.model.card import load_card

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.card = c = load_card(path)
        self.names = [o.name for o in self.sess.get_outputs()]
        self.input = c.audio_input if c.latent_output else c.controls_input
        self.output = c.latent_output or c.audio_output
        shapes = {a.name: a.shape for a in self.sess.get_inputs()}
        self.state = {a: np.zeros(shapes[a], np.float32) for a, _ in c.state}

    def __call__(self, x):
        out = dict(zip(self.names, self.sess.run(None, {self.input: x, **self.state})))
        self.state = {a: out[b] for a, b in self.card.state}
        return out[self.output]


CADENCE_BLOCKS = 60  # blocks an engine plays in a pass at the block period (46 ms each for RAVE)


def at_cadence(calls: dict, period_s: float, blocks: int = CADENCE_BLOCKS, passes: int = 2) -> dict:
    """As the instrument calls a model: one block per block period, the thread asleep in
    between, each engine on its own (passes alternate, so a slow spell of the host hits
    both). ``calls``: label → ``f(i)`` for block i. Medians in seconds, the first 5 blocks
    of a pass left out (``pi_synth.bench.paced_times``, as ``pi-synth bench`` times it)."""
    import numpy as np

    from pi_synth.bench import paced_times

    t = {k: [] for k in calls}
    for _ in range(passes):
        for label, call in calls.items():
            t[label].extend(paced_times(call, blocks - 5, warmup=5, period=period_s))
    return {k: float(np.median(v)) for k, v in t.items()}


def idle_wait(seconds: float) -> None:
    """Keep this core busy for ``seconds`` touching no memory (a spin on the clock): what the
    caches lose in that time alone, against what the other engine's call costs them."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def block_by_block(ts_path: Path, paths: dict, zs, warm: int) -> dict:
    """The outsider's way: TorchScript ``decode`` of block i, then a plain ``session.run`` of block
    i (feeds dict, outputs allocated by onnxruntime, state carried by hand), then block i + 1, …;
    1 thread each, default session options otherwise. With several models, each gets its own
    TorchScript copy and every call of it comes right after a decode of that copy: a model that
    followed another model would find onnxruntime's code and data warm. Medians of the blocks
    from ``warm`` on; the max abs error of each model against TorchScript."""
    import numpy as np
    import torch

    from pi_synth.tools.convert import rave

    plains = {label: Plain(p) for label, p in paths.items()}
    tss = {label: rave.load_ts(ts_path) for label in plains}
    for m in tss.values():
        rave.zero_caches(m)
    times = {"ts": [], **{label: [] for label in plains}}
    err = {label: 0.0 for label in plains}
    for i in range(len(zs)):
        for label, play in plains.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                ref = tss[label].decode(torch.from_numpy(zs[i])).numpy()
            dt = time.perf_counter() - t0
            if i >= warm:
                times["ts"].append(dt)
            t0 = time.perf_counter()
            y = play(zs[i])
            dt = time.perf_counter() - t0
            if i >= warm:
                times[label].append(dt)
            err[label] = max(err[label], float(np.max(np.abs(y.reshape(-1) - ref.reshape(-1)))))
    med = {label: 1e3 * float(np.median(v)) for label, v in times.items()}
    # the same calls after an idle wait as long as TorchScript's decode (a spin that touches no
    # memory) instead of the decode: how much of the block-by-block time is the wait itself,
    # the caches emptying while this core does something else, whatever that is
    idle = {label: [] for label in plains}
    gap = med["ts"] / 1e3
    for i in range(len(zs)):
        for label, play in plains.items():
            idle_wait(gap)
            t0 = time.perf_counter()
            play(zs[i])
            if i >= warm:
                idle[label].append(time.perf_counter() - t0)
    # at the block cadence: one call per block period, asleep between (as the instrument plays)
    period = plains[next(iter(plains))].card.block_size / plains[next(iter(plains))].card.sample_rate
    z = torch.from_numpy(zs[0])
    ts0 = tss[next(iter(tss))]

    def ts_call(i):
        with torch.no_grad():
            ts0.decode(z)

    cad = at_cadence({"ts": ts_call, **{label: (lambda i, p=play: p(zs[i % len(zs)])) for label, play in plains.items()}},
                     period)
    return {"ms_per_block": {k: round(v, 3) for k, v in med.items()},
            "speedup_vs_torchscript": {k: round(med["ts"] / v, 2) for k, v in med.items() if k != "ts"},
            "ms_per_block_after_idle_wait": {k: round(1e3 * float(np.median(v)), 3) for k, v in idle.items()},
            "at_cadence": {"ms_per_block": {k: round(1e3 * v, 3) for k, v in cad.items()},
                           "speedup_vs_torchscript": {k: round(cad["ts"] / v, 2) for k, v in cad.items() if k != "ts"}},
            "max_abs_err": err}


def profile(ts_path: Path, path: Path, blocks: int = 100) -> dict:
    """Where the converted model's time goes: onnxruntime's profiler per op type (model alone,
    1 thread; the profiler adds ~10 µs to every node, so small nodes read high: shares, not
    times), the nodes per op type, and for scale the cost of a one-node graph's ``session.run``
    alone and right after a TorchScript decode (what an empty call pays once the other engine
    has run)."""
    import collections
    import json as js
    import tempfile

    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    from pi_synth.model.card import load_card
    from pi_synth.tools.convert import rave

    card = load_card(path)
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.optimized_model_filepath = str(Path(d) / "opt.onnx")
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(d) / "prof")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
        shapes = {a.name: a.shape for a in sess.get_inputs()}
        state = {a: np.zeros(shapes[a], np.float32) for a, _ in card.state}
        zs = np.random.default_rng(1).standard_normal((blocks, 1, len(card.controls), card.control_frames))
        for i in range(blocks):
            out = dict(zip([o.name for o in sess.get_outputs()],
                           sess.run(None, {card.controls_input: zs[i].astype(np.float32), **state})))
            state = {a: out[b] for a, b in card.state}
        events = js.loads(Path(sess.end_profiling()).read_text())
    skip = 10
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][skip:]
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
               and e["ts"] >= runs[0]["ts"]]
    by_type = collections.defaultdict(float)
    for e in kernels:
        by_type[e["args"]["op_name"]] += e["dur"]
    total = sum(by_type.values())
    shares = {k: round(100 * v / total, 1) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])}
    # a one-node graph, for scale
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "one",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, card.block_size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, card.block_size])])
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    one = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                               so, providers=["CPUExecutionProvider"])
    m = rave.load_ts(ts_path)
    x = {"x": np.zeros((1, 1, card.block_size), np.float32)}
    z = torch.from_numpy(zs[0].astype(np.float32))
    def decode():
        with torch.no_grad():
            m.decode(z)

    alone, after = [], []
    for i in range(60):
        t0 = time.perf_counter()
        one.run(None, x)
        alone.append(time.perf_counter() - t0)
    for i in range(60):
        with torch.no_grad():
            m.decode(z)
        t0 = time.perf_counter()
        one.run(None, x)
        after.append(time.perf_counter() - t0)
    return {"nodes_by_op": dict(ops.most_common()), "profiler_share_pct_by_op": shares,
            "matrix_products_alone_us": matrix_products_alone(path, torchscript=decode,
                                                              cadence_s=card.block_size / card.sample_rate),
            "one_node_run_us": {"alone": round(1e6 * float(np.median(alone[10:])), 1),
                                "after_torchscript": round(1e6 * float(np.median(after[10:])), 1)},
            "_decode": decode}  # for the int8 file's loop; popped before the JSON is written


def matrix_products_alone(path, runs: int = 600, torchscript=None, cadence_s: float | None = None) -> dict:
    """The model's matrix products (``Gemm``/``MatMul`` with constant weights) as one graph of
    their own, each fed its input shape from outside, against the whole model, timed
    alternating (plain ``session.run``, 1 thread): how much of a block is the products'
    arithmetic and weight reads, how much the nodes around them (caches, im2col, activations);
    and the two floors under the products (:func:`_floors`). ``torchscript``, a callable that
    decodes one block, joins the alternation so the ceiling is a ratio from this one loop.
    ``cadence_s``: the products, the whole model and TorchScript also played one block per
    ``cadence_s``, asleep between (:func:`at_cadence`): the floor as the instrument calls it."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, shape_inference

    m = shape_inference.infer_shapes(onnx.load(str(path)))
    vis = list(m.graph.value_info) + list(m.graph.input)
    shp = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in vis}
    dtype = {v.name: v.type.tensor_type.elem_type for v in vis}
    inits = {i.name: i for i in m.graph.initializer}
    nodes, ins, outs, used, weight_bytes, macs = [], [], [], {}, 0, {False: 0, True: 0}
    for k, n in enumerate(m.graph.node):
        if n.op_type not in ("Gemm", "MatMul", "MatMulInteger") or len(n.input) < 2 or n.input[1] not in inits:
            continue
        macs[n.op_type == "MatMulInteger"] += int(np.prod(shp[n.input[0]][:-1])) * int(np.prod(inits[n.input[1]].dims))
        a = f"in{k}"
        ins.append(helper.make_tensor_value_info(a, dtype[n.input[0]], shp[n.input[0]]))
        if n.op_type == "MatMulInteger":  # int8 weights; the zero points, constants or not, fed too
            rest = list(n.input[2:])
            for z in rest:
                if z and z not in inits and z not in {i.name for i in ins}:
                    ins.append(helper.make_tensor_value_info(z, dtype[z], shp[z]))
        else:
            rest = [x for x in n.input[2:3] if x in inits]  # a bias; a residual input is left out
        out_type = TensorProto.INT32 if n.op_type == "MatMulInteger" else TensorProto.FLOAT
        nodes.append(helper.make_node(n.op_type, [a, n.input[1], *rest], [f"out{k}"],
                                      **{t.name: helper.get_attribute_value(t) for t in n.attribute}))
        outs.append(helper.make_tensor_value_info(f"out{k}", out_type, None))
        for w in [n.input[1], *rest]:
            if w in inits and w not in used:
                used[w] = inits[w]
                weight_bytes += int(np.prod(inits[w].dims)) * (1 if inits[w].data_type in (2, 3) else 4)
    g = helper.make_graph(nodes, "products", ins, outs, list(used.values()))
    floors = _floors(used.values(), macs)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    prods = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                 so, providers=["CPUExecutionProvider"])
    whole = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    sessions = {"products": prods, "whole": whole,
                **{f"floor_{k}": ort.InferenceSession(g.SerializeToString(), so, providers=["CPUExecutionProvider"])
                   for k, g in floors.items()}}
    rng = np.random.default_rng(0)
    types = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}
    feeds = {k: {i.name: np.asarray(rng.random(i.shape) * (100 if "int" in i.type else 1)).astype(types[i.type])
                 for i in se.get_inputs()} for k, se in sessions.items() if k != "whole"}
    feeds["whole"] = {i.name: rng.random([d if isinstance(d, int) else 1 for d in i.shape]).astype(
        np.float64 if i.type == "tensor(double)" else np.float32) * 0.1 for i in whole.get_inputs()}
    calls = {k: (lambda se=se, f=feeds[k]: se.run(None, f)) for k, se in sessions.items()}
    if torchscript is not None:
        calls["torchscript"] = torchscript
    t = {k: [] for k in calls}
    for r in range(runs):
        for k, call in calls.items():
            t0 = time.perf_counter()
            call()
            if r >= 50:
                t[k].append(time.perf_counter() - t0)
    us = {k: round(1e6 * float(np.median(v)), 1) for k, v in t.items()}
    cad = {}
    if cadence_s:
        cad = at_cadence({k: (lambda i, c=c: c()) for k, c in calls.items() if not k.startswith("floor")},
                         cadence_s, blocks=30)
        cad = {"at_cadence_us": {k: round(1e6 * v, 1) for k, v in cad.items()}}
    return {**cad, "products": len(nodes), "weight_mb": round(weight_bytes / 1e6, 2), "products_alone_us": us["products"],
            "whole_model_us": us["whole"], "share_pct": round(100 * us["products"] / us["whole"], 1),
            "weight_read_floor_us": us["floor_read"], "arithmetic_floor_us": us["floor_arithmetic"],
            "floor_us": max(us["floor_read"], us["floor_arithmetic"]), "multiply_adds": sum(macs.values()),
            **({"torchscript_us": us["torchscript"],
                "ceiling_vs_torchscript": round(us["torchscript"] / max(us["floor_read"], us["floor_arithmetic"]), 2),
                "whole_vs_torchscript": round(us["torchscript"] / us["whole"], 2)} if torchscript else {})}


def _floors(weights, macs: dict, cols: int = 256):
    """Two graphs that bound the products from below, per element type (fp32 ``MatMul``, int8
    ``MatMulInteger``): ``read`` holds the same bytes of weights as one matrix-vector product (each
    weight read once, no other node); ``arithmetic`` does the same multiply-adds as one 64-row
    product on weights that stay in cache (this core's best rate). No graph holding these weights
    runs faster than the larger of the two, so TorchScript's block time over it is the most any
    conversion could gain here."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    size = {False: 0, True: 0}
    for w in weights:
        size[w.data_type in (TensorProto.INT8, TensorProto.UINT8)] += int(np.prod(w.dims))

    def graph(shapes):  # {is_int8: (rows, inner)}
        nodes, ins, outs, inits = [], [], [], []
        for is_int8, (rows, inner) in shapes.items():
            if not inner:
                continue
            tag = "int8" if is_int8 else "fp32"
            xt, (op, yt) = ((TensorProto.UINT8, ("MatMulInteger", TensorProto.INT32)) if is_int8
                            else (TensorProto.FLOAT, ("MatMul", TensorProto.FLOAT)))
            w = np.random.default_rng(0).standard_normal((inner, cols))
            inits.append(numpy_helper.from_array(w.astype(np.int8) if is_int8 else w.astype(np.float32), f"w_{tag}"))
            ins.append(helper.make_tensor_value_info(f"x_{tag}", xt, [rows, inner]))
            nodes.append(helper.make_node(op, [f"x_{tag}", f"w_{tag}"], [f"y_{tag}"]))
            outs.append(helper.make_tensor_value_info(f"y_{tag}", yt, None))
        return helper.make_model(helper.make_graph(nodes, "floor", ins, outs, inits),
                                 opset_imports=[helper.make_opsetid("", 17)])

    rows = 64
    return {"read": graph({k: (1, -(-n // cols)) for k, n in size.items()}),
            "arithmetic": graph({k: (rows, -(-macs[k] // (rows * cols))) for k in size if size[k]})}


def graph_nodes(path) -> dict:
    """Nodes of the graph as written and as onnxruntime runs it (after its optimizations)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    written = sum(1 for n in onnx.load(str(path)).graph.node if n.op_type != "Constant")
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.optimized_model_filepath = str(Path(d) / "opt.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        run = len(onnx.load(so.optimized_model_filepath).graph.node)
    return {"written": written, "run": run}


def alternate(n: int, warm: int, players: dict, at_warm=None, seen=None) -> dict[str, list[float]]:
    """Time blocks 0 … n-1 on each player (``label → play(i)``), ``ROUND`` blocks in a row each,
    then the next player the same blocks; the times of blocks ``warm`` and on, per label. The
    first player (TorchScript) opens every round; the others rotate, so none always follows it.
    ``at_warm()`` runs once before the round that starts at ``warm``; ``seen(label, i, result)``
    after each measured block, outside the timing."""
    times = {label: [] for label in players}
    first, rest = list(players)[:1], list(players)[1:]
    for r, start in enumerate(range(0, n, ROUND)):
        if start == warm and at_warm is not None:
            at_warm()
        k = r % len(rest) if rest else 0
        for label in first + rest[k:] + rest[:k]:  # the others take turns right after the first
            play = players[label]
            for i in range(start, min(start + ROUND, n)):
                t0 = time.perf_counter()
                y = play(i)
                dt = time.perf_counter() - t0
                if i >= warm:
                    times[label].append(dt)
                    if seen is not None:
                        seen(label, i, y)
    return times


def by_block(ts_path: Path, work: Path, frames_list, seconds: float) -> list[dict]:
    """The same decoder converted at several block sizes (``--frames`` latent frames per call: 2048,
    4096, … samples) against TorchScript ``decode`` of the same blocks, alternating in rounds, 1 thread each:
    the real-time factor of each engine by block size. nn~ needs 16384-sample buffers on a Pi 4; this
    is the table that says what each block size costs, here."""
    import numpy as np
    import torch

    from pi_synth.model.runtime import Runtime
    from pi_synth.model.card import load_card
    from pi_synth.tools.convert import rave

    torch.set_num_threads(1)
    m = rave.load_ts(ts_path)
    rows = []
    for frames in frames_list:
        out = work / f"{ts_path.stem}.f{frames}.onnx"
        rave.convert(ts_path, out, frames=frames, encoder=False)
        card = load_card(out)
        rt = Runtime(out, use_cache=False)
        k, warm = len(card.controls), 3
        n = max(12, round(seconds * card.sample_rate / card.block_size))
        zs = np.random.default_rng(frames).standard_normal((n + warm, 1, k, frames)).astype(np.float32)
        rave.zero_caches(m)

        def ts(i):
            with torch.no_grad():
                m.decode(torch.from_numpy(zs[i]))

        def ox(i):
            rt.controls[...] = zs[i][0]
            rt.step()

        t = alternate(len(zs), warm, {"ts": ts, "onnx": ox})
        ts_t, ox_t = t["ts"], t["onnx"]
        budget = card.block_size / card.sample_rate
        ts_ms, ox_ms = 1e3 * float(np.median(ts_t)), 1e3 * float(np.median(ox_t))
        rows.append({"fixture": ts_path.stem, "frames": frames, "block_size": card.block_size, "blocks": n,
                     "torchscript_ms": round(ts_ms, 3), "onnx_ms": round(ox_ms, 3),
                     "torchscript_rtf": round(ts_ms / 1e3 / budget, 4), "onnx_rtf": round(ox_ms / 1e3 / budget, 4),
                     "speedup_vs_torchscript": round(ts_ms / ox_ms, 2)})
        out.unlink(missing_ok=True)
    return rows


def pair_one(ts_path: Path, work: Path, blocks: int) -> dict:
    """Audio in: the encoder + decoder as pi-synth plays them (``Runtime.step`` each, and the
    whole ``PairSynth.next_block``: input FIFO, controls, latent offsets, guard) against the
    ``.ts``'s ``forward`` (encode, sample, decode) on the same blocks of a recorded voice,
    alternating in rounds, 1 thread each, from zero state, warm-up excluded."""
    import numpy as np
    import torch

    from pi_synth.audio.backends.wav import read_wav
    from pi_synth.audio.pair import PairSynth
    from pi_synth.model.card import load_card
    from pi_synth.model.runtime import Runtime
    from pi_synth.tools.convert import rave

    torch.set_num_threads(1)
    name = ts_path.stem
    out = work / f"{name}.onnx"
    summary = rave.convert(ts_path, out, encoder=True)
    card = load_card(out)
    enc, dec = Runtime(summary["encoder"], use_cache=False), Runtime(out, use_cache=False)
    enc2, dec2 = Runtime(summary["encoder"], use_cache=False), Runtime(out, use_cache=False)
    pair = PairSynth(dec2, enc2)
    m = rave.load_ts(ts_path)
    B, sr = card.block_size, card.sample_rate
    # the voice, looped (its 48 kHz samples as they are: for timing the rate does not matter,
    # and the RAVE venv need not have soxr)
    x, _ = read_wav(ROOT / "tests" / "data" / "voice.wav")
    x = np.resize(x[:, 0], (blocks + ROUND) * B).reshape(-1, B).astype(np.float32)

    def ts(i):
        with torch.no_grad():
            m.forward(torch.from_numpy(x[i]).reshape(1, 1, -1))

    def onnx(i):
        enc.audio_in[:] = x[i]
        enc.step()
        dec.controls[...] = enc.latent
        dec.step()

    def whole(i):
        pair.feed(x[i])
        pair.next_block()

    enc3, dec3 = Runtime(summary["encoder"], use_cache=False), Runtime(out, use_cache=False)

    def encoder(i):
        enc3.audio_in[:] = x[i]
        enc3.step()

    def decoder(i):
        dec3.controls[...] = enc3.latent
        dec3.step()

    # the int8 pair (`convert rave --quantize`: X.int8.onnx and the X.encoder.int8.onnx it plays with)
    q, qe = work / f"{name}.int8.onnx", rave.encoder_path(work / f"{name}.int8.onnx")
    q_snr = rave.quantize_decoder(out, q)["snr_db"]
    qe_snr = rave.quantize_encoder(summary["encoder"], qe)["snr_db"]
    enc4, dec4 = Runtime(qe, use_cache=False), Runtime(q, use_cache=False)

    def onnx_int8(i):
        enc4.audio_in[:] = x[i]
        enc4.step()
        dec4.controls[...] = enc4.latent
        dec4.step()

    def zero():
        rave.zero_caches(m)
        for rt in (enc, dec, enc2, dec2, enc3, dec3, enc4, dec4):
            rt.reset()

    bb = pair_block_by_block(ts_path, out, summary["encoder"], x, ROUND)
    bb8 = pair_block_by_block(ts_path, q, qe, x, ROUND)
    rave.zero_caches(m)
    t = alternate(len(x), ROUND, {"ts_forward": ts, "encoder_decoder": onnx, "pair_block": whole,
                                  "encoder_alone": encoder, "decoder_alone": decoder,
                                  "encoder_decoder_int8": onnx_int8}, at_warm=zero)
    med = {k: 1e3 * float(np.median(v)) for k, v in t.items()}
    p99 = {k: 1e3 * float(np.percentile(v, 99)) for k, v in t.items()}
    res = {"fixture": name, "block_size": B, "sample_rate": sr, "blocks": blocks, "threads": 1,
           "ms_per_block": {k: round(v, 3) for k, v in med.items()},
           "ms_per_block_p99": {k: round(v, 3) for k, v in p99.items()},
           "speedup_vs_torchscript_forward": round(med["ts_forward"] / med["encoder_decoder"], 2),
           "pair_block_speedup_vs_torchscript_forward": round(med["ts_forward"] / med["pair_block"], 2),
           "rtf_encoder_decoder": round(med["encoder_decoder"] / 1e3 / (B / sr), 4),
           "target_speedup": 3.0}
    res["block_by_block"] = bb
    res["target_met"] = res["speedup_vs_torchscript_forward"] >= 3.0
    res["target_met_block_by_block"] = bb["speedup_vs_torchscript_forward"] >= 3.0
    res["int8"] = {"decoder_snr_db_vs_fp32": q_snr, "encoder_latent_snr_db_vs_fp32": qe_snr,
                           "speedup_vs_torchscript_forward": round(med["ts_forward"] / med["encoder_decoder_int8"], 2),
                           "block_by_block": bb8}
    return res


def pair_block_by_block(ts_path: Path, dec_path: Path, enc_path: Path, x, warm: int) -> dict:
    """Audio in the outsider's way: TorchScript ``forward`` of block i, then a plain
    ``session.run`` of the encoder and one of the decoder on block i (feeds dicts, outputs
    allocated by onnxruntime, state carried by hand, 1 thread, default options otherwise),
    then block i + 1, …: every ONNX call starts with the caches full of TorchScript's data.
    Medians of the blocks from ``warm`` on."""
    import numpy as np
    import torch

    from pi_synth.tools.convert import rave

    enc, dec = Plain(enc_path), Plain(dec_path)
    m = rave.load_ts(ts_path)
    rave.zero_caches(m)

    def forward(i):
        with torch.no_grad():
            m.forward(torch.from_numpy(x[i]).reshape(1, 1, -1))

    def timed(before):
        """Per block from ``warm`` on: (the call before, encoder, encoder + decoder) in seconds."""
        t_before, t_enc, t_pair = [], [], []
        for i in range(len(x)):
            t0 = time.perf_counter()
            before(i)
            t1 = time.perf_counter()
            z = enc(x[i].reshape(1, 1, -1))
            te = time.perf_counter()
            dec(z)
            t2 = time.perf_counter()
            if i >= warm:
                t_before.append(t1 - t0)
                t_enc.append(te - t1)
                t_pair.append(t2 - t1)
        return t_before, t_enc, t_pair

    t_ts, t_enc, t_ox = timed(forward)
    ts_ms, ox_ms = 1e3 * float(np.median(t_ts)), 1e3 * float(np.median(t_ox))
    # the same calls with no TorchScript between them: what the cold start after it costs
    _, t_enc_alone, t_alone = timed(lambda i: None)

    _, _, t_idle = timed(lambda i: idle_wait(ts_ms / 1e3))  # as long as TorchScript's forward
    ms = lambda v: round(1e3 * float(np.median(v)), 3)  # noqa: E731
    # at the block cadence: one block per block period, asleep between (as the instrument plays)
    cad = at_cadence({"ts_forward": lambda i: forward(i % len(x)),
                      "encoder_decoder": lambda i: dec(enc(x[i % len(x)].reshape(1, 1, -1)))},
                     enc.card.block_size / enc.card.sample_rate)
    return {"ms_per_block": {"ts_forward": round(ts_ms, 3), "encoder_decoder": round(ox_ms, 3),
                             "encoder_after_ts": ms(t_enc), "encoder_decoder_alone": ms(t_alone),
                             "encoder_alone": ms(t_enc_alone), "encoder_decoder_after_idle_wait": ms(t_idle)},
            "speedup_vs_torchscript_forward": round(ts_ms / ox_ms, 2),
            "at_cadence": {"ms_per_block": {k: round(1e3 * v, 3) for k, v in cad.items()},
                           "speedup_vs_torchscript_forward": round(cad["ts_forward"] / cad["encoder_decoder"], 2)}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fixtures", nargs="*", default=["raspberry-l128", "v2-l128"])
    p.add_argument("--blocks", type=int, default=300)
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--profile", action="store_true",
                   help="where the fp32 model's time goes: onnxruntime's profiler per op type, for scale a one-node call")
    p.add_argument("--legacy", action="store_true",
                   help="also time the decoder as converted before the rows form (one state per cache)")
    p.add_argument("--frames", type=int, nargs="*", default=[1, 2, 4, 8],
                   help="latent frames per call for the by-block-size table (2048-sample blocks × these)")
    p.add_argument("--seconds", type=float, default=8.0, help="audio timed per block size")
    p.add_argument("--fixtures-dir", default=str(ROOT / "work" / "rave-fixtures"))
    p.add_argument("--baseline", help="a directory of FIXTURE.onnx converted by another checkout (say main): "
                   "timed beside the others both ways, so before and after come out of one run")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--pair", action="store_true",
                   help="audio in: encoder + decoder against TorchScript forward (writes rave_pair.json)")
    args = p.parse_args()
    fx = Path(args.fixtures_dir)
    if args.pair:
        work = ROOT / "work" / "rave-bench"
        work.mkdir(parents=True, exist_ok=True)
        rows = [pair_one(fx / f"{n}.ts", work, args.blocks) for n in args.fixtures]
        for r in rows:
            ms = r["ms_per_block"]
            print(f"{r['fixture']} pair: TorchScript forward {ms['ts_forward']:.3f} ms | ONNX encoder+decoder "
                  f"{ms['encoder_decoder']:.3f} ms = {r['speedup_vs_torchscript_forward']}× (target ≥3×: "
                  f"{'met' if r['target_met'] else 'NOT met'}) | whole PairSynth block {ms['pair_block']:.3f} ms "
                  f"= {r['pair_block_speedup_vs_torchscript_forward']}× | RTF {r['rtf_encoder_decoder']}\n"
                  f"  block by block, plain session.run: TorchScript forward {r['block_by_block']['ms_per_block']['ts_forward']:.3f}"
                  f" ms | ONNX encoder+decoder {r['block_by_block']['ms_per_block']['encoder_decoder']:.3f} ms = "
                  f"{r['block_by_block']['speedup_vs_torchscript_forward']}× (target ≥3×: "
                  f"{'met' if r['target_met_block_by_block'] else 'NOT met'})\n"
                  f"  int8 pair (--quantize; SNR against fp32: decoder {r['int8']['decoder_snr_db_vs_fp32']} dB, "
                  f"encoder latents {r['int8']['encoder_latent_snr_db_vs_fp32']} dB): encoder+decoder "
                  f"{ms['encoder_decoder_int8']:.3f} ms = {r['int8']['speedup_vs_torchscript_forward']}× in rounds, "
                  f"block by block {r['int8']['block_by_block']['ms_per_block']['encoder_decoder']:.3f} ms = "
                  f"{r['int8']['block_by_block']['speedup_vs_torchscript_forward']}×\n"
                  f"  after an idle wait as long as TorchScript's forward instead of it (no memory touched): "
                  f"fp32 {r['block_by_block']['ms_per_block']['encoder_decoder_after_idle_wait']:.3f} ms, int8 "
                  f"{r['int8']['block_by_block']['ms_per_block']['encoder_decoder_after_idle_wait']:.3f} ms; "
                  f"with nothing between: fp32 {r['block_by_block']['ms_per_block']['encoder_decoder_alone']:.3f} ms\n"
                  f"  at the block cadence (one block per {1e3 * r['block_size'] / r['sample_rate']:.1f} ms, asleep "
                  f"between, each engine alone): TorchScript forward "
                  f"{r['block_by_block']['at_cadence']['ms_per_block']['ts_forward']:.3f} ms | fp32 pair "
                  f"{r['block_by_block']['at_cadence']['ms_per_block']['encoder_decoder']:.3f} ms = "
                  f"{r['block_by_block']['at_cadence']['speedup_vs_torchscript_forward']}× | int8 pair "
                  f"{r['int8']['block_by_block']['at_cadence']['ms_per_block']['encoder_decoder']:.3f} ms = "
                  f"{r['int8']['block_by_block']['at_cadence']['speedup_vs_torchscript_forward']}×",
                  flush=True)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "rave_pair.json").write_text(json.dumps({"cpu": _cpu(), "loadavg": list(os.getloadavg()),
                                                       "results": rows}, indent=2))
        print(f"wrote {out / 'rave_pair.json'}")
        return 0
    missing = [n for n in args.fixtures if not (fx / f"{n}.ts").exists()]
    if missing:
        subprocess.run(["bash", str(ROOT / "scripts" / "rave" / "make-fixtures.sh"), *missing], check=True)
    work = ROOT / "work" / "rave-bench"
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.fixtures:
        r = bench_one(fx / f"{n}.ts", work, args.blocks, not args.no_int8, args.legacy,
                      Path(args.baseline) if args.baseline else None)
        if args.profile:
            r["profile"] = profile(fx / f"{n}.ts", work / f"{n}.onnx")
            decode = r["profile"].pop("_decode")
            if (work / f"{n}.int8.onnx").exists() and not args.no_int8:
                r["profile"]["int8_matrix_products_alone_us"] = matrix_products_alone(
                    work / f"{n}.int8.onnx", torchscript=decode)
        results.append(r)
        ms, sp, gf = r["ms_per_block"], r["speedup_vs_torchscript"], r["gflops"]
        nodes = r["nodes"]
        line = (f"{n} ({r['latents']} latents, block {r['block_size']}): {r['multiply_adds_per_block'] / 1e6:.1f} M "
                f"multiply-adds/block, {nodes['fp32']['run']} nodes, {r['states']} state pair(s)\n"
                f"  rounds of {ROUND}: TorchScript {ms['ts']:.3f} ms ({gf['ts']} GFLOP/s) | ONNX fp32 "
                f"{ms['fp32']:.3f} ms ({gf['fp32']} GFLOP/s) = {sp['fp32']}× | max err {r['max_abs_err_fp32']:.1e}")
        if "fp32_legacy" in ms:
            line += (f" | before (legacy, {nodes['fp32_legacy']['run']} nodes, {r['states_legacy']} state pairs) "
                     f"{ms['fp32_legacy']:.3f} ms = {sp['fp32_legacy']}×")
        if "baseline" in ms:
            line += (f" | baseline ({nodes['baseline']['run']} nodes) {ms['baseline']:.3f} ms = {sp['baseline']}×")
        if "int8" in ms:
            line += (f" | int8 ({r['int8_nodes']} matrix products, {nodes['int8']['run']} nodes) {ms['int8']:.3f} ms "
                     f"= {sp['int8']}×, SNR {r['int8_snr_db']} dB against fp32")
        bb = r["block_by_block"]
        bms, bsp = bb["ms_per_block"], bb["speedup_vs_torchscript"]
        line += (f"\n  block by block, plain session.run: TorchScript {bms['ts']:.3f} ms | ONNX fp32 "
                 f"{bms['fp32']:.3f} ms = {bsp['fp32']}× | max err {bb['max_abs_err']['fp32']:.1e}")
        if "fp32_legacy" in bms:
            line += f" | before (legacy) {bms['fp32_legacy']:.3f} ms = {bsp['fp32_legacy']}×"
        if "baseline" in bms:
            line += f" | baseline {bms['baseline']:.3f} ms = {bsp['baseline']}×"
        if "int8" in bms:
            line += f" | int8 {bms['int8']:.3f} ms = {bsp['int8']}×"
        idle = bb["ms_per_block_after_idle_wait"]
        line += ("\n  after an idle wait as long as TorchScript's decode instead of it (no memory touched): "
                 + " | ".join(f"ONNX {k} {v:.3f} ms" for k, v in idle.items())
                 + f" (rounds: fp32 {ms['fp32']:.3f} ms)")
        cad = bb["at_cadence"]
        line += (f"\n  at the block cadence (one block per {r['realtime_budget_ms']} ms, asleep between, each engine "
                 f"alone): TorchScript {cad['ms_per_block']['ts']:.3f} ms | "
                 + " | ".join(f"ONNX {k} {v:.3f} ms = {cad['speedup_vs_torchscript'][k]}×"
                              for k, v in cad["ms_per_block"].items() if k != "ts"))
        if "target_speedup" in r:
            for label, met in r["target_met"].items():
                line += (f"\n  target ≥{r['target_speedup']}× ({label}): rounds {'met' if met['rounds'] else 'NOT met'}, "
                         f"block by block {'met' if met['block_by_block'] else 'NOT met'}")
        if "profile" in r:
            pr = r["profile"]
            line += ("\n  profile (share of kernel time by op type, profiler-inflated): "
                     + ", ".join(f"{k} {v}% ({pr['nodes_by_op'].get(k, 0)} nodes)"
                                 for k, v in pr["profiler_share_pct_by_op"].items())
                     + f"\n  its {pr['matrix_products_alone_us']['products']} matrix products alone "
                     f"({pr['matrix_products_alone_us']['weight_mb']} MB of weights): "
                     f"{pr['matrix_products_alone_us']['products_alone_us']} µs of the whole model's "
                     f"{pr['matrix_products_alone_us']['whole_model_us']} µs "
                     f"({pr['matrix_products_alone_us']['share_pct']} %)\n  floors: its weights read once as one "
                     f"matrix-vector product {pr['matrix_products_alone_us']['weight_read_floor_us']} µs, its "
                     f"{pr['matrix_products_alone_us']['multiply_adds'] / 1e6:.1f} M multiply-adds at this core's best "
                     f"rate {pr['matrix_products_alone_us']['arithmetic_floor_us']} µs: no conversion runs faster than "
                     f"{pr['matrix_products_alone_us']['ceiling_vs_torchscript']}× TorchScript's block "
                     f"({pr['matrix_products_alone_us']['torchscript_us']} µs in this loop; the whole model "
                     f"{pr['matrix_products_alone_us']['whole_vs_torchscript']}×)"
                     + (f"; int8 file: {pr['int8_matrix_products_alone_us']['products']} products "
                        f"{pr['int8_matrix_products_alone_us']['products_alone_us']} µs of "
                        f"{pr['int8_matrix_products_alone_us']['whole_model_us']} µs, floors read "
                        f"{pr['int8_matrix_products_alone_us']['weight_read_floor_us']} µs / arithmetic "
                        f"{pr['int8_matrix_products_alone_us']['arithmetic_floor_us']} µs "
                        f"(ceiling {pr['int8_matrix_products_alone_us']['ceiling_vs_torchscript']}×, "
                        f"whole {pr['int8_matrix_products_alone_us']['whole_vs_torchscript']}×)"
                        if "int8_matrix_products_alone_us" in pr else "")
                     + f"\n  a one-node session.run: {pr['one_node_run_us']['alone']} µs alone, "
                     f"{pr['one_node_run_us']['after_torchscript']} µs right after a TorchScript decode")
            c = pr["matrix_products_alone_us"].get("at_cadence_us")
            if c:
                line += (f"\n  at the block cadence: TorchScript {c['torchscript']} µs | the whole model {c['whole']} µs"
                         f" = {c['torchscript'] / c['whole']:.2f}× | its matrix products alone {c['products']} µs = "
                         f"{c['torchscript'] / c['products']:.2f}× (the floor of any conversion, as it is called)")
        print(line, flush=True)
    sweep = []
    for n in args.fixtures if args.frames else []:
        rows = by_block(fx / f"{n}.ts", work, args.frames, args.seconds)
        sweep += rows
        for r in rows:
            print(f"{n} block {r['block_size']}: TorchScript RTF {r['torchscript_rtf']}, ONNX RTF {r['onnx_rtf']} "
                  f"({r['speedup_vs_torchscript']}×)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"blocks": args.blocks, "threads": 1, "cpu": _cpu(), "loadavg_end": list(os.getloadavg()),
            "results": results, "by_block": sweep}
    (out / "rave.json").write_text(json.dumps(meta, indent=2))
    print(f"wrote {out / 'rave.json'}")
    return 0


def _cpu() -> str:
    return machine()["cpu"]


if __name__ == "__main__":
    sys.exit(main())
