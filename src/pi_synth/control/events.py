"""Timed events: ``--events F.json`` and ``--midi F.mid``, played on the audio clock.

An events file is a JSON list; each event has ``t`` (seconds) and one action::

    {"t": 0.5, "set": {"pitch": 440.0}}          a model control, in its unit
    {"t": 1.0, "midi": [144, 60, 100]}           raw MIDI bytes (running status and all)
    {"t": 2.0, "source": "knob1", "value": 0.25} a physical source, through the mapping

Events are checked when loaded (errors name the file, the event and the fix) and
applied by :class:`Timeline`, a block hook: at the first block boundary at or after
``t``, so a render and a live run make the same samples.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from pi_synth.errors import EventsError


@dataclass(frozen=True)
class Event:
    """One timed event: ``kind`` (set, midi, source) and its data, at ``t`` seconds."""

    t: float
    kind: str  # "set" | "midi" | "source"
    data: Any


def parse_events(items: Any, where: str = "events") -> list[Event]:
    if not isinstance(items, list):
        raise EventsError(f"{where}: an events file must be a JSON list of events")
    out = []
    for i, e in enumerate(items):
        w = f"{where}: event {i}"
        if not isinstance(e, dict):
            raise EventsError(f"{w} must be an object like {{\"t\": 0.5, \"set\": {{\"pitch\": 440}}}}")
        t = e.get("t")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise EventsError(f"{w}: 't' must be a time in seconds ≥ 0, got {t!r}")
        actions = [k for k in ("set", "midi", "source") if k in e]
        if len(actions) != 1:
            raise EventsError(f"{w}: needs exactly one of 'set', 'midi' or 'source'")
        kind = actions[0]
        if kind == "set":
            s = e["set"]
            if not isinstance(s, dict) or not s:
                raise EventsError(f"{w}: 'set' must map control names to numbers")
            for k, v in s.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise EventsError(f"{w}: 'set' value for {k!r} must be a number, got {v!r}")
            data = {str(k): float(v) for k, v in s.items()}
        elif kind == "midi":
            m = e["midi"]
            if not isinstance(m, list) or not all(
                isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in m
            ):
                raise EventsError(f"{w}: 'midi' must be a list of bytes 0..255, got {m!r}")
            data = bytes(m)
        else:
            src, v = e["source"], e.get("value")
            if not isinstance(src, str):
                raise EventsError(f"{w}: 'source' must be a name like 'knob1'")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise EventsError(f"{w}: 'value' must be a number in 0..1, got {v!r}")
            data = (src, float(v))
        out.append(Event(float(t), kind, data))
    out.sort(key=lambda ev: ev.t)  # stable: same-time events keep file order
    return out


def load_events(path: str | os.PathLike) -> list[Event]:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    except FileNotFoundError:
        raise EventsError(f"{path}: events file not found") from None
    except json.JSONDecodeError as e:
        raise EventsError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    return parse_events(items, where=path)


def load_midi_file(path: str | os.PathLike) -> list[Event]:
    """A Standard MIDI File → ``midi`` events (tempo map applied by mido). Program changes
    are left out: in a file they name General MIDI instruments, which mean nothing here."""
    import mido

    path = os.fspath(path)
    try:
        mid = mido.MidiFile(path)
    except FileNotFoundError:
        raise EventsError(f"{path}: MIDI file not found") from None
    except (OSError, EOFError, ValueError, KeyError, IndexError) as e:
        raise EventsError(f"{path}: not a readable Standard MIDI File ({e})") from None
    t = 0.0
    out = []
    for msg in mid:
        t += msg.time
        # program changes in a file name General MIDI instruments, not our models: skipped
        if not msg.is_meta and msg.type not in ("sysex", "program_change"):
            out.append(Event(t, "midi", bytes(msg.bytes())))
    return out


def check_events(events: list[Event], router, where: str = "events") -> None:
    """Check names against the loaded model (before any sound starts)."""
    for i, ev in enumerate(events):
        try:
            if ev.kind == "set":
                for name in ev.data:
                    router.bank.index(name)
            elif ev.kind == "source":
                router.mapping.check(ev.data[0])
        except KeyError as e:
            raise EventsError(f"{where}: event {i}: {e.args[0]}") from None


class Timeline:
    """Block hook applying events on the audio clock."""

    def __init__(self, events: list[Event], router, sample_rate: int):
        self.router = router
        self._events = events
        self._frames = [round(ev.t * sample_rate) for ev in events]
        self._i = 0

    @property
    def done(self) -> bool:
        return self._i >= len(self._events)

    def __call__(self, position: int) -> None:
        i, n = self._i, len(self._events)
        while i < n and self._frames[i] <= position:
            ev = self._events[i]
            if ev.kind == "set":
                for k, v in ev.data.items():
                    self.router.set(k, v)
            elif ev.kind == "midi":
                self.router.midi_bytes(ev.data)
            else:
                self.router.source(*ev.data)
            i += 1
        self._i = i


class StopAt:
    """Block hook: start the fade-out once the audio clock reaches ``frames``."""

    def __init__(self, frames: int, fade_out):
        self.frames = frames
        self.fade_out = fade_out if callable(fade_out) else fade_out.fade_out
        self.fired = False

    def __call__(self, position: int) -> None:
        if position >= self.frames and not self.fired:
            self.fired = True
            self.fade_out()
