"""One MIDI 1.0 byte-stream parser for every transport: DIN UART, USB bytes and ``--events``.

Why our own: ``mido.Parser`` drops running-status data bytes (fed ``90 3C 64 3E 5A`` it yields one
note, not two), and cheap DIN keyboards rely on running status.  Messages come out as
``mido.Message`` so a USB port (which already yields ``mido.Message``) and this parser feed the
note handling the same objects.

Two jobs, two classes, as in mido:

- :class:`MidiTokenizer` turns bytes into complete messages' status and data bytes
  (running status, realtime bytes inside other messages, SysEx framing, junk);
- :class:`MidiParser` builds ``mido.Message`` objects from them and queues them.

Real-time rules: it runs on the control (MIDI) thread, one method call per byte.  Bad input is
counted in :class:`ParserStats`, never raised: a noisy cable must not stop the instrument.  SysEx
goes into one preallocated buffer capped at ``max_sysex`` bytes, so a SysEx flood cannot grow
memory; the message queue is capped at ``max_pending`` too.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields

import mido

__all__ = ["MidiParser", "MidiTokenizer", "ParserStats", "parse"]

SYSEX_START = 0xF0
SYSEX_END = 0xF7
TUNE_REQUEST = 0xF6
REALTIME = 0xF8  # 0xF8..0xFF may appear anywhere, even inside another message
UNDEFINED_STATUS = frozenset((0xF4, 0xF5, 0xF9, 0xFD))
DEFAULT_MAX_SYSEX = 4096
DEFAULT_MAX_PENDING = 4096


def _data_length(status: int) -> int:
    """Number of data bytes after ``status`` (SysEx, realtime and undefined: 0, handled apart)."""
    if status < 0xF0:
        return 1 if 0xC0 <= status < 0xE0 else 2  # program change, channel pressure: 1
    return {0xF1: 1, 0xF2: 2, 0xF3: 1}.get(status, 0)


# Indexed by status byte; a list lookup is the cheapest thing on the per-byte path.
_DATA_LENGTH = [_data_length(status) for status in range(256)]


@dataclass(slots=True)
class ParserStats:
    """What the parser threw away, as counters (xruns-style: data, not exceptions)."""

    stray_data: int = 0
    """Data bytes with no status to belong to (no running status, or after a system message)."""
    truncated: int = 0
    """Incomplete messages abandoned because a new status byte arrived."""
    sysex_overlong: int = 0
    """SysEx messages longer than ``max_sysex`` data bytes, dropped whole."""
    sysex_unterminated: int = 0
    """SysEx ended by a status byte other than 0xF7 (still delivered, as MIDI 1.0 allows)."""
    ignored_status: int = 0
    """Undefined status bytes (0xF4, 0xF5, 0xF9, 0xFD) and 0xF7 outside a SysEx."""
    overflow: int = 0
    """Messages dropped because ``max_pending`` messages were waiting to be read."""

    @property
    def total(self) -> int:
        """Sum of all counters: non-zero means the input had something wrong with it."""
        return sum(getattr(self, f.name) for f in fields(self))


class MidiTokenizer:
    """Bytes in, complete messages out as ``(status, data1, data2, sysex)`` calls to ``emit``.

    ``emit(status, data1, data2, sysex)``: ``sysex`` is a ``bytes`` of the SysEx payload (no
    0xF0/0xF7) for status 0xF0 and ``None`` otherwise; unused data bytes are 0.

    Byte-stream semantics (MIDI 1.0):

    - running status: a channel-voice status is kept for following data bytes until another
      non-realtime status byte arrives; system common messages and SysEx cancel it;
    - realtime bytes (0xF8..0xFF) are emitted at once and leave the message in progress alone;
    - any status byte other than realtime ends a SysEx; undefined 0xF4/0xF5 and a stray 0xF7 are
      ignored and cancel running status; undefined realtime 0xF9/0xFD are ignored like any
      realtime byte (they do not touch running status);
    - a status byte in the middle of a message abandons it; data bytes with no status are dropped.
    """

    __slots__ = (
        "_emit",
        "_status",
        "_needed",
        "_data1",
        "_have",
        "_open",
        "_in_sysex",
        "_sysex",
        "_sysex_len",
        "_max_sysex",
        "stats",
    )

    def __init__(
        self,
        emit: Callable[[int, int, int, bytes | None], None],
        *,
        max_sysex: int = DEFAULT_MAX_SYSEX,
        stats: ParserStats | None = None,
    ) -> None:
        if max_sysex < 0:
            raise ValueError("max_sysex must be >= 0")
        self._emit = emit
        self._max_sysex = max_sysex
        self._sysex = bytearray(max_sysex)
        self.stats = stats if stats is not None else ParserStats()
        self.reset()

    def reset(self) -> None:
        """Forget running status and any message in progress (counters are kept)."""
        self._status = 0  # current (running) status; 0 = none
        self._needed = 0  # data bytes the current status takes
        self._data1 = 0
        self._have = 0  # data bytes received for the message in progress
        self._open = False  # a message is in progress (status or first data byte seen)
        self._in_sysex = False
        self._sysex_len = 0  # may exceed max_sysex: then the SysEx is overlong

    def feed_byte(self, byte: int) -> None:
        """Take one byte 0..255 (not checked here: :class:`MidiParser` checks)."""
        if byte < 0x80:
            self._data(byte)
        elif byte >= REALTIME:
            if byte == 0xF9 or byte == 0xFD:
                self.stats.ignored_status += 1
            else:
                self._emit(byte, 0, 0, None)
        else:
            self._status_byte(byte)

    def _data(self, byte: int) -> None:
        if self._in_sysex:
            n = self._sysex_len
            if n < self._max_sysex:
                self._sysex[n] = byte
            self._sysex_len = n + 1
            return
        status = self._status
        if not status:
            self.stats.stray_data += 1
            return
        if self._needed == 2:
            if not self._have:
                self._data1 = byte
                self._have = 1
                self._open = True
                return
            self._have = 0
            self._emit(status, self._data1, byte, None)
        else:
            self._emit(status, byte, 0, None)
        self._open = False
        if status >= 0xF0:  # system common: no running status
            self._status = 0

    def _status_byte(self, byte: int) -> None:
        if self._in_sysex:
            self._end_sysex(terminated=byte == SYSEX_END)
            if byte == SYSEX_END:
                return
        elif self._open:
            self.stats.truncated += 1
        self._have = 0
        self._open = False

        if byte < 0xF0:
            self._status = byte
            self._needed = _DATA_LENGTH[byte]
            self._open = True
            return
        # System common: cancels running status.
        self._status = 0
        if byte == SYSEX_START:
            self._in_sysex = True
            self._sysex_len = 0
        elif byte == TUNE_REQUEST:
            self._emit(byte, 0, 0, None)
        elif byte in UNDEFINED_STATUS or byte == SYSEX_END:
            self.stats.ignored_status += 1
        else:  # 0xF1 quarter frame, 0xF2 song position, 0xF3 song select
            self._status = byte
            self._needed = _DATA_LENGTH[byte]
            self._open = True

    def _end_sysex(self, *, terminated: bool) -> None:
        self._in_sysex = False
        if not terminated:
            self.stats.sysex_unterminated += 1
        if self._sysex_len > self._max_sysex:
            self.stats.sysex_overlong += 1
            return
        self._emit(SYSEX_START, 0, 0, bytes(self._sysex[: self._sysex_len]))


def _channel_message(kind: str, first: str, second: str | None) -> Callable:
    if second is None:

        def build(status: int, d1: int, d2: int, sysex: bytes | None) -> mido.Message:
            return mido.Message(kind, skip_checks=True, channel=status & 0x0F, **{first: d1})

    else:

        def build(status: int, d1: int, d2: int, sysex: bytes | None) -> mido.Message:
            return mido.Message(
                kind, skip_checks=True, channel=status & 0x0F, **{first: d1, second: d2}
            )

    return build


def _pitchwheel(status: int, d1: int, d2: int, sysex: bytes | None) -> mido.Message:
    return mido.Message(
        "pitchwheel", skip_checks=True, channel=status & 0x0F, pitch=(d1 | d2 << 7) - 8192
    )


def _sysex(status: int, d1: int, d2: int, sysex: bytes | None) -> mido.Message:
    return mido.Message("sysex", skip_checks=True, data=sysex)


def _quarter_frame(status: int, d1: int, d2: int, sysex: bytes | None) -> mido.Message:
    return mido.Message("quarter_frame", skip_checks=True, frame_type=d1 >> 4, frame_value=d1 & 15)


def _songpos(status: int, d1: int, d2: int, sysex: bytes | None) -> mido.Message:
    return mido.Message("songpos", skip_checks=True, pos=d1 | d2 << 7)


def _song_select(status: int, d1: int, d2: int, sysex: bytes | None) -> mido.Message:
    return mido.Message("song_select", skip_checks=True, song=d1)


def _simple(kind: str) -> Callable:
    def build(status: int, d1: int, d2: int, sysex: bytes | None) -> mido.Message:
        return mido.Message(kind, skip_checks=True)

    return build


def _make_builders() -> list[Callable | None]:
    """One message builder per status byte (None for status bytes that never reach it)."""
    builders: list[Callable | None] = [None] * 256
    channel_kinds = {
        0x80: _channel_message("note_off", "note", "velocity"),
        0x90: _channel_message("note_on", "note", "velocity"),
        0xA0: _channel_message("polytouch", "note", "value"),
        0xB0: _channel_message("control_change", "control", "value"),
        0xC0: _channel_message("program_change", "program", None),
        0xD0: _channel_message("aftertouch", "value", None),
        0xE0: _pitchwheel,
    }
    for base, build in channel_kinds.items():
        for channel in range(16):
            builders[base | channel] = build
    builders[0xF0] = _sysex
    builders[0xF1] = _quarter_frame
    builders[0xF2] = _songpos
    builders[0xF3] = _song_select
    builders[0xF6] = _simple("tune_request")
    for status, kind in (
        (0xF8, "clock"),
        (0xFA, "start"),
        (0xFB, "continue"),
        (0xFC, "stop"),
        (0xFE, "active_sensing"),
        (0xFF, "reset"),
    ):
        builders[status] = _simple(kind)
    return builders


_BUILDERS = _make_builders()


class MidiParser:
    """Feed bytes, read ``mido.Message`` objects; never raises on any byte 0..255.

    >>> p = MidiParser()
    >>> p.feed(bytes.fromhex("90 3C 64 3E 5A"))  # running status: two notes
    >>> [m.note for m in p]
    [60, 62]

    ``feed`` raises ``TypeError`` for a non-integer and ``ValueError`` for an integer outside
    0..255 (bytes before it in the same call have been taken).  What the input got wrong is
    counted in :attr:`stats`.  At most ``max_pending`` messages wait to be read; more are
    dropped and counted in ``stats.overflow``.
    """

    __slots__ = ("_tokenizer", "_messages", "_max_pending", "stats")

    def __init__(
        self, *, max_sysex: int = DEFAULT_MAX_SYSEX, max_pending: int = DEFAULT_MAX_PENDING
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.stats = ParserStats()
        self._tokenizer = MidiTokenizer(self._emit, max_sysex=max_sysex, stats=self.stats)
        self._messages: deque[mido.Message] = deque()
        self._max_pending = max_pending

    def _emit(self, status: int, d1: int, d2: int, sysex: bytes | None) -> None:
        if len(self._messages) >= self._max_pending:
            self.stats.overflow += 1
            return
        self._messages.append(_BUILDERS[status](status, d1, d2, sysex))

    def feed_byte(self, byte: int) -> None:
        """Take one byte; complete messages become readable at once."""
        if type(byte) is not int:  # fast path for plain ints; index() takes numpy ints too
            try:
                byte = operator.index(byte)
            except TypeError:
                raise TypeError(
                    f"MIDI byte must be an int, not {type(byte).__name__}"
                ) from None
        if not 0 <= byte <= 255:
            raise ValueError("MIDI byte must be in range 0..255")
        self._tokenizer.feed_byte(byte)

    def feed(self, data: bytes | bytearray | Iterable[int]) -> None:
        """Take a chunk of bytes (``bytes``, ``bytearray`` or any iterable of ints)."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            feed = self._tokenizer.feed_byte  # already 0..255: skip the checks
            for byte in bytes(data) if isinstance(data, memoryview) else data:
                feed(byte)
            return
        if isinstance(data, str):
            raise TypeError("MIDI data must be bytes or an iterable of ints, not str")
        feed = self.feed_byte
        for byte in data:
            feed(byte)

    def reset(self) -> None:
        """Forget running status, the message in progress and unread messages (not the stats)."""
        self._tokenizer.reset()
        self._messages.clear()

    def pending(self) -> int:
        """Number of complete messages waiting to be read."""
        return len(self._messages)

    def poll(self) -> mido.Message | None:
        """Next complete message, or None if there is none (never blocks)."""
        return self._messages.popleft() if self._messages else None

    get_message = poll  # mido.Parser's name for it

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[mido.Message]:
        """Read (and remove) the waiting messages."""
        messages = self._messages
        while messages:
            yield messages.popleft()


def parse(
    data: bytes | bytearray | Iterable[int], *, max_sysex: int = DEFAULT_MAX_SYSEX
) -> list[mido.Message]:
    """All complete messages in ``data``, in order (a fresh parser: no state carried over)."""
    parser = MidiParser(max_sysex=max_sysex, max_pending=1 << 62)
    parser.feed(data)
    return list(parser)
