"""Shared fixtures: real models built on the fly, the project's ALSA config, jackd."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALSA_CONF = ROOT / "tests" / "alsa" / "pi-synth-test.conf"
ALSA_CONFIG_PATH = f"/usr/share/alsa/alsa.conf:{ALSA_CONF}"


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """No test reads the developer's config, cache or boot partition."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("PI_SYNTH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PI_SYNTH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PI_SYNTH_UPLOADS", str(tmp_path / "uploads"))  # the web page's model folder
    monkeypatch.delenv("PI_SYNTH_CONFIG", raising=False)
    monkeypatch.setenv("ALSA_CONFIG_PATH", ALSA_CONFIG_PATH)


@pytest.fixture
def organ(tmp_path):
    """Factory: build a procedural organ model file with the given options."""
    from pi_synth.tools.procedural import build_organ

    def make(name="organ", **kw):
        path = tmp_path / f"{name}.onnx"
        build_organ(path, **kw)
        return path

    return make


@pytest.fixture(scope="session")
def burn_matmuls():
    """``burn_matmuls(factor)``: how many 384² products make the procedural organ's heavy
    block take ``factor`` × a 256-frame period on THIS machine, measured the way the player
    runs it (one thread). A fixed count is 3× too slow on one CPU and fits on a faster one."""
    import math
    import tempfile
    import time as _time

    import numpy as np

    from pi_synth.model.session import open_session
    from pi_synth.tools.procedural import build_organ

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "burn.onnx")
        build_organ(path, fault="slow", burn_matmuls=8)
        s = open_session(path)
        feeds = {}
        for i in s.get_inputs():
            shape = [d if isinstance(d, int) else 1 for d in i.shape]
            feeds[i.name] = np.zeros(shape, np.float64 if "double" in i.type else np.float32)
        for _ in range(3):
            s.run(None, feeds)
        times = []
        for _ in range(15):
            t = _time.perf_counter()
            s.run(None, feeds)
            times.append(_time.perf_counter() - t)
        per_product = float(np.median(times)) / 8

    def count(factor: float, period_s: float = 256 / 48000) -> int:
        return max(2, min(400, math.ceil(factor * period_s / per_product)))

    return count


def run_cli(*args, env=None, timeout=60, check=None):
    """Run ``python -m pi_synth ARGS`` as a user would; returns CompletedProcess."""
    e = dict(os.environ)
    if env:
        e.update(env)
    p = subprocess.run(
        [sys.executable, "-m", "pi_synth", *map(str, args)],
        capture_output=True, text=True, env=e, timeout=timeout,
    )
    if check is not None and p.returncode != check:
        raise AssertionError(f"exit {p.returncode}, stderr:\n{p.stderr}\nstdout:\n{p.stdout}")
    return p


@pytest.fixture
def cli():
    return run_cli


class JackDummy:
    """``jackd -d dummy`` under one name, which a test can stop and start again (the
    device-loss test pulls it from under the ``pisynth_jack`` PCM)."""

    def __init__(self, name: str):
        self.name = name
        self.proc = None

    def start(self) -> None:
        bench = str(ROOT / "benchmarks")
        if bench not in sys.path:
            sys.path.insert(0, bench)
        from _env import free_stale_jack_servers

        free_stale_jack_servers()  # slots of servers killed before they could say so
        self.proc = subprocess.Popen(
            ["jackd", "--no-realtime", "-n", self.name, "-d", "dummy", "-r", "48000", "-p", "256"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            probe = subprocess.run(["jack_lsp", "-s", self.name], capture_output=True, text=True)
            if "system:playback_1" in probe.stdout:
                return
            time.sleep(0.05)
        self.proc.kill()
        out = self.proc.communicate()[0]
        pytest.fail(f"jackd did not start:\n{out}")

    def kill(self) -> None:
        """SIGKILL: the device vanishes the way an unplugged DAC does, with no goodbye."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


@pytest.fixture
def jack_dummy(monkeypatch):
    """A real JACK server with the dummy backend: real-time pacing without a sound card."""
    if not shutil.which("jackd"):
        pytest.fail("jackd is not installed: .ci/run installs jackd2 (apt)")
    server = JackDummy(f"pisynth-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server.name)
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def machine_stalls(tmp_path):
    """``benchmarks/_stallprobe.py`` on every CPU for the test: when the machine itself (a
    VM's host) stopped running anything. ``probe.unexplained(xrun_times, window_s, min_ms)``
    keeps the xruns it does not account for: the ones a test holds against our code."""
    bench = str(Path(__file__).resolve().parent.parent / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from _stallprobe import StallProbe

    with StallProbe(tmp_path / "stalls") as probe:
        yield probe


@pytest.fixture
def retry_after_stall(machine_stalls):
    """``retry_after_stall(attempt, min_ms=5.0, tries=3)``: run ``attempt()``; if it fails
    while the machine itself stopped for ≥ ``min_ms`` (the stall probe, at SCHED_FIFO 90 on
    every CPU), run it again, up to ``tries`` in all; the last result stands. For tests of
    real-time audio with no xrun, on a VM whose host takes the CPU for 10–60 ms (measured
    here: a stall of ≥ 9 ms every ~2 s on a bad day, and on 2026-12-07 two attempts in a row
    stalled in 2 of 9 runs of one test); a Pi has no host to do that. A failure with no such
    stall fails at once."""
    import warnings

    from _stallprobe import stall_before

    def run(attempt, min_ms: float = 5.0, tries: int = 3):
        for n in range(1, tries):
            t0 = time.monotonic()
            try:
                return attempt()
            except AssertionError as e:
                t1 = time.monotonic() + 0.05  # a stall that ended just after the failure counts too
                worst = stall_before([t1], machine_stalls.stalls(), window_s=t1 - t0)[0]
                if worst < min_ms:
                    raise
                warnings.warn(f"retried ({n}): the machine stopped for {worst:.1f} ms during the attempt, "
                              f"which failed with: {str(e).splitlines()[0] if str(e) else 'AssertionError'}")
        return attempt()

    return run


@pytest.fixture
def jack_server(jack_dummy):
    """The name of a running JACK dummy server (JACK_DEFAULT_SERVER is set to it)."""
    return jack_dummy.name


from _debian import debian_root  # noqa: E402,F401  (the cached Debian root: a fixture for the provisioning tests)
