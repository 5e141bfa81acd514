"""precision = "auto": of a voice shipped as NAME.int8.onnx and NAME.fp32.onnx, the one
measured faster here plays (fp32 unless int8 clearly wins), measured once and kept."""

import json
import logging
import os

import pytest

from pi_synth.model import precision
from pi_synth.model.library import find_model


@pytest.fixture
def pair(tmp_path, monkeypatch):
    """Factory: a voice folder with NAME.int8.onnx and NAME.fp32.onnx, each an organ that
    is either fast or slow (matrix products burnt every block)."""
    from pi_synth.tools.procedural import build_organ

    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("PI_SYNTH_MODELS", str(d))

    def make(int8="fast", fp32="fast", name="voice"):
        for kind, speed in (("int8", int8), ("fp32", fp32)):
            p = d / f"{name}.{kind}.onnx"
            if speed == "broken":
                p.write_bytes(b"not an onnx file")
            elif speed == "slow":
                build_organ(p, fault="slow", burn_matmuls=2)
            else:
                build_organ(p)
        return d / f"{name}.int8.onnx", d / f"{name}.fp32.onnx"

    return make


def _cache(tmp_path):
    return json.loads((tmp_path / "cache" / "precision.json").read_text())  # PI_SYNTH_CACHE_DIR


@pytest.mark.parametrize("int8,fp32,plays", [("fast", "slow", "int8"), ("slow", "fast", "fp32"),
                                             ("fast", "fast", "fp32")])  # a tie: the reference
def test_auto_plays_the_faster_file_and_fp32_on_a_tie(pair, tmp_path, int8, fp32, plays, caplog):
    files = dict(zip(("int8", "fp32"), pair(int8, fp32)))
    with caplog.at_level(logging.INFO, logger="pi_synth.model.precision"):
        assert find_model("voice", "auto") == files[plays]
    assert f"playing {files[plays].name}" in caplog.text and "overrides" in caplog.text
    (entry,) = _cache(tmp_path).values()
    assert entry["choice"] == plays
    if int8 != fp32:
        assert (entry["int8_speedup"] > 2) == (plays == "int8")


def test_auto_weighs_name_onnx_against_its_int8_file(pair):
    """``convert rave --quantize`` writes NAME.onnx (fp32) beside NAME.int8.onnx: "auto"
    measures those two as it does NAME.fp32.onnx, rather than taking int8 unmeasured."""
    int8, fp32 = pair("slow", "fast")
    plain = fp32.with_name("voice.onnx")
    fp32.rename(plain)
    assert find_model("voice", "auto") == plain
    assert find_model("voice", "int8") == int8


def test_two_models_under_one_name_are_not_a_pair(tmp_path, monkeypatch, caplog, cli):
    """A conversion to a name over an earlier one's files left NAME.int8.onnx of another
    (stereo) export beside the new NAME.onnx: the two played as one voice's precisions (the
    stereo one with precision int8), and bench crashed comparing them. Now only the newer
    plays, the log says why, and bench by either path is one line."""
    import os

    from pi_synth.tools.procedural import build_organ

    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("PI_SYNTH_MODELS", str(d))
    old = d / "x.int8.onnx"
    build_organ(old, block_size=512)
    new = d / "x.onnx"
    build_organ(new, block_size=256)
    os.utime(old, (1_000_000, 1_000_000))  # converted long before
    for precision in ("int8", "fp32", "auto"):
        assert find_model("x", precision) == new, precision
    said = [r.getMessage() for r in caplog.records if "not one model's two precisions" in r.getMessage()]
    assert len(said) == 1 and "block_size 512 against 256" in said[0] and "x.onnx, plays" in said[0], said
    from pi_synth.bench import compare_precisions
    from pi_synth.errors import ModelError

    with pytest.raises(ModelError, match="not one model's two precisions"):
        compare_precisions(new, old)


def test_the_choice_is_kept_until_a_file_changes(pair, tmp_path, monkeypatch):
    int8, fp32 = pair("fast", "slow")
    assert find_model("voice", "auto") == int8
    calls = []
    real = precision.measure
    monkeypatch.setattr(precision, "measure", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert find_model("voice", "auto") == int8 and not calls  # from the cache folder
    from pi_synth.tools.procedural import build_organ

    build_organ(int8, fault="slow", burn_matmuls=2)  # a new int8 file: measured again
    build_organ(fp32)
    st = os.stat(int8)
    os.utime(int8, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert find_model("voice", "auto") == fp32 and len(calls) == 1
    assert sorted(e["choice"] for e in _cache(tmp_path).values()) == ["fp32", "int8"]


def test_a_forced_precision_is_not_measured(pair, monkeypatch):
    int8, fp32 = pair("slow", "fast")
    monkeypatch.setattr(precision, "measure", lambda *a, **k: pytest.fail("measured"))
    assert find_model("voice", "int8") == int8
    assert find_model("voice", "fp32") == fp32
    assert find_model(str(int8), "auto") == int8  # a path is that file


def test_a_file_that_does_not_load_leaves_the_other(pair, tmp_path, caplog):
    int8, fp32 = pair("broken", "fast")
    with caplog.at_level(logging.WARNING, logger="pi_synth.model.precision"):
        assert find_model("voice", "auto") == fp32
    assert "voice.int8.onnx" in caplog.text and "playing voice.fp32.onnx" in caplog.text
    assert not (tmp_path / "cache" / "precision.json").exists()  # nothing kept: fix it, it is tried again


def test_run_plays_the_choice(pair, cli, tmp_path):
    """End to end: `pi-synth run` names the file it plays, and the config can force one."""
    pair("fast", "slow")
    p = cli("run", "--model", "voice", "--backend", "null", "--seconds", "0.2")
    assert 'playing organ (voice.int8.onnx: precision "auto" picks it here (measured)' in p.stderr
    conf = tmp_path / "c.toml"
    conf.write_text('[model]\nprecision = "fp32"\n')
    p = cli("run", "--config", conf, "--model", "voice", "--backend", "null", "--seconds", "0.2")
    assert 'playing organ (voice.fp32.onnx: precision "fp32" asks for it' in p.stderr
    conf.write_text('[model]\nprecision = "fast"\n')
    p = cli("run", "--config", conf, "--model", "voice", "--backend", "null", "--seconds", "0.2")
    assert p.returncode == 2 and "precision" in p.stderr and "auto, int8, fp32" in p.stderr
