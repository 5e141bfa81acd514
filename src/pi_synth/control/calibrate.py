"""``pi-synth calibrate``: measure a CV input so 1 V/oct is in tune.

Interactive: "patch 0 V into channel 6 and press Enter; now 1 V; …" — each step
averages many ADC readings; or non-interactive from ``--points READING:VOLTS,…``.
The N-point calibration (piecewise linear) is saved atomically per device and channel
under the state dir, and the pitch error at each point is printed in cents.
"""

from __future__ import annotations

import math
import sys
from typing import Callable

from pi_synth.control.cv import ADC_RAIL, Calibration, adc_key, save_calibration
from pi_synth.errors import ConfigError


# the emulated input stage --emulate patches through: ADC volts = 0.31 + 0.205 × CV volts (a
# 0..10 V Eurorack input scaled into a 3.3 V ADC, with the offset and gain errors real parts have)
EMULATED_STAGE = (0.31, 0.205)


def average_reading(read: Callable[[], float], n: int = 64) -> float:
    return sum(read() for _ in range(n)) / n


def interactive(read: Callable[[], float], channel: int, volts: list[float],
                ask: Callable[[str], str] = input, say: Callable[[str], None] = print,
                patch: Callable[[float], None] | None = None) -> Calibration:
    """Ask for each voltage in turn and read the channel; ``patch(v)``: what the player's
    hand does (the emulation's patch cable)."""
    points = []
    for v in volts:
        try:
            reply = ask(f"patch {v:+.3f} V into channel {channel}, then press Enter (or type q to stop) ")
        except EOFError:  # stdin closed (a script, a service): nothing more will be answered
            raise ConfigError(f"standard input ended after {len(points)} of {len(volts)} voltages; run "
                              "calibrate in a terminal, or give the readings with --points") from None
        if reply.strip().lower() == "q":
            break
        if patch is not None:
            patch(v)
        r = average_reading(read)
        say(f"  channel {channel} reads {r:.5f} at {v:+.3f} V")
        points.append((r, v))
    return Calibration(points)


def parse_points(text: str) -> list[tuple[float, float]]:
    pts = []
    for item in text.split(","):
        r, sep, v = item.partition(":")
        try:
            if not sep:
                raise ValueError
            pts.append((float(r), float(v)))
        except ValueError:
            raise ConfigError(f"--points {item!r}: use READING:VOLTS pairs, e.g. 0.500:0,0.597:1") from None
        if not (math.isfinite(pts[-1][0]) and 0.0 <= pts[-1][0] <= 1.0):
            raise ConfigError(f"--points {item!r}: a reading is the ADC's 0..1 (what 'pi-synth calibrate' "
                              "prints), not volts")
        if not (math.isfinite(pts[-1][1]) and abs(pts[-1][1]) <= MAX_JACK_VOLTS):
            raise ConfigError(f"--points {item!r}: {pts[-1][1]:g} V is not a voltage a CV jack carries "
                              f"(±{MAX_JACK_VOLTS:g} V)")
    return pts


MAX_JACK_VOLTS = 15.0  # Eurorack's rails: more is a typo


MAX_SPAN_VOLTS = 40.0  # volts over the ADC's whole range: ±10 V through the widest stage is ~21


def check_span(cal) -> None:
    """A calibration whose points imply more than :data:`MAX_SPAN_VOLTS` over the ADC's range
    is a typo (``0.5:-15,0.6:15`` is 300 V), not an input stage."""
    (r0, v0), (r1, v1) = cal.points[0], cal.points[-1]
    span = abs(v1 - v0) / (r1 - r0)
    if span > MAX_SPAN_VOLTS:
        raise ConfigError(f"these points make {span:.0f} V over the ADC's whole range, no input stage does "
                          f"(±10 V through bipolar10 is ~21 V); check the readings and volts")


def check_rails(points) -> None:
    """A point the ADC read at its limit is no calibration point: the input stage clips there
    (it was saved, and the report blamed the curve's linearity for 300 cents)."""
    for r, v in points:
        if r <= ADC_RAIL or r >= 1.0 - ADC_RAIL:
            raise ConfigError(f"{v:+g} V reads {r:.4f}, the ADC's {'top' if r > 0.5 else 'bottom'}: that voltage is "
                              "outside the input stage's range (see the [[cv]] frontend table in docs/raspberry-pi.md); "
                              "calibrate with voltages inside it")


def report(cal: Calibration) -> list[str]:
    """How far a straight 1 V/oct line through the ends is off at each point, in cents."""
    (r0, v0), (r1, v1) = cal.points[0], cal.points[-1]
    lines = []
    for r, v in cal.points:
        linear = v0 + (v1 - v0) * (r - r0) / (r1 - r0)
        lines.append(f"  {v:+.3f} V: a two-point fit would be off by {1200 * (linear - v):+.1f} cents")
    return lines


DEFAULT_VOLTS = "0,1,2,3,4"


