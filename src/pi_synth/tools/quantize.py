"""Static int8 quantization of a pi-synth model, with a report that says whether it paid off.

    from pi_synth.tools.quantize import quantize_model
    report = quantize_model("models/flute.fp32.onnx", "models/flute.int8.onnx")

``quantize_model(in_path, out_path, *, fmt="qdq", calibration_blocks=None, exclude=None) -> dict``

- ``fmt``: ``"qdq"`` (default; S8S8 QuantizeLinear/DequantizeLinear pairs — the format onnxruntime runs as real
  int8 kernels on ARM, i.e. on the Pi), ``"qoperator"`` (QLinearConv/QLinearMatMul with uint8 activations —
  the format onnxruntime runs as int8 on x86, and on ARM through MLAS's U8X8 kernels) or ``"dynamic"``
  (ConvInteger/MatMulInteger: int8 per-channel weights, each call's activations quantized to uint8 over that
  call's own range, the int32 sums turned back to float exactly — no calibration and no rounding of the
  outputs; the shipped morph voice uses it: a calibrated static range rounds its level finely enough at most
  knob positions, not at all).
- ``calibration_blocks``: ``None`` (a realistic control sequence made from the card: notes with loudness
  envelopes and legato changes for pitch/loudness voices, slow random walks over each control's range
  otherwise), an ``int`` (that many blocks of it), or an array ``[n_blocks, n_controls, control_frames]``.
  Calibration feeds the blocks one by one with the state carried, exactly as the engine plays them; a list of
  such arrays plays each from zero state. (``"dynamic"`` needs none; the report's static twins do.)
- ``exclude``: node names kept in float32. ``None`` picks them automatically (:func:`default_exclude`): every
  node whose name contains ``synth`` (pi-synth's exporters put the DSP under a ``synth`` module: oscillators and
  noise filters must stay exact), and the network's first and last Conv/MatMul/Gemm (the first sees the raw
  controls, the last turns small errors into large amplitude errors). Only Conv, MatMul and Gemm are
  quantized; everything else stays float32.

``convs_as_matmul(in_path, out_path, names)`` rewrites one-output-frame Conv nodes (a streaming causal conv
fed its cache and one new frame) as Gather + MatMul, the same function: onnxruntime fuses a dynamically
quantized MatMul into one int8 kernel (DynamicQuantizeMatMul), where a dynamic Conv costs more in its extra
nodes than its int8 arithmetic saves. The shipped morph int8 file is made this way.

``snr_quantizing(in_path, node_sets)`` gives, for each set of node names, the SNR of an int8 file that quantizes
only those: what each layer costs, so an exporter can quantize the cheap ones (``scripts/models/note_export.py``).

The report (a JSON-able dict) holds the sizes, the SNR of the int8 output against fp32 over a held-out
realistic sequence (a different seed from calibration), and the median µs per block, 1 thread, of fp32, QDQ
and QOperator on *this* CPU. Caveat written into the report: on x86 onnxruntime's CPU provider does not run
S8S8 QDQ convolutions as int8 kernels, so QDQ timings here say little about a Pi; QOperator is the format this
x86 CPU runs as int8 and the honest stand-in for "is int8 faster".

The card (metadata ``pi_synth``) is copied into the int8 model with ``"precision": "int8"``, the measured
``"snr_db"`` and ``"quant_format"`` added. :func:`format_report` turns the report into the lines
``pi-synth quantize --report`` prints. Errors a user can fix raise :class:`~pi_synth.errors.CardError` /
:class:`~pi_synth.errors.ModelError` (both ``ValueError``). Needs ``onnx`` and ``onnxruntime`` (with its
``quantization`` package); never torch. Takes about a minute for a shipped model (calibration, two
quantizations, SNR, timing).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pi_synth.bench import control_sequence, snr_db
from pi_synth.errors import CardError, ModelError
from pi_synth.model.card import CARD_KEY, card_json, write_card
from pi_synth.model.runtime import Runtime
from pi_synth.model.session import open_session, session_options

QUANT_OPS = ("Conv", "MatMul", "Gemm")
X86_CAVEAT = (
    "Timed on {cpu}. On x86 onnxruntime's CPU provider keeps S8S8 QDQ Conv as dequantize -> float conv -> "
    "quantize, so the QDQ figure here says little about a Raspberry Pi, where onnxruntime runs QDQ as int8 "
    "kernels (dot-product kernels on Cortex-A76, plain NEON on A72/A53). QOperator is the format this CPU "
    "runs as int8."
)

_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
           "tensor(int32)": np.int32, "tensor(float16)": np.float16}


def read_card(model, where: str = "model") -> dict:
    """The card JSON of an in-memory ``onnx.ModelProto`` (files: :func:`~pi_synth.model.card.card_json`)."""
    for p in model.metadata_props:
        if p.key == CARD_KEY:
            try:
                return json.loads(p.value)
            except json.JSONDecodeError as e:
                raise CardError(f"{where}: model card is not valid JSON ({e})") from None
    raise CardError(f"{where}: no pi-synth model card (ONNX metadata key {CARD_KEY!r}); quantize needs the card "
                    "to know the controls and state")


def _session(path, threads: int = 1):
    return open_session(path, threads)


def _zero_state(sess, card):
    """One voice's zero state: a dynamic leading dimension (``voices``) is run with one row."""
    specs = {a.name: a for a in sess.get_inputs()}
    return {s_in: np.zeros([d if isinstance(d, int) else 1 for d in specs[s_in].shape], _DTYPES[specs[s_in].type])
            for s_in, _ in card["state"]}


