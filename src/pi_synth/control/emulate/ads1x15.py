"""An ADS1015/ADS1115 behind an emulated I2C bus with smbus2's interface.

Registers (datasheet §8.6): 0x00 conversion (16-bit, big-endian), 0x01 config
(OS | MUX[14:12] | PGA[11:9] | MODE | DR[7:5] | comparator). Writing the config with
OS=1 starts a single-shot conversion of the selected input at the selected gain;
reading the conversion register returns it (ADS1015: 12 bits, left-aligned).
"""

from __future__ import annotations

import struct

PGA_FS = {0: 6.144, 1: 4.096, 2: 2.048, 3: 1.024, 4: 0.512, 5: 0.256, 6: 0.256, 7: 0.256}


class EmulatedADS1x15:
    def __init__(self, chip: str = "ads1115", address: int = 0x48, vdd: float = 3.3):
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

    # -- smbus2-style bus interface (an EmulatedI2CBus) ---------------------------------

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
