"""The model card: what a ``.onnx`` file must say about itself to be played.

The card is JSON in the ONNX ``metadata_props`` under the key ``pi_synth``
(see ``docs/model-format.md``). It is parsed and checked here, without onnxruntime,
so every error can name the key that is wrong. :func:`check_graph` then checks the
card against the graph's real inputs and outputs. :func:`load_card` and
:func:`write_card` are the one place a card is read from or written to a file (the
converter, the quantizer and ``pi-synth card`` all write through it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from pi_synth.errors import CardError
from pi_synth.model.onnxfile import read_metadata, write_metadata

CARD_KEY = "pi_synth"
FORMAT = 1
CURVES = ("lin", "log", "exp")
KINDS = ("note", "latent", "rave")

MAX_BLOCK = 1 << 16
MAX_STATE_ELEMENTS = 1 << 26  # 256 MB of float32: anything above is a broken file


@dataclass(frozen=True)
class Control:
    """One model input the player can move: a name, a unit and a range."""

    name: str
    min: float
    max: float
    default: float
    unit: str = ""
    curve: str = "lin"
    description: str = ""

    def clamp(self, value: float) -> float:
        lo, hi = (self.min, self.max) if self.min <= self.max else (self.max, self.min)
        return min(max(value, lo), hi)

    def from_unit(self, x: float) -> float:
        """Map 0..1 (a knob) onto the control's range along its curve."""
        x = min(max(x, 0.0), 1.0)
        if self.curve == "log" and self.min > 0 and self.max > 0:
            return self.min * (self.max / self.min) ** x
        if self.curve == "exp":
            x = x * x
        return self.min + (self.max - self.min) * x

    def to_unit(self, value: float) -> float:
        """Inverse of :meth:`from_unit`."""
        if self.max == self.min:
            return 0.0
        if self.curve == "log" and self.min > 0 and self.max > 0 and value > 0:
            x = math.log(value / self.min) / math.log(self.max / self.min)
        else:
            x = (value - self.min) / (self.max - self.min)
            if self.curve == "exp":
                x = math.sqrt(min(max(x, 0.0), 1.0))
        return min(max(x, 0.0), 1.0)


@dataclass(frozen=True)
class Card:
    """A validated model card."""

    name: str
    sample_rate: int
    block_size: int
    channels: int
    control_frames: int
    controls: tuple[Control, ...]
    controls_input: str
    audio_output: str
    state: tuple[tuple[str, str], ...]
    kind: str = ""
    description: str = ""
    latency_samples: int = 0
    license: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def control_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.controls)

    def control(self, name: str) -> Control:
        for c in self.controls:
            if c.name == name:
                return c
        raise KeyError(
            f"model {self.name!r} has no control {name!r}; its controls are: "
            + ", ".join(self.control_names)
        )

    def index(self, name: str) -> int:
        return self.control_names.index(self.control(name).name)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.extra)
        d.update(
            format=FORMAT,
            name=self.name,
            description=self.description,
            sample_rate=self.sample_rate,
            block_size=self.block_size,
            channels=self.channels,
            control_frames=self.control_frames,
            controls=[
                {k: v for k, v in vars(c).items() if v != "" or k in ("name", "unit")}
                for c in self.controls
            ],
            inputs={"controls": self.controls_input},
            outputs={"audio": self.audio_output},
            state=[list(p) for p in self.state],
            latency_samples=self.latency_samples,
            license=self.license,
            source=self.source,
        )
        if self.kind:
            d["kind"] = self.kind
        return d


def _need(d: dict, key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise CardError(f"{where}: card key {key!r} is missing")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, types):
        names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        raise CardError(f"{where}: card key {key!r} must be {names}, got {v!r}")
    return v


def _int_in(d: dict, key: str, lo: int, hi: int, where: str, default: int | None = None) -> int:
    if default is not None and key not in d:
        return default
    v = _need(d, key, int, where)
    if not lo <= v <= hi:
        raise CardError(f"{where}: card key {key!r} must be in {lo}..{hi}, got {v}")
    return v


def _num(d: dict, key: str, where: str) -> float:
    v = float(_need(d, key, (int, float), where))
    if not math.isfinite(v):
        raise CardError(f"{where}: card key {key!r} must be a finite number, got {v!r}")
    return v


