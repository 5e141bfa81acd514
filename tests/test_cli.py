"""The command line as users meet it: exit codes, one-line errors, no tracebacks."""

import json
import re
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
    assert json.loads(cli("info", m, "--json", check=0).stdout)["plays"] is None  # a path: no choice made
    # an int8 file says how far it is from its fp32 one (its card has it; info did not say)
    p = cli("info", Path(__file__).resolve().parent.parent / "models" / "flute.int8.onnx", check=0)
    assert re.search(r"precision int8 \(\w+\), [\d.]+ dB SNR against its fp32 file", p.stdout), p.stdout
    d = json.loads(cli("info", m, "--json", check=0).stdout)
    assert d["card"]["block_size"] == 512
    assert {"name": "audio", "shape": [1, 1, 512], "dtype": "float32"} in d["outputs"]


def test_info_shows_the_cards_provenance(organ, cli):
    card = organ_card(256, 48000)
    card.update(license="CC BY 4.0", source="trained on my field recordings, RAVE v2",
                provenance={"data": "42 min of my own field recordings", "data_license": "CC BY 4.0 (mine)",
                            "owner": "Ana Example", "training": "RAVE v2, 600k steps", "cpu_hours": 310.5,
                            "energy_wh": 4200, "run_watts_pi4": 3.1, "consent": "every voice recorded agreed"})
    m = organ(card=card)
    out = cli("info", m, check=0).stdout.splitlines()
    at = out.index("  provenance:")
    assert out[at - 2:at] == ["  license: CC BY 4.0", "  source: trained on my field recordings, RAVE v2"]
    labels, rows = zip(*(re.fullmatch(r"    (\S.*?\S)  +(\S.*)", ln).groups() for ln in out[at + 1:]))
    assert list(labels) == ["data", "data licence", "weights owned by", "training", "training compute",
                      "training energy", "playing on a Pi 4", "consent"]
    assert list(rows) == ["42 min of my own field recordings", "CC BY 4.0 (mine)", "Ana Example", "RAVE v2, 600k steps",
                    "310.5 CPU-hours", "4200 Wh", "3.1 W", "every voice recorded agreed"]
    assert len({ln.index(r) for ln, r in zip(out[at + 1:], rows)}) == 1  # one column
    # --json keeps the whole card, provenance included
    assert json.loads(cli("info", m, "--json", check=0).stdout)["card"]["provenance"] == card["provenance"]
    # a card without provenance prints no such section
    assert "provenance" not in cli("info", organ(name="plain"), check=0).stdout


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
        (["render", "{model}", "-o", "{out}", "--set", "pich=3"], ["pich", "brightness, attack", "pitch, loudness"]),
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
    assert "onnxruntime" not in p.stderr and "pre-processing" not in p.stderr, p.stderr  # its advice, not ours
    one_line_error(cli("quantize", out, "-o", out), "is the input model")
    organ = build_organ(tmp_path / "organ.onnx")  # no Conv/MatMul/Gemm at all
    assert organ is not None
    one_line_error(cli("quantize", tmp_path / "organ.onnx", "-o", tmp_path / "o8.onnx", timeout=120),
                   "nothing to quantize")
    assert not (tmp_path / "o8.onnx").exists()


def test_a_note_model_rendered_without_notes_plays_the_demo_phrase_and_says_so(organ, cli, tmp_path):
    """A note model with no --midi/--events used to render seconds of silence and say nothing."""
    out = tmp_path / "x.wav"
    p = cli("render", organ(), "-o", out, check=0)
    assert "played by notes" in p.stderr and "--midi" in p.stderr and "demo" in p.stderr
    x, sr = read_wav(out)
    assert np.abs(x).max() > 0.05 and len(x) / sr > 5  # the demo phrase, not 5 s of silence


