"""Shared pieces of the benchmark scripts: the tests' ALSA config, a JACK dummy server,
a busy core, RSS and machine load. Not part of the firmware (nothing in ``src/`` imports
this); the benchmark scripts put ``benchmarks/`` on ``sys.path`` to import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALSA_CONF = ROOT / "tests" / "alsa" / "pi-synth-test.conf"
ALSA_CONFIG_PATH = f"/usr/share/alsa/alsa.conf:{ALSA_CONF}"


def use_test_alsa_config() -> None:
    """PCMs pisynth_null, pisynth_jack, pisynth_jackfile:FILE=… (tests/alsa/)."""
    os.environ.setdefault("ALSA_CONFIG_PATH", ALSA_CONFIG_PATH)


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size from /proc (psutil is not a dependency)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def hwm_mb(pid: int | str = "self") -> float:
    """Peak RSS (VmHWM)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def jack_shm_mb(pid: int | str = "self") -> float:
    """Resident pages of JACK's shared memory (/dev/shm/jack-*) mapped by ``pid``.

    A JACK client (libasound's JACK plugin on the test PCMs) maps the server's segments:
    ~100 MB here, shared with jackd, counted in VmRSS, and absent on a Pi playing to
    an ALSA sound card. Subtracted to get the figure the Pi would see."""
    total, cur = 0, False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if line.startswith("Rss:"):
                    if cur:
                        total += int(line.split()[1])
                elif "-" in line.split(" ", 1)[0]:
                    cur = "/dev/shm/jack" in line
    except OSError:
        return float("nan")
    return total / 1024.0


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_times() -> dict:
    """Whole-machine CPU jiffies (user+nice+system, idle, steal) from /proc/stat."""
    try:
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    except (OSError, ValueError):
        return {}
    return {"busy": v[0] + v[1] + v[2] + v[5] + v[6], "idle": v[3] + v[4], "steal": v[7] if len(v) > 7 else 0}


def cpu_share(a: dict, b: dict) -> dict:
    """Between two :func:`cpu_times` samples: machine busy % and steal % (of all cores)."""
    if not a or not b:
        return {}
    d = {k: b[k] - a[k] for k in a}
    tot = max(1, sum(d.values()))
    return {"machine_busy_pct": round(100 * d["busy"] / tot, 1), "steal_pct": round(100 * d["steal"] / tot, 1)}


def machine() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import onnxruntime as ort

        ort_v = ort.__version__
    except ImportError:
        ort_v = ""
    return {"machine": platform.machine(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "onnxruntime": ort_v, "loadavg": loadavg(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


JACK_REGISTRY = "/dev/shm/jack-shm-registry"


def free_stale_jack_servers(path: str = JACK_REGISTRY) -> list[str]:
    """Free the slots of JACK servers that died without saying so (SIGKILL, a crashed
    test), so a new server can start: jackd keeps one machine-wide registry of 8 servers,
    frees a slot only on a clean exit or when a server of the *same name* starts again,
    and refuses to start ("Too many servers already active") once all 8 hold dead ones —
    for every user of the machine. A slot whose process is alive is never touched.
    Returns the names freed. (jack2 1.9: the header, then 8 × {pid_t pid; char name[260]}.)"""
    import mmap
    import struct

    freed = []
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return freed
    try:
        m = mmap.mmap(fd, 0)
        try:
            if m[:4] != b"KCAJ":  # not the layout this knows
                return freed
            for i in range(8):
                off = 24 + 264 * i
                pid = struct.unpack_from("<i", m, off)[0]
                if pid > 0 and not os.path.exists(f"/proc/{pid}"):
                    freed.append(m[off + 4:off + 264].split(b"\0")[0].decode(errors="replace"))
                    m[off:off + 264] = b"\0" * 264
        finally:
            m.close()
    finally:
        os.close(fd)
    return freed


class JackServer:
    """``jackd --no-realtime -d dummy``: real-time pacing without a sound card.

    Its output is kept in ``log`` so JACK's own xrun reports can be counted."""

    def __init__(self, rate: int = 48000, period: int = 256, name: str | None = None,
                 log_path: str | Path | None = None, realtime: bool = True, cpus=None):
        if not shutil.which("jackd"):
            raise SystemExit("jackd is not installed: apt-get install jackd2 (scripts/test.sh does)")
        self.name = name or f"pisynth-bench-{uuid.uuid4().hex[:6]}"
        self.rate, self.period = rate, period
        self.log_path = Path(log_path) if log_path else Path(f"/tmp/{self.name}.log")
        self.proc: subprocess.Popen | None = None
        self.want_realtime = realtime
        self.realtime = False
        self.cpus = sorted(cpus) if cpus else None

    def __enter__(self) -> "JackServer":
        """Start jackd. Real-time (SCHED_FIFO 80) where permitted: the dummy driver's clock
        then behaves like a sound card's, which is never late because the machine is busy;
        without it, jackd's own timer misses deadlines under load (measured here: 32 JACK
        xruns in 30 s with no client at all, load 3.2 on 2 cores; 0 in real-time mode)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        free_stale_jack_servers()
        for rt in ((True, False) if self.want_realtime else (False,)):
            self._log = open(self.log_path, "w")
            flags = ["-R", "-P", "80"] if rt else ["--no-realtime"]
            pin = ["taskset", "-c", ",".join(map(str, self.cpus))] if self.cpus else []
            self.proc = subprocess.Popen(
                [*pin, "jackd", *flags, "-n", self.name, "-d", "dummy", "-r", str(self.rate),
                 "-p", str(self.period)], stdout=self._log, stderr=subprocess.STDOUT)
            os.environ["JACK_DEFAULT_SERVER"] = self.name
            os.environ["JACK_NO_START_SERVER"] = "1"
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.proc.poll() is None:
                probe = subprocess.run(["jack_lsp", "-s", self.name], capture_output=True, text=True)
                if "system:playback_1" in probe.stdout:
                    self.realtime = rt
                    return self
                time.sleep(0.1)
            self.__exit__()
        raise RuntimeError(f"jackd did not start: {self.log_path.read_text()[-2000:]}")

    def xrun_reports(self) -> int:
        try:
            text = self.log_path.read_text(errors="replace").lower()
        except OSError:
            return 0
        return sum(1 for line in text.splitlines() if "xrun" in line)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()


@contextlib.contextmanager
def pinned(cpus):
    """This thread on ``cpus`` for the block, then back: threads started inside — libjack's
    process thread, which the device open inside ``Engine.start`` creates — inherit it."""
    mask = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, mask)


class BusyCore:
    """Another process keeping one core busy (``python -c "while True: pass"``)."""

    def __init__(self, n: int = 1):
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "BusyCore":
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()  # by its own pid: only what we started
                p.wait(5)
        self.procs = []


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
