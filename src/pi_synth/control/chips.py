"""ADC chips: read a channel as a fraction 0..1 of the reference voltage.

One small interface (:class:`AdcReader`), one implementation per chip family:

* MCP3004/3008/3204/3208 on SPI through gpiozero's classes (so gpiozero's pin
  factory is the seam: hardware SPI on a Pi, ``MockFactory`` + an emulated chip on a
  laptop);
* ADS1015/ADS1115 on I2C through an smbus2-style bus (``smbus2.SMBus`` on a Pi, an
  emulated chip on a laptop), single-shot conversions at the fastest data rate.
"""

from __future__ import annotations

import time

from pi_synth.errors import DeviceError


class AdcReader:
    chip = "adc"
    channels = 8
    bits = 10

    def read(self, channel: int) -> float:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.chip


class Mcp3xxxReader(AdcReader):
    def __init__(self, chip: str = "mcp3008", *, port: int = 0, device: int = 0, vref: float = 3.3):
        import gpiozero

        classes = {"mcp3004": (gpiozero.MCP3004, 4, 10), "mcp3008": (gpiozero.MCP3008, 8, 10),
                   "mcp3204": (gpiozero.MCP3204, 4, 12), "mcp3208": (gpiozero.MCP3208, 8, 12)}
        if chip not in classes:
            raise DeviceError(f"unknown SPI ADC {chip!r}; use one of {', '.join(classes)}")
        self.chip = chip
        self._cls, self.channels, self.bits = classes[chip]
        self.port, self.device, self.vref = port, device, vref
        self._devs: dict[int, object] = {}

    def _dev(self, channel: int):
        dev = self._devs.get(channel)
        if dev is None:
            try:
                dev = self._cls(channel=channel, port=self.port, device=self.device, max_voltage=self.vref)
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


class Ads1x15Reader(AdcReader):
    # config: OS=1 (start), MUX=1xx (AINx single-ended), PGA=001 (±4.096 V), MODE=1 (single),
    # DR=111 (860 SPS on the ADS1115, 3300 on the ADS1015), comparator off (0b11)
    FS = 4.096

    def __init__(self, chip: str = "ads1115", *, bus=None, bus_number: int = 1,
                 address: int = 0x48, vref: float = 3.3):
        if chip not in ("ads1015", "ads1115"):
            raise DeviceError(f"unknown I2C ADC {chip!r}; use ads1015 or ads1115")
        self.chip, self.address, self.vref = chip, address, vref
        self.channels, self.bits = 4, (12 if chip == "ads1015" else 16)
        self._wait = 1.0 / (3300 if chip == "ads1015" else 860) + 0.0002
        if bus is None:
            try:
                import smbus2

                bus = smbus2.SMBus(bus_number)
            except (ImportError, OSError) as e:
                raise DeviceError(
                    f"{chip} on I2C bus {bus_number}: cannot open ({e}); enable I2C "
                    "(dtparam=i2c_arm=on) and install smbus2, or run with --emulate"
                ) from None
            self._emulated = False
        else:
            self._emulated = True
        self.bus = bus

    def read(self, channel: int) -> float:
        cfg = 0x8000 | ((4 + channel) << 12) | (1 << 9) | (1 << 8) | (7 << 5) | 0x03
        self.bus.write_i2c_block_data(self.address, 0x01, [cfg >> 8, cfg & 0xFF])
        if not self._emulated:
            time.sleep(self._wait)
        hi, lo = self.bus.read_i2c_block_data(self.address, 0x00, 2)
        code = (hi << 8) | lo
        if code & 0x8000:
            code -= 1 << 16
        volts = code / 32768.0 * self.FS
        return min(max(volts / self.vref, 0.0), 1.0)

    def close(self) -> None:
        if not self._emulated:
            self.bus.close()

    def describe(self) -> str:
        return f"{self.chip} at I2C 0x{self.address:02x}"


def open_adc(chip: str, *, vref=3.3, spi_port=0, spi_device=0, i2c_bus=1, i2c_address=0x48,
             bus=None) -> AdcReader:
    if chip.startswith("mcp"):
        return Mcp3xxxReader(chip, port=spi_port, device=spi_device, vref=vref)
    if chip.startswith("ads"):
        return Ads1x15Reader(chip, bus=bus, bus_number=i2c_bus, address=i2c_address, vref=vref)
    raise DeviceError(f"unknown ADC chip {chip!r}")
