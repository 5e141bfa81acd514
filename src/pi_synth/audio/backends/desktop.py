"""The desktop backend: a laptop's own sound server, through its ALSA plugin.

A laptop or desktop plays through a sound server — PipeWire, PulseAudio or JACK — that
owns the sound card; each has an ALSA plugin (``pipewire-alsa``, ``libasound2-plugins``)
with a PCM of its name. This backend finds the server that is running (by connecting to
its socket, so a stale socket file does not count) and plays through its PCM with the
ALSA backend, paced by the server. ``--device pipewire|pulse|jack`` picks one;
``default`` (the config's) takes the first found, in that order. JACK goes through
``plug:jack`` so ALSA converts our mono into the server's float stereo.
"""

from __future__ import annotations

import os
import socket

from pi_synth.audio.backends.alsa import AlsaBackend
from pi_synth.errors import DeviceError

SERVERS = ("pipewire", "pulse", "jack")
PCM = {"pipewire": "pipewire", "pulse": "pulse", "jack": "plug:jack"}


def _alive(path: str) -> bool:
    """A Unix socket something is listening on."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _runtime_dir() -> str:
    return os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"


def server_sockets(server: str) -> list[str]:
    """Where ``server`` listens when it runs for this user."""
    run = _runtime_dir()
    if server == "pipewire":
        return [os.path.join(run, os.environ.get("PIPEWIRE_REMOTE", "pipewire-0"))]
    if server == "pulse":
        env = os.environ.get("PULSE_SERVER", "")
        path = env[len("unix:"):] if env.startswith("unix:") else env if env.startswith("/") else ""
        return [p for p in (path, os.path.join(run, "pulse", "native")) if p]
    name = os.environ.get("JACK_DEFAULT_SERVER", "default")
    return [f"/dev/shm/jack_{name}_{os.getuid()}_0"]


def running_servers() -> list[str]:
    """The sound servers running for this user, in order of preference."""
    return [s for s in SERVERS if any(_alive(p) for p in server_sockets(s))]


class DesktopBackend(AlsaBackend):
    """The running sound server's ALSA PCM (see the module docstring)."""

    name = "desktop"

    def __init__(self, device: str | None = None, *, format: str = "S16_LE", capture=None):
        self.server = None
        self.requested = device or "default"  # what was asked; ``device`` becomes the PCM opened
        super().__init__(device, format=format, capture=capture)
        self._capture_follows = self.capture == device  # "the playback device": the server's PCM too

    def _open(self, sample_rate, channels, period, periods):
        want = self.requested.strip().lower()
        if want not in ("default", "") and want not in SERVERS:
            raise DeviceError(f"--backend desktop plays through a sound server: --device pipewire, pulse or "
                              f"jack (or default: the first running), not {self.requested!r}")
        found = running_servers()
        if want in SERVERS and want not in found:
            raise DeviceError(f"no {want} server is running for this user; running: "
                              f"{', '.join(found) or 'none'}")
        if not found:
            raise DeviceError("no desktop sound server (PipeWire, PulseAudio or JACK) is running for this "
                              "user; start one, or play a sound card with --backend alsa --device PCM "
                              "(aplay -L), or record with --backend wav")
        self.server = want if want in SERVERS else found[0]
        self.device = PCM[self.server]
        if self._capture_follows:
            self.capture = self.device
        try:
            return super()._open(sample_rate, channels, period, periods)
        except DeviceError as e:
            plugin = "pipewire-alsa" if self.server == "pipewire" else "libasound2-plugins"
            raise DeviceError(f"{self.server} is running but its ALSA PCM does not open ({e}); "
                              f"install {plugin}") from None

    def describe(self) -> str:
        return super().describe().replace("desktop:", f"desktop ({self.server or 'sound server'}):", 1)


BACKEND = DesktopBackend
