"""Does int8 pay on this CPU? For every shipped model: fp32 vs int8 QDQ vs int8 QOperator, 1 thread.

Usage: python benchmarks/bench_quantize.py [--models models] [--json out.json]

Re-quantizes each models/NAME.fp32.onnx with pi_synth.quantize into a temporary directory (the shipped int8 file
is not touched), then prints size, SNR vs fp32 and median µs per block for the three variants, and whether the
issue's target (int8 >= 1.5x faster than fp32 in the format this CPU runs as int8) is met. On x86 that format is
QOperator; QDQ is what a Raspberry Pi runs as int8 kernels, so its x86 time says little about the Pi.
Needs onnx + onnxruntime; no torch.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pi_synth.quantize import _is_x86, format_report, quantize_model  # noqa: E402

TARGET = 1.5


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--json", type=Path, help="write all reports here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    reports = {}
    for fp32 in sorted(args.models.glob("*.fp32.onnx")):
        with tempfile.TemporaryDirectory() as tmp:
            rep = quantize_model(fp32, Path(tmp, "q.onnx"), fmt="qdq", threads=args.threads)
        fmt = "qoperator" if _is_x86() else "qdq"
        rep["target"] = {"format": fmt, "speedup": rep["speedup"][fmt], "min": TARGET,
                         "met": rep["speedup"][fmt] >= TARGET}
        reports[fp32.name] = rep
        print(format_report(rep))
        print(f"target int8 >= {TARGET}x faster ({fmt}): {'met' if rep['target']['met'] else 'NOT met'} "
              f"(x{rep['target']['speedup']})\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(reports, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
