"""Converters from models people already have to pi-synth models (``pi-synth convert ...``).

Conversion runs on a desktop machine with torch (``pip install 'pi-synth[convert]'``); the
result is an ``.onnx`` model with a card that plays on the Pi with onnxruntime alone.

- :mod:`pi_synth.tools.convert.rave`: RAVE streaming TorchScript exports (``rave export --streaming``).
- :mod:`pi_synth.tools.convert.stream`: streaming blocks with explicit state, used to rebuild them.
"""
