"""pi-synth: a Raspberry Pi neural synthesizer.

Two paths, each in one folder:

* audio path   ``audio/``:   model file (card) → runtime → engine → backend
* control path ``control/``: source → mapping → model control

The command line lives in ``cli.py``; the config file in ``config.py``.
"""

__version__ = "0.1.0"
