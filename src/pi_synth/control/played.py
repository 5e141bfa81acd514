"""A played model's controls: the model's own, and its voice's (envelope, glide, octave).

A model played by notes has a voice between the keys and its ``pitch``/``loudness``
controls; how that voice plays — attack, release, glide, octave — is as much the
instrument's sound as a timbre control in the graph. :class:`PlayedControls` puts both in
one namespace behind the :class:`~pi_synth.model.controls.ControlTarget` interface, so
knobs, MIDI CC, OSC, MIDI learn and presets reach the voice's controls exactly as they
reach the model's: its :attr:`card` is the model's card with the voice's controls added
after the timbre controls (so the default knobs turn timbre first, then the voice; the
keys, not a knob, play pitch and loudness).
The audio thread never goes through it: the voice's envelope still writes the model's
bank directly.
"""

from __future__ import annotations

from dataclasses import replace

from pi_synth.control.voice import VOICE_CONTROLS
from pi_synth.model.card import Card, Control
from pi_synth.model.controls import ControlTarget


def played_card(card: Card, voice) -> Card:
    """``card`` with the voice's controls (those the model lacks) before pitch and loudness,
    their defaults the voice's current settings."""
    own = set(card.control_names)
    extra = tuple(replace(c, default=c.clamp(voice.param(c.name))) for c in VOICE_CONTROLS if c.name not in own)
    timbre = tuple(c for c in card.controls if c.name not in ("pitch", "loudness"))
    played = tuple(c for c in card.controls if c.name in ("pitch", "loudness"))
    return replace(card, controls=timbre + extra + played)


class PlayedControls:
    """The model's bank and its voice's controls as one :class:`ControlTarget`."""

    def __init__(self, bank: ControlTarget, voice):
        self.bank, self.voice = bank, voice
        self.card = played_card(bank.card, voice)
        self.names = self.card.control_names
        self._own = bank.names
        self._voice = {c.name: c for c in self.card.controls if c.name not in self._own}

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(
                f"model {self.card.name!r} has no control {name!r}; its controls are: " + ", ".join(self.names)
            ) from None

    def set(self, name: str, value: float) -> None:
        c = self._voice.get(name)
        if c is None:
            self.bank.set(name, value)
            return
        v = float(value)
        if v == v:  # NaN never reaches the voice
            self.voice.set_param(name, c.clamp(v))

    def set_index(self, i: int, value: float) -> None:
        self.set(self.names[i], value)

    def get(self, name: str) -> float:
        if name in self._voice:
            return float(self.voice.param(name))
        return self.bank.get(name)

    def values(self) -> dict[str, float]:
        return {n: self.get(n) for n in self.names}

    def set_smoothing(self, name: str, seconds: float) -> None:
        if name not in self._voice:  # the voice's controls take effect at once
            self.bank.set_smoothing(name, seconds)

    @property
    def voice_controls(self) -> tuple[Control, ...]:
        return tuple(self._voice.values())

    @property
    def knob_controls(self) -> tuple[str, ...]:
        """What the knobs turn by default: the timbre controls, then the voice's — never
        ``pitch`` or ``loudness``, which the keys play (a pot left half-way up would hold a
        note droning before any key is pressed); a ``[[map]]`` can still give them a knob."""
        return tuple(n for n in self.names if n not in ("pitch", "loudness"))
