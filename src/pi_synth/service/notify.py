"""Tell systemd how we are doing: ``sd_notify`` in forty lines, no new dependency.

systemd passes ``$NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for an abstract
socket) to a ``Type=notify`` service; we send it newline-separated assignments in one
datagram. :class:`Notifier` is what ``pi-synth run`` uses::

    n = Notifier.from_env()          # a no-op object when not under systemd
    n.ready("playing flute")         # READY=1 once sound is flowing (systemd: started)
    n.status("flute, 0 xruns, load 31%")
    n.watchdog()                     # WATCHDOG=1, every n.watchdog_interval s while healthy
    n.reloading(); ...; n.ready()    # SIGHUP: RELOADING=1 + MONOTONIC_USEC, then READY=1
    n.stopping()                     # STOPPING=1 when the fade-out starts

Rules: a send never blocks (the socket is non-blocking; a full queue drops the
message) and never raises (an error is logged once, then the notifier keeps trying
quietly). ``watchdog_interval`` is half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3)
recommends, and None when there is no watchdog or ``$WATCHDOG_PID`` names another process.

**The watchdog is health-gated**: ping only while the audio loop really produces.
:class:`WatchdogGate` does the bookkeeping: give it a function returning progress
counters (e.g. ``(engine.stats.blocks, backend.frames_written)``), call
:meth:`WatchdogGate.tick` from the monitor loop (any thread but the audio ones), and it
pings only while *every* counter moved within ``stall_after`` seconds. A stalled model
or a wedged device stops the pings; systemd then kills and restarts the service
(``WatchdogSec=``, ``Restart=on-failure`` in ``systemd/pi-synth.service``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Sequence

log = logging.getLogger(__name__)


class Notifier:
    """A connection to ``$NOTIFY_SOCKET``; every method is a no-op when ``enabled`` is False."""

    def __init__(self, address: str | None = None, watchdog_usec: int | None = None):
        self.address = address
        self.enabled = False
        self.watchdog_interval: float | None = None
        self.sent = 0
        self.errors = 0
        self._sock: socket.socket | None = None
        self._addr: str | bytes | None = None
        if watchdog_usec and watchdog_usec > 0:
            self.watchdog_interval = watchdog_usec / 2 / 1e6
        if not address:
            return
        if address.startswith("@"):
            self._addr = "\0" + address[1:]  # abstract namespace
        elif address.startswith("/"):
            self._addr = address
        else:  # vsock:… and friends (VMs) are not for a Pi
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path; not notifying systemd", address)
            return
        try:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        except OSError as e:
            log.warning("cannot create the systemd notify socket (%s); not notifying systemd", e)
            return
        self.enabled = True

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "Notifier":
        """From ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``."""
        env = os.environ if environ is None else environ
        usec = None
        try:
            usec = int(env.get("WATCHDOG_USEC", "") or 0) or None
            pid = env.get("WATCHDOG_PID")
            if usec and pid and int(pid) != os.getpid():
                usec = None  # the watchdog is some other process's business
        except ValueError:
            log.warning("WATCHDOG_USEC/WATCHDOG_PID are not integers; no watchdog pings")
            usec = None
        return cls(env.get("NOTIFY_SOCKET") or None, usec)

    # -- the messages -----------------------------------------------------------------

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; True if it went out."""
        if not self.enabled:
            return False
        msg = "\n".join(assignments).encode("utf-8", "replace")
        try:
            self._sock.sendto(msg, self._addr)
        except OSError as e:  # BlockingIOError (queue full), ECONNREFUSED, ENOENT…
            self.errors += 1
            if self.errors == 1:
                log.warning("systemd notify to %s failed (%s); will keep trying quietly", self.address, e)
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([_status(status)] if status else []))

    def status(self, text: str) -> None:
        self.send(_status(text))

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        """Before a reload; send :meth:`ready` when it is done (Type=notify-reload protocol)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for more start/stop time (a slow first model optimisation on a Pi Zero)."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def close(self) -> None:
        """Idempotent."""
        sock, self._sock = self._sock, None
        self.enabled = False
        if sock is not None:
            sock.close()

    def __repr__(self) -> str:
        return (f"Notifier({self.address!r}, enabled={self.enabled}, "
                f"watchdog_interval={self.watchdog_interval})")


def _status(text: str) -> str:
    # one assignment per line: a newline in the text would start a new one
    return "STATUS=" + " ".join(str(text).splitlines())


class WatchdogGate:
    """Ping the watchdog only while the audio loop makes progress.

    ``progress()`` returns one counter or a sequence of counters that grow while
    audio flows (blocks rendered, frames written). :meth:`tick` pings when it is
    time (``interval``, default the notifier's ``watchdog_interval``) and every
    counter changed within the last ``stall_after`` seconds (default: the interval).
    Call it from the monitor loop, a few times per interval. It never raises.
    """

    def __init__(self, notifier: Notifier, progress: Callable[[], int | Sequence[int]], *,
                 interval: float | None = None, stall_after: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.notifier = notifier
        self.progress = progress
        self.interval = interval if interval is not None else notifier.watchdog_interval
        self.stall_after = stall_after if stall_after is not None else (self.interval or 1.0)
        self.clock = clock
        self.pings = 0
        self.stalled = False
        self._last_values: tuple | None = None
        self._changed_at: list[float] = []
        self._last_ping = float("-inf")

    @property
    def active(self) -> bool:
        return self.notifier.enabled and self.interval is not None

    def healthy(self, now: float | None = None) -> bool:
        """Sample the counters; True if every one moved within ``stall_after``."""
        now = self.clock() if now is None else now
        try:
            v = self.progress()
            values = tuple(v) if isinstance(v, (tuple, list)) else (v,)
        except Exception as e:  # a broken health probe is a stall, not a crash
            log.debug("watchdog progress probe failed: %s", e)
            return False
        if self._last_values is None or len(values) != len(self._last_values):
            self._last_values = values
            self._changed_at = [now] * len(values)
            return False  # nothing to compare with yet
        for i, (a, b) in enumerate(zip(values, self._last_values)):
            if a != b:
                self._changed_at[i] = now
        self._last_values = values
        return all(now - t <= self.stall_after for t in self._changed_at)

    def tick(self, now: float | None = None) -> bool:
        """Sample health and ping if due; True if a ping was sent."""
        now = self.clock() if now is None else now
        ok = self.healthy(now)
        if ok != (not self.stalled):
            self.stalled = not ok
            if self.stalled and self.pings:
                log.warning("audio loop stalled: no watchdog pings until it produces again")
        if not ok or not self.active or now - self._last_ping < self.interval:
            return False
        self._last_ping = now
        self.notifier.watchdog()
        self.pings += 1
        return True
