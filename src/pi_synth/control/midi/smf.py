"""Standard MIDI Files, read the way a player reads them: what can be played is played.

Why our own reader: mido's refuses a whole file for one damaged byte — a key signature of 9
sharps, a tempo event of the wrong length, a velocity byte over 127, a chunk it does not know
(XF karaoke files put ``XFIH`` before their tracks; the standard says to skip unknown chunks),
a track length that lies, a file cut short. Files like these come from the wild; a sequencer
plays them, so the instrument does too, and says in one line each what it repaired.

Two jobs, as in :mod:`pi_synth.control.midi.parser`:

- :func:`read_smf`: bytes → header and tracks of ``(delta ticks, event bytes)``, with the
  repairs noted (:class:`Song`);
- :func:`timed`: a song → ``(seconds, channel message bytes)`` in order: tracks merged (format
  0 and 1) or played one after the other (format 2, independent patterns), the tempo map or
  SMPTE time applied the way mido applies it.

Only channel messages come out (notes, controllers, bend, pressure, program changes): meta
events other than tempo and System Exclusive mean nothing to a model and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SmfError", "Song", "read_smf", "timed"]

DEFAULT_TEMPO = 500_000  # µs a beat: 120 bpm
META, SYSEX, ESCAPE = 0xFF, 0xF0, 0xF7
SET_TEMPO, END_OF_TRACK = 0x51, 0x2F
FIX = "re-save or export it from your sequencer or DAW"


class SmfError(ValueError):
    """A file with nothing a player could read (one line, with the fix)."""


@dataclass
class Song:
    format: int
    division: int  # ticks a beat; or, SMPTE, the header's two bytes (high bit set)
    tracks: list[list[tuple[int, bytes]]] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)  # what was wrong and what was done, one line each

    @property
    def smpte_rate(self) -> float:
        """Ticks a second of SMPTE time (-fps, ticks a frame), else 0 (metrical time)."""
        if not self.division & 0x8000:
            return 0.0
        fps = 256 - (self.division >> 8)  # 24, 25, 29 (drop frame: 29.97), 30
        return (29.97 if fps == 29 else float(fps)) * max(1, self.division & 0xFF)


def _varlen(raw: bytes, i: int, end: int) -> tuple[int, int]:
    """A variable-length quantity at ``i`` (at most 4 bytes) → (value, next index)."""
    value = 0
    for k in range(4):
        if i + k >= end:
            raise EOFError
        b = raw[i + k]
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, i + k + 1
    raise ValueError("a length or delta time longer than 4 bytes")


def _data_length(status: int) -> int:
    return 1 if status & 0xF0 in (0xC0, 0xD0) else 2


class _Track:
    """One MTrk's events, read until End of Track, ``end`` or the first byte that makes no sense."""

    def __init__(self, raw: bytes, start: int, end: int):
        self.events: list[tuple[int, bytes]] = []
        self.stop = ""  # why reading stopped early ("" = End of Track or the chunk's end)
        self.clipped = self.bad_meta = 0
        self.ended = False  # End of Track seen
        self.incomplete = False  # an event ran past ``end``
        self.end = start  # just after the last whole event read
        try:
            self._read(raw, start, end)
        except EOFError:
            self.incomplete = True
        except ValueError as e:
            self.stop = str(e)

    def _read(self, raw: bytes, i: int, end: int) -> None:
        running = delta = 0
        while i < end:
            dt, j = _varlen(raw, i, end)
            if j >= end:
                raise EOFError
            status = raw[j]
            if status == META:
                if j + 1 >= end:
                    raise EOFError
                kind = raw[j + 1]
                n, k = _varlen(raw, j + 2, end)
                if k + n > end:
                    raise EOFError
                delta += dt
                i = self.end = k + n
                if kind == END_OF_TRACK:
                    self.ended = True
                    return
                if kind == SET_TEMPO:
                    if n == 3 and int.from_bytes(raw[k:k + 3], "big") > 0:
                        self.events.append((delta, bytes((META, SET_TEMPO)) + raw[k:k + 3]))
                        delta = 0
                    else:
                        self.bad_meta += 1
                continue
            if status in (SYSEX, ESCAPE):
                n, k = _varlen(raw, j + 1, end)
                if k + n > end:
                    raise EOFError
                delta += dt
                i = self.end = k + n
                continue
            if status < 0x80:
                if not running:
                    raise ValueError("a data byte where an event should start")
                k = j  # running status: the data starts here
            elif status < 0xF0:
                running, k = status, j + 1
            else:
                raise ValueError(f"a system byte 0x{status:02X}, which a file may not hold")
            n = _data_length(running)
            if k + n > end:
                raise EOFError
            data = raw[k:k + n]
            if max(data) > 0x7F:
                self.clipped += 1
                data = bytes(min(b, 0x7F) for b in data)
            self.events.append((delta + dt, bytes((running,)) + data))
            delta = 0
            i = self.end = k + n


