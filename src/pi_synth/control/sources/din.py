"""DIN MIDI on a serial port (the Pi's UART at 31250 baud) via pyserial.

Bytes go through this source's own byte-stream parser (running status, realtime
bytes inside messages, SysEx), so another byte stream can never corrupt its running
status. A device that disappears (a USB-serial adapter unplugged) is reopened every
second; nothing raises into the rest of the instrument.
"""

from __future__ import annotations

import logging
import threading

from pi_synth.control.midi.parser import MidiParser
from pi_synth.control.sources.base import Source
from pi_synth.errors import DeviceError

log = logging.getLogger(__name__)


class DinMidiSource(Source):
    """DIN MIDI bytes from a serial port, through this source's own parser."""

    kind = "din"

    def _open(self):
        self.device = self.options.get("device", "/dev/serial0")
        self.baud = self.options.get("baud", 31250)
        self.parser = MidiParser()
        self.bytes_read = 0
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

    def _loop(self):
        while not self._stop.is_set():
            ser = self._ser
            if ser is None:
                if self._stop.wait(1.0):
                    break
                self._ser = self._connect()
                continue
            try:
                data = ser.read(max(1, ser.in_waiting))
            except Exception as e:
                self.errors += 1
                log.warning("DIN MIDI on %s failed (%s); reconnecting", self.device, e)
                try:
                    ser.close()
                except Exception:
                    pass
                self._ser = None
                continue
            if data:
                self.bytes_read += len(data)
                self.parser.feed(data)
                for msg in self.parser:
                    self.router.midi_message(msg)

    def _close(self):
        self._stop.set()
        self._thread.join(2)
        if self._ser is not None:
            self._ser.close()

    def status(self):
        d = super().status()
        d.update(device=self.device, bytes=self.bytes_read, parser_errors=self.parser.stats.total)
        return d


SOURCE = DinMidiSource
