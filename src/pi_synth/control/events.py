"""Timed events: ``--events F.json`` and ``--midi F.mid``, played on the audio clock.

An events file is a JSON list; each event has ``t`` (seconds) and one action::

    {"t": 0.5, "set": {"pitch": 440.0}}          a model control, in its unit
    {"t": 1.0, "midi": [144, 60, 100]}           raw MIDI bytes (running status and all)
    {"t": 2.0, "source": "knob1", "value": 0.25} a physical source, through the mapping

Events are checked when loaded (errors name the file, the event and the fix) and
applied by :class:`Timeline`, a block hook, on the audio clock, so a render and a live run
make the same samples: at the first block boundary at or after ``t`` — or, for a model
with several control frames a block (e.g. 4 frames of 256 in a 1024-frame block), a
``set`` or ``source`` event inside the block it falls in, at the first control frame that
starts at or after ``t`` (the bank's ``at_frame``: the control steps there instead of
ramping across the block), which takes up to a block less to sound. MIDI events stay on
block boundaries: a voice's envelope advances a block at a time. A model with one control
frame a block takes any event at a boundary (its block cannot be split).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

from pi_synth.errors import EventsError
from pi_synth.render_plan import MAX_SECONDS

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 64 << 20  # an hour of dense playing is a few MB


@dataclass(frozen=True)
class Event:
    """One timed event: ``kind`` (set, midi, source) and its data, at ``t`` seconds."""

    t: float
    kind: str  # "set" | "midi" | "source"
    data: Any
    stream: str = "events"  # MIDI bytes of each stream go through a parser of its own (running status)


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
            raise EventsError(f"{w}: 't' must be a time in seconds ≥ 0, got {_short(t)}")
        if t > MAX_SECONDS:
            raise EventsError(f"{w}: 't' = {t:g} s is past a day ({MAX_SECONDS:.0f} s), the longest "
                              "render or run; fix the time (seconds, not samples or ms?)")
        actions = [k for k in ("set", "midi", "source") if k in e]
        if len(actions) != 1:
            raise EventsError(f"{w}: needs exactly one of 'set', 'midi' or 'source'")
        extra = sorted(set(e) - {"t", actions[0], "comment"} - ({"value"} if actions[0] == "source" else set()))
        if extra:
            raise EventsError(f"{w}: unknown key {_short(extra[0])} (an event has 't' and one of 'set', 'midi' "
                              "or 'source' with its 'value'; notes are 'comment')")
        kind = actions[0]
        if kind == "set":
            s = e["set"]
            if not isinstance(s, dict) or not s:
                raise EventsError(f"{w}: 'set' must map control names to numbers")
            for k, v in s.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise EventsError(f"{w}: 'set' value for {_short(k)} must be a number, got {_short(v)}")
            data = {str(k): float(v) for k, v in s.items()}
        elif kind == "midi":
            m = e["midi"]
            if not isinstance(m, list) or not m or not all(
                isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in m
            ):
                raise EventsError(f"{w}: 'midi' must be a non-empty list of bytes 0..255, got {_short(m)}")
            data = bytes(m)
        else:
            src, v = e["source"], e.get("value")
            if not isinstance(src, str):
                raise EventsError(f"{w}: 'source' must be a name like 'knob1'")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or not 0.0 <= v <= 1.0:
                raise EventsError(f"{w}: 'value' must be a number in 0..1 (a knob's travel), got {_short(v)}")
            data = (src, float(v))
        out.append(Event(float(t), kind, data))
    out.sort(key=lambda ev: ev.t)  # stable: same-time events keep file order
    return out


def _short(v: Any, n: int = 60) -> str:
    """``repr(v)`` cut to one readable piece of a line (a bad value can be megabytes)."""
    r = repr(v)
    return r if len(r) <= n else r[:n] + "…"


def _read_capped(path: str, kind: str, give: str, too_big: str) -> bytes:
    """The bytes of an events or MIDI file, at most ``MAX_FILE_BYTES``; each way it can fail
    in one line."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise EventsError(f"{path}: {kind} not found") from None
    except IsADirectoryError:
        raise EventsError(f"{path}: is a directory; give {give}") from None
    except OSError as e:
        raise EventsError(f"{path}: cannot read the {kind} ({e.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        sep = "" if too_big.startswith(";") else " "
        raise EventsError(f"{path}: over {MAX_FILE_BYTES >> 20} MB{sep}{too_big}")
    return raw


def load_events(path: str | os.PathLike) -> list[Event]:
    path = os.fspath(path)
    raw = _read_capped(path, "events file", "the events .json file",
                       "of events; split it, or check it is the right file")
    try:
        items = json.loads(raw.decode("utf-8-sig"))  # a byte-order mark, as Windows editors write
    except UnicodeDecodeError as e:
        raise EventsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}): is it a JSON file?") from None
    except json.JSONDecodeError as e:
        raise EventsError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except RecursionError:
        raise EventsError(f"{path}: JSON nested too deeply; an events file is a flat list of events") from None
    if items == []:  # not "no --events": a file meant to play that holds nothing
        raise EventsError(f'{path}: holds no events (an empty list); add some, e.g. [{{"t": 0.0, "midi": [144, 60, 100]}}]')
    return parse_events(items, where=path)


def note_ons(events: list[Event]) -> list[tuple[int, int]]:
    """(channel, note) of each note-on with a velocity in the events' MIDI: each stream read
    whole by the byte parser that plays it (running status across events, as it plays)."""
    from pi_synth.control.midi.parser import parse

    streams: dict[str, bytearray] = {}
    for ev in events:
        if ev.kind == "midi":
            streams.setdefault(ev.stream, bytearray()).extend(ev.data)
    return [(m.channel, m.note) for data in streams.values() for m in parse(data)
            if m.type == "note_on" and m.velocity]


