"""The router: every control source's way into the model.

Live sources (MIDI ports, the UART, knobs) and the ``--events`` timeline call the
same methods, so a test driving events exercises the code a keyboard does. MIDI
bytes go through the one byte-stream parser; note messages go to the mono voice of a
``note`` model, whose envelope is advanced once per block on the audio clock.
"""

from __future__ import annotations

from pi_synth.audio.card import Card
from pi_synth.control.bank import ControlBank
from pi_synth.control.mapping import Mapping
from pi_synth.control.midi.parser import MidiParser
from pi_synth.control.voice import MonoVoice


class Router:
    def __init__(self, card: Card, bank: ControlBank, mapping: Mapping | None = None,
                 voice: MonoVoice | None = None):
        self.card = card
        self.bank = bank
        self.mapping = mapping or Mapping(card)
        names = set(card.control_names)
        self.is_note = {"pitch", "loudness"} <= names
        self.voice = voice if voice is not None else (MonoVoice() if self.is_note else None)
        self._voice_used = False
        self._pitch = bank.index("pitch") if self.is_note else -1
        self._loud = bank.index("loudness") if self.is_note else -1
        self.parser = MidiParser()
        self.block_seconds = card.block_size / card.sample_rate
        self.midi_messages = 0

    # -- sources ----------------------------------------------------------------------

    def set(self, name: str, value: float) -> None:
        self.bank.set(name, value)

    def source(self, name: str, value: float) -> None:
        self.mapping.apply(self.bank, name, value)

    def midi_bytes(self, data) -> None:
        self.parser.feed(data)
        for msg in self.parser:
            self.midi_message(msg)

    def midi_message(self, msg) -> None:
        self.midi_messages += 1
        if self.voice is not None:
            self.voice.handle(msg)
            if msg.type in ("note_on", "note_off", "pitchwheel", "aftertouch"):
                self._voice_used = True

    # -- block hook (audio thread) ----------------------------------------------------

    def on_block(self, position: int) -> None:
        v = self.voice
        if v is None or not self._voice_used:
            return
        v.advance(self.block_seconds)
        self.bank.set_index(self._pitch, v.pitch_hz)
        self.bank.set_index(self._loud, v.loudness_db)