def render(sess, card: dict, controls: np.ndarray, *, feeds_out: list | None = None,
           timings: list | None = None) -> np.ndarray:
    """Play ``controls`` [n, n_controls, frames] block by block from zero state; returns [channels, samples]."""
    cin, aout = card["inputs"]["controls"], card["outputs"]["audio"]
    state = _zero_state(sess, card)
    outs = [aout] + [o for _, o in card["state"]]
    audio = []
    for block in controls:
        feed = {cin: block[None].astype(np.float32), **state}
        if feeds_out is not None:
            feeds_out.append(feed)
        t0 = time.perf_counter()
        res = sess.run(outs, feed)
        if timings is not None:
            timings.append(time.perf_counter() - t0)
        audio.append(res[0][0])
        state = {s_in: r for (s_in, _), r in zip(card["state"], res[1:])}
    return np.concatenate(audio, axis=-1)


def bench(paths: dict, card: dict, controls: np.ndarray, threads: int = 1, repeats: int = 3) -> dict:
    """Median and p99 µs per block of each model in ``paths`` ({label: path}), 1 thread by default.

    The models are stepped interleaved, block by block, each with its own state, so load from other processes
    hits them equally and the ratios stay fair on a busy machine; the best of ``repeats`` passes is kept.
    """
    cin, aout = card["inputs"]["controls"], card["outputs"]["audio"]
    sessions = {k: _session(p, threads) for k, p in paths.items()}
    outs = [aout] + [o for _, o in card["state"]]
    block_us = 1e6 * card["block_size"] / card["sample_rate"]
    best: dict[str, dict] = {}
    for _ in range(repeats):
        states = {k: _zero_state(s, card) for k, s in sessions.items()}
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for i, block in enumerate(controls):
            for k, sess in sessions.items():
                feed = {cin: block[None].astype(np.float32), **states[k]}
                t0 = time.perf_counter()
                res = sess.run(outs, feed)
                if i >= 20:  # warm-up
                    times[k].append(time.perf_counter() - t0)
                states[k] = {s_in: r for (s_in, _), r in zip(card["state"], res[1:])}
        for k, ts in times.items():
            us = np.array(ts) * 1e6
            med = float(np.median(us))
            if k not in best or med < best[k]["us_per_block"]:
                best[k] = {"us_per_block": round(med, 1), "us_p99": round(float(np.percentile(us, 99)), 1),
                           "rtf": round(med / block_us, 4)}
    return best


# --------------------------------------------------------------------------------------------- quantization
def default_exclude(model) -> list[str]:
    """DSP nodes (name contains 'synth'), and the network's first and last quantizable nodes: the first sees the
    raw controls (8 bits over a pitch range is ~17 cents a step), the last turns small errors into amplitude
    errors."""
    excl = [n.name for n in model.graph.node if "synth" in n.name.lower()]
    net = [n.name for n in model.graph.node if n.op_type in QUANT_OPS and n.name not in excl]
    if net:
        excl += sorted({net[0], net[-1]})
    return excl


FORMATS = ("qdq", "qoperator", "dynamic")


def _quantize(src: Path, dst: Path, fmt: str, feeds: list[dict], exclude, method: str = "minmax") -> list[str]:
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    model = onnx.load(str(src))
    excl = default_exclude(model) if exclude is None else list(exclude)
    # onnxruntime's pre-pass renames a MatMul it fuses with the Add after it: excluded under both names
    names = excl + [f"{n}/MatMulAddFusion_MatMul" for n in excl]
    if fmt == "dynamic":
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=list(QUANT_OPS), per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_exclude=names)
        return excl
    qdq = fmt == "qdq"
    quantize_static(
        str(src), str(dst), Reader(),
        quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
        op_types_to_quantize=list(QUANT_OPS),
        per_channel=True,
        activation_type=QuantType.QInt8 if qdq else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=names,
        calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                          "entropy": CalibrationMethod.Entropy}[method],
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                       "CalibPercentile": 99.999, "CalibMovingAverage": False},
    )
    return excl


