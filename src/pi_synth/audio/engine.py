"""The audio engine: two threads, one ring, and the real-time rules.

The model's block (e.g. 2048 frames for a RAVE decoder, 256 for a note voice) and the
device's period (e.g. 256) are independent. In **threaded** mode the **inference thread** keeps the ring
``ahead_blocks`` blocks ahead: it waits for room for one block, renders it
(a :class:`BlockSource`), copies it in. The **output thread** takes one
period at a time from the ring and writes it to the backend, which blocks until the
device has room (pyalsaaudio releases the GIL there, so the two threads overlap).

Real-time rules (for anyone touching the two loops below):

* **No allocation** in the loops: every array is made before ``start()``; numpy
  calls use ``out=``. Python's GC is collected and frozen after start-up, then run
  only by the thread that writes to the device, right after a write
  (``gc_clock.py``): a collection never lands in the middle of a block, nor holds
  the GIL from a lower-priority thread while the audio thread waits for it.
* **The GIL is handed over within 0.5 ms** (``sys.setswitchinterval``) while the engine
  runs, so a busy control thread cannot hold an audio thread back for a period.
* **No logging, no locks, no blocking I/O** in the loops except the backend write
  and the ring's events. Counters (xruns, late periods, block times) are plain
  attributes the monitor reads and logs from its own thread: xruns are data.
* **Never an exception out of the audio path** for anything the device or the model
  can do: non-finite output is muted by the guard; a lost device (no progress for
  ``stall_s``, or an ALSA error) is abandoned — closed on a throwaway thread, since
  ``snd_pcm_close`` on a dead JACK server never returns — and reopened every
  ``reopen_interval`` while the ring waits (sound back 0.8–1.3 s after the device
  returns, ``tests/test_reliability.py``).
* **Always fill the whole period.** If the ring runs dry (inference fell behind),
  the output thread writes what it has plus silence and counts a late period,
  rather than letting ALSA underrun into a click storm.
* Controls reach the model only at block boundaries (the bank ramps them across
  control frames); the timeline of events runs on the audio clock, not the wall clock
  (and places a knob event inside a block at its control frame, where a model has
  several: ``control/events.py``).

**Direct** mode (chosen automatically when the model renders a block in under a quarter
of the margin the device buffer leaves — :meth:`Engine.direct_fits`: a note voice with
256-frame blocks on a 256×2 buffer in under a quarter of real time; a 1024-frame block,
written as the device frees room, in under a sixteenth; where a bigger buffer would let
a slower model in for less latency than the ring, ``auto`` opens the device with more
periods — :func:`auto_periods`): one audio thread renders a
block and writes it, no ring and no hand-off between threads. That saves the two wake-ups per block
(measured here: 216 vs 271 µs of CPU per 256-frame block of the flute voice, against
210 µs of bare inference; ``benchmarks/run.py --only engine``) and a block of latency.
It renders **just in time**: it waits
until the device has room for a block, then reads the controls and renders, and the
write returns at once — rendering first and then blocking in the write would hold every
block, and every event in it, a period longer. The device buffer less one period is the
only cushion, so a late block is an ALSA xrun (counted) rather than a held-and-faded
period; the warm-up rule (a quarter of real time) leaves three quarters of a period.
After an xrun it renders *ahead* instead (render, then wait in the write): one period
more margin and one period more latency, reported as ``render`` in the status. After
``ahead_hold_s`` (30 s) with no xrun it goes back to just in time, so one stall — at
start-up, or a machine's hiccup — does not cost a period of latency for the rest of the
gig; an xrun while ahead, or within a hold of going back, doubles the hold (up to
10 min): a stall that keeps coming keeps the margin.

**Late render** (``late=True``, ``[audio] late_render``, the default): rendering right
after the wait still leaves most of the margin unused — a 256-frame voice renders in a
fraction of the period — and an event that arrives during that idle time waits a whole
period for the next block. So after the wait the direct loop works out when the device
runs dry (now + the frames still queued, checked against the last deadline plus what was
written since, so a late wake-up does not move it), sleeps until that deadline less a
**lead**, and only then reads the controls and renders: events arriving in the meantime
make this block (knob → sound: block + two periods at most on 256×2, issue 26). The lead
is measured, not guessed: the worst render time over the last 128–256 blocks, counted
from when the render should have started (the sleep's overshoot is in it) plus how late
the thread woke after the device freed room (what it played meanwhile, where its pointer
moves smoothly — a stalled thread or machine), never less than the model's warm-up
figure at its voice budget, × 1.25 + 1 ms. It
renders right after the wait instead (status ``render`` = ``early``) while the lead is
more than 60% of the time left — a model, a machine or a crossfade too slow for the
saving to be worth the risk —, while a hot swap is pending or playing (a swap only
starts at an early block, since a crossfade renders two models), for the first second
of a stream, with audio in (the input's arrival paces that loop already), on a backend
that cannot say what is queued, and always when the audio thread did not get real-time
priority (``[audio] realtime``: a thread at normal priority can lose the CPU to any
process for milliseconds). An xrun of a block rendered late holds late render back for
``ahead_hold_s`` (status ``late_holds``; doubling like the ahead hold): early first, with
the margin back and no latency added; an xrun of a block rendered early still means
rendering ahead for the hold.

**Audio in** (a source with an ``input``, ``audio/input.py``): the engine opens the
capture side right after the output, same period, and closes it on stop. The source
reads a block of input at the start of each block it renders, so a block can only be
rendered once its input has all been captured: that wait, not the output's room, paces
the loop, and the margin the output needs comes from a **lead** — silence written ahead
of the first block (direct: the buffer less one period, the margin a just-in-time render
has; threaded: ``ahead_blocks`` blocks). Round trip: a block (its input gathering) + the
lead + the device's buffering (+ what the model adds). The input never stops the output:
a lost input is silence, reopened by its own thread (see ``AudioInput``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Protocol

import numpy as np

from pi_synth.audio.backends.base import Backend, Granted
from pi_synth.audio.gc_clock import GcClock
from pi_synth.audio.ring import Ring
from pi_synth.errors import DeviceError, OutputError

log = logging.getLogger(__name__)

DIRECT_MAX_RTF = 0.25  # of the margin: the direct engine's render budget per block
AHEAD_HOLD_S = 30.0  # direct mode: render ahead this long after an xrun, then just in time again
AHEAD_HOLD_MAX_S = 600.0  # … doubling each time an xrun comes back soon, up to this
# late render (direct mode; module docstring): the lead before the device runs dry
LATE_WINDOW = 128  # blocks in each half of the window whose worst block sizes the lead
LATE_SAFETY = 1.25  # × that worst block (render + the sleep's overshoot)
CLOCK_SLACK_S = 0.010  # watch_clock: scheduling jitter on top of a buffer and a block
LATE_MARGIN_S = 0.001  # + this, for what the window has not seen (a stall, a longer wake-up)
LATE_MAX_SHARE = 0.6  # late only while the lead is at most this share of the time left
LATE_MIN_WAIT_S = 0.0002  # a shorter wait is not worth a sleep
LATE_WARM_S = 1.0  # early for a stream's first second: the device starts, the window fills


class BlockSource(Protocol):
    """What an engine plays: a :class:`~pi_synth.audio.synth.Synth` (one model) or a
    :class:`~pi_synth.audio.player.Player` (block hooks, hot swap) — both are one.

    ``next_block()`` returns the next ``[block_size, channels]`` float32 block, already
    safe for the DAC, in a buffer it reuses (copy what you keep); ``position`` counts the
    frames made so far (the audio clock); ``fade_out()`` may be called from any thread,
    and ``finished`` turns true once the fade has reached silence. ``rtf_hint`` is the
    model's block time over block duration from its warm-up here (None: not measured),
    which picks the engine mode."""

    card: object
    block_size: int
    sample_rate: int
    channels: int
    position: int

    def next_block(self) -> np.ndarray: ...

    def fade_out(self) -> None: ...

    # optional: ``input``, an AudioInput the engine opens beside the output (audio in)

    @property
    def finished(self) -> bool: ...

    @property
    def rtf_hint(self) -> float | None: ...

    @property
    def guard(self): ...


def direct_periods(rtf: float, block: int, period: int, max_rtf: float = DIRECT_MAX_RTF) -> int:
    """The fewest ALSA periods (≥ 2) with which a model rendering a ``block``-frame block
    at real-time factor ``rtf`` plays in the direct engine: its render must fit in
    ``max_rtf`` of the margin, the ``period × (periods − 1)`` frames still queued when a
    just-in-time render starts. (Also what a projection to a slower CPU reports.)"""
    need = rtf * block / (max_rtf * period)  # margin needed, in periods
    return max(2, int(need) + 2)  # periods - 1 > need


def ring_frames(block: int, period: int, ahead_blocks: int = 1) -> int:
    """The threaded engine's ring: ``ahead_blocks`` model blocks plus one period."""
    return ahead_blocks * block + period


