"""The last seconds played (audio/recorder.py): what the web page's download gives."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pi_synth.audio.backends.base import Converter
from pi_synth.audio.backends.wav import WavBackend, read_wav
from pi_synth.audio.engine import render_offline
from pi_synth.audio.recorder import Recorder, wav_bytes


def _ramp(start: int, n: int) -> np.ndarray:
    """Frames whose 16-bit value is their index (mod 30000): order shows in the samples."""
    k = (np.arange(start, start + n) % 30000).astype(np.float32)
    return (k / 32767.0)[:, None]


def test_keeps_the_newest_seconds_in_order_across_the_wrap():
    rec = Recorder(0.01, 48000)  # 480 frames
    pos = 0
    for n in (256, 256, 100, 256, 7):
        rec.push(_ramp(pos, n))
        pos += n
    got = rec.snapshot().ravel()
    # the newest 480 frames less the block a write under way may reach (256)
    assert len(got) == 480 - 256
    assert np.array_equal(got, np.arange(pos - len(got), pos))
    half = rec.snapshot(0.002).ravel()  # 96 frames
    assert np.array_equal(half, np.arange(pos - 96, pos))


def test_samples_are_what_a_16_bit_dac_is_given():
    """The backends' own conversion: rounding, clipping overs, no NaN passes (the guard
    stops those first, but a recording of a bad block must not crash or wrap)."""
    rec = Recorder(1.0, 48000)
    x = np.random.default_rng(0).uniform(-1.5, 1.5, (256, 1)).astype(np.float32)
    rec.push(x)
    conv = Converter("S16_LE", 256, 1)
    want = np.frombuffer(conv.convert(x), np.int16)
    assert np.array_equal(rec.snapshot().ravel(), want)
    assert rec.snapshot().max() == 32767 and rec.snapshot().min() == -32767


def test_a_reader_never_sees_a_torn_or_reordered_snapshot():
    """One writer (the audio thread) pushing, a control thread taking snapshots meanwhile:
    every snapshot is consecutive frames, whatever the interleaving."""
    rec = Recorder(0.05, 48000)  # 2400 frames: wraps every ~9 blocks
    stop = threading.Event()

    def writer():
        pos = 0
        while not stop.is_set():
            rec.push(_ramp(pos, 256))
            pos += 256
            time.sleep(0.0005)  # ten times faster than a 256-frame period at 48 kHz

    t = threading.Thread(target=writer)
    t.start()
    try:
        while rec.written < 2 * rec.capacity:
            time.sleep(0.001)
        checked = 0
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            got = rec.snapshot().ravel().astype(np.int64)
            if len(got) > 1:
                assert (np.diff(got) % 30000 == 1).all(), got
                checked += 1
            time.sleep(0)
    finally:
        stop.set()
        t.join()
    assert checked > 100 and rec.written > 20 * rec.capacity


def test_the_recording_matches_the_rendered_file(organ, tmp_path):
    """A live instrument's recorder against the WAV the same blocks were written to: the
    download is the sound, sample for sample."""
    from pi_synth.app import Instrument
    from pi_synth.config import load
    from pi_synth.control.events import parse_events

    path = tmp_path / "c.toml"
    path.write_text("[output]\nrecord_seconds = 2.0\n")
    cfg = load(str(path))
    events = parse_events([{"t": 0.1, "set": {"pitch": 220, "loudness": -12}},
                           {"t": 1.5, "set": {"loudness": -30}}])
    inst = Instrument(cfg, model=str(organ()), events=events, seconds=3.0)
    out = tmp_path / "o.wav"
    render_offline(inst.player, WavBackend(str(out)))
    played, sr = read_wav(out)
    rec = inst.player.recorder
    assert rec is not None and rec.seconds == 2.0 and sr == rec.sample_rate
    kept = rec.snapshot()
    assert 1.9 * sr < len(kept) <= 2 * sr
    want = np.round(played[-len(kept):] * 32767).astype(np.int16)  # read_wav gave back int16/32767
    assert np.array_equal(kept, want)
    assert np.abs(kept).max() > 1000  # sound, not silence
    wav = tmp_path / "last.wav"
    wav.write_bytes(wav_bytes(kept, sr))
    again, sr2 = read_wav(wav)
    assert sr2 == sr and np.array_equal(np.round(again * 32767).astype(np.int16), kept)


def test_off_and_refused_values():
    with pytest.raises(ValueError):
        Recorder(0, 48000)
    with pytest.raises(ValueError):
        Recorder(601, 48000)
