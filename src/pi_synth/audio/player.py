"""The player: what the engine pulls blocks from — one model playing, or two crossfading.

A :class:`Deck` is one loaded model (a :class:`~pi_synth.audio.synth.Synth`) that can
deliver exactly the engine's block size even when its own block differs (a small FIFO
in between; bypassed when the sizes match, the common case).

Audio in: the player reads one engine block from its :class:`~pi_synth.audio.input.AudioInput`
(``input``; silence without one) before the decks play, and feeds it to every deck whose
model takes input (a :class:`~pi_synth.audio.pair.PairSynth`). Such a deck's model block
may differ from the engine's: its output FIFO then starts with ``B − gcd(B, f)`` frames of
silence (model block ``B``, engine block ``f``), the least with which a model block's
input has always arrived by the time its output is due — the input-side latency of
blocks that do not line up. Equal blocks (the common case) add nothing.

:meth:`Player.crossfade_to` hands a new deck to the audio thread (one attribute
store, no lock); at the next block boundary the player starts mixing old and new with
an equal-power crossfade over ``crossfade_ms``, then retires the old deck (closed
later by a control thread, never in the audio thread). Hot swap therefore has no
gap. Models must share the sample rate to crossfade (the app restarts the stream for
another); a model with another channel count than the stream's is adapted by its deck.

Block hooks (the events timeline, the voice's envelope, the stop time) run here, once
per engine block on the audio clock, whichever model is playing. A
:class:`~pi_synth.audio.recorder.Recorder` (``recorder``) keeps the last seconds of
what the player gives the engine.
"""

from __future__ import annotations

import math

import numpy as np

from pi_synth.audio.synth import Synth


class Deck:
    """One synth delivering exactly the player's block size, whatever its own, and the
    stream's channel count: a mono model on a stereo stream is heard on both channels, a
    stereo model on a mono stream as the mean of its two (into a buffer made once)."""

    def __init__(self, synth: Synth, frames: int, channels: int | None = None):
        self.synth = synth
        self.frames = frames
        self.channels = channels = channels or synth.channels
        self._adapt = np.zeros((frames, channels), np.float32) if channels != synth.channels else None
        self.direct = synth.block_size == frames
        self.takes_input = getattr(synth, "takes_input", False)
        if self.takes_input:
            synth.prepare_input(frames)
            self.feed = synth.feed
        if self.direct and self._adapt is None:
            self.pull = synth.next_block  # no FIFO: one call less per block
        elif not self.direct:
            cap = synth.block_size + frames
            self._fifo = np.zeros((cap, synth.channels), np.float32)
            # a model taking input: its first block's input has not all come yet (see above)
            self._n = synth.block_size - math.gcd(synth.block_size, frames) if self.takes_input else 0
        self._out = np.zeros((frames, synth.channels), np.float32)

    def pull(self) -> np.ndarray:
        out = self.synth.next_block() if self.direct else self._refill()
        a = self._adapt
        if a is None:
            return out
        if a.shape[1] > out.shape[1]:  # mono onto every channel
            np.copyto(a, out[:, :1])
        else:  # stereo to mono: the mean keeps a centred sound at its level
            np.add(out[:, :1], out[:, 1:2], out=a)
            a *= 0.5
        return a

    def _refill(self) -> np.ndarray:
        f = self.frames
        while self._n < f:
            b = self.synth.next_block()
            self._fifo[self._n:self._n + b.shape[0]] = b
            self._n += b.shape[0]
        self._out[:] = self._fifo[:f]
        rest = self._n - f
        if rest:
            self._fifo[:rest] = self._fifo[f:self._n]
        self._n = rest
        return self._out


