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
* The **capture** side is a second PCM (``capture``: the playback device by default, so
  full duplex on one card, one clock; or another PCM, e.g. a USB interface's input while
  the output goes to a HAT), same period, non-blocking. It is libasound itself through
  ctypes (:class:`CapturePCM`), not pyalsaaudio: pyalsaaudio opens a PCM holding the GIL
  (measured: 100–200 ms for a JACK PCM here), and the input is opened and reopened while
  the output plays, whose audio thread needs the GIL every few milliseconds; ctypes lets
  it go for every call. It also reads straight into the caller's buffer (no bytes object
  a read). It asks for FLOAT_LE (a plug PCM converts; JACK's floats arrive exactly), else
  S32_LE or S16_LE, and two channels (mixed to mono above). An overrun is counted; a
  device that fails, or delivers nothing for ``capture_stall_s``, is reported lost and
  closed on a throwaway thread like a lost playback PCM.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
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


_EAGAIN, _EPIPE, _ESTRPIPE = -errno.EAGAIN, -errno.EPIPE, -errno.ESTRPIPE
_CAPTURE_FORMATS = (("FLOAT_LE", 14), ("S32_LE", 10), ("S16_LE", 2))  # snd_pcm_format_t


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


_lib = None

# libjack (under a JACK PCM) crashes when one client is torn down while another opens in
# the same process (measured here: a lost capture closed as the input reopened). PCM opens
# and closes of the two sides take turns through this lock; a close that hangs on a dead
# device holds it, so the output's side waits for it only so long (``_turn``).
_PCM_LOCK = threading.Lock()


class _turn:
    """``with _turn(timeout):`` the PCM lock, or — after ``timeout`` (None: for good, only
    for the throwaway closes) — go on without it: a close stuck for good on a vanished
    device must keep nothing else away."""

    def __init__(self, timeout: float | None = None):
        self.timeout = timeout

    def __enter__(self):
        self.got = _PCM_LOCK.acquire() if self.timeout is None else _PCM_LOCK.acquire(timeout=self.timeout)
        return self

    def __exit__(self, *exc):
        if self.got:
            _PCM_LOCK.release()


def _close_lost(pcm, timeout: float | None = 0.5) -> None:
    """A lost PCM, closed on a throwaway thread (see the module docstring)."""
    with _turn(timeout):
        pcm.close()


def _asound():
    """libasound through ctypes, the calls the capture side makes declared once."""
    global _lib
    if _lib is None:
        quiet_libasound()
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("asound") or "libasound.so.2")
        except OSError as e:  # pragma: no cover - a system without libasound
            raise DeviceError(f"libasound is not available ({e}); install libasound2") from None
        vp, ul, ui = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_uint
        for name, res, args in (
            ("snd_pcm_open", ctypes.c_int, [ctypes.POINTER(vp), ctypes.c_char_p, ctypes.c_int, ctypes.c_int]),
            ("snd_pcm_close", ctypes.c_int, [vp]),
            ("snd_pcm_prepare", ctypes.c_int, [vp]),
            ("snd_pcm_readi", ctypes.c_long, [vp, vp, ul]),
            ("snd_pcm_avail", ctypes.c_long, [vp]),
            ("snd_pcm_hw_params_malloc", ctypes.c_int, [ctypes.POINTER(vp)]),
            ("snd_pcm_hw_params_free", None, [vp]),
            ("snd_pcm_hw_params_any", ctypes.c_int, [vp, vp]),
            ("snd_pcm_hw_params_set_access", ctypes.c_int, [vp, vp, ctypes.c_int]),
            ("snd_pcm_hw_params_set_format", ctypes.c_int, [vp, vp, ctypes.c_int]),
            ("snd_pcm_hw_params_set_channels_near", ctypes.c_int, [vp, vp, ctypes.POINTER(ui)]),
            ("snd_pcm_hw_params_set_rate_near", ctypes.c_int, [vp, vp, ctypes.POINTER(ui), vp]),
            ("snd_pcm_hw_params_set_period_size_near", ctypes.c_int, [vp, vp, ctypes.POINTER(ul), vp]),
            ("snd_pcm_hw_params_set_periods_near", ctypes.c_int, [vp, vp, ctypes.POINTER(ui), vp]),
            ("snd_pcm_hw_params", ctypes.c_int, [vp, vp]),
            ("snd_pcm_hw_params_get_period_size", ctypes.c_int, [vp, ctypes.POINTER(ul), vp]),
            ("snd_pcm_hw_params_get_periods", ctypes.c_int, [vp, ctypes.POINTER(ui), vp]),
            ("snd_pcm_hw_params_get_channels", ctypes.c_int, [vp, ctypes.POINTER(ui)]),
            ("snd_pcm_hw_params_get_rate", ctypes.c_int, [vp, ctypes.POINTER(ui), vp]),
            ("snd_pcm_poll_descriptors_count", ctypes.c_int, [vp]),
            ("snd_pcm_poll_descriptors", ctypes.c_int, [vp, ctypes.POINTER(_PollFd), ui]),
            ("snd_pcm_poll_descriptors_revents", ctypes.c_int,
             [vp, ctypes.POINTER(_PollFd), ui, ctypes.POINTER(ctypes.c_ushort)]),
            ("snd_strerror", ctypes.c_char_p, [ctypes.c_int]),
        ):
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
        _lib = lib
    return _lib


