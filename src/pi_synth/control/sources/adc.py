"""ADC channels: knobs and CV inputs on one chip, read by the one poller thread.

Each knob channel goes through small steps: one-pole smoothing (``smooth_ms``) →
a deadband (a noisy pot does not jitter the sound: only a move larger than
``deadband`` since the last sent value is sent) → ``router.source("knobN", value)``.
A *floating* (unconnected) input reads noise: when the mean jump between successive
readings over a window is large while the average stays put, the channel is muted
and logged once, and it comes back when it reads steady again. A chip that reads
zero on every channel at start (gpiozero's MCP3008 reads ~0.0005 with nothing
attached instead of failing) is reported as probably not connected.
"""

from __future__ import annotations

import logging
import math

from pi_synth.control.board import board
from pi_synth.control.chips import open_adc
from pi_synth.control.cv import FRONTENDS, CvInput, adc_key, legacy_key, load_calibration
from pi_synth.control.sources.base import Source

log = logging.getLogger(__name__)


class KnobChannel:
    """One pot on one ADC channel: smoothing, deadband and floating-input detection in
    front of ``router.source(name, value)``."""

    WINDOW = 16

    def __init__(self, name: str, channel: int, *, deadband: float, smooth_s: float, poll_hz: float):
        self.name, self.channel = name, channel
        self.deadband = deadband
        self.smooth_s = smooth_s
        # per poll at the nominal rate; with the poll's time, the smoothing follows the clock
        # instead (a slow bus — the emulated chip's bit-banged SPI — polls far less often)
        self.alpha = 1.0 if smooth_s <= 0 else 1.0 - math.exp(-1.0 / (smooth_s * poll_hz))
        self._t = None
        self.value = None  # smoothed
        self.sent = None
        self._targets = None  # the router's model (``router.targets``) this knob last sent to
        self.floating = False
        self._prev = None
        self._jumps = [0.0] * self.WINDOW
        self._k = 0

    def update(self, x: float, router, now: float | None = None) -> None:
        if self._prev is not None:
            self._jumps[self._k % self.WINDOW] = abs(x - self._prev)
            self._k += 1
        self._prev = x
        if self._k >= self.WINDOW:
            noise = sum(self._jumps) / self.WINDOW
            if not self.floating and noise > 0.08:
                self.floating = True
                log.warning("%s (ADC channel %d) reads noise: is a pot connected? muted until it is steady",
                            self.name, self.channel)
            elif self.floating and noise < 0.01:
                self.floating = False
                log.info("%s (ADC channel %d) is steady again", self.name, self.channel)
        if self.floating:
            return
        a = self.alpha
        if now is not None:
            if self._t is not None and self.smooth_s > 0:
                a = 1.0 - math.exp(-max(now - self._t, 0.0) / self.smooth_s)
            self._t = now
        self.value = x if self.value is None else self.value + a * (x - self.value)
        if self._targets != router.targets:  # another model since: where the knob stands applies to it
            self._targets, self.sent = router.targets, None
        if self.sent is None or abs(self.value - self.sent) > self.deadband or (
            self.value in (0.0, 1.0) and self.value != self.sent
        ):
            self.sent = self.value
            router.source(self.name, self.value)


class AdcSource(Source):
    """Knobs and CV inputs on one ADC chip, read by the rig's poller thread."""

    kind = "adc"
    polled = True

    def _open(self):
        o = self.options
        self.chip = o.get("chip", "mcp3008")
        self.adc = open_adc(self.chip, board(), vref=o.get("vref", 3.3), spi_port=o.get("spi_port", 0),
                            spi_device=o.get("spi_device", 0), i2c_bus=o.get("i2c_bus", 1),
                            i2c_address=o.get("i2c_address", 0x48))
        poll_hz = o.get("poll_hz", 200.0)
        cv_items = o.get("cv", [])
        cv_channels = {c.channel for c in cv_items}
        wanted = [c for c in o.get("channels", range(8)) if c not in cv_channels]
        self.knobs = [
            KnobChannel(f"knob{i + 1}", ch, deadband=o.get("deadband", 0.004),
                        smooth_s=o.get("smooth_ms", 20.0) / 1000.0, poll_hz=poll_hz)
            for i, ch in enumerate(wanted) if ch < self.adc.channels
        ]
        past = [f"knob{i + 1}" for i, ch in enumerate(wanted) if ch >= self.adc.channels]
        if past and "channels" in o:  # the template's 0..7 on a 4-channel chip: say which knobs are not read
            log.warning("[knobs] channels wires %s to channels the %s lacks (it has 0..%d): not read",
                        ", ".join(past), self.adc.describe(), self.adc.channels - 1)
        where = dict(spi_port=o.get("spi_port", 0), spi_device=o.get("spi_device", 0), i2c_bus=o.get("i2c_bus", 1),
                     i2c_address=o.get("i2c_address", 0x48))
        device = o.get("device_id") or adc_key(self.chip, **where)
        legacy = None if o.get("device_id") else legacy_key(self.chip, where["spi_port"], where["spi_device"])
        self.device_id = device
        self.cvs = []
        for i, c in enumerate(cv_items):
            if c.channel >= self.adc.channels:
                log.warning("[[cv]] %s: channel %d, and the %s has channels 0..%d: not read", c.name or f"cv{i + 1}",
                            c.channel, self.adc.describe(), self.adc.channels - 1)
                continue
            cal = load_calibration(device, c.channel, c.frontend, o.get("vref", 3.3), legacy=legacy)
            self.cvs.append((c.channel, CvInput(
                self.router, c.name or f"cv{i + 1}", c.role, cal, base_note=c.base_note,
                threshold=c.threshold, hysteresis=c.hysteresis, min_ms=c.min_ms,
                min_volts=c.min_volts, max_volts=c.max_volts)))
        cv_items = [c for c in cv_items if c.channel < self.adc.channels]
        b = board()
        if getattr(b, "emulated", False) and cv_items:  # an emulated jack rests at 0 V, not mid-scale
            twin = b.attach_adc(self.chip, vref=o.get("vref", 3.3), **where)  # (an open gate, a top note)
            for c in cv_items:
                lo, hi = FRONTENDS.get(c.frontend, FRONTENDS["direct"])
                if c.channel < len(twin.volts) and hi != lo:
                    twin.volts[c.channel] = min(max(-lo / (hi - lo), 0.0), 1.0) * o.get("vref", 3.3)
        readings = [self.adc.read(k.channel) for k in self.knobs[:8]]
        if readings and all(r < 0.002 for r in readings) and len(readings) > 1:
            log.warning("%s reads 0 on every knob channel: every knob turned fully down, or the chip not "
                        "connected (SPI/I2C enabled, wiring)? Knobs follow once it reads", self.adc.describe())

    def _poll(self, now):
        read = self.adc.read
        for k in self.knobs:
            k.update(read(k.channel), self.router, now)
        for ch, cv in self.cvs:
            cv.update(read(ch), now)

    def _close(self):
        self.adc.close()

    def status(self):
        d = super().status()
        d.update(chip=self.adc.describe(), knobs={k.name: k.sent for k in self.knobs},
                 floating=[k.name for k in self.knobs if k.floating],
                 cv={cv.name: round(cv.volts, 4) for _, cv in self.cvs})
        return d


SOURCE = AdcSource
