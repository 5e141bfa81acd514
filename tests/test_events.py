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
        ([{"t": 0, "midi": []}], "non-empty"),
        ([{"t": 0, "midi": [144, 60, 100], "velocity": 100}], "unknown key 'velocity'"),
    ],
)
def test_bad_events(items, words):
    with pytest.raises(EventsError, match=words):
        parse_events(items, "e.json")


def test_a_byte_order_mark_is_read_past(tmp_path):
    """Files saved as "UTF-8" by Windows editors start with a BOM: events and configs."""
    from pi_synth import config as config_mod
    from pi_synth.control.events import load_events

    (tmp_path / "e.json").write_bytes(b'\xef\xbb\xbf[{"t": 0, "midi": [144, 60, 100], "comment": "C4"}]')
    assert load_events(tmp_path / "e.json")[0].data == bytes([144, 60, 100])
    (tmp_path / "c.toml").write_bytes(b"\xef\xbb\xbf[audio]\nperiod = 128\n")
    assert config_mod.load(str(tmp_path / "c.toml")).audio.period == 128


def test_events_sorted_stably():
    ev = parse_events([{"t": 1, "set": {"a": 1}}, {"t": 0, "set": {"a": 2}}, {"t": 1, "set": {"a": 3}}])
    assert [e.data["a"] for e in ev] == [2, 1, 3]


def _controls_per_block(path, events, blocks, placed=True):
    """The controls the model got each block ([n_controls, frames] copies) with ``events``
    applied by a Timeline (``placed``: given the player's block, as the app does)."""
    from pi_synth.audio.player import Player
    from pi_synth.audio.synth import Synth
    from pi_synth.control.events import Timeline
    from pi_synth.control.router import Router
    from pi_synth.model.runtime import Runtime

    synth = Synth(Runtime(path))
    router = Router(synth.card, synth.bank)
    tl = Timeline(parse_events(events), router, synth.sample_rate, block=synth.block_size if placed else None)
    player = Player(synth, [tl])
    out = []
    for _ in range(blocks):
        player.next_block()
        out.append(synth.runtime.controls.reshape(len(synth.card.controls), -1).copy())
    return out, synth.bank.index("loudness"), tl


@pytest.mark.parametrize("offset, block, frame", [
    (0, 0, 0),        # on the boundary: from its first frame
    (1, 0, 1),        # just after: the next frame (never before the event)
    (256, 0, 1),      # on a frame boundary: that frame
    (257, 0, 2),
    (768, 0, 3),
    (769, 1, 0),      # past the last frame's start: the next block's first
])
def test_set_inside_a_block_steps_at_its_control_frame(organ, offset, block, frame):
    """A model with 4 control frames in a 1024-frame block: a set at sample offset k of a
    block lands in the first frame that starts at or after k; the frames before keep the
    old value (no ramp that would start before the event)."""
    t = (4 * 1024 + offset) / 48000
    ctl, il, tl = _controls_per_block(organ(block_size=1024, control_frames=4),
                                      [{"t": 0, "set": {"loudness": -60}}, {"t": t, "set": {"loudness": -6}}], 7)
    got = ctl[4 + block][il]
    want = np.where(np.arange(4) >= frame, -6.0, -60.0)
    assert np.allclose(got, want), got
    if block:
        assert np.allclose(ctl[4][il], -60.0)
    assert np.allclose(ctl[6][il], -6.0) and tl.placed == 2


def test_knob_inside_a_block_sounds_a_block_sooner(organ):
    """The latency the placement saves, on the audio clock (deterministic): knob turns at
    random offsets inside 1024-frame blocks sound within a frame (256) plus the organ's
    ramp, where waiting for the boundary takes up to a block more."""
    from pi_synth.audio.player import Player
    from pi_synth.audio.synth import Synth
    from pi_synth.control.events import Timeline
    from pi_synth.control.router import Router
    from pi_synth.model.runtime import Runtime

    path = organ(block_size=1024, control_frames=4)
    ts = [0.5 + 0.8 * j + (137 * j % 1024) / 48000 for j in range(8)]
    ev = [e for t in ts for e in ({"t": t, "set": {"loudness": -6}}, {"t": t + 0.4, "set": {"loudness": -80}})]
    res = {}
    for placed in (False, True):
        synth = Synth(Runtime(path))
        tl = Timeline(parse_events(ev), Router(synth.card, synth.bank), 48000, block=1024 if placed else None)
        player = Player(synth, [tl])
        x = np.concatenate([player.next_block()[:, 0].copy() for _ in range(int(7.2 * 48000 / 1024))])
        lat = []
        for t in ts:
            e = round(t * 48000)
            seg = np.abs(x[e:e + 14400])
            lat.append(int(np.argmax(seg > seg.max() * 0.01)))  # −40 dB of what follows
        res[placed] = np.array(lat)
    assert res[True].max() < 256 + 150 < res[False].max()  # a frame + the ramp to −40 dB
    assert np.median(res[True]) < np.median(res[False]) - 400


