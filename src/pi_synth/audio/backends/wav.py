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

Its capture side plays a file into the input (``capture``: a WAV path, or float32 frames
already loaded), so ``pi-synth render --input`` runs the very audio-in path a live run
does. :func:`read_wav` reads any PCM WAV (8/16/24/32-bit integer, 32/64-bit float, any
channel count, WAVE_FORMAT_EXTENSIBLE too) with one-line errors; :func:`load_input` brings
one to a model's rate (resampled with soxr) and says what it converted.
"""

from __future__ import annotations

import fcntl
import math
import os
import stat
import struct
import tempfile
import time

import numpy as np

from pi_synth.audio.backends.base import Backend, Granted
from pi_synth.errors import DeviceError, InputError, OutputError

STREAM_SIZE = 0xFFFFFFFF  # "length unknown": what sox and ffmpeg write to a pipe
UNKNOWN_FROM = STREAM_SIZE - 64  # a data size read as "length unknown" (pi-synth once wrote STREAM_SIZE - 36)


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


def _seekable_at(fd: int) -> int | None:
    """The offset a regular file open on ``fd`` is written from, if its header can be
    rewritten there later (not in append mode, where every write goes to the end)."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
            return None
        return os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return None


def default_path() -> str:
    """Where ``--backend wav`` records when no file is named."""
    return os.path.abspath(time.strftime("pi-synth-%Y%m%d-%H%M%S.wav"))


def wav_header(sample_rate: int, channels: int, bits: int, floating: bool, data_bytes: int) -> bytes:
    """The 44-byte header of a PCM (or IEEE float) WAV holding ``data_bytes`` of frames
    (past 4 GiB: the "length unknown" streaming tools write)."""
    block_align = channels * bits // 8
    header = b"RIFF" + struct.pack("<I", min(36 + data_bytes, STREAM_SIZE)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 3 if floating else 1, channels, sample_rate,
                                    sample_rate * block_align, block_align, bits)
    return header + b"data" + struct.pack("<I", min(data_bytes, STREAM_SIZE))


NOT_WAV = (".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff")  # what WAV data is not


def not_wav_said(path: str, flag: str) -> str | None:
    """The line for a file named as another format than the WAV it would hold, else None."""
    if os.path.splitext(path)[1].lower() not in NOT_WAV:
        return None
    return (f"{flag} {path}: pi-synth writes WAV; name it .wav, or pipe it: "
            f"{flag} - | ffmpeg -i - {os.path.basename(path)}" if flag == "-o" else
            f"{flag} {path}: the wav backend writes WAV; name it .wav and convert it afterwards")


class WavBackend(Backend):
    """A WAV file (``device`` is its path): offline renders and recordings. ``capture``:
    a WAV path (or float32 ``[n, channels]`` at the model's rate) read as the input.

    Bytes are gathered in a buffer of our own and written with ``os.write`` a chunk at a
    time, so after a failed write we know exactly what is on the disk (a buffered file
    object would try its pending bytes again on every seek and close)."""

    name = "wav"
    opens_capture = True  # a WAV file played into the input
    CHUNK = 1 << 16  # bytes gathered before a write

    def __init__(self, device: str | None = None, *, format: str = "S16_LE", capture=None):
        if device == "default":
            device = default_path()
        super().__init__(device, format=format, capture=capture)
        self._fd = None
        self._tmp = None
        self._loaded = None  # (rate, frames, notes): the capture file, read already
        # a live recording keeps what it got when the disk fills; a render keeps nothing
        self.keep_partial = False

    def _open(self, sample_rate, channels, period, periods):
        from pi_synth.render_plan import descriptor_of, is_stream
        from pi_synth.state import TEMP_SUFFIX, clean_temps

        path = self.device
        if not path:
            raise DeviceError("the wav backend needs an output file: --device OUT.wav")
        if os.path.isdir(path):
            raise DeviceError(f"{path}: is a directory; name a file in it, e.g. {os.path.join(path, 'out.wav')}")
        if why := not_wav_said(path, "--device"):
            raise DeviceError(why)
        self._bits = {"S16_LE": 16, "S32_LE": 32, "FLOAT_LE": 32}[self.format]
        self._rate, self._ch = sample_rate, channels
        self._data = 0  # audio bytes taken (on the disk or in the buffer)
        self._on_disk = 0  # bytes written to the file, header included
        self._pending = bytearray()
        self._failed = False
        self._stream = is_stream(path)
        self._start = None  # where a seekable stream's header goes once the length is known
        try:
            if self._stream:
                fdno = descriptor_of(path)
                # the descriptor itself (its offset, its O_APPEND), never the path reopened
                self._fd = os.dup(fdno) if fdno is not None else os.open(path, os.O_WRONLY)
                self._start = _seekable_at(self._fd)
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
        self._pending += self._header(STREAM_SIZE) if self._stream else b"\0" * 44
        self._flush()
        return Granted(sample_rate, channels, period, periods, self.format)

    def _header(self, data_bytes: int) -> bytes:
        return wav_header(self._rate, self._ch, self._bits, self.format == "FLOAT_LE", data_bytes)

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
            if self._start is not None:  # `-o - > out.wav`: a file after all, so a true header
                self._end_seekable(fd, keep)
            elif keep and not self._stream and (self.keep_partial or not self._failed):
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

    def _end_seekable(self, fd: int, keep: bool) -> None:
        """A stream that is a regular file (standard output sent to a file): the header
        rewritten with the length, or — a render that failed — the file cut back to where
        it began, so no torn WAV is left in it."""
        try:
            if keep and not self._failed:
                block = self._ch * self._bits // 8
                audio = max(0, self._on_disk - 44) // block * block
                os.pwrite(fd, self._header(audio), self._start)
            elif not keep:
                os.ftruncate(fd, self._start)
        except OSError:
            pass  # the stream header stands: "length unknown", which readers accept

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

    # -- capture: a file played into the input ----------------------------------------

    def preload_capture(self, x: np.ndarray, sample_rate: int, notes: list[str]) -> None:
        """The capture file, already read at ``sample_rate`` (``run`` read it to know how long
        it lasts): not read twice. ``capture`` stays its name."""
        self._loaded = (sample_rate, x, notes)

    def _open_capture(self, sample_rate, channels, period, periods):
        src = self.capture
        if src is None or isinstance(src, (str, os.PathLike)) and src == self.device:
            return super()._open_capture(sample_rate, channels, period, periods)  # silence in
        if isinstance(src, np.ndarray):
            x, notes = src, []
        elif self._loaded is not None and self._loaded[0] == sample_rate:
            _, x, notes = self._loaded
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


