"""Presets: a snapshot of control values (and optionally the mapping) in a numbered slot.

Slots are 0..127 so a MIDI program change can recall one. Each slot is one file,
``preset-NN.json`` under ``state_dir()/presets``, written atomically
(:mod:`pi_synth.state`), so a power cut during a save keeps the old preset or the new
one. A preset stores control values in card units (Hz, dB, …) with the name of the
model it was saved from; recalling it on another model is not an error: :func:`apply`
sets the controls both models share and reports the rest.

File format (``format`` 1; ``name`` optional, shown by the web page)::

    {"format": 1, "slot": 3, "name": "warm pad", "model": "organ",
     "values": {"brightness": 0.4, "loudness": -12.0, "pitch": 220.0},
     "mapping": {"cc74": {"control": "brightness"}}}      # optional

``mapping`` is whatever the caller passes (``mapping.routes_to_json`` writes this shape).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from pi_synth.errors import ConfigError
from pi_synth.state import atomic_write_json, read_json, state_dir

FORMAT = 1
SLOTS = range(0, 128)
MAX_NAME = 64
_NAME = re.compile(r"preset-(\d{2,3})\.json")

__all__ = ["PresetStore", "apply", "check_slot", "check_name"]


def check_slot(slot: Any) -> int:
    if isinstance(slot, bool) or not isinstance(slot, int) or slot not in SLOTS:
        raise ValueError(f"preset slot must be a whole number 0..127, got {slot!r}")
    return slot


def check_name(name: Any) -> str:
    """A preset's name: up to 64 printable characters (surrounding spaces dropped)."""
    if not isinstance(name, str):
        raise ValueError("preset name must be text")
    name = name.strip()
    if len(name) > MAX_NAME or not name.isprintable():
        raise ValueError(f"preset name must be at most {MAX_NAME} printable characters")
    return name


class PresetStore:
    """Numbered presets in a directory (default ``state_dir()/presets``, made on demand)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self._directory = Path(directory) if directory is not None else None

    @property
    def directory(self) -> Path:
        if self._directory is None:  # resolved late: tests and the service set the env first
            self._directory = state_dir() / "presets"
        return self._directory

    def path(self, slot: int) -> Path:
        return self.directory / f"preset-{check_slot(slot):02d}.json"

    def save(self, slot: int, *, model: str, values: dict[str, float],
             mapping: dict | None = None, name: str = "", file: str = "",
             units: dict[str, str] | None = None) -> Path:
        """Write the preset atomically; returns its path.

        ``values`` must be finite numbers (``ValueError`` names the bad one).
        """
        path = self.path(slot)
        name = check_name(name)
        if not isinstance(model, str):
            raise TypeError("preset model must be a string (the card name)")
        clean: dict[str, float] = {}
        for control, v in dict(values).items():
            if not isinstance(control, str) or isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"preset value {control!r} must be a number, got {v!r}")
            if not math.isfinite(v):
                raise ValueError(f"preset value {control!r} must be finite, got {v!r}")
            clean[control] = float(v)
        doc: dict[str, Any] = {"format": FORMAT, "slot": slot, "model": model, "values": clean}
        if name:
            doc["name"] = name
        if file:  # the model file's name (an upload may share its card's name with another)
            doc["file"] = str(file)
        if units:  # so a recall on another model sets only what means the same there
            doc["units"] = {str(k): str(v) for k, v in units.items()}
        if mapping is not None:
            if not isinstance(mapping, dict):
                raise TypeError("preset mapping must be a dict")
            doc["mapping"] = mapping
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, doc)
        return path

    def load(self, slot: int) -> dict | None:
        """The preset in ``slot``, or None if the slot is empty.

        A corrupt file raises :class:`~pi_synth.errors.ConfigError` naming it; the
        caller logs it and keeps playing (the router's action hook already does).
        """
        path = self.path(slot)
        doc = read_json(path)
        if doc is None:
            return None
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: a preset must be a JSON object")
        values = doc.get("values")
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            for k, v in values.items()
        ):
            raise ConfigError(f"{path}: key 'values' must map control names to numbers")
        if "mapping" in doc and not isinstance(doc["mapping"], dict):
            raise ConfigError(f"{path}: key 'mapping' must be an object")
        if doc.get("format", FORMAT) != FORMAT:
            raise ConfigError(f"{path}: preset format {doc.get('format')!r} is not supported "
                              f"(this pi-synth reads format {FORMAT})")
        doc.setdefault("model", "")
        if not isinstance(doc.get("name", ""), str):
            raise ConfigError(f"{path}: key 'name' must be text")
        doc.setdefault("name", "")
        doc["slot"] = slot
        return doc

    def rename(self, slot: int, name: str) -> Path:
        """Give the preset in ``slot`` another name (``ValueError`` if the slot is empty)."""
        doc = self.load(slot)
        if doc is None:
            raise ValueError(f"preset slot {slot} is empty")
        return self.save(slot, model=doc["model"], values=doc["values"], mapping=doc.get("mapping"),
                         name=name)

    def slots(self) -> list[int]:
        """Slots holding a preset, ascending (temp files of interrupted saves are ignored)."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        out = []
        for name in names:
            m = _NAME.fullmatch(name)
            if m and int(m.group(1)) in SLOTS and name == f"preset-{int(m.group(1)):02d}.json":
                out.append(int(m.group(1)))
        return sorted(out)

    def delete(self, slot: int) -> bool:
        """Remove the preset; returns False if the slot was already empty."""
        try:
            self.path(slot).unlink()
        except FileNotFoundError:
            return False
        return True


def apply(preset: dict, bank, mapping=None, units: dict[str, str] | None = None) -> list[str]:
    """Set the bank's controls from ``preset['values']``; return the names it skipped.

    Only controls the bank's model has (in the same unit, when the preset and ``units``
    say them) are set (clamped to its ranges by the bank), so a
    preset saved on another model recalls what it can. Non-numeric or non-finite values
    are skipped too. With a :class:`~pi_synth.control.mapping.Mapping`, the preset's
    ``mapping`` (if any) is applied to it as well: routes to controls the model lacks
    are skipped and their control names reported the same way.
    """
    skipped = set()
    known = set(bank.names)
    saved_units = preset.get("units") if isinstance(preset.get("units"), dict) else {}
    for name, value in preset.get("values", {}).items():
        if (name not in known or isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            skipped.add(name)
            continue
        if units is not None and name in saved_units and saved_units[name] != units.get(name):
            skipped.add(name)  # same name, other meaning (organ's brightness 0..1, the flute's dB/octave)
            continue
        bank.set(name, value)
    if mapping is not None and preset.get("mapping"):
        from pi_synth.control.mapping import route_fits, routes_from_json

        for src, route in routes_from_json(preset["mapping"], "preset mapping").items():
            if route_fits(route, known):
                mapping.routes[src] = route
            else:
                skipped.add(route.control)
    return sorted(skipped)
