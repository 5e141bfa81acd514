"""The unpaced backend: discards audio as fast as it comes (benchmarks, tests).

Not paced by any clock, so ``pi-synth run`` with it plays minutes of audio in seconds
on one busy core; ``run`` says so and never gives its threads real-time priority.
``null`` is the same silence in real time.
"""

from pi_synth.audio.backends.base import Backend


class UnpacedBackend(Backend):
    """Discards every frame at once: benchmarks and tests that need no sound and no clock."""

    name = "unpaced"


BACKEND = UnpacedBackend
