"""The runtime: state carried between calls, any split of the stream gives the same audio."""

import tracemalloc

import numpy as np
import pytest

from pi_synth.model.runtime import Runtime
from pi_synth.audio.synth import Synth
from pi_synth.bench import control_sequence


def test_state_is_carried_one_call_vs_one_shot(organ):
    """N blocks of 256, one call each, equal one call of a 4×256 graph (4 control frames)."""
    small = Runtime(organ("small", block_size=256))
    big = Runtime(organ("big", block_size=1024, control_frames=4))
    ctl = control_sequence(small.card, 400, seed=3)
    a = small.render(ctl)
    b = big.render(ctl.reshape(100, 4, 3).transpose(0, 2, 1))
    assert np.abs(a).max() > 1e-3  # it made sound
    assert np.abs(a - b).max() <= 1e-5


def test_state_matters(organ):
    """Resetting the state between blocks changes the audio: the test above can fail."""
    rt = Runtime(organ())
    ctl = control_sequence(rt.card, 20, seed=1)
    ctl[:, 1, :] = -6.0
    a = rt.render(ctl)
    rt.reset()
    b = np.concatenate([(rt.reset(), rt.render(ctl[k:k + 1]))[1] for k in range(20)], axis=1)
    assert np.abs(a - b).max() > 1e-2


@pytest.mark.parametrize("splits", [[1] * 40, [40], [7, 13, 20], [39, 1]])
def test_any_split_of_the_calls_is_the_same(organ, splits):
    path = organ()
    ref = Runtime(path).render(control_sequence(Runtime(path).card, 40, seed=5))
    rt = Runtime(path)
    ctl = control_sequence(rt.card, 40, seed=5)
    parts, k = [], 0
    for n in splits:
        parts.append(rt.render(ctl[k:k + n]))
        k += n
    assert np.abs(np.concatenate(parts, axis=1) - ref).max() <= 1e-5


def test_warmup_leaves_zero_state(organ):
    rt = Runtime(organ(), warmup_blocks=10)
    assert all(not s.any() for s in rt.state_arrays())
    assert rt.blocks == 0


def test_optimized_graph_is_cached(organ, tmp_path):
    path = organ()
    a = Runtime(path, cache_dir=tmp_path / "c")
    files = list((tmp_path / "c" / "optimized").glob("*.onnx"))
    assert len(files) == 1
    b = Runtime(path, cache_dir=tmp_path / "c")  # loads the cached graph
    ctl = control_sequence(a.card, 30, seed=2)
    assert np.abs(a.render(ctl) - b.render(ctl)).max() <= 1e-6
    files[0].write_bytes(b"torn")  # a torn cache file is rebuilt, not fatal
    c = Runtime(path, cache_dir=tmp_path / "c")
    a.reset()
    assert np.abs(c.render(ctl) - a.render(ctl)).max() <= 1e-6
    assert files[0].stat().st_size > 100


def test_no_allocation_per_block(organ):
    """The hot path allocates no arrays: traced memory stays flat over 300 blocks."""
    rt = Runtime(organ(block_size=2048))
    synth = Synth(rt)
    synth.bank.set("loudness", -10)
    tracemalloc.start()
    for _ in range(400):  # onnxruntime and numpy fill small caches first, then stay flat
        synth.next_block()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(300):
            synth.next_block()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one 2048-frame float32 array is 8 KiB: any per-block array would show in the peak
    assert peak - base < 4096, (base, current, peak)
    assert current - base < 1024, (base, current, peak)