class CapturePCM:
    """An ALSA capture PCM opened and read through libasound (ctypes: the GIL is released
    for every call, an open included). ``granted``: (rate, channels, period, periods,
    format name); ``readi(address, frames)`` → frames read or −errno; ``avail()``;
    ``fds`` for poll and ``revents(ready)`` after it; ``prepare()``; ``close()``."""

    def __init__(self, device: str, rate: int, channels: int, period: int, periods: int):
        lib = self.lib = _asound()
        self.device = device
        h = self.h = ctypes.c_void_p()
        self._check(lib.snd_pcm_open(ctypes.byref(h), device.encode(), 1, 1), "open")  # capture, non-blocking
        p = ctypes.c_void_p()
        lib.snd_pcm_hw_params_malloc(ctypes.byref(p))
        try:
            self._check(lib.snd_pcm_hw_params_any(h, p), "read the hardware parameters of")
            self._check(lib.snd_pcm_hw_params_set_access(h, p, 3), "set interleaved access on")
            for name, code in _CAPTURE_FORMATS:
                if lib.snd_pcm_hw_params_set_format(h, p, code) == 0:
                    self.format = name
                    break
            else:
                raise self._error(-errno.EINVAL, "find a sample format (FLOAT_LE, S32_LE, S16_LE) on")
            ch, r = ctypes.c_uint(channels), ctypes.c_uint(rate)
            ps, pn = ctypes.c_ulong(period), ctypes.c_uint(periods)
            self._check(lib.snd_pcm_hw_params_set_channels_near(h, p, ctypes.byref(ch)), "set the channels of")
            self._check(lib.snd_pcm_hw_params_set_rate_near(h, p, ctypes.byref(r), None), "set the rate of")
            self._check(lib.snd_pcm_hw_params_set_period_size_near(h, p, ctypes.byref(ps), None),
                        "set the period of")
            self._check(lib.snd_pcm_hw_params_set_periods_near(h, p, ctypes.byref(pn), None), "set the periods of")
            self._check(lib.snd_pcm_hw_params(h, p), "configure")
            lib.snd_pcm_hw_params_get_period_size(p, ctypes.byref(ps), None)
            lib.snd_pcm_hw_params_get_periods(p, ctypes.byref(pn), None)
            lib.snd_pcm_hw_params_get_channels(p, ctypes.byref(ch))
            lib.snd_pcm_hw_params_get_rate(p, ctypes.byref(r), None)
            self.granted = (int(r.value), int(ch.value), int(ps.value), int(pn.value), self.format)
            self._check(lib.snd_pcm_prepare(h), "prepare")
            n = lib.snd_pcm_poll_descriptors_count(h)
            self._pfds = (_PollFd * max(1, n))()
            n = lib.snd_pcm_poll_descriptors(h, self._pfds, n)
            self._npfd = max(0, n)
            self.fds = [(self._pfds[i].fd, self._pfds[i].events) for i in range(self._npfd)]
            self._rev = ctypes.c_ushort()
        except BaseException:
            lib.snd_pcm_close(h)
            raise
        finally:
            lib.snd_pcm_hw_params_free(p)
        self.readi = functools.partial(lib.snd_pcm_readi, h)
        self.avail = functools.partial(lib.snd_pcm_avail, h)
        self.prepare = functools.partial(lib.snd_pcm_prepare, h)

    def _error(self, res: int, what: str) -> DeviceError:
        why = self.lib.snd_strerror(res).decode(errors="replace")
        return DeviceError(
            f"cannot {what} ALSA PCM {self.device!r} for capture ({why}); list inputs with 'arecord -L' and set "
            "[audio] capture, or capture = \"none\" for no audio input")

    def _check(self, res: int, what: str) -> None:
        if res < 0:
            raise self._error(res, what)

    def revents(self, ready) -> int:
        """After poll: what the PCM makes of it (a JACK PCM reads its wake-up byte here)."""
        pf = self._pfds
        got = dict(ready)
        for i in range(self._npfd):
            pf[i].revents = got.get(pf[i].fd, 0)
        res = self.lib.snd_pcm_poll_descriptors_revents(self.h, pf, self._npfd, ctypes.byref(self._rev))
        return res if res < 0 else int(self._rev.value)

    def strerror(self, res: int) -> str:
        return self.lib.snd_strerror(res).decode(errors="replace")

    def close(self) -> None:
        h, self.h = self.h, None
        if h is not None:
            self.lib.snd_pcm_close(h)


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
    own_input = True
    opens_capture = True
    _fast = None  # this opening's C sink (see _sink)

    def _open(self, sample_rate, channels, period, periods):
        alsaaudio = _alsa()
        device = self.device or "default"
        fmt = getattr(alsaaudio, f"PCM_FORMAT_{self.format}")
        try:
            with _turn(0.5):
                pcm = alsaaudio.PCM(
                    type=alsaaudio.PCM_PLAYBACK, mode=alsaaudio.PCM_NONBLOCK, device=device,
                    rate=sample_rate, channels=channels, format=fmt, periodsize=period,
                    periods=periods,
                )
        except alsaaudio.ALSAAudioError as e:
            raise DeviceError(
                f"cannot open ALSA PCM {device!r} ({e}); list devices with 'aplay -L' "
                "and pass one with --device, or check 'pi-synth doctor' (no sound card here: "
                "--backend desktop plays through a sound server, --backend wav into a file)"
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

    def _queued(self):
        try:
            avail = self._pcm.avail()
        except _alsa().ALSAAudioError:
            return 0
        return max(0, self._buffer_frames - avail) if avail >= 0 else 0

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
            threading.Thread(target=_close_lost, args=(pcm,), name="pi-synth-close-lost-pcm", daemon=True).start()
            return
        try:  # play out what is queued, but never hang on a dead device
            deadline = time.monotonic() + self.stall_s
            while pcm.avail() < self._buffer_frames and time.monotonic() < deadline:
                time.sleep(self._period_ms / 1000)
        except Exception:
            pass
        with _turn(0.5):
            pcm.close()


    # -- capture ---------------------------------------------------------------------

    def _open_capture(self, sample_rate, channels, period, periods):
        device = self.capture or "default"
        with _turn(2.0):  # a close under way finishes first; one stuck for good is not waited for
            pcm = CapturePCM(device, sample_rate, channels, period, periods)
        rate, ch, cp, cn, fmt_name = pcm.granted
        if rate != sample_rate:
            pcm.close()
            raise DeviceError(
                f"ALSA PCM {device!r} captures at {rate} Hz, the model needs {sample_rate} Hz; "
                f"use a plug PCM (e.g. 'plug{device}' or 'default') so ALSA resamples"
            )
        dtype, scale = FORMATS[fmt_name]
        self._cpcm = pcm
        self._clost = False
        self._cfloat = fmt_name == "FLOAT_LE"
        self._cinv = 1.0 / scale
        self._craw = np.zeros((max(period, cp) * 4, ch), np.dtype(dtype).newbyteorder("<"))
        self._craw_addr = self._craw.ctypes.data
        self._cframe = 4 * ch  # bytes a frame of float32
        self._cout = self._caddr = None  # the caller's buffer, and its address (it is the same every read)
        self._cpoll = select.poll()
        for fd, mask in pcm.fds:
            self._cpoll.register(fd, mask)
        self._cperiod_ms = max(1, int(1000 * cp / rate))
        self.capture_stall_s = max(0.2, 4 * cp * cn / rate)
        self._cprogress = 0.0  # when frames last arrived (set only while waiting)
        return Granted(rate, ch, cp, cn, fmt_name)

    def _read(self, out, timeout):
        pcm = self._cpcm
        n, done = out.shape[0], 0
        if out is not self._cout:
            self._cout, self._caddr = out, out.ctypes.data
        deadline = 0.0
        while done < n:
            if self._cfloat:  # straight into the caller's float32 frames
                r = pcm.readi(self._caddr + done * self._cframe, n - done)
            else:
                raw = self._craw
                r = pcm.readi(self._craw_addr, min(n - done, raw.shape[0]))
                if r > 0:
                    np.multiply(raw[:r], self._cinv, out=out[done:done + r], casting="unsafe")
            if r > 0:
                self._cprogress = 0.0
                done += r
                continue
            if r in (_EPIPE, _ESTRPIPE):  # overrun (or a suspend): input frames lost; go on
                self._count_capture_xrun()
                if pcm.prepare() < 0:
                    self._clost = True
                    raise DeviceError(f"ALSA PCM {self.capture!r} (capture) failed after an overrun")
                continue
            if r != _EAGAIN:
                self._clost = True
                raise DeviceError(f"ALSA PCM {self.capture!r} (capture) failed: {pcm.strerror(r)}")
            # nothing yet: wait (GIL released in poll), at most until the deadline
            now = time.monotonic()
            if callable(timeout):
                left = timeout()
            else:
                deadline = deadline or now + timeout
                left = deadline - now
            if left <= 0:
                break
            self._cprogress = self._cprogress or now
            if now - self._cprogress > self.capture_stall_s:
                self._clost = True
                raise DeviceError(f"ALSA PCM {self.capture!r} captured nothing for "
                                  f"{self.capture_stall_s:.1f} s (input lost?)")
            ready = self._cpoll.poll(max(1, min(2 * self._cperiod_ms, int(1000 * left) + 1)))
            if ready and pcm.revents(ready) < 0:  # (a JACK PCM reads its wake-up byte here)
                self._clost = True
                raise DeviceError(f"ALSA PCM {self.capture!r} (capture) failed in poll")
        return done

    def _capture_backlog(self):
        avail = self._cpcm.avail()
        return max(0, avail)

    def _close_capture(self, lost=False):
        pcm, self._cpcm = self._cpcm, None
        if pcm is None:
            return
        if self._clost or lost:  # as for playback: snd_pcm_close on a vanished device may never return
            threading.Thread(target=_close_lost, args=(pcm, None), name="pi-synth-close-lost-capture",
                             daemon=True).start()
            return
        with _turn(2.0):
            pcm.close()


BACKEND = AlsaBackend
