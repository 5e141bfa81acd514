"""MIDI in: one byte-stream parser for DIN, USB and ``--events``, yielding ``mido.Message``.

Transports (UART, ALSA/JACK ports) live beside it, each feeding bytes or messages into the same
note handling (:mod:`pi_synth.control.voice`).
"""

from .parser import MidiParser, MidiTokenizer, ParserStats, parse

__all__ = ["MidiParser", "MidiTokenizer", "ParserStats", "parse"]
