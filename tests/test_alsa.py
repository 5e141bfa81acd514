"""Real libasound, through the PCMs the project ships for tests (tests/alsa/)."""

import json
import time

import numpy as np
import pytest

from pi_synth.audio.backends.alsa import AlsaBackend
from pi_synth.audio.backends.wav import read_wav
from pi_synth.errors import DeviceError

EVENTS = [
    {"t": 0.0, "midi": [144, 60, 100]},
    {"t": 0.4, "midi": [62, 90]},  # running status: a second note-on
    {"t": 0.8, "midi": [128, 60, 0, 128, 62, 0]},
    {"t": 0.9, "source": "knob1", "value": 0.9},
    {"t": 0.9, "midi": [144, 67, 110]},
    {"t": 1.4, "set": {"brightness": 0.1}},
]


@pytest.fixture
def events(tmp_path):
    p = tmp_path / "events.json"
    p.write_text(json.dumps(EVENTS))
    return p


@pytest.mark.jack
@pytest.mark.parametrize("period,engine", [(128, "auto"), (256, "auto"), (1000, "auto"),
                                           (1000, "threaded")])
def test_alsa_recording_equals_offline_render(organ, cli, tmp_path, events, period, engine,
                                              jack_server, retry_after_stall):
    """Through a file PCM paced by JACK (a sound card with a recorder on its input),
    with any ALSA period and either engine: the bytes the device got are the offline
    render's."""
    model = organ()
    wav = tmp_path / "render.wav"
    raw = tmp_path / "rec.raw"
    conf = tmp_path / "c.toml"  # a deeper ring: the test is about bytes, not about load
    conf.write_text(f'[audio]\nperiods = 4\nahead_blocks = 4\nengine = "{engine}"\n')
    cli("render", model, "-o", wav, "--events", events, "--seconds", "2", check=0)
    rendered, sr = read_wav(wav)
    ref = np.round(rendered[:, 0] * 32767).astype(np.int16)
    assert len(ref) > 2 * sr and np.abs(ref).max() > 1000

    def attempt():
        p = cli("run", "--config", conf, "--model", model, "--device", f"pisynth_jackfile:FILE={raw}",
                "--events", events, "--seconds", "2", "--period", period, check=0)
        assert "0 xruns, 0 late periods" in p.stderr, p.stderr
        # the organ renders a 256-frame block far inside any of these margins: auto runs
        # direct (one thread), also on 1000-frame periods (four blocks per period)
        assert ("threaded engine" if engine == "threaded" else "direct engine") in p.stderr
        rec = np.fromfile(raw, "<i2")
        assert len(rec) >= len(ref) and len(rec) - len(ref) < period
        assert np.array_equal(rec[:len(ref)], ref)
        assert not rec[len(ref):].any()  # only zero padding of the last period

    retry_after_stall(attempt)


def test_missing_pcm_is_one_clear_line(organ, cli):
    p = cli("run", "--model", organ(), "--device", "no_such_pcm", "--seconds", "1")
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "no_such_pcm" in p.stderr and "aplay -L" in p.stderr
    assert "Traceback" not in p.stderr


def test_backend_reports_what_was_granted():
    b = AlsaBackend("pisynth_null", format="S16_LE")
    g = b.open(48000, 1, 256, 2)
    try:
        assert (g.sample_rate, g.channels, g.format) == (48000, 1, "S16_LE")
        assert g.period > 0 and g.periods >= 2
        assert b.write(np.zeros((g.period, 1), np.float32)) == g.period
    finally:
        b.close()
        b.close()  # idempotent
    with pytest.raises(DeviceError, match="nope"):
        AlsaBackend("nope").open(48000, 1, 256, 2)


@pytest.mark.jack
def test_jack_paces_in_real_time(organ, cli, jack_server, events):
    """Through the JACK dummy backend writes block like a sound card: 2 s take ≥ 2 s."""
    t0 = time.monotonic()
    p = cli("run", "--model", organ(), "--device", "pisynth_jack", "--events", events,
            "--seconds", "2", check=0)
    elapsed = time.monotonic() - t0
    assert elapsed >= 1.9, p.stderr
    assert "S16_LE" in p.stderr  # plug converted for us
    assert "late periods" in p.stderr


@pytest.mark.jack
def test_raw_jack_pcm_grants_float_stereo(jack_server):
    """A raw JACK PCM ignores what we ask: we read back FLOAT_LE stereo and convert."""
    b = AlsaBackend("pisynth_jack_raw", format="S16_LE")
    g = b.open(48000, 1, 256, 2)
    try:
        assert g.format == "FLOAT_LE" and g.channels == 2
        for _ in range(10):
            assert b.write(np.full((g.period, 1), 0.25, np.float32)) == g.period
    finally:
        b.close()


