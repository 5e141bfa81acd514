"""MCP3004/3008/3204/3208 on SPI: the reader (gpiozero's classes, on the board's pin
factory) and the emulated twin (the chip's SPI protocol, bit by bit, on gpiozero's mock
pins).

Protocol (datasheet, "Using the MCP3008 with microcontroller SPI"): after chip
select falls, the chip waits for a start bit (1), reads SGL/DIFF, then three channel
bits (D2 D1 D0); it then samples for one clock, sends a null bit, and shifts out the
conversion MSB first (10 or 12 bits). Input voltages are set on :attr:`volts`; a
channel may be marked *floating* (unconnected), in which case each conversion returns
noise, as a real floating input does.
"""

from __future__ import annotations

import random

try:
    from gpiozero.pins.mock import MockSPIDevice
except ImportError:  # the names alone: provisioning checks [knobs] chip with a python3 without gpiozero
    MockSPIDevice = object

from pi_synth.control.chips import AdcReader, ChipSpec
from pi_synth.errors import DeviceError


class Mcp3xxxReader(AdcReader):
    """An MCP3xxx through gpiozero (hardware SPI on a Pi), one gpiozero device per channel."""

    def __init__(self, spec: ChipSpec, board, *, port: int = 0, device: int = 0, vref: float = 3.3):
        import gpiozero

        self.chip, self.channels, self.bits = spec.name, spec.channels, spec.bits
        self._cls = getattr(gpiozero, spec.name.upper())
        self.port, self.device, self.vref = port, device, vref
        self._factory = board.spi(spec, port=port, device=device, vref=vref)
        self._devs: dict[int, object] = {}

    def _dev(self, channel: int):
        dev = self._devs.get(channel)
        if dev is None:
            try:
                dev = self._cls(channel=channel, port=self.port, device=self.device, max_voltage=self.vref,
                                pin_factory=self._factory)
            except Exception as e:
                raise DeviceError(
                    f"{self.chip} on SPI {self.port}.{self.device}: cannot open ({e}); "
                    "enable SPI (dtparam=spi=on) and check the wiring, or run with --emulate"
                ) from None
            self._devs[channel] = dev
        return dev

    def read(self, channel: int) -> float:
        return float(self._dev(channel).value)

    def close(self) -> None:
        for d in self._devs.values():
            d.close()
        self._devs.clear()

    def describe(self) -> str:
        return f"{self.chip} on SPI {self.port}.{self.device}"


class EmulatedMCP3xxx(MockSPIDevice):
    """The chip on the other side of the mock SPI pins: set :attr:`volts`, mark channels
    :attr:`floating`, count :attr:`conversions`."""

    def __init__(self, spec: ChipSpec | None = None, *, pins=(11, 10, 9, 8), vref: float = 3.3,
                 pin_factory=None, seed: int = 0, bits: int | None = None, channels: int | None = None):
        super().__init__(*pins, pin_factory=pin_factory)
        bits = bits or (spec.bits if spec else 10)
        channels = channels or (spec.channels if spec else 8)
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


CHIPS = [ChipSpec(name, "spi", channels, bits, Mcp3xxxReader, EmulatedMCP3xxx)
         for name, channels, bits in (("mcp3004", 4, 10), ("mcp3008", 8, 10), ("mcp3204", 4, 12),
                                      ("mcp3208", 8, 12))]
