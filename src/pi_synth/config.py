"""The config file: TOML, found in a fixed order, every error naming file, line and key.

Search order (first found wins): ``--config``, ``$PI_SYNTH_CONFIG``,
``/boot/firmware/pi-synth.toml`` (the FAT boot partition: editable from any laptop),
``~/.config/pi-synth/config.toml``, then the built-in defaults below. Unknown keys are
warned about, not fatal, so an old pi-synth reads a newer file. A commented template
of every key is ``pi_synth/data/pi-synth.toml``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from pi_synth.errors import ConfigError

BOOT_CONFIG = "/boot/firmware/pi-synth.toml"
MAX_STRING = 4096  # a path or a PCM name; longer is a mistake


@dataclass(frozen=True)
class Key:
    type: type
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple | Callable[[], tuple] | None = None  # a callable: asked when a value is checked
    help: str = ""

    def allowed(self) -> tuple | None:
        return self.choices() if callable(self.choices) else self.choices

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is wrong, or None."""
        t = self.type
        if t is list:
            if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                return f"must be a list of integers, got {value!r}"
            if self.lo is not None and not all(self.lo <= v <= self.hi for v in value):
                return f"must hold integers in {self.lo}..{self.hi}, got {value!r}"
            return None
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and t is not bool or not isinstance(value, t):
            return f"must be {'a number' if t is float else 'an integer' if t is int else 'true or false' if t is bool else 'a string'}, got {value!r}"
        if t is float and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if t is str:
            if len(value) > MAX_STRING:
                return f"must be at most {MAX_STRING} characters, got {len(value)}"
            bad = next((c for c in value if ord(c) < 32 or ord(c) == 127), None)
            if bad is not None:
                return f"must not contain control characters, got {bad!r} in {value!r}"
        if self.lo is not None and (value < self.lo or value > self.hi):
            return f"must be in {self.lo}..{self.hi}, got {value!r}"
        choices = self.allowed()
        if choices is not None and value not in choices:
            shown = ", ".join(str(c) if c else '"" (none)' for c in choices)
            return f"must be one of {shown}, got {value!r}"
        return None


def _map_actions() -> tuple:
    from pi_synth.control.mapping import ACTIONS

    return ("", *ACTIONS)


def _backends() -> tuple:
    """The audio backends there are (one file each in ``audio/backends/``)."""
    from pi_synth.audio.backends import backend_names

    return tuple(backend_names())


def _chips() -> tuple:
    """The ADC chips there are (``control/chips/``), and ``none``."""
    from pi_synth.control.chips import chip_names

    return ("none",) + chip_names()