@pytest.mark.jack
def test_wait_room_sleeps_until_a_period_is_free(jack_server, retry_after_stall):
    """Just-in-time rendering waits for room *before* rendering. On a JACK PCM the wait
    must sleep in poll: the plugin's wake-up byte has to be consumed (revents), or the
    poll descriptor stays readable and the wait spins a core (5.7 M polls in 10 s, and
    underruns once the spinning thread runs SCHED_FIFO)."""

    def attempt():
        b = AlsaBackend("pisynth_jack")
        g = b.open(48000, 1, 256, 2)
        x = np.zeros((g.period, 1), np.float32)
        try:
            for _ in range(g.periods):  # fill the buffer: now there is no room
                b.write(x)
            waits = []
            c0, w0 = time.process_time(), time.monotonic()
            for _ in range(150):  # 0.8 s of periods
                t = time.monotonic()
                b.wait_room(g.period)
                waits.append(time.monotonic() - t)
                b.write(x)  # must not block now
            cpu, wall = time.process_time() - c0, time.monotonic() - w0
        finally:
            b.close()
        period_s = g.period / 48000
        assert wall > 0.7 * 150 * period_s  # paced by JACK, not returning at once
        assert np.median(waits) > 0.3 * period_s  # the waiting happens in wait_room
        assert cpu < 0.25 * wall, f"wait_room spins: {cpu:.2f} s CPU in {wall:.2f} s"
        assert b.xruns == 0

    retry_after_stall(attempt)


