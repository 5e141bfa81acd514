"""Running as a headless service: systemd notification, real-time discipline, libasound.

* :mod:`pi_synth.service.notify` — ``sd_notify`` over a plain unix datagram socket
  (READY, STATUS, WATCHDOG, RELOADING, STOPPING), no new dependency.
* :mod:`pi_synth.service.realtime` — SCHED_FIFO for the audio threads, ``mlockall``,
  CPU affinity; each step logged once when refused, never fatal.
* :mod:`pi_synth.service.alsalib` — libasound's own stderr messages silenced (ours say it in one line).

The unit that runs us is ``systemd/pi-synth.service``; the Pi is set up by
``scripts/provision.sh`` (see ``docs/raspberry-pi.md``).
"""

from pi_synth.service.notify import Notifier
from pi_synth.service.realtime import lock_memory, promote_current_thread, set_affinity

__all__ = ["Notifier", "lock_memory", "promote_current_thread", "set_affinity"]