def auto_periods(rtf: float, block: int, period: int, periods: int, ahead_blocks: int = 1) -> int:
    """The periods ``auto`` opens the device with: the configured ones, or more when that
    lets the model play in the direct engine for less latency than the threaded engine's
    ring (``ahead_blocks`` blocks + a period) — e.g. a 1024-frame block that renders in a
    tenth of real time: 256×3 and direct, rather than 256×2 plus a 1280-frame ring."""
    want = direct_periods(rtf, block, period)
    if want <= periods or want > 32 or period * (want - periods) > ring_frames(block, period, ahead_blocks):
        return periods
    return want


def auto_choice(rtf: float, block: int, period: int, periods: int, ahead_blocks: int = 1) -> tuple[str, int]:
    """What ``auto`` would open, before the device has a say: (engine mode, periods)."""
    n = auto_periods(rtf, block, period, periods, ahead_blocks)
    return ("direct" if direct_periods(rtf, block, period) <= n else "threaded"), n


class EngineStats:
    """Counters written by the audio threads, read by anyone. The audio thread only adds
    up (three stores a block); readers work out the rest."""

    def __init__(self, block_seconds: float):
        self.block_seconds = block_seconds
        self.blocks = 0
        self.late_renders = 0  # direct mode: blocks rendered late (just before the deadline)
        self.late_holds = 0  # … and how often an xrun of one held late render back for a while
        self.late_periods = 0
        self.device_errors = 0
        self.reopens = 0
        self.last_device_error = ""
        self.block_time_max = 0.0
        self.block_time_total = 0.0
        self.clock_gaps = 0  # the output's clock stopped with us, no xrun said (Engine.watch_clock)
        self.clock_gap_s = 0.0
        self.started_at = 0.0
        self.first_audio_at = 0.0
        self._load = 0.0
        self._load_at = (0, 0.0)

    @property
    def load(self) -> float:
        """Render time over audio time, for the blocks since the last read (the monitor
        reads it every few seconds; the first read covers everything so far)."""
        n, total = self.blocks, self.block_time_total
        seen, seen_total = self._load_at
        if n > seen:
            self._load = (total - seen_total) / ((n - seen) * self.block_seconds)
            self._load_at = (n, total)
        return self._load


