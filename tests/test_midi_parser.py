"""The MIDI byte-stream parser on real bytes, checked against mido's own encoder (Message.bin)."""

from __future__ import annotations

import mido
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pi_synth.control.midi import MidiParser, ParserStats, parse

# ---- strategies: every mido message type, valid values only ------------------------------------

channels = st.integers(0, 15)
data7 = st.integers(0, 127)

CHANNEL_MESSAGES = st.one_of(
    st.builds(mido.Message, st.just("note_off"), channel=channels, note=data7, velocity=data7),
    st.builds(mido.Message, st.just("note_on"), channel=channels, note=data7, velocity=data7),
    st.builds(mido.Message, st.just("polytouch"), channel=channels, note=data7, value=data7),
    st.builds(
        mido.Message, st.just("control_change"), channel=channels, control=data7, value=data7
    ),
    st.builds(mido.Message, st.just("program_change"), channel=channels, program=data7),
    st.builds(mido.Message, st.just("aftertouch"), channel=channels, value=data7),
    st.builds(
        mido.Message, st.just("pitchwheel"), channel=channels, pitch=st.integers(-8192, 8191)
    ),
)
SYSTEM_COMMON = st.one_of(
    st.builds(mido.Message, st.just("sysex"), data=st.lists(data7, max_size=40)),
    st.builds(
        mido.Message,
        st.just("quarter_frame"),
        frame_type=st.integers(0, 7),
        frame_value=st.integers(0, 15),
    ),
    st.builds(mido.Message, st.just("songpos"), pos=st.integers(0, 16383)),
    st.builds(mido.Message, st.just("song_select"), song=data7),
    st.builds(mido.Message, st.just("tune_request")),
)
REALTIME_TYPES = ["clock", "start", "continue", "stop", "active_sensing", "reset"]
REALTIME = st.sampled_from(REALTIME_TYPES).map(mido.Message)
MESSAGES = st.one_of(CHANNEL_MESSAGES, CHANNEL_MESSAGES, SYSTEM_COMMON, REALTIME)
REALTIME_BYTES = st.sampled_from([0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF])

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def is_realtime(msg: mido.Message) -> bool:
    return msg.bin()[0] >= 0xF8


def with_running_status(messages: list[mido.Message]) -> bytes:
    """Encode as a sender using running status would: repeated channel status bytes left out."""
    out = bytearray()
    running = None
    for msg in messages:
        raw = msg.bin()
        status = raw[0]
        if status < 0xF0:
            if status == running:
                raw = raw[1:]
            running = status
        elif status < 0xF8:  # system common (and SysEx) cancel running status
            running = None
        out += raw  # realtime leaves it alone
    return bytes(out)


# ---- examples ----------------------------------------------------------------------------------


def test_running_status_gives_two_notes():
    # The case mido.Parser gets wrong.
    assert parse(bytes.fromhex("90 3C 64 3E 5A")) == [
        mido.Message("note_on", note=60, velocity=100),
        mido.Message("note_on", note=62, velocity=90),
    ]


def test_note_on_velocity_zero_stays_note_on():
    assert parse(bytes.fromhex("90 3C 64 3C 00")) == [
        mido.Message("note_on", note=60, velocity=100),
        mido.Message("note_on", note=60, velocity=0),
    ]


def test_running_status_for_one_data_byte_messages():
    assert parse(bytes.fromhex("C5 01 02 D3 40 41")) == [
        mido.Message("program_change", channel=5, program=1),
        mido.Message("program_change", channel=5, program=2),
        mido.Message("aftertouch", channel=3, value=0x40),
        mido.Message("aftertouch", channel=3, value=0x41),
    ]


@pytest.mark.parametrize("realtime", [0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF])
def test_realtime_inside_a_note_on_comes_out_first_and_leaves_the_note_alone(realtime):
    rt = mido.Message.from_bytes([realtime])
    stream = bytes([0x91, realtime, 0x3C, realtime, 0x64, 0x3E, realtime, 0x5A])
    assert parse(stream) == [
        rt,
        rt,
        mido.Message("note_on", channel=1, note=60, velocity=100),
        rt,
        mido.Message("note_on", channel=1, note=62, velocity=90),
    ]


def test_realtime_inside_sysex():
    assert parse(bytes.fromhex("F0 01 F8 02 F7")) == [
        mido.Message("clock"),
        mido.Message("sysex", data=[1, 2]),
    ]


def test_terminated_sysex_and_running_status_cancelled_by_it():
    parser = MidiParser()
    parser.feed(bytes.fromhex("90 3C 64 F0 7E 7F 06 01 F7 3E 5A"))
    assert list(parser) == [
        mido.Message("note_on", note=60, velocity=100),
        mido.Message("sysex", data=[0x7E, 0x7F, 0x06, 0x01]),
    ]
    assert parser.stats.stray_data == 2  # 3E 5A: SysEx cancelled running status


