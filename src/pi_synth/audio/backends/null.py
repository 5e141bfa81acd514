"""The null backend: plays to nothing at the speed a sound card would.

Paced by the system clock, as a device is by its crystal: it holds ``period × periods``
frames that drain at the sample rate, ``write`` and ``wait_room`` wait for room, and a
writer that lets the buffer run dry gets an xrun, counted as ALSA would count it. So on
a laptop with no sound card ``pi-synth run`` runs in real time, with real-time figures
(load, xruns, RSS over minutes) — not 15× faster on one core. For as fast as the CPU
allows (benchmarks), the ``unpaced`` backend.
"""

from __future__ import annotations

import time

from pi_synth.audio.backends.base import Backend, Granted


class NullBackend(Backend):
    """No sound, real time: an emulated device buffer drained by the monotonic clock."""

    name = "null"
    paced = True

    def _open(self, sample_rate, channels, period, periods):
        self._rate = float(sample_rate)
        self._capacity = period * periods  # frames the emulated device holds
        self._end = None  # time.monotonic() at which everything queued has played; None: stopped
        self._filled = 0  # frames queued before the clock starts
        return Granted(sample_rate, channels, period, periods, self.format)

    def _room_at(self, frames: int) -> float:
        """When the buffer will have room for ``frames`` more (a block longer than the
        buffer goes in as room frees: its write returns when its last frame is in)."""
        return self._end - (self._capacity - frames) / self._rate

    def _wait_room(self, frames):
        if self._end is not None:
            wait = self._room_at(frames) - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    def _write(self, data):
        n = data.shape[0]
        if self._end is None:
            # like ALSA's default start threshold: the clock starts once the buffer is full,
            # and again after an underrun
            self._filled += n
            if self._filled >= self._capacity:
                self._end = time.monotonic() + self._filled / self._rate
                self._filled = 0
            return n
        now = time.monotonic()
        if self._end < now:  # the buffer ran dry before this write: an underrun
            self._count_xrun()
            self._end, self._filled = None, n
            return data.shape[0]
        wait = self._room_at(n) - now
        if wait > 0:
            time.sleep(wait)
        self._end += n / self._rate
        return data.shape[0]

    def _queued(self):
        if self._end is None:  # not started: what waits for the start
            return self._filled
        return max(0, int((self._end - time.monotonic()) * self._rate))

    def _close(self):
        self._end = None


BACKEND = NullBackend
