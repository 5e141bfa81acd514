"""The backend interface, in mido's shape: public methods check, hooks do the I/O.

A backend overrides ``_open``, ``_write``, ``_close`` and (if paced) ``_wait_room`` only
(and ``_sink``, for a faster audio-thread path to the same hooks).
``write`` takes float32 frames ``[n, channels]`` (a period, or a whole block) and returns the frames written; an xrun is counted in
``xruns`` (data, never raised) by the hook that sees it, with when (``_count_xrun``). ``paced`` says whether ``write`` blocks in real time
(a sound card) or returns at once (a file): the engine needs no thread for the latter.
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
    XRUN_LOG = 1024  # when the last this many xruns happened, kept for matching against other clocks

    def __init__(self, device: str | None = None, *, format: str = "S16_LE"):
        self.device = device
        self.format = format
        self.granted: Granted | None = None
        self.xruns = 0
        self.xrun_times = np.zeros(self.XRUN_LOG)  # time.monotonic() of each, a ring by count
        self._written = 0
        self._converter: Converter | None = None

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

    def close(self) -> None:
        """Idempotent."""
        if self.granted is not None:
            try:
                self._close()
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

    # -- hooks ------------------------------------------------------------------------

    def _open(self, sample_rate: int, channels: int, period: int, periods: int) -> Granted:
        return Granted(sample_rate, channels, period, periods, self.format)

    def _write(self, data: np.ndarray) -> int:
        return data.shape[0]

    def _wait_room(self, frames: int) -> None:
        pass

    def _sink(self, frames: int):
        return self.write, self.wait_room

    def _sunk(self) -> int:
        """Frames a ``_sink`` wrote without going through :meth:`write`."""
        return 0

    def _close(self) -> None:
        pass