# the first bytes of the recordings people bring instead of a WAV: named in the error
_MAGIC = ((b"fLaC", "FLAC"), (b"OggS", "Ogg"), (b"ID3", "MP3"), (b"\xff\xfb", "MP3"), (b"\xff\xf3", "MP3"),
          (b"\xff\xf2", "MP3"), (b"\xff\xf1", "AAC"), (b"\xff\xf9", "AAC"), (b"caff", "CAF"),
          (b"MThd", "MIDI (give it with --midi)"), (b"\x1aE\xdf\xa3", "WebM/Matroska"),
          (b"riff\x2e\x91\xcf\x11", "Sony Wave64 (.w64)"))


# compressed WAVs met in the wild (telephony, old voice recorders), named in the error
_CODECS = {2: "MS ADPCM", 6: "A-law", 7: "µ-law", 0x11: "IMA ADPCM", 0x31: "GSM 6.10", 0x50: "MPEG", 0x55: "MP3"}


def _audio_kind(data: bytes) -> str:
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"FORM" and data[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if data[4:8] == b"ftyp":
        return "MP4/M4A"
    return ""


def read_wav(path):
    """Read a WAV file → (float32 ``[n, channels]`` in −1..1, sample rate); see :func:`_read_wav`."""
    x, rate, _ = _read_wav(path)
    return x, rate


MAX_CHANNELS = 1024  # more is a broken header, not a recording
_TRAILERS = (b"LIST", b"id3 ", b"ID3 ", b"JUNK", b"cue ", b"smpl", b"inst", b"acid", b"bext", b"iXML", b"_PMX")


def _without_trailing_chunks(payload: bytes) -> bytes:
    """The samples of a data chunk whose size was never written (0, or "length unknown"),
    without the metadata chunks a tagger appended after them (a LIST chunk read as samples
    was a click at the end): a known chunk whose size runs exactly to the end of the file."""
    end = len(payload)
    for _ in range(8):
        tail = payload[max(0, end - (1 << 20)):end]
        base = end - len(tail)
        cut = None
        for cid in _TRAILERS:
            i = tail.rfind(cid)
            while i >= 0:
                if i + 8 <= len(tail):
                    size = struct.unpack("<I", tail[i + 4:i + 8])[0]
                    if base + i + 8 + size + (size & 1) in (end, end + 1) or base + i + 8 + size == end:
                        cut = base + i if cut is None else min(cut, base + i)
                        break
                i = tail.rfind(cid, 0, i)
        if cut is None:
            return payload[:end]
        end = cut
    return payload[:end]


def _chunk_id(data: bytes, pos: int) -> bool:
    """Four printable ASCII bytes at ``pos`` with a size after them: a chunk starts there."""
    cid = data[pos:pos + 4]
    return len(data) >= pos + 8 and len(cid) == 4 and all(32 <= b < 127 for b in cid)


def _read_wav(path):
    """Read a WAV file → (float32 ``[n, channels]`` in −1..1, sample rate, what is odd
    about it in words: a file that ends before its header says, float samples past full
    scale).

    Reads PCM 8-bit (unsigned), 16, 24 and 32-bit, IEEE float 32 and 64-bit, any channel
    count, plain or WAVE_FORMAT_EXTENSIBLE, RIFF or RF64/BW64 (64-bit sizes, as field recorders
    write long takes). Anything else — not a RIFF/WAVE file, no
    ``fmt``/``data`` chunk, a compressed format, no frames — is an :class:`InputError` with
    one line saying what and how to fix it.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _bad(path, f"cannot read the file ({e.strerror})") from None
    fix = "convert it with e.g. 'sox IN -b 16 OUT.wav' or 'ffmpeg -i IN OUT.wav'"
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX", b"RF64", b"BW64") or data[8:12] != b"WAVE":
        kind = _audio_kind(data)
        what = f"looks like {kind}, not WAV" if kind else "not a WAV file (no RIFF/WAVE header)"
        raise _bad(path, f"{what}; {fix}")
    if data[:4] == b"RIFX":
        raise _bad(path, f"a big-endian (RIFX) WAV; {fix}")
    pos, fmt, payload, ds64, declared = 12, None, None, None, 0
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if cid == b"ds64" and size >= 16:  # RF64/BW64 (a field recorder's long take): 64-bit sizes
            ds64 = struct.unpack("<Q", data[pos + 16:pos + 24])[0]
        if cid == b"data" and size == 0xFFFFFFFF and data[:4] != b"RIFF":  # its size is in ds64
            size = ds64 if ds64 is not None else len(data) - pos - 8
        elif cid == b"data" and size >= UNKNOWN_FROM:  # "length unknown" (a stream): to the end,
            size = len(_without_trailing_chunks(data[pos + 8:]))  # less a chunk a tagger added after it
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt " and fmt is None:  # a second one (a writer's bug): the first describes the data
            fmt = body
        elif cid == b"data":
            payload = body  # a truncated file: what is there
            declared = size
            if size == 0 and pos + 8 < len(data):  # a recording never finished: its header still says 0
                payload = _without_trailing_chunks(data[pos + 8:])
                break
        nxt = pos + 8 + size + (size & 1)
        if size & 1 and not _chunk_id(data, nxt) and _chunk_id(data, nxt - 1):
            nxt -= 1  # an odd chunk written without its pad byte (a writer's bug): the next chunk is there
        pos = nxt
    if fmt is not None and len(fmt) == 14:
        raise _bad(path, f"a 14-byte 'fmt ' chunk (the old WAVEFORMAT, with no bits per sample); {fix}")
    if fmt is None or len(fmt) < 16:
        raise _bad(path, f"no 'fmt ' chunk: not a playable WAV; {fix}")
    if payload is None:
        raise _bad(path, f"no 'data' chunk: the WAV holds no audio; {fix}")
    tag, ch, rate, _, align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real format is in the GUID
        tag = struct.unpack("<H", fmt[24:26])[0]
    if ch < 1 or rate < 1 or ch > MAX_CHANNELS:
        raise _bad(path, f"a WAV with {ch} channels at {rate} Hz; {fix}")
    width = bits // 8
    if tag not in (1, 3) or (tag == 1 and bits not in (8, 16, 24, 32)) or (tag == 3 and bits not in (32, 64)):
        kind = {1: "PCM", 3: "float"}.get(tag) or _CODECS.get(tag, f"format tag {tag:#x} (compressed?)")
        raise _bad(path, f"{kind} {bits}-bit WAV is not supported (PCM 8/16/24/32-bit or float 32/64-bit are); {fix}")
    frame = width * ch
    n = len(payload) // frame
    if n == 0:
        raise _bad(path, "the WAV holds no audio frames (empty); record or export it again")
    raw = payload[: n * frame]
    notes = []
    # 0 and 0xFFFFFFFF: "length unknown" from a streaming writer (older pi-synth streams wrote
    # 0xFFFFFFFF − 36: that too)
    if 0 < declared < UNKNOWN_FROM and len(payload) < declared:
        notes.append(f"the file ends early: {n} of the {declared // frame} frames its header promises (truncated?)")
    if tag == 3:
        x = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float32)
        if not np.isfinite(x).all():
            raise _bad(path, "the float WAV holds NaN or infinite samples; export it again")
        top = float(np.abs(x).max())
        if top > 1.0:
            notes.append(f"its float samples reach {20 * math.log10(top):+.1f} dBFS, past full scale: lower "
                         "[input] gain_db, or normalise the file")
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
    x = x.reshape(n, ch)
    if tag != 3:  # a clipped recording: runs of samples pinned at full scale (a peak is one)
        top = np.abs(x) >= 0.999
        pinned = int(np.count_nonzero(top[1:] & top[:-1]))
        if pinned > max(2, x.size // 10000):
            notes.append(f"{100 * pinned / x.size:.2f}% of its samples sit at full scale side by side: it was "
                         "clipped when recorded, and the model hears the flattened peaks")
    return x, rate, notes


def load_input(path, sample_rate: int) -> tuple[np.ndarray, list[str]]:
    """A WAV file as a model's input: float32 ``[n, channels]`` at ``sample_rate``
    (resampled with soxr, "HQ", when its rate differs), and what was converted, in words
    (the render says it). Channels are kept: the input path mixes them to mono."""
    x, rate, notes = _read_wav(path)
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
