"""The audio path: model (``pi_synth.model``) → synth → player → engine → backend.

* ``bank.py``     the model's control input: targets written by any source, read once
                  per block by the audio thread and ramped across the control frames
* ``safety.py``   the output guard (NaN, DC, fades, limiter) and ``_kernels.c``, its C
* ``synth.py``    runtime + bank + guard → one safe block
* ``player.py``   one synth playing, or two crossfading (hot swap), plus block hooks
* ``ring.py``     the ring between the threaded engine's two threads
* ``engine.py``   the real-time threads (read its docstring first: the rules)
* ``backends/``   where periods go: ALSA, a WAV file, nowhere (one file per backend)
"""
