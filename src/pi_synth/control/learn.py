"""MIDI learn: arm a model control, move a knob or a CC, and that source now drives it.

Wiring (done by the app)::

    learn = MidiLearn(router.mapping)
    learn.load()                      # re-apply saved bindings; returns the ones skipped
    router.listener = learn.listener  # sees every source reading before the mapping

and the ``learn`` action calls :meth:`MidiLearn.on_action` with the action's argument.

The UX, for a panel with one button and for OSC:

* ``learn`` with a control name (OSC ``/pi-synth/action/learn brightness``) arms that
  control;
* ``learn`` with no argument (a button press) arms the *next* control in the card's
  order after the one last targeted (the first control at first): press the learn
  button N times to reach the N-th control; the status shows :attr:`MidiLearn.target`;
* ``learn N`` (a number, e.g. a mapped button's ``arg``) arms the N-th control; 0 is
  the same as no argument;
* ``learn cancel`` (or :meth:`cancel`, or :attr:`timeout` seconds without a bind) leaves
  learn mode.

While armed, every source reading is consumed (the sound does not jump while you look
for the right knob). A source binds only when it *moves*: by more than ``threshold``
(0..1) away from its reading when learn mode began, or from its first reading after
that. A noisy knob or a CC at rest never binds. The binding replaces that source's
route (``mapping.routes[source] = Route(control)``), is saved atomically to
``store_path`` (default ``state_dir()/learn.json``) and ends learn mode.

Saved bindings are kept for every model: learning on one model does not forget what was
learned on another; :meth:`load`/:meth:`attach` apply those whose control the current
model has, and report the rest.

Threads: sources call :meth:`listener` from their own threads (MIDI reader, poller,
OSC); a lock serializes the armed path. It never runs on the audio thread.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Callable

from pi_synth.control.mapping import Mapping, Route, route_fits, routes_from_json, routes_to_json
from pi_synth.errors import ConfigError
from pi_synth.state import atomic_write_json, read_json, state_dir

log = logging.getLogger(__name__)

FORMAT = 1
CANCEL_WORDS = ("cancel", "off", "stop", "")
MAX_SOURCES = 4096  # remembered source positions (OSC can invent names without end)

__all__ = ["MidiLearn"]


# -- the state machine ----------------------------------------------------------------


class MidiLearn:
    """Learn mode for one :class:`~pi_synth.control.mapping.Mapping`.

    ``threshold``: how far (0..1) a source must move to bind. ``timeout``: seconds armed
    without a bind before learn mode cancels itself (checked whenever a reading arrives
    or :attr:`armed` is read: no timer thread). ``on_bind(source, control)`` is called
    after each bind (log, LED, OSC feedback).
    """

    def __init__(self, mapping: Mapping, store_path: str | os.PathLike | None = None, *,
                 threshold: float = 0.05, timeout: float = 30.0,
                 on_bind: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be in range 0..1 (exclusive)")
        self.mapping = mapping
        self._store_path = Path(store_path) if store_path is not None else None
        self.threshold = float(threshold)
        self.timeout = float(timeout)
        self.on_bind = on_bind
        self._clock = clock
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self.bindings: dict[str, Route] = {}  # every learned source, for every model
        self.target: str | None = None  # the armed control
        self.last_target: str | None = None
        self._deadline = 0.0
        self._last: dict[str, float] = {}  # latest reading of each source
        self._base: dict[str, float] = {}  # readings when learn mode began
        self._previous: dict[str, Route | None] = {}  # routes a bind replaced (for forget)
        self.binds = 0
        self.save_errors = 0
        self.error: str | None = None  # last load/save problem, one line

    @property
    def store_path(self) -> Path:
        if self._store_path is None:
            self._store_path = state_dir() / "learn.json"
        return self._store_path

    # -- learn mode -------------------------------------------------------------------

    @property
    def armed(self) -> bool:
        if self.target is not None and self._clock() >= self._deadline:
            with self._lock:
                self._expire()
        return self.target is not None

    def _expire(self) -> None:
        if self.target is not None and self._clock() >= self._deadline:
            log.info("MIDI learn for %r timed out after %g s", self.target, self.timeout)
            self.target = None

    def arm(self, control: str | None = None) -> str:
        """Enter learn mode for ``control``, or for the next control after the last
        targeted one (card order, wrapping). Returns the armed control; ``KeyError``
        naming the model's controls if there is no such control."""
        names = list(self.mapping.card.control_names)
        if not names:
            raise KeyError(f"model {self.mapping.card.name!r} has no controls to learn")
        if control is None:
            last = self.last_target
            control = names[(names.index(last) + 1) % len(names)] if last in names else names[0]
        else:
            self.mapping.card.control(control)  # KeyError listing the controls
        with self._lock:
            self.target = control
            self.last_target = control
            self._deadline = self._clock() + self.timeout
            self._base = dict(self._last)
        log.info("MIDI learn: move a knob or a controller to bind it to %r", control)
        return control

    def cancel(self) -> None:
        with self._lock:
            self.target = None

    def on_action(self, arg=None) -> str | None:
        """The ``learn`` action: None or 0 → the next control (a button press), a name →
        that control, N ≥ 1 → the N-th control (a route's ``arg``), ``"cancel"``/
        ``"off"``/``""`` → leave learn mode. Returns the armed control."""
        if isinstance(arg, str):
            if arg.strip().lower() in CANCEL_WORDS:
                self.cancel()
                return None
            return self.arm(arg.strip())
        if arg is None or arg == 0:
            return self.arm(None)
        names = self.mapping.card.control_names
        if (isinstance(arg, bool) or not isinstance(arg, (int, float)) or not math.isfinite(arg)
                or arg != int(arg) or not 1 <= arg <= len(names)):
            raise ValueError(f"learn takes a control name or a number in range 1..{len(names)}, "
                             f"got {arg!r}")
        return self.arm(names[int(arg) - 1])

    def listener(self, name: str, value: float) -> bool:
        """The router's listener: True (consumed) while armed."""
        try:
            v = float(value)
        except (TypeError, ValueError):
            return self.target is not None
        if self.target is None:  # the fast path: remember where every source is
            if math.isfinite(v) and (name in self._last or len(self._last) < MAX_SOURCES):
                self._last[name] = v
            return False
        with self._lock:
            self._expire()
            if self.target is None:
                return False
            if not math.isfinite(v):
                return True
            self._last[name] = v
            base = self._base.setdefault(name, v)
            if abs(v - base) <= self.threshold:
                return True
            control = self.target
            self.target = None
            self._set(name, Route(control))
        log.info("MIDI learn: %s → %s", name, control)
        self.save()
        if self.on_bind is not None:
            try:
                self.on_bind(name, control)
            except Exception as e:  # feedback must never take a source down
                log.warning("MIDI learn feedback failed: %s", e)
        return True

    def _set(self, source: str, route: Route) -> None:
        """Bind (lock held): the route replaces the source's, remembered for :meth:`forget`."""
        self._previous.setdefault(source, self.mapping.routes.get(source))
        self.mapping.routes[source] = route
        self.bindings[source] = route
        self.binds += 1

    def bind(self, source: str, route: Route) -> bool:
        """Bind ``source`` to ``route`` as if it had been learned (the web page's mapping
        editor): kept for every model and saved. ``KeyError``/``ConfigError`` if the
        current model has no such control or there is no such action."""
        self.mapping.check_route(route)
        with self._lock:
            self._set(source, route)
        return self.save()

    # -- persistence ------------------------------------------------------------------

    def save(self) -> bool:
        """Write every binding atomically; on failure log, count, keep them in memory."""
        with self._save_lock:  # one writer at a time, each writing the latest snapshot
            with self._lock:
                doc = {"format": FORMAT, "bindings": routes_to_json(self.bindings)}
            try:
                self.store_path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(self.store_path, doc)
            except (OSError, ConfigError) as e:
                self._save_failed(e)
                return False
        return True

    def _save_failed(self, e: Exception) -> None:
        self.save_errors += 1
        where = self._store_path or "the state directory"
        self.error = f"{where}: cannot save MIDI-learn bindings ({e})"
        log.warning("%s", self.error)

    def load(self) -> list[str]:
        """Read the saved bindings and apply them to :attr:`mapping`.

        Returns ``"source→control"`` for each binding skipped because the current model
        has no such control. A corrupt file is logged, moved aside to ``*.corrupt`` (so
        the next save does not destroy the evidence) and learning starts afresh.
        """
        path = self.store_path
        try:
            doc = read_json(path, {"format": FORMAT, "bindings": {}})
            if not isinstance(doc, dict):
                raise ConfigError(f"{path}: must be a JSON object")
            bindings = routes_from_json(doc.get("bindings", {}), f"{path}: key 'bindings'")
        except ConfigError as e:
            self.error = str(e)
            log.warning("%s (MIDI-learn bindings not loaded)", e)
            try:
                os.replace(path, path.with_name(path.name + ".corrupt"))
            except OSError:
                pass
            bindings = {}
        self.bindings = bindings
        return self.attach(self.mapping)

    def attach(self, mapping: Mapping) -> list[str]:
        """Use ``mapping`` (a new model was loaded): cancel learn mode, apply the bindings
        whose control it has; returns the skipped ones as ``"source→control"``."""
        self.cancel()
        self.mapping = mapping
        self._previous = {}
        known = set(mapping.card.control_names)
        skipped = []
        for src, route in self.bindings.items():
            if route_fits(route, known):
                mapping.routes[src] = route
            else:
                skipped.append(f"{src}→{route.control}")
        if skipped:
            log.info("MIDI learn: model %r has no control for %s", mapping.card.name, ", ".join(skipped))
        if self.last_target not in known:
            self.last_target = None
        return sorted(skipped)

    def forget(self, source: str) -> bool:
        """Drop a learned binding: the source gets back the route it had before it was
        learned in this session (else none until the next start)."""
        with self._lock:
            if self.bindings.pop(source, None) is None:
                return False
            previous = self._previous.pop(source, None)
            if previous is not None:
                self.mapping.routes[source] = previous
            else:
                self.mapping.routes.pop(source, None)
        self.save()
        return True

    def status(self) -> dict:
        return {"armed": self.armed, "target": self.target, "binds": self.binds,
                "bindings": {s: r.control for s, r in self.bindings.items()},
                "error": self.error}
