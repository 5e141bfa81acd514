"""One safe block of sound: controls → model → output guard.

:class:`Synth` is one loaded model ready to play: its runtime, its control bank and its
output guard. The engine pulls blocks from it (through the
:class:`~pi_synth.audio.player.Player`, which runs the block hooks — the events
timeline, the voice's envelope — on the audio clock first), and an offline render
pulls them in a plain loop: the same code either way, so a render and a live run with
the same events make the same samples.
"""

from __future__ import annotations

import numpy as np

from pi_synth.audio.bank import ControlBank
from pi_synth.audio.safety import NumpyGuardKernel, OutputGuard
from pi_synth.model.runtime import Runtime


class Synth:
    """One model playing: each :meth:`next_block` reads the bank, runs the model once and
    makes the block safe. A :class:`~pi_synth.audio.engine.BlockSource`."""

    def __init__(
        self,
        runtime: Runtime,
        bank: ControlBank | None = None,
        guard: OutputGuard | None = None,
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
        # the C guard takes a memoryview made once: numpy's buffer export costs ~0.3 µs a
        # call right after a model run; the numpy guard works on the array itself
        self._guard_in = self._out if isinstance(self.guard, NumpyGuardKernel) else memoryview(self._out)

    @property
    def rtf_hint(self) -> float | None:
        """Block time over block duration, from the model's warm-up on this machine."""
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
        rt = self.runtime
        self.bank.fill(rt.controls)
        rt.step()
        return self.finish()

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