def parse_card(text: str | bytes | None, where: str = "model") -> Card:
    """Parse and validate card JSON; ``where`` names the file in errors."""
    if text is None:
        raise CardError(
            f"{where}: no pi-synth model card (ONNX metadata key {CARD_KEY!r}); write one with "
            f"'pi-synth card {where} --init' (it guesses from the graph) or re-export the model"
        )
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CardError(f"{where}: model card is not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise CardError(f"{where}: model card must be a JSON object")
    fmt = _need(d, "format", int, where)
    if fmt != FORMAT:
        raise CardError(
            f"{where}: card key 'format' is {fmt}, this pi-synth reads format {FORMAT}; "
            "update pi-synth or re-export the model"
        )
    name = _need(d, "name", str, where)
    sample_rate = _int_in(d, "sample_rate", 8000, 384000, where)
    block_size = _int_in(d, "block_size", 1, MAX_BLOCK, where)
    channels = _int_in(d, "channels", 1, 2, where)
    control_frames = _int_in(d, "control_frames", 1, MAX_BLOCK, where)
    latency = _int_in(d, "latency_samples", 0, 10 * sample_rate, where, default=0)

    raw_controls = _need(d, "controls", list, where)
    controls = []
    seen = set()
    for i, c in enumerate(raw_controls):
        cw = f"{where}: controls[{i}]"
        if not isinstance(c, dict):
            raise CardError(f"{cw} must be an object with name, min, max, default")
        cname = _need(c, "name", str, cw)
        if not cname or cname in seen:
            raise CardError(f"{cw}: control name {cname!r} is empty or repeated")
        seen.add(cname)
        lo, hi, default = _num(c, "min", cw), _num(c, "max", cw), _num(c, "default", cw)
        if not min(lo, hi) <= default <= max(lo, hi):
            raise CardError(f"{cw}: 'default' {default} is outside min..max {lo}..{hi}")
        curve = c.get("curve", "lin")
        if curve not in CURVES:
            raise CardError(f"{cw}: 'curve' must be one of {', '.join(CURVES)}, got {curve!r}")
        if curve == "log" and (lo <= 0 or hi <= 0):
            raise CardError(f"{cw}: a 'log' curve needs min and max > 0")
        controls.append(
            Control(
                name=cname, min=lo, max=hi, default=default, unit=str(c.get("unit", "")),
                curve=curve, description=str(c.get("description", "")),
            )
        )

    inputs = _need(d, "inputs", dict, where)
    outputs = _need(d, "outputs", dict, where)
    controls_input = _need(inputs, "controls", str, f"{where}: inputs")
    audio_output = _need(outputs, "audio", str, f"{where}: outputs")
    raw_state = d.get("state", [])
    if not isinstance(raw_state, list):
        raise CardError(f"{where}: card key 'state' must be a list of [input, output] pairs")
    state = []
    for i, pair in enumerate(raw_state):
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(p, str) and p for p in pair)
        ):
            raise CardError(f"{where}: state[{i}] must be [input_name, output_name], got {pair!r}")
        state.append((pair[0], pair[1]))
    names_in = [controls_input] + [p[0] for p in state]
    names_out = [audio_output] + [p[1] for p in state]
    for names, what in ((names_in, "input"), (names_out, "output")):
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise CardError(f"{where}: graph {what} {sorted(dup)[0]!r} is named twice in the card")
    kind = d.get("kind", "")
    if not isinstance(kind, str):
        raise CardError(f"{where}: card key 'kind' must be a string")
    known = {
        "format", "name", "description", "sample_rate", "block_size", "channels",
        "control_frames", "controls", "inputs", "outputs", "state", "latency_samples",
        "license", "source", "kind",
    }
    return Card(
        name=name, sample_rate=sample_rate, block_size=block_size, channels=channels,
        control_frames=control_frames, controls=tuple(controls),
        controls_input=controls_input, audio_output=audio_output, state=tuple(state),
        kind=kind, description=str(d.get("description", "")), latency_samples=latency,
        license=str(d.get("license", "")), source=str(d.get("source", "")),
        extra={k: v for k, v in d.items() if k not in known},
    )


def load_card(path) -> Card:
    """Read and validate the card of a model file without building a session."""
    import os

    path = os.fspath(path)
    return parse_card(read_metadata(path).get(CARD_KEY), where=path)


