"""Python's cyclic garbage collector, run on the audio clock.

Why: a collection holds the GIL for as long as it takes, and CPython starts one in whichever
thread happens to allocate. Started by a control thread at normal priority, sharing its core
with anything, a full collection held the audio thread back 9–21 ms in the duplex soak
(issue 21) — longer than the device's buffer. So while the engine plays, automatic
collection is off and the thread that feeds the device runs it itself, right after a write —
when the device's buffer is fullest — at the audio thread's own priority, by CPython's own
thresholds (a young collection every ``threshold0`` allocations, an older generation every
``threshold1`` / ``threshold2`` of the one below). What is alive when the engine starts (the
model, the libraries) is frozen out of every collection (``gc.freeze``); :meth:`settle`
freezes again once the instrument's controls are up, so the full collections only walk what
was made while playing.

Collections and the longest one are counted (``gc_collections``, ``gc_ms_max`` in the engine's
status): data, like xruns.
"""

from __future__ import annotations

import gc
import threading
import time

_lock = threading.Lock()
_active = 0  # engines playing with this policy in the process (the first turns it on, the last off)
_was_enabled = True


POLICIES = ("audio", "freeze", "python")


class GcClock:
    """One engine's share of the policy: :meth:`start` / :meth:`stop` around playing,
    :meth:`after_write` from the thread that writes to the device.

    ``policy``: ``audio`` (the above), ``freeze`` (collect and freeze at start, then CPython
    collects as usual, in any thread: before issue 21, kept for A/B runs), ``python`` (no change)."""

    def __init__(self, policy: str = "audio") -> None:
        if policy not in POLICIES:
            raise ValueError(f"gc policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.policy = policy
        self.collections = 0
        self.longest_s = 0.0
        self.on = False
        self.thresholds = gc.get_threshold()

    def start(self) -> None:
        """Collect and freeze what start-up made, then turn automatic collection off."""
        global _active, _was_enabled
        if self.policy == "python":
            return
        with _lock:
            gc.collect()
            gc.freeze()
            if self.policy == "freeze":
                self.thresholds = (0, 0, 0)  # after_write never collects
                self.on = True
                return
            if _active == 0:
                _was_enabled = gc.isenabled()
                gc.disable()
            _active += 1
            self.thresholds = gc.get_threshold()
            self.on = True

    def settle(self) -> None:
        """Freeze what the instrument made after the engine started (controls, MIDI ports):
        long-lived objects no collection needs to walk again. O(1); call from any thread."""
        if self.on:
            gc.freeze()

    def stop(self) -> None:
        global _active
        if not self.on:
            return
        self.on = False
        with _lock:
            if self.policy == "freeze":
                gc.unfreeze()
                return
            _active -= 1
            if _active == 0:
                gc.unfreeze()
                if _was_enabled:
                    gc.enable()

    def after_write(self) -> None:
        """The device was just filled: collect if CPython would have by now (hot path:
        one ``gc.get_count`` a write, a collection only past the threshold)."""
        t0, t1, t2 = self.thresholds
        c0, c1, c2 = gc.get_count()
        if not t0 or c0 <= t0:
            return
        gen = 0
        if c1 > t1:
            gen = 2 if c2 > t2 else 1
        s = time.perf_counter()
        gc.collect(gen)
        dt = time.perf_counter() - s
        self.collections += 1
        if dt > self.longest_s:
            self.longest_s = dt
