"""The WAV backend: offline renders, as fast as the CPU allows.

Writes PCM16, PCM32 or IEEE-float WAV; the header is filled in on close. Its capture
side plays a file into the input (``capture``: a WAV path, or float32 frames already
loaded), so ``pi-synth render --input`` runs the very audio-in path a live run does.
:func:`read_wav` reads any PCM WAV (8/16/24/32-bit integer, 32/64-bit float, any channel
count, WAVE_FORMAT_EXTENSIBLE too) with one-line errors; :func:`load_input` brings one to
a model's rate (resampled with soxr) and says what it converted.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from pi_synth.audio.backends.base import Backend, Granted
from pi_synth.errors import DeviceError, InputError


class WavBackend(Backend):
    """A WAV file (``device`` is its path): offline renders and recordings. ``capture``:
    a WAV path (or float32 ``[n, channels]`` at the model's rate) read as the input."""

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

    # -- capture: a file played into the input ----------------------------------------

    def _open_capture(self, sample_rate, channels, period, periods):
        src = self.capture
        if src is None or isinstance(src, (str, os.PathLike)) and src == self.device:
            return super()._open_capture(sample_rate, channels, period, periods)  # silence in
        if isinstance(src, np.ndarray):
            x, notes = src, []
        else:
            x, notes = load_input(src, sample_rate)
        self._cdata = np.ascontiguousarray(x, np.float32).reshape(len(x), -1)
        self._cpos = 0
        self.capture_notes = notes
        return Granted(sample_rate, self._cdata.shape[1], period, periods, "FLOAT_LE")

    def _read(self, out, timeout):
        if not hasattr(self, "_cdata"):
            return super()._read(out, timeout)
        n, pos = out.shape[0], self._cpos
        k = max(0, min(n, len(self._cdata) - pos))
        out[:k] = self._cdata[pos:pos + k]
        out[k:] = 0.0  # after the end of the file: silence
        self._cpos = pos + n
        return n

    def _close_capture(self, lost=False):
        self.__dict__.pop("_cdata", None)


def _bad(path, why: str) -> InputError:
    return InputError(f"{path}: {why}")


def read_wav(path):
    """Read a WAV file → (float32 ``[n, channels]`` in −1..1, sample rate).

    Reads PCM 8-bit (unsigned), 16, 24 and 32-bit, IEEE float 32 and 64-bit, any channel
    count, plain or WAVE_FORMAT_EXTENSIBLE. Anything else — not a RIFF/WAVE file, no
    ``fmt``/``data`` chunk, a compressed format, no frames — is an :class:`InputError` with
    one line saying what and how to fix it.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _bad(path, f"cannot read the file ({e.strerror})") from None
    fix = "convert it with e.g. 'sox IN -b 16 OUT.wav'"
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        raise _bad(path, f"not a WAV file (no RIFF/WAVE header); {fix}")
    if data[:4] == b"RIFX":
        raise _bad(path, f"a big-endian (RIFX) WAV; {fix}")
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = body
        elif cid == b"data":
            payload = body  # a truncated file: what is there
        pos += 8 + size + (size & 1)
    if fmt is None or len(fmt) < 16:
        raise _bad(path, f"no 'fmt ' chunk: not a playable WAV; {fix}")
    if payload is None:
        raise _bad(path, f"no 'data' chunk: the WAV holds no audio; {fix}")
    tag, ch, rate, _, align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real format is in the GUID
        tag = struct.unpack("<H", fmt[24:26])[0]
    if ch < 1 or rate < 1:
        raise _bad(path, f"a WAV with {ch} channels at {rate} Hz; {fix}")
    width = bits // 8
    if tag not in (1, 3) or (tag == 1 and bits not in (8, 16, 24, 32)) or (tag == 3 and bits not in (32, 64)):
        kind = {1: "PCM", 3: "float"}.get(tag, f"format tag {tag:#x} (compressed?)")
        raise _bad(path, f"{kind} {bits}-bit WAV is not supported (PCM 8/16/24/32-bit or float 32/64-bit are); {fix}")
    frame = width * ch
    n = len(payload) // frame
    if n == 0:
        raise _bad(path, "the WAV holds no audio frames (empty); record or export it again")
    raw = payload[: n * frame]
    if tag == 3:
        x = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float32)
        if not np.isfinite(x).all():
            raise _bad(path, "the float WAV holds NaN or infinite samples; export it again")
    elif bits == 8:  # unsigned, 128 = silence
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32767.0
    elif bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = (v.astype(np.float64) / 8388607.0).astype(np.float32)
    else:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / 2147483647.0).astype(np.float32)
    return x.reshape(n, ch), rate


def load_input(path, sample_rate: int) -> tuple[np.ndarray, list[str]]:
    """A WAV file as a model's input: float32 ``[n, channels]`` at ``sample_rate``
    (resampled with soxr, "HQ", when its rate differs), and what was converted, in words
    (the render says it). Channels are kept: the input path mixes them to mono."""
    x, rate = read_wav(path)
    notes = []
    if rate != sample_rate:
        if not 1000 <= rate <= 768000:
            raise _bad(path, f"a sample rate of {rate} Hz; resample it with e.g. 'sox IN -r {sample_rate} OUT.wav'")
        import soxr

        x = soxr.resample(x, rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
        notes.append(f"resampled {rate} → {sample_rate} Hz with soxr")
    if x.shape[1] > 1:
        notes.append(f"mixed {x.shape[1]} → 1 channels")
    return np.ascontiguousarray(x), notes


BACKEND = WavBackend

__all__ = ["WavBackend", "read_wav", "load_input"]
