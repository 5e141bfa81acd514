"""Static int8 quantization of a pi-synth model, with a report that says whether it paid off.

    from pi_synth.quantize import quantize_model
    report = quantize_model("models/flute.fp32.onnx", "models/flute.int8.onnx")

``quantize_model(in_path, out_path, *, fmt="qdq", calibration_blocks=None, exclude=None) -> dict``

- ``fmt``: ``"qdq"`` (default; S8S8 QuantizeLinear/DequantizeLinear pairs — the format onnxruntime runs as real
  int8 kernels on ARM, i.e. on the Pi) or ``"qoperator"`` (QLinearConv/QLinearMatMul with uint8 activations —
  the format onnxruntime runs as int8 on x86, and on ARM through MLAS's U8X8 kernels: the shipped pads use it).
- ``calibration_blocks``: ``None`` (a realistic control sequence made from the card: notes with loudness
  envelopes and legato changes for pitch/loudness voices, slow random walks over each control's range
  otherwise), an ``int`` (that many blocks of it), or an array ``[n_blocks, n_controls, control_frames]``.
  Calibration feeds the blocks one by one with the state carried, exactly as the engine plays them.
- ``exclude``: node names kept in float32. ``None`` picks them automatically (:func:`default_exclude`): every
  node whose name contains ``synth`` (pi-synth's exporters put the DSP under a ``synth`` module: oscillators and
  noise filters must stay exact), and the network's first and last Conv/MatMul/Gemm (the first sees the raw
  controls, the last turns small errors into large amplitude errors). Only Conv, MatMul and Gemm are
  quantized; everything else stays float32.

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

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pi_synth.errors import CardError, ModelError

CARD_KEY = "pi_synth"
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
    """The card JSON of an ``onnx.ModelProto`` (:class:`CardError` if missing or not JSON)."""
    for p in model.metadata_props:
        if p.key == CARD_KEY:
            try:
                return json.loads(p.value)
            except json.JSONDecodeError as e:
                raise CardError(f"{where}: model card is not valid JSON ({e})") from None
    raise CardError(f"{where}: no pi-synth model card (ONNX metadata key {CARD_KEY!r}); quantize needs the card "
                    "to know the controls and state")


def write_card(model, card: dict) -> None:
    for p in list(model.metadata_props):
        if p.key == CARD_KEY:
            model.metadata_props.remove(p)
    entry = model.metadata_props.add()
    entry.key, entry.value = CARD_KEY, json.dumps(card)


# ---------------------------------------------------------------------------------------------- control data
def control_sequence(card: dict, n_blocks: int, seed: int = 0) -> np.ndarray:
    """A realistic control sequence ``[n_blocks, n_controls, control_frames]`` (float32) for this card."""
    rng = np.random.default_rng(seed)
    ctrls = card["controls"]
    frames = int(card["control_frames"])
    block_s = card["block_size"] / card["sample_rate"]
    names = [c["name"] for c in ctrls]
    out = np.empty((n_blocks, len(ctrls), frames), np.float32)
    t = np.arange(n_blocks * frames) * block_s / frames
    for i, c in enumerate(ctrls):
        out[:, i, :] = c["default"]
        lo, hi = float(c["min"]), float(c["max"])
        # slow random walk: random points every 0.1-1 s, linearly joined
        knots_t = np.cumsum(rng.uniform(0.1, 1.0, size=int(t[-1] / 0.1) + 3)) - 0.1
        knots_v = rng.uniform(0, 1, size=len(knots_t))
        u = np.interp(t, knots_t, knots_v)
        if c.get("curve") == "log" and lo > 0 and hi > 0:
            v = lo * (hi / lo) ** u
        else:
            v = lo + (hi - lo) * u
        out[:, i, :] = v.reshape(n_blocks, frames)
    if "pitch" in names and "loudness" in names:
        ip, il = names.index("pitch"), names.index("loudness")
        cp, cl = ctrls[ip], ctrls[il]
        pitch = np.empty(len(t))
        loud = np.full(len(t), float(cl["min"]))
        k, lo_db, hi_db = 0, max(cl["min"], -45.0), min(cl["max"], -10.0)
        note = rng.uniform(np.log(cp["min"]), np.log(cp["max"]))
        while k < len(t):
            dur = min(int(rng.uniform(0.08, 0.7) / block_s * frames) + 1, len(t) - k)
            start = float(cl["min"])
            if k > 0 and rng.random() < 0.5:  # legato: move the pitch a few semitones, keep sounding
                note = np.clip(note + rng.integers(-7, 8) * np.log(2) / 12, np.log(cp["min"]), np.log(cp["max"]))
                start = loud[k - 1]
            else:
                note = rng.uniform(np.log(cp["min"]), np.log(cp["max"]))
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
        out[:, ip, :] = pitch[: len(t)].reshape(n_blocks, frames)
        out[:, il, :] = loud.reshape(n_blocks, frames)
    return out


# ------------------------------------------------------------------------------------------------- sessions
def _session(path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


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


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    err = float(np.sum((ref.astype(np.float64) - test) ** 2))
    return float("inf") if err == 0 else float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / err))


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


def _quantize(src: Path, dst: Path, fmt: str, feeds: list[dict], exclude, method: str = "minmax") -> list[str]:
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    model = onnx.load(str(src))
    excl = default_exclude(model) if exclude is None else list(exclude)
    qdq = fmt == "qdq"
    quantize_static(
        str(src), str(dst), Reader(),
        quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
        op_types_to_quantize=list(QUANT_OPS),
        per_channel=True,
        activation_type=QuantType.QInt8 if qdq else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excl,
        calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                          "entropy": CalibrationMethod.Entropy}[method],
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                       "CalibPercentile": 99.999, "CalibMovingAverage": False},
    )
    return excl


def _calibrate(in_path: Path, card: dict, calibration_blocks, eval_seconds: float, threads: int):
    """Calibration feeds (every block's inputs, state carried), the held-out control sequence and
    its fp32 render."""
    sr, block = card["sample_rate"], card["block_size"]
    n_ctrl, frames = len(card["controls"]), card["control_frames"]
    if calibration_blocks is None or isinstance(calibration_blocks, int):
        n = calibration_blocks or max(64, int(8.0 * sr / block))
        calib = control_sequence(card, n, seed=1)
    else:
        calib = np.asarray(calibration_blocks, np.float32)
        if calib.ndim != 3 or calib.shape[1:] != (n_ctrl, frames):
            raise ValueError(f"calibration_blocks must be [n_blocks, {n_ctrl}, {frames}], got {list(calib.shape)}")
    evalseq = control_sequence(card, max(64, int(eval_seconds * sr / block)), seed=2)
    fp32 = _session(in_path, threads)
    feeds: list[dict] = []
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
    card = read_card(model, str(in_path))
    quantizable = [n.name for n in model.graph.node if n.op_type in QUANT_OPS]
    feeds, evalseq, ref = _calibrate(in_path, card, calibration_blocks, eval_seconds, threads)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        pre, _ = _pre_process(in_path, Path(tmp, "pre.onnx"))
        q = Path(tmp, "q.onnx")
        for names in node_sets:
            _quantize(pre, q, "qdq", feeds, [n for n in quantizable if n not in names])
            out.append(round(snr_db(ref, render(_session(q, threads), card, evalseq)), 2))
    return out


def quantize_model(in_path, out_path, *, fmt: str = "qdq", calibration_blocks=None, exclude=None,
                   threads: int = 1, eval_seconds: float = 8.0) -> dict[str, Any]:
    """Quantize ``in_path`` (fp32 pi-synth model) to ``out_path`` and return the report (see module doc)."""
    import onnx

    fmt = fmt.lower()
    if fmt not in ("qdq", "qoperator"):
        raise ValueError(f"fmt must be 'qdq' or 'qoperator', got {fmt!r}")
    in_path, out_path = Path(in_path), Path(out_path)
    try:
        model = onnx.load(str(in_path))
    except Exception as e:  # noqa: BLE001 - onnx raises several types for unreadable files
        raise ModelError(f"{in_path}: cannot read as ONNX ({e})") from None
    card = read_card(model, str(in_path))
    if card.get("precision") == "int8":
        raise ModelError(f"{in_path}: already int8; quantize the fp32 model")
    feeds, evalseq, ref = _calibrate(in_path, card, calibration_blocks, eval_seconds, threads)

    report: dict[str, Any] = {"model": card.get("name"), "format": fmt, "fp32_bytes": in_path.stat().st_size}
    with tempfile.TemporaryDirectory() as tmp:
        pre, why = _pre_process(in_path, Path(tmp, "pre.onnx"))
        if why:
            report["pre_process"] = why
        paths = {}
        for f in ("qdq", "qoperator"):
            paths[f] = out_path if f == fmt else Path(tmp, f"{f}.onnx")
            excl = _quantize(pre, paths[f], f, feeds, exclude)
            if f == fmt:
                report["fp32_nodes"] = excl
        report["snr_db"] = {}
        for f, p in paths.items():
            report["snr_db"][f] = round(snr_db(ref, render(_session(p, threads), card, evalseq)), 2)
        speed = bench({"fp32": in_path, **paths}, card, evalseq[:600], threads)
        report["speed"] = speed
        report["speedup"] = {f: round(speed["fp32"]["us_per_block"] / speed[f]["us_per_block"], 3)
                             for f in ("qdq", "qoperator")}

        q = onnx.load(str(out_path))
        qcard = dict(card, precision="int8", snr_db=report["snr_db"][fmt], quant_format=fmt)
        write_card(q, qcard)
        onnx.save(q, str(out_path))
    report["int8_bytes"] = out_path.stat().st_size
    # the most int8 could give this graph on any CPU (see bench.int8_ceiling)
    from pi_synth.bench import int8_ceiling

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


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _cpu_name() -> str:
    from pi_synth.audio.precision import cpu_model

    return cpu_model()


def format_report(report: dict) -> str:
    """Human-readable lines for ``pi-synth quantize --report``."""
    s = report["speed"]
    dsp = [n for n in report["fp32_nodes"] if "synth" in n.lower()]
    lines = [
        f"model {report['model']}: {report['fp32_bytes'] / 1e6:.2f} MB fp32 -> {report['int8_bytes'] / 1e6:.2f} MB "
        f"int8 ({report['format']})",
        f"SNR vs fp32: QDQ {report['snr_db']['qdq']} dB, QOperator {report['snr_db']['qoperator']} dB",
        f"µs/block (1 thread): fp32 {s['fp32']['us_per_block']}, QDQ {s['qdq']['us_per_block']} "
        f"(x{report['speedup']['qdq']}), QOperator {s['qoperator']['us_per_block']} (x{report['speedup']['qoperator']})",
        *([f"ceiling (fp32 with the quantized ops made free): x{report['ceiling']}; int8 stays below it"]
          if isinstance(report.get("ceiling"), float) else []),
        "kept float32: " + (", ".join(
            ([f"{len(dsp)} synthesis nodes"] if dsp else []) + [n for n in report["fp32_nodes"] if n not in dsp])
            or "nothing"),
        report["caveat"],
    ]
    return os.linesep.join(lines)
