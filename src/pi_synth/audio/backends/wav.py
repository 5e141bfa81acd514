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
    """A WAV file (``device`` is its path): offline renders and recordings.

    Bytes are gathered in a buffer of our own and written with ``os.write`` a chunk at a
    time, so after a failed write we know exactly what is on the disk (a buffered file
    object would try its pending bytes again on every seek and close)."""

    name = "wav"
    CHUNK = 1 << 16  # bytes gathered before a write

    def __init__(self, device: str | None = None, *, format: str = "S16_LE"):
        if device == "default":
            device = default_path()
        super().__init__(device, format=format)
        self._fd = None
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
        self._data = 0  # audio bytes taken (on the disk or in the buffer)
        self._on_disk = 0  # bytes written to the file, header included
        self._pending = bytearray()
        self._failed = False
        self._stream = is_stream(path)
        try:
            if self._stream:
                self._fd = os.open(path, os.O_WRONLY)
            else:
                folder = os.path.dirname(os.path.abspath(path))
                clean_temps(path)  # left by a recording that was killed
                fd, self._tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=TEMP_SUFFIX,
                                                 dir=folder)
                fcntl.flock(fd, fcntl.LOCK_EX)  # alive: clean_temps in another process keeps it
                os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 is for secrets, not for a render
                self._fd = fd
        except OSError as e:
            raise DeviceError(f"{path}: cannot write the WAV file ({e.strerror})") from None
        # a file gets its header on close, once the length is known; a stream, now
        self._pending += self._header(STREAM_SIZE - 36) if self._stream else b"\0" * 44
        self._flush()
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

    def _flush(self) -> None:
        view = memoryview(self._pending)
        try:
            while view:
                n = os.write(self._fd, view)
                self._on_disk += n
                view = view[n:]
        except OSError as e:
            self._fail(e)
        finally:
            view.release()
            self._pending.clear()

    def _fail(self, e: OSError) -> None:
        self._failed = True
        audio = max(0, self._on_disk - 44)
        done = f" after {audio / 1e6:.1f} MB" if audio else ""
        if self._stream:
            then = "the WAV stream stopped"
        elif self.keep_partial:
            then = f"the recording up to there is kept in {self.device}"
        else:
            then = "nothing was written (the partial file is removed)"
        raise OutputError(f"{self.device}: {e.strerror or e}{done}; {then}") from None

    def _write(self, data):
        if self._failed:  # the output is gone: the caller stops (OutputError said why)
            return data.shape[0]
        self._pending += data
        self._data += data.nbytes
        if len(self._pending) >= self.CHUNK:
            self._flush()
        return data.shape[0]

    def _close(self, keep: bool = True):
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._pending and not self._failed and (keep or self._stream):
                self._fd = fd
                try:
                    self._flush()
                except OutputError:
                    if not (keep and self.keep_partial):
                        raise
                finally:
                    self._fd = None
            if keep and not self._stream and (self.keep_partial or not self._failed):
                try:
                    block = self._ch * self._bits // 8
                    audio = max(0, self._on_disk - 44) // block * block  # whole frames only
                    os.ftruncate(fd, 44 + audio)
                    os.pwrite(fd, self._header(audio), 0)
                    os.fsync(fd)
                    os.replace(self._tmp, self.device)
                    self._tmp = None
                except OSError as e:
                    self.keep_partial = False
                    self._fail(e)
        finally:
            os.close(fd)
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
