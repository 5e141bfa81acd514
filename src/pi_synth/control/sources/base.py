"""The control-source interface, in mido's shape: public methods check, hooks do I/O.

A source turns something physical into calls on the :class:`~pi_synth.control.router.Router`:

* ``router.source(name, value)`` — a reading in 0..1 from ``knob1``, ``cv2``, ``enc1``…,
  which the mapping turns into a model control;
* ``router.midi_message(msg)`` / ``router.midi_bytes(data)`` — MIDI;
* ``router.action(name, arg)`` — next/previous model, presets, panic, MIDI learn.

A source overrides ``_open``, ``_close`` and, if it is *polled* (ADC chips), ``_poll``.
Polled sources share one poller thread (never one thread per knob); event-driven
sources (MIDI ports, UART, GPIO edges, OSC) run their own reader or callbacks.
Sources never touch the audio path directly and never raise into it.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class Source:
    """One control source: ``open``/``close``/``poll`` check, the ``_hooks`` do the I/O."""

    kind = "base"
    polled = False

    def __init__(self, router, name: str | None = None, **options):
        self.router = router
        self.name = name or self.kind
        self.options = options
        self.opened = False
        self.errors = 0

    def open(self) -> None:
        if self.opened:
            raise RuntimeError(f"source {self.name} is already open")
        self._open()
        self.opened = True

    def close(self) -> None:
        """Idempotent."""
        if self.opened:
            self.opened = False
            self._close()

    def poll(self, now: float) -> None:
        """Called by the poller thread at its rate (polled sources only)."""
        if self.opened:
            try:
                self._poll(now)
            except Exception as e:  # a flaky bus must not stop the other knobs
                self.errors += 1
                if self.errors in (1, 100, 10000):
                    log.warning("%s: read failed (%s); will keep trying", self.name, e)

    def status(self) -> dict:
        return {"name": self.name, "kind": self.kind, "open": self.opened, "errors": self.errors}

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    # -- hooks ------------------------------------------------------------------------

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass

    def _poll(self, now: float) -> None:
        pass
