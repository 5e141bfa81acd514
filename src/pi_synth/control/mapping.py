"""Mapping: a physical source (``knob1``, ``cc74``, ``cv1``, ``enc1``…) → a model
control or an action.

A source yields values in 0..1 (gpiozero's convention). A :class:`Route` turns that
into a control value in small steps that compose: optional invert → a sub-range
(``min``..``max`` as fractions of the control's range) → a curve (the card's own, or
``lin``/``log``/``exp``) → the control's units. An action route fires when its source
rises past 0.5 (a CC button, a gate).

Defaults come from the card: ``knobN`` drives the N-th control (a ``latent`` or
``rave`` model gets its latents on the knobs; a ``note`` model's pitch and loudness
come from MIDI notes, so its knobs start at its timbre controls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from pi_synth.model.card import Card, Control
from pi_synth.model.controls import ControlTarget
from pi_synth.errors import ConfigError

ACTIONS = ("next_model", "prev_model", "program", "preset_recall", "preset_save", "panic", "learn")


@dataclass(frozen=True)
class Route:
    """How one source drives one control (range, curve, invert, smoothing) or an action."""

    control: str = ""
    lo: float = 0.0  # part of the control's range this source covers, 0..1
    hi: float = 1.0
    invert: bool = False
    curve: str = ""  # "" = the card's curve
    action: str = ""
    arg: int = 0
    smooth_ms: float = 0.0

    def unit(self, x: float) -> float:
        x = min(max(float(x), 0.0), 1.0)
        if self.invert:
            x = 1.0 - x
        return self.lo + (self.hi - self.lo) * x

    def value(self, ctl: Control, x: float) -> float:
        u = self.unit(x)
        curve = self.curve or ctl.curve
        if curve == ctl.curve:
            return ctl.from_unit(u)
        if curve == "log" and ctl.min > 0 and ctl.max > 0:
            return ctl.min * (ctl.max / ctl.min) ** u
        if curve == "exp":
            u = u * u
        return ctl.min + (ctl.max - ctl.min) * u


def default_routes(card: Card, knobs: tuple[str, ...] | None = None) -> dict[str, Route]:
    """``knobN`` → the N-th of ``knobs`` (control names), or by default of the card's controls
    (a note model's timbre controls first: MIDI plays its pitch and loudness)."""
    if knobs is not None:
        return {f"knob{i + 1}": Route(name) for i, name in enumerate(knobs)}
    controls = list(card.controls)
    if {"pitch", "loudness"} <= set(card.control_names) and len(controls) > 2:
        # a note model plays from MIDI notes: knobs go to its timbre controls first
        controls = [c for c in controls if c.name not in ("pitch", "loudness")] + [
            c for c in controls if c.name in ("pitch", "loudness")
        ]
    return {f"knob{i + 1}": Route(c.name) for i, c in enumerate(controls)}


class Mapping:
    """Source name → :class:`Route` for one model: the card's defaults, then the config's."""

    def __init__(self, card: Card, routes: dict[str, Route] | None = None, *,
                 knobs: tuple[str, ...] | None = None):
        self.card = card
        self.routes: dict[str, Route] = default_routes(card, knobs)
        self._armed: dict[str, bool] = {}
        if routes:
            for src, r in routes.items():
                self.add(src, r)

    def add(self, source: str, route: Route) -> None:
        self.check_route(route)
        self.routes[source] = route

    def check_route(self, route: Route) -> None:
        """``ConfigError`` for an unknown action, ``KeyError`` naming the controls for a
        control this model lacks."""
        if route.action:
            if route.action not in ACTIONS:
                raise ConfigError(f"unknown action {route.action!r}; choose one of: {', '.join(ACTIONS)}")
        else:
            self.card.control(route.control)  # KeyError naming the controls if wrong

    def configure(self, bank: ControlTarget) -> None:
        """Apply the routes' smoothing times to the bank they drive."""
        for r in self.routes.values():
            if r.control and r.smooth_ms > 0:
                bank.set_smoothing(r.control, r.smooth_ms / 1000.0)

    @classmethod
    def from_config(cls, card: Card, items, where: str = "config", *,
                    knobs: tuple[str, ...] | None = None) -> "Mapping":
        """Build from ``[[map]]`` items (over the default knobs, ``knobs`` if given); a route
        naming a control the model lacks is skipped with a warning (another model may have
        it), anything else is an error."""
        m = cls(card, knobs=knobs)
        m.skipped: list[str] = []  # routes to controls this model lacks (another may have them)
        m.notes: list[str] = []  # routes that play, but not as written
        for it in items:
            w = getattr(it, "_where", where)
            if not it.source:
                raise ConfigError(f"{w}: [[map]] needs a 'source' (knob1, cc74, cv1, …)")
            if bool(it.control) == bool(it.action):
                raise ConfigError(f"{w}: [[map]] for {it.source!r} needs either 'control' or 'action'")
            route = Route(control=it.control, lo=it.min, hi=it.max, invert=it.invert,
                          curve=it.curve, action=it.action, smooth_ms=it.smooth_ms)
            try:
                m.add(it.source, route)
            except KeyError as e:
                m.skipped.append(f"{w}: {e.args[0]}")
                continue
            ctl = card.control(route.control) if route.control else None
            if route.curve == "log" and ctl is not None and not (ctl.min > 0 and ctl.max > 0):
                m.notes.append(f"{w}: [[map]] curve = \"log\" needs a range above 0, and {ctl.name}'s is "
                               f"{ctl.min:g}..{ctl.max:g}: {it.source} moves it linearly (curve = \"exp\" eases in)")
        return m

    def sources(self) -> list[str]:
        return sorted(self.routes)

    def check(self, source: str) -> Route:
        try:
            return self.routes[source]
        except KeyError:
            raise KeyError(
                f"unknown control source {source!r}; mapped sources are: {', '.join(self.sources())}"
            ) from None

    def apply(self, bank: ControlTarget, source: str, value: float, router=None) -> None:
        r = self.check(source)
        if not math.isfinite(value):
            return
        if r.action:
            up = value >= 0.5
            if up and not self._armed.get(source, False) and router is not None:
                router.action(r.action, r.arg)
            self._armed[source] = up
            return
        bank.set(r.control, r.value(self.card.control(r.control), value))


# -- routes as JSON (learn.json, presets) ---------------------------------------------


def route_to_json(route: Route) -> dict:
    """The route's fields that differ from their defaults (so files stay short and an
    older pi-synth can read what it knows)."""
    return {f.name: getattr(route, f.name) for f in fields(Route)
            if getattr(route, f.name) != f.default}


def _field_value(name: str, default, v, where: str):
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise ConfigError(f"{where}: key '{name}' must be true or false, got {v!r}")
        return v
    if isinstance(default, (int, float)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{where}: key '{name}' must be a number, got {v!r}")
        if isinstance(default, int) and not isinstance(default, float):
            if not float(v).is_integer():
                raise ConfigError(f"{where}: key '{name}' must be an integer, got {v!r}")
            return int(v)
        return float(v)
    if not isinstance(v, str):
        raise ConfigError(f"{where}: key '{name}' must be a string, got {v!r}")
    return v


def route_from_json(d, where: str = "route") -> Route:
    """Inverse of :func:`route_to_json`; a bare string is a control name. Unknown keys
    (from a newer pi-synth) are ignored; wrong types raise ``ConfigError``."""
    if isinstance(d, str):
        d = {"control": d}
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: a route must be {{\"control\": NAME, …}}, got {d!r}")
    known = {f.name: f.default for f in fields(Route)}
    kw = {k: _field_value(k, known[k], v, where) for k, v in d.items() if k in known}
    for key in ("lo", "hi"):
        if key in kw and not 0.0 <= kw[key] <= 1.0:
            raise ConfigError(f"{where}: key '{key}' must be in range 0..1, got {kw[key]!r}")
    if not kw.get("control") and not kw.get("action"):
        raise ConfigError(f"{where}: a route needs a 'control' (or an 'action')")
    if kw.get("control") and kw.get("action"):
        raise ConfigError(f"{where}: a route drives a 'control' or an 'action', not both")
    if kw.get("action") and kw["action"] not in ACTIONS:
        raise ConfigError(f"{where}: unknown action {kw['action']!r}; choose one of: {', '.join(ACTIONS)}")
    if not 0 <= kw.get("arg", 0) <= 127:
        raise ConfigError(f"{where}: key 'arg' (a program or preset slot) must be in range 0..127, got {kw['arg']!r}")
    return Route(**kw)


def route_fits(route: Route, control_names) -> bool:
    """Can this route be used with a model that has these controls?"""
    return bool(getattr(route, "action", "")) or route.control in control_names


def routes_to_json(routes: dict[str, Route]) -> dict[str, dict]:
    return {src: route_to_json(r) for src, r in routes.items()}


def routes_from_json(d, where: str = "mapping") -> dict[str, Route]:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: must be an object mapping source names to routes")
    return {str(src): route_from_json(r, f"{where}: source {src!r}") for src, r in d.items()}
