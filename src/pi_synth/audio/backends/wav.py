"""The WAV backend: offline renders, as fast as the CPU allows.

Writes PCM16, PCM32 or IEEE-float WAV; the header is filled in on close.
"""

from __future__ import annotations

import os
import struct


from pi_synth.audio.backends.base import Backend, Granted
from pi_synth.errors import DeviceError


class WavBackend(Backend):
    """A WAV file (``device`` is its path): offline renders and recordings."""

    name = "wav"

    def _open(self, sample_rate, channels, period, periods):
        if not self.device:
            raise DeviceError("the wav backend needs an output file: --device OUT.wav")
        try:
            self._f = open(self.device, "wb")
        except OSError as e:
            raise DeviceError(f"{self.device}: cannot write the WAV file ({e.strerror})") from None
        self._bits = {"S16_LE": 16, "S32_LE": 32, "FLOAT_LE": 32}[self.format]
        self._rate, self._ch = sample_rate, channels
        self._f.write(b"\0" * 44)  # header written on close, once the length is known
        self._data = 0
        return Granted(sample_rate, channels, period, periods, self.format)

    def _write(self, data):
        self._f.write(data.tobytes())
        self._data += data.nbytes
        return data.shape[0]

    def _close(self):
        fmt_tag = 3 if self.format == "FLOAT_LE" else 1
        block_align = self._ch * self._bits // 8
        header = b"RIFF" + struct.pack("<I", 36 + self._data) + b"WAVE"
        header += b"fmt " + struct.pack(
            "<IHHIIHH", 16, fmt_tag, self._ch, self._rate, self._rate * block_align,
            block_align, self._bits,
        )
        header += b"data" + struct.pack("<I", self._data)
        self._f.seek(0)
        self._f.write(header)
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()


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
