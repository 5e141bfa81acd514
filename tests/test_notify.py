"""sd_notify against a real unix datagram socket, and the health-gated watchdog."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from pi_synth.service.notify import Notifier, WatchdogGate


@pytest.fixture
def notify_socket(tmp_path):
    """A listening datagram socket standing in for systemd; yields (address, recv)."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)

    def recv() -> dict:
        data = sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    yield path, recv, sock
    sock.close()


def test_disabled_without_env():
    n = Notifier.from_env({})
    assert not n.enabled and n.watchdog_interval is None
    n.ready("x"), n.status("y"), n.watchdog(), n.reloading(), n.stopping()  # all no-ops
    assert n.sent == 0


def test_messages_reach_the_socket(notify_socket):
    path, recv, _ = notify_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000",
                           "WATCHDOG_PID": str(os.getpid())})
    assert n.enabled and n.watchdog_interval == pytest.approx(5.0)
    n.ready("playing flute")
    assert recv() == {"READY": "1", "STATUS": "playing flute"}
    n.status("flute\n3 xruns")  # a newline must not start a new assignment
    assert recv() == {"STATUS": "flute 3 xruns"}
    n.watchdog()
    assert recv() == {"WATCHDOG": "1"}
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    msg = recv()
    assert msg["RELOADING"] == "1" and before <= int(msg["MONOTONIC_USEC"]) <= before + 5_000_000
    n.stopping()
    assert recv() == {"STOPPING": "1"}
    n.extend_timeout(30)
    assert recv() == {"EXTEND_TIMEOUT_USEC": "30000000"}
    assert n.sent == 6 and n.errors == 0
    n.close()
    n.close()


def test_abstract_socket():
    name = f"pi-synth-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        n.ready()
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_watchdog_pid_of_another_process_disables_the_watchdog(notify_socket):
    n = Notifier.from_env({"NOTIFY_SOCKET": notify_socket[0], "WATCHDOG_USEC": "2000000",
                           "WATCHDOG_PID": "1"})
    assert n.enabled and n.watchdog_interval is None


def test_send_errors_never_raise_and_log_once(tmp_path, caplog):
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    for _ in range(3):
        n.watchdog()
    assert n.errors == 3 and n.sent == 0
    assert sum("systemd notify" in r.message for r in caplog.records) == 1
    assert not Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_a_full_queue_never_blocks(notify_socket):
    path, _, _ = notify_socket  # nobody reads: the receive queue fills up
    n = Notifier(path)
    t0 = time.monotonic()
    for _ in range(5000):
        n.status("x" * 200)
    assert time.monotonic() - t0 < 2.0
    assert n.errors > 0 and n.sent > 0


def test_child_process_notifies(notify_socket):
    """The module as the service uses it: a separate process reading its environment."""
    path, recv, _ = notify_socket
    code = ("from pi_synth.service.notify import Notifier\n"
            "n = Notifier.from_env(); n.ready('hello'); n.watchdog(); n.stopping()\n"
            "print(n.watchdog_interval)")
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="3000000")
    env.pop("WATCHDOG_PID", None)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "1.5"
    assert recv() == {"READY": "1", "STATUS": "hello"}
    assert recv() == {"WATCHDOG": "1"}
    assert recv() == {"STOPPING": "1"}


# -- the health-gated watchdog ---------------------------------------------------------

class FakeLoop:
    """Stands in for the engine's counters: a thread that counts blocks until stalled."""

    def __init__(self):
        self.blocks = 0
        self.frames = 0
        self.stall = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            if not self.stall.is_set():
                self.blocks += 1
                self.frames += 256
            time.sleep(0.005)

    def progress(self):
        return self.blocks, self.frames


def test_watchdog_pings_only_while_the_loop_produces(notify_socket):
    path, _, sock = notify_socket
    sock.settimeout(0.02)
    n = Notifier(path, watchdog_usec=100_000)  # ping every 50 ms
    loop = FakeLoop()
    gate = WatchdogGate(n, loop.progress, stall_after=0.15)
    loop.thread.start()

    def run_for(seconds):
        pings = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            gate.tick()
            time.sleep(0.01)
            try:
                while True:
                    assert sock.recv(100) == b"WATCHDOG=1"
                    pings += 1
            except (BlockingIOError, TimeoutError, socket.timeout):
                pass
        return pings

    try:
        healthy = run_for(0.6)
        loop.stall.set()  # inject a stall: the counters stop moving
        run_for(0.2)  # within stall_after the last pings may still go out
        stalled = run_for(0.6)
        was_stalled = gate.stalled
        loop.stall.clear()
        recovered = run_for(0.4)
    finally:
        loop.stop.set()
    assert healthy >= 6, healthy
    assert stalled == 0 and was_stalled
    assert not gate.stalled
    assert recovered >= 3, recovered