def demo_midi() -> str:
    """The demo phrase shipped with pi-synth (``--midi demo``): ``pi_synth/data/demo.mid``."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "demo.mid")


def load_midi_file(path: str | os.PathLike) -> list[Event]:
    """A Standard MIDI File → ``midi`` events, its tempo map applied (:mod:`~pi_synth.control.midi.smf`:
    a damaged file plays what can be read and the log says what was repaired, in one line).
    Program changes are left out: in a file they name General MIDI instruments, which mean
    nothing here. ``demo`` (when no file of that name is here) is the shipped demo phrase."""
    from pi_synth.control.midi.smf import SmfError, read_smf, timed

    path = os.fspath(path)
    if path == "demo" and not os.path.exists(path):  # the shipped demo phrase
        path = demo_midi()
    if path == "-":
        raise EventsError("--midi -: MIDI from standard input is not read; give a .mid file (or 'demo')")
    raw = _unwrap_rmid(_read_capped(path, "MIDI file", "a .mid file", "; not a MIDI file to play, or split it"))
    try:
        song = read_smf(raw)
    except SmfError as e:
        raise EventsError(f"{path}: {e}") from None
    if song.repairs:
        log.warning("%s: %s", path, "; ".join(song.repairs))
    out = [Event(t, "midi", data, stream="file") for t, data in timed(song) if data[0] & 0xF0 != 0xC0]
    if not out:
        raise EventsError(f"{path}: no notes or controller messages in this MIDI file ({len(song.tracks)} "
                          "track(s) without any): nothing to play")
    return out


def _unwrap_rmid(raw: bytes) -> bytes:
    """A RIFF MIDI file (``.rmi``: RIFF/RMID with the SMF in its ``data`` chunk) → that SMF."""
    if raw[:4] != b"RIFF" or raw[8:12] != b"RMID":
        return raw
    i = 12
    while i + 8 <= len(raw):
        size = int.from_bytes(raw[i + 4:i + 8], "little")
        if raw[i:i + 4] == b"data":
            return raw[i + 8:i + 8 + size]
        i += 8 + size + (size & 1)
    return raw


def check_events(events: list[Event], router, where: str = "events") -> None:
    """Check names against the loaded model (before any sound starts)."""
    for i, ev in enumerate(events):
        try:
            if ev.kind == "set":
                for name, value in ev.data.items():
                    router.bank.index(name)
                    why = router.card.control(name).refuse(value)
                    if why:
                        raise EventsError(f"{where}: event {i}: {why}")
            elif ev.kind == "source":
                router.mapping.check(ev.data[0])
        except KeyError as e:
            raise EventsError(f"{where}: event {i}: {e.args[0]}") from None


class Timeline:
    """Block hook applying events on the audio clock. ``loop_seconds``: start again from
    the first event that long after the start of each pass (``run --loop``). ``block``:
    the player's block — with it, ``set`` and ``source`` events inside a block are placed
    at their control frame for a model with several (module docstring); without, every
    event waits for a block boundary."""

    def __init__(self, events: list[Event], router, sample_rate: int, loop_seconds: float | None = None,
                 block: int | None = None):
        self.router = router
        self.block = block
        self._events = events
        self._frames = [round(ev.t * sample_rate) for ev in events]
        self._i = 0
        self._loop = max(1, round(loop_seconds * sample_rate)) if loop_seconds and events else 0
        self._offset = 0  # frames: where this pass started
        self.passes = 0
        self.placed = 0  # events applied inside a block, at their control frame
        from pi_synth.control.midi.parser import MidiParser

        self._parsers = {ev.stream: MidiParser() for ev in events if ev.kind == "midi"}

    @property
    def done(self) -> bool:
        return not self._loop and self._i >= len(self._events)

    def _frames_bank(self):
        """(control frames a block, the bank) for placing events, or (1, None): the playing
        model's bank, if its block is the player's (after a swap to another block size
        the frames would not line up)."""
        b = getattr(self.router, "bank", None)
        b = getattr(b, "bank", b)  # played controls wrap the model's bank
        card = getattr(b, "card", None)
        if not self.block or card is None or not hasattr(b, "at_frame"):
            return 1, None
        if card.control_frames > 1 and card.block_size == self.block:
            return card.control_frames, b
        return 1, None

    def _apply(self, ev: Event) -> None:
        if ev.kind == "set":
            for k, v in ev.data.items():
                self.router.set(k, v)
        elif ev.kind == "midi":
            # each stream (the events file, the MIDI file) its own parser: a running status
            # in one never completes the other's message
            self.router.midi_bytes(ev.data, self._parsers[ev.stream])
        else:
            self.router.source(*ev.data)

    def __call__(self, position: int) -> None:
        i, n = self._i, len(self._events)
        F, bank = self._frames_bank()
        B = self.block or 1
        horizon = position + B - 1 if bank is not None else position  # what may apply this block
        while True:
            while i < n:
                k = self._frames[i] + self._offset
                if k > horizon:
                    break
                ev = self._events[i]
                if bank is None:
                    self._apply(ev)
                elif ev.kind == "midi":
                    if k > position:
                        break  # at the next boundary (and the events after it too: in order)
                    self._apply(ev)
                else:
                    c = -(-(k - position) * F // B) if k > position else 0  # first frame at/after k
                    if c >= F:
                        break
                    bank.at_frame = c
                    try:
                        self._apply(ev)
                    finally:
                        bank.at_frame = -1
                    self.placed += 1
                i += 1
            if i < n or not self._loop or self._offset + self._loop > position:
                break
            i, self._offset = 0, self._offset + self._loop  # the next pass
            self.passes += 1
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
