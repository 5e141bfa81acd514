"""The board: where the control path meets hardware — one seam, as gpiozero's pin factory is.

Everything physical a control source touches comes from the board: the pin factory
(buttons, encoders, LEDs, SPI chips through gpiozero) and the I2C buses (ADS1x15 through
an smbus2-style bus). :class:`Board` is the Pi's: gpiozero's default pin factory and
``smbus2.SMBus``. :class:`EmulatedBoard` is its twin for laptops and tests: gpiozero's
``MockFactory`` for the pins, and each ADC chip's emulated twin
(:mod:`pi_synth.control.chips`) wired to the bus a reader opens — emulate the chip, not
the driver. Nothing else in the control path asks which one it has.

Chosen once per process: :func:`use_board`, or ``PI_SYNTH_BOARD=emulated`` in the
environment (what ``--emulate`` sets), read the first time :func:`board` is called.
"""

from __future__ import annotations

import os
import threading

from pi_synth.errors import DeviceError

ENV = "PI_SYNTH_BOARD"

# SPI pins (BCM) of the Pi's SPI0 and SPI1 buses: clock, MOSI, MISO and a select per device
SPI_PINS = {0: ((11, 10, 9), (8, 7)), 1: ((21, 20, 19), (18, 17, 16))}

_board: Board | None = None
_lock = threading.Lock()


class Board:
    """The Pi's hardware: gpiozero's default pin factory, the kernel's I2C buses."""

    emulated = False
    pin_factory = None  # until pins(): gpiozero picks the Pi's (lgpio, RPi.GPIO, …)

    def pins(self):
        """The pin factory every gpiozero device (buttons, encoders, LEDs, SPI chips) is
        made on. On the Pi, gpiozero's own choice — made here once, with its fallback
        chatter (a Python warning per library it could not load) kept off the terminal;
        where there is none, one line saying what to do."""
        if self.pin_factory is None:
            import warnings

            from gpiozero import Device
            from gpiozero.exc import BadPinFactory, PinWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PinWarning)
                try:
                    Device.ensure_pin_factory()
                except (BadPinFactory, ImportError, OSError, RuntimeError) as e:
                    raise DeviceError(
                        f"no GPIO pins on this machine ({e}): on a Pi install python3-lgpio; "
                        "elsewhere run with --emulate") from None
            self.pin_factory = Device.pin_factory
        return self.pin_factory

    def spi(self, spec, *, port: int, device: int, vref: float):
        """The pin factory an SPI chip's gpiozero device is made on."""
        return self.pins()

    def i2c(self, spec, *, bus_number: int, address: int, vref: float):
        """An smbus2-style bus for a chip at ``address`` on bus ``bus_number``."""
        try:
            import smbus2

            return smbus2.SMBus(bus_number)
        except (ImportError, OSError) as e:
            raise DeviceError(
                f"{spec.name} on I2C bus {bus_number}: cannot open ({e}); enable I2C "
                "(dtparam=i2c_arm=on) and install smbus2, or run with --emulate"
            ) from None

    def describe(self) -> str:
        return "Raspberry Pi (real pins and buses)"

    def close(self) -> None:
        pass


class EmulatedI2CBus:
    """An I2C bus with emulated chips at their addresses (smbus2's block calls)."""

    def __init__(self):
        self.devices: dict[int, object] = {}

    def _device(self, addr: int):
        dev = self.devices.get(addr)
        if dev is None:
            raise OSError(121, f"no I2C device at address 0x{addr:02x} (remote I/O error)")
        return dev

    def write_i2c_block_data(self, addr: int, reg: int, data: list[int]) -> None:
        self._device(addr).write_i2c_block_data(addr, reg, data)

    def read_i2c_block_data(self, addr: int, reg: int, length: int) -> list[int]:
        return self._device(addr).read_i2c_block_data(addr, reg, length)

    def close(self) -> None:
        pass


STATES_KEPT = 256  # pin changes an emulated pin remembers (gpiozero's mock keeps all)


def _emulated_factory():
    """gpiozero's ``MockFactory`` whose pins (of every mock class: plain, SPI clock,
    select…) remember only their last :data:`STATES_KEPT` changes. The mock keeps every
    change for a test's ``assert_states``; an emulated SPI chip read bit by bit a hundred
    times a second makes hundreds of thousands a second, and ``run --emulate`` grew by
    3 MB a second until this."""
    from collections import deque

    from gpiozero.pins.mock import MockFactory

    class EmulatedFactory(MockFactory):
        def pin(self, name, pin_class=None, **kwargs):
            p = super().pin(name, pin_class=pin_class, **kwargs)
            if not isinstance(p.states, deque):
                p.states = deque(p.states, maxlen=STATES_KEPT)
            return p

    return EmulatedFactory()


