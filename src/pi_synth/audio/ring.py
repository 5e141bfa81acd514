"""A single-producer, single-consumer ring of audio frames.

The inference thread writes whole model blocks, the output thread reads ALSA
periods; the two sizes are independent. Each side owns one counter (``written`` /
``read``, ever-increasing frame counts) and only ever reads the other's, so no lock
is needed under the GIL: data is copied first, the counter moved after. Waiting is
done with :class:`threading.Event` (clear, re-check, wait), never by spinning.
"""

from __future__ import annotations

import threading

import numpy as np


class Ring:
    def __init__(self, capacity: int, channels: int):
        self.capacity = int(capacity)
        self.buf = np.zeros((self.capacity, channels), np.float32)
        self.written = 0  # owned by the producer
        self.read = 0  # owned by the consumer
        self.data_ready = threading.Event()
        self.space_ready = threading.Event()

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
        self.data_ready.set()

    def read_into(self, out: np.ndarray, n: int | None = None) -> int:
        """Consumer: move up to ``n`` frames (default: all of ``out``) into ``out``."""
        n = min(out.shape[0] if n is None else n, self.available())
        pos = self.read % self.capacity
        first = min(n, self.capacity - pos)
        out[:first] = self.buf[pos:pos + first]
        if first < n:
            out[first:n] = self.buf[:n - first]
        self.read += n
        self.space_ready.set()
        return n

    def wait_space(self, frames: int, timeout: float) -> bool:
        """Producer: wait until ``frames`` fit; False on timeout."""
        while self.free() < frames:
            self.space_ready.clear()
            if self.free() >= frames:
                break
            if not self.space_ready.wait(timeout):
                return self.free() >= frames
        return True

    def wait_data(self, frames: int, timeout: float) -> bool:
        """Consumer: wait until ``frames`` are available; False on timeout."""
        while self.available() < frames:
            self.data_ready.clear()
            if self.available() >= frames:
                break
            if not self.data_ready.wait(timeout):
                return self.available() >= frames
        return True
