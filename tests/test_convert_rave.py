"""``pi-synth convert rave`` on real RAVE streaming exports (slow: builds the RAVE venv and fixtures).

The fixtures are real ``rave export --streaming`` ``.ts`` files with random weights, built by
``scripts/rave/make-fixtures.sh`` into ``work/rave-fixtures/`` (cached; a fresh machine builds the
venv and the five exports in a few minutes). The converter needs torch, so it runs in the RAVE venv
(``.venv-rave``, pi-synth installed editable into it); everything that plays the result runs here,
without torch, as on a Pi.

The reference stream is computed independently of the converter's own ``--check``: a small script
in the RAVE venv zeroes the ``.ts`` caches and runs its ``decode`` on the test's latent blocks; the
converted file is then played through :class:`pi_synth.model.runtime.Runtime` (io_binding, state
ping-pong) on the same blocks.
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
VENV = Path(os.environ.get("RAVE_VENV", ROOT / ".venv-rave"))
RAVE_PY = VENV / "bin" / "python"
FIXTURES = Path(os.environ.get("RAVE_FIXTURES", ROOT / "work" / "rave-fixtures"))
EXACT = ["raspberry-l128", "raspberry-causal-l128", "v2-l128", "v2-causal-l128",
         "v3-l128", "v3-adain-l128",  # v3: Snake activations; -adain: learned instance normalisations
         "raspberry-sr48k-l128",  # a 24 kHz model exported with --sr 48000 (RAVE's resampler around it)
         "v2-spherical-l16",  # spherical.gin: 15 angles in, the unit vector of 16 to the decoder
         "onnx-l128"]  # onnx.gin: v1 at capacity 32, no noise synthesizer
NOISE = ["v1-noise-l8", "v2-small-noise-l128",  # v1 / v2_small noise synthesizers
         "v2-wasserstein-l16",  # Wasserstein: 128 channels of normal noise beside the 16 latents
         "v2-discrete-q16"]  # discrete: 16 quantizers' codes in, 128 channels of noise augmentation
STEREO = ["raspberry-stereo-l8",  # rave train --channels 2: the PQMF per channel, one loudness
          "v2-small-stereo-l16",  # v2_small stereo: its noise synthesizer makes 2 × 16 bands
          "raspberry-stereo-sr48k-l8"]  # stereo at 24 kHz exported with --sr 48000: the resampler per channel
MEL = ["v2-mel-l16",  # v2_with_augs.gin: a mel-spectrogram encoder before a v2 decoder
       "v2-hybrid-l16"]  # hybrid.gin: a mel encoder too, and a 2-layer GRU at the head of the decoder
ALL = EXACT + ["raspberry-l8"] + NOISE + STEREO + MEL
BUILD = ALL + ["raspberry-nonstreaming-l8"]
BLOCKS = 12
TOL = 1e-4

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REFERENCE = r"""
import sys, numpy as np, torch
torch.set_num_threads(1)
ts, zin, out = sys.argv[1:4]
m = torch.jit.load(ts)
with torch.no_grad():
    for name, b in m.named_buffers():
        if name.rsplit(".", 1)[-1] in ("pad", "cache"):
            b.zero_()
    z = np.load(zin)
    k = z.shape[2]
    if k < int(m.full_latent_size):
        m.latent_pca[k:, :] = 0   # the .ts fills unused latents with randn; the model with zeros
    y = np.stack([m.decode(torch.from_numpy(z[i])).numpy() for i in range(len(z))])
