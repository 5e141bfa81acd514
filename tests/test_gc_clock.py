"""Python's GC on the audio clock (issue 21, gc_clock.py): while the engine plays, cyclic
garbage made by a control thread is collected by the thread that writes to the device, not
by the control thread that happened to allocate (which held the GIL 9–21 ms at normal
priority in the duplex soak); everything is restored when it stops."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from pi_synth.audio.backends import backend_class
from pi_synth.audio.engine import Engine
from pi_synth.audio.gc_clock import GcClock
from pi_synth.audio.player import Player
from pi_synth.audio.synth import Synth
from pi_synth.model.runtime import Runtime


class _Node:
    __slots__ = ("other", "pad")


def _cycles(stop: threading.Event, made: list[int]) -> None:
    """A control thread making cyclic garbage, as parsers and mappings do."""
    n = 0
    while not stop.is_set():
        for _ in range(2000):
            a, b = _Node(), _Node()
            a.other, b.other = b, a
            a.pad = [a, b]
            n += 1
        time.sleep(0.002)
    made.append(n)


def _play_while_allocating(organ, policy: str, mode: str) -> tuple[Engine, dict[str, int], bool]:
    synth = Synth(Runtime(organ()))
    engine = Engine(Player(synth), backend_class("null")(), period=256, periods=2, gc=policy, mode=mode)
    seen: dict[str, int] = {}

    def cb(phase, info):
        if phase == "start":
            name = threading.current_thread().name
            seen[name] = seen.get(name, 0) + 1

    stop, made = threading.Event(), []
    worker = threading.Thread(target=_cycles, args=(stop, made), name="control")
    engine.start()
    try:
        enabled_while_playing = gc.isenabled()
        gc.callbacks.append(cb)
        try:
            worker.start()
            time.sleep(1.0)
            stop.set()
            worker.join()
        finally:
            gc.callbacks.remove(cb)
    finally:
        engine.stop(fade=False)
    assert made and made[0] > 10000
    return engine, seen, enabled_while_playing


@pytest.mark.parametrize("mode,writer", [("direct", "pi-synth-audio"), ("threaded", "pi-synth-output")])
def test_the_audio_thread_collects_what_a_control_thread_made(organ, mode, writer):
    assert gc.isenabled() and gc.get_freeze_count() == 0
    engine, seen, enabled = _play_while_allocating(organ, "audio", mode)
    assert not enabled  # automatic collection is off while playing
    assert set(seen) == {writer}, seen  # every collection in the thread that feeds the device
    st = engine.status()
    assert seen[writer] > 10
    assert seen[writer] <= st["gc_collections"] <= seen[writer] + 2  # (the callback came and went while playing)
    assert 0 < st["gc_ms_max"] < 1000
    assert gc.isenabled() and gc.get_freeze_count() == 0  # restored


def test_before_issue_21_the_allocating_thread_collected(organ):
    """The A/B twin (``--gc freeze`` in benchmarks/soak.py): the control thread collects."""
    engine, seen, enabled = _play_while_allocating(organ, "freeze", "direct")
    assert enabled and seen.get("control", 0) > 10
    assert engine.status()["gc_collections"] == 0
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_two_engines_share_the_switch(organ):
    """The first engine to start turns automatic collection off, the last to stop on."""
    a, b = GcClock(), GcClock()
    a.start()
    b.start()
    assert not gc.isenabled()
    a.stop()
    assert not gc.isenabled()
    b.stop()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_wrong_policy_is_named():
    with pytest.raises(ValueError, match="gc policy must be one of audio, freeze, python"):
        GcClock("sometimes")
