"""Mapping: a physical source (``knob1``, ``cc74``, …) → a model control.

A source yields values in 0..1 (gpiozero's convention). A :class:`Route` turns that
into a control value: optional invert, a sub-range, and the control's own curve
(``lin``/``log``/``exp``). Defaults come from the card: ``knobN`` drives the N-th
control, so a ``latent`` or ``rave`` model has its latents on the knobs.
"""

from __future__ import annotations

from dataclasses import dataclass

from pi_synth.audio.card import Card
from pi_synth.control.bank import ControlBank


@dataclass(frozen=True)
class Route:
    control: str
    lo: float = 0.0  # part of the control's range this source covers, 0..1
    hi: float = 1.0
    invert: bool = False

    def unit(self, x: float) -> float:
        x = min(max(float(x), 0.0), 1.0)
        if self.invert:
            x = 1.0 - x
        return self.lo + (self.hi - self.lo) * x


class Mapping:
    def __init__(self, card: Card, routes: dict[str, Route] | None = None):
        self.card = card
        self.routes: dict[str, Route] = {}
        for i, c in enumerate(card.controls):
            self.routes[f"knob{i + 1}"] = Route(c.name)
        if routes:
            for src, r in routes.items():
                card.control(r.control)  # KeyError naming the controls if wrong
                self.routes[src] = r

    def sources(self) -> list[str]:
        return sorted(self.routes)

    def check(self, source: str) -> Route:
        try:
            return self.routes[source]
        except KeyError:
            raise KeyError(
                f"unknown control source {source!r}; mapped sources are: {', '.join(self.sources())}"
            ) from None

    def apply(self, bank: ControlBank, source: str, value: float) -> None:
        r = self.check(source)
        bank.set_unit(r.control, r.unit(value))