np.save(out, y)
"""


@pytest.fixture(scope="session")
def rave_env():
    """The RAVE venv and the fixtures, built or brought up to date by the project's own script
    (idempotent: seconds when everything is there, a few minutes on a fresh machine)."""
    r = subprocess.run(["bash", str(ROOT / "scripts" / "rave" / "make-fixtures.sh"), *BUILD],
                       capture_output=True, text=True, timeout=1700)
    assert r.returncode == 0, f"fixture build failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return RAVE_PY


def convert(rave_env, name, out_dir, *extra, timeout=900):
    out = out_dir / f"{name}.onnx"
    r = subprocess.run(
        [str(rave_env), "-m", "pi_synth", "convert", "rave", str(FIXTURES / f"{name}.ts"), "-o", str(out),
         "--json", *extra],
        capture_output=True, text=True, timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert r.returncode == 0, f"convert {name} failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return out, json.loads(r.stdout)


@pytest.fixture(scope="session")
def converted(rave_env, tmp_path_factory):
    """Every fixture converted once (with --check), keyed by name: (path, summary)."""
    from concurrent.futures import ThreadPoolExecutor

    d = tmp_path_factory.mktemp("rave-converted")
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:  # each a 1-thread subprocess
        done = {n: pool.submit(convert, rave_env, n, d, "--check", "--blocks", str(BLOCKS)) for n in ALL}
    return {n: f.result() for n, f in done.items()}


def reference(rave_env, name, z, tmp_path):
    zin, out = tmp_path / "z.npy", tmp_path / "ref.npy"
    np.save(zin, z)
    r = subprocess.run([str(rave_env), "-c", REFERENCE, str(FIXTURES / f"{name}.ts"), str(zin), str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return np.load(out)


@pytest.mark.parametrize("name", EXACT + ["raspberry-l8"])
def test_streams_like_the_torchscript_decode(name, converted, rave_env, tmp_path):
    from pi_synth.model.runtime import Runtime

    path, summary = converted[name]
    rt = Runtime(path, use_cache=False)  # the card is valid against the graph, or this raises
    card = rt.card
    resampled = "sr48k" in name
    assert card.kind == "rave" and (card.block_size, card.sample_rate) == ((4096, 48000) if resampled else (2048, 44100))
    assert summary["card"]["rave"]["resampled"] == ({"model_sample_rate": 24000, "factor": 2} if resampled else None)
    assert card.channels == 1 and card.control_frames == 1
    assert len(card.controls) == {"l8": 8, "16": 15}.get(name[-2:], 128)
    assert summary["card"]["rave"]["noise"] is False
    assert [c.name for c in card.controls[:3]] == ["z0", "z1", "z2"]
    assert len(card.state) == summary["states"] > 0
    assert summary["card"]["rave"]["ts_sha256"] in card.source
    rng = np.random.default_rng(7)
    z = rng.standard_normal((BLOCKS, 1, len(card.controls), 1)).astype(np.float32)
    ref = reference(rave_env, name, z, tmp_path)  # [BLOCKS, 1, 1, 2048]
    got = rt.render(z[:, 0])  # [1, BLOCKS * 2048], state carried by the runtime's ping-pong
    ref = ref.reshape(1, -1)
    assert np.all(np.isfinite(got))
    assert np.max(np.abs(ref)) > 1e-3, "the fixture decodes to silence: the comparison would mean nothing"
    err = float(np.max(np.abs(got - ref)))
    tol = TOL * max(1.0, float(np.max(np.abs(ref))))  # float32 rounding grows with the level (v3-adain peaks ~6)
    assert err < tol, f"{name}: max abs error {err:.2e} over {BLOCKS} blocks"
    # every cache travels in one state vector, and a plain session.run carrying it by hand plays the same
    assert len(card.state) == 1 and summary["card"]["rave"]["state"] == "packed"
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (s_in, s_out), = card.state
    state = np.zeros(sess.get_inputs()[1].shape, np.float32)
    plain = []
    for i in range(BLOCKS):
        audio, state = sess.run([card.audio_output, s_out], {card.controls_input: z[i], s_in: state})
        plain.append(audio.reshape(-1))
    err = float(np.max(np.abs(np.concatenate(plain) - ref.reshape(-1))))
    assert err < tol, f"{name}: plain session.run, max abs error {err:.2e}"
    # the converter's own --check agrees, to float32 rounding (the factored PQMF included)
    assert summary["check"]["max_abs_err"] < 5e-6 * max(1.0, summary["check"]["peak"])  # v3-adain: 1.1e-5 at peak 6.4
    assert summary["check"]["encoder"]["max_abs_err"] < TOL


def render_voice_through(path, tmp_path):
    """``pi-synth render MODEL --input voice.wav``: timbre transfer through the model's encoder."""
    from pi_synth.audio.backends.wav import read_wav

    wav = tmp_path / f"{Path(path).stem}-voice.wav"
    r = subprocess.run([sys.executable, "-m", "pi_synth", "render", str(path), "--input",
                        str(ROOT / "tests" / "data" / "voice.wav"), "-o", str(wav)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return read_wav(wav)


def test_stereo_models_play_both_channels_like_the_ts(converted, rave_env, tmp_path):
    """A model trained with ``--channels 2`` converts to a stereo card: each channel is its own
    PQMF synthesis (and noise bands), matching the .ts channel by channel (left and right
    differ, so a swap or a copy would fail); its encoder hears a mono input on both channels;
    timbre transfer renders a stereo WAV."""
    from pi_synth.model.runtime import Runtime

    for name in STEREO:
        path, summary = converted[name]
        card = Runtime(path, use_cache=False).card
        assert card.channels == 2 and summary["card"]["rave"]["model_channels"] == 2, name
        assert summary["check"]["max_abs_err"] < TOL * max(1.0, summary["check"]["peak"]), name
        assert summary["check"]["encoder"]["max_abs_err"] < TOL, name
        assert summary["encoder_card"]["rave"]["model_channels"] == 2
    path, summary = converted["raspberry-stereo-l8"]  # no noise: compared sample by sample here
    rt = Runtime(path, use_cache=False)
    z = np.random.default_rng(5).standard_normal((BLOCKS, 1, 8, 1)).astype(np.float32)
    ref = reference(rave_env, "raspberry-stereo-l8", z, tmp_path)  # [BLOCKS, 1, 2, 2048]
    ref = ref[:, 0].transpose(1, 0, 2).reshape(2, -1)  # [2, BLOCKS · 2048]
    got = rt.render(z[:, 0])  # [2, BLOCKS · 2048]
    peak = float(np.max(np.abs(ref)))
    assert peak > 1e-3 and float(np.max(np.abs(ref[0] - ref[1]))) > 0.1 * peak, "the channels must differ"
    assert float(np.max(np.abs(got - ref))) < TOL * max(1.0, peak)
    y, sr = render_voice_through(path, tmp_path)
    assert sr == 44100 and y.ndim == 2 and y.shape[1] == 2 and y.shape[0] > sr
    assert np.all(np.isfinite(y)) and np.max(np.abs(y[:, 0] - y[:, 1])) > 0


def test_discrete_model_plays_codes_and_its_encoder_finds_them(converted, rave_env, tmp_path):
    """A discrete model (residual vector quantization): the controls are the quantizers' codes
    (0..1023, clamped and truncated like the .ts, the decoder matching it with its own noise),
    and the encoder finds the same codes as the .ts's ``rvq.encode`` (a code nearer by float32
    rounding alone could differ: at most 2%), codes that follow its input."""
    import onnxruntime as ort

    from pi_synth.audio.backends.wav import read_wav
    from pi_synth.model.card import load_card

    path, summary = converted["v2-discrete-q16"]
    card = load_card(path)
    assert [c.name for c in card.controls] == [f"q{i}" for i in range(16)]
    assert all((c.min, c.max) == (0.0, 1023.0) for c in card.controls)
    assert summary["check"]["max_abs_err"] < TOL
    differ, total = summary["check"]["encoder"]["codes_differing"]
    assert total == 16 * BLOCKS and differ <= 0.02 * total, (differ, total)
    enc = load_card(summary["encoder"])
    assert list(enc.latent_controls) == [c.name for c in card.controls]
    sess = ort.InferenceSession(summary["encoder"], providers=["CPUExecutionProvider"])
    (s_in, s_out), = enc.state
    state = np.zeros(sess.get_inputs()[1].shape, np.float32)
    y, _ = read_wav(ROOT / "tests" / "data" / "voice.wav")  # 48 kHz; the codes only need to move
    y = y.mean(1).astype(np.float32)
    bs = enc.block_size
    codes = []
    for i in range(len(y) // bs):
        z, state = sess.run(["latent", s_out], {"audio_in": y[i * bs:(i + 1) * bs].reshape(1, 1, -1), s_in: state})
        codes.append(z[0, :, 0])
    codes = np.array(codes)
    assert np.array_equal(codes, np.floor(codes)) and codes.min() >= 0 and codes.max() <= 1023
    assert len(set(codes[:, 0])) > 5, "the first quantizer's code should follow the voice"
    # --quantize: a discrete encoder goes int8 only if it still picks the same codes (≥ 99 %);
    # else the int8 decoder plays with the fp32 encoder. Either way the pair it names exists.
    qpath, qsum = convert(rave_env, "v2-discrete-q16", tmp_path, "--quantize")
    rep = qsum["quantize"]["encoder"]["report"]
    int8_card = load_card(qsum["quantize"]["model"])
    assert (tmp_path / int8_card.encoder).exists()
    if rep.get("skipped"):
        assert rep["codes_equal_pct"] < 99 and int8_card.encoder == "v2-discrete-q16.encoder.onnx"
        assert not (tmp_path / "v2-discrete-q16.encoder.int8.onnx").exists()
    else:
        assert int8_card.encoder == "v2-discrete-q16.encoder.int8.onnx"
    out, _ = render_voice_through(path, tmp_path)
    assert np.all(np.isfinite(out)) and np.max(np.abs(out)) > 1e-4


@pytest.mark.parametrize("name", MEL)
def test_mel_input_models_convert_with_their_encoders(name, converted, tmp_path):
    """An export whose encoder reads a mel spectrogram: the encoder converts (torchaudio's
    spectrogram of each call, ONNX ``STFT``, the stored filterbank) and so does the decoder
    (hybrid's with its GRU, an ONNX ``GRU`` per layer: the .ts starts it from zeros every call,
    and so does the converted block), each matching the .ts; timbre transfer renders."""
    import onnx

    path, summary = converted[name]
    assert summary["check"]["max_abs_err"] < 1e-5 * max(1.0, summary["check"]["peak"])
    assert summary["check"]["peak"] > 5e-4
    assert summary["check"]["encoder"]["max_abs_err"] < TOL and "encoder_skipped" not in summary
    enc = onnx.load(summary["encoder"])
    assert [n.op_type for n in enc.graph.node].count("STFT") == 1
    grus = [n for n in onnx.load(str(path)).graph.node if n.op_type == "GRU"]
    assert len(grus) == (2 if name == "v2-hybrid-l16" else 0)  # one per layer
    out, sr = render_voice_through(path, tmp_path)
    assert sr == 44100 and np.all(np.isfinite(out)) and np.max(np.abs(out)) > 1e-4


SKIP_ENCODER = r"""
import json, sys
from pi_synth.tools.convert import rave
load = rave.load_ts
def raw_input(p):  # an encoder input mode pi-synth does not convert
    m = load(p)
    m.input_mode = "raw"
    return m
rave.load_ts = raw_input
s = rave.convert(sys.argv[1], sys.argv[2])
print(json.dumps({"encoder": s.get("encoder"), "skipped": s.get("encoder_skipped"), "card": s["card"]}))
"""


def test_an_encoder_that_cannot_convert_is_skipped_and_said(rave_env, tmp_path):
    """The decoder converts, no encoder file is written nor named by the card, and the reason is
    said (it used to stop with an error after writing a card that named a missing encoder)."""
    out = tmp_path / "x.onnx"
    r = subprocess.run([str(rave_env), "-c", SKIP_ENCODER, str(FIXTURES / "raspberry-l8.ts"), str(out)],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["encoder"] is None and "input_mode 'raw'" in res["skipped"] and "not from audio in" in res["skipped"]
    assert "encoder" not in res["card"] and res["card"]["rave"]["encoder"] is None
    assert out.exists() and not (tmp_path / "x.encoder.onnx").exists()


def test_pqmf_synthesis_runs_factored(converted):
    """The 16-band PQMF synthesis runs as a [32, 16] MatMul and a depthwise Conv (group 32), not
    one 16 → 16 convolution of 33 taps: fewer multiply-adds, same output (the test above)."""
    import onnx

    path, summary = converted["raspberry-l128"]
    convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    assert groups.count(32) == 1, groups
    assert summary["card"]["rave"]["pqmf_bands"] == 16


@pytest.mark.parametrize("name", NOISE)
def test_noise_synthesizer_matches_the_ts_own_noise(name, converted, rave_env, tmp_path):
    """The converter's --check feeds the .ts's own random numbers (rand_like, a Wasserstein model's
    randn) to a noise-input copy, and they match; the noise matters (two decodes of the .ts
    differ), so the match means something."""
    from pi_synth.model.runtime import Runtime

    path, summary = converted[name]
    assert summary["card"]["rave"]["noise"] is True
    assert summary["check"]["noise"] and summary["check"]["max_abs_err"] < TOL
    k = len(summary["card"]["controls"])
    z = np.random.default_rng(3).standard_normal((BLOCKS, 1, k, 1)).astype(np.float32)
    r1, r2 = reference(rave_env, name, z, tmp_path), reference(rave_env, name, z, tmp_path)
    assert np.max(np.abs(r1 - r2)) > 100 * summary["check"]["max_abs_err"], "the .ts's noise changes nothing"
    if name == "v2-wasserstein-l16":
        assert summary["card"]["rave"]["noise_augmentation"] == 128
        assert len(summary["card"]["rave"]["normal_noise_inputs"]) == 0  # the played file draws its own
    assert summary["check"]["encoder"]["max_abs_err"] < TOL
    seq = np.zeros((6, len(summary["card"]["controls"]), 1), np.float32)
    a = Runtime(path, use_cache=False).render(seq)
    b = Runtime(path, use_cache=False).render(seq)
    assert np.all(np.isfinite(a)) and np.array_equal(a, b), "seeded noise: a render repeats"


def test_renders_with_the_cli(converted, tmp_path):
    path, _ = converted["raspberry-l128"]
    wav = tmp_path / "rave.wav"
    r = subprocess.run([sys.executable, "-m", "pi_synth", "render", str(path), "-o", str(wav), "--seconds", "1",
                        "--set", "z0=2.5"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert wav.stat().st_size > 44100 * 2 // 2
    r = subprocess.run([sys.executable, "-m", "pi_synth", "info", str(path), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["card"]["kind"] == "rave"


def test_encoder_loads_in_onnxruntime(converted):
    import onnxruntime as ort

    from pi_synth.model.card import load_card

    _, summary = converted["v2-causal-l128"]
    enc = summary["encoder"]
    card = load_card(enc)
    assert card.kind == "encoder" and card.is_encoder
    assert card.latent_controls == tuple(f"z{i}" for i in range(128))
    sess = ort.InferenceSession(enc, providers=["CPUExecutionProvider"])
    feeds = {a.name: np.zeros([d for d in a.shape], np.float32) for a in sess.get_inputs()}
    feeds["audio_in"] = np.random.default_rng(0).standard_normal((1, 1, 2048)).astype(np.float32) * 0.1
    out = sess.run(["latent"], feeds)[0]
    assert out.shape == (1, 128, 1) and np.all(np.isfinite(out))


@pytest.mark.parametrize("name", ["raspberry-l128", "v2-l128"])
def test_int8_within_its_claimed_snr(name, rave_env, tmp_path):
    """``--quantize``: int8 weights in the weight-heavy matrix products (dynamic), the rest fp32;
    at least 30 dB against fp32 (the card says how much), a quarter of the bytes in those
    products, and a plain session.run plays it."""
    import onnx
    import onnxruntime as ort

    from pi_synth.model.runtime import Runtime
    from pi_synth.model.card import load_card
    from pi_synth.tools.quantize import control_sequence, snr_db

    out, summary = convert(rave_env, name, tmp_path, "--quantize", "--no-encoder")
    q = Path(summary["quantize"]["model"])
    rep = summary["quantize"]["report"]
    assert q.name == f"{name}.int8.onnx" and q.exists()
    card = load_card(q)
    claimed = card.extra["snr_db"]
    assert card.extra["precision"] == "int8" and card.extra["quant_format"] == "dynamic"
    assert claimed >= 30.0, f"{name}: int8 SNR {claimed} dB against fp32"
    ops = [n.op_type for n in onnx.load(str(q)).graph.node]
    assert ops.count("MatMulInteger") + ops.count("DynamicQuantizeMatMul") == rep["int8_nodes"] > 0
    assert q.stat().st_size < out.stat().st_size - 0.7 * rep["int8_weight_bytes_fp32"]
    seq = control_sequence(load_card(out).to_json(), 120, seed=11)
    ref = Runtime(out, use_cache=False).render(seq)
    got = Runtime(q, use_cache=False).render(seq)
    measured = snr_db(ref, got)
    assert measured >= claimed - 3.0, f"int8 SNR {measured:.1f} dB, the card claims {claimed:.1f} dB"
    sess = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"])
    (s_in, s_out), = card.state
    state = np.zeros(sess.get_inputs()[1].shape, np.float32)
    plain = []
    for block in seq[:8]:
        audio, state = sess.run([card.audio_output, s_out], {card.controls_input: block[None], s_in: state})
        plain.append(audio.reshape(-1))
    np.testing.assert_allclose(np.concatenate(plain), got[0, : 8 * card.block_size], atol=1e-5)


def test_frames_past_the_largest_block_is_one_line_before_the_work(rave_env, tmp_path):
    """--frames 64 on a 2048-ratio model failed after the export, naming a temporary file."""
    r = subprocess.run([str(rave_env), "-m", "pi_synth", "convert", "rave", str(FIXTURES / "raspberry-l8.ts"), "-o",
                        str(tmp_path / "f.onnx"), "--frames", "64"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "this model takes --frames 1..32" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert ".tmp" not in r.stderr and not list(tmp_path.iterdir())


def test_int8_under_30_db_is_not_written(rave_env, tmp_path):
    """v2_small stereo's int8 decoder measures ~28 dB against fp32: it was written (the docs
    promised each int8 file is at least 30 dB) and `precision = "auto"` then picked it. Now it
    is not written, nor its int8 encoder, and the line says why."""
    out, summary = convert(rave_env, "v2-small-stereo-l16", tmp_path, "--quantize")
    rep = summary["quantize"]["report"]
    assert rep.get("skipped") and rep["snr_db"] < 30.0 and "under 30 dB" in rep["why"], rep
    assert not list(tmp_path.glob("*.int8.onnx"))
    assert (tmp_path / "v2-small-stereo-l16.encoder.onnx").exists()


@pytest.mark.parametrize("name", ["raspberry-l128", "v2-l128"])
def test_int8_encoder_beside_the_int8_decoder(name, rave_env, tmp_path):
    """``--quantize`` with the encoder: ``X.encoder.int8.onnx``, which ``X.int8.onnx`` finds before
    the fp32 encoder; its latents on a real voice recording (not the converter's test signal)
    within 3 dB of the SNR its card claims, and at least 30 dB, against the fp32 encoder's."""
    from pi_synth.audio.backends.wav import read_wav
    from pi_synth.bench import snr_db
    from pi_synth.model.card import load_card
    from pi_synth.model.library import find_encoder
    from pi_synth.model.runtime import Runtime

    out, summary = convert(rave_env, name, tmp_path, "--quantize")
    q = Path(summary["quantize"]["model"])
    qe = Path(summary["quantize"]["encoder"]["model"])
    assert qe.name == f"{name}.encoder.int8.onnx" and qe.exists()
    assert find_encoder(q, load_card(q)) == qe
    assert find_encoder(out, load_card(out)).name == f"{name}.encoder.onnx"
    card = load_card(qe)
    assert card.kind == "encoder" and card.extra["precision"] == "int8"
    claimed = card.extra["snr_db"]
    assert claimed >= 30.0, f"{name}: int8 encoder SNR {claimed} dB against fp32"
    x, _ = read_wav(ROOT / "tests" / "data" / "voice.wav")
    b = card.block_size
    blocks = x[: len(x) // b * b, 0].reshape(-1, b)[:40]
    lat = {}
    for label, path in (("fp32", out.with_name(f"{name}.encoder.onnx")), ("int8", qe)):
        rt = Runtime(path, use_cache=False)
        z = []
        for block in blocks:
            rt.audio_in[:] = block
            rt.step()
            z.append(rt.latent.copy())
        lat[label] = np.concatenate(z).ravel()
    assert np.std(lat["fp32"]) > 1e-5, "the encoder answers the voice with constants: the comparison means nothing"
    measured = snr_db(lat["fp32"], lat["int8"])
    assert measured >= max(30.0, claimed - 3.0), f"{name}: int8 encoder {measured:.1f} dB, card claims {claimed:.1f}"


def test_not_a_rave_export_is_exit_2_with_one_line(rave_env, tmp_path):
    tiny = tmp_path / "tiny.ts"
    make = tmp_path / "make_tiny.py"  # TorchScript needs the source in a file
    make.write_text("import torch, sys\n"
                    "class M(torch.nn.Module):\n"
                    "    def forward(self, x):\n"
                    "        return x * 2\n"
                    "torch.jit.script(M()).save(sys.argv[1])\n"
                    "class TraceModel(M):\n"  # the class RAVE 1's export_rave.py wrote
                    "    pass\n"
                    "torch.jit.script(TraceModel()).save(sys.argv[2])\n"
                    "torch.save({'state_dict': {'w': torch.zeros(3)}}, sys.argv[3])\n")
    rave1 = tmp_path / "rave1.ts"
    ckpt = tmp_path / "last.ckpt"  # a training run's checkpoint, mistaken for an export
    r = subprocess.run([str(rave_env), str(make), str(tiny), str(rave1), str(ckpt)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    junk = tmp_path / "junk.ts"
    junk.write_bytes(b"not a model at all")
    nonstreaming = FIXTURES / "raspberry-nonstreaming-l8.ts"
    bads = (tiny, junk, tmp_path / "missing.ts", nonstreaming, rave1, ckpt)

    def convert(bad):  # each a process of its own, as a user runs it (torch's import: ~2 s each)
        return subprocess.run([str(rave_env), "-m", "pi_synth", "convert", "rave", str(bad), "-o",
                               str(tmp_path / "x.onnx")], capture_output=True, text=True, timeout=300)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(convert, bads))
    for bad, r in zip(bads, results):
        assert r.returncode == 2, (bad, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pi-synth: "), r.stderr
        assert "Traceback" not in r.stderr
        if bad == nonstreaming:
            assert "--streaming" in r.stderr
        if bad == rave1:
            assert "a RAVE 1 export" in r.stderr
        if bad == tiny:
            assert "pi-synth card MODEL.onnx --init" in r.stderr
        if bad == ckpt:
            assert "a PyTorch checkpoint" in r.stderr and "rave export --run RUN --streaming" in r.stderr
    assert not (tmp_path / "x.onnx").exists()


OTHER_FORMS = r"""
import json, os, sys
from pi_synth.tools.convert import rave
ts, out = sys.argv[1:3]
res = {}
for label, kw, env in (("all rows", {}, "100000"), ("legacy", {"layout": "legacy"}, "16")):
    os.environ["PI_SYNTH_RAVE_CL_FRAMES"] = env
    s = rave.convert(ts, out, encoder=False, **kw)
    c = rave.check(ts, out, blocks=8, **kw)
    res[label] = {"states": s["states"], "err": c["max_abs_err"], "peak": c["peak"]}
print(json.dumps(res))
"""


@pytest.mark.parametrize("name", ["raspberry-l128", "v1-noise-l8"])
def test_other_decoder_forms_stream_like_the_ts(name, rave_env, tmp_path):
    """The rows form all the way (the band synthesis in rows too) and the legacy form (one state
    per cache, kept for comparisons) match the .ts as the default form does."""
    r = subprocess.run([str(rave_env), "-c", OTHER_FORMS, str(FIXTURES / f"{name}.ts"), str(tmp_path / "m.onnx")],
                       capture_output=True, text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for label, v in res.items():
        assert v["peak"] > 1e-4 and v["err"] < TOL, (name, label, v)
    assert res["legacy"]["states"] > 1 and res["all rows"]["states"] == 1


OLD_RAVE = "2.1.21"  # what most models shared in 2023 were exported with (cached_conv 2.4.1)
OLD = ["v2-l128", "v1-noise-l8"]  # the config most shared models use; v1 with its noise synth and a PCA


@pytest.fixture(scope="session")
def old_exports(rave_env):
    """The same configs exported by RAVE 2.1.21's own `rave export` (the project's script)."""
    r = subprocess.run(["bash", str(ROOT / "scripts" / "rave" / "make-old-fixtures.sh"), *OLD],
                       capture_output=True, text=True, timeout=1200, env=dict(os.environ, OLD_RAVE=OLD_RAVE))
    assert r.returncode == 0, f"old fixture build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return FIXTURES / f"rave-{OLD_RAVE}"


@pytest.mark.parametrize("name", OLD)
def test_exports_of_an_older_rave_convert_exactly(name, old_exports, rave_env, tmp_path):
    """Models people share were mostly exported by RAVE 2.1 (its script module carries other
    attributes than 2.3's): they convert, decoder and encoder match their .ts."""
    r = subprocess.run(
        [str(rave_env), "-m", "pi_synth", "convert", "rave", str(old_exports / f"{name}.ts"), "-o",
         str(tmp_path / f"{name}.onnx"), "--json", "--check", "--blocks", str(BLOCKS)],
        capture_output=True, text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    c = json.loads(r.stdout)["check"]
    assert c["peak"] > 1e-3 and c["max_abs_err"] < 5e-6 * max(1.0, c["peak"]), c
    assert c["encoder"]["max_abs_err"] < TOL
    assert bool(c["noise"]) == (name == "v1-noise-l8")  # its noise compared with the .ts's own numbers


def test_spherical_encoder_hears_silence_as_finite_angles(converted):
    """Silence into a spherical model's encoder (a v2 encoder has no biases: its vector is 0):
    the .ts divides 0 by 0 (NaN, which would mute the instrument whenever the gate closes);
    the converted encoder gives the angles of a vector along the last axis (0, …, 0, -0.5),
    and its decoder plays them."""
    import onnxruntime as ort

    from pi_synth.model.card import load_card
    from pi_synth.model.runtime import Runtime

    path, summary = converted["v2-spherical-l16"]
    enc = summary["encoder"]
    card = load_card(enc)
    sess = ort.InferenceSession(enc, providers=["CPUExecutionProvider"])
    feeds = {a.name: np.zeros(a.shape, np.float32) for a in sess.get_inputs()}
    z = sess.run([card.latent_output], feeds)[0]
    assert z.shape[1] == 15 and np.all(z[0, :14] == 0.0) and z[0, 14, 0] == -0.5
    assert np.all(np.isfinite(Runtime(path, use_cache=False).render(z[None, 0].repeat(3, 0))))
