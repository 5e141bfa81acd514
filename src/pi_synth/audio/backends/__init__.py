"""Audio backends: where the periods go.

A backend is one module in this package that defines ``BACKEND``, a subclass of
:class:`~pi_synth.audio.backends.base.Backend`; ``open_backend("alsa")`` finds
``alsa.py``. To add one, write one file.
"""

from __future__ import annotations

import importlib
import pkgutil

from pi_synth.audio.backends.base import Backend, Granted
from pi_synth.errors import ConfigError

__all__ = ["Backend", "Granted", "backend_class", "backend_names"]


def backend_names() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(__path__) if m.name not in ("base",)
    )


def backend_class(name: str) -> type[Backend]:
    if name not in backend_names():
        raise ConfigError(
            f"unknown audio backend {name!r}; choose one of: {', '.join(backend_names())}"
        )
    module = importlib.import_module(f"{__name__}.{name}")
    return module.BACKEND