SCHEMA: dict[str, dict[str, Key]] = {
    "audio": {
        "backend": Key(str, "alsa", choices=_backends, help="where the sound goes"),
        "device": Key(str, "default", help="ALSA PCM name (a plug PCM: default, plughw:CARD=…)"),
        "capture": Key(str, "", help="audio input PCM: '' = the playback device (full duplex), 'none' = no input"),
        "period": Key(int, 256, 16, 16384, help="ALSA period in frames"),
        "periods": Key(int, 2, 2, 32, help="ALSA buffer size in periods (engine = auto may add some to play direct)"),
        "ahead_blocks": Key(int, 1, 1, 16, help="model blocks the inference thread keeps ready"),
        "format": Key(str, "S16_LE", choices=("S16_LE", "S32_LE", "FLOAT_LE")),
        "realtime": Key(bool, True, help="SCHED_FIFO for the two audio threads where permitted"),
        "cpus": Key(list, [], 0, 255, help="CPUs the audio threads are pinned to ([] = any)"),
        "engine": Key(str, "auto", choices=("auto", "threaded", "direct"),
                      help="direct: one thread, when a block renders well inside the buffer's margin; threaded: a ring"),
        "late_render": Key(bool, True, help="direct engine: render each block as late as its measured render "
                           "time allows, so controls that arrive meanwhile make it (less latency)"),
    },
    "model": {
        "path": Key(str, "", help="model file or shipped model name; empty = the default model"),
        "precision": Key(str, "auto", choices=("auto", "int8", "fp32"),
                         help="a voice shipped in both: auto = fp32 unless int8 renders clearly faster here (measured once)"),
        "threads": Key(int, 1, 1, 16, help="onnxruntime intra-op threads (1 gives the best tail)"),
        "warmup_blocks": Key(int, 4, 0, 256),
        "cache": Key(bool, True, help="cache the optimized graph on disk"),
    },
    "output": {
        "gain_db": Key(float, 0.0, -60.0, 24.0),
        "channels": Key(int, 0, 0, 2, help="0: the model's own; 2: always stereo (a mono model on both "
                                           "channels, so a stereo model swapped in plays in stereo); 1: always mono"),
        "fade_ms": Key(float, 30.0, 1.0, 5000.0),
        "limit_dbfs": Key(float, -1.0, -40.0, 0.0),
        "record_seconds": Key(float, 30.0, 0.0, 600.0,
                              help="keep the last N seconds played, for the web page's download (0 = off)"),
    },
    "input": {
        "gain_db": Key(float, 0.0, -40.0, 40.0, help="trim gain on the audio input (the input_gain control comes on top)"),
        "gate_db": Key(float, -60.0, -120.0, 0.0, help="noise gate threshold in dBFS (-120 = no gate)"),
        "gate_release_ms": Key(float, 100.0, 1.0, 5000.0, help="how long the gate takes to close"),
        "dc_hz": Key(float, 5.0, 0.0, 50.0, help="DC removal corner (0 = off)"),
    },
    "midi": {
        "channel": Key(int, 0, 0, 16, help="1..16, or 0 for all channels"),
        "bend_range": Key(float, 2.0, 0.0, 48.0, help="pitch bend range in semitones"),
        "program": Key(str, "model", choices=("model", "preset", "off"),
                       help="what a program change selects"),
        "ports": Key(str, "all", help="MIDI input ports: 'all', a name substring, or '' for none"),
        "din": Key(str, "", help="DIN MIDI serial device, e.g. /dev/serial0 ('' = off)"),
        "din_baud": Key(int, 31250, 300, 4000000),
        "attack_ms": Key(float, 5.0, 0.0, 10000.0),
        "release_ms": Key(float, 250.0, 0.0, 30000.0),
    },
    "voice": {
        "max_voices": Key(int, 0, 0, 256, help="voices a batched note model plays at once; 0 = as many as fit here (measured)"),
        "mode": Key(str, "poly", choices=("poly", "mono", "mpe"),
                    help="poly: a voice per key; mono: one voice, last-note priority; mpe: per-channel bend and pressure"),
        "steal": Key(str, "quietest", choices=("quietest", "oldest"),
                     help="beyond the budget, which voice a new key takes (released ones first)"),
        "steal_fade_ms": Key(float, 5.0, 0.0, 100.0, help="how long a stolen voice fades out"),
        "mpe_bend_range": Key(float, 48.0, 0.0, 96.0, help="MPE: semitones at full bend on a note's channel"),
        "pressure_db": Key(float, 0.0, 0.0, 48.0, help="dB added at full channel pressure (aftertouch); 0 = off"),
    },
    "knobs": {
        "chip": Key(str, "none", choices=_chips),
        "channels": Key(list, [0, 1, 2, 3, 4, 5, 6, 7], 0, 7, help="ADC channels wired to knobs"),
        "poll_hz": Key(float, 200.0, 10.0, 2000.0),
        "deadband": Key(float, 0.004, 0.0, 0.2, help="change (0..1) below which a knob is steady"),
        "smooth_ms": Key(float, 20.0, 0.0, 2000.0),
        "vref": Key(float, 3.3, 0.5, 5.5),
        "spi_port": Key(int, 0, 0, 6),
        "spi_device": Key(int, 0, 0, 2),
        "i2c_bus": Key(int, 1, 0, 30),
        "i2c_address": Key(int, 0x48, 0x03, 0x77),
    },
    "osc": {
        "enabled": Key(bool, False, help="OSC control server"),
        "host": Key(str, "127.0.0.1", help="address to listen on: localhost unless you mean it"),
        "port": Key(int, 9000, 0, 65535),
    },
    "web": {
        "enabled": Key(bool, False, help="the web page (pi-synth-web.service, its own process)"),
        "host": Key(str, "127.0.0.1", help="address to listen on; any other than localhost needs password_hash"),
        "port": Key(int, 8080, 1, 65535),
        "password_hash": Key(str, "", help="set with: pi-synth web-password (never the password itself)"),
        "session_minutes": Key(float, 240.0, 1.0, 10080.0, help="a login lasts this long"),
        "upload_max_mb": Key(float, 64.0, 0.01, 2048.0, help="largest model file accepted"),
        "check_seconds": Key(float, 120.0, 5.0, 3600.0, help="time allowed to check an uploaded model"),
        "login_per_minute": Key(int, 5, 1, 100, help="failed logins allowed per minute and address"),
    },
    "leds": {
        "activity": Key(int, -1, -1, 27, help="GPIO of the activity LED (-1 = none)"),
        "xrun": Key(int, -1, -1, 27),
        "clip": Key(int, -1, -1, 27),
    },
    "log": {
        "level": Key(str, "info", choices=("debug", "info", "warning", "error")),
    },
}