def convs_as_matmul(in_path, out_path, names) -> dict[str, str]:
    """Write ``in_path`` with each Conv in ``names`` (stride 1, no padding, one group, an input exactly one
    output frame long: ``(kernel - 1) * dilation + 1`` frames) as Gather(its taps) -> Reshape -> MatMul -> Add
    (bias) -> Reshape: the same function, as a MatMul. Returns {conv name: MatMul name}."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(in_path))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in onnx.shape_inference.infer_shapes(m).graph.value_info}
    init = {i.name: i for i in m.graph.initializer}
    names, done, nodes = set(names), {}, []
    for n in m.graph.node:
        if n.name not in names:
            nodes.append(n)
            continue
        at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        W = numpy_helper.to_array(init[n.input[1]])
        o, c, k = W.shape
        d = at.get("dilations", [1])[0]
        length = (shapes.get(n.input[0]) or [0, 0, 0])[-1]
        if (at.get("group", 1) != 1 or any(at.get("pads", [0])) or at.get("strides", [1]) != [1]
                or length != (k - 1) * d + 1):
            raise ModelError(f"{n.name}: not a one-output-frame conv (input length {length}, kernel {k}, "
                             f"dilation {d}); only those become a MatMul")
        B = numpy_helper.to_array(init[n.input[2]]) if len(n.input) > 2 else np.zeros(o, W.dtype)
        p = n.name.rsplit("/", 1)[0] + "/mm_"
        mm = n.name.rsplit("/", 1)[0] + "/MatMul"
        m.graph.initializer.extend([
            numpy_helper.from_array(np.arange(k, dtype=np.int64) * d, p + "taps"),
            numpy_helper.from_array(np.array([1, c * k], np.int64), p + "flat"),
            numpy_helper.from_array(np.array([1, o, 1], np.int64), p + "shape"),
            numpy_helper.from_array(np.ascontiguousarray(W.reshape(o, c * k).T), p + "W"),
            numpy_helper.from_array(B, p + "B")])
        nodes += [helper.make_node("Gather", [n.input[0], p + "taps"], [p + "g"], axis=2, name=p + "Gather"),
                  helper.make_node("Reshape", [p + "g", p + "flat"], [p + "x"], name=p + "Flat"),
                  helper.make_node("MatMul", [p + "x", p + "W"], [p + "y"], name=mm),
                  helper.make_node("Add", [p + "y", p + "B"], [p + "yb"], name=p + "Bias"),
                  helper.make_node("Reshape", [p + "yb", p + "shape"], [n.output[0]], name=p + "Out")]
        done[n.name] = mm
    if set(done) != names:
        raise ModelError(f"{in_path}: no Conv node named {', '.join(sorted(names - set(done)))}")
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    used = {i for n in m.graph.node for i in n.input}
    keep = [i for i in m.graph.initializer if i.name in used]  # the convs' own weights are copied, not shared
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    onnx.save(m, str(out_path))
    return done


def _calibrate(in_path: Path, card: dict, calibration_blocks, eval_seconds: float, threads: int):
    """Calibration feeds (every block's inputs, state carried), the held-out control sequence and
    its fp32 render."""
    sr, block = card["sample_rate"], card["block_size"]
    n_ctrl, frames = len(card["controls"]), card["control_frames"]
    if calibration_blocks is None or isinstance(calibration_blocks, int):
        n = calibration_blocks or max(64, int(8.0 * sr / block))
        calibs = [control_sequence(card, n, seed=1)]
    else:
        calibs = [np.asarray(c, np.float32) for c in (
            calibration_blocks if isinstance(calibration_blocks, (list, tuple)) else [calibration_blocks])]
        for calib in calibs:
            if calib.ndim != 3 or calib.shape[1:] != (n_ctrl, frames):
                raise ValueError(f"calibration_blocks must be [n_blocks, {n_ctrl}, {frames}], got {list(calib.shape)}")
    evalseq = control_sequence(card, max(64, int(eval_seconds * sr / block)), seed=2)
    fp32 = _session(in_path, threads)
    feeds: list[dict] = []
    for calib in calibs:
        render(fp32, card, calib, feeds_out=feeds)
    return feeds, evalseq, render(fp32, card, evalseq)


def _pre_process(in_path: Path, out: Path) -> tuple[Path, str | None]:
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(in_path), str(out), skip_symbolic_shape=True)
        return out, None
    except Exception as e:  # noqa: BLE001 - pre-processing is an optimisation only
        return in_path, f"skipped: {e}"


def snr_quantizing(in_path, node_sets: list[list[str]], *, calibration_blocks=None, threads: int = 1,
                   eval_seconds: float = 8.0) -> list[float]:
    """For each set of Conv/MatMul/Gemm node names, the SNR (dB, against fp32, on the held-out
    sequence) of a QDQ int8 file that quantizes those nodes and no other: how much each layer,
    or a choice of layers, costs. Calibrates once for all sets."""
    import onnx

    in_path = Path(in_path)
    model = onnx.load(str(in_path))
    card = card_json(in_path)
    quantizable = [n.name for n in model.graph.node if n.op_type in QUANT_OPS]
    feeds, evalseq, ref = _calibrate(in_path, card, calibration_blocks, eval_seconds, threads)
    out = []
    with tempfile.TemporaryDirectory() as tmp, quiet_onnxruntime():
        pre, _ = _pre_process(in_path, Path(tmp, "pre.onnx"))
        q = Path(tmp, "q.onnx")
        for names in node_sets:
            _quantize(pre, q, "qdq", feeds, [n for n in quantizable if n not in names])
            out.append(round(snr_db(ref, render(_session(q, threads), card, evalseq)), 2))
    return out


def no_int8_kernel(path) -> dict[str, Any]:
    """The weighted ops the quantizer leaves float32 because onnxruntime has no int8 kernel
    for them (ConvTranspose, LSTM, …): ``{"ops": {op: count}, "weight_share": their share
    of the weights}`` — a model whose weights sit there will not shrink or speed up."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    size = {t.name: numpy_helper.to_array(t).nbytes for t in model.graph.initializer}
    total = sum(size.values()) or 1
    ops: dict[str, int] = {}
    held = 0
    for n in model.graph.node:
        w = sum(size.get(i, 0) for i in n.input[1:])
        if n.op_type not in QUANT_OPS and w >= 4096:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
            held += w
    return {"ops": ops, "weight_share": round(held / total, 3)}


def quantize_model(in_path, out_path, *, fmt: str = "qdq", calibration_blocks=None, exclude=None,
                   threads: int = 1, eval_seconds: float = 8.0) -> dict[str, Any]:
    """Quantize ``in_path`` (fp32 pi-synth model) to ``out_path`` and return the report (see module doc)."""
    import onnx

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(map(repr, FORMATS))}, got {fmt!r}")
    in_path, out_path = Path(in_path), Path(out_path)
    try:
        onnx.load(str(in_path))  # a file onnx cannot read is refused before any work
    except Exception as e:  # noqa: BLE001 - onnx raises several types for unreadable files
        raise ModelError(f"{in_path}: cannot read as ONNX ({e})") from None
    card = card_json(in_path)
    if card.get("precision") == "int8":
        raise ModelError(f"{in_path}: already int8; quantize the fp32 model")
    feeds, evalseq, ref = _calibrate(in_path, card, calibration_blocks, eval_seconds, threads)
    with quiet_onnxruntime():
        return _quantize_model(in_path, out_path, card, fmt, feeds, evalseq, ref, exclude, threads)


