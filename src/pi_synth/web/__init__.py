"""The web page: the box's face for people who are not programmers.

Its own process (``pi-synth web``, ``pi-synth-web.service``), never the audio process: it
serves a plain HTML/CSS/JS page (``static/``, no build step) and talks to the instrument
only through OSC on localhost (:mod:`pi_synth.web.oscclient`, ``docs/osc.md``). It may read
model cards and configs to validate them; an uploaded model is checked by a separate,
resource-limited process (:mod:`pi_synth.web.check`) before it is installed. Security
(login, sessions, CSRF, upload limits): :mod:`pi_synth.web.auth` and ``docs/web.md``.
"""