# Arrays of tables ([[map]], [[cv]], …): each item is checked against its schema.
ARRAYS: dict[str, dict[str, Key]] = {
    "map": {
        "source": Key(str, "", help="knob1.., cc74, cv1.., enc1.."),
        "control": Key(str, "", help="a control of the model card"),
        "action": Key(str, "", choices=_map_actions, help="or an action instead of a control"),
        "min": Key(float, 0.0, 0.0, 1.0, help="part of the control's range (0..1) at source 0"),
        "max": Key(float, 1.0, 0.0, 1.0),
        "invert": Key(bool, False),
        "curve": Key(str, "", choices=("", "lin", "log", "exp")),
        "smooth_ms": Key(float, 0.0, 0.0, 5000.0),
    },
    "cv": {
        "channel": Key(int, 0, 0, 7, help="ADC channel"),
        "name": Key(str, "", help="source name (default cv1, cv2, …)"),
        "role": Key(str, "control", choices=("pitch", "gate", "control")),
        "frontend": Key(str, "direct", choices=("direct", "bipolar5", "unipolar10", "bipolar10")),
        "base_note": Key(float, 60.0, 0.0, 127.0, help="MIDI note at 0 V (pitch role)"),
        "threshold": Key(float, 1.0, -10.0, 10.0, help="gate on above this many volts"),
        "hysteresis": Key(float, 0.3, 0.0, 5.0),
        "min_ms": Key(float, 3.0, 0.0, 1000.0, help="shortest gate"),
        "min_volts": Key(float, 0.0, -10.0, 10.0, help="control role: volts at source 0"),
        "max_volts": Key(float, 5.0, -10.0, 10.0, help="control role: volts at source 1"),
    },
    "button": {
        "pin": Key(int, 17, 0, 27),
        "action": Key(str, "next_model"),
        "hold_action": Key(str, ""),
        "hold_s": Key(float, 1.0, 0.1, 10.0),
        "arg": Key(int, 0, 0, 127),
    },
    "encoder": {
        "a": Key(int, 5, 0, 27),
        "b": Key(int, 6, 0, 27),
        "name": Key(str, "", help="source name (default enc1, enc2, …)"),
        "step": Key(float, 0.01, 0.0001, 0.5, help="change (0..1) per detent"),
        "accel": Key(float, 4.0, 1.0, 50.0, help="speed-up for fast turns (1 = none)"),
    },
}


@dataclass
class Config:
    path: str | None  # None: built-in defaults
    values: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)  # "table.key" → "FILE:LINE" it was set at

    def where(self, dotted: str) -> str | None:
        """Where ``table.key`` was set (``FILE:LINE``), None if it is the default."""
        return self.origins.get(dotted)

    def __getattr__(self, table: str):
        try:
            v = self.values[table]
        except KeyError:
            raise AttributeError(table) from None
        return [SimpleNamespace(**i) for i in v] if isinstance(v, list) else SimpleNamespace(**v)

    def get(self, dotted: str) -> Any:
        table, key = dotted.split(".", 1)
        return self.values[table][key]


def defaults() -> dict[str, Any]:
    d: dict[str, Any] = {t: {k: spec.default for k, spec in keys.items()} for t, keys in SCHEMA.items()}
    for t in ARRAYS:
        d[t] = []
    return d


