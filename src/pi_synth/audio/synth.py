"""One safe block of sound: controls → model → output guard.

:class:`Synth` is one loaded model ready to play: its runtime, its control bank and its
output guard. The engine pulls blocks from it (through the
:class:`~pi_synth.audio.player.Player`, which runs the block hooks — the events
timeline, the voice's envelope — on the audio clock first), and an offline render
pulls them in a plain loop: the same code either way, so a render and a live run with
the same events make the same samples.

A batched note model (card ``voices`` > 1) plays its voices as rows of one call: the
synth reads the :class:`~pi_synth.model.voices.VoiceTable` the allocator wrote for this
block, applies its row moves and resets to the model's state, runs the active rows
(none: no call at all), and mixes them — each row with its own gain ramped across the
block (a stolen voice's fade), the sum scaled by the **gain law**
``1 / sqrt(max(1, w))``, where *w* is the sum of the voices' envelope amplitudes (a
voice at full loudness counts 1, a quieter one or a tail less), ramped from the previous
block's value so a chord never zippers. Uncorrelated voices add in power, so the law
keeps a chord about as loud as one voice played as hard, and well away from the
limiter; the output guard still comes last.
"""

from __future__ import annotations

import math
import time

import numpy as np

from pi_synth.audio.bank import ControlBank
from pi_synth.audio.safety import NumpyGuardKernel, OutputGuard
from pi_synth.model.runtime import Runtime
from pi_synth.model.voices import VoiceTable


OVERRUNS_TO_DROP = 32  # blocks in a row (~170 ms at 256/48k) over the allowance at the budget


def mix_gain(weight: float) -> float:
    """The gain law: the mix's gain for voices whose envelope amplitudes add up to
    ``weight`` (module docstring)."""
    return 1.0 / math.sqrt(weight) if weight > 1.0 else 1.0


