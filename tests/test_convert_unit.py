"""Fast checks of ``pi-synth convert`` that need no torch (the slow ones: test_convert_rave.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pi_synth.cli import build_parser

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_parser_has_convert_rave():
    args = build_parser().parse_args(["convert", "rave", "m.ts", "-o", "m.onnx", "--check", "--blocks", "12",
                                      "--quantize"])
    assert args.convert_kind == "rave" and args.input == "m.ts" and args.output == "m.onnx"
    assert args.check and args.quantize and args.blocks == 12 and args.frames == 1


def test_output_file_names():
    from pi_synth.tools.convert.cli import _int8_path
    from pi_synth.tools.convert.rave import _model_name, encoder_path

    assert encoder_path("out/a.onnx") == Path("out/a.encoder.onnx")
    assert encoder_path("a.fp32.onnx") == Path("a.encoder.fp32.onnx")
    assert _int8_path(Path("a.onnx")) == Path("a.int8.onnx")
    assert _int8_path(Path("a.fp32.onnx")) == Path("a.int8.onnx")
    assert _model_name(Path("x/flute.fp32.onnx")) == "flute"


@pytest.mark.skipif(HAS_TORCH, reason="torch is installed here")
def test_without_torch_says_how_to_install(cli, tmp_path):
    ts = tmp_path / "m.ts"
    ts.write_bytes(b"x")
    r = cli("convert", "rave", ts, "-o", tmp_path / "m.onnx")
    assert r.returncode == 2
    assert "pip install 'pi-synth[convert]'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_output_name_is_exit_2(cli, tmp_path):
    r = cli("convert", "rave", tmp_path / "m.ts", "-o", tmp_path / "m.wav")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
