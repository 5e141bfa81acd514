#!/usr/bin/env python3
"""Model files against each other, in one run: block time and real-time factor, timed in
alternation (``bench.alternate_stats``), and each file's speed-up over the first.

For a before/after of a re-export, a file may be named as ``REV:path`` (read from git):

    .venv/bin/python benchmarks/compare.py HEAD~1:models/flute.fp32.onnx models/flute.fp32.onnx
    .venv/bin/python benchmarks/compare.py models/morph.fp32.onnx models/morph.int8.onnx --blocks 2000

The same controls drive every file (``bench.control_sequence`` from its card); 1 thread
unless ``--threads``. ``--json FILE`` writes the rows too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def resolve(spec: str, tmp: Path) -> Path:
    """A path, or ``REV:path`` checked out of git into ``tmp``."""
    if Path(spec).exists() or ":" not in spec:
        return Path(spec)
    rev, path = spec.split(":", 1)
    out = tmp / f"{len(list(tmp.iterdir()))}-{Path(path).name}"
    blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True)
    if blob.returncode != 0:
        raise SystemExit(f"{spec}: not in git ({blob.stderr.decode().strip()})")
    out.write_bytes(blob.stdout)
    return out


def compare(paths: list[Path], names: list[str], *, blocks: int, threads: int) -> list[dict]:
    from pi_synth.model.runtime import Runtime
    from pi_synth.bench import alternate_stats

    rts = [Runtime(p, threads=threads, warmup_blocks=8) for p in paths]
    stats = alternate_stats(rts, blocks)
    base = stats[0]["block_ms_median"]
    return [{"file": n, "block_size": rt.card.block_size, "threads": threads, **s,
             "speedup_vs_first": base / s["block_ms_median"]} for n, rt, s in zip(names, rts, stats)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="model files (or REV:path from git); the first is the baseline")
    ap.add_argument("--blocks", type=int, default=2000, help="blocks timed per file (default 2000)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        paths = [resolve(f, Path(d)) for f in a.files]
        rows = compare(paths, a.files, blocks=a.blocks, threads=a.threads)
    print("| file | µs per block (median) | p99 | real-time factor | speed-up vs first |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {r['block_ms_median'] * 1e3:.1f} | {r['block_ms_p99'] * 1e3:.1f} | "
              f"{r['rtf']:.4f} | ×{r['speedup_vs_first']:.3f} |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
