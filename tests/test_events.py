"""--events and --midi drive the same path as live input, on the audio clock."""

import json

import mido
import numpy as np
import pytest

from pi_synth.audio.backends.wav import read_wav
from pi_synth.control.events import parse_events
from pi_synth.errors import EventsError


def f0(x, sr):
    """Fundamental by autocorrelation (enough for a clean organ tone)."""
    x = x - x.mean()
    c = np.correlate(x, x, "full")[len(x) - 1:]
    lo, hi = int(sr / 2000), int(sr / 50)
    lag = lo + int(np.argmax(c[lo:hi]))
    a, b, cc = c[lag - 1], c[lag], c[lag + 1]
    lag = lag + 0.5 * (a - cc) / (a - 2 * b + cc)
    return sr / lag


def segment(x, sr, t0, t1):
    return x[int(t0 * sr):int(t1 * sr), 0]


def test_midi_running_status_plays_both_notes(organ, cli, tmp_path):
    ev = [{"t": 0.0, "midi": [0x90, 57, 100]}, {"t": 0.5, "midi": [64, 100]}]  # A3, then E4 by running status
    (tmp_path / "e.json").write_text(json.dumps(ev))
    out = tmp_path / "o.wav"
    cli("render", organ(), "-o", out, "--events", tmp_path / "e.json", "--seconds", "1", check=0)
    x, sr = read_wav(out)
    assert f0(segment(x, sr, 0.2, 0.45), sr) == pytest.approx(220.0, rel=0.005)
    assert f0(segment(x, sr, 0.7, 0.95), sr) == pytest.approx(329.63, rel=0.005)


def test_note_off_releases(organ, cli, tmp_path):
    ev = [{"t": 0.0, "midi": [0x90, 69, 127]}, {"t": 0.3, "midi": [0x80, 69, 0]}]
    (tmp_path / "e.json").write_text(json.dumps(ev))
    out = tmp_path / "o.wav"
    cli("render", organ(), "-o", out, "--events", tmp_path / "e.json", "--seconds", "1.2", check=0)
    x, sr = read_wav(out)
    assert np.abs(segment(x, sr, 0.1, 0.3)).max() > 0.2
    assert np.abs(segment(x, sr, 0.95, 1.2)).max() < 0.01


def test_knob_source_goes_through_the_mapping(organ, cli, tmp_path):
    ev = [{"t": 0.0, "set": {"loudness": -6}}, {"t": 0.0, "source": "knob1", "value": 0.0},
          {"t": 0.5, "source": "knob1", "value": 1.0}]
    (tmp_path / "e.json").write_text(json.dumps(ev))
    conf = tmp_path / "c.toml"
    conf.write_text('[[map]]\nsource = "knob1"\ncontrol = "pitch"\n')  # the keys play pitch by default
    out = tmp_path / "o.wav"
    cli("render", organ(), "-o", out, "--config", conf, "--events", tmp_path / "e.json", "--seconds", "1", check=0)
    x, sr = read_wav(out)
    # knob1 mapped to pitch (log 30..4000): 0 → 30 Hz, 1 → 4000 Hz
    low = segment(x, sr, 0.1, 0.45)
    zc_low = np.count_nonzero(np.diff(np.sign(low)) > 0) / 0.35
    high = segment(x, sr, 0.6, 0.95)
    zc_high = np.count_nonzero(np.diff(np.sign(high)) > 0) / 0.35
    assert zc_low < 100 and zc_high > 3000


def test_midi_file(organ, cli, tmp_path):
    mid = mido.MidiFile()
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.Message("note_on", note=72, velocity=100, time=0))
    tr.append(mido.Message("note_off", note=72, velocity=0, time=480))  # 0.5 s at 120 bpm
    mid.save(tmp_path / "n.mid")
    out = tmp_path / "o.wav"
    cli("render", organ(), "-o", out, "--midi", tmp_path / "n.mid", check=0)
    x, sr = read_wav(out)
    assert f0(segment(x, sr, 0.1, 0.4), sr) == pytest.approx(523.25, rel=0.005)
    assert len(x) >= 1.5 * sr  # default length: last event + 1 s


@pytest.mark.parametrize(
    "items, words",
    [
        ({}, "JSON list"),
        ([{"t": -1, "set": {"a": 1}}], "'t'"),
        ([{"t": 0}], "exactly one"),
        ([{"t": 0, "midi": [300]}], "0..255"),
        ([{"t": 0, "set": {"a": "x"}}], "number"),
        ([{"t": 0, "source": "knob1"}], "'value'"),
    ],
)
def test_bad_events(items, words):
    with pytest.raises(EventsError, match=words):
        parse_events(items, "e.json")


def test_events_sorted_stably():
    ev = parse_events([{"t": 1, "set": {"a": 1}}, {"t": 0, "set": {"a": 2}}, {"t": 1, "set": {"a": 3}}])
    assert [e.data["a"] for e in ev] == [2, 1, 3]