class Engine:
    """Plays a :class:`BlockSource` into a backend in real time: the direct or the
    threaded loop (see the module docstring), xruns counted, a lost device reopened."""

    def __init__(
        self,
        synth: BlockSource,
        backend: Backend,
        *,
        period: int = 256,
        periods: int = 2,
        ahead_blocks: int = 1,
        reopen_interval: float = 0.5,
        gc: str = "audio",
        realtime: bool = False,
        mode: str = "auto",
        cpus: set[int] | None = None,
        ahead_hold_s: float = AHEAD_HOLD_S,
        late: bool = True,
    ):
        self.synth = synth
        self.backend = backend
        self.period = int(period)
        self.periods = int(periods)
        self.ahead_blocks = max(1, int(ahead_blocks))
        self.reopen_interval = reopen_interval
        self.realtime = realtime
        self.cpus = set(cpus) if cpus else None
        if mode not in ("auto", "threaded", "direct"):
            raise ValueError("engine mode must be auto, threaded or direct")
        self.mode = mode
        self.direct_max_rtf = DIRECT_MAX_RTF
        self.render_ahead = False  # direct mode: True after an xrun (see _direct_loop)
        self.late = bool(late)  # direct mode: render as late as the measured lead allows
        self.rendering_late = False  # the last block was rendered late
        self.render_lead = 0.0  # seconds before the deadline a late render starts (measured)
        block_s = synth.block_size / synth.sample_rate
        self.ahead_hold_blocks = max(1, round(ahead_hold_s / block_s))  # doubles, see _direct_loop
        self.late_hold_blocks = self.ahead_hold_blocks  # early after an xrun of a late block: doubles too
        self._ahead_hold_max = max(self.ahead_hold_blocks, round(AHEAD_HOLD_MAX_S / block_s))
        self.stats = EngineStats(block_s)
        self._clock_at = None  # watch_clock: (when, frames the device took, its xruns and reopens)
        self.gc = GcClock(gc)  # Python's GC while playing: collected by the audio thread (gc_clock.py)
        self.granted: Granted | None = None
        self.lead = 0  # frames of silence ahead of the first block (audio in: see the module docstring)
        self._abort = False
        self.failed = ""  # why the stream ended early (an OutputError), or ""
        self._produced_all = False
        self._drained = threading.Event()
        self._threads: list[threading.Thread] = []
        self.ring: Ring | None = None

    # -- life cycle -------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Granted:
        s = self.synth
        self.stats.started_at = time.monotonic()
        rtf = s.rtf_hint
        if self.mode == "auto" and rtf is not None:
            self.periods = auto_periods(rtf, s.block_size, self.period, self.periods, self.ahead_blocks)
        self.granted = self.backend.open(s.sample_rate, s.channels, self.period, self.periods)
        self.period = self.granted.period
        if self.mode == "auto":
            self.mode = "direct" if rtf is not None and self.direct_fits(rtf) else "threaded"
        inp = getattr(s, "input", None)
        if inp is not None:
            self.lead = self.direct_margin() if self.mode == "direct" else self.ahead_blocks * s.block_size
            self._lead_buf = np.zeros((self.lead, s.channels), np.float32)
        self.gc.start()
        # Another Python thread (a control source, the monitor) holding the GIL can keep
        # an audio thread waiting for up to the switch interval (5 ms by default): as long
        # as a 256-frame period. Ask the interpreter to hand the GIL over sooner.
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, 0.0005))
        if self.mode == "direct":
            if inp is not None:
                self.attach_input(inp)
            t = threading.Thread(target=self._direct_loop, name="pi-synth-audio", daemon=True)
            self._threads = [t]
            t.start()
            return self.granted
        self.ring = Ring(ring_frames(s.block_size, self.period, self.ahead_blocks) + self.lead, s.channels)
        if inp is not None:
            self.attach_input(inp)
        self._pbuf = np.zeros((self.period, s.channels), np.float32)
        self._sink_write = self.backend.sink(self.period)[0]
        inf = threading.Thread(target=self._inference_loop, name="pi-synth-inference", daemon=True)
        out = threading.Thread(target=self._output_loop, name="pi-synth-output", daemon=True)
        self._threads = [inf, out]
        inf.start()
        # prefill: the first periods must not wait for the model
        want = min(self.ahead_blocks * s.block_size + self.lead, self.ring.capacity)
        deadline = time.monotonic() + timeout
        while self.ring.available() < want and not self._produced_all and inf.is_alive():
            if time.monotonic() > deadline:
                break
            self.ring.wait_data(want, 0.05)
        out.start()
        return self.granted

    def attach_input(self, inp, start: bool = True) -> None:
        """Tell an AudioInput how far the output leads it and how to ask what the output
        has left to play (a read waits for its block only while that is more than a
        render needs), and open it (``start=False``: its own thread opens it — a stream
        already playing, e.g. a swap to a model that takes audio)."""
        b, ring = self.backend, self.ring
        inp.margin = self.lead
        rtf = self.synth.rtf_hint or 0.0
        inp.reserve = max(self.period // 2, int(2 * rtf * self.synth.block_size))
        if ring is None:
            inp.queued = b.queued
        else:
            inp.queued = lambda: (b.queued() or 0) + ring.available()
        inp.open(self.period, start=start)

    def _direct_wait(self) -> int:
        """The room the direct loop waits for before a render: one period (the device
        frees room a period at a time), or the block if it is shorter. A longer block
        goes in as the device frees room, so more periods are more margin whatever the
        block size."""
        return min(self.synth.block_size, self.granted.period)

    @property
    def output_lead(self) -> int:
        """Frames by which the output trails the input, beside the model's block: the lead,
        and in the threaded engine the device's buffer less a period behind the ring too
        (a tester measured the threaded raspberry pair at 4352 = 2048 + 2048 + 256)."""
        if not self.lead:
            return 0
        return self.lead + (self.direct_margin() if self.mode != "direct" and self.granted else 0)

    def direct_margin(self) -> int:
        """Frames still queued in the device when a just-in-time render starts: the
        buffer less one period. A render must finish before they have played."""
        return self.period * (self.granted.periods - 1)

    def _direct_budget(self) -> float:
        """Frames of render time a direct engine allows per block: ``direct_max_rtf`` of
        the margin. An overload there is an ALSA xrun, where the threaded engine holds
        and fades, so the headroom is ample."""
        return self.direct_max_rtf * self.direct_margin()

    def direct_fits(self, rtf: float) -> bool:
        """A block renders (``rtf`` × its duration, from the model's warm-up) within the
        direct budget — for a 256-frame voice on 256×2 a quarter of real time; for a
        1024-frame block on the same buffer (written as the device frees room) a sixteenth,
        on 256×3 an eighth."""
        return direct_periods(rtf, self.synth.block_size, self.period, self.direct_max_rtf) <= self.granted.periods

    def admits(self, synth) -> str | None:
        """Before a hot swap to ``synth``: None if this engine can play it, else why not,
        in one line. Only the direct engine can refuse: through the crossfade it renders
        both models in its margin, the new one at its own block (a longer block all at
        once); the threaded engine's ring holds and fades instead."""
        if self.mode != "direct" or self.granted is None:
            return None
        new = synth.rtf_hint
        if new is None:
            return None
        b = self.synth.block_size
        old = (self.synth.rtf_hint or 0.0) * b
        need = old + new * max(synth.block_size, b)  # frames of render per engine block
        have = self._direct_budget()
        if need < have:
            return None
        sr = self.synth.sample_rate
        return (f"{synth.card.name} renders its {synth.block_size}-frame block in "
                f"{1e3 * new * synth.block_size / sr:.2f} ms, more than the direct engine this "
                f"stream started with can fit ({1e3 * have / sr:.2f} ms per block with both models "
                "playing)")

    def stop(self, fade: bool = True, timeout: float = 5.0) -> None:
        """Fade out (on the audio clock), drain, close. Idempotent."""
        if fade and not self._abort:
            self.synth.fade_out()
            self._drained.wait(timeout)
        self._abort = True
        if self.ring is not None:
            self.ring.wake()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)
        self.backend.close()
        inp = getattr(self.synth, "input", None)
        if inp is not None:
            inp.close()
        self.gc.stop()
        if getattr(self, "_switch", None):
            sys.setswitchinterval(self._switch)

    def settle(self) -> None:
        """The instrument is up (controls, MIDI ports): freeze what it made, so the audio
        thread's full collections walk only what is made while playing (``gc_clock.py``)."""
        self.gc.settle()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the stream has ended by itself (faded out and drained)."""
        return self._drained.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._drained.is_set()

    def watch_clock(self) -> float:
        """The monitor's check (a control thread, every few hundred ms; never the audio
        thread): seconds the output lost since the last call with no xrun to show for it.

        A sound card's clock runs on while the instrument stalls, so its buffer runs dry and
        ALSA reports an xrun. JACK's does not: a client that misses its cycles is skipped,
        the plugin's pointer waits for it, and the sound is gone with nothing counted (a
        tester's four 80 ms stops left "0 xruns"). Here the wall clock is compared with the
        frames the device took: more than a buffer and a block of difference is a gap."""
        b, g = self.backend, self.granted
        now, frames, seen = time.monotonic(), b.frames_written, (b.xruns, self.stats.reopens)
        prev, self._clock_at = self._clock_at, (now, frames, seen)
        if prev is None or g is None or not b.paced or not self.stats.first_audio_at or self.finished:
            return 0.0
        t0, f0, seen0 = prev
        lost = (now - t0) - (frames - f0) / g.sample_rate
        chunk = self.synth.block_size if self.mode == "direct" else g.period
        if seen != seen0 or lost <= (g.period * g.periods + chunk) / g.sample_rate + CLOCK_SLACK_S:
            return 0.0
        self.stats.clock_gaps += 1
        self.stats.clock_gap_s += lost
        return lost

    def status(self) -> dict:
        st, g = self.stats, self.granted
        return {
            "model": self.synth.card.name,
            "position_s": self.synth.position / self.synth.sample_rate,
            "blocks": st.blocks,
            "xruns": self.backend.xruns,
            "late_periods": st.late_periods,
            "clock_gaps": st.clock_gaps,
            "clock_gap_ms": round(st.clock_gap_s * 1e3, 1),
            "nonfinite_blocks": self.synth.guard.nonfinite_blocks,
            "limited_blocks": self.synth.guard.limited_blocks,
            "device_errors": st.device_errors,
            "device": "ok" if self.backend.granted is not None else "lost",
            "reopens": st.reopens,
            "load": round(st.load, 4),
            "block_ms_max": round(st.block_time_max * 1e3, 3),
            "latency_frames": (g.latency_frames if g else 0)
            + (self.ring.capacity if self.ring else 0) + self.lead,
            "engine_mode": self.mode,
            "render": "ahead" if self.render_ahead or self.mode != "direct"
            else "late" if self.rendering_late else "early",
            "late_renders": st.late_renders,
            "late_holds": st.late_holds,
            "render_lead_ms": round(self.render_lead * 1e3, 3),
            "gc_collections": self.gc.collections,
            "gc_ms_max": round(self.gc.longest_s * 1e3, 3),
        }

    # -- the two real-time loops ------------------------------------------------------

    def _promote(self, priority: int) -> bool:
        """Only the two audio threads run real-time (onnxruntime has no pool threads:
        one intra-op thread, so nothing inherits the policy by accident). True if this
        thread now runs SCHED_FIFO."""
        if self.realtime or self.cpus:
            from pi_synth.service.realtime import promote_current_thread, set_affinity

            if self.cpus:
                set_affinity(self.cpus)
            if self.realtime:
                return bool(promote_current_thread(priority))
        return False

    def _inference_loop(self) -> None:
        self._promote(70)
        synth, ring, st = self.synth, self.ring, self.stats
        block = synth.block_size
        perf = time.perf_counter
        lead = self.lead
        while not self._abort:
            if not ring.wait_space(block, 0.1):
                continue
            if self._abort:
                break
            t0 = perf()
            frames = synth.next_block()
            dt = perf() - t0
            if lead:  # audio in: the output leads the first block by this silence
                ring.write(self._lead_buf)
                lead = 0
            ring.write(frames)
            st.blocks += 1
            st.block_time_total += dt
            if dt > st.block_time_max:
                st.block_time_max = dt
            if synth.finished:
                break
        self._produced_all = True
        ring.wake()

    def _direct_loop(self) -> None:
        """Direct mode: render a block, write it, repeat — one thread, no ring."""
        realtime = self._promote(75)
        synth, st = self.synth, self.stats
        perf, sleep = time.perf_counter, time.sleep
        block = self._direct_wait()
        backend = self.backend
        # the device's fast path (the ALSA one is C); a reopened device gives a new one
        write, wait_room = backend.sink(synth.block_size)
        xruns = backend.xruns
        ahead = self.render_ahead
        lead = self.lead
        back_at = went_back = -(1 << 62)  # block counts: when to go back to just in time, when we did
        # late render (module docstring): everything it needs, made before the loop
        sr = float(synth.sample_rate)
        block_s = synth.block_size / sr
        queued = backend.queued
        margin_q = self.direct_margin()  # frames queued at a prompt wake-up
        # a thread at normal priority can lose the CPU to any process for a scheduler slice
        # (milliseconds): far more than a late render's margin
        late_on = self.late and realtime and backend.paced and getattr(synth, "input", None) is None
        can_defer = hasattr(synth, "defer_swap")  # a Player: a swap waits for an early block
        floor = (synth.rtf_hint or 0.0) * block_s  # the model's warm-up block time at its budget
        worst = worst_prev = 0.0  # the worst block in this half of the window, in the last
        k = 0  # blocks in this half
        late_lead = self.render_lead = LATE_SAFETY * floor + LATE_MARGIN_S
        deadline = float("inf")  # when the device runs dry (perf_counter), as last worked out
        late = False
        warm = round(LATE_WARM_S / block_s)
        held = False  # late render held back after an xrun of a block rendered late
        late_back_at = late_went_back = -(1 << 62)
        gc_on, collect = self.gc.on, self.gc.after_write
        while not self._abort:
            # just in time: wait for room first, then read the controls and render, so an
            # event that lands while we wait is in this block, not the next one — and
            # (late) wait on until the deadline less the lead. After an xrun, render
            # ahead instead (wait in the write): one period more margin, and one period
            # more latency — a stall that broke through once must not again soon; after a
            # hold with no xrun, just in time again
            if not ahead:
                try:
                    wait_room(block)
                except DeviceError as e:
                    if not self._recover(backend.wait_room, block, e):
                        break
                    write, wait_room = backend.sink(synth.block_size)
                    deadline = float("inf")
                t_plan = perf()
                late = False
                woke_late = 0.0
                if late_on and not held and st.blocks >= warm and not (can_defer and synth.swapping):
                    q = queued()
                    if q is not None:
                        # how late the thread woke: what the device played meanwhile (seen
                        # where its pointer moves smoothly; JACK's moves a period at a time)
                        woke_late = (margin_q - q) / sr
                        if woke_late < 0.0:
                            woke_late = 0.0
                        dl = t_plan + q / sr  # a late wake-up on JACK makes this late: the
                        if deadline < dl:  # prediction bounds it (and follows a drift)
                            dl = deadline + (dl - deadline) * 0.0625
                        deadline = dl
                        start = dl - late_lead
                        if start - t_plan >= LATE_MIN_WAIT_S and late_lead <= LATE_MAX_SHARE * (dl - t_plan):
                            late = True
                            if can_defer:
                                synth.defer_swap = True
                            sleep(start - t_plan)
                            t_plan = start
                self.rendering_late = late
            else:
                t_plan = perf()
                late = False
                woke_late = 0.0
            t0 = perf()
            frames = synth.next_block()
            t1 = perf()
            if late:
                if can_defer:
                    synth.defer_swap = False
                st.late_renders += 1
            dt = t1 - t0
            st.blocks += 1
            st.block_time_total += dt
            if dt > st.block_time_max:
                st.block_time_max = dt
            # the lead: the worst of the last 128–256 blocks' render (+ the sleep's
            # overshoot) + how late the thread woke (a machine that stalls the thread keeps
            # the lead up for a while, so it renders early), never under the warm-up figure
            dt = t1 - t_plan + woke_late
            if dt > worst:
                worst = dt
            k += 1
            if k >= LATE_WINDOW:
                worst_prev, worst, k = worst, 0.0, 0
                floor = (synth.rtf_hint or 0.0) * block_s  # the model playing now
            late_lead = LATE_SAFETY * max(worst, worst_prev, floor) + LATE_MARGIN_S
            self.render_lead = late_lead
            if lead:  # audio in: the output leads the first block by this silence
                try:
                    backend.write(self._lead_buf)
                except DeviceError:
                    pass  # the block's own write below reports it
                lead = 0
            try:  # a block longer than the room goes in as the device frees it
                write(frames)
            except DeviceError as e:
                if not self._recover(backend.write, frames, e):
                    break
                write, wait_room = backend.sink(synth.block_size)
                deadline = float("inf")
            if gc_on:
                collect()  # the device is at its fullest: Python's GC, if due
            deadline += block_s
            if backend.xruns != xruns:  # rare: the bookkeeping is off the common path
                xruns = backend.xruns
                if late:  # a block rendered late was too late: early for a hold first (the
                    # margin back, no latency added), doubling like the ahead hold
                    if st.blocks - late_went_back < self.late_hold_blocks:
                        self.late_hold_blocks = min(2 * self.late_hold_blocks, self._ahead_hold_max)
                    held = True
                    st.late_holds += 1
                    late_back_at = st.blocks + self.late_hold_blocks
                else:  # rendered early, and still too late: a period ahead for a hold
                    if ahead or st.blocks - went_back < self.ahead_hold_blocks:
                        self.ahead_hold_blocks = min(2 * self.ahead_hold_blocks, self._ahead_hold_max)
                    ahead = self.render_ahead = True
                    back_at = st.blocks + self.ahead_hold_blocks
                self.rendering_late = late = False
                deadline = float("inf")  # the device restarted: work it out afresh
            elif ahead and st.blocks >= back_at:
                ahead = self.render_ahead = False
                went_back = st.blocks
            elif held and st.blocks >= late_back_at:
                held = False
                late_went_back = st.blocks
            if not st.first_audio_at:
                st.first_audio_at = time.monotonic()
            if synth.finished:
                break
        self._produced_all = True
        self._drained.set()

    def _output_loop(self) -> None:
        self._promote(75)
        ring, pbuf, st = self.ring, self._pbuf, self.stats
        period = self.period
        wait_late = (period / self.synth.sample_rate) if self.backend.paced else 0.25
        down = np.linspace(1.0, 0.0, period, dtype=np.float32)[:, None]
        up = down[::-1].copy()
        last = np.zeros((1, pbuf.shape[1]), np.float32)
        gap = False  # the previous period was a late one: fade the next one in
        gc_on, collect = self.gc.on, self.gc.after_write
        while not self._abort:
            if ring.wait_data(period, wait_late):
                ring.read_into(pbuf)
                if gap:
                    pbuf *= up
                    gap = False
            else:
                n = ring.read_into(pbuf)
                if self._produced_all and ring.available() == 0:
                    if n:
                        pbuf[n:] = 0.0
                        self._write(pbuf)
                    break
                if self.backend.paced:
                    # the model fell behind: hold the last sample and fade it out over
                    # the period (no click), then fade back in when data returns
                    st.late_periods += 1
                    if n:
                        pbuf[:n] *= up[period - n:] if gap else 1.0
                        last[0] = pbuf[n - 1]
                    np.multiply(down[: period - n], last, out=pbuf[n:])
                    last[0] = 0.0
                    gap = True
                elif n == 0:
                    continue
                else:
                    pbuf[n:] = 0.0
            if not self._write(pbuf):
                break
            if gc_on:
                collect()  # the device is at its fullest: Python's GC, if due
            last[0] = pbuf[-1]
            if not st.first_audio_at:
                st.first_audio_at = time.monotonic()
        self._drained.set()

    def _write(self, pbuf: np.ndarray) -> bool:
        """One period to the device (its fast path); on device loss, reopen until the
        write works or we stop."""
        try:
            self._sink_write(pbuf)
            return True
        except DeviceError as e:
            if not self._recover(self.backend.write, pbuf, e):
                return False
            self._sink_write = self.backend.sink(self.period)[0]  # the reopened device's
            return True

    def _recover(self, call, arg, error: DeviceError) -> bool:
        """After ``error`` from ``call(arg)``: close, reopen every ``reopen_interval``
        until the device is back, then ``call(arg)`` again. False if we stopped first, or
        if the output cannot come back (:class:`OutputError`: a full disk): then the
        stream ends and :attr:`failed` says why."""
        inp = getattr(self.synth, "input", None)
        if inp is not None and self.backend.capture == self.backend.device:
            inp.lost_with_output(str(error))  # one card, both ways: its input went with it
        while True:
            self.stats.device_errors += 1
            self.stats.last_device_error = str(error)
            if isinstance(error, OutputError):
                self.failed = str(error)
                self._abort = True
                return False
            try:
                self.backend.close()
            except Exception:
                pass
            while not self._abort and self.backend.granted is None:
                self._reopen()
            if self._abort:
                return False
            try:
                call(arg)
                return True
            except DeviceError as e:
                error = e

    def _reopen(self) -> None:
        time.sleep(self.reopen_interval)
        s = self.synth
        try:
            g = self.backend.open(s.sample_rate, s.channels, self.period, self.periods)
        except DeviceError as e:
            self.stats.last_device_error = str(e)
            return
        if g.period != self.period:  # a different device: keep our period buffer size
            self.backend.close()
            self.stats.last_device_error = f"device came back with period {g.period}"
            return
        self.stats.reopens += 1


def render_offline(synth: BlockSource, backend: Backend, *, period: int | None = None) -> int:
    """Render until the synth has faded out, as fast as the CPU allows.

    The caller arranges the end (a stop hook calling ``guard.fade_out()``). Same
    blocks as the threaded engine, written without threads. Returns frames written.
    On any failure the backend is discarded (a file backend leaves no file), then the
    error goes on.
    """
    period = period or synth.block_size
    backend.open(synth.sample_rate, synth.channels, max(16, period), 2)
    inp = getattr(synth, "input", None)
    total = 0
    try:
        if inp is not None:  # a file into the input, read as a live one is (no lead: offline)
            inp.open(max(16, period))
        p = backend.granted.period
        while True:
            frames = synth.next_block()
            for i in range(0, frames.shape[0], p):
                total += backend.write(frames[i:i + p])
            if synth.finished:
                break
    except BaseException:  # a full disk, Ctrl-C: no half-written file that looks finished
        backend.discard()
        raise
    else:
        backend.close()
    finally:
        if inp is not None:
            inp.close()
    return total
