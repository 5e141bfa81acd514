"""A single-producer, single-consumer ring of audio frames.

The inference thread writes whole model blocks, the output thread reads ALSA
periods; the two sizes are independent. Each side owns one counter (``written`` /
``read``, ever-increasing frame counts) and only ever reads the other's, so the data
needs no lock under the GIL: it is copied first, the counter moved after.

Waiting never spins. A side that must wait says so (``*_waiting = True``), checks
again, then blocks on a C-level ``SimpleQueue`` (no Python-level Condition and no
lock allocated per wait, unlike ``threading.Event``); the other side puts a token
only when the flag is up. Tokens left over by a race are harmless: the waiter wakes,
checks, and waits again.
"""

from __future__ import annotations

import queue

import numpy as np


class Ring:
    """Frames between the threaded engine's two threads: one writer, one reader, no lock."""

    def __init__(self, capacity: int, channels: int):
        self.capacity = int(capacity)
        self.buf = np.zeros((self.capacity, channels), np.float32)
        self.written = 0  # owned by the producer
        self.read = 0  # owned by the consumer
        self._data = queue.SimpleQueue()  # tokens: "data was written"
        self._space = queue.SimpleQueue()  # tokens: "space was freed"
        self.consumer_waiting = False
        self.producer_waiting = False

    def available(self) -> int:
        return self.written - self.read

    def free(self) -> int:
        return self.capacity - (self.written - self.read)

    def write(self, frames: np.ndarray) -> None:
        """Producer: append ``frames`` (caller made sure there is room)."""
        n = frames.shape[0]
        pos = self.written % self.capacity
        first = min(n, self.capacity - pos)
        self.buf[pos:pos + first] = frames[:first]
        if first < n:
            self.buf[:n - first] = frames[first:]
        self.written += n
        if self.consumer_waiting:
            self._data.put(None)

    def read_into(self, out: np.ndarray, n: int | None = None) -> int:
        """Consumer: move up to ``n`` frames (default: all of ``out``) into ``out``."""
        n = min(out.shape[0] if n is None else n, self.available())
        pos = self.read % self.capacity
        first = min(n, self.capacity - pos)
        out[:first] = self.buf[pos:pos + first]
        if first < n:
            out[first:n] = self.buf[:n - first]
        self.read += n
        if self.producer_waiting:
            self._space.put(None)
        return n

    def wake(self) -> None:
        """Wake both sides (on stop)."""
        self._data.put(None)
        self._space.put(None)

    def wait_space(self, frames: int, timeout: float) -> bool:
        """Producer: wait until ``frames`` fit; False on timeout."""
        if self.free() >= frames:
            return True
        self.producer_waiting = True
        try:
            while self.free() < frames:
                try:
                    self._space.get(timeout=timeout)
                except queue.Empty:
                    return self.free() >= frames
            return True
        finally:
            self.producer_waiting = False

    def wait_data(self, frames: int, timeout: float) -> bool:
        """Consumer: wait until ``frames`` are available; False on timeout."""
        if self.available() >= frames:
            return True
        self.consumer_waiting = True
        try:
            while self.available() < frames:
                try:
                    self._data.get(timeout=timeout)
                except queue.Empty:
                    return self.available() >= frames
            return True
        finally:
            self.consumer_waiting = False