class _Advice(logging.Filter):
    """onnxruntime's quantizer logs, through the root logger, a link to its docs about a
    pre-processing step we run ourselves (or that failed, which the report says)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def quiet_onnxruntime():
    """No onnxruntime advice or graph-cleaning warnings on the user's screen while quantizing."""
    import onnxruntime as ort

    advice = _Advice()
    logging.getLogger().addFilter(advice)
    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(advice)


def _quantize_model(in_path, out_path, card, fmt, feeds, evalseq, ref, exclude, threads) -> dict[str, Any]:
    """quantize_model's work once calibrated: both formats, their SNR and speed, the card."""
    report: dict[str, Any] = {"model": card.get("name"), "format": fmt, "fp32_bytes": in_path.stat().st_size}
    with tempfile.TemporaryDirectory() as tmp:
        pre, why = _pre_process(in_path, Path(tmp, "pre.onnx"))
        if why:
            report["pre_process"] = why
        paths = {}
        for f in ("qdq", "qoperator") + ((fmt,) if fmt not in ("qdq", "qoperator") else ()):
            paths[f] = out_path if f == fmt else Path(tmp, f"{f}.onnx")
            excl = _quantize(pre, paths[f], f, feeds, exclude)
            if f == fmt:
                report["fp32_nodes"] = excl
        report["snr_db"] = {}
        for f, p in paths.items():
            report["snr_db"][f] = round(snr_db(ref, render(_session(p, threads), card, evalseq)), 2)
        speed = bench({"fp32": in_path, **paths}, card, evalseq[:600], threads)
        report["speed"] = speed
        report["speedup"] = {f: round(speed["fp32"]["us_per_block"] / speed[f]["us_per_block"], 3) for f in paths}

        if not quantized_nodes(out_path):
            out_path.unlink(missing_ok=True)
            kept = report.get("fp32_nodes") or []
            raise ModelError(f"{in_path}: nothing to quantize (no Conv, MatMul or Gemm worth int8"
                             + (f"; kept float32: {', '.join(kept[:3])}{' …' if len(kept) > 3 else ''}" if kept else "")
                             + "); the fp32 model is the one to play")
        write_card(out_path, dict(card, precision="int8", snr_db=report["snr_db"][fmt], quant_format=fmt))
    report["int8_bytes"] = out_path.stat().st_size
    report["no_int8_kernel"] = no_int8_kernel(in_path)
    # the most int8 could give this graph on any CPU (see int8_ceiling)
    try:
        report["ceiling"] = round(int8_ceiling(in_path, out_path, blocks=300, threads=threads)["ceiling"], 3)
    except Exception as e:  # noqa: BLE001 - a graph the rewrite cannot handle: the report says so
        report["ceiling"] = f"not measured ({type(e).__name__}: {e})"
    report["threads"] = threads
    report["onnxruntime"] = _ort_version()
    report["cpu"] = _cpu_name()
    report["caveat"] = X86_CAVEAT.format(cpu=report["cpu"]) if _is_x86() else (
        f"Timed on {report['cpu']}: QDQ runs as int8 kernels on ARM.")
    return report