class _Lines:
    """Where each table, array item and key is in the TOML text: one pass over the text,
    made on the first question (a file with thousands of unknown keys must not cost a
    rescan per key)."""

    _HEADER = re.compile(r"^\[\s*([^\]]+?)\s*\]$")
    _ARRAY = re.compile(r"^\[\[\s*([^\]]+?)\s*\]\]$")
    _KEY = re.compile(r"^([A-Za-z0-9_.\"-]+)\s*=")

    def __init__(self, text: str):
        self.text = text
        self._index: dict | None = None

    def _build(self) -> dict:
        index: dict = {}
        current, item, counts = "", None, {}
        for n, raw in enumerate(self.text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if line.startswith("["):
                m = self._ARRAY.match(line)
                if m:
                    current = m.group(1).strip().strip('"')
                    item = counts[current] = counts.get(current, -1) + 1
                    index.setdefault((current, item), n)
                    continue
                m = self._HEADER.match(line)
                if m:
                    current, item = m.group(1).strip().strip('"'), None
                    index.setdefault((current,), n)
                continue
            m = self._KEY.match(line)
            if m:
                lhs = m.group(1).replace('"', "")
                if item is not None:
                    index.setdefault((current, item, lhs), n)
                else:
                    full = f"{current}.{lhs}" if current else lhs
                    table, _, key = full.partition(".")
                    index.setdefault((table, key) if key else (table,), n)
        return index

    def get(self, *where) -> int | None:
        if self._index is None:
            self._index = self._build()
        return self._index.get(tuple(w for w in where if w is not None))


MAX_WARNINGS = 10  # unknown keys named one by one; past this, counted in one line
MAX_BYTES = 1 << 20  # a config is a page or two; a bigger file is the wrong file


def parse(text: str, path: str | None = None) -> Config:
    where = path or "<config>"
    if text.startswith("\ufeff"):  # a byte-order mark, as Windows editors save "UTF-8"
        text = text[1:]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid TOML: arrays or tables nested too deeply") from None
    values = defaults()
    warnings: list[str] = []
    origins: dict[str, str] = {}
    unknown = 0
    lines = _Lines(text)

    def at(*key):
        line = lines.get(*key)
        return f"{where}:{line}" if line else where

    def warn_unknown(text_: str) -> None:
        nonlocal unknown
        unknown += 1
        if unknown <= MAX_WARNINGS:
            warnings.append(text_)

    for table, content in data.items():
        if table in ARRAYS:
            if not isinstance(content, list):
                raise ConfigError(f"{at(table)}: use [[{table}]] (an array of tables) for {table!r}")
            for i, item in enumerate(content):
                iw = at(table, i)
                if not isinstance(item, dict):
                    raise ConfigError(f"{iw}: each [[{table}]] must be a table")
                entry = {k: spec.default for k, spec in ARRAYS[table].items()}
                for key, value in item.items():
                    spec = ARRAYS[table].get(key)
                    kw = at(table, i, key) if lines.get(table, i, key) else iw
                    if spec is None:
                        warn_unknown(f"{kw}: unknown key '{table}.{key}' ignored "
                                     f"(known: {', '.join(ARRAYS[table])})")
                        continue
                    why = spec.check(value)
                    if why:
                        raise ConfigError(f"{kw}: key '{table}[{i}].{key}' {why}")
                    entry[key] = float(value) if spec.type is float else value
                entry["_where"] = iw
                values[table].append(entry)
            continue
        if table not in SCHEMA and not isinstance(content, (dict, list)):
            home = [t for t, keys in SCHEMA.items() if table in keys]
            warn_unknown(f"{at(table)}: key {table!r} is outside any section, ignored: put it under "
                         + (" or ".join(f"[{t}]" for t in home) if home else "its [section]"))
            continue
        if table not in SCHEMA:
            warn_unknown(f"{at(table)}: unknown section [{table}] ignored "
                         f"(known: {', '.join(list(SCHEMA) + list(ARRAYS))})")
            continue
        if not isinstance(content, dict):
            raise ConfigError(f"{at(table)}: {table!r} must be a [{table}] section")
        for key, value in content.items():
            spec = SCHEMA[table].get(key)
            if spec is None:
                warn_unknown(f"{at(table, key)}: unknown key '{table}.{key}' ignored "
                             f"(known: {', '.join(SCHEMA[table])})")
                continue
            why = spec.check(value)
            if why:
                raise ConfigError(f"{at(table, key)}: key '{table}.{key}' {why}")
            values[table][key] = float(value) if spec.type is float else value
            origins[f"{table}.{key}"] = at(table, key)
    _check_map_sources(values, warnings)
    if unknown > MAX_WARNINGS:
        warnings.append(f"{where}: {unknown - MAX_WARNINGS} more unknown keys or sections ignored "
                        f"({unknown} in all): is this the right file?")
    return Config(path, values, warnings, origins)


def _check_map_sources(values: dict, warnings: list[str]) -> None:
    """A ``[[map]]`` source no control of this config sends: out of range (``cc200``,
    ``knob9`` with eight knobs) is an error; a name nothing here sends is kept (OSC's
    ``/pi-synth/source/NAME`` reaches any name) and warned about."""
    import re

    knobs = len(values["knobs"]["channels"])
    sent = {e["name"] or f"{prefix}{i + 1}" for t, prefix in (("cv", "cv"), ("encoder", "enc"))
            for i, e in enumerate(values[t])}  # the names the ADC and GPIO sources give them
    first: dict[str, str] = {}
    for item in values["map"]:
        src, w = item["source"], item["_where"]
        if src and src in first:
            warnings.append(f"{w}: a second [[map]] for {src!r} replaces the one at {first[src]}; a source "
                            "drives one control or action")
        first.setdefault(src, w)
        if item["control"] and item["action"]:
            raise ConfigError(f"{w}: [[map]] for {src!r} gives both 'control' and 'action'; a source does one")
        m = re.fullmatch(r"(knob|cc)(\d+)", src)
        if src in sent or not src:
            continue
        if m and m.group(1) == "cc":
            if int(m.group(2)) > 127:
                raise ConfigError(f"{w}: [[map]] source {src!r}: MIDI CC numbers are 0..127")
        elif m:
            if not 1 <= int(m.group(2)) <= knobs:
                raise ConfigError(f"{w}: [[map]] source {src!r}: [knobs] channels wires knob1..knob{knobs}")
        else:
            warnings.append(f"{w}: [[map]] source {src!r} is sent by no control in this config (knob1..knob{knobs}, "
                            f"cc0..cc127, cv1.. and enc1.. for each [[cv]] and [[encoder]], or their names); only "
                            f"OSC /pi-synth/source/{src} reaches it")


def candidates(explicit: str | None = None) -> list[tuple[str, bool]]:
    """(path, must_exist) in search order."""
    out: list[tuple[str, bool]] = []
    if explicit:
        out.append((explicit, True))
    env = os.environ.get("PI_SYNTH_CONFIG")
    if env:
        out.append((env, True))
    out.append((BOOT_CONFIG, False))
    home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    out.append((os.path.join(home, "pi-synth", "config.toml"), False))
    return out


def _explicit_problem(path: str) -> str | None:
    """Why ``path`` (from --config or $PI_SYNTH_CONFIG) is not a config file we can read, or None."""
    import errno
    import stat

    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symlink loop (a link that points back to itself); give the .toml file"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return "config file not found; give the path of a .toml file, or create it"
        return f"cannot read config ({e.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a config file; give the .toml file (e.g. DIR/pi-synth.toml)"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a device or a pipe); give a .toml file"
    if st.st_size > MAX_BYTES:
        return (f"is {st.st_size / 1e6:.1f} MB; a config is a few KB (template: "
                "src/pi_synth/data/pi-synth.toml): is it the right file?")
    return None


