"""The audio path: model file → runtime → engine → backend.

* ``card.py``     the model card: what a ``.onnx`` must say about itself
* ``onnxfile.py`` reads the card from the file without the ``onnx`` package
* ``runtime.py``  one onnxruntime session stepped block by block, state carried
* ``synth.py``    runtime + controls + output guard → one safe block
* ``safety.py``   the output guard (NaN, DC, fades, limiter)
* ``ring.py``     the ring between the inference and output threads
* ``engine.py``   the two real-time threads (read its docstring first)
* ``backends/``   where periods go: ALSA, a WAV file, nowhere
"""
