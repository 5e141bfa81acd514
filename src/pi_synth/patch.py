"""A patch: one model wired to play — its synth (runtime, control bank, output guard),
its mapping and its voice.

The one place these are built, whether for the first model at start, for a model
hot-swapped in, or (the mapping alone) for a config reload, so the three can never
disagree. Everything here is slow (a model loads, warms up and must render a finite
first block) and runs on a control thread; the audio thread only ever receives the
finished synth.

A batched note model (card ``voices`` > 1) is played by a
:class:`~pi_synth.control.poly.PolyVoice` over a
:class:`~pi_synth.model.voices.VoiceTable` the synth reads, with as many voices as the
**voice budget** allows: ``[voice] max_voices`` (0 = the file's), and never more than
render a block within the engine's allowance on this machine (:func:`voice_budget`).
``[voice] mode = "mono"`` or ``max_voices = 1`` plays it as a mono voice on one row.

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
from pi_synth.audio.engine import DIRECT_MAX_RTF, direct_periods
from pi_synth.audio.synth import Synth
from pi_synth.control.mapping import Mapping
from pi_synth.control.played import PlayedControls
from pi_synth.control.poly import PolyVoice
from pi_synth.control.voice import MonoVoice
from pi_synth.errors import InputError, ModelError
from pi_synth.model.card import Card, load_card
from pi_synth.model.library import find_encoder
from pi_synth.model.runtime import Runtime
from pi_synth.model.voices import VoiceTable, block_curve, fit

log = logging.getLogger(__name__)


@dataclass
class Patch:
    """A loaded model and what plays it: ``synth`` for the audio path; ``controls`` (the
    model's bank, and for a model played by notes its voice's controls too), ``mapping``
    and ``voice`` for the control path."""

    path: Path
    synth: Synth
    mapping: Mapping
    voice: MonoVoice | PolyVoice | None
    controls: object = None  # a ControlTarget: the bank, or PlayedControls(bank, voice)

    @property
    def card(self) -> Card:
        return self.synth.card


THREADED_MAX_RTF = 0.5  # the threaded engine's allowance per block, for voices: half real time


def load_runtime(cfg, path, rows: int = 1) -> Runtime:
    """One model file's runtime, warmed up; its first block must run and be finite."""
    m = cfg.model
    rt = Runtime(path, threads=m.threads, warmup_blocks=max(1, m.warmup_blocks), use_cache=m.cache, rows=rows)
    out = rt.step()  # the first block must run and be finite before we trust it
    if rt.card.latent_output:
        out = rt.latent
    if not np.isfinite(out).all():
        raise ModelError(f"{path}: the model's first block is not finite (NaN/inf) at its card's default "
                         "controls and zero state; not loading it: check the model's export, or give the card "
                         "defaults the model accepts (pi-synth card MODEL --set controls.0.default=…)")
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
    from pi_synth.model.library import missing_encoder

    if why := missing_encoder(p, card):
        return InputError(why)
    base = p.name
    for suffix in (".fp32.onnx", ".int8.onnx", ".onnx"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    if card.kind == "note" or card.kind not in ("rave", "latent") and "rave" not in (card.source or "").lower():
        # a voice made to be played (notes, knobs): no RAVE conversion would give it an encoder
        return InputError(f"{p}: {card.name} is played by its controls and takes no audio in; play it with "
                          f"--midi/--events, or play audio through a model with an encoder (morph, or your own "
                          f"RAVE model converted with 'pi-synth convert rave MODEL.ts -o NAME.onnx')")
    return InputError(f"{p}: {card.name} cannot take audio in: no encoder beside it ({base}.encoder.onnx) and "
                      f"no inputs.audio in its card; a RAVE model gets one from 'pi-synth convert rave MODEL.ts "
                      f"-o {base}.onnx' (writes {base}.encoder.onnx beside it)")


def load_synth(cfg, path, *, fade_in: bool = True, table: VoiceTable | None = None,
               offline: bool = False, audio_in: bool = False) -> Synth | PairSynth:
    """Load ``path`` beside whatever plays: runtime, bank, guard (and for a batched note
    model its voice table: ``table`` to keep the playing one, else a new one). ``audio_in``:
    build it to take audio (an encoder pair or an effect; InputError if it cannot). Raises
    ModelError if the model does not load or its first block is not finite."""
    o = cfg.output
    card = load_card(path)
    if card.is_encoder:
        raise no_input_error(path, card)
    rows = 1 if audio_in else voice_rows(cfg, card)
    rt = load_runtime(cfg, path, rows)
    card = rt.card
    guard = OutputGuard(card.block_size, card.channels, card.sample_rate, fade_ms=o.fade_ms,
                        limit_dbfs=o.limit_dbfs, gain_db=o.gain_db, fade_in=fade_in)
    if audio_in:
        kind = input_kind(path, card)
        if kind is None:
            raise no_input_error(path, card)
        enc = load_runtime(cfg, find_encoder(path, card)) if kind == "encoder" else None
        if enc is not None and not enc.card.is_encoder:
            raise ModelError(f"{enc.path}: named as {card.name}'s encoder, but its card has no outputs.latent")
        return PairSynth(rt, enc, guard=guard)
    if rows == 1:
        return Synth(rt, ControlBank(card), guard)
    budget, block_s, allowed_s = voice_budget(cfg, rt, offline=offline)
    if table is None or table.rows != rows:
        table = VoiceTable(rows)
    table.budget = budget
    synth = Synth(rt, ControlBank(card), guard, voices=table)
    if not offline:  # live: calls that keep overrunning the allowance lower the budget
        synth.voice_rtf = block_s / (card.block_size / card.sample_rate)
        synth.voice_allowed_s = allowed_s
    return synth


def voice_rows(cfg, card: Card) -> int:
    """Rows to make room for: 1 (a mono voice) unless ``card`` is a batched note model
    played polyphonically; then ``[voice] max_voices`` or, when 0, the card's ``voices``."""
    v = cfg.voice
    if card.voices <= 1 or not plays_notes(card) or v.mode == "mono":
        return 1
    return min(card.voices, v.max_voices or card.voices)


def voice_budget(cfg, rt: Runtime, *, offline: bool = False) -> tuple[int, float, float]:
    """(voices, block seconds at that many, the allowance) for a batched note model here: the most whose
    block renders within the engine's allowance — the direct engine's (a quarter of the
    margin the configured buffer leaves, as ``engine = "auto"`` picks it), or when even one
    voice does not fit there, half real time for the threaded engine. A ``max_voices`` the
    config names is a cap on top; offline (``pi-synth render``) it is played as asked (all
    the file plays when nothing is asked), since nothing there can miss a deadline — and a
    render must not depend on the machine's speed."""
    card, a = rt.card, cfg.audio
    asked = cfg.voice.max_voices
    if offline:
        n = min(asked, rt.rows) if asked else rt.rows
        return n, float("nan"), float("inf")
    curve = block_curve(rt, use_cache=cfg.model.cache)
    block = card.block_size
    block_s = block / card.sample_rate

    def direct(s: float) -> bool:
        return direct_periods(s / block_s, block, a.period, DIRECT_MAX_RTF) <= a.periods

    if a.engine != "threaded" and direct(curve[0]):
        # direct_periods' rule solved for the block time: a quarter of the buffer's margin
        allowed = DIRECT_MAX_RTF * a.period * (a.periods - 1) / card.sample_rate
        rule = f"the direct engine allows {1e3 * allowed:.2f} ms per block on {a.period}×{a.periods}"
    else:
        allowed = THREADED_MAX_RTF * block_s
        rule = f"the threaded engine allows {1e3 * allowed:.2f} ms per block"
    n = fit(curve, allowed)
    if asked and asked < n:
        n = asked
    elif asked and asked > n:
        log.warning("%s: max_voices %d → %d: a block of %d voices renders in %.2f ms on this machine, "
                    "more than %s (beyond %d voices, a new note steals one)", card.name, asked, n,
                    asked, 1e3 * curve[min(asked, rt.rows) - 1], rule, n)
    log.info("%s: %d voice%s (a block of %d renders in %.2f ms here; one in %.2f ms)", card.name, n,
             "s" if n != 1 else "", n, 1e3 * curve[n - 1], 1e3 * curve[0])
    return n, curve[n - 1], allowed


def plays_notes(card: Card) -> bool:
    """A model with ``pitch`` and ``loudness`` controls is played from notes (MIDI, CV
    gates): a voice turns keys into those two controls."""
    return {"pitch", "loudness"} <= set(card.control_names)


def make_voice(cfg, card: Card, table: VoiceTable | None = None) -> MonoVoice | PolyVoice | None:
    """The voice for ``card`` as the config sets it, or None for a model not played by
    notes (nor one played by audio in, whose controls are offsets on what the input says):
    a :class:`PolyVoice` over ``table`` for a batched one, else a :class:`MonoVoice`."""
    if not plays_notes(card) or "audio_in" in card.extra:
        return None
    ch = cfg.midi.channel
    loud = card.control("loudness")
    floor_db, max_db = min(loud.min, loud.max), max(loud.min, loud.max)
    if table is not None:
        v = cfg.voice
        return PolyVoice(table, mode=v.mode, steal=v.steal, channel=None if ch == 0 else ch - 1,
                         bend_range=cfg.midi.bend_range, mpe_bend_range=v.mpe_bend_range,
                         pressure_db=v.pressure_db, floor_db=floor_db, max_db=max_db,
                         attack_ms=cfg.midi.attack_ms, release_ms=cfg.midi.release_ms,
                         fade_ms=v.steal_fade_ms, block_seconds=card.block_size / card.sample_rate)
    return MonoVoice(channel=None if ch == 0 else ch - 1, bend_range=cfg.midi.bend_range,
                     floor_db=floor_db, max_db=max_db,
                     attack_ms=cfg.midi.attack_ms, release_ms=cfg.midi.release_ms)


def take_over_notes(bank: ControlBank, card: Card, playing, voice) -> None:
    """A new voice taking over from ``playing`` in a hot swap (mono to poly, or back): the
    keys held go on sounding in it, and the bank's pitch and loudness — the old voice's
    output, carried like knob positions — go back to the card's defaults, or a batched
    model not yet engaged would drone at them, deaf to the note-off that went to the new
    voice (found: organ → flute with a key down)."""
    import mido

    for name in ("pitch", "loudness"):
        if name in card.control_names:
            bank.set(name, card.control(name).default)
    if playing is None:
        return
    for channel, note, velocity in playing.held_notes():
        voice.handle(mido.Message("note_on", channel=channel, note=note, velocity=velocity))


def make_mapping(cfg, controls) -> Mapping:
    """The config's ``[[map]]`` tables for ``controls`` (a ControlTarget and its card; routes
    to controls it lacks are skipped with a warning: another model may have them), their
    smoothing set on it."""
    knobs = controls.knob_controls if isinstance(controls, PlayedControls) else None
    mapping = Mapping.from_config(controls.card, cfg.map, knobs=knobs)
    for w in mapping.skipped:
        log.warning("%s (skipped for model %s)", w, controls.card.name)
    for w in mapping.notes:
        log.warning("%s", w)
    mapping.configure(controls)
    return mapping


def played_controls(bank: ControlBank, voice: MonoVoice | PolyVoice | None):
    """What the control path writes for this model: its bank, and its voice's controls if
    it is played by notes."""
    return PlayedControls(bank, voice) if voice is not None else bank


def build_patch(cfg, path, *, fade_in: bool = True, carry: ControlBank | None = None,
                voice: MonoVoice | PolyVoice | None = None, offline: bool = False,
                audio_in: bool | str = False) -> Patch:
    """Load ``path`` and wire it. ``carry``: the playing model's bank, whose values for the
    controls both models share are kept (a knob's position stays put; a held note keeps
    its pitch and loudness). ``voice``: the playing voice, kept so held notes go on
    sounding when the new model is played the same way (mono, or poly with as many rows
    and the same block) — else a new one. ``offline``: a render (the voice budget is
    not capped by this machine's speed when ``max_voices`` names one). ``audio_in``: True
    — play it from the audio input (InputError if it cannot); ``"auto"`` — if it can
    (``pi-synth run`` with a capture device); False — never."""
    if audio_in == "auto":
        audio_in = input_kind(path, load_card(path)) is not None
    keep = None
    if isinstance(voice, PolyVoice):
        card = load_card(path)
        if voice_rows(cfg, card) == voice.table.rows and card.block_size / card.sample_rate == voice.block_seconds:
            keep = voice.table
    synth = load_synth(cfg, path, fade_in=fade_in, table=keep, offline=offline, audio_in=bool(audio_in))
    card = synth.card
    if carry is not None:
        for name in card.control_names:
            if name in carry.names:
                synth.bank.set(name, carry.get(name))
    playing = voice
    if "audio_in" in card.extra:  # played by audio in: notes do not play it
        voice = None
    elif synth.voices is not None:
        voice = voice if keep is not None and synth.voices is keep else make_voice(cfg, card, synth.voices)
    elif not (isinstance(voice, MonoVoice) and plays_notes(card)):
        voice = make_voice(cfg, card)
    if voice is not None and voice is not playing:
        take_over_notes(synth.bank, card, playing, voice)
    controls = played_controls(synth.bank, voice)
    return Patch(Path(path), synth, make_mapping(cfg, controls), voice, controls)
