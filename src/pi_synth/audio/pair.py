"""A model that plays audio in: a decoder with its encoder (timbre transfer), or an effect.

**The pair** (RAVE's headline use, and nn~'s): each block, the input goes into the
encoder, its latents — scaled about the decoder's defaults by ``latent_scale`` and
offset by the decoder's own latent controls, as nn~ and the RAVE VST do — go into the
decoder, and a new timbre comes out. The decoder's controls stay ordinary controls in
the bank: a knob on ``z0`` is ``z0``'s bias now, so knobs, MIDI CC, OSC, presets and the
mapping reach the offsets unchanged. **An effect** (a model whose card has ``inputs.audio``)
gets the input itself beside its controls.

Three controls are added to the model's own (last, so knobs keep their places):
``input_gain`` (dB, before the model), ``latent_scale`` (a pair only) and ``dry_wet``
(0 = the input alone, 1 = the model alone), the dry path delayed by the models' stated
latency (the cards' ``latency_samples``) so the two line up.

Blocks: the input arrives an engine block at a time (:meth:`PairSynth.feed`, from the
player) into a FIFO; :meth:`next_block` takes one model block from it — the input side
of the Deck's output FIFO (``audio/player.py``), which starts that FIFO primed so a block
is always there when asked for. Both models' state is carried by their runtimes (the
usual ping-pong), and a non-finite block resets both.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pi_synth.audio.bank import ControlBank
from pi_synth.audio.safety import NumpyGuardKernel, OutputGuard
from pi_synth.errors import ModelError
from pi_synth.model.card import Card, Control

INPUT_GAIN = Control("input_gain", -24.0, 24.0, 0.0, unit="db",
                     description="gain on the audio input, before the model")
LATENT_SCALE = Control("latent_scale", 0.0, 2.0, 1.0,
                       description="the encoder's latents scaled about the decoder's defaults (1: as encoded)")
DRY_WET = Control("dry_wet", 0.0, 1.0, 1.0, description="0: the input alone (delayed to line up), 1: the model alone")


def pair_card(decoder: Card, encoder: Card | None) -> Card:
    """The card the player, the bank and the mapping see for a pair (or an effect): the
    decoder's, with the input's controls after its own."""
    extra = [INPUT_GAIN] + ([LATENT_SCALE] if encoder is not None else []) + [DRY_WET]
    clash = [c.name for c in extra if c.name in decoder.control_names]
    if clash:
        raise ModelError(f"{decoder.name}: its control {clash[0]!r} clashes with the audio input's own; rename it")
    info = {"input": "encoder" if encoder is not None else "audio",
            "latency_samples": pair_latency(decoder, encoder)}
    if encoder is not None:
        info["encoder"] = encoder.name
    return dataclasses.replace(decoder, controls=decoder.controls + tuple(extra),
                               extra={**decoder.extra, "audio_in": info})


def pair_latency(decoder: Card, encoder: Card | None) -> int:
    """Samples from an input sample to the model's answer to it, as the cards state it."""
    return decoder.latency_samples + (encoder.latency_samples if encoder is not None else 0)


def latent_targets(decoder: Card, encoder: Card) -> list[int]:
    """Indices of the decoder controls the encoder writes (its ``latent_controls``; by
    default the decoder's first K), checked against both cards."""
    where = f"{encoder.name} → {decoder.name}"
    for what, a, b in (("sample_rate", encoder.sample_rate, decoder.sample_rate),
                       ("block_size", encoder.block_size, decoder.block_size),
                       ("control_frames", encoder.control_frames, decoder.control_frames)):
        if a != b:
            raise ModelError(f"{where}: the encoder's {what} is {a}, the decoder's {b}; they must match "
                             "(convert both from the same model)")
    a, b = encoder.export_digest, decoder.export_digest
    if a and b and a != b:  # converted from two different .ts: its latents mean nothing to this decoder
        raise ModelError(f"{where}: the encoder was converted from {encoder.extra['rave'].get('ts', 'another model')}, "
                         f"the decoder from {decoder.extra['rave'].get('ts', 'another')} (sha256 {a[:12]}… vs "
                         f"{b[:12]}…); convert both from the same .ts with 'pi-synth convert rave'")
    names = encoder.latent_controls or decoder.control_names
    idx = []
    for n in names:
        if n not in decoder.control_names:
            raise ModelError(f"{where}: the encoder writes {n!r}, which the decoder has no control for; "
                             f"its controls are {', '.join(decoder.control_names)}")
        idx.append(decoder.control_names.index(n))
    return idx