def test_midi_inside_a_block_waits_for_the_boundary(organ):
    """A note's envelope advances a block at a time: MIDI events keep to block boundaries
    (and the set after one waits with it, in order)."""
    ctl, il, tl = _controls_per_block(
        organ(block_size=1024, control_frames=4),
        [{"t": 0, "set": {"brightness": 0.2}}, {"t": 1100 / 48000, "midi": [0x90, 69, 110]},
         {"t": 1200 / 48000, "set": {"brightness": 0.9}}], 4)
    ib = 2  # brightness
    assert np.allclose(ctl[1][ib], 0.2)  # the note at 1100 held the later set back: block 1 unchanged
    assert np.allclose(ctl[2][ib], 0.9) and tl.placed == 2  # both at block 2's boundary (its frame 0)


def test_one_control_frame_keeps_the_block_boundary(organ):
    """A model with one control frame a block (its block cannot be split): a set inside a
    block is applied at the next boundary, as before."""
    ctl, il, tl = _controls_per_block(organ(), [{"t": 0, "set": {"loudness": -60}},
                                                {"t": (3 * 256 + 100) / 48000, "set": {"loudness": -6}}], 6)
    assert np.allclose(ctl[3][il], -60.0) and np.allclose(ctl[4][il], -6.0) and tl.placed == 0


def _song(notes, tpb=480, tempo=None):
    """A track of (note, start tick, length ticks), in order."""
    tr = mido.MidiTrack()
    if tempo:
        tr.append(mido.MetaMessage("set_tempo", tempo=tempo))
    now = 0
    for note, start, length in notes:
        tr.append(mido.Message("note_on", note=note, velocity=100, time=start - now))
        tr.append(mido.Message("note_off", note=note, velocity=0, time=length))
        now = start + length
    return tr


def _ons(events):
    return [(round(e.t, 3), e.data[1]) for e in events if e.data[0] & 0xF0 == 0x90 and e.data[2]]


def test_midi_files_as_they_come(tmp_path):
    """Files from elsewhere: type 2 (independent songs, played one after the other), SMPTE
    time (25 fps × 40 ticks: 1000 ticks a second, a tempo meta event changes nothing), a RIFF
    MIDI (.rmi) wrapper, and files that cannot play, each said in one line."""
    from pi_synth.control.events import load_midi_file

    mid = mido.MidiFile(type=2)
    mid.tracks += [_song([(60, 0, 480)]), _song([(64, 0, 480)], tempo=250000)]  # 0.5 s, then 0.25 s at 240 bpm
    mid.save(tmp_path / "type2.mid")
    assert _ons(load_midi_file(tmp_path / "type2.mid")) == [(0.0, 60), (0.5, 64)]

    mid = mido.MidiFile(type=1)
    mid.tracks += [_song([(67, 500, 1000)], tempo=1000000)]
    mid.save(tmp_path / "smpte.mid")
    raw = bytearray((tmp_path / "smpte.mid").read_bytes())
    raw[12:14] = bytes([256 - 25, 40])  # division: -25 fps, 40 ticks a frame
    (tmp_path / "smpte.mid").write_bytes(bytes(raw))
    ev = load_midi_file(tmp_path / "smpte.mid")
    assert _ons(ev) == [(0.5, 67)] and ev[-1].t == pytest.approx(1.5)

    smf = (tmp_path / "type2.mid").read_bytes()
    body = b"RMID" + b"data" + len(smf).to_bytes(4, "little") + smf
    (tmp_path / "song.rmi").write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    assert _ons(load_midi_file(tmp_path / "song.rmi")) == [(0.0, 60), (0.5, 64)]

    mid = mido.MidiFile()
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000)]))
    mid.save(tmp_path / "meta.mid")
    with pytest.raises(EventsError, match="no notes or controller messages"):
        load_midi_file(tmp_path / "meta.mid")
    (tmp_path / "cut.mid").write_bytes(smf[:30])  # cut inside the first track: its first note plays
    assert _ons(load_midi_file(tmp_path / "cut.mid")) == [(0.0, 60)]


def _smf(*chunks, fmt=0, division=480):
    head = b"MThd" + (6).to_bytes(4, "big") + fmt.to_bytes(2, "big") + len(chunks).to_bytes(2, "big") \
        + division.to_bytes(2, "big")
    return head + b"".join(chunks)


def _chunk(body, kind=b"MTrk", length=None):
    return kind + (len(body) if length is None else length).to_bytes(4, "big") + body


EOT = b"\x00\xff\x2f\x00"
NOTE = b"\x00\x90\x3c\x64" + b"\x83\x60\x80\x3c\x00"  # C4 for 480 ticks (0.5 s at 120 bpm)


