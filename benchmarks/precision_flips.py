#!/usr/bin/env python3
"""``precision = "auto"`` must not flip on noise: N first-start measurements of two
identical files (the choice must be fp32, the reference, every time), and of a pair
where int8 really is faster (the choice should be int8), on this machine as it is.

    .venv/bin/python benchmarks/precision_flips.py --trials 200 [--busy 1] [--json out.json]

Identical files: two copies of the shipped flute fp32 (or the procedural organ with
``--organ``). The faster pair: the organ against the same organ burning matrix products
each block (int8 ≈ 3× faster). ``--busy N`` keeps N cores busy meanwhile (a noisy host).
Each trial is a fresh :func:`pi_synth.model.precision.measure` (new sessions, no cache).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def _burn(stop):
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def trials(int8: Path, fp32: Path, n: int) -> dict:
    from pi_synth.model.precision import measure

    choices, rounds, seconds, ties = [], [], [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        m = measure(int8, fp32)
        seconds.append(time.perf_counter() - t0)
        choices.append(m["choice"])
        rounds.append(m["rounds"])
        ties += not m["decided"]
    return {"trials": n, "int8": choices.count("int8"), "fp32": choices.count("fp32"), "ties": ties,
            "rounds_median": sorted(rounds)[n // 2], "rounds_max": max(rounds),
            "seconds_median": round(sorted(seconds)[n // 2], 3), "seconds_max": round(max(seconds), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--busy", type=int, default=0, help="cores kept busy meanwhile")
    ap.add_argument("--organ", action="store_true", help="identical organs instead of the flute")
    ap.add_argument("--json", help="write the result here")
    a = ap.parse_args(argv)
    from pi_synth.tools.procedural import build_organ

    stop = mp.Event()
    burners = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(a.busy)]
    for p in burners:
        p.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            same = (d / "same.int8.onnx", d / "same.fp32.onnx")
            if a.organ:
                for p in same:
                    build_organ(p)
            else:
                for p in same:
                    shutil.copy(ROOT / "models" / "flute.fp32.onnx", p)
            faster = (d / "fast.int8.onnx", d / "fast.fp32.onnx")
            build_organ(faster[0])
            build_organ(faster[1], fault="slow", burn_matmuls=2)
            res = {"identical": {"files": "organ" if a.organ else "flute.fp32.onnx ×2",
                                 **trials(*same, a.trials)},
                   "int8_faster": {"files": "organ vs organ burning 2 matmuls a block",
                                   **trials(*faster, max(10, a.trials // 10))},
                   "busy_cores": a.busy}
    finally:
        stop.set()
        for p in burners:
            p.join(2)
    print(json.dumps(res, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0 if res["identical"]["int8"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
