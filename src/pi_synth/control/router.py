"""The router: every control source's way into the model.

Live sources (MIDI ports, the UART, knobs, CV, OSC) and the ``--events`` timeline call
the same methods, so a test driving events exercises the code a keyboard does:

* ``source(name, value)`` — a 0..1 reading from ``knob1``, ``cc74``, ``cv1``…, through
  the mapping to a model control (unmapped sources are counted and ignored, so a
  stray CC never errors);
* ``midi_bytes(data)`` — raw bytes through the one byte-stream parser, then
  ``midi_message(msg)``: notes, bend and pressure to the voice of a ``note`` model
  (a :class:`~pi_synth.control.voice.MonoVoice`, or a
  :class:`~pi_synth.control.poly.PolyVoice` for a batched one); CC as source ``ccN``;
  program change as the ``program`` action;
* ``action(name, arg)`` — next/previous model, presets, panic, MIDI learn: handed to
  ``on_action`` (set by the app), so the router itself never loads models.

A ``listener`` (MIDI learn) sees every source reading first and may consume it. The
voice's envelope advances once per block on the audio clock in :meth:`on_block` (a
mono voice's pitch and loudness go to the bank; a poly voice writes its voice table).
"""

from __future__ import annotations

import logging
import math
from typing import Callable

from pi_synth.model.card import Card
from pi_synth.model.controls import ControlTarget
from pi_synth.control.mapping import Mapping
from pi_synth.control.midi.parser import MidiParser
from pi_synth.control.played import PlayedControls
from pi_synth.control.poly import PolyVoice
from pi_synth.control.voice import MonoVoice

CV_TAKES_CENTS = 30.0  # a CV that moves this far takes the pitch back from a MIDI key

log = logging.getLogger(__name__)