@pytest.mark.parametrize("name, raw, repaired", [
    ("a key signature of 9 sharps (mido refuses it)", _smf(_chunk(b"\x00\xff\x59\x02\x09\x00" + NOTE + EOT)), ""),
    ("an XF chunk before the track", _smf(_chunk(b"XF", b"XFIH"), _chunk(NOTE + EOT)), "skipped chunk(s) XFIH"),
    ("a velocity byte over 127", _smf(_chunk(b"\x00\x90\x3c\xe4\x83\x60\x80\x3c\x00" + EOT)), "clipped to 127"),
    ("a tempo event 2 bytes long", _smf(_chunk(b"\x00\xff\x51\x02\x07\xa1" + NOTE + EOT)), "damaged tempo"),
    ("a track length too short", _smf(_chunk(NOTE + EOT, length=5)), "length is wrong"),
    ("a track length too long", _smf(_chunk(NOTE + EOT, length=200)), ""),  # all read: nothing to say
    ("a file cut in its last event", _smf(_chunk(NOTE + EOT))[:-6], "ends early"),
])
def test_damaged_midi_files_play_what_they_hold(tmp_path, caplog, name, raw, repaired):
    """Files from the wild that mido refuses whole: the note plays, and one log line says
    what was repaired."""
    from pi_synth.control.events import load_midi_file

    (tmp_path / "f.mid").write_bytes(raw)
    with caplog.at_level("WARNING"):
        ev = load_midi_file(tmp_path / "f.mid")
    assert _ons(ev) == [(0.0, 60)], name
    lines = [r.getMessage() for r in caplog.records]
    assert (repaired in lines[0] and len(lines) == 1) if repaired else not lines, (name, lines)


@pytest.mark.parametrize("raw, words", [
    (b"", "is empty"),
    (_smf(_chunk(NOTE + EOT), division=0), "0 ticks a beat"),
    (_smf(_chunk(NOTE + EOT))[:10], "ends inside its header"),
    (_smf(), "holds no track"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", "not a Standard MIDI File"),
])
def test_midi_files_with_nothing_to_play_are_one_line(tmp_path, raw, words):
    from pi_synth.control.events import load_midi_file

    (tmp_path / "f.mid").write_bytes(raw)
    with pytest.raises(EventsError, match=words):
        load_midi_file(tmp_path / "f.mid")


def test_midi_file_and_events_keep_their_own_running_status(organ, cli, tmp_path):
    """--midi and --events together: the events' running-status note is a note-on of its
    own stream, not a note-off carried over from the file's last message."""
    (tmp_path / "f.mid").write_bytes(_smf(_chunk(NOTE + EOT)))  # ends on a note-off (0x80)
    ev = [{"t": 0.2, "midi": [0x90, 67, 90]}, {"t": 0.3, "midi": [67, 0]}, {"t": 0.9, "midi": [64, 90]}]
    (tmp_path / "e.json").write_text(json.dumps(ev))
    r = cli("render", str(organ()), "-o", str(tmp_path / "o.wav"), "--midi", str(tmp_path / "f.mid"),
            "--events", str(tmp_path / "e.json"), "--seconds", "1.2")
    assert r.returncode == 0, r.stderr
    x, sr = read_wav(tmp_path / "o.wav")
    assert np.sqrt(np.mean(x[int(1.0 * sr):int(1.15 * sr)] ** 2)) > 0.01  # E4 at 0.9 s (running status 0x90)


def test_notes_that_will_not_play_as_written_are_said(organ, cli, tmp_path):
    """Notes past the model's pitch range sound at its nearest end, and a channel nobody
    plays on is silence: both said in one line, the render goes on."""
    ev = [{"t": 0.0, "midi": [0x90, 0, 100]}, {"t": 0.2, "midi": [0x90, 127, 100]},
          {"t": 0.4, "midi": [0x99, 69, 100]}]  # the last on channel 10
    (tmp_path / "e.json").write_text(json.dumps(ev))
    r = cli("render", str(organ()), "-o", str(tmp_path / "o.wav"), "--events", str(tmp_path / "e.json"),
            "--seconds", "0.6", check=0)
    assert "2 of 3 notes lie outside organ's pitch range 30–4000 Hz (B0–B7)" in r.stderr, r.stderr
    (tmp_path / "ch1.toml").write_text("[midi]\nchannel = 1\n")
    ev = [{"t": 0.0, "midi": [0x99, 60, 100]}]
    (tmp_path / "e.json").write_text(json.dumps(ev))
    r = cli("render", str(organ()), "-o", str(tmp_path / "o.wav"), "--events", str(tmp_path / "e.json"),
            "--seconds", "0.3", env={"PI_SYNTH_CONFIG": str(tmp_path / "ch1.toml")}, check=0)
    assert "no notes on MIDI channel 1 ([midi] channel), the events' are on channel(s) 10" in r.stderr, r.stderr
    r = cli("render", str(organ()), "-o", str(tmp_path / "o.wav"), "--midi", "demo", check=0)
    assert "WARNING" not in r.stderr, r.stderr
