"""A patch: one model wired to play — its synth (runtime, control bank, output guard),
its mapping and its voice.

The one place these are built, whether for the first model at start, for a model
hot-swapped in, or (the mapping alone) for a config reload, so the three can never
disagree. Everything here is slow (a model loads, warms up and must render a finite
first block) and runs on a control thread; the audio thread only ever receives the
finished synth.

Audio in: asked to (``audio_in``), a model that can take audio is built as a
:class:`~pi_synth.audio.pair.PairSynth` — a decoder with the encoder found beside it
(:func:`~pi_synth.model.library.find_encoder`), or a model whose card has
``inputs.audio``. Which kind, if any, :func:`input_kind` says from the card.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pi_synth.audio.bank import ControlBank
from pi_synth.audio.pair import PairSynth
from pi_synth.audio.safety import OutputGuard
from pi_synth.audio.synth import Synth
from pi_synth.control.mapping import Mapping
from pi_synth.control.played import PlayedControls
from pi_synth.control.voice import MonoVoice
from pi_synth.errors import InputError, ModelError
from pi_synth.model.card import Card
from pi_synth.model.library import find_encoder
from pi_synth.model.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class Patch:
    """A loaded model and what plays it: ``synth`` for the audio path; ``controls`` (the
    model's bank, and for a model played by notes its voice's controls too), ``mapping``
    and ``voice`` for the control path."""

    path: Path
    synth: Synth
    mapping: Mapping
    voice: MonoVoice | None
    controls: object = None  # a ControlTarget: the bank, or PlayedControls(bank, voice)

    @property
    def card(self) -> Card:
        return self.synth.card


def load_runtime(cfg, path) -> Runtime:
    """One model file's runtime, warmed up; its first block must run and be finite."""
    m = cfg.model
    rt = Runtime(path, threads=m.threads, warmup_blocks=max(1, m.warmup_blocks), use_cache=m.cache)
    out = rt.step()  # the first block must run and be finite before we trust it
    if rt.card.latent_output:
        out = rt.latent
    if not np.isfinite(out).all():
        raise ModelError(f"{path}: the model's first block is not finite (NaN/inf); not loading it")
    rt.reset()
    return rt


def input_kind(path, card: Card) -> str | None:
    """What audio in a model takes: ``"encoder"`` (a decoder with its encoder beside it:
    timbre transfer), ``"audio"`` (its card has ``inputs.audio``: an effect), or None."""
    if card.is_encoder:
        return None
    if card.audio_input:
        return "audio"
    return "encoder" if find_encoder(path, card) is not None else None


def no_input_error(path, card: Card) -> InputError:
    """The one line for a model asked to take audio that cannot: what is missing, how to make it."""
    p = Path(path)
    if card.is_encoder:
        return InputError(f"{p}: this is an encoder (audio → latents), not a model to play; play its decoder "
                          "(the file it was written beside) with --input")
    base = p.name
    for suffix in (".fp32.onnx", ".int8.onnx", ".onnx"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return InputError(f"{p}: {card.name} cannot take audio in: no encoder beside it ({base}.encoder.onnx) and "
                      f"no inputs.audio in its card; a RAVE model gets one from 'pi-synth convert rave MODEL.ts "
                      f"-o {base}.onnx' (writes {base}.encoder.onnx beside it)")


def load_synth(cfg, path, *, fade_in: bool = True, audio_in: bool = False) -> Synth | PairSynth:
    """Load ``path`` beside whatever plays: runtime(s), bank, guard. ``audio_in``: build
    it to take audio (an encoder pair or an effect; InputError if it cannot). Raises
    ModelError if a model does not load or its first block is not finite."""
    o = cfg.output
    rt = load_runtime(cfg, path)
    card = rt.card
    if card.is_encoder:
        raise no_input_error(path, card)
    guard = OutputGuard(card.block_size, card.channels, card.sample_rate, fade_ms=o.fade_ms,
                        limit_dbfs=o.limit_dbfs, gain_db=o.gain_db, fade_in=fade_in)
    if not audio_in:
        return Synth(rt, ControlBank(card), guard)
    kind = input_kind(path, card)
    if kind is None:
        raise no_input_error(path, card)
    enc = load_runtime(cfg, find_encoder(path, card)) if kind == "encoder" else None
    if enc is not None and not enc.card.is_encoder:
        raise ModelError(f"{enc.path}: named as {card.name}'s encoder, but its card has no outputs.latent")
    return PairSynth(rt, enc, guard=guard)


def plays_notes(card: Card) -> bool:
    """A model with ``pitch`` and ``loudness`` controls is played from notes (MIDI, CV
    gates): a voice turns keys into those two controls."""
    return {"pitch", "loudness"} <= set(card.control_names)


def make_voice(cfg, card: Card) -> MonoVoice | None:
    """The voice for ``card`` as the config sets it, or None for a model not played by notes
    (nor one played by audio in, whose controls are offsets on what the input says)."""
    if not plays_notes(card) or "audio_in" in card.extra:
        return None
    ch = cfg.midi.channel
    loud = card.control("loudness")
    return MonoVoice(channel=None if ch == 0 else ch - 1, bend_range=cfg.midi.bend_range,
                     floor_db=min(loud.min, loud.max), max_db=max(loud.min, loud.max),
                     attack_ms=cfg.midi.attack_ms, release_ms=cfg.midi.release_ms)


def make_mapping(cfg, controls) -> Mapping:
    """The config's ``[[map]]`` tables for ``controls`` (a ControlTarget and its card; routes
    to controls it lacks are skipped with a warning: another model may have them), their
    smoothing set on it."""
    knobs = controls.knob_controls if isinstance(controls, PlayedControls) else None
    mapping = Mapping.from_config(controls.card, cfg.map, knobs=knobs)
    for w in mapping.skipped:
        log.warning("%s (skipped for model %s)", w, controls.card.name)
    mapping.configure(controls)
    return mapping


def played_controls(bank: ControlBank, voice: MonoVoice | None):
    """What the control path writes for this model: its bank, and its voice's controls if
    it is played by notes."""
    return PlayedControls(bank, voice) if voice is not None else bank


def build_patch(cfg, path, *, fade_in: bool = True, carry: ControlBank | None = None,
                voice: MonoVoice | None = None, audio_in: bool | str = False) -> Patch:
    """Load ``path`` and wire it. ``carry``: the playing model's bank, whose values for the
    controls both models share are kept (a knob's position stays put; a held note keeps
    its pitch and loudness). ``voice``: the playing voice, kept so held notes go on
    sounding (a new one is made if there is none and the model plays notes).
    ``audio_in``: True — play it from the audio input (InputError if it cannot);
    ``"auto"`` — if it can (``pi-synth run`` with a capture device); False — never."""
    if audio_in == "auto":
        from pi_synth.model.card import load_card

        audio_in = input_kind(path, load_card(path)) is not None
    synth = load_synth(cfg, path, fade_in=fade_in, audio_in=bool(audio_in))
    card = synth.card
    if carry is not None:
        for name in card.control_names:
            if name in carry.names:
                synth.bank.set(name, carry.get(name))
    if "audio_in" in card.extra:  # played by audio in: notes do not play it
        voice = None
    else:
        voice = voice if voice is not None and plays_notes(card) else make_voice(cfg, card)
    controls = played_controls(synth.bank, voice)
    return Patch(Path(path), synth, make_mapping(cfg, controls), voice, controls)
