"""The model file: everything that reads a ``.onnx`` and turns it into something to step.

* ``onnxfile.py``  reads and writes ONNX ``metadata_props`` without the ``onnx`` package
* ``card.py``      the model card: parsed, checked against the graph, read and written
* ``session.py``   onnxruntime session options, set up in one place
* ``runtime.py``   one session stepped block by block, state carried, no allocation
* ``library.py``   where models are found by name (boot partition, package, fallback)
* ``precision.py`` which of a voice's int8 and fp32 files plays on this machine

Both the audio path (``audio/``) and the control path (``control/``) depend on this
folder, never on each other.
"""
