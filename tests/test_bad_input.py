"""Bad input gets a clear error and loses nothing: fuzzed configs, broken models, garbage
MIDI on a live stream, and no code execution from config or model files."""

import json
import os
import re
import time
import tty
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pi_synth import config as config_mod
from pi_synth.model.runtime import Runtime
from pi_synth.audio.bank import ControlBank
from pi_synth.control.mapping import Mapping
from pi_synth.control.rig import Rig
from pi_synth.control.router import Router
from pi_synth.errors import CardError, ConfigError, ModelError
from pi_synth.tools.procedural import build_organ, organ_card

SRC = Path(__file__).resolve().parent.parent / "src" / "pi_synth"

# -- configs ----------------------------------------------------------------------------

toml_scalar = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(), st.text(max_size=12), st.lists(st.integers(-3, 20), max_size=4),
)
table_names = st.sampled_from(list(config_mod.SCHEMA) + list(config_mod.ARRAYS) + ["junk"])


def key_names(table):
    keys = list(config_mod.SCHEMA.get(table, {})) + list(config_mod.ARRAYS.get(table, {}))
    return st.sampled_from(keys + ["nonsense"]) if keys else st.just("nonsense")


def toml_value(v):
    return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")


@st.composite
def configs(draw):
    lines = []
    for table in draw(st.lists(table_names, max_size=4, unique=True)):
        header = f"[[{table}]]" if table in config_mod.ARRAYS else f"[{table}]"
        lines.append(header)
        for key in draw(st.lists(key_names(table), max_size=5, unique=True)):
            lines.append(f"{key} = {toml_value(draw(toml_scalar))}")
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_any_config_is_accepted_or_refused_with_file_and_key(text):
    try:
        cfg = config_mod.parse(text, "fuzz.toml")
    except ConfigError as e:
        msg = str(e)
        assert msg.startswith("fuzz.toml") and "\n" not in msg
        assert "key" in msg or "section" in msg or "TOML" in msg or "[[" in msg
    else:  # whatever it accepted has the schema's types
        for table, keys in config_mod.SCHEMA.items():
            for k, spec in keys.items():
                assert spec.check(cfg.values[table][k]) is None


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_binary_garbage_config(data):
    try:
        config_mod.parse(data.decode("utf-8", "replace"), "g.toml")
    except ConfigError as e:
        assert str(e).startswith("g.toml")


# -- models -----------------------------------------------------------------------------


def test_absurd_card_sizes_are_refused(tmp_path):
    card = organ_card(256, 48000)
    card["block_size"] = 1 << 24
    p = tmp_path / "huge.onnx"
    build_organ(p, card=card)
    with pytest.raises(CardError, match="block_size"):
        Runtime(p)


def test_absurd_state_is_refused_before_allocating(tmp_path):
    m = build_organ(None)
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.name in ("prev_in", "prev_out"):
            dims = vi.type.tensor_type.shape.dim
            dims[0].dim_value = 1 << 20
            dims[1].dim_value = 1 << 12
    p = tmp_path / "state.onnx"
    onnx.save(m, str(p))
    with pytest.raises(ModelError):
        Runtime(p)


@pytest.mark.parametrize("card_text", ["[]", "null", '{"format": 1}', "{" * 5000, '"' + "x" * 10000])
def test_garbage_cards(tmp_path, card_text):
    m = build_organ(None)
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, {"pi_synth": card_text})
    p = tmp_path / "g.onnx"
    onnx.save(m, str(p))
    with pytest.raises(CardError):
        Runtime(p)


# -- MIDI on a live byte stream ----------------------------------------------------------


def test_garbage_midi_on_din_never_stops_the_notes(organ):
    rt = Runtime(organ(), warmup_blocks=0)
    bank = ControlBank(rt.card)
    router = Router(rt.card, bank, Mapping(rt.card))
    master, slave = os.openpty()
    tty.setraw(slave)
    rig = Rig(router)
    src = rig.add("din", "din", device=os.ttyname(slave))
    rng = np.random.default_rng(7)
    junk = rng.integers(0, 256, 20000, dtype=np.uint8).tobytes()
    flood = bytes([0xF0]) + bytes(rng.integers(0, 128, 50000, dtype=np.uint8)) + bytes([0xF7])
    for chunk in (junk, flood, bytes([0x90, 64])):  # ends with a truncated message
        for i in range(0, len(chunk), 4096):
            os.write(master, chunk[i:i + 4096])
    os.write(master, bytes([0xB0, 123, 0, 0x90, 72, 100]))  # all notes off, then a clean note
    deadline = time.monotonic() + 10
    while router.voice.note != 72 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert router.voice.note == 72
    st_ = src.status()
    assert st_["errors"] == 0 and st_["parser_errors"] > 0
    rig.close()
    os.close(master)
    os.close(slave)


# -- security ---------------------------------------------------------------------------


def test_no_code_execution_paths_on_the_device():
    """Runtime code never unpickles, evals or runs a shell; models are ONNX only. The
    converter (desktop only, needs torch) is the one place that loads TorchScript."""
    bad = re.compile(r"\b(pickle|marshal|shelve|eval\(|exec\(|os\.system|shell=True|torch\.load|"
                     r"yaml\.load|__import__\()")
    offenders = []
    for path in SRC.rglob("*.py"):
        if "convert" in path.parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if bad.search(code):
                offenders.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_remote_interfaces_default_to_localhost():
    assert config_mod.load().osc.host == "127.0.0.1"
    from pi_synth.control.sources.osc import OscSource

    import inspect

    assert "127.0.0.1" in inspect.getsource(OscSource)
