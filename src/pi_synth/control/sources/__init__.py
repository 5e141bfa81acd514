"""Control sources: one module per kind of physical (or emulated) input.

A source module defines ``SOURCE``, a subclass of :class:`~.base.Source`;
``source_class("knobs")`` finds ``knobs.py``. To add a source, write one file.
"""

from __future__ import annotations

import importlib
import pkgutil

from pi_synth.control.sources.base import Source
from pi_synth.errors import ConfigError

__all__ = ["Source", "source_class", "source_kinds"]


def source_kinds() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")


def source_class(kind: str) -> type[Source]:
    if kind not in source_kinds():
        raise ConfigError(f"unknown control source {kind!r}; choose one of: {', '.join(source_kinds())}")
    return importlib.import_module(f"{__name__}.{kind}").SOURCE