class Player:
    """What the engine plays: the current synth (or two, crossfading) behind the block
    hooks. A :class:`~pi_synth.audio.engine.BlockSource`, like a bare synth."""

    def __init__(self, synth: Synth, hooks=None, *, crossfade_ms: float = 50.0, input=None,
                 channels: int | None = None):
        self.block_size = synth.block_size
        self.sample_rate = synth.sample_rate
        self.channels = channels or synth.channels  # the stream's (config output.channels), else the model's
        self.input = input  # an AudioInput (audio/input.py), or None: silence in
        self._in = np.zeros(self.block_size, np.float32)
        self.deck = Deck(synth, self.block_size, self.channels)
        self.hooks = list(hooks or [])
        self.position = 0
        self.crossfade_blocks = max(1, round(crossfade_ms * 1e-3 * self.sample_rate / self.block_size))
        self._pending: Deck | None = None
        self._incoming: Deck | None = None
        self._k = 0
        self.retired: list[Synth] = []  # closed by a control thread
        self.swaps = 0
        self._mix = np.zeros((self.block_size, self.channels), np.float32)
        self._tmp = np.zeros_like(self._mix)
        x = (np.arange(self.block_size, dtype=np.float64) + 1) / self.block_size
        self._x = x[:, None]
        self._g = np.zeros((self.block_size, 1), np.float32)
        self._fading_out = False
        self.recorder = None  # a Recorder: the last seconds played (the web page's download)
        # set by the engine around a block it renders late (just before its deadline): a
        # queued swap waits for the next block rendered early, since a crossfade renders two
        # models
        self.defer_swap = False

    # -- what the engine reads ----------------------------------------------------------

    @property
    def synth(self) -> Synth:
        return self.deck.synth

    @property
    def card(self):
        return self.deck.synth.card

    @property
    def rtf_hint(self) -> float | None:
        return self.deck.synth.rtf_hint

    @property
    def guard(self):
        return self.deck.synth.guard

    @property
    def finished(self) -> bool:
        return self._fading_out and self._incoming is None and self.deck.synth.finished

    def fade_out(self) -> None:
        self._fading_out = True
        self.deck.synth.guard.fade_out()
        inc = self._incoming or self._pending
        if inc is not None:
            inc.synth.guard.fade_out()

    # -- control side ---------------------------------------------------------------------

    def can_crossfade(self, synth: Synth) -> bool:
        return synth.sample_rate == self.sample_rate and synth.channels in (1, 2)

    def crossfade_to(self, synth: Synth) -> None:
        """Queue a loaded model; the audio thread starts the crossfade next block."""
        if not self.can_crossfade(synth):
            raise ValueError("crossfade needs the same sample rate (and 1 or 2 channels)")
        synth.guard.gain = 1.0  # the crossfade is the fade-in
        self._pending = Deck(synth, self.block_size, self.channels)

    @property
    def swapping(self) -> bool:
        return self._pending is not None or self._incoming is not None

    # -- the audio thread -----------------------------------------------------------------

    def next_block(self) -> np.ndarray:
        for hook in self.hooks:
            hook(self.position)
        self.position += self.block_size
        if self.input is not None:  # read it whatever plays: the device's stream keeps flowing
            self.input.read(self._in)
        if self._incoming is None and self._pending is not None and not self.defer_swap:
            self._incoming, self._pending, self._k = self._pending, None, 0
            if self._fading_out:
                self._incoming.synth.guard.fade_out()
        if self.deck.takes_input:
            self.deck.feed(self._in)
        if self._incoming is None:
            out = self.deck.pull()
            if self.recorder is not None:
                self.recorder.push(out)
            return out
        if self._incoming.takes_input:
            self._incoming.feed(self._in)
        old = self.deck.pull()
        new = self._incoming.pull()
        n = self.crossfade_blocks
        # equal-power: new gain sin(πt/2), old gain cos(πt/2), t from k/n to (k+1)/n
        np.multiply(self._x, 1.0 / n, out=self._tmp[:, :1])
        self._tmp[:, :1] += self._k / n
        t = self._tmp[:, :1]
        np.multiply(t, math.pi / 2, out=self._g)
        np.cos(self._g, out=self._g)
        np.multiply(old, self._g, out=self._mix)
        np.multiply(t, math.pi / 2, out=self._g)
        np.sin(self._g, out=self._g)
        np.multiply(new, self._g, out=self._tmp)
        self._mix += self._tmp
        self._k += 1
        if self._k >= n:
            self.retired.append(self.deck.synth)
            self.deck, self._incoming = self._incoming, None
            self.swaps += 1
        if self.recorder is not None:
            self.recorder.push(self._mix)
        return self._mix
