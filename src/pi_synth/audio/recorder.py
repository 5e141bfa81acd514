"""The last seconds of what the instrument played, kept for "what did I just play?".

A ring of 16-bit frames, preallocated at start: the audio thread copies each block in
(:meth:`Recorder.push`: the backends' own sample conversion and a slice copy — no
allocation, no lock), and a control thread takes the newest ``seconds`` out
(:meth:`Recorder.snapshot`) to write a WAV the web page offers for download
(``docs/web.md``). The samples are the ones a 16-bit DAC is given: after the output guard
and the crossfade, converted by the same :class:`~pi_synth.audio.backends.base.Converter`.

There is one writer and any number of readers, and no lock between them: the writer
counts frames written *after* each copy, and a reader reads the count before and after
its own copy and drops whatever the writer may have overwritten meanwhile. So a snapshot
is always whole frames in order, possibly a block shorter than asked.
"""

from __future__ import annotations

import numpy as np

from pi_synth.audio.backends.base import Converter

MAX_SECONDS = 600.0  # 10 minutes of 48 kHz mono is 55 MB: the config refuses more


class Recorder:
    """The newest ``seconds`` of a ``channels``-channel stream at ``sample_rate``."""

    def __init__(self, seconds: float, sample_rate: int, channels: int = 1, *, max_block: int = 16384):
        if not 0 < seconds <= MAX_SECONDS:
            raise ValueError(f"a recording keeps 0 < seconds ≤ {MAX_SECONDS:g}, not {seconds!r}")
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self.capacity = int(round(seconds * sample_rate))
        self._ring = np.zeros((self.capacity, self.channels), np.int16)
        self._conv = Converter("S16_LE", max_block, self.channels)
        self.written = 0  # frames pushed since start; updated after each copy (see the docstring)
        self._block = 0  # the longest block pushed: how far a write under way can reach

    @property
    def seconds(self) -> float:
        return self.capacity / self.sample_rate

    def push(self, block: np.ndarray) -> None:
        """The audio thread: append ``block`` (float32 ``[n, channels]``, ±1 full scale)."""
        n = block.shape[0]
        if n > self._block:
            if n > self._conv.frames:  # never on the audio path: blocks are ≤ max_block
                self._conv = Converter("S16_LE", n, self.channels)
            self._block = n
        self._conv.convert(block)
        s = self._conv.out
        pos = self.written % self.capacity
        first = min(n, self.capacity - pos)
        self._ring[pos:pos + first] = s[:first]
        if first < n:
            self._ring[:n - first] = s[first:n]
        self.written += n

    def snapshot(self, seconds: float | None = None) -> np.ndarray:
        """A control thread: the newest frames (int16 ``[n, channels]``, oldest first), at
        most ``seconds`` (default: all kept). Safe while :meth:`push` runs."""
        want = self.capacity if seconds is None else max(0, min(self.capacity, int(seconds * self.sample_rate)))
        end = self.written
        n = min(want, end)
        start = end - n
        idx = np.arange(start, end) % self.capacity
        out = self._ring[idx]  # a copy
        # the ring positions the writer reached meanwhile (what it finished, plus a block it
        # may be in the middle of) held our oldest frames: drop those
        drop = self.written + self._block - self.capacity - start
        return out[min(n, drop):] if drop > 0 else out


def wav_bytes(frames: np.ndarray, sample_rate: int) -> bytes:
    """A 16-bit PCM WAV file of int16 ``frames [n, channels]``."""
    from pi_synth.audio.backends.wav import wav_header

    data = np.ascontiguousarray(frames, "<i2").tobytes()
    return wav_header(sample_rate, frames.shape[1], 16, False, len(data)) + data