def test_gate_needs_every_counter_to_move():
    n = Notifier(None)
    t = [0.0]
    state = {"blocks": 0, "frames": 0}
    gate = WatchdogGate(n, lambda: (state["blocks"], state["frames"]), interval=1.0,
                        stall_after=2.0, clock=lambda: t[0])
    assert not gate.healthy()  # first sample: nothing to compare
    for _ in range(5):  # the device keeps taking silence, but no block is rendered
        t[0] += 1
        state["frames"] += 256
        gate.tick()
    assert gate.stalled
    state["blocks"] += 1
    t[0] += 1
    assert gate.healthy()
    assert not gate.active  # no socket, no interval from the environment: never pings
    assert gate.pings == 0


def test_a_failing_probe_counts_as_a_stall():
    def broken():
        raise RuntimeError("engine gone")
    gate = WatchdogGate(Notifier(None), broken, interval=1.0)
    assert gate.tick() is False and not gate.healthy()


# -- the service as systemd runs it ----------------------------------------------------


def test_pi_synth_run_speaks_the_notify_protocol(notify_socket):
    """`pi-synth run` under a fake systemd: READY once sound flows, health-gated watchdog
    pings, SIGHUP → RELOADING then READY, SIGTERM → STOPPING and exit 0."""
    path, _, sock = notify_socket
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "pi_synth", "run", "--backend", "null"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[dict] = []

    def until(pred, timeout=20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                data = sock.recv(4096).decode()
            except (TimeoutError, socket.timeout):
                continue
            seen.append(dict(line.split("=", 1) for line in data.split("\n")))
            if pred(seen[-1]):
                return seen[-1]
        raise AssertionError(f"not seen in {timeout} s; got {seen[-5:]}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}")

    sock.settimeout(0.5)
    try:
        ready = until(lambda m: m.get("READY") == "1")
        assert "STATUS" in ready
        n0 = sum("WATCHDOG" in m for m in seen)
        until(lambda m: "WATCHDOG" in m)
        until(lambda m: "WATCHDOG" in m)
        assert sum("WATCHDOG" in m for m in seen) >= n0 + 2
        proc.send_signal(signal.SIGHUP)
        reloading = until(lambda m: m.get("RELOADING") == "1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        until(lambda m: m.get("READY") == "1")
        proc.send_signal(signal.SIGTERM)
        until(lambda m: m.get("STOPPING") == "1")
        assert proc.wait(20) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_signal_handler_takes_no_lock():
    """``pi-synth run``'s SIGTERM/SIGHUP handlers run in the main thread between two bytecodes,
    maybe while it holds the loop Event's lock inside ``Event.wait``: a handler that takes a
    lock (``Event.set()`` does) then waits on itself for ever (the run above once ignored
    SIGTERM after a reload, on a loaded machine). The C calls a handler makes, profiled:
    no lock among them."""
    from pi_synth.app import SignalFlags

    def c_calls(fn, *args):
        seen = []
        sys.setprofile(lambda frame, event, arg: seen.append(getattr(arg, "__qualname__", repr(arg)))
                       if event == "c_call" else None)
        try:
            fn(*args)
        finally:
            sys.setprofile(None)
        return seen

    assert any("enter" in c or "acquire" in c for c in c_calls(threading.Event().set))  # the probe sees a lock
    flags = SignalFlags()
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        calls = c_calls(flags.handle, sig, None)
        assert not [c for c in calls if "enter" in c or "acquire" in c], calls
    assert flags.stop and flags.reload
    # through a real signal to this process: the flag it names, nothing else
    other = SignalFlags()
    old = signal.signal(signal.SIGHUP, other.handle)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.05)
        assert other.reload and not other.stop
    finally:
        signal.signal(signal.SIGHUP, old)