def test_a_torchscript_file_is_named_and_the_conversion_given(cli, tmp_path):
    import zipfile

    ts = tmp_path / "voice.ts"
    with zipfile.ZipFile(ts, "w") as z:  # how torch.jit.save lays out a TorchScript file
        z.writestr("voice/constants.pkl", b"\x80\x02")
        z.writestr("voice/code/__torch__/voice.py", "class Voice: ...")
    for args in (("info", ts), ("run", "--model", ts, "--backend", "null", "--seconds", "0.1"),
                 ("render", ts, "-o", tmp_path / "o.wav")):
        one_line_error(cli(*args), "TorchScript", "pi-synth convert rave")


def test_card_command_writes_a_starting_card_and_edits_it(cli, tmp_path):
    import onnx

    path = tmp_path / "bare.onnx"
    m = build_organ(path)
    del m.metadata_props[:]  # a model from elsewhere: no card
    onnx.save(m, path)
    one_line_error(cli("info", path), "no pi-synth model card", f"pi-synth card {path} --init")
    # quantize reads the card as JSON (unvalidated): the same way to write one
    one_line_error(cli("quantize", path, "-o", tmp_path / "q.onnx"), "no pi-synth model card",
                   f"pi-synth card {path} --init")
    cli("card", path, "--init", check=0)
    card = json.loads(cli("card", path, check=0).stdout)
    assert card["inputs"] == {"controls": "controls"} and card["outputs"] == {"audio": "audio"}
    assert sorted(card["state"]) == [["phase_in", "phase_out"], ["prev_in", "prev_out"]]
    assert [c["name"] for c in card["controls"]] == ["c0", "c1", "c2"] and card["block_size"] == 256
    before = path.read_bytes()
    one_line_error(cli("card", path, "--set", "block_size=100"), "[1, 1, 256]")  # the graph disagrees
    one_line_error(cli("card", path, "--set", "controls.7.name=x"), "0..2")
    one_line_error(cli("card", path, "--set", "name="), "name is empty")
    assert path.read_bytes() == before  # a refused edit leaves the file as it was
    sets = ["controls.0.name=pitch", "controls.0.min=30", "controls.0.max=4000", "controls.0.default=220",
            "controls.0.curve=log", "controls.1.name=loudness", "controls.1.min=-80", "controls.1.max=0",
            "controls.1.default=-6"]
    cli("card", path, *[a for s in sets for a in ("--set", s)], check=0)
    out = tmp_path / "o.wav"
    cli("render", path, "-o", out, "--seconds", "0.5", "--events", _note_events(tmp_path), check=0)
    assert np.abs(read_wav(out)[0]).max() > 0.05  # the edited card plays
    one_line_error(cli("card", path, "--init"), "has a card already", "--force")
    fields = tmp_path / "mine.card.json"  # the workshop's step 9.5: a few keys merged in
    fields.write_text(json.dumps({"license": "CC0-1.0", "provenance": {"owner": "Ana Example"}}))
    cli("card", path, "--update", fields, check=0)
    info = cli("info", path, check=0).stdout
    assert "license: CC0-1.0" in info and "Ana Example" in info and "pitch" in info
    fields.write_text("[1, 2]")
    one_line_error(cli("card", path, "--update", fields), "JSON object")


def _note_events(tmp_path):
    ev = tmp_path / "note.json"
    ev.write_text(json.dumps([{"t": 0.0, "midi": [144, 69, 110]}]))
    return ev


def _bare_organ():
    """The organ as a model from elsewhere would come: no card."""
    m = build_organ()
    del m.metadata_props[:]
    return m