def test_unterminated_sysex_ended_by_a_new_status():
    parser = MidiParser()
    parser.feed(bytes.fromhex("F0 01 02 03 90 3C 64"))
    assert list(parser) == [
        mido.Message("sysex", data=[1, 2, 3]),
        mido.Message("note_on", note=60, velocity=100),
    ]
    assert parser.stats.sysex_unterminated == 1


def test_sysex_flood_is_dropped_counted_and_does_not_grow_memory():
    parser = MidiParser(max_sysex=64)
    buffer = parser._tokenizer._sysex  # the one preallocated buffer
    flood = bytes([0xF0]) + bytes(100_000) + bytes([0xF7])
    parser.feed(flood)
    parser.feed(bytes.fromhex("F0 01 F7"))  # a short one after it still gets through
    assert list(parser) == [mido.Message("sysex", data=[1])]
    assert parser.stats.sysex_overlong == 1
    assert parser._tokenizer._sysex is buffer and len(buffer) == 64


def test_sysex_at_exactly_max_length_passes():
    assert parse(bytes([0xF0, *range(16), 0xF7]), max_sysex=16) == [
        mido.Message("sysex", data=range(16))
    ]
    assert parse(bytes([0xF0, *range(17), 0xF7]), max_sysex=16) == []


def test_system_common_messages_and_running_status_cancelled():
    parser = MidiParser()
    parser.feed(bytes.fromhex("90 3C 64 F1 35 3E 5A F2 01 02 F3 05 F6"))
    assert list(parser) == [
        mido.Message("note_on", note=60, velocity=100),
        mido.Message("quarter_frame", frame_type=3, frame_value=5),
        mido.Message("songpos", pos=1 | 2 << 7),
        mido.Message("song_select", song=5),
        mido.Message("tune_request"),
    ]
    assert parser.stats.stray_data == 2


def test_stray_data_bytes_are_dropped_and_counted():
    parser = MidiParser()
    parser.feed(bytes.fromhex("01 02 03 90 3C 64"))
    assert list(parser) == [mido.Message("note_on", note=60, velocity=100)]
    assert parser.stats == ParserStats(stray_data=3)


def test_new_status_abandons_incomplete_message():
    parser = MidiParser()
    parser.feed(bytes.fromhex("90 3C 80 3C 40"))
    assert list(parser) == [mido.Message("note_off", note=60, velocity=64)]
    assert parser.stats.truncated == 1
    parser.feed(bytes.fromhex("B0 F2 01 F3 C0 05"))  # a status with no data is incomplete too
    assert list(parser) == [mido.Message("program_change", program=5)]
    assert parser.stats.truncated == 4


def test_running_status_then_new_status_is_not_truncation():
    parser = MidiParser()
    parser.feed(bytes.fromhex("90 3C 64 3E 5A 80 3C 40"))
    assert len(list(parser)) == 3
    assert parser.stats.total == 0


@pytest.mark.parametrize("undefined", [0xF4, 0xF5])
def test_undefined_system_common_is_ignored_and_cancels_running_status(undefined):
    parser = MidiParser()
    parser.feed(bytes([0x90, 0x3C, 0x64, undefined, 0x3E, 0x5A]))
    assert list(parser) == [mido.Message("note_on", note=60, velocity=100)]
    assert parser.stats.ignored_status == 1
    assert parser.stats.stray_data == 2


@pytest.mark.parametrize("undefined", [0xF9, 0xFD])
def test_undefined_realtime_is_ignored_like_any_realtime_byte(undefined):
    # MIDI 1.0: realtime status bytes (F8..FF) never interrupt a message or running status.
    parser = MidiParser()
    parser.feed(bytes([0x90, 0x3C, undefined, 0x64, 0x3E, 0x5A]))
    assert list(parser) == [
        mido.Message("note_on", note=60, velocity=100),
        mido.Message("note_on", note=62, velocity=90),
    ]
    assert parser.stats == ParserStats(ignored_status=1)


def test_stray_end_of_sysex_is_ignored():
    parser = MidiParser()
    parser.feed(bytes.fromhex("F7 90 3C 64"))
    assert list(parser) == [mido.Message("note_on", note=60, velocity=100)]
    assert parser.stats.ignored_status == 1


def test_feed_accepts_bytes_bytearray_lists_and_byte_by_byte():
    raw = bytes.fromhex("90 3C 64 3E 5A")
    expected = parse(raw)
    for chunk in (bytearray(raw), list(raw), iter(raw), memoryview(raw)):
        parser = MidiParser()
        parser.feed(chunk)
        assert list(parser) == expected
    parser = MidiParser()
    for byte in raw:
        parser.feed_byte(byte)
    assert len(parser) == parser.pending() == 2
    assert parser.poll() == expected[0]
    assert parser.get_message() == expected[1]
    assert parser.poll() is None


def test_messages_split_across_feeds():
    parser = MidiParser()
    parser.feed(b"\x90\x3c")
    assert parser.pending() == 0
    parser.feed(b"\x64\x3e")
    parser.feed(b"\x5a")
    assert [m.note for m in parser] == [60, 62]