class Synth:
    """One model playing: each :meth:`next_block` reads the bank, runs the model once and
    makes the block safe. A :class:`~pi_synth.audio.engine.BlockSource`."""

    takes_input = False  # audio in: see audio/pair.py

    def __init__(
        self,
        runtime: Runtime,
        bank: ControlBank | None = None,
        guard: OutputGuard | None = None,
        voices: VoiceTable | None = None,
    ):
        card = runtime.card
        self.runtime = runtime
        self.card = card
        self.bank = bank or ControlBank(card)
        self.guard = guard or OutputGuard(card.block_size, card.channels, card.sample_rate)
        self.block_size = card.block_size
        self.sample_rate = card.sample_rate
        self.channels = card.channels
        self.position = 0  # frames produced so far: the audio clock
        self.resets = 0
        audio = runtime.audio
        # mono: [1, block] and [block, 1] are the same bytes, so the guard works on the
        # runtime's output buffer in place (one copy less per block)
        self._copy = not (card.channels == 1 and audio.flags.c_contiguous)
        if self._copy:
            self._out = np.zeros((card.block_size, card.channels), np.float32)
        else:
            self._out = audio.reshape(card.block_size, 1)
        self.voices = voices
        self.voice_rtf: float | None = None  # block time at the voice budget (set by the patch)
        # live: a model call at the budget that keeps overrunning this (seconds) lowers the budget
        self.voice_allowed_s: float | None = None
        self.budget_drops = 0
        self._overruns = 0
        if voices is not None:
            self._poly_setup(voices)
        # the C guard takes a memoryview made once: numpy's buffer export costs ~0.3 µs a
        # call right after a model run; the numpy guard works on the array itself
        self._guard_in = self._out if isinstance(self.guard, NumpyGuardKernel) else memoryview(self._out)

    def _poly_setup(self, t: VoiceTable) -> None:
        """Buffers and views for every row count, made once: the block allocates nothing."""
        rt, card = self.runtime, self.card
        if t.rows > rt.rows:
            raise ValueError(f"a voice table of {t.rows} rows needs a runtime with as many, not {rt.rows}")
        R, B, F = rt.rows, card.block_size, card.control_frames
        self._copy = False
        self._out = np.zeros((B, card.channels), np.float32)
        self._cols = [self._out[:, c] for c in range(card.channels)]
        self._ctl = np.zeros((len(card.controls), F), np.float32)
        ip, il = card.index("pitch"), card.index("loudness")
        p, lo = card.control("pitch"), card.control("loudness")
        self._p_range = (min(p.min, p.max), max(p.min, p.max))
        self._l_range = (min(lo.min, lo.max), max(lo.min, lo.max))
        self._idle_loud = rt.controls[il]  # row 0's loudness frames while no note has played
        self._g0 = np.ones(R)  # each row's gain (law included) at the end of the last block
        self._g1 = np.ones(R)
        self._dg = np.zeros(R)
        self._G = np.zeros((R, B), np.float32)
        self._tmp = np.zeros((R, B), np.float32)
        self._ramp = ((np.arange(B, dtype=np.float32) + 1) / B)[None, :]
        self._law = 1.0
        self._seq = -1
        # with several control frames a voice's pitch and loudness ramp from the last block's
        self._ramp_f = ((np.arange(F, dtype=np.float64) + 1) / F)[None, :] if F > 1 else None
        self._prev = np.zeros((2, R))  # pitch, loudness of each row at the end of the last block
        self._cur = np.zeros((2, R))
        self._dcf = np.zeros((R, F))
        ctl, audio = rt.controls_rows, rt.audio_rows
        self._rows = [None] + [
            dict(ctl=ctl[:k], pitch=ctl[:k, ip, :] if F > 1 else ctl[:k, ip, 0],
                 loud=ctl[:k, il, :] if F > 1 else ctl[:k, il, 0],
                 audio=[audio[:k, c, :] for c in range(card.channels)],
                 g0=self._g0[:k], g1=self._g1[:k], dg=self._dg[:k], dgc=self._dg[:k, None],
                 g0c=self._g0[:k, None], G=self._G[:k], tmp=self._tmp[:k], gain=t.gain[:k],
                 tp=t.pitch[:k], tl=t.loudness[:k], cur_p=self._cur[0, :k], cur_l=self._cur[1, :k],
                 prev_p=self._prev[0, :k], prev_l=self._prev[1, :k], dcf=self._dcf[:k])
            for k in range(1, R + 1)
        ]

    @property
    def rtf_hint(self) -> float | None:
        """Block time over block duration, from the model's warm-up on this machine (a
        batched note model's: at its voice budget, measured)."""
        if self.voice_rtf is not None:
            return self.voice_rtf
        rt = self.runtime
        return rt.warmup_rtf if rt is not None else None

    @property
    def finished(self) -> bool:
        return self.guard.finished

    def fade_out(self) -> None:
        self.guard.fade_out()

    def close(self) -> None:
        """Release the model (called off the audio thread, after a swap)."""
        self.runtime = None

    def next_block(self) -> np.ndarray:
        """Render the next block into a reused ``[block, channels]`` float32 buffer."""
        if self.voices is not None:
            return self._next_voices()
        rt = self.runtime
        self.bank.fill(rt.controls)
        rt.step()
        return self.finish()

    def _next_voices(self) -> np.ndarray:
        """A batched note model's block: the table's rows, run and mixed (module docstring)."""
        rt, t = self.runtime, self.voices
        if not t.engaged:  # no note yet: row 0 plays the bank, like a mono model
            rt.set_rows(1)
            self.bank.fill(rt.controls)
            if self._idle_loud.max() <= self._l_range[0]:  # at its floor: silence, no model call
                self._out.fill(0.0)
                return self.finish()
            rt.step()
            np.copyto(self._out, rt.audio.T)
            return self.finish()
        if t.seq != self._seq:
            self._seq = t.seq
            for i in range(t.n_ops):
                src, dst = t.op(i)
                if src < 0:  # a new voice: initial state, no ramp from the row's last voice
                    rt.reset_row(dst)
                    self._g0[dst] = self._law
                    self._prev[0, dst] = min(max(t.pitch[dst], self._p_range[0]), self._p_range[1])
                    self._prev[1, dst] = min(max(t.loudness[dst], self._l_range[0]), self._l_range[1])
                else:
                    rt.move_row(src, dst)
                    self._g0[dst] = self._g0[src]
                    self._prev[:, dst] = self._prev[:, src]
        k = t.active
        law = mix_gain(t.weight)
        if k == 0:  # no voice: no model call at all
            self._out.fill(0.0)
            self._law = law
            return self.finish()
        v = self._rows[k]
        rt.set_rows(k)
        self.bank.fill(self._ctl)
        np.copyto(v["ctl"], self._ctl)  # every control but pitch and loudness: the bank's
        if self._ramp_f is None:
            np.clip(v["tp"], *self._p_range, out=v["pitch"])
            np.clip(v["tl"], *self._l_range, out=v["loud"])
        else:
            for cur, prev, tab, rng, dst in ((v["cur_p"], v["prev_p"], v["tp"], self._p_range, v["pitch"]),
                                             (v["cur_l"], v["prev_l"], v["tl"], self._l_range, v["loud"])):
                np.clip(tab, *rng, out=cur)
                np.subtract(cur, prev, out=v["dg"])
                np.multiply(v["dgc"], self._ramp_f, out=v["dcf"])
                v["dcf"] += prev[:, None]
                np.copyto(dst, v["dcf"])
                np.copyto(prev, cur)
        if self.voice_allowed_s is None:
            rt.step()
        else:
            t0 = time.perf_counter()
            rt.step()
            self._watch(time.perf_counter() - t0, k, t)
        if t.fading == 0 and law == self._law and not t.n_ops:
            # steady (no fade, the same law): every row at the law's gain, no ramp to make
            for audio, col in zip(v["audio"], self._cols):
                np.sum(audio, axis=0, out=col)
                if law != 1.0:
                    col *= law
            return self.finish()
        # each row's gain ramps across the block from the last block's value
        g0, g1, dg, G, tmp = v["g0"], v["g1"], v["dg"], v["G"], v["tmp"]
        np.multiply(v["gain"], law, out=g1)
        np.subtract(g1, g0, out=dg)
        np.multiply(v["dgc"], self._ramp, out=G)
        G += v["g0c"]
        for audio, col in zip(v["audio"], self._cols):
            np.multiply(audio, G, out=tmp)
            np.sum(tmp, axis=0, out=col)
        np.copyto(g0, g1)
        self._law = law
        return self.finish()

    def _watch(self, dt: float, k: int, t: VoiceTable) -> None:
        """The budget was measured once; a machine that got slower since (heat, a neighbour)
        shows as calls at the budget over the allowance. After ``OVERRUNS_TO_DROP`` in a
        row, one voice less: overload degrades by stealing, not by xruns."""
        if k < t.budget or dt <= self.voice_allowed_s:
            self._overruns = 0
            return
        self._overruns += 1
        if self._overruns >= OVERRUNS_TO_DROP and t.budget > 1:
            t.budget -= 1
            self.budget_drops += 1
            self._overruns = 0

    def finish(self) -> np.ndarray:
        """The model's last output made safe (the guard; a model reset after NaN), into
        the block buffer; the clock moves on. The second half of :meth:`next_block`,
        public so a benchmark can time the stages apart."""
        if self._copy:
            np.copyto(self._out, self.runtime.audio.T)
        if not self.guard.process(self._guard_in):
            self.runtime.reset()  # NaN in the state never heals by itself
            self.resets += 1
        self.position += self.block_size
        return self._out
