"""The control path: source → mapping → model control.

* ``bank.py``    the model's controls: targets written by any source, read once per
                 block by the audio thread and ramped across the control frames
* ``events.py``  ``--events`` / ``--midi`` files: timed events on the audio clock
* ``mapping.py`` physical sources (knob1, cc74, …) → a model control, with range and curve
* ``midi/``      the MIDI byte-stream parser (DIN, USB and events share it)
* ``voice.py``   note handling for ``note`` models (mono voice, envelope)
"""
