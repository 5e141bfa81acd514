"""Output guard: what stands between a model and the speakers.

A model can emit NaN, inf, a DC offset or a sample of 100. None of that may reach
the DAC. Per block, without allocating and without a Python loop over samples:

1. **Non-finite or runaway** (a sample past ``RUNAWAY``, +60 dBFS, once the output gain is
   applied: a model that far off has blown up, and limiting it would play a full-scale
   square or DC) → the block is replaced by silence, the gain drops to 0 (mute)
   and fades back in once the model is finite again; the caller resets the model's
   state (NaN in a recurrent state never heals by itself). Counted, logged once by
   the monitor, never raised.
2. **DC blocker** at block rate: a one-pole tracker of each block's mean, subtracted
   as a ramp from the previous estimate (so the correction itself never steps).
   A ~1 Hz high-pass, cheap enough for the audio thread. A mean more than full scale
   off the estimate is taken in one block (``DC_SNAP``): a model stuck at +54 dBFS DC
   played a second of full-scale DC through the limiter before.
3. **Gain ramp** for fade-in at start, fade-out on stop and mute after a fault.
4. **Soft limiter** above ``limit`` (default -1 dBFS): the excess is squashed by
   ``tanh`` into the headroom, so peaks bend instead of clipping; then a hard clip
   to ±1 as the final guarantee.

The per-block work lives in a *kernel*: ``_kernels.c`` (C, built by ``pip install``:
two passes over the block, SIMD: ~0.35 µs for 256 frames here) or :class:`NumpyGuardKernel` (the reference it is
tested against, and the fallback where the C module is not built: six numpy calls,
20–30 µs per block after a model run has left numpy cold in the caches).
:class:`OutputGuard` is the C one when it is there; ``KERNELS`` says which.
"""

from __future__ import annotations

import math

import numpy as np

RUNAWAY = 1000.0  # keep in step with _kernels.c
DC_SNAP = 1.0  # a block mean this far (full scale) from the DC estimate is taken at once (_kernels.c too)

_min, _max, _sum = np.minimum.reduce, np.maximum.reduce, np.add.reduce


class NumpyGuardKernel:
    """The guard's state and per-block work in numpy: the reference for ``_kernels.c``."""

    def __init__(self, block: int, channels: int):
        self.block = block
        self.channels = channels
        self.limit = self.gain_lin = self.gain_step = 1.0
        self.dc_coef = 0.0
        self.gain = self.target = 1.0
        self.dc = np.zeros(channels, np.float32)
        self._dc0 = 0.0
        self._delta = np.zeros(channels, np.float32)
        self._mean = np.zeros(channels, np.float32)
        self._lin = (np.arange(1, block + 1, dtype=np.float32) / block)[:, None]
        self._ramp = np.empty((block, 1), np.float32)
        self._dcramp = np.empty((block, channels), np.float32)
        self._a = np.empty((block, channels), np.float32)
        self._b = np.empty((block, channels), np.float32)
        self._c = np.empty((block, channels), np.float32)
        # counters: read by the monitor thread, written only here
        self.nonfinite_blocks = 0
        self.limited_blocks = 0
        self.peak = 0.0

    def process(self, x: np.ndarray) -> bool:
        """Make block ``x`` ``[block, channels]`` float32 safe, in place.

        Returns False if the block was not finite (the caller should reset the model).
        The common case (finite, below the limit, no fade) costs six numpy calls.
        """
        # the ufuncs' reduce directly: x.min() goes through numpy's Python wrappers (~3 µs each)
        lo, hi = float(_min(x, axis=None)), float(_max(x, axis=None))  # NaN propagates

        big = RUNAWAY / self.gain_lin if self.gain_lin > 0 else math.inf
        if not (-big < lo and hi < big):
            x.fill(0.0)
            self.gain = 0.0
            self.nonfinite_blocks += 1
            return False
        total = float(_sum(x, axis=None))
        # DC blocker: ramp from the old DC estimate to the new one across the block
        if self.channels == 1:
            dc0 = self._dc0
            diff = total / self.block - dc0
            delta = diff if self.dc_coef > 0 and abs(diff) > DC_SNAP else self.dc_coef * diff
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
            for c in range(self.channels):  # a channel count, not samples
                if not (self.dc_coef > 0 and abs(self._delta[c]) > DC_SNAP):
                    self._delta[c] *= self.dc_coef
            np.multiply(self._lin, self._delta, out=self._dcramp)
            self._dcramp += self.dc
            # the ramp runs from the old estimate to the new one: bound by both
            shift = float(np.abs(self.dc).max())
            self.dc += self._delta
            x -= self._dcramp
            peak = max(abs(hi), abs(lo)) + shift + float(np.abs(self.dc).max()) + 1e-6
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


try:
    from pi_synth.audio._kernels import GuardKernel as _Kernel

    KERNELS = "c"
except ImportError:  # a source tree used without pip install: same sound, more CPU
    _Kernel = NumpyGuardKernel
    KERNELS = "numpy"


class _Controls:
    """Construction, the output settings and the fades: the same for every kernel."""

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
        super().__init__(block_size, channels)
        self._block, self._rate = block_size, sample_rate
        self.configure(gain_db=gain_db, limit_dbfs=limit_dbfs, fade_ms=fade_ms)
        self.dc_coef = 1.0 - math.exp(-2 * math.pi * dc_hz * block_size / sample_rate)
        self.gain = 0.0 if fade_in else 1.0
        self.target = 1.0

    # -- control (any thread) ---------------------------------------------------------

    def configure(self, *, gain_db: float | None = None, limit_dbfs: float | None = None,
                  fade_ms: float | None = None) -> None:
        """Output settings, applied from the next block on (plain attribute stores: safe
        from any thread while the audio thread plays; a config reload calls this)."""
        if limit_dbfs is not None:
            self.limit = float(10 ** (min(limit_dbfs, 0.0) / 20))
        if gain_db is not None:
            self.gain_lin = float(10 ** (gain_db / 20))
        if fade_ms is not None:
            fade_samples = max(1.0, fade_ms * 1e-3 * self._rate)
            self.gain_step = self._block / fade_samples  # gain change per block

    def fade_out(self) -> None:
        self.target = 0.0

    def fade_in(self) -> None:
        self.target = 1.0

    @property
    def finished(self) -> bool:
        """Faded out completely after :meth:`fade_out`."""
        return self.target == 0.0 and self.gain == 0.0


class OutputGuard(_Controls, _Kernel):
    """The output guard: ``process(x)`` per block on the audio thread; the fades from any."""


class NumpyOutputGuard(_Controls, NumpyGuardKernel):
    """The same guard on the numpy kernel (the reference, for tests and comparisons)."""