@pytest.mark.jack
def test_forced_direct_engine_with_a_block_longer_than_the_buffer(organ, jack_server, retry_after_stall):
    """Just-in-time waits for as much room as the buffer can free: a 1024-frame block on a
    256×2 buffer, written a period at a time, still plays, no xruns."""

    def attempt():
        from pi_synth.audio.engine import Engine
        from pi_synth.audio.player import Player
        from pi_synth.audio.synth import Synth
        from pi_synth.control.events import StopAt
        from pi_synth.model.runtime import Runtime

        synth = Synth(Runtime(organ(block_size=1024, control_frames=4)))
        synth.bank.set("loudness", -6)
        player = Player(synth)
        player.hooks.append(StopAt(48000 // 2, player.fade_out))
        backend = AlsaBackend("pisynth_jack")
        engine = Engine(player, backend, period=256, periods=2, mode="direct")
        t0 = time.monotonic()
        engine.start()
        try:
            assert engine.wait(10), "the engine never finished"
            elapsed = time.monotonic() - t0
        finally:
            engine.stop(fade=False)
        assert engine.mode == "direct" and backend.xruns == 0
        assert 0.4 < elapsed < 3.0

    retry_after_stall(attempt)


def xruns_after(xruns, t: float) -> int:
    """Xruns counted within 50 ms after ``t``: by the write right after a stall that ended at ``t``."""
    return sum(t <= x <= t + 0.05 for x in xruns)


class Stall:
    """A block hook that stalls the audio thread once at each given block, as a preempted
    thread or a page fault would (what a quiet test machine does not do on its own)."""

    def __init__(self, blocks, seconds):
        self.at, self.seconds, self.n = set(blocks), seconds, 0
        self.ended: list[float] = []  # when each stall ended (time.monotonic)

    def __call__(self, position):
        if self.n in self.at:
            time.sleep(self.seconds)
            self.ended.append(time.monotonic())
        self.n += 1


@pytest.mark.jack
def test_direct_engine_renders_ahead_after_an_xrun(organ, jack_server):
    """Rendering just in time leaves the buffer less one period as margin — on this rig
    two periods (10.7 ms: libasound's JACK plugin holds a period of its own; measured: a
    9 ms stall passes, 11 ms is an xrun). After that xrun the engine renders a period
    ahead (margin 16 ms: 13 ms passes, 16 ms is an xrun), so the same 13 ms stall again
    is not one.

    Judged by when each xrun happened (``Backend.last_xrun_times``): a VM's host can take
    the CPU for 10 ms or more on its own (``benchmarks/_stallprobe.py``), and an xrun of
    its making, away from our stalls, is not the engine's. If one came before our first
    stall the engine was already ahead, and then neither stall may break through."""
    from pi_synth.audio.engine import Engine
    from pi_synth.audio.player import Player
    from pi_synth.model.runtime import Runtime
    from pi_synth.audio.synth import Synth
    from pi_synth.control.events import StopAt

    synth = Synth(Runtime(organ()))
    synth.bank.set("loudness", -6)
    player = Player(synth)
    stall = Stall([200, 400], 0.013)
    player.hooks.append(stall)
    player.hooks.append(StopAt(600 * 256, player.fade_out))
    backend = AlsaBackend("pisynth_jack")
    # early render (right after the wait): the margins above are its (late render: test_engine_late.py)
    engine = Engine(player, backend, period=256, periods=2, mode="direct", late=False)
    engine.start()
    try:
        time.sleep(0.5)  # ~90 blocks: before the first stall
        before = engine.status()
        assert engine.wait(10), "the engine never finished"
    finally:
        engine.stop(fade=False)
    assert before["engine_mode"] == "direct"
    first, second = stall.ended
    xruns = backend.last_xrun_times()
    assert len(xruns) == backend.xruns

    if not any(x < first for x in xruns):
        assert before["render"] == "early"
        assert xruns_after(xruns, first) == 1  # the first stall broke through …
    else:
        assert xruns_after(xruns, first) == 0  # (already ahead after the host's xrun)
    assert xruns_after(xruns, second) == 0  # … the second, rendered ahead, did not
    assert engine.status()["render"] == "ahead"


@pytest.mark.jack
def test_direct_engine_goes_back_to_just_in_time_after_a_quiet_hold(organ, jack_server, retry_after_stall):
    """After an xrun the engine renders ahead for ``ahead_hold_s`` (here 0.3 s) and then
    just in time again, so one stall does not cost a period of latency for good. The same
    13 ms stall soon after going back breaks through again (just in time has the smaller
    margin), and that doubles the hold."""
    from pi_synth.audio.engine import Engine
    from pi_synth.audio.player import Player
    from pi_synth.model.runtime import Runtime
    from pi_synth.audio.synth import Synth
    from pi_synth.control.events import StopAt

    def attempt():
        synth = Synth(Runtime(organ()))
        synth.bank.set("loudness", -6)
        player = Player(synth)
        stall = Stall([200, 300], 0.013)  # 300: ~0.5 s on, after the 0.3 s hold (56 blocks)
        renders = []
        player.hooks.append(stall)
        player.hooks.append(lambda pos: renders.append(engine.render_ahead) if pos % (50 * 256) == 0 else None)
        player.hooks.append(StopAt(700 * 256, player.fade_out))
        backend = AlsaBackend("pisynth_jack")
        engine = Engine(player, backend, period=256, periods=2, mode="direct", ahead_hold_s=0.3, late=False)
        hold0 = engine.ahead_hold_blocks
        engine.start()
        try:
            assert engine.wait(10), "the engine never finished"
        finally:
            engine.stop(fade=False)
        first, second = stall.ended
        xruns = backend.last_xrun_times()
        assert [xruns_after(xruns, t) for t in (first, second)] == [1, 1], (xruns, stall.ended)
        assert len(xruns) == 2  # and none of the machine's: a retry judges that
        assert engine.ahead_hold_blocks == 2 * hold0  # came back within a hold: held twice as long
        # block 0–200 just in time, ahead after it, back by 300, ahead again, back at the end
        assert renders[:4] == [False] * 4 and renders[5] is True and renders[-1] is False, renders
        assert engine.status()["render"] == "early"

    retry_after_stall(attempt)


@pytest.mark.parametrize("block,period,periods,margin", [
    (256, 256, 2, 256),    # the flute voice: the buffer less the period it waits for
    (256, 256, 3, 512),
    (1024, 256, 2, 256),   # a 1024-sample model: waits for a period, writes the rest as room comes
    (1024, 256, 3, 512),   # ... so a period more buffer is a period more margin
    (512, 256, 4, 768),
    (128, 256, 2, 256),    # room comes a whole period at a time
    (256, 1000, 4, 3000),
])
def test_direct_mode_needs_a_quarter_of_the_margin(organ, block, period, periods, margin):
    """Auto picks direct when a block renders in a quarter of the frames still queued when
    a just-in-time render starts; anything slower gets the ring (holds and fades)."""
    from pi_synth.audio.backends.null import NullBackend
    from pi_synth.audio.engine import Engine
    from pi_synth.audio.player import Player
    from pi_synth.model.runtime import Runtime
    from pi_synth.audio.synth import Synth

    synth = Synth(Runtime(organ(block_size=block, control_frames=max(1, block // 256))))
    engine = Engine(Player(synth), NullBackend(), period=period, periods=periods)
    engine.granted = engine.backend.open(48000, 1, period, periods)
    assert engine.direct_margin() == margin
    limit = 0.25 * margin / block  # as a real-time factor of one block
    assert engine.direct_fits(0.99 * limit) and not engine.direct_fits(1.01 * limit)
    engine.backend.close()


@pytest.mark.parametrize("rtf,block,period", [
    (0.02, 256, 256), (0.3, 256, 256), (0.07, 1024, 256), (0.1, 1024, 256), (0.5, 2048, 512),
])
def test_direct_periods_is_the_fewest_that_fit(organ, rtf, block, period):
    """The buffer the log hint and the Pi projection name is the smallest the engine's own
    rule accepts."""
    from pi_synth.audio.backends.null import NullBackend
    from pi_synth.audio.engine import Engine, direct_periods
    from pi_synth.audio.player import Player
    from pi_synth.model.runtime import Runtime
    from pi_synth.audio.synth import Synth

    synth = Synth(Runtime(organ(block_size=block, control_frames=max(1, block // 256))))
    n = direct_periods(rtf, block, period)

    def fits(periods):
        engine = Engine(Player(synth), NullBackend(), period=period, periods=periods)
        engine.granted = engine.backend.open(48000, 1, period, periods)
        engine.backend.close()
        return engine.direct_fits(rtf)

    assert fits(n) and (n == 2 or not fits(n - 1))


def test_auto_engine_runs_a_fast_long_block_direct(organ):
    """A 1024-frame block that renders in well under a sixteenth of real time plays in one
    thread on a 256×2 buffer (no ring: one block less latency than threaded)."""
    from pi_synth.audio.engine import Engine
    from pi_synth.audio.player import Player
    from pi_synth.model.runtime import Runtime
    from pi_synth.audio.synth import Synth
    from pi_synth.control.events import StopAt

    synth = Synth(Runtime(organ(block_size=1024, control_frames=4)))
    assert synth.runtime.warmup_rtf < 0.0625
    player = Player(synth)
    player.hooks.append(StopAt(48000 // 4, player.fade_out))
    engine = Engine(player, AlsaBackend("pisynth_null"), period=256, periods=2)
    engine.start()
    assert engine.wait(10)
    engine.stop(fade=False)
    assert engine.mode == "direct" and engine.status()["latency_frames"] == 512


@pytest.mark.parametrize("rtf,mode,periods", [
    (0.03, "direct", 2),    # fits 256×2 as it is
    (0.1, "direct", 3),     # over a sixteenth, under an eighth: one period more, still direct
    (0.5, "threaded", 2),   # would need more buffer than the ring costs: the ring
])
def test_auto_engine_adds_a_period_rather_than_a_ring(organ, rtf, mode, periods):
    """A long block too slow for direct on 256×2: auto opens the device with the periods
    that let it play direct, when that is less latency than the threaded engine's ring;
    a forced mode keeps the configured buffer."""
    from pi_synth.audio.backends.null import NullBackend
    from pi_synth.audio.engine import Engine
    from pi_synth.audio.player import Player
    from pi_synth.model.runtime import Runtime
    from pi_synth.audio.synth import Synth

    path = organ(block_size=1024, control_frames=4)

    def engine(m):
        synth = Synth(Runtime(path))
        synth.runtime.warmup_rtf = rtf  # the warm-up figure a slower machine would measure
        e = Engine(Player(synth), NullBackend(), period=256, periods=2, mode=m)
        e.start()
        e.stop(fade=False)
        return e

    auto = engine("auto")
    assert (auto.mode, auto.granted.periods) == (mode, periods)
    assert engine("threaded").granted.periods == 2


def test_sink_writes_the_same_bytes_as_write(tmp_path):
    """The audio thread's fast path (C: convert, then pyalsaaudio's write) puts on the
    device exactly what the public write does, and counts what it wrote."""
    x = (0.7 * np.sin(np.arange(10 * 256) / 9.0)).astype(np.float32)[:, None]
    recs = []
    for path in ("write", "sink"):
        raw = tmp_path / f"{path}.raw"
        b = AlsaBackend(f"pisynth_file:FILE={raw}")
        b.open(48000, 1, 256, 2)
        write = b.sink(256)[0] if path == "sink" else b.write
        block = np.zeros((256, 1), np.float32)
        for k in range(10):
            block[:] = x[k * 256:(k + 1) * 256]
            write(block)
        assert b.frames_written == 10 * 256
        if path == "sink":
            assert b._fast.written == 10 * 256  # every block took the fast path
        b.close()
        recs.append(np.fromfile(raw, "<i2"))
    assert len(recs[0]) == 10 * 256 and np.array_equal(recs[0], recs[1])
    assert np.abs(recs[1]).max() > 20000