def card_json(path) -> dict[str, Any]:
    """The card of a model file as JSON, unvalidated (tools that edit cards start here)."""
    import os

    path = os.fspath(path)
    text = read_metadata(path).get(CARD_KEY)
    if text is None:
        raise CardError(f"{path}: no pi-synth model card (ONNX metadata key {CARD_KEY!r})")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise CardError(f"{path}: model card is not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise CardError(f"{path}: model card must be a JSON object")
    return d


def write_card(path, card: "Card | dict[str, Any]", *, producer: str | None = None) -> None:
    """Write ``card`` into the model file at ``path`` (replacing any card it had),
    atomically. A dict is validated first, so a file never gets a card it would refuse."""
    d = card.to_json() if isinstance(card, Card) else dict(card)
    text = json.dumps(d)
    parse_card(text, where=str(path))
    write_metadata(path, CARD_KEY, text, producer=producer)


# ONNX element types as onnxruntime names them → numpy dtype names.
ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(float16)": "float16",
}


VOICES_DIM = "voices"  # a note model's batch of voices (card "voices"): the mono path runs one row


def _shape(arg, where: str, what: str) -> tuple[int, ...]:
    shape = []
    for i, d in enumerate(arg.shape):
        if i == 0 and d == VOICES_DIM:
            d = 1
        if not isinstance(d, int) or d < 0:
            raise CardError(
                f"{where}: graph {what} {arg.name!r} has a dynamic shape {arg.shape}; "
                "export it with fixed shapes (batch 1, fixed block) so onnxruntime can plan memory"
            )
        shape.append(d)
    return tuple(shape)


def check_graph(card: Card, inputs, outputs, where: str = "model") -> dict[str, tuple]:
    """Check the card against onnxruntime's ``get_inputs()``/``get_outputs()``.

    Returns ``{name: (shape, dtype)}`` for every graph input and output.
    """
    ins = {a.name: a for a in inputs}
    outs = {a.name: a for a in outputs}
    specs: dict[str, tuple] = {}

    def spec(arg, what):
        dtype = ORT_TYPES.get(arg.type)
        if dtype is None:
            raise CardError(f"{where}: graph {what} {arg.name!r} has unsupported type {arg.type}")
        return _shape(arg, where, what), dtype

    if card.controls_input not in ins:
        raise CardError(
            f"{where}: card inputs.controls names {card.controls_input!r}, but the graph's inputs "
            f"are {sorted(ins)}"
        )
    shape, dtype = spec(ins[card.controls_input], "input")
    want = (1, len(card.controls), card.control_frames)
    if shape != want or dtype != "float32":
        raise CardError(
            f"{where}: graph input {card.controls_input!r} is {dtype} {list(shape)}, the card says "
            f"float32 {list(want)} (1, len(controls), control_frames)"
        )
    specs[card.controls_input] = (shape, dtype)
    if card.audio_output not in outs:
        raise CardError(
            f"{where}: card outputs.audio names {card.audio_output!r}, but the graph's outputs "
            f"are {sorted(outs)}"
        )
    shape, dtype = spec(outs[card.audio_output], "output")
    want = (1, card.channels, card.block_size)
    if shape != want or dtype != "float32":
        raise CardError(
            f"{where}: graph output {card.audio_output!r} is {dtype} {list(shape)}, the card says "
            f"float32 {list(want)} (1, channels, block_size)"
        )
    specs[card.audio_output] = (shape, dtype)
    total = 0
    for s_in, s_out in card.state:
        if s_in not in ins:
            raise CardError(f"{where}: state input {s_in!r} from the card is not a graph input")
        if s_out not in outs:
            raise CardError(f"{where}: state output {s_out!r} from the card is not a graph output")
        a, b = spec(ins[s_in], "input"), spec(outs[s_out], "output")
        if a != b:
            raise CardError(
                f"{where}: state pair {s_in!r} → {s_out!r} disagrees: {a[1]} {list(a[0])} "
                f"vs {b[1]} {list(b[0])}"
            )
        total += math.prod(a[0])
        specs[s_in], specs[s_out] = a, b
    if total > MAX_STATE_ELEMENTS:
        raise CardError(f"{where}: state holds {total} elements, more than any playable model")
    extra_in = sorted(set(ins) - set(specs))
    if extra_in:
        raise CardError(
            f"{where}: graph input {extra_in[0]!r} is neither the controls input nor a state input "
            "in the card; add it to the card's 'state' or remove it from the graph"
        )
    for name in sorted(set(outs) - set(specs)):
        specs[name] = spec(outs[name], "output")  # extra outputs are computed and ignored
    return specs
