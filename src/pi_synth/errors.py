"""Errors a user can fix.

Every error that bad input can cause derives from :class:`PiSynthError` and carries
one line that says what is wrong and how to fix it. The CLI prints that line and
exits 2; anything else is a bug (exit 1). Each class also derives from the builtin
that fits, as gpiozero does (``PinInvalidPin(PinError, ValueError)``), so callers
can catch either.
"""


class PiSynthError(Exception):
    """Base of every user-fixable error: ``str(err)`` is the one line to show."""


class ModelError(PiSynthError, ValueError):
    """A model file is missing, unreadable, or its card disagrees with its graph."""


class CardError(ModelError):
    """The model card (ONNX metadata ``pi_synth``) is missing or invalid."""


class ConfigError(PiSynthError, ValueError):
    """A config file or a command-line value is wrong."""


class DeviceError(PiSynthError, OSError):
    """An audio or control device cannot be opened."""


class OutputError(DeviceError):
    """The output cannot take more (a full disk, a closed pipe): the stream ends there;
    reopening would not bring it back."""


class EventsError(PiSynthError, ValueError):
    """An ``--events`` file or ``--midi`` file is malformed."""


class InputError(PiSynthError, ValueError):
    """An audio input cannot be used: a WAV for ``--input`` that is not audio, or a model
    asked to take audio that cannot."""
