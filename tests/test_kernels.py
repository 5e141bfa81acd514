"""The C kernels (``_kernels.c``) against their numpy reference: same guard, same bytes."""

import numpy as np
import pytest

from pi_synth.audio import safety
from pi_synth.audio.backends.base import Converter
from pi_synth.audio.safety import NumpyOutputGuard, OutputGuard


def test_the_c_kernels_are_built():
    """scripts/install.sh installs gcc and python3-dev, so the test venv has them; without
    them pi-synth still plays, on numpy (pi-synth doctor reports it)."""
    assert safety.KERNELS == "c"
    assert OutputGuard.__mro__[-2].__module__ == "pi_synth.audio._kernels"


def _signal(rng, kind, block, channels):
    t = np.arange(block)[:, None] / 48000.0
    f = rng.uniform(50, 2000, size=(1, channels))
    x = rng.uniform(0.05, 0.8) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6, size=(1, channels)))
    if kind == "dc":
        x += rng.uniform(-0.5, 0.5, size=(1, channels))
    elif kind == "loud":
        x *= rng.uniform(1.5, 40.0)
    elif kind == "noise":
        x = rng.normal(0, rng.uniform(0.01, 3.0), size=(block, channels))
    elif kind in ("nan", "inf"):
        x[rng.integers(block), rng.integers(channels)] = np.nan if kind == "nan" else -np.inf
    return x.astype(np.float32)


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_c_guard_equals_the_numpy_guard(channels, seed):
    """Block by block through a random life: fade in, DC, overs, noise, NaN and inf (mute,
    recovery), output gain, fade out. The two kernels agree on every sample to float
    rounding and on every counter."""
    rng = np.random.default_rng(seed)
    block = int(rng.choice([64, 256, 1024]))
    kw = dict(fade_ms=float(rng.uniform(5, 60)), limit_dbfs=float(rng.choice([-1.0, -3.0, 0.0])),
              gain_db=float(rng.choice([0.0, -6.0, 3.0])), dc_hz=float(rng.uniform(0.5, 20)))
    c, ref = OutputGuard(block, channels, 48000, **kw), NumpyOutputGuard(block, channels, 48000, **kw)
    kinds = ["tone", "dc", "loud", "noise", "nan", "inf"]
    worst = 0.0
    for k in range(300):
        if k == 250:
            c.fade_out(), ref.fade_out()
        kind = kinds[rng.integers(len(kinds))] if k > 20 else "dc"
        x = _signal(rng, kind, block, channels)
        a, b = x.copy(), x.copy()
        assert c.process(a) == ref.process(b)
        for y in (a, b):
            assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
        worst = max(worst, float(np.abs(a - b).max()))
        assert c.gain == pytest.approx(ref.gain, abs=1e-12)
    assert worst < 2e-5
    assert (c.nonfinite_blocks, c.limited_blocks) == (ref.nonfinite_blocks, ref.limited_blocks)
    assert c.nonfinite_blocks > 0 and c.limited_blocks > 0
    assert c.finished and ref.finished
    assert np.allclose(c.dc, ref.dc, atol=1e-5)


@pytest.mark.parametrize("bad", [[np.nan], [np.inf], [-np.inf], [np.inf, -np.inf], [3e30], [-1e38, 1e38],
                                 [1001.0], [-5e4]])
