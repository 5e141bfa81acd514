"""Buttons, rotary encoders and status LEDs on GPIO via gpiozero.

* A button fires its ``action`` on release, or its ``hold_action`` once held for
  ``hold_s`` (long press); gpiozero debounces.
* An encoder turns a value 0..1 sent as source ``encN`` (map it like a knob); fast
  turns are accelerated: a detent within 30 ms of the last counts up to ``accel``×.
* LEDs show activity (any control input), xruns and clipping, updated from the
  poller thread from counters — never from the audio thread.
"""

from __future__ import annotations

import time

from pi_synth.control.sources.base import Source


class GpioSource(Source):
    kind = "gpio"
    polled = True  # for the LEDs

    def _open(self):
        from gpiozero import LED, Button, RotaryEncoder

        o = self.options
        self.buttons, self.encoders, self.leds = [], [], {}
        for b in o.get("buttons", []):
            btn = Button(b.pin, hold_time=b.hold_s)
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
            enc = RotaryEncoder(e.a, e.b, max_steps=0)
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
        for role, pin in o.get("leds", {}).items():
            if pin is not None and pin >= 0:
                self.leds[role] = LED(pin)
        self.status_fn = o.get("status_fn")
        self._last = {"activity": 0, "xruns": 0, "limited_blocks": 0}
        self._lit_until = {}

    def _poll(self, now):
        if not self.leds:
            return
        st = {"activity": self.router.activity}
        if self.status_fn is not None:
            s = self.status_fn() or {}
            st["xruns"] = s.get("xruns", 0) + s.get("late_periods", 0)
            st["limited_blocks"] = s.get("limited_blocks", 0)
        for role, key, hold in (("activity", "activity", 0.05), ("xrun", "xruns", 0.5),
                                ("clip", "limited_blocks", 0.2)):
            led = self.leds.get(role)
            if led is None or key not in st:
                continue
            if st[key] != self._last.get(key):
                self._last[key] = st[key]
                self._lit_until[role] = now + hold
            on = now < self._lit_until.get(role, 0.0)
            if on != led.is_lit:
                led.on() if on else led.off()

    def _close(self):
        for b in self.buttons:
            b.close()
        for e, _ in self.encoders:
            e.close()
        for led in self.leds.values():
            led.close()


SOURCE = GpioSource