class PairSynth:
    """Audio in → (encoder → latents + offsets →) decoder → guard, mixed with the dry input.
    A :class:`~pi_synth.audio.engine.BlockSource` that also takes input (:meth:`feed`)."""

    takes_input = True
    voices = None  # (a batched note model's voice table: never one that takes audio)

    def __init__(self, decoder, encoder=None, bank: ControlBank | None = None, guard: OutputGuard | None = None):
        dcard = decoder.card
        if not dcard.controls_input and encoder is not None:
            raise ModelError(f"{dcard.name}: a decoder driven by an encoder needs a controls input")
        if encoder is None and not dcard.audio_input:
            raise ModelError(f"{dcard.name}: takes no audio (no inputs.audio in its card, no encoder beside it)")
        self.decoder, self.encoder = decoder, encoder
        self.runtime = decoder  # what a plain Synth calls its model
        self.card = pair_card(dcard, encoder.card if encoder is not None else None)
        self.block_size = B = dcard.block_size
        self.sample_rate = dcard.sample_rate
        self.channels = dcard.channels
        self.position = 0
        self.resets = 0
        self.bank = bank or ControlBank(self.card)
        self.guard = guard or OutputGuard(B, dcard.channels, dcard.sample_rate)
        n, F = len(dcard.controls), dcard.control_frames
        self._n = n
        self._ctl = np.zeros((len(self.card.controls), F), np.float32)
        names = self.card.control_names
        self._gain_i, self._wet_i = names.index("input_gain"), names.index("dry_wet")
        self._scale_i = names.index("latent_scale") if encoder is not None else -1
        if encoder is not None:
            idx = latent_targets(dcard, encoder.card)
            k = encoder.latent.shape[0]
            if k != len(idx):
                raise ModelError(f"{encoder.card.name}: makes {k} latents, its card names {len(idx)} controls")
            c = [dcard.controls[i] for i in idx]
            # a log control (pitch in Hz) is scaled and offset as an interval, in log: a knob
            # at twice the default plays the input an octave up in every register
            self._log = np.array([[x.curve == "log" and x.min > 0 and x.max > 0 and x.default > 0] for x in c])
            self._any_log = bool(self._log.any())

            def t(v, i):
                return np.log(v) if self._log[i, 0] else v

            self._def = np.array([[t(x.default, i)] for i, x in enumerate(c)], np.float32)
            self._lo = np.array([[t(min(x.min, x.max), i)] for i, x in enumerate(c)], np.float32)
            self._hi = np.array([[t(max(x.min, x.max), i)] for i, x in enumerate(c)], np.float32)
            contiguous = idx == list(range(idx[0], idx[0] + len(idx)))
            self._lat = slice(idx[0], idx[0] + len(idx)) if contiguous else np.array(idx)
            self._z = np.zeros((k, F), np.float32)
            self._zb = np.zeros((k, F), np.float32)
        # the input: a FIFO of engine blocks (sized by prepare_input), this block, the dry path
        self._fifo = np.zeros(2 * B, np.float32)
        self._have = 0
        self._x = np.zeros(B, np.float32)
        self.latency = self.card.extra["audio_in"]["latency_samples"]
        self._hist = np.zeros(self.latency + B, np.float32)
        self._lin = (np.arange(1, B + 1, dtype=np.float32) / B)
        self._ramp = np.zeros(B, np.float32)
        self._gain = 1.0
        self._wet = float(self.card.control("dry_wet").default)
        self._out = np.zeros((B, dcard.channels), np.float32)
        self._audio_t = decoder.audio.T  # views made once: none per block
        self._dry = (self._hist[:B] if self.latency else self._x)[:, None]
        self._ramp_col = self._ramp[:, None]
        self._guard_in = self._out if isinstance(self.guard, NumpyGuardKernel) else memoryview(self._out)
        self.starved = 0  # blocks asked for before their input had come (never, with the Deck's priming)

    # -- what the player asks ---------------------------------------------------------

    def prepare_input(self, frames: int) -> None:
        """Engine blocks of ``frames`` will be fed: room for them (control thread)."""
        need = self.block_size + frames
        if self._fifo.shape[0] < need:
            self._fifo = np.zeros(need, np.float32)

    def feed(self, x: np.ndarray) -> None:
        """One engine block of conditioned mono input (the audio thread)."""
        n = x.shape[0]
        have = self._have
        room = self._fifo.shape[0] - have
        if n > room:  # cannot happen once prepare_input ran: drop the oldest, keep the timeline
            self._drop(n - room)
            have = self._have
        self._fifo[have:have + n] = x
        self._have = have + n

    def _drop(self, k: int) -> None:
        rest = self._have - k
        self._fifo[:rest] = self._fifo[k:self._have]
        self._have = rest

    @property
    def rtf_hint(self) -> float | None:
        r = [rt.warmup_rtf for rt in (self.decoder, self.encoder) if rt is not None]
        return None if any(v is None for v in r) or self.decoder is None else sum(r)

    @property
    def finished(self) -> bool:
        return self.guard.finished

    def fade_out(self) -> None:
        self.guard.fade_out()

    def close(self) -> None:
        """Release the models (a control thread, after a swap)."""
        self.decoder = self.encoder = self.runtime = None

    def reset(self) -> None:
        for rt in (self.decoder, self.encoder):
            if rt is not None:
                rt.reset()

    # -- the audio thread -------------------------------------------------------------

    def next_block(self) -> np.ndarray:
        B, x = self.block_size, self._x
        if self._have >= B:
            x[:] = self._fifo[:B]
            self._drop(B)
        else:  # no input yet (a model played without an input): silence in
            x[: self._have] = self._fifo[: self._have]
            x[self._have:] = 0.0
            self._have = 0
            self.starved += 1
        ctl = self._ctl
        self.bank.fill(ctl)
        self._ramped(x, "_gain", 10.0 ** (float(ctl[self._gain_i, -1]) / 20.0))
        if self.latency:
            self._hist[self.latency:] = x
        dec, enc = self.decoder, self.encoder
        np.copyto(dec.controls, ctl[: self._n])
        if enc is not None:
            np.copyto(enc.audio_in, x)
            enc.step()
            z, zb = self._z, self._zb
            # z = default + scale·(encoded − default) + (control − default): nn~'s scale and
            # bias for a RAVE decoder (defaults 0); held to the control's range, as a knob is.
            # Log controls take the same sum in log (an interval), with no new arrays.
            lg = self._log
            if isinstance(self._lat, slice):
                np.copyto(zb, ctl[self._lat])
            else:
                np.take(ctl, self._lat, axis=0, out=zb)
            np.copyto(z, enc.latent)
            if self._any_log:
                np.maximum(z, 1e-6, out=z, where=lg)
                np.log(z, out=z, where=lg)
                np.maximum(zb, 1e-6, out=zb, where=lg)
                np.log(zb, out=zb, where=lg)
            z -= self._def
            z *= np.float32(ctl[self._scale_i, -1])
            zb -= self._def
            z += zb
            z += self._def
            np.clip(z, self._lo, self._hi, out=z)
            if self._any_log:
                np.exp(z, out=z, where=lg)
            if isinstance(self._lat, slice):
                dec.controls[self._lat] = z
            else:
                for j, i in enumerate(self._lat):  # latents to scattered controls: a row each
                    dec.controls[i] = z[j]
        else:
            np.copyto(dec.audio_in, x)
        dec.step()
        out = self._out
        np.copyto(out, self._audio_t)
        self._mix(out, float(ctl[self._wet_i, -1]))
        if not self.guard.process(self._guard_in):
            self.reset()  # NaN in either model's state never heals by itself
            self.resets += 1
        if self.latency:  # the dry path's delay line moves on a block
            h, L = self._hist, self.latency
            for i in range(0, L, B):  # chunks that never overlap what they are copied from
                k = min(B, L - i)
                h[i:i + k] = h[i + B:i + B + k]
        self.position += B
        return out

    def _ramped(self, x: np.ndarray, attr: str, new: float) -> None:
        """``x *= gain``, ramped from the last block's gain (no zipper noise)."""
        old = getattr(self, attr)
        if old == new == 1.0:
            return
        if old == new:
            x *= np.float32(new)
        else:
            np.multiply(self._lin, np.float32(new - old), out=self._ramp)
            self._ramp += np.float32(old)
            x *= self._ramp
        setattr(self, attr, new)

    def _mix(self, out: np.ndarray, wet: float) -> None:
        """``out = dry + wet·(out − dry)``, wet ramped from the last block's."""
        old = self._wet
        self._wet = wet
        if old == wet == 1.0:
            return
        dry = self._dry
        out -= dry
        if old == wet:
            out *= np.float32(wet)
        else:
            np.multiply(self._lin, np.float32(wet - old), out=self._ramp)
            self._ramp += np.float32(old)
            out *= self._ramp_col
        out += dry
