"""The WAV backend: offline renders and recordings, as fast as the CPU allows.

Writes PCM16, PCM32 or IEEE-float WAV. A file is written to a temp file beside it
(``.NAME.XXXX.tmp``) and renamed over the name when complete, header filled in, so a
render that fails — a full SD card, Ctrl-C — leaves the old file (or none) and never a
torn one. A character device, pipe or socket (``/dev/null``, ``/dev/stdout``, a FIFO)
is written straight through, with the "length unknown" header streaming tools use.
``device = "default"`` (what the config says when nobody named a file) records to
``pi-synth-YYYYmmdd-HHMMSS.wav`` in the working folder, and :meth:`describe` says so.
A write that fails is an :class:`~pi_synth.errors.OutputError` naming the file: the
stream ends (a full disk does not come back by reopening).
"""

from __future__ import annotations

import fcntl
import os
import struct
import tempfile
import time

from pi_synth.audio.backends.base import Backend, Granted
from pi_synth.errors import DeviceError, OutputError

STREAM_SIZE = 0xFFFFFFFF  # "length unknown": what sox and ffmpeg write to a pipe


def _umask() -> int:
    """The process's umask, read without setting it (os.umask would race other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def default_path() -> str:
    """Where ``--backend wav`` records when no file is named."""
    return os.path.abspath(time.strftime("pi-synth-%Y%m%d-%H%M%S.wav"))


class WavBackend(Backend):
    """A WAV file (``device`` is its path): offline renders and recordings."""

    name = "wav"

    def __init__(self, device: str | None = None, *, format: str = "S16_LE"):
        if device == "default":
            device = default_path()
        super().__init__(device, format=format)
        self._f = None
        self._tmp = None
        # a live recording keeps what it got when the disk fills; a render keeps nothing
        self.keep_partial = False

    def _open(self, sample_rate, channels, period, periods):
        from pi_synth.render_plan import is_stream
        from pi_synth.state import TEMP_SUFFIX, clean_temps

        path = self.device
        if not path:
            raise DeviceError("the wav backend needs an output file: --device OUT.wav")
        if os.path.isdir(path):
            raise DeviceError(f"{path}: is a directory; name a file in it, e.g. {os.path.join(path, 'out.wav')}")
        self._bits = {"S16_LE": 16, "S32_LE": 32, "FLOAT_LE": 32}[self.format]
        self._rate, self._ch = sample_rate, channels
        self._data = 0
        self._failed = False
        self._stream = is_stream(path)
        try:
            if self._stream:
                self._f = open(path, "wb", buffering=0)
            else:
                folder = os.path.dirname(os.path.abspath(path))
                clean_temps(path)  # left by a recording that was killed
                fd, self._tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=TEMP_SUFFIX,
                                                 dir=folder)
                fcntl.flock(fd, fcntl.LOCK_EX)  # alive: clean_temps in another process keeps it
                os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 is for secrets, not for a render
                self._f = os.fdopen(fd, "wb")
        except OSError as e:
            raise DeviceError(f"{path}: cannot write the WAV file ({e.strerror})") from None
        # a file gets its header on close, once the length is known; a stream, now
        self._put(self._header(STREAM_SIZE - 36) if self._stream else b"\0" * 44)
        return Granted(sample_rate, channels, period, periods, self.format)

    def _header(self, data_bytes: int) -> bytes:
        fmt_tag = 3 if self.format == "FLOAT_LE" else 1
        block_align = self._ch * self._bits // 8
        header = b"RIFF" + struct.pack("<I", min(36 + data_bytes, STREAM_SIZE)) + b"WAVE"
        header += b"fmt " + struct.pack(
            "<IHHIIHH", 16, fmt_tag, self._ch, self._rate, self._rate * block_align,
            block_align, self._bits,
        )
        return header + b"data" + struct.pack("<I", min(data_bytes, STREAM_SIZE))

    def _put(self, data) -> None:
        try:
            self._f.write(data)
        except OSError as e:
            self._fail(e)

    def _fail(self, e: OSError) -> None:
        self._failed = True
        done = f" after {self._data / 1e6:.1f} MB" if self._data else ""
        if self._stream:
            then = "the WAV stream stopped"
        elif self.keep_partial:
            then = f"the recording up to there is kept in {self.device}"
        else:
            then = "nothing was written (the partial file is removed)"
        raise OutputError(f"{self.device}: {e.strerror or e}{done}; {then}") from None

    def _write(self, data):
        self._put(data)
        self._data += data.nbytes
        return data.shape[0]

    def _close(self, keep: bool = True):
        f, self._f = self._f, None
        if f is None:
            return
        try:
            if keep and not self._stream and (self.keep_partial or not self._failed):
                try:
                    if self._failed:  # a write that went half way: keep what is whole
                        f.truncate(44 + self._data)
                    f.seek(0)
                    f.write(self._header(self._data))
                    f.flush()
                    os.fsync(f.fileno())
                    os.replace(self._tmp, self.device)
                    self._tmp = None
                except OSError as e:
                    self.keep_partial = False
                    self._fail(e)
        finally:
            try:
                f.close()
            except OSError:
                pass
            self._remove_temp()

    def _discard(self):
        """A render that failed: its file is not finished, so it is not there."""
        self._close(keep=False)

    def _remove_temp(self) -> None:
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
            self._tmp = None


def read_wav(path):
    """Read a WAV written by this backend (or any PCM16/32/float WAV) → float32 [n, ch]."""
    import numpy as np

    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a WAV file")
    pos, fmt, rate, ch, bits, payload = 12, None, 0, 1, 16, b""
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt, ch, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data":
            payload = body
        pos += 8 + size + (size & 1)
    if fmt == 3:
        x = np.frombuffer(payload, "<f4")
    elif bits == 16:
        x = np.frombuffer(payload, "<i2").astype(np.float32) / 32767.0
    elif bits == 32:
        x = (np.frombuffer(payload, "<i4").astype(np.float64) / 2147483647.0).astype(np.float32)
    else:
        raise ValueError(f"{path}: unsupported WAV format {fmt}/{bits} bits")
    return x.reshape(-1, ch), rate


BACKEND = WavBackend

__all__ = ["WavBackend", "read_wav"]
