"""Audio in: the capture side read one engine block at a time, and made fit for a model.

:class:`InputConditioner` is the per-block work on what the device captured — mono mix,
DC removal, trim gain, a noise gate, and the meters (level, peak, clipped blocks) the
status and the clip LED read. Like the output guard it works a block at a time on
preallocated buffers (numpy with ``out=``, about a dozen calls a block, no Python per
sample): the DC tracker and the gate move at block rate and their corrections are ramped
across the block, so nothing steps.

:class:`AudioInput` is what the player reads from: a backend's capture side (a sound
card's input, a JACK port, a WAV file for ``pi-synth render --input``: the same code
either way, so a render and a live run of the same input make the same samples) through
the conditioner. The real-time rules are the engine's (no allocation, no lock, no logging
in :meth:`AudioInput.read`), plus one of its own: **the input never stops the output**.
A read waits for its block only while the output still has more than ``reserve`` frames
queued (the engine says how to ask: ``queued``, and what a render needs: ``reserve``), so
a capture device that stalls apart from the output (another card) leaves the output time
to play on, while one that shares its clock — which stalls the output with it — is
waited for as long as it takes; what did not arrive is silence (counted as a late block); a device that delivers nothing, or fails, is handed to
the input's own thread, which logs one line, closes it and opens it again every
``reopen_interval`` while the output plays on with silence in — the decoder's answer to
silence. A reader that falls behind (after a stall, or a reopened device) drops the
backlog beyond a block and two periods, so the input's latency cannot creep up.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import numpy as np

from pi_synth.errors import DeviceError

log = logging.getLogger(__name__)

CLIP_LEVEL = 0.999  # a captured sample at or above this (of full scale) is a clipped ADC
GATE_OFF_DB = -120.0  # gate_db at or below this: no gate
GATE_HYSTERESIS_DB = 6.0  # the gate closes this far below where it opens


def db(x: float) -> float:
    return 20.0 * math.log10(x) if x > 1e-10 else -200.0


class InputConditioner:
    """Captured frames → the mono input a model takes: mix, DC removal, trim, gate, meters.

    ``process(x, out)``: ``x`` float32 ``[frames, channels]`` as captured, ``out`` float32
    ``[frames]``. Counters (plain attributes, written here only): ``clips`` (blocks with a
    sample at full scale, before any gain: the ADC clipped), ``level`` and ``peak`` (RMS
    and peak of the last block after the trim gain), ``peak_hold`` (the peak, falling
    back 20 dB a second: what a meter shows, whenever it is read), ``gate`` (0 closed … 1
    open)."""

    def __init__(self, frames: int, sample_rate: int, *, gain_db: float = 0.0, gate_db: float = GATE_OFF_DB,
                 gate_release_ms: float = 100.0, dc_hz: float = 5.0):
        self.frames = frames
        self.sample_rate = sample_rate
        block_s = frames / sample_rate
        self.gain_lin = float(10 ** (gain_db / 20))
        self.gate_on = gate_db > GATE_OFF_DB
        self.gate_open_at = float(10 ** (gate_db / 20))
        self.gate_close_at = float(10 ** ((gate_db - GATE_HYSTERESIS_DB) / 20))
        self.gate_step = min(1.0, block_s / max(1e-3, gate_release_ms * 1e-3))  # gain change per block
        self.dc_coef = 1.0 - math.exp(-2 * math.pi * dc_hz * block_s) if dc_hz > 0 else 0.0
        self._lin = (np.arange(1, frames + 1, dtype=np.float32) / frames)
        self._ramp = np.empty(frames, np.float32)
        self.dc = 0.0
        self.gate = 0.0 if self.gate_on else 1.0
        self.clips = 0
        self.level = self.peak = self.peak_hold = 0.0
        self._fall = float(10 ** (-20.0 * block_s / 20))  # the held peak's fall per block
        self.blocks = 0

    def process(self, x: np.ndarray, out: np.ndarray) -> None:
        ch = x.shape[1]
        # the ADC clipped? on the raw frames, before any gain
        raw_peak = max(float(np.maximum.reduce(x, axis=None)), -float(np.minimum.reduce(x, axis=None)))
        if raw_peak >= CLIP_LEVEL:
            self.clips += 1
        if ch == 1:
            np.copyto(out, x[:, 0])
        else:  # the mean of the channels: a stereo pair's mono, at the same level
            np.add.reduce(x, axis=1, out=out)
            out *= np.float32(1.0 / ch)
        # DC: a one-pole tracker of each block's mean, subtracted as a ramp from the old
        # estimate to the new one (as the output guard does), so the correction never steps
        if self.dc_coef:
            dc0 = self.dc
            dc1 = dc0 + self.dc_coef * (float(np.add.reduce(out)) / self.frames - dc0)
            np.multiply(self._lin, np.float32(dc1 - dc0), out=self._ramp)
            self._ramp += np.float32(dc0)
            out -= self._ramp
            self.dc = dc1
        if self.gain_lin != 1.0:
            out *= np.float32(self.gain_lin)
        energy = float(np.dot(out, out))
        self.level = math.sqrt(energy / self.frames)
        p = max(float(np.maximum.reduce(out)), -float(np.minimum.reduce(out)))
        self.peak = p
        self.peak_hold = max(p, self.peak_hold * self._fall)
        if self.gate_on:  # opens at once above the threshold, closes over the release
            g0 = self.gate
            if self.level >= self.gate_open_at:
                g1 = 1.0
            elif self.level < self.gate_close_at:
                g1 = max(0.0, g0 - self.gate_step)
            else:
                g1 = g0
            self.gate = g1
            if g0 != 1.0 or g1 != 1.0:
                np.multiply(self._lin, np.float32(g1 - g0), out=self._ramp)
                self._ramp += np.float32(g0)
                out *= self._ramp
        self.blocks += 1

    def silence(self) -> None:
        """A block of nothing (no device): the meters say so."""
        self.level = self.peak = 0.0
        self.peak_hold *= self._fall


class AudioInput:
    """The instrument's audio input: a backend's capture side, read one engine block of
    ``frames`` at a time through an :class:`InputConditioner` (see the module docstring).

    ``open()`` (a control thread, or the engine's start) opens the capture; ``read(out)``
    (the audio thread) fills ``out`` ``[frames]`` with the next conditioned block;
    ``close()`` stops it all. The engine sets ``margin`` (frames its output leads the
    input by), ``queued`` (a callable: frames the output still has to play, None for a
    file) and ``reserve`` (frames a render needs): a read waits while ``queued() >
    reserve`` (without ``queued``: a block and ¾ of the margin).
    """

    def __init__(self, backend, frames: int, sample_rate: int, *, channels: int = 2, gain_db: float = 0.0,
                 gate_db: float = GATE_OFF_DB, gate_release_ms: float = 100.0, dc_hz: float = 5.0,
                 reopen_interval: float = 0.5, describe: str | None = None):
        self.backend = backend
        self.frames = frames
        self.sample_rate = sample_rate
        self.channels = channels
        self.conditioner = InputConditioner(frames, sample_rate, gain_db=gain_db, gate_db=gate_db,
                                            gate_release_ms=gate_release_ms, dc_hz=dc_hz)
        self.reopen_interval = reopen_interval
        self.name = describe or str(backend.capture)
        self.margin = 0
        self.queued = None  # the engine's: frames the output has left to play (see read)
        self.reserve = 0
        self.period = self.periods = 0
        self.ready = False  # the audio thread reads the device only while True
        self.late_blocks = 0  # blocks the device did not fill in time (the rest was silence)
        self.resyncs = 0  # backlogs dropped (the reader had fallen behind)
        self.losses = 0
        self.reopens = 0
        self.last_error = ""
        self._raw = np.zeros((frames, 1), np.float32)
        self._empty_s = 0.0
        self._due = 0.0  # time.monotonic() when the next block's last frame should have come
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost = False  # set by the audio thread: the input thread closes and reopens
        self._open = False
        self.recording: np.ndarray | None = None  # see record()
        self._rec_n = 0

    # -- control side -----------------------------------------------------------------

    def capture_periods(self, period: int) -> int:
        """Periods of capture buffer: room for two blocks and the margin, as the audio
        thread reads a block at a time (a long block is written out in between)."""
        need = 2 * max(self.frames, period) + self.margin + 2 * period
        return max(4, min(64, -(-need // period)))

    def open(self, period: int, periods: int | None = None, *, start: bool = True) -> bool:
        """Open the capture side (``period`` frames, as the output). True if it is
        playing; False if not (said in one line; the input thread keeps trying).
        ``start=False`` (a stream already playing, e.g. a swap to a model that takes
        audio): the input thread opens it, and hands it over once a block has gathered."""
        self.period = period
        self.periods = periods or self.capture_periods(period)
        self._open = True
        ok = self._try_open(first=True) if start else False
        if self._thread is None:
            self._thread = threading.Thread(target=self._keeper, name="pi-synth-input", daemon=True)
            self._thread.start()
        return ok

    def _try_open(self, first: bool = False) -> bool:
        """Open the device; the audio thread reads it from now on if ``first`` (the engine's
        start: its lead covers the first block's wait), else once :meth:`_prime` says so."""
        b = self.backend
        try:
            g = b.open_capture(self.sample_rate, self.channels, self.period, self.periods)
        except DeviceError as e:
            self.last_error = str(e)
            if first:
                log.warning("no audio input: %s; playing on with silence in, trying again every %.1f s",
                            e, self.reopen_interval)
            return False
        if g.channels != self._raw.shape[1]:
            self._raw = np.zeros((self.frames, g.channels), np.float32)
        self._scratch = np.zeros((max(self.frames, g.period), g.channels), np.float32)
        self._empty_s = 0.0
        self._due = 0.0
        self._lost = False
        self.ready = first
        return True

    def _keeper(self) -> None:
        """The input's own thread: closes a lost device and opens it again (never the
        audio thread's job: an ALSA open or close can take a while), and says so."""
        wait = self.reopen_interval
        warned = False
        while not self._stop.wait(wait):
            if self.ready or not self._open:
                wait = self.reopen_interval
                continue
            if self._lost:  # given up by the audio thread (or a failed start below)
                if self.losses and not warned:
                    log.warning("audio input lost (%s): playing on with silence in; reopening every %.1f s",
                                self.last_error, self.reopen_interval)
                    warned = True
                try:
                    self.backend.close_capture(lost=True)
                except Exception:
                    pass
                self._lost = False
            if self.backend.capture_granted is None and not self._try_open():
                wait = min(5.0, wait * 1.5)  # a device that is not there: ask less often
                continue
            wait = self.reopen_interval
            if self._prime():
                if self.losses:
                    self.reopens += 1
                warned = False
                log.warning("audio input %s: %s", "back" if self.losses else "open", self.name)

    def _prime(self) -> bool:
        """Start the device and let a block gather, then hand it to the audio thread — so
        its first read does not wait a whole block, which the output playing cannot."""
        b = self.backend
        try:
            if b.paced:
                b.read(self._scratch[: self.period], timeout=2 * self.period / self.sample_rate)
                deadline = time.monotonic() + 2 * self.frames / self.sample_rate + 0.5
                while b.capture_backlog() < self.frames and time.monotonic() < deadline:
                    time.sleep(self.period / self.sample_rate)
        except DeviceError as e:
            self.last_error = str(e)
            self._lost = True
            return False
        self._empty_s = 0.0
        self.ready = True
        return True

    def close(self) -> None:
        """Idempotent."""
        self._open = False
        self.ready = False
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2)
        self._thread = None
        self.backend.close_capture(lost=self._lost)

    def record(self, frames: int) -> np.ndarray:
        """Keep the next ``frames`` conditioned input frames (preallocated here; the audio
        thread copies each block in): what the model heard, for tests and benchmarks."""
        self._rec_n = 0
        self.recording = np.zeros(frames, np.float32)
        return self.recording

    @property
    def recorded(self) -> np.ndarray:
        return self.recording[: self._rec_n] if self.recording is not None else np.zeros(0, np.float32)

    def status(self) -> dict:
        c = self.conditioner
        return {"level_db": round(db(c.level), 1), "peak_db": round(db(c.peak_hold), 1), "clips": c.clips,
                "xruns": self.backend.capture_xruns, "late_blocks": self.late_blocks, "resyncs": self.resyncs,
                "device": "ok" if self.ready else ("lost" if self.losses else "none"),
                "reopens": self.reopens, "name": self.name}

    # -- the audio thread -------------------------------------------------------------

    def read(self, out: np.ndarray) -> None:
        """Fill ``out`` ``[frames]`` with the next conditioned input block (silence if
        there is no device). Never raises; never waits longer than the output can spare."""
        c = self.conditioner
        if not self.ready:
            out.fill(0.0)
            c.silence()
            self._keep(out)
            return
        b, f, raw = self.backend, self.frames, self._raw
        sr = self.sample_rate
        try:
            backlog = b.capture_backlog()
            if backlog > f + 2 * self.period:  # fell behind: drop to a block's worth
                drop = backlog - f
                while drop > 0:
                    k = min(drop, self._scratch.shape[0])
                    got = b.read(self._scratch[:k], 0.0)
                    if not got:
                        break
                    drop -= got
                self.resyncs += 1
            if self.queued is not None and self._due:  # (the first block: nothing plays yet)
                n = b.read(raw, self._budget)
            else:  # no output to ask: a block from the last one, and ¾ of the margin
                now = time.monotonic()
                due = self._due or now + f / sr
                n = b.read(raw, max(0.001, due + 0.75 * max(self.margin, self.period) / sr - now))
            self._due = (max(self._due, time.monotonic()) if n == f else self._due or time.monotonic()) + f / sr
        except DeviceError as e:
            self._lose(str(e))
            out.fill(0.0)
            c.silence()
            self._keep(out)
            return
        if n < f:
            raw[n:] = 0.0
            self.late_blocks += 1
            if n == 0:
                self._empty_s += f / sr
                if self._empty_s >= 0.25:
                    self._lose(f"{self.name} captured nothing for {self._empty_s:.2f} s")
            else:
                self._empty_s = 0.0
        else:
            self._empty_s = 0.0
        c.process(raw, out)
        self._keep(out)

    def _budget(self) -> float:
        """Seconds a read may still wait: until the output is down to ``reserve`` frames."""
        q = self.queued()
        return 0.0 if q is None else (q - self.reserve) / self.sample_rate

    def lost_with_output(self, why: str) -> None:
        """The output's device failed and the input is on the same one (full duplex): give
        the input up now, so its own thread closes it while the device is still gone (the
        engine's reopening of the output holds the audio thread, which would notice only
        once the output is back)."""
        if self.ready:
            self._lose(why)

    def _lose(self, why: str) -> None:
        """The device is gone: stop reading it; the input thread closes and reopens it."""
        self.ready = False
        self.last_error = why
        self.losses += 1
        self._lost = True

    def _keep(self, out: np.ndarray) -> None:
        rec = self.recording
        if rec is not None and self._rec_n < len(rec):
            k = min(len(out), len(rec) - self._rec_n)
            rec[self._rec_n:self._rec_n + k] = out[:k]
            self._rec_n += k
