#!/usr/bin/env python3
"""RSS of ``pi-synth run --emulate`` over minutes, paced (``--backend null``) and unpaced.

What a laptop user runs with no sound card: the emulated Pi (gpiozero's mock pins, an
emulated MCP3008 read bit by bit over mock SPI, the poller thread) and the default
model, on the paced null backend (real time) and on the unpaced one (as fast as the
CPU allows: minutes of audio a minute). ``VmRSS`` is read from ``/proc/PID/status``
every ``--every`` seconds from outside the process.

The figure is a ratio against a baseline from the same run: RSS at the end over RSS
at ``--settle`` seconds (after start-up, the model's warm-up and the first allocations).
Flat is ≤ ``TARGET_GROWTH``; before the emulated pins stopped keeping every change they
ever made (``control/board.py``), RSS grew by ~3 MB a second either way.

    .venv/bin/python benchmarks/rss_curve.py [--minutes 10] [--every 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import ROOT, loadavg, rss_mb, write_json  # noqa: E402

TARGET_GROWTH = 1.05  # RSS at the end / RSS after settling


def curve(backend: str, seconds: float, every: float, settle: float, workdir: Path) -> dict:
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = str(workdir / "xdg")  # built-in defaults, not the user's config
    env["PI_SYNTH_STATE_DIR"] = str(workdir / "state")
    env.pop("PI_SYNTH_CONFIG", None)
    cmd = [sys.executable, "-m", "pi_synth", "run", "--emulate", "--no-panel", "--backend", backend,
           "--seconds", str(24 * 3600)]
    err = open(workdir / f"{backend}.log", "w")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
    t0 = time.monotonic()
    samples = []
    try:
        while p.poll() is None and time.monotonic() - t0 < seconds:
            time.sleep(every - (time.monotonic() - t0) % every)
            samples.append((round(time.monotonic() - t0, 1), round(rss_mb(p.pid), 2)))
    finally:
        p.terminate()  # SIGTERM: fades out and prints what it played
        p.wait(30)
        err.close()
    log = (workdir / f"{backend}.log").read_text()
    played = [line for line in log.splitlines() if line.startswith("played ")]
    base = next((r for t, r in samples if t >= settle), samples[0][1])
    end = samples[-1][1]
    return {"backend": backend, "seconds": seconds, "samples": samples, "rss_settled_mb": base,
            "rss_end_mb": end, "rss_max_mb": max(r for _, r in samples), "growth": end / base,
            "played": played[-1] if played else log[-500:], "exit": p.returncode}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--settle", type=float, default=30.0, help="the baseline sample's time")
    ap.add_argument("--backends", default="null,unpaced")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / time.strftime("%Y-%m-%d"))
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stopped: the run it started stops too
    args.out.mkdir(parents=True, exist_ok=True)
    res = {"load_before": loadavg(), "target_growth": TARGET_GROWTH, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for b in args.backends.split(","):
            r = curve(b, args.minutes * 60, args.every, args.settle, Path(tmp))
            res["runs"].append(r)
            print(f"{b}: RSS {r['rss_settled_mb']:.1f} MB at {args.settle:g} s → {r['rss_end_mb']:.1f} MB "
                  f"at {r['samples'][-1][0]:.0f} s (×{r['growth']:.3f}, max {r['rss_max_mb']:.1f} MB); "
                  f"{r['played']}", flush=True)
    res["load_after"] = loadavg()
    write_json(args.out / "rss_curve.json", res)
    lines = ["# RSS of `pi-synth run --emulate` over time", "",
             f"Target: RSS at the end ≤ ×{TARGET_GROWTH} RSS at {args.settle:g} s (same run).", "",
             "| backend | RSS at settle (MB) | RSS at end (MB) | max (MB) | growth | played |",
             "|---|---|---|---|---|---|"]
    for r in res["runs"]:
        lines.append(f"| {r['backend']} | {r['rss_settled_mb']:.1f} | {r['rss_end_mb']:.1f} | "
                     f"{r['rss_max_mb']:.1f} | ×{r['growth']:.3f} | {r['played']} |")
    lines += ["", "Curve (seconds, MB):", ""]
    for r in res["runs"]:
        pts = r["samples"][:: max(1, len(r["samples"]) // 20)]
        lines.append(f"- {r['backend']}: " + ", ".join(f"{t:.0f}: {m:.1f}" for t, m in pts))
    (args.out / "rss_curve.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        for r in res["runs"]:
            t, m = zip(*r["samples"])
            ax.plot(t, m, label=f"--backend {r['backend']}")
        ax.set_xlabel("seconds")
        ax.set_ylabel("VmRSS (MB)")
        ax.set_ylim(bottom=0)
        ax.legend()
        ax.set_title("pi-synth run --emulate: RSS over time")
        fig.tight_layout()
        fig.savefig(args.out / "rss_curve.png", dpi=100)
    except ImportError:
        pass
    print(json.dumps({r["backend"]: round(r["growth"], 3) for r in res["runs"]}))
    return 0 if all(r["growth"] <= TARGET_GROWTH for r in res["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