def add_parser(sub) -> None:
    c = sub.add_parser("calibrate", help="CV input calibration (interactive or from values)")
    c.add_argument("channel", help="the CV input: its name (cv1, cv2, … in the order of the config's "
                                   "[[cv]] tables) or its ADC channel number")
    c.add_argument("--config", help="config file (TOML): which ADC chip")
    c.add_argument("--volts", default=DEFAULT_VOLTS, help="voltages to patch, in order (default 0,1,2,3,4)")
    c.add_argument("--points", help="READING:VOLTS,… measured elsewhere (no prompts, no ADC needed)")
    c.add_argument("--emulate", action="store_true", help="use the emulated ADC (for trying it out)")
    c.set_defaults(func=cmd_calibrate)


def _channel(arg: str, cv_items) -> int:
    """``cvN`` (the N-th [[cv]] table, or the one named so) or a channel number."""
    text = str(arg).strip().lower()
    for i, item in enumerate(cv_items):
        if text == (item.name or f"cv{i + 1}").lower():
            return item.channel
    if text.startswith("cv") and text[2:].isdigit():
        n = int(text[2:])
        if not cv_items:
            raise ConfigError(f"{arg}: the config has no [[cv]] tables; give the ADC channel number instead")
        raise ConfigError(f"{arg}: the config has {len(cv_items)} [[cv]] table(s): cv1..cv{len(cv_items)}"
                          if n else f"{arg}: CV inputs count from cv1")
    try:
        ch = int(text)
    except ValueError:
        raise ConfigError(f"{arg!r}: give a CV input name (cv1, …) or an ADC channel number (0..7)") from None
    if not 0 <= ch <= 7:
        raise ConfigError(f"channel {ch}: ADC channels are 0..7")
    return ch


def cmd_calibrate(args) -> int:
    from pi_synth import config as config_mod
    from pi_synth.control.board import EmulatedBoard, board, use_board
    from pi_synth.control.chips import chip_spec, open_adc

    cfg = config_mod.load(args.config)
    k = cfg.knobs
    channel = _channel(args.channel, cfg.cv)
    chip = k.chip if k.chip != "none" else None
    if args.points:  # measured elsewhere: no ADC is read, the file is keyed by the chip that will read it
        chip = chip or "mcp3008"
        spec = chip_spec(chip)
        if not 0 <= channel < spec.channels:
            raise ConfigError(f"channel {channel}: a {chip} has channels 0..{spec.channels - 1}")
        points = parse_points(args.points)
        check_rails(points)
        cal = Calibration(points)
        if args.volts != DEFAULT_VOLTS:
            print("pi-synth: --volts is for patching voltages in turn; --points already gives them: ignored",
                  file=sys.stderr)
    else:
        if chip is None and not args.emulate:
            raise ConfigError("no ADC configured: set [knobs] chip in the config (mcp3008, ads1115, …), "
                              "or give --points, or try it with --emulate")
        chip = chip or "mcp3008"
        patch = None
        if args.emulate:
            emulated = use_board(EmulatedBoard())
            twin = emulated.attach_adc(chip, vref=k.vref, spi_port=k.spi_port, spi_device=k.spi_device,
                                       i2c_bus=k.i2c_bus, i2c_address=k.i2c_address)

            def patch(v: float) -> None:  # an emulated CV input stage: not quite the nominal scaling
                twin.volts[channel] = min(max(EMULATED_STAGE[0] + EMULATED_STAGE[1] * v, 0.0), k.vref)
        adc = open_adc(chip, board(), vref=k.vref, spi_port=k.spi_port, spi_device=k.spi_device,
                       i2c_bus=k.i2c_bus, i2c_address=k.i2c_address)
        if not 0 <= channel < adc.channels:
            raise ConfigError(f"channel {channel}: {adc.describe()} has channels 0..{adc.channels - 1}")
        try:
            volts = [float(v) for v in args.volts.split(",")]
        except ValueError:
            raise ConfigError(f"--volts {args.volts!r}: use numbers separated by commas") from None
        if not sys.stdin.isatty():
            print("pi-synth: reading answers from standard input", file=sys.stderr)
        cal = interactive(lambda: adc.read(channel), channel, volts, patch=patch)
        adc.close()
        check_rails(cal.points)
    check_span(cal)
    device = adc_key(chip, spi_port=k.spi_port, spi_device=k.spi_device, i2c_bus=k.i2c_bus, i2c_address=k.i2c_address)
    if not math.isfinite(cal.volts(0.5)):
        raise ConfigError("calibration gives non-finite volts")
    path = save_calibration(device, channel, cal)
    print(f"saved {len(cal.points)}-point calibration for {device} channel {channel} to {path}")
    from pi_synth.state import system_state_unreachable

    system = system_state_unreachable()
    if system is not None:
        print(f"  note: the service reads {system}, which this user cannot write; to calibrate for it: "
              f"sudo -u pisynth pi-synth calibrate {args.channel} …", file=sys.stderr)
    for line in report(cal):
        print(line)
    return 0