class EmulatedBoard(Board):
    """A Pi on a laptop: gpiozero's ``MockFactory`` (installed as gpiozero's pin factory,
    so buttons and LEDs use it too) and emulated ADC chips on the buses.

    A chip's twin is wired the first time a reader opens it, or beforehand with
    :meth:`attach_adc` (a test or the panel sets its input voltages); :attr:`adc` is the
    first one wired."""

    emulated = True

    def __init__(self):
        from gpiozero import Device

        self.pin_factory = _emulated_factory()
        Device.pin_factory = self.pin_factory
        self.chips: dict[tuple, object] = {}  # (bus, port or bus number, device or address) → twin
        self._i2c: dict[int, EmulatedI2CBus] = {}

    def attach_adc(self, chip: str, *, vref: float = 3.3, spi_port: int = 0, spi_device: int = 0,
                   i2c_bus: int = 1, i2c_address: int = 0x48):
        """Wire ``chip``'s twin where a reader of it would look; return the twin."""
        from pi_synth.control.chips import chip_spec

        spec = chip_spec(chip)
        if spec.bus == "spi":
            self.spi(spec, port=spi_port, device=spi_device, vref=vref)
            return self.chips[("spi", spi_port, spi_device)]
        self.i2c(spec, bus_number=i2c_bus, address=i2c_address, vref=vref)
        return self.chips[("i2c", i2c_bus, i2c_address)]

    def spi(self, spec, *, port: int, device: int, vref: float):
        key = ("spi", port, device)
        if key not in self.chips:
            try:
                (clock, mosi, miso), selects = SPI_PINS[port]
                pins = (clock, mosi, miso, selects[device])
            except (KeyError, IndexError):
                raise DeviceError(f"{spec.name}: the Pi has no SPI {port}.{device}") from None
            self.chips[key] = spec.twin(spec, pins=pins, vref=vref, pin_factory=self.pin_factory)
        return self.pin_factory

    def i2c(self, spec, *, bus_number: int, address: int, vref: float):
        bus = self._i2c.setdefault(bus_number, EmulatedI2CBus())
        key = ("i2c", bus_number, address)
        if key not in self.chips and not any(k[0] == "i2c" and k[1] == bus_number for k in self.chips):
            # the first chip asked for on a bus is wired at the address it is asked at
            self.chips[key] = bus.devices[address] = spec.twin(spec, address=address, vref=vref)
        return bus

    @property
    def adc(self):
        """The first emulated ADC wired (None before any)."""
        return next(iter(self.chips.values()), None)

    def describe(self) -> str:
        return "emulated (gpiozero MockFactory, emulated chips)"

    def close(self) -> None:
        from gpiozero import Device

        for twin in self.chips.values():
            close = getattr(twin, "close", None)
            if close is not None:
                close()
        self.chips.clear()
        if Device.pin_factory is self.pin_factory:
            self.pin_factory.close()
            Device.pin_factory = None
        # gpiozero hands one software SPI bus to every device on the same pins, whatever
        # their factory (a weak reference, by pin numbers): a bus that a reference cycle
        # keeps alive would be handed to the next board's chips, on this board's pins
        import gc

        gc.collect()


def board() -> Board:
    """The process's board: the one :func:`use_board` set, else made from
    ``$PI_SYNTH_BOARD`` (``emulated``, or unset/``pi`` for the real one)."""
    global _board
    with _lock:
        if _board is None:
            kind = os.environ.get(ENV, "").strip().lower()
            if kind in ("", "pi", "real"):
                _board = Board()
            elif kind in ("emulated", "emulate", "mock"):
                _board = EmulatedBoard()
            else:
                raise DeviceError(f"${ENV}={kind!r}: use 'emulated' or leave it unset for the Pi's own")
        return _board


def use_board(new: Board | None) -> Board | None:
    """Make ``new`` the process's board (None: choose again from the environment next
    time); returns it. The old one is closed."""
    global _board
    with _lock:
        old, _board = _board, new
    if old is not None and old is not new:
        old.close()
    return new