def test_card_makes_a_model_with_external_weights_one_file(cli, tmp_path):
    """torch.onnx.export (torch ≥ 2.5) writes X.onnx + X.onnx.data by default: copied alone,
    the .onnx does not load; 'pi-synth card' writes one self-contained file."""
    import onnx

    src = tmp_path / "export"
    src.mkdir()
    m = _bare_organ()
    last = next(n for n in m.graph.node if "audio" in n.output)  # a Constant node's tensor goes out too
    last.output[list(last.output).index("audio")] = "audio_dry"
    m.graph.node.extend([
        onnx.helper.make_node("Constant", [], ["hush"], value=onnx.numpy_helper.from_array(
            np.full((1, 1, 256), 0.5, np.float32))),
        onnx.helper.make_node("Mul", ["audio_dry", "hush"], ["audio"])])
    path = src / "voice.onnx"
    onnx.save(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="voice.onnx.data", size_threshold=0, convert_attribute=True)
    assert onnx.load(path, load_external_data=False).graph.node[-2].attribute[0].t.data_location == 1
    assert (src / "voice.onnx.data").stat().st_size > 0
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "voice.onnx").write_bytes(path.read_bytes())
    one_line_error(cli("card", alone / "voice.onnx", "--init"), "voice.onnx.data", "not beside it")
    cli("card", path, "--init", "-o", alone / "one.onnx", check=0)
    assert not list(alone.glob("*.data"))
    want = onnx.load(path)  # the onnx package's own reading of the external weights
    got = onnx.load(alone / "one.onnx", load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in got.graph.initializer)
    assert ([onnx.numpy_helper.to_array(t).tobytes() for t in got.graph.initializer]
            == [onnx.numpy_helper.to_array(t).tobytes() for t in want.graph.initializer])
    assert got.graph.node[-2].attribute[0].t.data_location != onnx.TensorProto.EXTERNAL
    assert (onnx.numpy_helper.to_array(got.graph.node[-2].attribute[0].t) == 0.5).all()
    sets = ["controls.1.name=loudness", "controls.1.min=-80", "controls.1.max=0", "controls.1.default=-6"]
    cli("card", alone / "one.onnx", *[a for s in sets for a in ("--set", s)], check=0)
    out = tmp_path / "o.wav"
    cli("render", alone / "one.onnx", "-o", out, "--seconds", "0.3", check=0)
    assert np.abs(read_wav(out)[0]).max() > 0.02
    # with its .data beside it, a carded file with external weights plays in place too
    cli("card", path, "--from", _card_of(cli, alone / "one.onnx", tmp_path), "-o", src / "kept.onnx", check=0)
    cli("render", src / "kept.onnx", "-o", out, "--seconds", "0.3", check=0)


def _card_of(cli, model, tmp_path):
    f = tmp_path / "card.json"
    f.write_text(cli("card", model, check=0).stdout)
    return f


def test_card_fixes_dynamic_dimensions(cli, tmp_path):
    """An export with dynamic axes (batch, frames) gets the shapes the player will use: a
    leading batch as 1 by itself, others from --shape; the outputs' from one trial call."""
    import onnx

    m = _bare_organ()
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.name in ("controls", "audio"):
            dims = vi.type.tensor_type.shape.dim
            dims[0].dim_param = "batch"
            dims[2].dim_param = "frames" if vi.name == "controls" else "samples"
    path = tmp_path / "dyn.onnx"
    onnx.save(m, path)
    one_line_error(cli("card", path, "--init"), "dynamic shape", "--shape controls=1,3,N")
    one_line_error(cli("card", path, "--init", "--shape", "controls=1,4,1"), "['batch', 3, 'frames']")
    one_line_error(cli("card", path, "--init", "--shape", "ctl=1,3,1"), "not a graph input")
    one_line_error(cli("card", path, "--init", "--shape", "controls=1,3,x"), "NAME=D,D,D")
    p = cli("card", path, "--init", "--shape", "controls=1,3,1", "-o", tmp_path / "fixed.onnx", check=0)
    assert "controls [1, 3, 1]" in p.stderr and "audio [1, 1, 256]" in p.stderr
    io = json.loads(cli("info", tmp_path / "fixed.onnx", "--json", check=0).stdout)
    assert {"name": "audio", "shape": [1, 1, 256], "dtype": "float32"} in io["outputs"]
    assert {"name": "controls", "shape": [1, 3, 1], "dtype": "float32"} in io["inputs"]
    out = tmp_path / "o.wav"
    cli("render", tmp_path / "fixed.onnx", "-o", out, "--seconds", "0.3", "--set", "c1=1", check=0)
    assert np.abs(read_wav(out)[0]).max() > 0.01
    # an exporter that wrote its own card, its state batched too: the player's message names
    # `card --shape`, which fixes it with no --init (it crashed on the state's "batch")
    card = json.loads(cli("card", tmp_path / "fixed.onnx", check=0).stdout)
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.name in ("phase_in", "phase_out"):
            vi.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.helper.set_model_props(m, {"pi_synth": json.dumps(card)})
    onnx.save(m, path)
    one_line_error(cli("info", path), "dynamic shape", f"pi-synth card {path} --shape controls=1,")
    cli("card", path, "--shape", "controls=1,3,1", "-o", tmp_path / "carded.onnx", check=0)
    cli("render", tmp_path / "carded.onnx", "-o", out, "--seconds", "0.3", "--set", "c1=1", check=0)
    assert np.abs(read_wav(out)[0]).max() > 0.01


