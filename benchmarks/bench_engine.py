#!/usr/bin/env python3
"""Runtime-wrapper overhead and engine CPU, as ratios measured in one run.

For each model:
* ``wrapper_overhead_ratio`` — median time per block of ``Runtime.step()`` (io_binding,
  preallocated buffers) over a bare ``session.run`` on the same blocks with the state
  carried by hand. Below 1 means the wrapper is faster than the naive loop.
* ``engine_cpu_ratio`` — CPU time of the whole engine (inference and output threads,
  output guard, ring, real libasound writes into the tests' ``null`` PCM) over the CPU
  time of the same number of bare ``Runtime.step()`` calls. Target ≤ 1.05.

Usage:  .venv/bin/python benchmarks/bench_engine.py [MODEL …] [--out DIR]
Writes DIR/engine.json and DIR/engine.md (default DIR: benchmarks/results).
Run it on a quiet machine: another busy process skews the threaded engine more than
the single-threaded baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("ALSA_CONFIG_PATH", f"/usr/share/alsa/alsa.conf:{ROOT / 'tests/alsa/pi-synth-test.conf'}")


def main() -> int:
    from pi_synth.audio.library import find_model, list_models
    from pi_synth.bench import bench_model, engine_cpu

    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--blocks", type=int, default=2000)
    args = ap.parse_args()
    models = args.models or ["organ"] + [str(p) for p in list_models() if "organ" not in p.name]
    rows = []
    for m in models:
        path = find_model(m)
        b = bench_model(path, blocks=args.blocks)
        blocks = max(200, int(args.blocks * 256 / b["block_size"]))
        e = engine_cpu(path, blocks=blocks)
        rows.append({**b, **{k: v for k, v in e.items() if k not in b}})
        print(f"{path.name}: wrapper ×{b['wrapper_overhead_ratio']:.3f} of bare session.run, "
              f"engine CPU ×{e['engine_cpu_ratio']:.3f} of pure inference", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine.json").write_text(json.dumps(rows, indent=2))
    lines = ["| model | block | step µs (median) | bare session.run µs | wrapper ratio | engine µs/block (CPU) | pure µs/block (CPU) | engine CPU ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['path']).name} | {r['block_size']} | {r['block_ms_median'] * 1e3:.1f} | "
                     f"{r['bare_block_ms_median'] * 1e3:.1f} | {r['wrapper_overhead_ratio']:.3f} | "
                     f"{r['engine_us_per_block']:.1f} | {r['pure_us_per_block']:.1f} | {r['engine_cpu_ratio']:.3f} |")
    (out / "engine.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
