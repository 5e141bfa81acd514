"""Buttons and rotary encoders on GPIO via gpiozero (the board's pin factory).

* A button fires its ``action`` on release, or its ``hold_action`` once held for
  ``hold_s`` (long press); gpiozero debounces.
* An encoder turns a value 0..1 sent as source ``encN`` (map it like a knob); fast
  turns are accelerated: a detent within 30 ms of the last counts up to ``accel``×.

(The status LEDs are an indicator, not a source: :mod:`pi_synth.control.leds`.)
"""

from __future__ import annotations

import time

from pi_synth.control.sources.base import Source


class GpioSource(Source):
    """Buttons (actions, long press) and encoders (``encN`` sources) on GPIO pins."""

    kind = "gpio"

    def _open(self):
        from gpiozero import Button, RotaryEncoder

        from pi_synth.control.board import board

        factory = board().pins()
        o = self.options
        self.buttons, self.encoders = [], []
        for b in o.get("buttons", []):
            btn = Button(b.pin, hold_time=b.hold_s, pin_factory=factory)
            st = {"held": False}  # gpiozero devices take no new attributes

            def held(st=st, b=b):
                st["held"] = True
                if b.hold_action:
                    self.router.action(b.hold_action, b.arg)

            def released(st=st, b=b):
                if not st["held"]:
                    self.router.action(b.action, b.arg)
                st["held"] = False

            btn.when_held = held
            btn.when_released = released
            self.buttons.append(btn)
        for i, e in enumerate(o.get("encoders", [])):
            enc = RotaryEncoder(e.a, e.b, max_steps=0, pin_factory=factory)
            state = {"value": 0.5, "t": 0.0, "name": e.name or f"enc{i + 1}"}

            def turned(direction, state=state, e=e):
                now = time.monotonic()
                speed = 1.0 + (e.accel - 1.0) * max(0.0, 1.0 - (now - state["t"]) / 0.03)
                state["t"] = now
                state["value"] = min(1.0, max(0.0, state["value"] + direction * e.step * speed))
                self.router.source(state["name"], state["value"])

            enc.when_rotated_clockwise = lambda turned=turned: turned(+1)
            enc.when_rotated_counter_clockwise = lambda turned=turned: turned(-1)
            self.encoders.append((enc, state))

    def _close(self):
        for b in self.buttons:
            b.close()
        for e, _ in self.encoders:
            e.close()


SOURCE = GpioSource
