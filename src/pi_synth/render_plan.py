"""How long a render (or a recording) lasts and how much it may write: decided here, once.

``pi-synth render`` and ``pi-synth run`` both ask :func:`length` how long to play, from
what the user gave, first match wins:

* ``--seconds S`` — that long (at most :data:`MAX_SECONDS`, a day);
* a source of known length — ``input_seconds`` (``render --input IN.wav``, ``run --backend
  wav --capture IN.wav``: its length, or the last event's if later) — plus the tail;
* the events (``--events``, ``--midi``) — to the last one plus the release tail, unless
  they loop or a live source keeps the instrument open (then until stopped);
* else ``default`` (render: 5 s; run: None, until stopped).

An implied length past a day is refused with one line (it is a typo or a broken file,
not a wish: a 116-day render once filled a disk). Then, when the sound goes to a file
(render, ``run --backend wav``), :func:`check_output` works out the bytes (WAV header +
frames × channels × sample width) and refuses, before anything is written, what the
WAV format cannot hold (4 GiB) or the output's filesystem has no room for.
:func:`room_seconds` is what an open-ended recording may last; ``run`` stops there and
says so.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import stat
from dataclasses import dataclass

from pi_synth.errors import ConfigError, DeviceError

MAX_SECONDS = 24 * 3600.0  # the longest render, --seconds, or event time: a day
DEFAULT_RENDER_SECONDS = 5.0
WAV_HEADER = 44
WAV_MAX_BYTES = 0xFFFFFFFF  # RIFF sizes are 32-bit
FREE_MARGIN = 16 << 20  # left free on the output's filesystem (logs, the OS) after a render
SAMPLE_BYTES = {"S16_LE": 2, "S32_LE": 4, "FLOAT_LE": 4}
TAIL_BLOCKS = 4  # blocks past the stop a render may write: the fade and the block it ends in


@dataclass(frozen=True)
class Length:
    """How long to play (``seconds``; None: until stopped) and why, in words for a log line."""

    seconds: float | None
    why: str


def hms(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def length(*, seconds: float | None = None, events=(), tail_s: float = 1.0, loop: bool = False,
           live: tuple[str, ...] | list[str] = (), input_seconds: float | None = None,
           default: float | None = None) -> Length:
    """How long to play; see the module docstring. ``live``: names of the live sources
    configured (knobs, OSC, …): with any, events do not end the run."""
    if seconds is not None:
        if not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
            raise ConfigError(f"--seconds {seconds!r}: must be > 0 and at most a day ({MAX_SECONDS:.0f})")
        return Length(float(seconds), "--seconds")
    if input_seconds is not None:
        last = max((ev.t for ev in events), default=0.0) if not (loop or live) else 0.0
        total = max(input_seconds, last) + tail_s
        if total > MAX_SECONDS:
            raise ConfigError(f"the input lasts {hms(input_seconds)}; a render is at most a day: "
                              "give --seconds")
        if last > input_seconds:  # events after the recording ends still play (silence in)
            return Length(total, f"the events (last at {last:.2f} s, after the input's {input_seconds:.2f} s) "
                                 f"+ {tail_s:g} s tail")
        return Length(total, f"the input ({input_seconds:.2f} s) + {tail_s:g} s tail")
    if events:
        last = max(ev.t for ev in events)
        if loop:
            return Length(default, "--loop: the events repeat until stopped")
        if live:
            return Length(default, f"live input ({', '.join(live)}) keeps playing after the events")
        total = last + tail_s
        if not total <= MAX_SECONDS:
            raise ConfigError(f"the events run to {hms(last)} (t = {last:g} s); a render or run is at most "
                              f"a day: give --seconds, or fix the times in the file")
        return Length(total, f"the events (last at {last:.2f} s) + {tail_s:g} s release tail")
    return Length(default, "default" if default is not None else "until stopped")


def sample_bytes(fmt: str) -> int:
    try:
        return SAMPLE_BYTES[fmt]
    except KeyError:
        raise ConfigError(f"sample format {fmt!r}: use one of {', '.join(SAMPLE_BYTES)}") from None


def wav_bytes(seconds: float, sample_rate: int, channels: int, fmt: str, block_size: int = 0) -> int:
    """The most a WAV of ``seconds`` (plus the fade and the block it ends in) can take."""
    frames = math.ceil(seconds * sample_rate) + TAIL_BLOCKS * max(block_size, 256)
    return WAV_HEADER + frames * channels * sample_bytes(fmt)


_DESCRIPTOR = re.compile(r"/(?:dev/fd|proc/self/fd|proc/\d+/fd)/(\d+)")
_STANDARD = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def descriptor_of(path: str) -> int | None:
    """The open descriptor ``path`` names (``-o /dev/stdout``, ``/dev/fd/3``, a link to one),
    or None. It is written through that descriptor itself, whatever it is open on: with
    ``> out.wav`` standard output is a regular file, and renaming a finished render onto
    ``/dev/stdout`` would replace the system's link with it."""
    p = os.path.abspath(path)
    for _ in range(8):  # a chain of links, by hand: the link into /proc/self/fd is the answer
        if p in _STANDARD:
            return _STANDARD[p]
        if m := _DESCRIPTOR.fullmatch(p):
            if m.group(0).startswith("/proc/") and "/self/" not in p and int(p.split("/")[2]) != os.getpid():
                return None  # another process's descriptor: a path like any other
            return int(m.group(1))
        try:
            target = os.readlink(p)
        except OSError:
            return None
        p = os.path.normpath(os.path.join(os.path.dirname(p), target))
    return None


def is_stream(path: str) -> bool:
    """A character device, pipe or socket (``/dev/null``, ``/dev/stdout``, a FIFO), or an open
    descriptor (:func:`descriptor_of`): written straight through, never renamed onto, its
    length unknown in the header until the end."""
    if descriptor_of(path) is not None:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def free_bytes(path: str) -> int | None:
    """Bytes free for an unprivileged writer on the filesystem ``path`` would be written to
    (None: a stream, or the folder does not exist — opening it will say)."""
    if is_stream(path):
        return None
    folder = os.path.dirname(os.path.abspath(path))
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _mb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def check_output(path: str, nbytes: int, seconds: float, *, flag: str = "-o") -> None:
    """Refuse, before writing, a WAV the format cannot hold or the disk has no room for."""
    if not path:
        raise ConfigError(f"needs an output file: {flag} OUT.wav")
    if nbytes > WAV_MAX_BYTES:
        raise ConfigError(f"{path}: {hms(seconds)} of audio is {_mb(nbytes)}, more than a WAV file can "
                          f"hold (4 GiB); render less (--seconds) or in parts")
    free = free_bytes(path)
    if free is not None and nbytes + FREE_MARGIN > free:
        raise DeviceError(f"{path}: {hms(seconds)} of audio needs {_mb(nbytes)} but its filesystem has "
                          f"{_mb(free)} free; free some space, write elsewhere, or render less (--seconds)")


def room_seconds(path: str, sample_rate: int, channels: int, fmt: str) -> float | None:
    """How long a recording to ``path`` can last before the WAV limit or the free space
    (less the margin) runs out; None: no limit (a stream)."""
    per_second = sample_rate * channels * sample_bytes(fmt)
    limit = (WAV_MAX_BYTES - WAV_HEADER) / per_second
    if is_stream(path):
        return None
    free = free_bytes(path)
    if free is not None:
        limit = min(limit, max(0.0, (free - FREE_MARGIN - WAV_HEADER) / per_second))
    return limit


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """``a`` and ``b`` name one file (links and relative paths too): writing one would
    overwrite the other."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)
