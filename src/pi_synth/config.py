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
from typing import Any

from pi_synth.errors import ConfigError

BOOT_CONFIG = "/boot/firmware/pi-synth.toml"


@dataclass(frozen=True)
class Key:
    type: type
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple | None = None
    help: str = ""

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is wrong, or None."""
        t = self.type
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and t is not bool or not isinstance(value, t):
            return f"must be {'a number' if t is float else 'an integer' if t is int else 'true or false' if t is bool else 'a string'}, got {value!r}"
        if t is float and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if self.lo is not None and (value < self.lo or value > self.hi):
            return f"must be in {self.lo}..{self.hi}, got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}, got {value!r}"
        return None


SCHEMA: dict[str, dict[str, Key]] = {
    "audio": {
        "backend": Key(str, "alsa", choices=("alsa", "wav", "null"), help="where the sound goes"),
        "device": Key(str, "default", help="ALSA PCM name (a plug PCM: default, plughw:CARD=…)"),
        "period": Key(int, 256, 16, 16384, help="ALSA period in frames"),
        "periods": Key(int, 2, 2, 32, help="ALSA buffer size in periods"),
        "ahead_blocks": Key(int, 1, 1, 16, help="model blocks the inference thread keeps ready"),
        "format": Key(str, "S16_LE", choices=("S16_LE", "S32_LE", "FLOAT_LE")),
    },
    "model": {
        "path": Key(str, "", help="model file or shipped model name; empty = the default model"),
        "threads": Key(int, 1, 1, 16, help="onnxruntime intra-op threads (1 gives the best tail)"),
        "warmup_blocks": Key(int, 4, 0, 256),
        "cache": Key(bool, True, help="cache the optimized graph on disk"),
    },
    "output": {
        "gain_db": Key(float, 0.0, -60.0, 24.0),
        "fade_ms": Key(float, 30.0, 1.0, 5000.0),
        "limit_dbfs": Key(float, -1.0, -40.0, 0.0),
    },
    "midi": {
        "channel": Key(int, 0, 0, 16, help="1..16, or 0 for all channels"),
        "bend_range": Key(float, 2.0, 0.0, 48.0, help="pitch bend range in semitones"),
    },
    "log": {
        "level": Key(str, "info", choices=("debug", "info", "warning", "error")),
    },
}


@dataclass
class Config:
    path: str | None  # None: built-in defaults
    values: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    def __getattr__(self, table: str) -> SimpleNamespace:
        try:
            return SimpleNamespace(**self.values[table])
        except KeyError:
            raise AttributeError(table) from None

    def get(self, dotted: str) -> Any:
        table, key = dotted.split(".", 1)
        return self.values[table][key]


def defaults() -> dict[str, dict[str, Any]]:
    return {t: {k: spec.default for k, spec in keys.items()} for t, keys in SCHEMA.items()}


def _line_of(text: str, table: str, key: str | None) -> int | None:
    """Best-effort line number (1-based) of ``[table] key`` in the TOML text."""
    current = ""
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        m = re.match(r"^\[\s*([^\]]+?)\s*\]$", line)
        if m:
            current = m.group(1).strip().strip('"')
            if key is None and current == table:
                return n
            continue
        if key is None:
            continue
        m = re.match(r"^([A-Za-z0-9_.\"-]+)\s*=", line)
        if m:
            lhs = m.group(1).replace('"', "")
            full = f"{current}.{lhs}" if current else lhs
            if full == f"{table}.{key}":
                return n
    return None


def parse(text: str, path: str | None = None) -> Config:
    where = path or "<config>"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    values = defaults()
    warnings: list[str] = []

    def at(table, key=None):
        line = _line_of(text, table, key)
        return f"{where}:{line}" if line else where

    for table, content in data.items():
        if table not in SCHEMA:
            warnings.append(f"{at(table)}: unknown section [{table}] ignored "
                            f"(known: {', '.join(SCHEMA)})")
            continue
        if not isinstance(content, dict):
            raise ConfigError(f"{at(table, None)}: {table!r} must be a [{table}] section")
        for key, value in content.items():
            spec = SCHEMA[table].get(key)
            if spec is None:
                warnings.append(f"{at(table, key)}: unknown key '{table}.{key}' ignored "
                                f"(known: {', '.join(SCHEMA[table])})")
                continue
            why = spec.check(value)
            if why:
                raise ConfigError(f"{at(table, key)}: key '{table}.{key}' {why}")
            values[table][key] = float(value) if spec.type is float else value
    return Config(path, values, warnings)


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


def load(explicit: str | None = None) -> Config:
    for path, must in candidates(explicit):
        p = Path(path)
        if p.is_file():
            try:
                text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"{path}: cannot read config ({e})") from None
            return parse(text, str(path))
        if must:
            raise ConfigError(f"{path}: config file not found (from --config or $PI_SYNTH_CONFIG)")
    return Config(None, defaults())


def override(cfg: Config, dotted: str, value: Any, where: str = "command line") -> None:
    """Apply a command-line override (``--device``…) with the same checks."""
    table, key = dotted.split(".", 1)
    why = SCHEMA[table][key].check(value)
    if why:
        raise ConfigError(f"{where}: {dotted} {why}")
    cfg.values[table][key] = value
