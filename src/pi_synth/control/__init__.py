"""The control path: source → mapping → model control.

* ``sources/``   one module per kind of input: ADC knobs/CV, MIDI ports, DIN MIDI,
                 GPIO buttons and encoders, OSC (one file per source kind)
* ``midi/``      the MIDI byte-stream parser (DIN, USB, OSC and events share it)
* ``events.py``  ``--events`` / ``--midi`` files: timed events on the audio clock
* ``router.py``  every source's way in: readings, MIDI, actions
* ``mapping.py`` physical sources (knob1, cc74, …) → a model control, with range and curve
* ``voice.py``   note handling for models with pitch and loudness (mono voice, envelope)
* ``cv.py``      CV/gate inputs and their calibration; ``calibrate.py`` the command
* ``learn.py``   MIDI learn; ``presets.py`` numbered presets
* ``rig.py``     every source the config names, and the one poller thread
* ``chips.py``   ADC chips (MCP3xxx on SPI, ADS1x15 on I2C)
* ``emulate/``   the desktop's emulated chips and the terminal panel

The control path writes the audio path's control bank only through the small interface
the router and mapping use (``set``, ``set_index``, ``index``, ``get``, ``values``,
``set_smoothing``); it never imports ``pi_synth.audio``.
"""
