"""CV and gate from modular rigs: ADC readings → volts → pitch, gate or a control.

A CV front-end scales the jack's range into the ADC's 0..3.3 V (``bipolar5``: ±5 V,
``unipolar10``: 0..10 V, …); component tolerances make that scaling a few percent
off, which is a semitone or more at 1 V/oct. So each channel has an N-point
:class:`Calibration` (reading → volts, piecewise linear) measured with
``pi-synth calibrate`` and saved per device under the state dir; without one the
front-end's nominal scaling is used.
"""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from pi_synth.errors import ConfigError

log = logging.getLogger(__name__)

# the input stages docs/raspberry-pi.md draws: Ra from the jack, Rb to 3V3 (an offset, None: none),
# Rc to ground, into the follower
NETWORKS = {"bipolar5": (100e3, 62e3, 180e3), "unipolar10": (100e3, None, 47e3), "bipolar10": (100e3, 30e3, 47e3)}


def _ends(ra: float, rb: float | None, rc: float, vref: float = 3.3) -> tuple[float, float]:
    """Volts at the jack that read 0 and 1 through a network: node = a·Vin + b (the divider's
    formula), reading = node / vref. A rounded (-5, 5) was 3 % off: ~180 cents at 5 V."""
    g = 1 / ra + (1 / rb if rb else 0.0) + 1 / rc
    a, b = (1 / ra) / g, ((vref / rb) if rb else 0.0) / g
    return -b / a, (vref - b) / a


# front-end: (volts at the jack for ADC reading 0, volts for reading 1)
FRONTENDS = {"direct": (0.0, 3.3), **{name: _ends(*net) for name, net in NETWORKS.items()}}


@dataclass
class Calibration:
    """Reading → volts for one CV input: piecewise linear through measured points."""

    points: list[tuple[float, float]]  # (reading 0..1, volts), sorted by reading

    def __post_init__(self):
        pts = sorted((float(r), float(v)) for r, v in self.points)
        if len(pts) < 2:
            raise ConfigError("a calibration needs at least two points (reading, volts)")
        for (r0, v0), (r1, v1) in zip(pts, pts[1:]):
            if r1 - r0 < 1e-6:
                raise ConfigError(f"calibration readings {r0} and {r1} are the same: patch different voltages")
            if (v1 - v0) * (pts[-1][1] - pts[0][1]) <= 0:
                raise ConfigError("calibration is not monotonic: check the patched voltages and their order")
        self.points = pts
        self._r = [p[0] for p in pts]

    @classmethod
    def nominal(cls, frontend: str = "direct", vref: float = 3.3) -> "Calibration":
        lo, hi = FRONTENDS[frontend]
        if frontend == "direct":
            hi = vref
        return cls([(0.0, lo), (1.0, hi)])

    def volts(self, reading: float) -> float:
        i = bisect.bisect_right(self._r, reading) - 1
        i = min(max(i, 0), len(self.points) - 2)
        (r0, v0), (r1, v1) = self.points[i], self.points[i + 1]
        return v0 + (v1 - v0) * (reading - r0) / (r1 - r0)

    def to_json(self) -> dict:
        return {"points": [list(p) for p in self.points]}

    @classmethod
    def from_json(cls, d: dict) -> "Calibration":
        return cls([tuple(p) for p in d["points"]])


def adc_key(chip: str, *, spi_port: int = 0, spi_device: int = 0, i2c_bus: int = 1,
            i2c_address: int = 0x48) -> str:
    """The name a chip's calibrations are saved under: where it sits (an SPI chip select, or an
    I2C bus and address — two ADS1115s at 0x48 and 0x49 are two sets of calibrations)."""
    from pi_synth.control.chips import chip_spec

    if chip_spec(chip).bus == "i2c":
        return f"{chip}-i2c{i2c_bus}-{i2c_address:#04x}"
    return f"{chip}-{spi_port}.{spi_device}"


