"""The model card: parsing, every wrong key named, and the card checked against the graph."""

import json

import numpy as np
import onnx
import pytest

from pi_synth.model.card import parse_card
from pi_synth.model.onnxfile import parse_metadata, read_metadata
from pi_synth.model.runtime import Runtime
from pi_synth.model.card import load_card
from pi_synth.errors import CardError, ModelError
from pi_synth.tools.procedural import build_organ, organ_card


def card_json(**changes):
    d = organ_card(256, 48000)
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return json.dumps(d)


def test_valid_card_parses():
    c = parse_card(card_json())
    assert c.name == "organ" and c.block_size == 256 and c.control_names == ("pitch", "loudness", "brightness")
    assert c.state == (("phase_in", "phase_out"), ("prev_in", "prev_out"))
    pitch = c.control("pitch")
    assert pitch.from_unit(0) == pytest.approx(30) and pitch.from_unit(1) == pytest.approx(4000)
    assert pitch.to_unit(pitch.from_unit(0.37)) == pytest.approx(0.37)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"format": 2}, "'format'"),
        ({"format": None}, "'format' is missing"),
        ({"sample_rate": "48k"}, "'sample_rate' must be int"),
        ({"block_size": 0}, "'block_size' must be in"),
        ({"channels": 3}, "'channels'"),
        ({"controls": "pitch"}, "'controls' must be list"),
        ({"controls": [{"name": "x", "min": 0, "max": 1, "default": 2}]}, "'default' 2.0 is outside"),
        ({"controls": [{"name": "x", "min": 0, "max": 1, "default": 0, "curve": "log"}]}, "'log' curve"),
        ({"controls": [{"name": "x", "min": 0, "max": 1}]}, "'default' is missing"),
        ({"inputs": {}}, "'controls' is missing"),
        ({"state": [["a"]]}, "state[0]"),
        ({"state": [["a", "b"], ["a", "c"]]}, "'a' is named twice"),
    ],
)
def test_bad_card_names_the_key(changes, words):
    with pytest.raises(CardError) as e:
        parse_card(card_json(**changes), where="m.onnx")
    assert words in str(e.value) and str(e.value).startswith("m.onnx")


def test_not_json_and_missing_card():
    with pytest.raises(CardError, match="not valid JSON"):
        parse_card("{nope", "m.onnx")
    with pytest.raises(CardError, match="no pi-synth model card"):
        parse_card(None, "m.onnx")


def test_a_near_miss_is_named(tmp_path):
    """A card under the key ``pi-synth`` (the program's name) got "no model card"; a typo in
    a key got "'sample_rate' is missing" with no word of the key that was there."""
    from pi_synth.model.card import card_json as read_json

    m = build_organ()
    text = m.metadata_props[0].value
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, {"pi-synth": text})
    onnx.save(m, tmp_path / "a.onnx")
    for read in (load_card, read_json):
        with pytest.raises(CardError, match="stored under the metadata key 'pi-synth'; the player reads 'pi_synth'"):
            read(tmp_path / "a.onnx")
    card = json.loads(text)
    card["sampel_rate"] = card.pop("sample_rate")
    with pytest.raises(CardError, match=r"'sample_rate' is missing \(the card has 'sampel_rate': a typo\?\)"):
        parse_card(json.dumps(card), "m.onnx")


def test_metadata_reader_matches_onnx(organ):
    path = organ(block_size=128)
    meta = read_metadata(path)
    model = onnx.load(str(path))
    assert meta == {p.key: p.value for p in model.metadata_props}
    assert load_card(path).block_size == 128


@pytest.mark.parametrize("cut", [0, 10, 100, 0.5, -5])
def test_truncated_or_garbage_file_is_refused(organ, tmp_path, cut):
    data = organ().read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data[:n])
    with pytest.raises(ModelError) as e:
        Runtime(bad)
    assert "bad.onnx" in str(e.value)


def test_not_onnx_at_all(tmp_path):
    p = tmp_path / "song.onnx"
    p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    with pytest.raises(ModelError, match="song.onnx"):
        Runtime(p)
    with pytest.raises(ModelError, match="empty"):
        parse_metadata(b"", "x")


def _with_card(tmp_path, card: dict, **build):
    p = tmp_path / "m.onnx"
    build_organ(p, card=card, **build)
    return p


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda d: d.update(block_size=512), "audio"),
        (lambda d: d.update(control_frames=2), "'controls' is float32 [1, 3, 1]"),
        (lambda d: d["controls"].pop(), "the card says float32 [1, 2, 1]"),
        (lambda d: d.update(inputs={"controls": "ctl"}), "'ctl'"),
        (lambda d: d.update(outputs={"audio": "out"}), "'out'"),
        (lambda d: d.update(state=[["phase_in", "phase_out"]]), "'prev_in' is neither"),
        (lambda d: d.update(state=[["phase_in", "prev_out"], ["prev_in", "phase_out"]]), "disagrees"),
        (lambda d: d.update(channels=2), "channels"),
    ],
)
def test_card_that_disagrees_with_graph(tmp_path, mutate, words):
    card = organ_card(256, 48000)
    mutate(card)
    with pytest.raises(CardError) as e:
        Runtime(_with_card(tmp_path, card))
    assert words in str(e.value)


def test_dynamic_shapes_are_refused(tmp_path):
    p = tmp_path / "dyn.onnx"
    m = build_organ(None)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(m, str(p))
    with pytest.raises(CardError, match="dynamic shape"):
        Runtime(p)


def test_wrong_dtype_refused(tmp_path):
    m = build_organ(None)
    # declare the audio output as double: the card says float32
    m.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    p = tmp_path / "dt.onnx"
    onnx.save(m, str(p))
    with pytest.raises(ModelError):
        Runtime(p)
    assert np.float32  # the error is raised before any block runs
