"""The rig: every control source the config names, the status LEDs, and the one poller
thread.

Built from the config (``[knobs]``, ``[[cv]]``, ``[midi]``, ``[osc]``, ``[[button]]``,
``[[encoder]]``, ``[leds]``). Polled parts (ADC chips, the LEDs) share a single thread at
``knobs.poll_hz`` — gpiozero's advice: not a polling thread per device. A source that
cannot open is reported in one line and left out; the instrument plays on. The hardware
comes from the board (:mod:`pi_synth.control.board`): the rig does not know whether it is
emulated.
"""

from __future__ import annotations

import logging
import threading
import time

from pi_synth.control.leds import StatusLeds
from pi_synth.control.sources import source_class
from pi_synth.errors import PiSynthError

log = logging.getLogger(__name__)


def live_inputs(cfg) -> list[str]:
    """The live control sources the config sets up, in words: with any of them, playing a
    file of events does not end a run (someone may be playing along). ``[midi] ports``
    counts only when it names a port: ``all``, the default, is not a decision."""
    out = []
    if cfg.knobs.chip != "none":
        out.append(f"knobs ({cfg.knobs.chip})")
    if cfg.cv:
        out.append("CV")
    if cfg.midi.ports not in ("", "all"):
        out.append(f"MIDI port {cfg.midi.ports!r}")
    if cfg.midi.din:
        out.append("DIN MIDI")
    if cfg.osc.enabled:
        out.append("OSC")
    if cfg.button or cfg.encoder:
        out.append("buttons/encoders")
    return out


class Rig:
    """The control sources and indicators of one instrument, and their poller thread."""

    def __init__(self, router, sources=(), poll_hz: float = 200.0):
        self.router = router
        self.sources = list(sources)
        self.indicators: list = []
        self.poll_hz = poll_hz
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = None
        self.polls = 0

    @classmethod
    def from_config(cls, cfg, router, *, status_fn=None, poll_hz: float | None = None,
                    osc_status_fn=None, requests=None) -> "Rig":
        """``status_fn``: the engine's counters (LEDs); ``osc_status_fn`` and ``requests``:
        what the OSC surface answers (the instrument's status and requests). The OSC
        server opens when ``[osc]`` or ``[web]`` is enabled (the web page's process talks
        to the instrument through it): for the web page alone, on localhost only."""
        specs = []
        k = cfg.knobs
        if k.chip != "none":
            opts = dict(chip=k.chip, channels=k.channels, poll_hz=k.poll_hz, deadband=k.deadband,
                        smooth_ms=k.smooth_ms, vref=k.vref, spi_port=k.spi_port,
                        spi_device=k.spi_device, i2c_bus=k.i2c_bus, i2c_address=k.i2c_address,
                        cv=cfg.cv)
            specs.append(("adc", "adc", opts))
        m = cfg.midi
        if m.ports:
            specs.append(("midi_ports", "midi", dict(ports=m.ports)))
        if m.din:
            specs.append(("din", "din", dict(device=m.din, baud=m.din_baud)))
        web = getattr(cfg, "web", None)
        if cfg.osc.enabled or (web is not None and web.enabled):
            specs.append(("osc", "osc", dict(host=cfg.osc.host if cfg.osc.enabled else "127.0.0.1",
                                             port=cfg.osc.port, status_fn=osc_status_fn or status_fn,
                                             requests=requests)))
        if cfg.button or cfg.encoder:
            specs.append(("gpio", "gpio", dict(buttons=cfg.button, encoders=cfg.encoder)))
        rig = cls(router, poll_hz=poll_hz or k.poll_hz)
        for kind, name, opts in specs:
            rig.add(kind, name, **opts)
        leds = {"activity": cfg.leds.activity, "xrun": cfg.leds.xrun, "clip": cfg.leds.clip}
        if any(p >= 0 for p in leds.values()):
            rig.add_indicator(StatusLeds(router, leds, status_fn))
        return rig

    def add(self, kind: str, name: str, **options):
        src = source_class(kind)(self.router, name, **options)
        return self._opened(src, self.sources, f"control source {name} ({kind})")

    def add_indicator(self, indicator):
        """An output the poller updates (the status LEDs); one that cannot open is
        reported and left out, like a source."""
        return self._opened(indicator, self.indicators, indicator.name)

    def _opened(self, part, into: list, what: str):
        """Open ``part`` and keep it in ``into``; if it cannot open, say why in one line,
        keep the line in :attr:`failed` and return None: a missing device never stops the sound."""
        try:
            part.open()
        except PiSynthError as e:
            msg = str(e)
        except Exception as e:
            msg = f"{what} cannot start: {type(e).__name__}: {e}"
        else:
            into.append(part)
            return part
        self.failed.append(msg)
        log.warning("%s", msg)
        return None

    def _polled(self) -> list:
        return [s for s in self.sources if s.polled] + [i for i in self.indicators if i.polled]

    def start(self) -> None:
        if self._polled():
            self._thread = threading.Thread(target=self._poll_loop, name="pi-synth-poll", daemon=True)
            self._thread.start()

    def _poll_loop(self) -> None:
        period = 1.0 / self.poll_hz
        polled = self._polled()
        nxt = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            for s in polled:
                s.poll(now)
            self.polls += 1
            nxt += period
            delay = nxt - time.monotonic()
            if delay < -period:  # fell behind (slow bus): do not try to catch up
                nxt = time.monotonic()
                delay = 0
            if delay > 0:
                self._stop.wait(delay)

    def poll_once(self, now: float | None = None) -> None:
        """Poll every polled source once, in the caller's thread (tests, calibrate)."""
        now = time.monotonic() if now is None else now
        for s in self._polled():
            s.poll(now)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        for s in self.sources + self.indicators:
            try:
                s.close()
            except Exception as e:
                log.debug("closing %s: %s", s.name, e)

    def status(self) -> list[dict]:
        return [s.status() for s in self.sources + self.indicators]

    def get(self, name: str):
        for s in self.sources:
            if s.name == name:
                return s
        return None