def legacy_key(chip: str, spi_port: int = 0, spi_device: int = 0) -> str:
    """The key every chip was saved under before I2C chips had their own (read, never written)."""
    return f"{chip}-{spi_port}.{spi_device}"


def calibration_path(device: str, channel: int) -> Path:
    from pi_synth.state import state_dir

    return state_dir() / "calibration" / f"{device}-ch{channel}.json"


def load_calibration(device: str, channel: int, frontend: str, vref: float = 3.3,
                     legacy: str | None = None) -> Calibration:
    """The channel's saved calibration, or the front-end's nominal scaling — also, with one
    line naming the file, when the file is not a calibration (edited by hand): one bad file
    took the whole ADC source down, every knob with it."""
    from pi_synth.state import read_json

    path = calibration_path(device, channel)
    if legacy and legacy != device and not path.exists() and calibration_path(legacy, channel).exists():
        path = calibration_path(legacy, channel)  # saved before the chip's address was in the name
    d = read_json(path)
    if not d:
        return Calibration.nominal(frontend, vref)
    try:
        return Calibration.from_json(d)
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        why = e.args[0] if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
        log.warning(
            "%s: not a calibration (%s): channel %d plays the %s front-end's nominal scaling; calibrate it "
            "again (pi-synth calibrate %d …) or delete the file", path, why, channel, frontend, channel)
        return Calibration.nominal(frontend, vref)


def save_calibration(device: str, channel: int, cal: Calibration) -> Path:
    from pi_synth.state import atomic_write_json

    path = calibration_path(device, channel)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, cal.to_json())
    return path


ADC_RAIL = 0.002  # a reading this close to 0 or 1 is the ADC at its limit


class CvInput:
    """One CV channel's role: ``pitch`` (1 V/oct), ``gate`` or ``control``."""

    def __init__(self, router, name: str, role: str, cal: Calibration, *, base_note=60.0,
                 threshold=1.0, hysteresis=0.3, min_ms=3.0, min_volts=0.0, max_volts=5.0):
        self.router, self.name, self.role, self.cal = router, name, role, cal
        self.base_note = base_note
        self.on_at, self.off_at = threshold + hysteresis / 2, threshold - hysteresis / 2
        self.min_s = min_ms / 1000.0
        self.min_volts, self.max_volts = min_volts, max_volts
        self.gate = False
        self._gate_since = -1e9
        self.volts = 0.0
        self.last_hz = 0.0
        self.at_limit = 0  # readings at the ADC's limit: the CV past the input stage's range
        self._said_limit = False

    def update(self, reading: float, now: float) -> None:
        v = self.volts = self.cal.volts(reading)
        if self.role == "pitch" and (reading <= ADC_RAIL or reading >= 1.0 - ADC_RAIL):
            self.at_limit += 1
            if not self._said_limit and self.at_limit >= 20:  # not a passing edge: it sits there
                self._said_limit = True
                log.warning(
                    "%s reads the ADC's %s (%+.2f V): the CV is past the input stage's range, so the pitch "
                    "sticks there; bring it inside the range, or choose a frontend that covers it",
                    self.name, "top" if reading > 0.5 else "bottom", v)
        if self.role == "pitch":
            hz = 440.0 * 2.0 ** ((self.base_note + 12.0 * v - 69.0) / 12.0)
            if math.isfinite(hz) and abs(hz - self.last_hz) > 1e-4 * hz:
                self.last_hz = hz
                self.router.cv_pitch(hz)
        elif self.role == "gate":
            if not self.gate and v >= self.on_at and now - self._gate_since >= self.min_s:
                self.gate, self._gate_since = True, now
                self.router.cv_gate(True)
            elif self.gate and v <= self.off_at and now - self._gate_since >= self.min_s:
                self.gate, self._gate_since = False, now
                self.router.cv_gate(False)
        else:
            span = self.max_volts - self.min_volts
            self.router.source(self.name, (v - self.min_volts) / span if span else 0.0)