def load(explicit: str | None = None) -> Config:
    for path, must in candidates(explicit):
        if must:
            why = _explicit_problem(path)
            if why:
                src = "--config" if path == explicit else "$PI_SYNTH_CONFIG"
                raise ConfigError(f"{path}: {why} (from {src})")
        p = Path(path)
        if p.is_file():
            try:
                with open(p, "rb") as f:
                    raw = f.read(MAX_BYTES + 1)
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02X} at {e.start}); "
                                  "save it as UTF-8") from None
            except OSError as e:
                raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from None
            if len(raw) > MAX_BYTES:
                raise ConfigError(f"{path}: over {MAX_BYTES // 1024} KB; a config is a few KB: is it the right file?")
            return parse(text, str(path))
    return Config(None, defaults())


def override(cfg: Config, dotted: str, value: Any, where: str = "command line") -> None:
    """Apply a command-line override (``--device``…) with the same checks."""
    table, key = dotted.split(".", 1)
    why = SCHEMA[table][key].check(value)
    if why:
        raise ConfigError(f"{where}: {dotted} {why}")
    cfg.values[table][key] = value
    cfg.origins[dotted] = where


def keep_overrides(old: Config, new: Config) -> None:
    """A reloaded config keeps what the command line set over the old one (``--backend``,
    ``--period``…): the flags outrank the file for the whole run."""
    for dotted, where in old.origins.items():
        if where.startswith("--"):
            override(new, dotted, old.get(dotted), where)
