"""Does the web page cost the instrument xruns? A paced run (JACK dummy) with the page's
status polled every 100 ms, against the same run unpolled, in one go.

    .venv/bin/python benchmarks/web_poll.py [--seconds 60] [--period-ms 100] [--json]

Starts ``jackd -d dummy`` (48 kHz, 256 frames), ``pi-synth run`` on the ``pisynth_jack``
PCM (the project's ALSA test config) with the organ, and ``pi-synth web`` (localhost, no
password). First half: nobody polls; second half: a client GETs ``/api/status`` every
``--period-ms`` (each a full HTTP request, and an OSC round trip to the instrument). Prints
xruns and late periods of each half, the instrument's load, the web process's RSS, and the
machine's load average while measuring (a busy machine makes xruns of its own).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALSA = f"/usr/share/alsa/alsa.conf:{ROOT / 'tests' / 'alsa' / 'pi-synth-test.conf'}"


def _port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="whole run (half unpolled, half polled)")
    ap.add_argument("--period-ms", type=float, default=100.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pisynth-webpoll-"))
    from pi_synth.tools.procedural import build_organ
    from pi_synth.web.oscclient import ask

    models = tmp / "models"
    models.mkdir()
    build_organ(models / "organ.onnx")
    web_port, osc_port = _port(), _port(socket.SOCK_DGRAM)
    conf = tmp / "pi-synth.toml"
    conf.write_text(f'[audio]\nbackend = "alsa"\ndevice = "pisynth_jack"\n[model]\npath = "organ"\n'
                    f'[midi]\nports = ""\n[osc]\nport = {osc_port}\n[web]\nenabled = true\nport = {web_port}\n')
    jack = f"pisynth-webpoll-{os.getpid()}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=jack, JACK_NO_START_SERVER="1", ALSA_CONFIG_PATH=ALSA,
               PI_SYNTH_MODELS=str(models), PI_SYNTH_UPLOADS=str(tmp / "uploads"),
               PI_SYNTH_STATE_DIR=str(tmp / "state"), PI_SYNTH_CACHE_DIR=str(tmp / "cache"))
    procs = []
    try:
        jackd = subprocess.Popen(["jackd", "--no-realtime", "-n", jack, "-d", "dummy", "-r", "48000", "-p", "256"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(jackd)
        for _ in range(100):
            if "system:playback_1" in subprocess.run(["jack_lsp", "-s", jack], capture_output=True, text=True).stdout:
                break
            if jackd.poll() is not None:
                raise SystemExit("jackd did not start (another server running?):\n" + jackd.stdout.read()[-800:])
            time.sleep(0.1)
        inst = subprocess.Popen([sys.executable, "-m", "pi_synth", "run", "--config", str(conf)], env=env,
                                stdout=subprocess.DEVNULL, stderr=open(tmp / "instrument.log", "w"))
        procs.append(inst)
        web = subprocess.Popen([sys.executable, "-m", "pi_synth", "web", "--config", str(conf)], env=env,
                               stdout=subprocess.DEVNULL, stderr=open(tmp / "web.log", "w"))
        procs.append(web)
        url = f"http://127.0.0.1:{web_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                ask(osc_port, "status", timeout=1.0)
                urllib.request.urlopen(url + "/api/session", timeout=2).read()
                break
            except Exception:
                if time.monotonic() > deadline or inst.poll() is not None or web.poll() is not None:
                    logs = "".join((tmp / n).read_text()[-1500:] for n in ("instrument.log", "web.log"))
                    raise SystemExit("instrument or web page did not start:\n" + logs)
                time.sleep(0.3)
        time.sleep(2.0)  # past the start

        def counters():
            st = ask(osc_port, "status", timeout=5.0)
            return st["xruns"], st["late_periods"], st["load"]

        half = a.seconds / 2
        load0 = os.getloadavg()[0]
        x0, l0, _ = counters()
        time.sleep(half)
        x1, l1, load_a = counters()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        opener.open(url + "/api/session", timeout=5).read()
        polls, errors, worst = 0, 0, 0.0
        t_end = time.monotonic() + half
        nxt = time.monotonic()
        peak_rss = rss_kb(web.pid)
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            try:
                json.loads(opener.open(url + "/api/status", timeout=5).read())
                polls += 1
            except Exception:
                errors += 1
            worst = max(worst, time.monotonic() - t0)
            peak_rss = max(peak_rss, rss_kb(web.pid))
            nxt += a.period_ms / 1000
            time.sleep(max(0.0, nxt - time.monotonic()))
        x2, l2, load_b = counters()
        load1 = os.getloadavg()[0]
        res = {
            "seconds_each": half, "poll_period_ms": a.period_ms, "polls": polls, "poll_errors": errors,
            "poll_ms_worst": round(worst * 1e3, 1),
            "unpolled": {"xruns": x1 - x0, "late_periods": l1 - l0, "instrument_load": load_a},
            "polled": {"xruns": x2 - x1, "late_periods": l2 - l1, "instrument_load": load_b},
            "web_rss_mb": round(peak_rss / 1024, 1), "instrument_rss_mb": round(rss_kb(inst.pid) / 1024, 1),
            "loadavg_1min": [round(load0, 2), round(load1, 2)], "cpus": os.cpu_count(),
        }
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{half:.0f} s unpolled: {res['unpolled']['xruns']} xruns, {res['unpolled']['late_periods']} late; "
              f"{half:.0f} s polled every {a.period_ms:g} ms ({polls} polls, {errors} errors, worst "
              f"{res['poll_ms_worst']} ms): {res['polled']['xruns']} xruns, {res['polled']['late_periods']} late")
        print(f"instrument load {load_a:.3f} → {load_b:.3f}; web RSS {res['web_rss_mb']} MB; "
              f"machine load average {load0:.2f} → {load1:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
