"""Does int8 pay on this CPU? For every shipped model: fp32 vs int8 QDQ (shipped) vs int8 QOperator, 1 thread.

Usage: python benchmarks/bench_quantize.py [--models models] [--json out.json] [--threads 1]

For each models/NAME.fp32.onnx beside NAME.int8.onnx: times the shipped files, and builds a twin of the
shipped int8 model in the other format (QOperator for a QDQ file and back; same layers kept in float32, calibrated with pi_synth.tools.quantize's default control
sequence) in a temporary directory. Prints size, SNR vs fp32 and the median µs per block of the three, stepped
interleaved so load from other processes hits them equally, and whether the issue's target is met: int8 >= 1.5x
faster than fp32 in the format this CPU runs as int8. On x86 that format is QOperator; QDQ is what a Raspberry
Pi runs as int8 kernels, so its x86 time says little about the Pi. Needs onnx + onnxruntime; no torch.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pi_synth.tools.quantize import (QUANT_OPS, X86_CAVEAT, _cpu_name, _is_x86, _quantize, _session,  # noqa: E402
                               bench, control_sequence, read_card, render, snr_db)

TARGET = 1.5


def float_nodes(int8_path: Path) -> list[str]:
    """Conv/MatMul/Gemm nodes of an int8 model that are still float32 ops (QDQ: weights not dequantized int8;
    QOperator: the ones not replaced by QLinear ops): the ones kept float32."""
    m = onnx.load(str(int8_path))
    producer = {o: n for n in m.graph.node for o in n.output}
    keep = []
    for n in m.graph.node:
        if n.op_type in QUANT_OPS:
            w = producer.get(n.input[1])
            if w is None or w.op_type != "DequantizeLinear":
                keep.append(n.name)
    return keep


def bench_model(fp32: Path, int8: Path, threads: int) -> dict:
    card = read_card(onnx.load(str(fp32)))
    n = int(8.0 * card["sample_rate"] / card["block_size"])
    calib, evalseq = control_sequence(card, n, seed=1), control_sequence(card, n, seed=2)
    ref_sess = _session(fp32, threads)
    feeds: list[dict] = []
    render(ref_sess, card, calib, feeds_out=feeds)
    ref = render(ref_sess, card, evalseq)
    shipped = read_card(onnx.load(str(int8))).get("quant_format", "qdq")
    others = [f for f in ("qdq", "qoperator") if f != shipped]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": fp32, shipped: int8}
        for other in others:  # the other static formats, same layers kept float32
            paths[other] = Path(tmp, f"{other}.onnx")
            _quantize(fp32, paths[other], other, feeds, float_nodes(int8))
        speed = bench(paths, card, evalseq[:600], threads)
        snr = {k: round(snr_db(ref, render(_session(p, threads), card, evalseq)), 2) for k, p in paths.items()
               if k != "fp32"}
        sizes = {k: p.stat().st_size for k, p in paths.items()}
    fmt = "qoperator" if _is_x86() else "qdq"
    speedup = {k: round(speed["fp32"]["us_per_block"] / speed[k]["us_per_block"], 3) for k in paths if k != "fp32"}
    return {"model": card["name"], "format": shipped, "speed": speed, "speedup": speedup, "snr_db": snr, "bytes": sizes,
            "target": {"format": fmt, "speedup": speedup[fmt], "min": TARGET, "met": speedup[fmt] >= TARGET},
            "threads": threads, "cpu": _cpu_name()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--json", type=Path, help="write all results here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    results = {}
    for fp32 in sorted(args.models.glob("*.fp32.onnx")):
        int8 = fp32.with_name(fp32.name.replace(".fp32.", ".int8."))
        if not int8.exists():
            continue
        r = results[fp32.name] = bench_model(fp32, int8, args.threads)
        s = r["speed"]
        print(f"{r['model']}: µs/block median (p99), {args.threads} thread(s)")
        for k in ("fp32", *(f for f in ("qdq", "qoperator", "dynamic") if f in r["speedup"])):
            extra = "" if k == "fp32" else f"  x{r['speedup'][k]}  SNR {r['snr_db'][k]} dB"
            print(f"  {k:10s} {s[k]['us_per_block']:8.1f} ({s[k]['us_p99']:.0f})  RTF {s[k]['rtf']:.4f}  "
                  f"{r['bytes'][k] / 1e6:.2f} MB{extra}")
        t = r["target"]
        print(f"  target int8 >= {TARGET}x faster ({t['format']}): {'met' if t['met'] else 'NOT met'} (x{t['speedup']})")
    if _is_x86():
        print(X86_CAVEAT.format(cpu=_cpu_name()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
