"""MIDI input ports (USB keyboards, the ALSA sequencer, JACK) via mido + python-rtmidi.

Ports are chosen by ``ports``: ``"all"``, or a substring of the port name (matched
case-insensitively, like python-sounddevice's device names). A rescan every
``rescan_s`` opens ports that appeared since (a keyboard plugged in after start) and
forgets ports that went away. Messages arrive on rtmidi's callback thread and go
straight to the router. ``api`` picks the rtmidi API (``""`` = the platform default,
ALSA on Linux; ``"UNIX_JACK"`` for JACK MIDI).
"""

from __future__ import annotations

import logging
import threading

from pi_synth.control.sources.base import Source

log = logging.getLogger(__name__)


class MidiPortsSource(Source):
    """Every MIDI input port whose name matches, opened as it appears (USB, ALSA, JACK)."""

    kind = "midi_ports"

    def _open(self):
        import mido

        from pi_synth.service.alsalib import quiet

        quiet()  # python-rtmidi's ALSA sequencer: our one line, not libasound's

        api = self.options.get("api", "")
        self.backend = mido.Backend(f"mido.backends.rtmidi/{api}" if api else "mido.backends.rtmidi", load=True)
        self.match = self.options.get("ports", "all")
        self.rescan_s = self.options.get("rescan_s", 2.0)
        self.ignore = tuple(self.options.get("ignore", ("Midi Through",)))
        self.ports: dict[str, object] = {}
        self._stop = threading.Event()
        try:
            self.backend.get_input_names()
        except Exception as e:
            from pi_synth.errors import DeviceError

            raise DeviceError(
                f"MIDI ports unavailable ({str(e).strip() or type(e).__name__}); on Linux load the "
                "ALSA sequencer (modprobe snd-seq) or set midi.ports = \"\" to silence this"
            ) from None
        self.rescan()
        self._thread = threading.Thread(target=self._rescan_loop, name="pi-synth-midi-scan", daemon=True)
        self._thread.start()

    def _wanted(self, name: str) -> bool:
        if any(i.lower() in name.lower() for i in self.ignore):
            return False
        return self.match == "all" or self.match.lower() in name.lower()

    def rescan(self) -> None:
        try:
            names = self.backend.get_input_names()
        except Exception as e:
            self.errors += 1
            log.debug("MIDI port scan failed: %s", e)
            return
        for name in names:
            if name not in self.ports and self._wanted(name):
                try:
                    self.ports[name] = self.backend.open_input(name, callback=self._on_message)
                    log.info("MIDI input: %s", name)
                except Exception as e:
                    self.errors += 1
                    log.warning("cannot open MIDI port %r: %s", name, e)
        for name in list(self.ports):
            if name not in names:
                port = self.ports.pop(name)
                log.info("MIDI input gone: %s", name)
                try:
                    port.close()
                except Exception:
                    pass

    def _on_message(self, msg) -> None:
        try:
            self.router.midi_message(msg)
        except Exception as e:  # never let a message kill rtmidi's thread
            self.errors += 1
            log.debug("MIDI message %r failed: %s", msg, e)

    def _rescan_loop(self) -> None:
        while not self._stop.wait(self.rescan_s):
            self.rescan()

    def _close(self):
        self._stop.set()
        self._thread.join(2)
        for port in self.ports.values():
            try:
                port.close()
            except Exception:
                pass
        self.ports.clear()

    def status(self):
        d = super().status()
        d["ports"] = sorted(self.ports)
        return d


SOURCE = MidiPortsSource
