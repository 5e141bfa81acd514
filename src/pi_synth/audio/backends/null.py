"""The null backend: discards audio as fast as it comes (benchmarks, tests)."""

from pi_synth.audio.backends.base import Backend


class NullBackend(Backend):
    """Discards every frame at once: benchmarks and tests that need no sound."""

    name = "null"


BACKEND = NullBackend