def quantized_nodes(int8_path) -> list[str]:
    """The fp32 graph's Conv/MatMul/Gemm nodes an int8 file runs quantized. QDQ: those fed
    by a DequantizeLinear (the others were kept in float32). QOperator: the QLinearConv /
    QLinearMatMul / …Integer nodes (dynamic: ConvInteger / MatMulInteger), which onnxruntime's quantizer names
    ``<fp32 name>_quant``."""
    import onnx

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
    file is made of those kernels already; a dynamic file's MatMulInteger becomes one
    DynamicQuantizeMatMul kernel."""
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
            "int8_kernels": sum(op in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
                                       "DynamicQuantizeMatMul", "MatMulIntegerToFloat") for op in ops)}


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




def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _cpu_name() -> str:
    from pi_synth.model.precision import cpu_model

    return cpu_model()


def _no_kernel_line(nk: dict | None) -> list[str]:
    if not nk or not nk["ops"]:
        return []
    ops = ", ".join(f"{op} ×{k}" for op, k in nk["ops"].items())
    share = nk["weight_share"]
    return [f"left float32, no int8 kernel in onnxruntime: {ops} ({100 * share:.0f}% of the weights)"
            + ("; int8 cannot make this model much smaller or faster" if share >= 0.5 else "")]


def format_report(report: dict) -> str:
    """Human-readable lines for ``pi-synth quantize --report``."""
    s = report["speed"]
    dsp = [n for n in report["fp32_nodes"] if "synth" in n.lower()]
    label = {"qdq": "QDQ", "qoperator": "QOperator", "dynamic": "dynamic"}
    fmts = [f for f in FORMATS if f in report["snr_db"]]
    lines = [
        f"model {report['model']}: {report['fp32_bytes'] / 1e6:.2f} MB fp32 -> {report['int8_bytes'] / 1e6:.2f} MB "
        f"int8 ({report['format']})",
        "SNR vs fp32: " + ", ".join(f"{label[f]} {report['snr_db'][f]} dB" for f in fmts),
        "µs/block (1 thread): fp32 " + str(s["fp32"]["us_per_block"]) + ", " + ", ".join(
            f"{label[f]} {s[f]['us_per_block']} (x{report['speedup'][f]})" for f in fmts),
        *([f"ceiling (fp32 with the quantized ops made free): x{report['ceiling']}; int8 stays below it"]
          if isinstance(report.get("ceiling"), float) else []),
        "kept float32: " + (", ".join(
            ([f"{len(dsp)} synthesis nodes"] if dsp else []) + [n for n in report["fp32_nodes"] if n not in dsp])
            or "nothing"),
        *_no_kernel_line(report.get("no_int8_kernel")),
        report["caveat"],
    ]
    return os.linesep.join(lines)
