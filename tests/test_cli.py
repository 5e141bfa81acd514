"""The command line as users meet it: exit codes, one-line errors, no tracebacks."""

import json
from pathlib import Path

import numpy as np
import pytest

from pi_synth.audio.backends.wav import read_wav
from pi_synth.tools.procedural import build_organ, organ_card


def one_line_error(p, *words):
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_info_text_and_json(organ, cli):
    m = organ(block_size=512)
    p = cli("info", m, check=0)
    assert "organ" in p.stdout and "block 512" in p.stdout and "pitch" in p.stdout
    d = json.loads(cli("info", m, "--json", check=0).stdout)
    assert d["card"]["block_size"] == 512
    assert {"name": "audio", "shape": [1, 1, 512], "dtype": "float32"} in d["outputs"]


def test_render_is_deterministic(organ, cli, tmp_path):
    m = organ()
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    for out in (a, b):
        cli("render", m, "-o", out, "--seconds", "1", "--set", "loudness=-6", "--set", "pitch=330", check=0)
    assert a.read_bytes() == b.read_bytes()
    x, sr = read_wav(a)
    assert sr == 48000 and abs(len(x) - 48000) <= 2 * 256 + 1440 and x.std() > 0.05


@pytest.mark.parametrize(
    "args, words",
    [
        (["info", "/nonexistent/x.onnx"], ["x.onnx", "not found"]),
        (["info", "nosuchname"], ["no model named 'nosuchname'"]),
        (["render", "{model}", "-o", "{out}", "--set", "pich=3"], ["pich", "pitch, loudness, brightness"]),
        (["render", "{model}", "-o", "{out}", "--set", "pitch"], ["NAME=NUMBER"]),
        (["render", "{model}", "-o", "{out}", "--events", "{bad_events}"], ["event 0", "'t'"]),
        (["render", "{model}", "-o", "{out}", "--events", "{unknown_source}"], ["knob9"]),
        (["render", "{model}", "-o", "/nonexistent/dir/out.wav"], ["out.wav", "cannot write"]),
        (["run", "--model", "{model}", "--config", "{bad_config}"], ["bad.toml:2:", "audio.period"]),
        (["run", "--model", "{model}", "--backend", "cassette"], ["backend", "alsa"]),
        (["info", "{truncated}"], ["truncated.onnx"]),
        (["info", "{cardless}"], ["cardless.onnx", "no pi-synth model card"]),
        (["info", "{mismatch}"], ["mismatch.onnx", "[1, 1, 512]"]),
    ],
)
def test_bad_input_is_one_line_exit_2(organ, cli, tmp_path, args, words):
    import onnx

    model = organ()
    (tmp_path / "bad_events.json").write_text('[{"set": {"pitch": 3}}]')
    (tmp_path / "unknown_source.json").write_text('[{"t": 0, "source": "knob9", "value": 1}]')
    (tmp_path / "bad.toml").write_text("[audio]\nperiod = 'x'\n")
    (tmp_path / "truncated.onnx").write_bytes(model.read_bytes()[:3000])
    m = build_organ(None)
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "cardless.onnx"))
    card = organ_card(512, 48000)
    build_organ(tmp_path / "mismatch.onnx", block_size=256, card=card)
    subs = {k: str(tmp_path / f"{k}.{ext}") for k, ext in [
        ("bad_events", "json"), ("unknown_source", "json"), ("bad_config", "toml"),
        ("truncated", "onnx"), ("cardless", "onnx"), ("mismatch", "onnx")]}
    subs["bad_config"] = str(tmp_path / "bad.toml")
    subs.update(model=str(model), out=str(tmp_path / "o.wav"))
    p = cli(*[a.format(**subs) for a in args])
    one_line_error(p, *words)


def test_debug_shows_the_traceback(cli):
    p = cli("--debug", "info", "/nonexistent/x.onnx")
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_quantize_writes_an_int8_model_and_reports_its_ceiling(cli, tmp_path):
    """`pi-synth quantize` on the shipped flute: an int8 file that plays, and a report
    with SNR, speed and the measured ceiling (fp32 with the quantized ops made free)."""
    from pi_synth.model.runtime import Runtime

    src = Path(__file__).resolve().parents[1] / "models" / "flute.fp32.onnx"
    out = tmp_path / "flute.q.onnx"
    p = cli("quantize", src, "-o", out, "--report", check=0, timeout=120)
    assert "SNR vs fp32" in p.stdout and "ceiling (fp32 with the quantized ops made free): x" in p.stdout
    from pi_synth.model.card import card_json

    assert card_json(out)["precision"] == "int8"
    assert np.isfinite(Runtime(out).step()).all()
