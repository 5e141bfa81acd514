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


def test_convert_checks_its_output_before_the_work(tmp_path):
    """What a tester met after minutes of converting, as tracebacks with exit 1: an output
    that is a folder, a folder that is a file, one it cannot write; and silently: the export
    overwritten by its own output, and names the player reads as another file of a model."""
    from pi_synth.errors import ConfigError
    from pi_synth.tools.convert.cli import _check_output

    ts = tmp_path / "m.ts"
    ts.write_bytes(b"x")
    (tmp_path / "e.onnx").mkdir()
    (tmp_path / "afile").write_text("")
    same = tmp_path / "self.onnx"
    same.write_bytes(b"x")
    cases = [
        (ts, tmp_path / "e.onnx", "is a directory; name a file in it"),
        (ts, tmp_path / "afile" / "x.onnx", "is a file, not a folder"),
        (ts, tmp_path / "x.int8.onnx", "a name ending in .int8.onnx"),
        (ts, tmp_path / "x.encoder.onnx", "a name ending in .encoder.onnx"),
        (same, same, "is the input"),
        (tmp_path, tmp_path / "y.onnx", "is a directory; give the .ts file"),
        (ts, tmp_path / "x.wav", "must be an .onnx file"),
    ]
    for src, out, words in cases:
        with pytest.raises(ConfigError, match=words):
            _check_output(src, out)
    _check_output(ts, tmp_path / "new" / "dir" / "ok.onnx")  # a folder to be made is fine


def test_a_conversion_removes_another_models_files_under_its_name(tmp_path):
    """Converting to x.onnx over an earlier conversion left its x.int8.onnx (another export's)
    to play as this model's int8 file, and --no-encoder left the old encoder to be found."""
    from pi_synth.tools.convert.cli import _stale_siblings

    out = tmp_path / "x.onnx"
    for n in ("x.onnx", "x.int8.onnx", "x.encoder.onnx", "x.encoder.int8.onnx"):
        (tmp_path / n).write_bytes(b"")
    names = lambda ps: sorted(p.name for p in ps)  # noqa: E731
    assert names(_stale_siblings(out, {"encoder": "x.encoder.onnx"}, quantize=False)) == [
        "x.encoder.int8.onnx", "x.int8.onnx"]
    assert names(_stale_siblings(out, {}, quantize=True)) == ["x.encoder.int8.onnx", "x.encoder.onnx"]  # --no-encoder
    assert _stale_siblings(out, {"encoder": "x.encoder.onnx"}, quantize=True) == []
