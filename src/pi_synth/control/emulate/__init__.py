"""Desktop emulation: the same code with emulated chips behind the same seams.

Emulate the chip, not the driver (gpiozero's lesson): the knobs source still talks
gpiozero's MCP3008 class over SPI, but the pins are gpiozero's ``MockFactory`` and the
chip at the other end is :class:`~.mcp3xxx.EmulatedMCP3xxx`, speaking the MCP3008's
SPI protocol bit by bit. The I2C ADCs get :class:`~.ads1x15.EmulatedI2CBus`, a bus with
an ADS1x15's registers behind it. Nothing in the control path asks "am I emulated?".
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Emulation:
    """What ``--emulate`` installed: the chips whose inputs the panel or tests drive."""

    adc: object | None = None  # EmulatedMCP3xxx or EmulatedADS1x15: .volts[ch]
    factory: object | None = None
    extras: dict = field(default_factory=dict)

    def close(self) -> None:
        if self.adc is not None and hasattr(self.adc, "close"):
            self.adc.close()


def install(chip: str = "mcp3008", vref: float = 3.3, channels: int = 8) -> Emulation:
    """Install gpiozero's MockFactory and attach an emulated ADC; return them."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    Device.pin_factory = factory
    adc = None
    if chip in ("mcp3008", "mcp3208", "none"):
        from pi_synth.control.emulate.mcp3xxx import EmulatedMCP3xxx

        bits = 12 if chip == "mcp3208" else 10
        adc = EmulatedMCP3xxx(11, 10, 9, 8, bits=bits, vref=vref, pin_factory=factory)
    elif chip in ("ads1015", "ads1115"):
        from pi_synth.control.emulate.ads1x15 import EmulatedADS1x15

        adc = EmulatedADS1x15(chip)
    return Emulation(adc=adc, factory=factory)
