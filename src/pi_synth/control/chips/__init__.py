"""ADC chips: read a channel as a fraction 0..1 of the reference voltage.

One module per chip family, each holding the real reader and its emulated twin (the
chip's own protocol, spoken on the emulated board's bus — emulate the chip, not the
driver), and a ``CHIPS`` list that registers them by name. The reader never asks
whether it is emulated: it takes its bus from the board
(:mod:`pi_synth.control.board`), which is real on a Pi and emulated on a laptop. To add
a chip, write one file here; the config's ``[knobs] chip`` choices follow.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from pi_synth.errors import ConfigError, DeviceError


class AdcReader:
    """One ADC chip opened on its bus: ``read(channel)`` → 0..1 of the reference voltage."""

    chip = "adc"
    channels = 8
    bits = 10

    def read(self, channel: int) -> float:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.chip


@dataclass(frozen=True)
class ChipSpec:
    """A chip a module registers: its name, bus (``spi`` or ``i2c``), size, its reader
    class and its emulated twin's class (both called as the module documents)."""

    name: str
    bus: str
    channels: int
    bits: int
    reader: type
    twin: type


def chips() -> dict[str, ChipSpec]:
    """Every registered chip by name (the modules of this package, in name order)."""
    out: dict[str, ChipSpec] = {}
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        for spec in getattr(importlib.import_module(f"{__name__}.{m.name}"), "CHIPS", ()):
            out[spec.name] = spec
    return out


def chip_names() -> tuple[str, ...]:
    return tuple(chips())


def chip_spec(name: str) -> ChipSpec:
    spec = chips().get(name)
    if spec is None:
        raise ConfigError(f"unknown ADC chip {name!r}; choose one of: {', '.join(chip_names())}")
    return spec


def open_adc(chip: str, board, *, vref: float = 3.3, spi_port: int = 0, spi_device: int = 0,
             i2c_bus: int = 1, i2c_address: int = 0x48) -> AdcReader:
    """Open ``chip`` on ``board`` (:func:`pi_synth.control.board.board`: the Pi's or its
    emulated twin)."""
    spec = chip_spec(chip)
    b = board
    if spec.bus == "spi":
        return spec.reader(spec, b, port=spi_port, device=spi_device, vref=vref)
    if spec.bus == "i2c":
        return spec.reader(spec, b, bus_number=i2c_bus, address=i2c_address, vref=vref)
    raise DeviceError(f"ADC chip {chip!r} is on an unknown bus {spec.bus!r}")


__all__ = ["AdcReader", "ChipSpec", "chips", "chip_names", "chip_spec", "open_adc"]
