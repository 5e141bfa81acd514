"""Timbre transfer on real RAVE exports (slow: the RAVE venv and fixtures, as
tests/test_convert_rave.py builds them): the converted encoder and decoder, played as
pi-synth plays them, against the ``.ts``'s own encode → decode of the same recorded voice.

The fixtures have random weights, so what they say is quiet (latents ~1e-4, audio ~1e-7):
every comparison is relative to the reference's own scale, and the reference is checked
to be non-zero, so a silent or wrong chain fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_convert_rave import FIXTURES, RAVE_PY  # noqa: E402

NAMES = ["raspberry-l128", "v2-l128"]
VOICE = ROOT / "tests" / "data" / "voice.wav"
BLOCKS = 24

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REFERENCE = r"""
import sys, numpy as np, torch
torch.set_num_threads(1)
ts, xin, out = sys.argv[1:4]
m = torch.jit.load(ts)
with torch.no_grad():
    for name, b in m.named_buffers():
        if name.rsplit(".", 1)[-1] in ("pad", "cache"):
            b.zero_()
    x = np.load(xin)  # [blocks, 2048]
    k = int(m.latent_size)
    zs, ys = [], []
    for blk in x:
        xt = torch.from_numpy(blk.reshape(1, 1, -1).astype(np.float32))
        if int(getattr(m.pqmf, "n_band", 1)) > 1:
            xt = m.pqmf(xt)
        z = m.encoder(xt)
        z = z[:, : z.shape[1] // 2]  # the posterior mean, as the converted encoder gives
        z = torch.nn.functional.conv1d(z - m.latent_mean.reshape(1, -1, 1), m.latent_pca.unsqueeze(-1))[:, :k]
        zs.append(z.numpy())
        ys.append(m.decode(z).numpy())
np.savez(out, z=np.stack(zs), y=np.stack(ys))
"""


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """The two fixtures converted with their encoders, by this checkout's converter."""
    r = subprocess.run(["bash", str(ROOT / "scripts" / "rave" / "make-fixtures.sh"), *NAMES],
                       capture_output=True, text=True, timeout=1700)
    assert r.returncode == 0, f"fixture build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    d = tmp_path_factory.mktemp("rave-pairs")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    out = {}
    for n in NAMES:
        r = subprocess.run([str(RAVE_PY), "-m", "pi_synth", "convert", "rave", str(FIXTURES / f"{n}.ts"), "-o",
                            str(d / f"{n}.onnx"), "--json"], capture_output=True, text=True, timeout=900, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        out[n] = (d / f"{n}.onnx", json.loads(r.stdout))
    return out


def voice_blocks(rate: int, block: int, n: int) -> np.ndarray:
    from pi_synth.audio.backends.wav import load_input

    x, notes = load_input(VOICE, rate)
    assert notes == [f"resampled 48000 → {rate} Hz with soxr"]
    x = x[:, 0]
    start = int(0.4 * rate)  # into the speech
    return x[start:start + n * block].reshape(n, block)


@pytest.mark.parametrize("name", NAMES)
def test_encoder_then_decoder_stream_like_the_torchscript(name, pairs, tmp_path):
    from pi_synth.model.card import load_card
    from pi_synth.model.library import find_encoder
    from pi_synth.model.runtime import Runtime

    path, summary = pairs[name]
    card = load_card(path)
    enc_path = find_encoder(path, card)
    assert card.encoder == enc_path.name == f"{name}.encoder.onnx"
    enc, dec = Runtime(enc_path, use_cache=False), Runtime(path, use_cache=False)
    assert enc.card.kind == "encoder" and enc.card.latent_controls == card.control_names
    x = voice_blocks(card.sample_rate, card.block_size, BLOCKS)
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([str(RAVE_PY), "-c", REFERENCE, str(FIXTURES / f"{name}.ts"), str(tmp_path / "x.npy"),
                        str(tmp_path / "ref.npz")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ref = np.load(tmp_path / "ref.npz")
    zs, ys = [], []
    for blk in x:  # as the pair plays it: one encoder call, its latents into the decoder, state carried
        enc.audio_in[:] = blk
        enc.step()
        dec.controls[...] = enc.latent
        zs.append(enc.latent.copy())
        ys.append(dec.step().copy())
    z, y = np.stack(zs), np.stack(ys)
    zr, yr = ref["z"][:, 0], ref["y"][:, 0]
    assert np.abs(zr).max() > 0 and np.abs(yr).max() > 0, "the reference is silent: the comparison would mean nothing"
    assert np.abs(z - zr).max() <= 1e-4 * np.abs(zr).max(), f"latents off by {np.abs(z - zr).max():.3g}"
    assert np.abs(y - yr).max() <= 1e-3 * np.abs(yr).max(), f"audio off by {np.abs(y - yr).max():.3g}"


def test_render_a_voice_through_the_rave_pair(pairs, tmp_path):
    """``pi-synth render raspberry.onnx --input voice.wav``: resampled with soxr, said; the
    same float samples twice; and dry_wet 0 gives the voice back, a block in."""
    from pi_synth.audio.backends.wav import read_wav

    path, _ = pairs["raspberry-l128"]
    outs = []
    for i in range(2):
        o = tmp_path / f"o{i}.wav"
        r = subprocess.run([sys.executable, "-m", "pi_synth", "render", str(path), "--input", str(VOICE), "-o",
                            str(o), "--format", "FLOAT_LE", "--set", "z3=1.5"], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        assert "resampled 48000 → 44100 Hz with soxr" in r.stdout
        outs.append(o.read_bytes())
    assert outs[0] == outs[1]
    y, sr = read_wav(tmp_path / "o0.wav")
    assert sr == 44100 and np.isfinite(y).all() and np.abs(y).max() > 0
    o = tmp_path / "dry.wav"
    r = subprocess.run([sys.executable, "-m", "pi_synth", "render", str(path), "--input", str(VOICE), "-o", str(o),
                        "--format", "FLOAT_LE", "--set", "dry_wet=0"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    dry, _ = read_wav(o)
    v = voice_blocks(44100, 2048, 30).reshape(-1)
    start = int(0.4 * 44100)
    seg = dry[start:start + len(v), 0]
    assert np.corrcoef(seg, v)[0, 1] > 0.98  # the voice itself (gated, DC removed), in line with it
