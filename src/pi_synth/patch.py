"""A patch: one model wired to play — its synth (runtime, control bank, output guard),
its mapping and its voice.

The one place these are built, whether for the first model at start, for a model
hot-swapped in, or (the mapping alone) for a config reload, so the three can never
disagree. Everything here is slow (a model loads, warms up and must render a finite
first block) and runs on a control thread; the audio thread only ever receives the
finished synth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pi_synth.audio.bank import ControlBank
from pi_synth.audio.safety import OutputGuard
from pi_synth.audio.synth import Synth
from pi_synth.control.mapping import Mapping
from pi_synth.control.played import PlayedControls
from pi_synth.control.voice import MonoVoice
from pi_synth.errors import ModelError
from pi_synth.model.card import Card
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


def load_synth(cfg, path, *, fade_in: bool = True) -> Synth:
    """Load ``path`` beside whatever plays: runtime, bank, guard. Raises ModelError if the
    model does not load or its first block is not finite."""
    m, o = cfg.model, cfg.output
    rt = Runtime(path, threads=m.threads, warmup_blocks=max(1, m.warmup_blocks), use_cache=m.cache)
    audio = rt.step()  # the first block must run and be finite before we trust it
    if not np.isfinite(audio).all():
        raise ModelError(f"{path}: the model's first block is not finite (NaN/inf); not loading it")
    rt.reset()
    card = rt.card
    guard = OutputGuard(card.block_size, card.channels, card.sample_rate, fade_ms=o.fade_ms,
                        limit_dbfs=o.limit_dbfs, gain_db=o.gain_db, fade_in=fade_in)
    return Synth(rt, ControlBank(card), guard)


def plays_notes(card: Card) -> bool:
    """A model with ``pitch`` and ``loudness`` controls is played from notes (MIDI, CV
    gates): a voice turns keys into those two controls."""
    return {"pitch", "loudness"} <= set(card.control_names)


def make_voice(cfg, card: Card) -> MonoVoice | None:
    """The voice for ``card`` as the config sets it, or None for a model not played by notes."""
    if not plays_notes(card):
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
                voice: MonoVoice | None = None) -> Patch:
    """Load ``path`` and wire it. ``carry``: the playing model's bank, whose values for the
    controls both models share are kept (a knob's position stays put; a held note keeps
    its pitch and loudness). ``voice``: the playing voice, kept so held notes go on
    sounding (a new one is made if there is none and the model plays notes)."""
    synth = load_synth(cfg, path, fade_in=fade_in)
    card = synth.card
    if carry is not None:
        for name in card.control_names:
            if name in carry.names:
                synth.bank.set(name, carry.get(name))
    voice = voice if voice is not None and plays_notes(card) else make_voice(cfg, card)
    controls = played_controls(synth.bank, voice)
    return Patch(Path(path), synth, make_mapping(cfg, controls), voice, controls)