class Router:
    """Every source's way into the model: readings, MIDI, CV and actions (module docstring)."""

    def __init__(self, card: Card, bank: ControlTarget, mapping: Mapping | None = None,
                 voice: MonoVoice | PolyVoice | None = None):
        self.voice = None
        self._voice_used = False
        self.targets = 0  # models (and mappings) pointed at so far: see retarget
        self.retarget(card, bank, mapping, voice)
        self.parser = MidiParser()
        self.midi_messages = 0
        self.unmapped = 0
        self.on_action: Callable[[str, object], None] | None = None
        self.channel: int | None = None  # 0..15 to listen to one channel, None for all
        self.listener: Callable[[str, float], bool] | None = None
        self.last_source: tuple[str, float] | None = None
        self._cv_hz = 0.0  # 1 V/oct pitch from CV: it plays while it owns the pitch (below)
        self._cv_owns = False  # the last pitch source to move was the CV (not a MIDI key)
        self._cv_anchor = 0.0  # the CV's pitch when a key took the pitch from it
        self.activity = 0  # counts inputs: the activity LED blinks on change

    def retarget(self, card: Card, bank: ControlTarget, mapping: Mapping | None = None,
                 voice: MonoVoice | PolyVoice | None = None) -> None:
        """Point every source at another model (hot swap). A held note keeps sounding
        if the new model is a note model too."""
        names = set(card.control_names)
        # a model played by audio in is not played by notes (its pitch and loudness are
        # offsets on what the input says: a voice's floor between keys would gate the input)
        is_note = {"pitch", "loudness"} <= names and "audio_in" not in card.extra
        # the voice's envelope writes pitch and loudness once a block on the audio thread:
        # straight into the model's bank, not through the played controls around it
        self._notes = bank.bank if isinstance(bank, PlayedControls) else bank
        self._pitch = self._notes.index("pitch") if is_note else -1
        self._loud = self._notes.index("loudness") if is_note else -1
        if voice is not None:
            self.voice = voice
        elif is_note and self.voice is None:
            self.voice = MonoVoice()
        self.card, self.bank = card, bank
        self.mapping = mapping or Mapping(card)
        # a new model (or mapping): absolute sources (knobs) send where they stand again
        self.targets += 1
        self.block_seconds = card.block_size / card.sample_rate
        self.is_note = is_note
        self._poly = isinstance(self.voice, PolyVoice)

    # -- sources ----------------------------------------------------------------------

    def set(self, name: str, value: float) -> None:
        self.activity += 1
        self.bank.set(name, value)

    def source(self, name: str, value: float) -> None:
        self.activity += 1
        self.last_source = (name, value)
        if self.listener is not None and self.listener(name, value):
            return
        if name in self.mapping.routes:
            self.mapping.apply(self.bank, name, value, self)
        else:
            self.unmapped += 1

    def voice_plays(self) -> None:
        """The voice writes pitch and loudness from now on, before its first key (a render
        whose events hold notes); until then a note model sounds at its controls' values."""
        self._voice_used = self.voice is not None

    def midi_bytes(self, data, parser: MidiParser | None = None) -> None:
        """Raw bytes through ``parser`` (default: the router's own): a stream with a
        parser of its own keeps its own running status."""
        p = self.parser if parser is None else parser
        p.feed(data)
        for msg in p:
            self.midi_message(msg)

    def midi_message(self, msg) -> None:
        self.midi_messages += 1
        self.activity += 1
        t = msg.type
        if self.channel is not None and getattr(msg, "channel", self.channel) != self.channel:
            return
        if t == "control_change":
            if self.voice is not None:
                self.voice.handle(msg)  # all-notes-off, all-sound-off, …
            if msg.control < 120:
                self.source(f"cc{msg.control}", msg.value / 127.0)
            return
        if t == "program_change":
            self.action("program", msg.program)
            return
        if self.voice is not None:
            self.voice.handle(msg)
            if t in ("note_on", "note_off", "pitchwheel", "aftertouch"):
                self._voice_used = True
            if t == "note_on" and msg.velocity > 0 and self._cv_owns:  # a key takes the pitch from the CV
                self._cv_owns, self._cv_anchor = False, self._cv_hz

    def action(self, name: str, arg=None) -> None:
        self.activity += 1
        if name == "panic" and self.voice is not None:
            self.voice.panic()
        if self.on_action is not None:
            try:
                self.on_action(name, arg)
            except Exception as e:  # an action must never take the controls down
                log.warning("action %s failed: %s", name, e)

    def cv_pitch(self, hz: float) -> None:
        """1 V/oct CV: the pitch follows the voltage, unquantized — while the CV owns the pitch.
        The last source to move wins: a MIDI key takes the pitch (a patched but idle CV jack
        made the keyboard play one note), and the CV takes it back when it moves by more
        than :data:`CV_TAKES_CENTS` (its noise does not) or its gate opens."""
        self.activity += 1
        self._cv_hz = hz
        if not self._cv_owns and hz > 0 and (
                self._cv_anchor <= 0 or abs(1200.0 * math.log2(hz / self._cv_anchor)) > CV_TAKES_CENTS):
            self._cv_owns = True
        if self.is_note and self._cv_owns:
            if self.voice is None or not self._voice_used:
                self._notes.set_index(self._pitch, hz)

    def cv_gate(self, on: bool) -> None:
        """A gate opens and closes the voice's envelope (note 60 stands in for the CV pitch)."""
        import mido

        self.activity += 1
        if on and self._cv_hz > 0:
            self._cv_owns = True  # the rig's gate plays the rig's pitch
        if self.voice is not None:
            msg = mido.Message("note_on" if on else "note_off", note=60, velocity=100 if on else 0)
            self.voice.handle(msg)
            self._voice_used = True

    # -- block hook (audio thread) ----------------------------------------------------

    def on_block(self, position: int) -> None:
        v = self.voice
        if v is None or not self._voice_used or not self.is_note:
            return
        cv = self._cv_hz if self._cv_owns else 0.0
        if self._poly:  # it writes its voice table; the synth reads it right after
            v.override_hz = cv
            v.advance(self.block_seconds)
            return
        v.advance(self.block_seconds)
        notes = self._notes
        notes.set_index(self._pitch, cv or v.pitch_hz)
        notes.set_index(self._loud, v.loudness_db)
