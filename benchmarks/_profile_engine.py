#!/usr/bin/env python3
"""Where the engine's CPU goes beyond inference: py-spy (sampling, native frames off) over
one engine run on the non-pacing ``pisynth_null`` PCM, summarised per function for the
audio thread(s).

    .venv/bin/python benchmarks/_profile_engine.py MODEL [--mode direct|threaded] [--blocks N] [--out DIR]

Needs py-spy (pip install py-spy). Writes DIR/profile-<model>-<mode>.txt (collapsed stacks)
and prints the self-time table: what the audio threads do besides ``run_with_iobinding``.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _env import use_test_alsa_config  # noqa: E402


def child(model: str, mode: str, blocks: int) -> None:
    from _harness import engine_overhead

    r = engine_overhead(model, blocks=blocks, mode=mode)
    print(r)


def summarise(collapsed: Path, top: int = 25) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Self time and inclusive time per frame, for samples in the audio threads."""
    self_t: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "pi-synth-" not in stack and "_direct_loop" not in stack and "_inference_loop" not in stack \
                and "_output_loop" not in stack:
            continue
        n = int(n)
        total += n
        frames = stack.split(";")
        self_t[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    norm = lambda c: [(k, 100.0 * v / max(total, 1)) for k, v in c.most_common(top)]  # noqa: E731
    return norm(self_t), norm(incl)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--mode", default="direct")
    ap.add_argument("--blocks", type=int, default=20000)
    ap.add_argument("--out", default="/tmp")
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    use_test_alsa_config()
    if args.child:
        child(args.model, args.mode, args.blocks)
        return 0
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        raise SystemExit("py-spy is not installed: pip install py-spy")
    out = Path(args.out) / f"profile-{Path(args.model).stem}-{args.mode}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([spy, "record", "-r", "1000", "--threads", "-f", "raw", "-o", str(out), "--",
                    sys.executable, __file__, args.model, "--mode", args.mode, "--blocks", str(args.blocks),
                    "--child"], check=True)
    s, i = summarise(out)
    print("self time in the audio thread(s), % of their samples:")
    for k, v in s:
        print(f"  {v:5.1f}%  {k}")
    print("inclusive:")
    for k, v in i:
        print(f"  {v:5.1f}%  {k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
