"""Output guard: what stands between a model and the speakers.

A model can emit NaN, inf, a DC offset or a sample of 100. None of that may reach
the DAC. Per block, without allocating and without a Python loop over samples:

1. **Non-finite** → the block is replaced by silence, the gain drops to 0 (mute)
   and fades back in once the model is finite again; the caller resets the model's
   state (NaN in a recurrent state never heals by itself). Counted, logged once by
   the monitor, never raised.
2. **DC blocker** at block rate: a one-pole tracker of each block's mean, subtracted
   as a ramp from the previous estimate (so the correction itself never steps).
   A ~1 Hz high-pass, cheap enough for the audio thread.
3. **Gain ramp** for fade-in at start, fade-out on stop and mute after a fault.
4. **Soft limiter** above ``limit`` (default -1 dBFS): the excess is squashed by
   ``tanh`` into the headroom, so peaks bend instead of clipping; then a hard clip
   to ±1 as the final guarantee.
"""

from __future__ import annotations

import math

import numpy as np

_min, _max, _sum = np.minimum.reduce, np.maximum.reduce, np.add.reduce


class OutputGuard:
    def __init__(
        self,
        block_size: int,
        channels: int,
        sample_rate: int,
        *,
        fade_ms: float = 30.0,
        limit_dbfs: float = -1.0,
        gain_db: float = 0.0,
        dc_hz: float = 1.0,
        fade_in: bool = True,
    ):
        self.block = block_size
        self.channels = channels
        self.limit = float(10 ** (min(limit_dbfs, 0.0) / 20))
        self.gain_lin = float(10 ** (gain_db / 20))
        fade_samples = max(1.0, fade_ms * 1e-3 * sample_rate)
        self.gain_step = block_size / fade_samples  # gain change per block
        self.dc_coef = 1.0 - math.exp(-2 * math.pi * dc_hz * block_size / sample_rate)
        self.gain = 0.0 if fade_in else 1.0
        self.target = 1.0
        self.dc = np.zeros(channels, np.float32)
        self._dc0 = 0.0
        self._delta = np.zeros(channels, np.float32)
        self._mean = np.zeros(channels, np.float32)
        self._lin = (np.arange(1, block_size + 1, dtype=np.float32) / block_size)[:, None]
        self._ramp = np.empty((block_size, 1), np.float32)
        self._dcramp = np.empty((block_size, channels), np.float32)
        self._a = np.empty((block_size, channels), np.float32)
        self._b = np.empty((block_size, channels), np.float32)
        self._c = np.empty((block_size, channels), np.float32)
        # counters: read by the monitor thread, written only here
        self.nonfinite_blocks = 0
        self.limited_blocks = 0
        self.peak = 0.0

    # -- control (any thread) ---------------------------------------------------------

    def fade_out(self) -> None:
        self.target = 0.0

    def fade_in(self) -> None:
        self.target = 1.0

    @property
    def finished(self) -> bool:
        """Faded out completely after :meth:`fade_out`."""
        return self.target == 0.0 and self.gain == 0.0

    # -- the audio thread -------------------------------------------------------------

    def process(self, x: np.ndarray) -> bool:
        """Make block ``x`` ``[block, channels]`` float32 safe, in place.

        Returns False if the block was not finite (the caller should reset the model).
        The common case (finite, below the limit, no fade) costs six numpy calls.
        """
        # the ufuncs' reduce directly: x.min() goes through numpy's Python wrappers (~3 µs each)
        lo, hi = float(_min(x, axis=None)), float(_max(x, axis=None))  # NaN propagates

        if not (-1e30 < lo and hi < 1e30):
            x.fill(0.0)
            self.gain = 0.0
            self.nonfinite_blocks += 1
            return False
        total = float(_sum(x, axis=None))
        # DC blocker: ramp from the old DC estimate to the new one across the block
        if self.channels == 1:
            dc0 = self._dc0
            delta = self.dc_coef * (total / self.block - dc0)
            dc1 = dc0 + delta
            np.multiply(self._lin, -delta, out=self._ramp)
            self._ramp -= dc0
            x += self._ramp
            self._dc0 = dc1
            self.dc[0] = dc1
            peak = max(abs(hi - dc0), abs(hi - dc1), abs(lo - dc0), abs(lo - dc1))
        else:
            np.mean(x, axis=0, out=self._mean)
            np.subtract(self._mean, self.dc, out=self._delta)
            self._delta *= self.dc_coef
            np.multiply(self._lin, self._delta, out=self._dcramp)
            self._dcramp += self.dc
            self.dc += self._delta
            x -= self._dcramp
            peak = max(abs(hi), abs(lo)) + 2 * float(np.abs(self.dc).max()) + 1e-6
        # gain ramp (fades, mute recovery, output gain)
        g0 = self.gain
        if g0 < self.target:
            g1 = min(self.target, g0 + self.gain_step)
        elif g0 > self.target:
            g1 = max(self.target, g0 - self.gain_step)
        else:
            g1 = g0
        self.gain = g1
        gl = self.gain_lin
        if g0 != g1:
            np.multiply(self._lin, (g1 - g0) * gl, out=self._ramp)
            self._ramp += g0 * gl
            x *= self._ramp
        elif g0 * gl != 1.0:
            x *= g0 * gl
        peak *= max(g0, g1) * gl  # an upper bound of the block's peak
        self.peak = peak
        if peak > self.limit:
            self._limit(x)
        return True

    def _limit(self, x: np.ndarray) -> None:
        """Soft limiter, only for blocks whose peak may pass the threshold."""
        np.abs(x, out=self._a)
        t = self.limit
        if float(self._a.max()) <= t:
            return
        self.limited_blocks += 1
        head = 1.0 - t
        np.subtract(self._a, t, out=self._b)
        np.maximum(self._b, 0.0, out=self._b)  # excess over the threshold
        if head > 0:
            np.multiply(self._b, 1.0 / head, out=self._c)
            np.tanh(self._c, out=self._c)
            self._c *= head  # squashed excess
        else:
            self._c.fill(0.0)
        np.subtract(self._c, self._b, out=self._c)  # change of magnitude (<= 0)
        np.sign(x, out=self._b)
        self._c *= self._b
        x += self._c
        np.clip(x, -1.0, 1.0, out=x)
