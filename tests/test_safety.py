"""The output guard on real models that misbehave: nothing unsafe reaches the backend."""

import json

import numpy as np
import pytest

from pi_synth.audio.backends.wav import read_wav
from pi_synth.model.runtime import Runtime
from pi_synth.audio.safety import OutputGuard
from pi_synth.audio.synth import Synth


def blocks(synth, n):
    return np.concatenate([synth.next_block().copy() for _ in range(n)])


@pytest.mark.parametrize("fault", ["nan", "inf"])
def test_non_finite_model_is_muted(organ, fault):
    synth = Synth(Runtime(organ(fault=fault)))
    synth.bank.set("loudness", -6)
    out = blocks(synth, 50)
    assert np.isfinite(out).all() and not out.any()
    assert synth.guard.nonfinite_blocks == 50 and synth.resets == 50


def test_loud_model_is_limited_not_blasted(organ):
    synth = Synth(Runtime(organ(gain=100.0)))
    synth.bank.set("loudness", 0)
    out = blocks(synth, 200)
    assert np.abs(out).max() <= 1.0
    assert np.abs(out).max() > 0.9  # limited, not muted
    assert synth.guard.limited_blocks > 100


def test_soft_limiter_leaves_quiet_audio_alone():
    g = OutputGuard(256, 1, 48000, fade_in=False, dc_hz=1e-6)
    x = (0.5 * np.sin(np.arange(256) / 10.0)).astype(np.float32)[:, None]
    y = x.copy()
    g.process(y)
    assert np.abs(y - x).max() < 1e-3
    z = (x * 4).astype(np.float32)
    g.process(z)
    assert np.abs(z).max() <= 1.0 and g.limited_blocks == 1
    # the limiter is monotonic: louder input never gives a smaller magnitude
    order = np.argsort(np.abs(x[:, 0]))
    assert np.all(np.diff(np.abs(z[order, 0])) >= -1e-6)


def test_dc_is_removed():
    g = OutputGuard(256, 1, 48000, fade_in=False)
    outs = []
    for _ in range(400):  # 2 s of a constant 0.3 offset
        x = np.full((256, 1), 0.3, np.float32)
        g.process(x)
        outs.append(x.copy())
    out = np.concatenate(outs)
    assert abs(out[-256:].mean()) < 0.01
    assert np.abs(np.diff(out[:, 0])).max() < 0.01  # the correction itself never steps


def test_fade_in_and_out(organ):
    synth = Synth(Runtime(organ()))
    synth.bank.set("loudness", -6)
    first = synth.next_block().copy()
    assert abs(first[0, 0]) < 1e-3  # starts from silence
    body = blocks(synth, 20)
    synth.guard.fade_out()
    n = 0
    while not synth.finished:
        tail = synth.next_block().copy()
        n += 1
        assert n < 100
    assert np.abs(tail[-1]).max() < 1e-6 and np.abs(body).max() > 0.1
    assert n == 6  # 30 ms at 48 kHz in 256-frame blocks


def test_model_nan_on_first_block_is_refused(organ, cli, tmp_path):
    p = cli("render", organ(fault="nan"), "-o", tmp_path / "nan.wav", "--seconds", "0.5")
    assert p.returncode == 2 and "not finite" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("fault, quiet", [
    ({"fault": "nan_loud"}, -12),  # loud → the model emits NaN
    ({"gain": 5000.0}, -60),  # loud → thousands of times full scale: limited it would be a full-scale square
])
def test_a_fault_mid_stream_is_muted_and_recovers(organ, cli, tmp_path, fault, quiet):
    """Loud → the model emits NaN or runs away → silence, said in one line; quieter again →
    sound is back (state reset)."""
    ev = tmp_path / "e.json"
    ev.write_text(json.dumps([
        {"t": 0.0, "set": {"loudness": quiet, "pitch": 220}},
        {"t": 0.5, "set": {"loudness": 0}},
        {"t": 1.0, "set": {"loudness": quiet}},
    ]))
    out = tmp_path / "o.wav"
    p = cli("render", organ(**fault), "-o", out, "--events", ev, "--seconds", "1.6", check=0)
    assert p.returncode == 0 and "not finite or ran away" in p.stderr and "silent in" in p.stderr, p.stderr
    x, sr = read_wav(out)
    assert np.isfinite(x).all() and np.abs(x).max() <= 1.0
    assert np.abs(x[int(0.2 * sr):int(0.45 * sr)]).max() > 0.05
    assert np.abs(x[int(0.56 * sr):int(0.98 * sr)]).max() == 0.0
    assert np.abs(x[int(1.2 * sr):int(1.5 * sr)]).max() > 0.05


@pytest.mark.parametrize("channels", [1, 2])
def test_a_dc_offset_past_full_scale_is_gone_in_a_block(channels):
    """A model stuck at +54 dBFS DC (under the runaway mute) played about a second of
    full-scale DC through the limiter while the ~1 Hz tracker caught up; an offset more
    than full scale is taken in one block, in the C kernel and its numpy reference alike."""
    from pi_synth.audio.safety import NumpyOutputGuard

    for guard in (OutputGuard, NumpyOutputGuard):
        g = guard(256, channels, 48000, fade_in=False)
        outs = []
        for k in range(40):  # quiet audio, then the model sticks at 500 (with a little sound on it)
            t = np.arange(k * 256, (k + 1) * 256)[:, None] / 48000
            x = (0.1 * np.sin(2 * np.pi * 440 * t) + (500.0 if k >= 10 else 0.0)).astype(np.float32)
            x = np.repeat(x, channels, axis=1)
            g.process(x)
            outs.append(x.copy())
        stuck = np.concatenate(outs[11:])
        assert np.abs(stuck).max() < 0.2, (guard.__name__, float(np.abs(stuck).max()))  # the sine, not DC
        assert np.abs(outs[10]).max() <= 1.0  # the block it sticks in: ramped out, limited
