"""DIN MIDI on a serial port (the Pi's UART at 31250 baud) via pyserial.

Bytes go through this source's own byte-stream parser (running status, realtime
bytes inside messages, SysEx), so another byte stream can never corrupt its running
status. A device that disappears (a USB-serial adapter unplugged) is reopened every
second; nothing raises into the rest of the instrument. Held notes are let go when
it does, and — MIDI 1.0's rule — when a keyboard that sends active sensing (FE) falls
silent for 300 ms: a pulled cable otherwise leaves a chord droning until each key
comes back.
"""

from __future__ import annotations

import logging
import threading
import time

from pi_synth.control.midi.parser import MidiParser
from pi_synth.control.sources.base import Source
from pi_synth.errors import DeviceError

log = logging.getLogger(__name__)

SENSING_TIMEOUT_S = 0.3  # MIDI 1.0: no byte this long after active sensing = the sender is gone


class DinMidiSource(Source):
    """DIN MIDI bytes from a serial port, through this source's own parser."""

    kind = "din"

    def _open(self):
        self.device = self.options.get("device", "/dev/serial0")
        self.baud = self.options.get("baud", 31250)
        self.parser = MidiParser()
        self.bytes_read = 0
        self.released = 0  # times held notes were let go because the sender went away
        self._sensing_at = None  # when the last byte came, once the sender has sent active sensing
        self._ser = self._connect(first=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pi-synth-din", daemon=True)
        self._thread.start()

    def _connect(self, first=False):
        import serial

        try:
            return serial.Serial(self.device, self.baud, timeout=0.05)
        except (serial.SerialException, OSError) as e:
            if first:
                raise DeviceError(
                    f"DIN MIDI: cannot open {self.device} ({e}); enable the UART "
                    "(enable_uart=1, no serial console) or set midi.din = \"\""
                ) from None
            return None

    def _release(self) -> None:
        """The sender is gone: every held note let go (all-notes-off on every channel)."""
        import mido

        self.released += 1
        for ch in range(16):
            self.router.midi_message(mido.Message("control_change", channel=ch, control=123, value=0))

    def _loop(self):
        while not self._stop.is_set():
            ser = self._ser
            if ser is None:
                if self._stop.wait(1.0):
                    break
                self._ser = self._connect()
                if self._ser is not None:
                    log.info("DIN MIDI on %s: back", self.device)
                continue
            try:
                data = ser.read(max(1, ser.in_waiting))
            except Exception as e:
                self.errors += 1
                log.warning("DIN MIDI on %s failed (%s); held notes let go; reconnecting", self.device, e)
                self._release()
                self._sensing_at = None
                try:
                    ser.close()
                except Exception:
                    pass
                self._ser = None
                continue
            now = time.monotonic()
            if data:
                self.bytes_read += len(data)
                self.parser.feed(data)
                for msg in self.parser:
                    if msg.type == "active_sensing":
                        self._sensing_at = now
                    self.router.midi_message(msg)
                if self._sensing_at is not None:
                    self._sensing_at = now
            elif self._sensing_at is not None and now - self._sensing_at > SENSING_TIMEOUT_S:
                log.warning("DIN MIDI on %s: no byte for %.0f ms after active sensing (a pulled cable?): "
                            "held notes let go", self.device, 1e3 * SENSING_TIMEOUT_S)
                self._release()
                self._sensing_at = None

    def _close(self):
        self._stop.set()
        self._thread.join(2)
        if self._ser is not None:
            self._ser.close()

    def status(self):
        d = super().status()
        d.update(device=self.device, bytes=self.bytes_read, parser_errors=self.parser.stats.total,
                 released=self.released)
        return d


SOURCE = DinMidiSource
