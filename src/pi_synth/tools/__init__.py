"""Desktop tools: what makes or checks model files, never what plays them.

* ``quantize.py``   int8 models and the report that says whether int8 paid off
* ``convert/``      converters from other tools' models (RAVE streaming exports)
* ``procedural.py`` procedural test and fallback voices built as ONNX graphs

They need the ``onnx`` package (and torch for ``convert``): the ``convert`` and ``dev``
extras, never the Pi. The firmware's import graph never reaches this folder — the CLI
imports a tool only inside the command that runs it (``tests/test_layout.py``).
"""
