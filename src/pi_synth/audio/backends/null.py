"""The null backend: discards audio as fast as it comes (benchmarks, tests)."""

from pi_synth.audio.backends.base import Backend


class NullBackend(Backend):
    name = "null"


BACKEND = NullBackend
