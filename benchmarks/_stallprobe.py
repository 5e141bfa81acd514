"""Machine stalls: when this machine stopped running *anything*, per CPU, for matching
against xruns.

On a virtual machine the host can stop a vCPU for milliseconds (steal). Nothing in a
process can avoid that, and on a Pi there is no host to do it. To tell the instrument's
xruns from the machine's, one probe process per CPU, pinned to it, real-time (SCHED_FIFO
90, above the audio threads and jackd, where permitted), sleeps ``tick`` in a loop and
logs each wake-up that came late by more than ``min_ms``. A probe that is late at
SCHED_FIFO 90 was not preempted by us: the CPU itself was gone. The probes cost ~1 % of a
core each (500 wake-ups a second).

    with StallProbe(log_dir) as probe:
        ...
    stalls = probe.stalls()          # [(t_end, late_ms, cpu), …]
    stall_before(xrun_times, stalls, window_s)     # [12.3, 0.0, …] ms: the stall before each
    chance(stalls, start, stop, window_s, min_ms)  # how often a random instant has one

Run as a script it is the probe itself: ``_stallprobe.py CPU TICK_S MIN_MS``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


class StallProbe:
    """One probe process per CPU (``cpus``: default all this process may run on)."""

    def __init__(self, log_dir: str | Path, *, cpus=None, tick_s: float = 0.002, min_ms: float = 1.0):
        self.log_dir = Path(log_dir)
        self.cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
        self.tick_s, self.min_ms = tick_s, min_ms
        self.procs: list[subprocess.Popen] = []
        self.realtime: bool | None = None
        self.started_at = self.stopped_at = 0.0

    def _log(self, cpu: int) -> Path:
        return self.log_dir / f"stalls-cpu{cpu}.txt"

    def __enter__(self) -> "StallProbe":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for cpu in self.cpus:
            with open(self._log(cpu), "w") as f:
                self.procs.append(subprocess.Popen(
                    [sys.executable, __file__, str(cpu), str(self.tick_s), str(self.min_ms)], stdout=f))
        self.started_at = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped_at = time.monotonic()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()  # by its own pid: only what we started
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs = []

    def stalls(self) -> list[tuple[float, float, int]]:
        """Every late wake-up: (its ``time.monotonic()``, i.e. when the stall ended; ms late;
        cpu), in time order."""
        out, rt = [], []
        for cpu in self.cpus:
            try:
                lines = self._log(cpu).read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                if line.startswith("#"):
                    rt.append(line.startswith("# fifo"))
                    continue
                t, late = line.split()
                out.append((float(t), float(late), cpu))
        self.realtime = all(rt) if rt else None
        return sorted(out)

    def unexplained(self, times, window_s: float, min_ms: float) -> list[float]:
        """Those of ``times`` (xruns) with no stall of ≥ ``min_ms`` in the ``window_s``
        before them: what the machine does not account for."""
        return [t for t, ms in zip(times, stall_before(times, self.stalls(), window_s)) if ms < min_ms]

    def summary(self, long_ms: float) -> dict:
        """Counts for a report: late wake-ups (> ``min_ms``), long ones (≥ ``long_ms``) and
        how many a minute, the longest."""
        s = self.stalls()
        minutes = max(1e-9, (self.stopped_at or time.monotonic()) - self.started_at) / 60
        long = [x for x in s if x[1] >= long_ms]
        return {"probe_realtime": self.realtime, "cpus": self.cpus, "tick_ms": self.tick_s * 1e3,
                "late_wakeups": len(s), "min_ms": self.min_ms, "long_ms": round(long_ms, 2),
                "long_stalls": len(long), "long_stalls_per_min": round(len(long) / minutes, 2),
                "longest_ms": round(max((x[1] for x in s), default=0.0), 2)}


def stall_before(times, stalls, window_s: float) -> list[float]:
    """For each time (an xrun's): the longest stall, in ms late, on any CPU, that ended in
    the ``window_s`` before it (0.0: none). An underrun is found by the write *after* the
    gap, so the stall that caused it lies just before."""
    import bisect

    s = sorted((t, late) for t, late, _ in stalls)
    ends = [t for t, _ in s]
    out = []
    for tx in times:
        lo, hi = bisect.bisect_left(ends, tx - window_s), bisect.bisect_right(ends, tx + 1e-3)
        out.append(max((s[i][1] for i in range(lo, hi)), default=0.0))
    return out


def chance(stalls, start: float, stop: float, window_s: float, min_ms: float, step_s: float = 0.005) -> float:
    """The share of instants in [start, stop) with a stall of ≥ ``min_ms`` in the window
    before them: what a match is worth (xruns at random times would match this often)."""
    grid = [start + k * step_s for k in range(int((stop - start) / step_s))]
    return sum(ms >= min_ms for ms in stall_before(grid, stalls, window_s)) / max(1, len(grid))


def _probe(cpu: int, tick_s: float, min_ms: float) -> None:
    """The probe: pinned, real-time where permitted, sleep-and-measure until terminated."""
    import signal

    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    os.sched_setaffinity(0, {cpu})
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(90))
        print("# fifo/90", flush=True)
    except (OSError, AttributeError):
        print("# other (SCHED_FIFO not permitted: a late wake-up may be load, not a stall)", flush=True)
    mono, sleep, limit = time.monotonic, time.sleep, min_ms / 1e3
    while True:
        t0 = mono()
        sleep(tick_s)
        t1 = mono()
        late = t1 - t0 - tick_s
        if late > limit:
            print(f"{t1:.6f} {late * 1e3:.3f}", flush=True)


if __name__ == "__main__":
    _probe(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]))
