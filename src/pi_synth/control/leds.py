"""Status LEDs: the box's smallest screen — activity, xruns, clipping.

An indicator, not a control source: it reads counters (the router's input count, the
engine's xruns and late periods, the guard's limited blocks and the audio input's
clipped blocks: the clip LED lights for either, the status says which) and lights a GPIO
LED for a moment when one moves. Polled by the rig's one poller thread, never by the audio
thread; the LEDs come from the board's pin factory like every other pin.
"""

from __future__ import annotations

from typing import Callable

# role → (the counter that lights it, how long it stays lit in seconds)
ROLES = {"activity": ("activity", 0.05), "xrun": ("xruns", 0.5), "clip": ("limited_blocks", 0.2)}


class StatusLeds:
    """LEDs on the GPIO pins ``pins`` (role → BCM pin, < 0 for none) showing ``status_fn()``'s
    counters and the router's activity."""

    polled = True
    name = "leds"

    def __init__(self, router, pins: dict[str, int], status_fn: Callable[[], dict] | None = None):
        self.router = router
        self.pins = {role: pin for role, pin in pins.items() if pin is not None and pin >= 0}
        self.status_fn = status_fn
        self.leds: dict[str, object] = {}
        self._last: dict[str, int] = {}
        self._lit_until: dict[str, float] = {}

    def open(self) -> None:
        from gpiozero import LED

        from pi_synth.control.board import board

        factory = board().pins()
        for role, pin in self.pins.items():
            if role not in ROLES:
                raise ValueError(f"unknown LED role {role!r}; roles are: {', '.join(ROLES)}")
            self.leds[role] = LED(pin, pin_factory=factory)

    def counters(self) -> dict[str, int]:
        st = {"activity": self.router.activity}
        if self.status_fn is not None:
            s = self.status_fn() or {}
            st["xruns"] = s.get("xruns", 0) + s.get("late_periods", 0)
            st["limited_blocks"] = s.get("limited_blocks", 0) + (s.get("input") or {}).get("clips", 0)
        return st

    def poll(self, now: float) -> None:
        if not self.leds:
            return
        st = self.counters()
        for role, led in self.leds.items():
            key, hold = ROLES[role]
            if key not in st:
                continue
            if st[key] != self._last.get(key):
                self._last[key] = st[key]
                self._lit_until[role] = now + hold
            on = now < self._lit_until.get(role, 0.0)
            if on != led.is_lit:
                led.on() if on else led.off()

    def close(self) -> None:
        for led in self.leds.values():
            led.close()
        self.leds.clear()

    def status(self) -> dict:
        return {"name": self.name, "kind": "leds", "lit": sorted(r for r, led in self.leds.items() if led.is_lit)}