def _graph_file(path, inputs, out_type, out_shape):
    """A graph with these inputs (name, onnx type, shape) and one output of ``out_shape``
    (zeros): how other people's exports lay out their inputs and outputs, for card --init."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [len(out_shape)], out_shape)
    value = helper.make_tensor("v", out_type, [1], [0.0])
    nodes = [helper.make_node("Constant", [], ["s"], value=shape),
             helper.make_node("ConstantOfShape", ["s"], ["audio"], value=value)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, sh) for n, t, sh in inputs],
                          [helper.make_tensor_value_info("audio", out_type, out_shape)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_card_init_says_how_to_reexport_what_it_cannot_play(cli, tmp_path):
    """The layouts a DDSP or torch export often has and the player cannot: each one line that
    says what to change in the export (they said "write the card with --from", which cannot
    help, or listed the shapes without naming float64)."""
    from onnx import TensorProto as T

    F, D = T.FLOAT, T.DOUBLE
    cases = {
        "f64": ([("controls", D, [1, 2, 1])], D, [1, 1, 256], ["controls, audio are float64", "model.float()"]),
        "flat": ([("controls", F, [1, 2, 1])], F, [1, 256], ["audio is [1, 256]", "reshape(1, 1, -1)"]),
        "twoin": ([("f0", F, [1, 1, 1]), ("loudness", F, [1, 1, 1])], F, [1, 1, 256],
                  ["torch.cat([f0, loudness], dim=1)"]),
        "extra": ([("controls", F, [1, 2, 1]), ("temperature", F, [1])], F, [1, 1, 256],
                  ["temperature is not a controls, audio or state input", "re-export without it"]),
    }
    for name, (ins, t, shape, words) in cases.items():
        path = _graph_file(tmp_path / f"{name}.onnx", ins, t, shape)
        one_line_error(cli("card", path, "--init"), *words)


def test_a_long_implied_render_is_said_before_it_starts(organ, tmp_path):
    """A file whose last event sits far out (a stray note-off an hour on) renders for
    minutes: one line says how long, and why, before the wait — not a silent hang."""
    import subprocess
    import sys

    ev = tmp_path / "far.json"
    ev.write_text(json.dumps([{"t": 0.0, "midi": [144, 69, 100]}, {"t": 3600.0, "midi": [128, 69, 0]}]))
    proc = subprocess.Popen([sys.executable, "-m", "pi_synth", "render", str(organ()), "--events", str(ev),
                             "-o", str(tmp_path / "o.wav")], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
    finally:
        proc.kill()
        proc.wait()
    assert "rendering 60.0 min of audio" in line and "last at 3600.00 s" in line and "--seconds" in line, line


def test_card_says_a_float16_export_needs_float32(cli, tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((4, 256), 0.01, np.float16), "W")
    g = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]), helper.make_node("MatMul", ["xt", "W"], ["y"]),
         helper.make_node("Transpose", ["y"], ["audio"], perm=[0, 2, 1])], "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4, 1])],
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT16, [1, 256, 1])], [w])
    path = tmp_path / "half.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    one_line_error(cli("card", path, "--init"), "x, audio are float16", "model.float()", "pi-synth quantize")


def test_card_init_knows_an_encoder_and_an_effect(cli, tmp_path):
    """Someone's own encoder/decoder pair (or an audio effect) exported without cards:
    --init tells them apart by their graphs, and the re-carded pair plays timbre transfer."""
    import onnx

    from pi_synth.tools.procedural import build_effect

    root = Path(__file__).resolve().parents[1]
    shipped = {}
    for src, dst in (("morph.encoder.onnx", "mine.encoder.onnx"), ("morph.fp32.onnx", "mine.onnx")):
        m = onnx.load(root / "models" / src)
        shipped[dst] = json.loads(next(p.value for p in m.metadata_props if p.key == "pi_synth"))
        del m.metadata_props[:]
        onnx.save(m, tmp_path / dst)
        cli("card", tmp_path / dst, "--init", check=0)
    enc = json.loads(cli("card", tmp_path / "mine.encoder.onnx", check=0).stdout)
    want = shipped["mine.encoder.onnx"]
    assert enc["kind"] == "encoder" and enc["controls"] == []
    for key in ("block_size", "control_frames", "inputs", "outputs", "state"):
        assert enc[key] == want[key], key
    dec = json.loads(cli("card", tmp_path / "mine.onnx", check=0).stdout)
    assert dec["inputs"] == {"controls": "controls"} and len(dec["controls"]) == len(want["latent_controls"])
    out = tmp_path / "o.wav"
    p = cli("render", tmp_path / "mine.onnx", "--input", root / "tests" / "data" / "voice.wav", "-o", out, check=0)
    assert "input" in p.stdout
    x = read_wav(out)[0]
    assert np.isfinite(x).all() and np.abs(x).max() > 0.01

    fx = build_effect()
    del fx.metadata_props[:]
    onnx.save(fx, tmp_path / "fx.onnx")
    cli("card", tmp_path / "fx.onnx", "--init", check=0)
    card = json.loads(cli("card", tmp_path / "fx.onnx", check=0).stdout)
    assert card["inputs"]["audio"] == "audio_in", card["inputs"]
    cli("render", tmp_path / "fx.onnx", "--input", root / "tests" / "data" / "voice.wav", "-o", out, check=0)
    assert np.abs(read_wav(out)[0]).max() > 0.01


@pytest.mark.parametrize("args,words", [
    (("render", "flute", "--seconds", "0", "-o", "x.wav"), ("--seconds", "pi-synth render --help")),
    (("render", "flute"), ("-o/--output",)),
    (("bogus",), ("invalid choice", "pi-synth --help")),
    (("bench", "flute", "--blocks", "0"), ("--blocks", "1..100000")),
    (("bench", "flute", "--threads", "64"), ("--threads", "1..16")),
])
def test_usage_errors_are_one_line(cli, args, words):
    one_line_error(cli(*args), *words)


def test_an_empty_events_file_and_an_input_overwritten_are_refused(organ, cli, tmp_path):
    ev = tmp_path / "none.json"
    ev.write_text("[]")
    one_line_error(cli("render", organ(), "--events", ev, "-o", tmp_path / "o.wav"), "holds no events")
    rec = tmp_path / "take.wav"
    rec.write_bytes((Path(__file__).parent / "data" / "voice.wav").read_bytes())
    before = rec.read_bytes()
    one_line_error(cli("render", "morph", "--input", rec, "-o", rec), "is the --input file")
    assert rec.read_bytes() == before


def test_card_edits_a_batched_model_and_keeps_its_voices(cli, tmp_path):
    """The shipped flute plays 16 voices from one file (a dynamic leading dimension): an
    edit of its card must keep them, not ask for a fixed shape."""
    src = Path(__file__).resolve().parents[1] / "models" / "flute.int8.onnx"
    path = tmp_path / "fl.onnx"
    path.write_bytes(src.read_bytes())
    cli("card", path, "--set", "license=CC0-1.0", check=0)
    io = json.loads(cli("info", path, "--json", check=0).stdout)
    assert io["card"]["license"] == "CC0-1.0" and io["card"]["voices"] == 16
    assert {"name": "audio", "shape": ["voices", 1, 256], "dtype": "float32"} in io["outputs"]


def test_a_render_the_limiter_squashes_says_so(organ, cli, tmp_path):
    loud = tmp_path / "loud.toml"
    loud.write_text("[output]\ngain_db = 24.0\n")
    ev = _note_events(tmp_path)
    p = cli("render", organ(), "--events", ev, "-o", tmp_path / "a.wav", env={"PI_SYNTH_CONFIG": str(loud)}, check=0)
    assert "the limiter bent peaks over -1 dBFS in" in p.stderr and "gain_db" in p.stderr, p.stderr
    p = cli("render", organ(), "--events", ev, "-o", tmp_path / "b.wav", check=0)
    assert "limiter" not in p.stderr, p.stderr


def test_a_config_model_that_is_not_there_says_where_it_was_set(cli, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('# my box\n[model]\npath = "nosuch"\n')
    one_line_error(cli("run", "--backend", "null", "--seconds", "1", env={"PI_SYNTH_CONFIG": str(conf)}),
                   f"{conf}:3: [model] path: no model named 'nosuch'", "installed:")


def test_render_to_dash_is_standard_output_and_mp3_is_refused(organ, cli, tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "pi_synth", "render", str(organ()), "--seconds", "0.3", "-o", "-"],
                       capture_output=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout[:4] == b"RIFF" and not (tmp_path / "-").exists()
    one_line_error(cli("render", organ(), "-o", tmp_path / "x.mp3"), "pi-synth writes WAV", "ffmpeg")
    p = cli("-q", "run", "--model", organ(), "--backend", "wav", "--device", tmp_path / "take.mp3", "--seconds", "0.2")
    one_line_error(p, "the wav backend writes WAV")
    assert not list(tmp_path.glob("*take*"))


def test_sigterm_stops_a_render_and_leaves_no_file(organ, tmp_path):
    """A service manager or `timeout` stopping a long render: as Ctrl-C does, no file is
    left (neither the WAV nor its hidden temporary), one line, exit 143."""
    import signal
    import subprocess
    import sys
    import time

    ev = tmp_path / "hold.json"
    ev.write_text('[{"t": 0, "midi": [144, 60, 100]}]')
    p = subprocess.Popen([sys.executable, "-m", "pi_synth", "render", str(organ()), "--seconds", "3000",
                          "--events", str(ev), "-o", str(tmp_path / "long.wav")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob(".long.wav.*")):
        time.sleep(0.05)  # the render is under way once its temporary file is there
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and "stopped by SIGTERM" in err, (p.returncode, err)
    assert not [x.name for x in tmp_path.iterdir() if "long" in x.name]


def test_a_precision_that_chooses_nothing_is_said(cli):
    root = Path(__file__).resolve().parents[1]
    p = cli("info", root / "models" / "flute.fp32.onnx", "--precision", "int8", check=0)
    assert "--precision int8 picks between a model name's two files" in p.stderr and "(fp32)" in p.stderr
    p = cli("bench", "organ", "--precision", "int8", "--blocks", "10", check=0)
    assert "organ.onnx is the only file of organ (fp32)" in p.stderr
    p = cli("info", root / "models" / "flute.int8.onnx", "--precision", "int8", check=0)
    assert "--precision" not in p.stderr  # it asked for what it got


def test_a_capture_name_on_a_backend_without_inputs_is_refused(cli, tmp_path):
    """`--capture X` on the null or unpaced backend used to say "audio in from X" and play
    silence into the model."""
    for backend in ("null", "unpaced"):
        p = cli("-q", "run", "--model", "morph", "--backend", backend, "--capture", tmp_path / "nosuch.wav",
                "--seconds", "0.2")
        one_line_error(p, f"the {backend} backend has no input to open it on", "--backend wav")


def test_run_on_the_wav_backend_plays_a_capture_file_to_its_end(cli, tmp_path):
    """`run --backend wav --capture IN.wav`: it stops where the input (+ the models' tail)
    ends, as `render --input` does, and makes the render's samples a period later (the
    output's lead) — it used to record silence until killed, ~1 MB a second. A PCM name
    there is one line; a model that takes no audio says the input is not played."""
    from pi_synth.audio.backends.wav import read_wav

    voice = Path(__file__).parent / "data" / "voice.wav"
    p = cli("-q", "run", "--model", "morph", "--backend", "wav", "--device", tmp_path / "run.wav", "--capture",
            voice, timeout=120, check=0)
    cli("-q", "render", "morph", "--input", voice, "-o", tmp_path / "render.wav", check=0)
    live, _ = read_wav(tmp_path / "run.wav")
    off, _ = read_wav(tmp_path / "render.wav")
    assert "played 3.5" in p.stderr and len(off) <= len(live) <= len(off) + 512, (len(live), len(off))
    n = len(off) - 256
    assert np.abs(off[:n]).max() > 0.05 and np.array_equal(live[256:256 + n], off[:n])
    one_line_error(cli("-q", "run", "--model", "morph", "--backend", "wav", "--device", tmp_path / "x.wav",
                       "--capture", "default", "--seconds", "0.2"), "the wav backend plays a WAV file in",
                   "--backend alsa")
    p = cli("-q", "run", "--model", "flute", "--backend", "wav", "--device", tmp_path / "x.wav",
            "--capture", voice, "--seconds", "0.2", check=0)
    assert "flute takes no audio" in p.stderr and "the input is not played" in p.stderr, p.stderr


def test_render_input_dash_is_standard_input(tmp_path):
    """`--input -` reads the WAV from a pipe, as `-o -` writes one (it said "-: cannot read
    the file"); the render is the one of the file itself."""
    import subprocess
    import sys

    voice = Path(__file__).parent / "data" / "voice.wav"
    for name, feed in (("piped.wav", voice.read_bytes()), ("file.wav", None)):
        p = subprocess.run([sys.executable, "-m", "pi_synth", "-q", "render", "morph", "--input",
                            "-" if feed else str(voice), "-o", str(tmp_path / name)],
                           input=feed, capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr
    assert (tmp_path / "piped.wav").read_bytes() == (tmp_path / "file.wav").read_bytes()


def test_a_set_of_what_the_notes_play_is_said(cli, tmp_path):
    """`render flute --set pitch=220` (the demo phrase plays it) rendered the demo's pitches
    with no word about the --set; a control the notes do not play is not mentioned."""
    p = cli("-q", "render", "flute", "-o", tmp_path / "f.wav", "--seconds", "0.3", "--set", "pitch=220", check=0)
    assert "--set pitch: the notes play pitch on flute" in p.stderr, p.stderr
    p = cli("-q", "render", "flute", "-o", tmp_path / "f.wav", "--seconds", "0.3", "--set", "brightness=0.2",
            check=0)
    assert "the notes play" not in p.stderr, p.stderr


def test_set_and_model_names_as_users_type_them(organ, cli, tmp_path):
    one_line_error(cli("render", organ(), "-o", tmp_path / "x.wav", "--set", "brightness=nan"),
                   "nan is not a value a control can take")
    p = cli("render", organ(), "-o", tmp_path / "x.wav", "--seconds", "0.1", "--set", "brightness=0.1",
            "--set", "brightness=0.3", check=0)
    assert "--set brightness given twice: 0.3 plays (the last one)" in p.stderr, p.stderr
    one_line_error(cli("info", "flute.onnx"), "the installed model is named 'flute'")


def test_card_warns_when_the_player_would_refuse_the_first_block(cli, tmp_path):
    """A card written for a model whose first block is NaN at its defaults was written without
    a word; render and run then refused it. The card is written (the defaults may be what
    needs editing) and one warning says what the player will say."""
    import onnx

    path = tmp_path / "nan.onnx"
    m = build_organ(path, fault="nan")
    del m.metadata_props[:]
    onnx.save(m, path)
    p = cli("card", path, "--init", check=0)
    assert "WARNING: its first block at the card's defaults and zero state is not finite" in p.stderr, p.stderr
    p = cli("card", path, "--set", "name=mine", check=0)
    assert "not finite" in p.stderr
    good = tmp_path / "good.onnx"
    m = build_organ(good)
    del m.metadata_props[:]
    onnx.save(m, good)
    assert "WARNING" not in cli("card", good, "--init", check=0).stderr


def test_card_init_pairs_torch_recurrent_state_by_name(cli, tmp_path):
    """torch's LSTM names its state h0, c0 in and hn, cn out, and an exporter may write the
    outputs in another order: paired in order it was h0 → cn, which plays garbage."""
    import onnx
    from onnx import TensorProto, helper

    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Identity", ["h0"], ["hn"]), helper.make_node("Identity", ["c0"], ["cn"]),
             helper.make_node("Constant", [], ["s"], value=helper.make_tensor("s", TensorProto.INT64, [3], [1, 1, 256])),
             helper.make_node("ConstantOfShape", ["s"], ["audio"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))]
    g = helper.make_graph(nodes, "lstm", [vi("controls", TensorProto.FLOAT, [1, 2, 1]),
                                          vi("h0", TensorProto.FLOAT, [1, 1, 8]), vi("c0", TensorProto.FLOAT, [1, 1, 8])],
                          [vi("audio", TensorProto.FLOAT, [1, 1, 256]), vi("cn", TensorProto.FLOAT, [1, 1, 8]),
                           vi("hn", TensorProto.FLOAT, [1, 1, 8])])
    path = tmp_path / "lstm.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    cli("card", path, "--init", check=0)
    assert json.loads(cli("card", path, check=0).stdout)["state"] == [["h0", "hn"], ["c0", "cn"]]
    # the same with the names a module path gives them, and with a bare input and X_out / X_next
    # (a state the shape of the audio, listed first, was taken for it)
    for names, want in (({"h0": "lstm.h0", "c0": "lstm.c0", "hn": "lstm.hn", "cn": "lstm.cn"},
                         [["lstm.h0", "lstm.hn"], ["lstm.c0", "lstm.cn"]]),
                        ({"h0": "h", "c0": "c", "hn": "h_out", "cn": "c_out"}, [["h", "h_out"], ["c", "c_out"]]),
                        ({"h0": "mem", "c0": "c", "hn": "mem_next", "cn": "c_next"}, [["mem", "mem_next"], ["c", "c_next"]])):
        m = onnx.load(path)
        del m.metadata_props[:]
        for vi in list(m.graph.input) + list(m.graph.output):
            vi.name = names.get(vi.name, vi.name)
        for node in m.graph.node:
            node.input[:] = [names.get(x, x) for x in node.input]
            node.output[:] = [names.get(x, x) for x in node.output]
        other = tmp_path / "renamed.onnx"
        onnx.save(m, other)
        cli("card", other, "--init", "--force", check=0)
        assert json.loads(cli("card", other, check=0).stdout)["state"] == want, names