@pytest.mark.parametrize("bad", [256, -1, 1000])
def test_out_of_range_int_raises_value_error(bad):
    with pytest.raises(ValueError, match=r"MIDI byte must be in range 0\.\.255"):
        MidiParser().feed_byte(bad)
    with pytest.raises(ValueError, match=r"MIDI byte must be in range 0\.\.255"):
        MidiParser().feed([0x90, bad])


@pytest.mark.parametrize("bad", [1.0, "a", None, b"\x90"])
def test_non_int_raises_type_error(bad):
    with pytest.raises(TypeError):
        MidiParser().feed_byte(bad)
    with pytest.raises(TypeError):
        MidiParser().feed([bad])


def test_str_is_not_bytes():
    with pytest.raises(TypeError):
        MidiParser().feed("90 3C 64")


def test_pending_queue_is_bounded():
    parser = MidiParser(max_pending=3)
    parser.feed(bytes([0xF8] * 5))
    assert parser.pending() == 3
    assert parser.stats.overflow == 2


def test_reset_forgets_running_status_but_not_stats():
    parser = MidiParser()
    parser.feed(bytes.fromhex("01 90 3C"))
    parser.reset()
    parser.feed(bytes.fromhex("64"))
    assert list(parser) == []
    assert parser.stats.stray_data == 2


# ---- properties --------------------------------------------------------------------------------


@FAST
@given(st.lists(MESSAGES, max_size=30))
def test_round_trip_every_message_type(messages):
    parser = MidiParser()
    parser.feed(b"".join(m.bin() for m in messages))
    assert list(parser) == messages
    assert parser.stats.total == 0


@FAST
@given(st.lists(MESSAGES, max_size=30))
def test_round_trip_with_running_status(messages):
    parser = MidiParser()
    parser.feed(with_running_status(messages))
    assert list(parser) == messages
    assert parser.stats.total == 0


@FAST
@given(st.lists(MESSAGES, max_size=20), st.data())
def test_realtime_bytes_anywhere_do_not_disturb_other_messages(messages, data):
    stream = bytearray(with_running_status(messages))
    inserted = data.draw(
        st.lists(st.tuples(st.integers(0, len(stream)), REALTIME_BYTES), max_size=10)
    )
    for position, byte in sorted(inserted, key=lambda item: item[0], reverse=True):
        stream.insert(position, byte)
    parser = MidiParser()
    parser.feed(stream)
    out = list(parser)
    # mido's Message.is_realtime misses active_sensing and reset, so go by the status byte.
    assert [m for m in out if not is_realtime(m)] == [m for m in messages if not is_realtime(m)]
    assert [m.bin()[0] for m in out if is_realtime(m)] == [b for b in stream if b >= 0xF8]
    assert parser.stats.total == 0


@FAST
@given(st.binary(max_size=400), st.integers(0, 300))
def test_any_byte_stream_never_raises(junk, max_sysex):
    parser = MidiParser(max_sysex=max_sysex)
    parser.feed(junk)
    out = list(parser)
    for msg in out:
        assert isinstance(msg, mido.Message)
        # Everything that comes out is a valid message mido can encode and decode again.
        assert mido.Message.from_bytes(msg.bytes()) == msg
    # what was thrown away is counted: every undefined status byte, and every data byte that
    # came before any status (a stream of data bytes alone is all stray)
    undefined = sum(b in (0xF4, 0xF5, 0xF9, 0xFD) for b in junk)
    assert parser.stats.ignored_status >= undefined
    lead = 0
    for b in junk:
        if 0x80 <= b < 0xF8:
            break
        lead += b < 0x80
    assert parser.stats.stray_data >= lead
    if not any(0x80 <= b < 0xF8 for b in junk):  # no status byte but realtime ones
        assert parser.stats.stray_data == sum(b < 0x80 for b in junk)
        assert [m.bin()[0] for m in out] == [b for b in junk if b >= 0xF8 and b not in (0xF9, 0xFD)]


@FAST
@given(st.lists(st.tuples(st.binary(max_size=30), MESSAGES), max_size=12), st.binary(max_size=30))
def test_every_complete_message_survives_junk_around_it(pieces, tail):
    """Junk before a message cannot eat it: the message starts with a fresh status byte.

    A complete message is emitted at its last byte, so after feeding its bytes it is the last
    message out; at most one other comes out with it (a SysEx from the junk that its status
    byte ended).  Junk after it may add messages (running status, realtime) but never
    takes it back.
    """
    parser = MidiParser()
    seen = []
    for junk, msg in pieces:
        parser.feed(junk)
        seen.extend(parser)
        parser.feed(msg.bin())
        out = list(parser)
        assert out and out[-1] == msg
        assert len(out) <= 2
        assert all(m.type == "sysex" for m in out[:-1])
        seen.extend(out)
    parser.feed(tail)
    seen.extend(parser)
    # And in the whole output the messages appear in order.
    it = iter(seen)
    assert all(any(m == msg for m in it) for _, msg in pieces)
