"""The backend interface, in mido's shape: public methods check, hooks do the I/O.

A backend overrides ``_open``, ``_write``, ``_close`` and (if paced) ``_wait_room`` only
(and ``_sink``, for a faster audio-thread path to the same hooks; ``_discard``, if closing
after a failure must differ — a file backend leaves no half-written file).
``write`` takes float32 frames ``[n, channels]`` (a period, or a whole block) and returns the frames written; an xrun is counted in
``xruns`` (data, never raised) by the hook that sees it, with when (``_count_xrun``). ``paced`` says whether ``write`` blocks in real time
(a sound card) or returns at once (a file): the engine needs no thread for the latter.

The **capture side** (audio in) has the same shape: ``open_capture`` / ``read`` /
``close_capture`` check, ``_open_capture`` / ``_read`` / ``_close_capture`` do the I/O.
It is opened on ``capture`` (the constructor's; ``""`` = the playback device: full
duplex, same period, one clock), independently of the playback side, so a lost input is
closed and reopened while the output plays on. ``read`` fills float32 frames and never
raises for an overrun: capture xruns are counted in ``capture_xruns`` (with their times),
apart from the playback ones. The base class captures silence (the null backend's input).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pi_synth.errors import DeviceError

try:
    from pi_synth.audio._kernels import to_pcm as _to_pcm
except ImportError:  # not built (a source tree used without pip install): numpy
    _to_pcm = None

FORMATS = {"S16_LE": (np.int16, 32767.0), "S32_LE": (np.int32, 2147483647.0), "FLOAT_LE": (np.float32, 1.0)}


@dataclass
class Granted:
    """What the device actually gave us (it may differ from what we asked)."""

    sample_rate: int
    channels: int
    period: int
    periods: int
    format: str = "S16_LE"

    @property
    def latency_frames(self) -> int:
        return self.period * self.periods


class Converter:
    """float32 frames → the device's sample format, into one preallocated buffer.

    The same conversion serves every backend, so a WAV render and an ALSA recording
    of the same audio are byte-identical. Mono is duplicated onto every device channel.
    Rounded half to even and **saturated**: a crossfade of two loud models can sum past
    1.0 (equal-power gains), and an integer wrap there would be a full-scale click.
    The work is ``_kernels.to_pcm`` (C) where it is built, numpy otherwise (same bytes).

    ``convert`` returns a memoryview of the buffer, which is what the device takes: right
    after a model run numpy's own buffer export costs ~0.3 µs a call, and the audio path
    made four a block (``np.asarray`` gives the array back). The C path also keeps a view
    of the last input, since the engine hands over the same block buffer every time.
    """

    def __init__(self, fmt: str, frames: int, channels: int):
        if fmt not in FORMATS:
            raise DeviceError(f"sample format {fmt} is not supported; use S16_LE, S32_LE or FLOAT_LE")
        dtype, self.scale = FORMATS[fmt]
        self.fmt = fmt
        self.out = np.zeros((frames, channels), dtype)
        self.view = memoryview(self.out)
        self._tmp = np.zeros((frames, channels), np.float64 if fmt == "S32_LE" else np.float32)
        self.frames = frames
        self._x = self._xv = None  # the last input and its view

    def _convert_c(self, x: np.ndarray) -> memoryview:
        try:
            if x is not self._x:
                self._x = None  # until x has given a view
                self._xv = memoryview(x)
                self._x = x
            n = _to_pcm(self._xv, self.view)
        except (BufferError, ValueError, TypeError):  # not float32 C-contiguous: numpy's turn
            return self.convert_numpy(x)
        return self.view if n == self.frames else self.view[:n]

    def convert_numpy(self, x: np.ndarray) -> memoryview:
        n = x.shape[0]
        out = self.out[:n]
        if self.fmt == "FLOAT_LE":
            np.clip(x, -1.0, 1.0, out=out)
            return self.view[:n]
        tmp = self._tmp[:n]
        np.multiply(x, tmp.dtype.type(self.scale), out=tmp)  # S32: in float64, exactly
        np.rint(tmp, out=tmp)
        np.clip(tmp, -self.scale, self.scale, out=tmp)
        np.copyto(out, tmp, casting="unsafe")
        return self.view[:n]

    # chosen once, at import: the C kernel where it is built
    convert = _convert_c if _to_pcm is not None else convert_numpy


class Backend:
    """Where periods go. Subclasses implement the hooks; the public methods check first."""

    name = "base"
    paced = False
    # a device with an input of its own (a sound card's capture side), which capture = ""
    # (the playback device, full duplex) opens; the null, unpaced and wav backends have
    # none: they capture silence, or the file given as ``capture``
    own_input = False
    # a backend that opens a named capture (a PCM, a WAV file); the others refuse a name
    opens_capture = False
    XRUN_LOG = 1024  # when the last this many xruns happened, kept for matching against other clocks

    def __init__(self, device: str | None = None, *, format: str = "S16_LE", capture=None):
        self.device = device
        self.format = format
        self.granted: Granted | None = None
        self.xruns = 0
        self.xrun_times = np.zeros(self.XRUN_LOG)  # time.monotonic() of each, a ring by count
        self._written = 0
        self._converter: Converter | None = None
        # the capture side: its device ("" or None: the playback device), what it granted,
        # its own xruns
        self.capture = device if capture is None or isinstance(capture, str) and not capture else capture
        self.capture_granted: Granted | None = None
        self.capture_xruns = 0
        self.capture_xrun_times = np.zeros(self.XRUN_LOG)
        self.frames_read = 0

    # -- public: checks, then the hooks -----------------------------------------------

    def open(self, sample_rate: int, channels: int, period: int, periods: int = 2) -> Granted:
        if self.granted is not None:
            raise RuntimeError(f"{self.name} backend is already open")
        if period < 16 or periods < 2:
            raise DeviceError(f"period {period}×{periods} is too small; use period ≥ 16 and periods ≥ 2")
        self.granted = self._open(sample_rate, channels, period, periods)
        self._converter = Converter(self.granted.format, self.granted.period, self.granted.channels)
        return self.granted

    def write(self, frames: np.ndarray) -> int:
        """Write float32 ``[n, channels]`` frames; returns n. A paced backend blocks until
        all are in (a block longer than the buffer goes in as the device frees room)."""
        if self.granted is None:
            raise RuntimeError(f"{self.name} backend is not open")
        conv = self._converter
        if frames.shape[0] > conv.frames:  # longer than any write before: grow once
            conv = self._converter = Converter(conv.fmt, frames.shape[0], self.granted.channels)
        n = self._write(conv.convert(frames))
        self._written += n
        return n

    @property
    def frames_written(self) -> int:
        return self._written + self._sunk()

    def sink(self, frames: int):
        """The audio thread's ``(write, wait)`` for blocks of ``frames``: :meth:`write` and
        :meth:`wait_room`, checked once here rather than on every block. A backend may give
        faster ones (ALSA: one C call each while the device keeps up). They belong to this
        opening of the device: ask again after a reopen."""
        if self.granted is None:
            raise RuntimeError(f"{self.name} backend is not open")
        if frames < 1:
            raise ValueError("a sink writes blocks of at least one frame")
        return self._sink(frames)

    def wait_room(self, frames: int) -> None:
        """Return once ``frames`` can be written without waiting. A paced backend blocks
        here, so the caller renders *just in time*: controls read after the wait are a
        period fresher than ones read before a blocking write (one period less latency)."""
        if self.granted is None:
            raise RuntimeError(f"{self.name} backend is not open")
        self._wait_room(frames)

    def queued(self) -> int | None:
        """Frames written and not yet played (a paced device), None if unknown (a file):
        how long a reader of the input may still wait before the output runs dry."""
        if self.granted is None or not self.paced:
            return None
        return self._queued()

    def close(self) -> None:
        """Idempotent."""
        if self.granted is not None:
            try:
                self._close()
            finally:
                self.granted = None

    def discard(self) -> None:
        """Close after a failure: a backend that writes a file leaves none (a render that
        failed half way must not look finished). Idempotent."""
        if self.granted is not None:
            try:
                self._discard()
            finally:
                self.granted = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> str:
        g = self.granted
        if g is None:
            return f"{self.name}:{self.device or ''}"
        return (
            f"{self.name}:{self.device or ''} {g.sample_rate} Hz {g.channels} ch {g.format} "
            f"period {g.period}×{g.periods}"
        )

    def last_xrun_times(self) -> list[float]:
        """When the xruns happened (``time.monotonic()``), oldest first: the last
        ``XRUN_LOG`` of them."""
        n, k = self.xruns, self.XRUN_LOG
        return [float(self.xrun_times[i % k]) for i in range(max(0, n - k), n)]

    def _count_xrun(self) -> None:
        """For a hook that saw an underrun: count it, and when (preallocated, no lock)."""
        self.xrun_times[self.xruns % self.XRUN_LOG] = time.monotonic()
        self.xruns += 1

    # -- public: the capture side ----------------------------------------------------

    def open_capture(self, sample_rate: int, channels: int, period: int, periods: int = 2) -> Granted:
        """Open the input (``capture``) at the model's rate, ``channels`` asked for (the
        device may give another count: read what it granted), ``period`` frames a period."""
        if self.capture_granted is not None:
            raise RuntimeError(f"{self.name} backend's capture is already open")
        if period < 16 or periods < 2:
            raise DeviceError(f"capture period {period}×{periods} is too small; use period ≥ 16 and periods ≥ 2")
        self.capture_granted = self._open_capture(sample_rate, channels, period, periods)
        return self.capture_granted

    def read(self, out: np.ndarray, timeout=0.0) -> int:
        """Fill float32 ``out`` ``[n, capture channels]`` with the next captured frames,
        waiting up to ``timeout`` seconds for them (a paced device; or a callable giving
        the seconds still left each time it is asked); returns how many arrived. An overrun is counted (``capture_xruns``), never raised; a lost device
        raises :class:`DeviceError` (close it and open again)."""
        if self.capture_granted is None:
            raise RuntimeError(f"{self.name} backend's capture is not open")
        n = self._read(out, timeout)
        self.frames_read += n
        return n

    def capture_backlog(self) -> int:
        """Frames captured and not read yet (0 if unknown): how far behind the reader is."""
        return self._capture_backlog() if self.capture_granted is not None else 0

    def close_capture(self, lost: bool = False) -> None:
        """Idempotent. ``lost``: the device stopped answering (closed without waiting on it)."""
        if self.capture_granted is not None:
            try:
                self._close_capture(lost)
            finally:
                self.capture_granted = None

    def last_capture_xrun_times(self) -> list[float]:
        n, k = self.capture_xruns, self.XRUN_LOG
        return [float(self.capture_xrun_times[i % k]) for i in range(max(0, n - k), n)]

    def _count_capture_xrun(self) -> None:
        """For a hook that saw an overrun (input frames lost): count it, and when."""
        self.capture_xrun_times[self.capture_xruns % self.XRUN_LOG] = time.monotonic()
        self.capture_xruns += 1

    # -- hooks ------------------------------------------------------------------------

    def _open(self, sample_rate: int, channels: int, period: int, periods: int) -> Granted:
        return Granted(sample_rate, channels, period, periods, self.format)

    def _write(self, data: np.ndarray) -> int:
        return data.shape[0]

    def _wait_room(self, frames: int) -> None:
        pass

    def _sink(self, frames: int):
        return self.write, self.wait_room

    def _queued(self) -> int | None:
        return None

    def _sunk(self) -> int:
        """Frames a ``_sink`` wrote without going through :meth:`write`."""
        return 0

    def _close(self) -> None:
        pass

    def _discard(self) -> None:
        self._close()

    def _open_capture(self, sample_rate: int, channels: int, period: int, periods: int) -> Granted:
        if self.capture:  # a name: only a backend with inputs (alsa, desktop) or files (wav) opens one
            raise DeviceError(self.no_capture_said(self.name, self.capture))
        return Granted(sample_rate, channels, period, periods, "FLOAT_LE")  # silence in

    @staticmethod
    def no_capture_said(backend: str, capture: str) -> str:
        return (f"capture {capture}: the {backend} backend has no input to open it on; a WAV file plays in "
                "with --backend wav (or render --input), a sound card's input with --backend alsa")

    def _read(self, out: np.ndarray, timeout: float) -> int:
        out.fill(0.0)  # silence in
        return out.shape[0]

    def _capture_backlog(self) -> int:
        return 0

    def _close_capture(self, lost: bool = False) -> None:
        pass
