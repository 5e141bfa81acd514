"""The ALSA backend (pyalsaaudio): periods to a sound card, paced by the device.

* Ask for a ``plug`` PCM (``default``, ``plughw:CARD=…``) so ALSA converts rate,
  format and channels. We still read back what the device granted: pyalsaaudio
  ignores refused settings silently (a raw JACK PCM switches to FLOAT_LE stereo), so
  a wrong rate is an error naming the fix, a different format or channel count is
  simply converted to.
* pyalsaaudio's default period of 32 frames is below most devices' minimum: we
  always pass ``periodsize`` and ``periods``.
* The PCM is opened non-blocking and we wait for room with ``poll()`` on its
  descriptors (the GIL is released there, so the inference thread runs). A blocking
  write can hang forever when a device dies (a JACK server killed, a USB DAC pulled
  mid-write); with poll, a device that accepts nothing for ``stall_s`` is reported
  as lost (:class:`DeviceError`) and the engine reopens it. A lost PCM is closed on
  a throwaway thread: ``snd_pcm_close`` on a dead JACK server never returns.
* ``wait_room`` polls until the device can take a whole block, so the engine renders
  just in time (after the wait) rather than a period early (before a blocking write).
* An underrun returns -EPIPE (pyalsaaudio has already re-prepared the stream): we
  count it and write the period again. Short writes are completed.
* The audio thread's path (``sink``) is ``_kernels.Sink``: one C call converts a block
  and hands it to pyalsaaudio, one C call asks ``avail``; only a full device, an xrun,
  a short write or an error comes back to the Python above (``_write_rest``,
  ``wait_room``). Each Python frame it saves is ~0.5 µs right after a model run.
"""

from __future__ import annotations

import errno
import select
import threading
import time

import numpy as np

from pi_synth.audio.backends.base import FORMATS, Backend, Granted
from pi_synth.errors import DeviceError
from pi_synth.service.alsalib import quiet as quiet_libasound

try:
    from pi_synth.audio._kernels import Sink as _Sink
except ImportError:  # not built: the public write and wait_room
    _Sink = None


def _alsa():
    quiet_libasound()
    try:
        import alsaaudio
    except ImportError as e:  # pragma: no cover - platform without ALSA
        raise DeviceError(
            f"ALSA is not available ({e}); install libasound2-dev and pyalsaaudio, "
            "or use --backend wav"
        ) from None
    return alsaaudio


