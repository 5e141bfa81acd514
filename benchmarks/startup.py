#!/usr/bin/env python3
"""Start → first audio, and the RSS of ``pi-synth run`` with the default model.

Runs the real command, ``python -m pi_synth run --device pisynth_jackfile:FILE=… --seconds S``,
on the JACK-paced recorder PCM (a JACK dummy server is started unless ``--jack`` names
one). Timed from outside the process:

* **start → first audio**: from just before the process is spawned to the moment the
  recording file first grows (libasound's file plugin writes as frames reach the PCM),
  polled every millisecond. The command's own "first audio after X s" line (measured
  from just before the engine starts, so without imports and model loading) is kept
  beside it. Twice: with an empty optimized-graph cache (first boot) and with it warm.
* **RSS**: ``VmRSS`` from ``/proc/PID/status`` every 200 ms while it plays (psutil is
  not a dependency); the figure is the steady state (median of the second half) and
  the peak (``VmHWM``). The JACK plugin maps ~100 MB of jackd's shared memory
  (``/dev/shm/jack-*``, counted in VmRSS, shared, absent with a real sound card): the
  target is checked on VmRSS less those pages (read from ``/proc/PID/smaps``).

    .venv/bin/python benchmarks/startup.py [--model M] [--seconds 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import ROOT, JackServer, hwm_mb, jack_shm_mb, loadavg, rss_mb, use_test_alsa_config, write_json  # noqa: E402

TARGETS = {"rss_mb": 100.0, "first_audio_s": 2.0}


def run_once(model: str | None, seconds: float, cache_dir: str, workdir: Path) -> dict:
    raw = workdir / "startup.raw"
    raw.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PI_SYNTH_CACHE_DIR"] = cache_dir
    env["XDG_CONFIG_HOME"] = str(workdir / "xdg")  # built-in defaults, not the user's config
    env.pop("PI_SYNTH_CONFIG", None)
    cmd = [sys.executable, "-m", "pi_synth", "run", "--device", f"pisynth_jackfile:FILE={raw}",
           "--seconds", str(seconds)]
    if model:
        cmd += ["--model", model]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = None
    samples: list[tuple[float, float]] = []
    hwm = float("nan")
    next_rss = t0
    while p.poll() is None:
        now = time.monotonic()
        if first is None:
            try:
                if raw.stat().st_size > 0:
                    first = now - t0
            except FileNotFoundError:
                pass
        if now >= next_rss:
            r = rss_mb(p.pid)
            if r == r:  # not NaN
                shm = jack_shm_mb(p.pid)
                samples.append((now - t0, r, shm if shm == shm else 0.0))
                hwm = hwm_mb(p.pid)
            next_rss += 0.2
        time.sleep(0.001)
    out, err = p.communicate()
    m = re.search(r"first audio after ([0-9.]+) s", err)
    half = sorted(r for t, r, _ in samples if t >= samples[-1][0] / 2) if samples else []
    half_nj = sorted(r - j for t, r, j in samples if t >= samples[-1][0] / 2) if samples else []
    raw.unlink(missing_ok=True)
    return {
        "command": " ".join(cmd), "exit_code": p.returncode,
        "first_audio_s": first, "engine_first_audio_s": float(m.group(1)) if m else None,
        "rss_steady_mb": half[len(half) // 2] if half else None, "rss_peak_mb": hwm,
        "rss_steady_without_jack_shm_mb": half_nj[len(half_nj) // 2] if half_nj else None,
        "rss_timeline_columns": ["t_s", "rss_mb", "jack_shm_mb"],
        "rss_timeline": [[round(t, 2), round(r, 2), round(j, 2)] for t, r, j in samples],
        "stderr_tail": err.strip().splitlines()[-3:],
    }


def measure(model: str | None = None, seconds: float = 8.0, out: Path | None = None, jack: str | None = None) -> dict:
    use_test_alsa_config()
    out = Path(out or tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"kind": "startup", "model": model or "default", "loadavg_start": loadavg()}
    ctx = JackServer(48000, 256, log_path=out / "jackd-startup.log") if not jack else None
    if jack:
        os.environ["JACK_DEFAULT_SERVER"] = jack
    with tempfile.TemporaryDirectory() as cache, (ctx or contextlib.nullcontext()):
        res["cold_cache"] = run_once(model, seconds, cache, out)
        res["warm_cache"] = run_once(model, seconds, cache, out)
    w = res["warm_cache"]
    res["pass"] = {
        "rss": (w["rss_steady_without_jack_shm_mb"] or 1e9) <= TARGETS["rss_mb"],
        "rss_including_jack_shm": (w["rss_steady_mb"] or 1e9) <= TARGETS["rss_mb"],
        "first_audio_warm": (w["first_audio_s"] or 1e9) <= TARGETS["first_audio_s"],
        "first_audio_cold": (res["cold_cache"]["first_audio_s"] or 1e9) <= TARGETS["first_audio_s"],
    }
    res["loadavg_end"] = loadavg()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--jack", help="use this running JACK server")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / time.strftime("%Y-%m-%d")))
    args = ap.parse_args(argv)
    res = measure(args.model, args.seconds, Path(args.out), args.jack)
    write_json(Path(args.out) / "startup.json", res)
    for k in ("cold_cache", "warm_cache"):
        r = res[k]
        print(f"{k}: first audio {r['first_audio_s']} s after spawn (engine says {r['engine_first_audio_s']} s "
              f"after its start), RSS {r['rss_steady_mb']:.1f} MB steady "
              f"({r['rss_steady_without_jack_shm_mb']:.1f} MB without JACK's shared memory), peak {r['rss_peak_mb']} MB, exit {r['exit_code']}")
    print(json.dumps(res["pass"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
