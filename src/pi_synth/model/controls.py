"""What the control path writes: a model's controls, by name or by index.

:class:`ControlTarget` is the seam between the two paths. The audio path's
:class:`~pi_synth.audio.bank.ControlBank` is one (the audio thread reads it once per
block); the control path (router, mapping, presets, MIDI learn, events) only ever calls
these methods, so it never imports the audio path and a test can hand it anything that
has them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pi_synth.model.card import Card


@runtime_checkable
class ControlTarget(Protocol):
    """A model's controls, written from any thread (one float store each, no lock)."""

    card: Card
    names: tuple[str, ...]

    def index(self, name: str) -> int:
        """The control's position; ``KeyError`` naming the model's controls if unknown."""

    def set(self, name: str, value: float) -> None:
        """Set a control in its own units (clamped to its range; NaN ignored)."""

    def set_index(self, i: int, value: float) -> None:
        """:meth:`set` by position (the hot path of a voice)."""

    def get(self, name: str) -> float:
        """The control's current target."""

    def values(self) -> dict[str, float]:
        """Every control's target, by name (presets, status)."""

    def set_smoothing(self, name: str, seconds: float) -> None:
        """Glide the control towards its target with this time constant (0: jump)."""