class AlsaBackend(Backend):
    """A sound card (any ALSA PCM), paced by the device; see the module docstring."""

    name = "alsa"
    paced = True
    _fast = None  # this opening's C sink (see _sink)

    def _open(self, sample_rate, channels, period, periods):
        alsaaudio = _alsa()
        device = self.device or "default"
        fmt = getattr(alsaaudio, f"PCM_FORMAT_{self.format}")
        try:
            pcm = alsaaudio.PCM(
                type=alsaaudio.PCM_PLAYBACK, mode=alsaaudio.PCM_NONBLOCK, device=device,
                rate=sample_rate, channels=channels, format=fmt, periodsize=period,
                periods=periods,
            )
        except alsaaudio.ALSAAudioError as e:
            raise DeviceError(
                f"cannot open ALSA PCM {device!r} ({e}); list devices with 'aplay -L' "
                "and pass one with --device, or check 'pi-synth doctor'"
            ) from None
        info = pcm.info()
        rate, ch = int(info["rate"]), int(info["channels"])
        fmt_name = info.get("format_name", self.format)
        if rate != sample_rate:
            pcm.close()
            raise DeviceError(
                f"ALSA PCM {device!r} runs at {rate} Hz but the model needs {sample_rate} Hz; "
                f"use a plug PCM (e.g. 'plug{device}' or 'default') so ALSA resamples"
            )
        if fmt_name not in FORMATS:
            pcm.close()
            raise DeviceError(
                f"ALSA PCM {device!r} granted sample format {fmt_name}; use a plug PCM so ALSA converts"
            )
        self._pcm = pcm
        self._lost = False
        self._fold_sink()
        self._poll = select.poll()
        for fd, mask in pcm.polldescriptors():
            self._poll.register(fd, mask)
        self._period_ms = max(1, int(1000 * int(info["period_size"]) / rate))
        self._buffer_frames = int(info["period_size"]) * int(info["periods"])
        self.stall_s = max(1.0, 4 * int(info["period_size"]) * int(info["periods"]) / rate)
        return Granted(rate, ch, int(info["period_size"]), int(info["periods"]), fmt_name)

    def _write(self, data):
        pcm = self._pcm
        n = data.shape[0]
        if not n:
            return 0
        done = 0
        last_progress = 0.0  # the clock is read only when the device is full (rarely)
        idle = 0
        while True:
            try:
                res = pcm.write(data[done:] if done else data)
            except _alsa().ALSAAudioError as e:
                self._lost = True
                raise DeviceError(f"ALSA PCM {self.device!r} failed: {e}") from None
            if res == -errno.EPIPE:
                self._count_xrun()  # underrun: already re-prepared; write it again
                continue
            if res > 0:
                done += res
                if done >= n:
                    return n
                last_progress = time.monotonic()
                idle = 0
                continue
            # the device is full: wait for room (GIL released in poll)
            last_progress = last_progress or time.monotonic()
            if self._poll_room(last_progress):
                idle += 1
                if idle > 2:  # poll says ready, the device takes nothing: do not spin
                    time.sleep(self._period_ms / 2000)

    def _sink(self, frames):
        if _Sink is None:
            return super()._sink(frames)
        g = self.granted
        self._fold_sink()
        out = np.zeros((frames, g.channels), FORMATS[g.format][0])
        s = self._fast = _Sink(self._pcm.write, self._pcm.avail, out, self._write_rest, self.wait_room)
        return s.write, s.wait

    def _fold_sink(self):
        """A new sink (or a new opening) starts counting from zero: keep the old count."""
        if self._fast is not None:
            self._written += self._fast.written
        self._fast = None

    def _sunk(self):
        return self._fast.written if self._fast is not None else 0

    def _write_rest(self, x, r):
        """The sink's slow path: finish block ``x`` after its one try, ``r``: what
        pyalsaaudio's write returned (short, -EAGAIN, -EPIPE), its exception, or None
        (not tried: ``x`` was not a plain block)."""
        if isinstance(r, BaseException):
            if not isinstance(r, _alsa().ALSAAudioError):
                raise r
            self._lost = True
            raise DeviceError(f"ALSA PCM {self.device!r} failed: {r}") from None
        done = 0
        if r == -errno.EPIPE:
            self._count_xrun()  # underrun: already re-prepared; write it all again
        elif isinstance(r, int) and r > 0:
            done = r
            self._written += r
        self.write(x[done:] if done else x)

    def _wait_room(self, frames):
        pcm = self._pcm
        start = 0.0
        while True:
            try:
                avail = pcm.avail()
            except _alsa().ALSAAudioError:
                return  # an xrun or a lost device: the write that follows reports it
            if avail >= frames or avail < 0:
                return
            start = start or time.monotonic()
            self._poll_room(start)

    def _poll_room(self, since: float) -> bool:
        """One wait for the device to free room (GIL released in poll); True if it says
        it has. A device that has freed none since ``since`` for ``stall_s`` is lost."""
        if time.monotonic() - since > self.stall_s:
            self._lost = True
            raise DeviceError(
                f"ALSA PCM {self.device!r} accepted nothing for {self.stall_s:.1f} s (device lost?)"
            )
        ready = self._poll.poll(2 * self._period_ms)
        if not ready:
            return False
        # let the plugin read its wake-up byte: without this, a JACK PCM's poll
        # descriptor stays readable and every wait spins (5.7 M polls in 10 s here)
        try:
            self._pcm.polldescriptors_revents(ready)
        except _alsa().ALSAAudioError as e:
            self._lost = True
            raise DeviceError(f"ALSA PCM {self.device!r} failed: {e}") from None
        return True

    def _close(self):
        pcm, self._pcm = self._pcm, None
        if pcm is None:  # closed already, by the other thread of a stop racing a device error
            return
        if self._lost:
            # snd_pcm_close on a vanished device can block for good (the JACK plugin
            # waits for its dead server): close it on a throwaway thread, never here
            threading.Thread(target=pcm.close, name="pi-synth-close-lost-pcm", daemon=True).start()
            return
        try:  # play out what is queued, but never hang on a dead device
            deadline = time.monotonic() + self.stall_s
            while pcm.avail() < self._buffer_frames and time.monotonic() < deadline:
                time.sleep(self._period_ms / 1000)
        except Exception:
            pass
        pcm.close()


BACKEND = AlsaBackend
