"""ADS1015/ADS1115 on I2C: the reader (single-shot conversions through an smbus2-style
bus from the board) and the emulated twin (the chip's registers, answering on the
emulated board's I2C bus).

Registers (datasheet §8.6): 0x00 conversion (16-bit, big-endian), 0x01 config
(OS | MUX[14:12] | PGA[11:9] | MODE | DR[7:5] | comparator). Writing the config with
OS=1 starts a single-shot conversion of the selected input at the selected gain;
reading the conversion register returns it (ADS1015: 12 bits, left-aligned).
"""

from __future__ import annotations

import struct
import time

from pi_synth.control.chips import AdcReader, ChipSpec

PGA_FS = {0: 6.144, 1: 4.096, 2: 2.048, 3: 1.024, 4: 0.512, 5: 0.256, 6: 0.256, 7: 0.256}


class Ads1x15Reader(AdcReader):
    """Single-shot conversions at the fastest data rate, ±4.096 V range. The reader waits
    for the chip's own "conversion done" bit (OS) rather than a fixed time, so a chip that
    is ready at once (the emulated twin) costs no wait."""

    # config: OS=1 (start), MUX=1xx (AINx single-ended), PGA=001 (±4.096 V), MODE=1 (single),
    # DR=111 (860 SPS on the ADS1115, 3300 on the ADS1015), comparator off (0b11)
    FS = 4.096

    def __init__(self, spec: ChipSpec, board, *, bus_number: int = 1, address: int = 0x48, vref: float = 3.3):
        self.chip, self.address, self.vref = spec.name, address, vref
        self.channels, self.bits = spec.channels, spec.bits
        self._wait = 1.0 / (3300 if spec.name == "ads1015" else 860) + 0.0002
        self.bus = board.i2c(spec, bus_number=bus_number, address=address, vref=vref)

    def read(self, channel: int) -> float:
        cfg = 0x8000 | ((4 + channel) << 12) | (1 << 9) | (1 << 8) | (7 << 5) | 0x03
        self.bus.write_i2c_block_data(self.address, 0x01, [cfg >> 8, cfg & 0xFF])
        for _ in range(4):  # OS reads 1 once the conversion is done (one data period at most)
            hi, _lo = self.bus.read_i2c_block_data(self.address, 0x01, 2)
            if hi & 0x80:
                break
            time.sleep(self._wait)
        hi, lo = self.bus.read_i2c_block_data(self.address, 0x00, 2)
        code = (hi << 8) | lo
        if code & 0x8000:
            code -= 1 << 16
        volts = code / 32768.0 * self.FS
        return min(max(volts / self.vref, 0.0), 1.0)

    def close(self) -> None:
        self.bus.close()

    def describe(self) -> str:
        return f"{self.chip} at I2C 0x{self.address:02x}"


class EmulatedADS1x15:
    """The chip's registers behind the emulated I2C bus: set :attr:`volts`, count
    :attr:`conversions`."""

    def __init__(self, spec: ChipSpec | str = "ads1115", *, address: int = 0x48, vref: float = 3.3):
        chip = spec.name if isinstance(spec, ChipSpec) else spec
        vdd = vref
        self.chip = chip
        self.address = address
        self.vdd = vdd
        self.volts = [vdd / 2] * 4
        self.config = 0x8583
        self.conversion = 0
        self.conversions = 0

    def _convert(self) -> None:
        mux = (self.config >> 12) & 7
        fs = PGA_FS[(self.config >> 9) & 7]
        if mux >= 4:  # single-ended AINx vs GND
            v = self.volts[mux - 4]
        else:
            p, n = [(0, 1), (0, 3), (1, 3), (2, 3)][mux]
            v = self.volts[p] - self.volts[n]
        v = min(max(v, -0.3), self.vdd + 0.3)
        code = int(round(v / fs * 32768))
        code = max(-32768, min(32767, code))
        if self.chip == "ads1015":
            code = (code >> 4) << 4  # 12 bits, left-aligned
        self.conversion = code & 0xFFFF
        self.conversions += 1

    # -- what the emulated I2C bus calls for this chip's address ------------------------

    def write_i2c_block_data(self, addr: int, reg: int, data: list[int]) -> None:
        self._check(addr)
        if reg == 0x01:
            value = (data[0] << 8) | data[1]
            self.config = value & 0x7FFF
            if value & 0x8000:
                self._convert()

    def read_i2c_block_data(self, addr: int, reg: int, length: int) -> list[int]:
        self._check(addr)
        value = self.conversion if reg == 0x00 else (self.config | 0x8000)  # OS=1: ready
        return list(struct.pack(">H", value))[:length]

    def close(self) -> None:
        pass

    def _check(self, addr: int) -> None:
        if addr != self.address:
            raise OSError(121, f"no I2C device at address 0x{addr:02x} (remote I/O error)")


CHIPS = [ChipSpec("ads1015", "i2c", 4, 12, Ads1x15Reader, EmulatedADS1x15),
         ChipSpec("ads1115", "i2c", 4, 16, Ads1x15Reader, EmulatedADS1x15)]
