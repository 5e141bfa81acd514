"""An MCP3004/3008/3204/3208 on the far side of gpiozero's mock SPI pins.

Protocol (datasheet, "Using the MCP3008 with microcontroller SPI"): after chip
select falls, the chip waits for a start bit (1), reads SGL/DIFF, then three channel
bits (D2 D1 D0); it then samples for one clock, sends a null bit, and shifts out the
conversion MSB first (10 or 12 bits). Input voltages are set on :attr:`volts`; a
channel may be marked *floating* (unconnected), in which case each conversion returns
noise, as a real floating input does.
"""

from __future__ import annotations

import random

from gpiozero.pins.mock import MockSPIDevice


class EmulatedMCP3xxx(MockSPIDevice):
    def __init__(self, clock_pin, mosi_pin, miso_pin, select_pin, *, bits: int = 10,
                 channels: int = 8, vref: float = 3.3, pin_factory=None, seed: int = 0):
        super().__init__(clock_pin, mosi_pin, miso_pin, select_pin, pin_factory=pin_factory)
        self.bits = bits
        self.vref = vref
        self.volts = [vref / 2] * channels
        self.floating: set[int] = set()
        self.conversions = 0
        self._rng = random.Random(seed)
        self._state = "idle"
        self._single = True

    def code(self, channel: int, single: bool = True) -> int:
        if channel in self.floating:
            return self._rng.randrange(0, 1 << self.bits)
        v = self.volts[channel]
        if not single:  # pseudo-differential: CH(2k) - CH(2k+1) or the reverse
            v = v - self.volts[channel ^ 1]
        v = min(max(v, 0.0), self.vref)
        return min((1 << self.bits) - 1, int(v / self.vref * (1 << self.bits)))

    def on_start(self):
        super().on_start()
        self._state = "idle"

    def on_bit(self):
        if self._state == "idle":
            if self.rx_buf[-1]:  # start bit
                self._state = "mode"
                self.rx_buf = []
        elif self._state == "mode":
            self._single = bool(self.rx_buf[-1])
            self._state = "channel"
            self.rx_buf = []
        elif self._state == "channel":
            if len(self.rx_buf) == 3:
                self.conversions += 1
                # one sample clock + null bit, then the conversion MSB first
                self.tx_word(self.code(self.rx_word(), self._single), self.bits + 2)
                self._state = "result"
        elif self._state == "result" and not self.tx_buf:
            self._state = "idle"
            self.rx_buf = []