@pytest.mark.parametrize("block", [256, 250])  # 250: the samples past the SIMD lanes too
def test_c_guard_mutes_every_kind_of_bad_block(bad, block):
    """The C guard finds a bad block from its sum (NaN and inf poison it) and its largest
    magnitude (a runaway sample past +60 dBFS): each kind, anywhere in the block, as the numpy
    reference does. Samples that are merely loud are limited, not muted."""
    for at in (0, block - 1, block // 2):
        c, ref = OutputGuard(block, 1, 48000), NumpyOutputGuard(block, 1, 48000)
        x = np.full((block, 1), 0.25, np.float32)
        x[at:at + len(bad), 0] = bad[: block - at]
        a, b = x.copy(), x.copy()
        assert c.process(a) is False and ref.process(b) is False
        assert not a.any()
    loud = np.full((block, 1), 999.0, np.float32)
    assert OutputGuard(block, 1, 48000).process(loud) is True
    assert np.abs(loud).max() <= 1.0


@pytest.mark.parametrize("guard", [OutputGuard, NumpyOutputGuard])
def test_runaway_is_judged_after_the_output_gain(guard):
    """A model trained on int16-scale audio plays at gain -90 dB; the same samples at 0 dB
    are a model that blew up: muted (state reset by the caller), not limited into a
    full-scale square."""
    x = np.full((256, 1), 30000.0, np.float32)
    x[::2] *= -1
    quiet = guard(256, 1, 48000)
    quiet.configure(gain_db=-90)
    a = x.copy()
    assert quiet.process(a) is True and quiet.nonfinite_blocks == 0
    plain = guard(256, 1, 48000)
    b = x.copy()
    assert plain.process(b) is False and plain.nonfinite_blocks == 1 and not b.any()


def test_c_guard_refuses_a_wrong_block_in_one_line():
    g = OutputGuard(256, 1, 48000)
    for bad in (np.zeros((128, 1), np.float32), np.zeros((256, 1), np.float64),
                np.zeros((1, 512), np.float32)[:, ::2]):
        with pytest.raises((ValueError, BufferError)):
            g.process(bad)


@pytest.mark.parametrize("fmt", ["S16_LE", "S32_LE", "FLOAT_LE"])
@pytest.mark.parametrize("cin,cout", [(1, 1), (1, 2), (2, 2)])
def test_c_conversion_equals_numpy_byte_for_byte(fmt, cin, cout):
    rng = np.random.default_rng(7)
    x = rng.uniform(-1.2, 1.2, size=(256, cin)).astype(np.float32)
    x[:8, 0] = [1.0, -1.0, 0.5 / 32767, 1.5 / 32767, -0.5 / 32767, 1.3, -1.3, 0.0]  # ties, overs
    c, ref = Converter(fmt, 256, cout), Converter(fmt, 256, cout)
    for n in (256, 100):
        a = np.asarray(c.convert(x[:n])).copy()
        b = np.asarray(ref.convert_numpy(x[:n])).copy()
        assert a.dtype == b.dtype and a.shape == b.shape == (n, cout)
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("path", ["convert", "convert_numpy"])
def test_overs_saturate_instead_of_wrapping(path):
    """An equal-power crossfade of two loud, alike models sums to ~1.3: that must come out
    as full scale, not wrap round to -32768 (a full-scale click)."""
    conv = Converter("S16_LE", 4, 1)
    out = np.asarray(getattr(conv, path)(np.array([[1.3], [-1.3], [1e9], [-1e9]], np.float32)))
    assert out[:, 0].tolist() == [32767, -32767, 32767, -32767]


def test_crossfade_of_loud_models_never_wraps(organ):
    """The bug the saturation fixes, end to end: swap between two full-scale organs
    (crossfade gains cos+sin sum past 1): where the mix is over, the device gets full
    scale of the same sign."""
    from pi_synth.audio.player import Player
    from pi_synth.model.runtime import Runtime
    from pi_synth.audio.synth import Synth

    def loud():
        s = Synth(Runtime(organ(gain=100.0)))
        s.bank.set("loudness", 0)
        return s

    player = Player(loud(), crossfade_ms=200)
    conv = Converter("S16_LE", player.block_size, 1)
    for _ in range(20):
        player.next_block()
    player.crossfade_to(loud())
    mixed, pcm = [], []
    for _ in range(60):
        x = player.next_block()
        mixed.append(x.copy())
        pcm.append(np.asarray(conv.convert(x)).astype(np.int32))
    x, y = np.concatenate(mixed)[:, 0], np.concatenate(pcm)[:, 0]
    assert (x > 1.05).sum() > 100  # the mix did go over
    assert (y[x > 1] == 32767).all() and (y[x < -1] == -32767).all()  # no wrap round


def test_converter_follows_its_input_buffers():
    """The converter keeps a view of the last input (the engine passes the same block
    buffer each time): a new buffer, and new samples in the old one, both come through."""
    conv = Converter("S16_LE", 4, 1)
    a = np.full((4, 1), 0.5, np.float32)
    b = np.full((4, 1), -0.25, np.float32)
    pcm = lambda x: np.asarray(conv.convert(x))[:, 0].tolist()  # noqa: E731
    assert pcm(a) == [16384] * 4
    assert pcm(b) == [-8192] * 4
    a[:] = 0.125
    assert pcm(a) == [4096] * 4
    a[:] = 1.0
    assert pcm(a) == [32767] * 4
    assert pcm(np.full((4, 1), 0.5, np.float64)) == [16384] * 4  # not float32: numpy's turn


class Device:
    """Stands in for pyalsaaudio's PCM, to drive each branch of the C sink: a write that
    takes a given count or raises, an avail that says a given room or raises."""

    def __init__(self):
        self.takes, self.room, self.written, self.rests, self.waits = None, 0, [], [], []

    def write(self, buf):
        if isinstance(self.takes, Exception):
            raise self.takes
        self.written.append(np.asarray(buf).copy())
        return len(np.asarray(buf)) if self.takes is None else self.takes

    def avail(self):
        if isinstance(self.room, Exception):
            raise self.room
        return self.room

    def rest(self, x, r):
        self.rests.append((x, r))

    def wait(self, n):
        self.waits.append(n)


def _sink(block=256):
    from pi_synth.audio._kernels import Sink

    d = Device()
    out = np.zeros((block, 1), np.int16)
    return d, Sink(d.write, d.avail, out, d.rest, d.wait)


def test_sink_writes_a_whole_block_in_c_and_hands_everything_else_to_the_backend():
    d, s = _sink()
    x = np.linspace(-1.2, 1.2, 256, dtype=np.float32)[:, None]
    ref = np.asarray(Converter("S16_LE", 256, 1).convert_numpy(x))
    s.write(x)
    s.write(x)  # the cached view of the same buffer
    assert len(d.written) == 2 and all(np.array_equal(w, ref) for w in d.written)
    assert s.written == 512 and not d.rests
    x[:] = 0.5  # new samples in the same buffer come through
    s.write(x)
    assert (d.written[-1] == 16384).all()
    d.takes = 100  # a short write: the rest is the backend's, with what the device said
    s.write(x)
    assert d.rests[-1][0] is x and d.rests[-1][1] == 100 and s.written == 768
    d.takes = -32  # -EPIPE
    s.write(x)
    assert d.rests[-1][1] == -32
    d.takes = OSError("device gone")  # the device's exception, as a value
    s.write(x)
    assert isinstance(d.rests[-1][1], OSError)
    d.takes = None
    for other in (x[:128], x.astype(np.float64), np.zeros((256, 2), np.float32)):
        s.write(other)  # not a block this sink converts: the general path, not tried
        assert d.rests[-1][0] is other and d.rests[-1][1] is None
    assert s.written == 768


def test_sink_waits_only_when_the_device_has_no_room():
    d, s = _sink()
    d.room = 300
    s.wait(256)
    assert not d.waits
    d.room = 100
    s.wait(256)
    assert d.waits == [256]
    d.room = OSError("xrun")  # the write that follows reports it
    s.wait(256)
    assert d.waits == [256]


def test_sink_and_its_backend_are_collected():
    """The backend holds its sink and the sink the backend's methods: a cycle the
    collector has to see through."""
    import gc
    import weakref

    from pi_synth.audio.backends.alsa import AlsaBackend

    b = AlsaBackend("pisynth_null")
    b.open(48000, 1, 256, 2)
    write, wait = b.sink(256)
    ref = weakref.ref(b)
    b.close()
    del b, write, wait
    gc.collect()
    assert ref() is None