def _chunk_at(raw: bytes, i: int) -> bool:
    """Something that looks like a chunk header at ``i``: four ASCII letters."""
    return i + 8 <= len(raw) and all(0x20 < b < 0x7F for b in raw[i:i + 4])


def read_smf(raw: bytes) -> Song:
    """Read a Standard MIDI File (module docstring). Raises :class:`SmfError` only when
    nothing in it can be played."""
    if not raw:
        raise SmfError("is empty (0 bytes): not a MIDI file")
    if raw[:4] != b"MThd":
        raise SmfError(f"not a Standard MIDI File (it starts with {raw[:4]!r}; a .mid file starts with b'MThd')")
    if len(raw) < 14:
        raise SmfError(f"ends inside its header ({len(raw)} bytes): the file is cut short; copy it again")
    hlen = int.from_bytes(raw[4:8], "big")
    fmt, division = int.from_bytes(raw[8:10], "big"), int.from_bytes(raw[12:14], "big")
    if division == 0:
        raise SmfError(f"its header says 0 ticks a beat, so its times mean nothing; {FIX}")
    song = Song(fmt, division)
    i = 8 + max(hlen, 6)
    skipped: list[str] = []
    n_tracks = 0
    while i + 8 <= len(raw):
        kind, length = raw[i:i + 4], int.from_bytes(raw[i + 4:i + 8], "big")
        if kind != b"MTrk":
            if not _chunk_at(raw, i):
                at = raw.find(b"MTrk", i)
                if at < 0:
                    song.repairs.append(f"ignored {len(raw) - i} bytes after the last track")
                    break
                song.repairs.append(f"skipped {at - i} bytes that are not a chunk")
                i = at
                continue
            skipped.append(kind.decode("ascii"))
            i += 8 + length
            continue
        n_tracks += 1
        start, declared = i + 8, i + 8 + length
        tr = _Track(raw, start, min(declared, len(raw)))
        if tr.incomplete and declared < len(raw) and not _chunk_at(raw, declared):
            tr = _Track(raw, start, len(raw))  # its length is too short: read on to End of Track
            song.repairs.append(f"track {n_tracks}'s length is wrong: read to its End of Track")
        if tr.incomplete or (declared > len(raw) and not tr.ended):
            song.repairs.append(f"track {n_tracks} ends early (is the file cut short?): "
                                f"played what was there ({len(tr.events)} events)")
        if tr.stop:
            song.repairs.append(f"track {n_tracks} stops at {tr.stop}: played the "
                                f"{len(tr.events)} events before it")
        if tr.clipped:
            song.repairs.append(f"track {n_tracks}: {tr.clipped} event(s) with a data byte over 127, clipped to 127")
        if tr.bad_meta:
            song.repairs.append(f"track {n_tracks}: ignored {tr.bad_meta} damaged tempo event(s)")
        song.tracks.append(tr.events)
        if tr.ended and not (_chunk_at(raw, declared) or declared >= len(raw)):
            # its length is too long (End of Track came first): the next chunk follows it
            nxt = tr.end if _chunk_at(raw, tr.end) else raw.find(b"MTrk", tr.end)
            if nxt < 0:
                break
            song.repairs.append(f"track {n_tracks}'s length is wrong: took the next track where it starts")
            i = nxt
            continue
        i = declared
    if skipped:
        song.repairs.append(f"skipped chunk(s) {', '.join(sorted(set(skipped)))} (not tracks: the standard says to)")
    if not song.tracks:
        raise SmfError(f"holds no track (no MTrk chunk); {FIX}")
    return song


def timed(song: Song) -> list[tuple[float, bytes]]:
    """Channel messages with their times in seconds (module docstring)."""
    rate = song.smpte_rate
    tpb = song.division
    songs = [[tr] for tr in song.tracks] if song.format == 2 else [song.tracks]
    out: list[tuple[float, bytes]] = []
    t = 0.0
    for tracks in songs:
        merged = []  # (absolute tick, track, order, bytes): stable in track order at a tie
        for n, tr in enumerate(tracks):
            tick = 0
            for k, (dt, ev) in enumerate(tr):
                tick += dt
                merged.append((tick, n, k, ev))
        merged.sort(key=lambda m: (m[0], m[1], m[2]))
        tempo, last, start = DEFAULT_TEMPO, 0, t
        for tick, _, _, ev in merged:
            if rate:  # SMPTE: ticks are fractions of a frame; tempo events mean nothing
                t = start + tick / rate
            else:
                if tick > last:
                    t += (tick - last) * (tempo * 1e-6 / tpb)
                last = tick
            if ev[0] == META:
                tempo = int.from_bytes(ev[2:5], "big")
            else:
                out.append((t, ev))
    return out
