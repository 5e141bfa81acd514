"""libasound's own error printing, silenced once per process.

libasound prints its errors to stderr (an unknown PCM, a missing sequencer, a JACK
server that is not there); pi-synth's errors already say what is wrong and how to fix
it in one line. Both users of libasound — the ALSA audio backend (pyalsaaudio) and the
MIDI ports source (python-rtmidi's ALSA sequencer) — call :func:`quiet` before they
open anything, so the user sees one line, not libasound's three.
"""

from __future__ import annotations

_handler = None


def quiet() -> None:
    """Install a no-op libasound error handler (idempotent; harmless where there is no
    libasound)."""
    global _handler
    if _handler is not None:
        return
    import ctypes
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("asound") or "libasound.so.2")
        handler_t = ctypes.CFUNCTYPE(
            None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
        )
        _handler = handler_t(lambda *args: None)
        lib.snd_lib_error_set_handler(_handler)
    except (OSError, AttributeError):
        _handler = False
