"""The model card: what a ``.onnx`` file must say about itself to be played.

The card is JSON in the ONNX ``metadata_props`` under the key ``pi_synth``
(see ``docs/model-format.md``). It is parsed and checked here, without onnxruntime,
so every error can name the key that is wrong.

Which input a model takes is said by its card: controls (``inputs.controls``: knobs,
notes), audio (``inputs.audio``: an effect, or an encoder), or both; and what it gives:
audio (``outputs.audio``) or latents (``outputs.latent``: an encoder, whose
``latent_controls`` name the decoder controls it writes). A decoder names its encoder with
a top-level ``encoder`` (a file beside it). :func:`check_graph` then checks the
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
KINDS = ("note", "latent", "rave", "encoder")
ENCODER_KINDS = ("encoder", "rave-encoder")  # "rave-encoder": the first converter's cards

MAX_BLOCK = 1 << 16
MAX_VOICES = 256  # rows one batched note model may play at once
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

    def refuse(self, value: float) -> str | None:
        """Why ``value`` (typed by a user: ``--set``, an events file) is not one this control
        takes, in words — or None. Live sources are clamped instead (:meth:`clamp`)."""
        lo, hi = (self.min, self.max) if self.min <= self.max else (self.max, self.min)
        if math.isfinite(value) and lo <= value <= hi:
            return None
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.name} = {value:g} is outside its range {lo:g}..{hi:g}{unit}"

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
    voices: int = 1  # rows of a batched note model (leading graph dimension "voices"); 1 = mono
    license: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    audio_input: str = ""  # inputs.audio: float32 [1, 1, block_size] (an effect, an encoder)
    latent_output: str = ""  # outputs.latent: float32 [1, len(latent_controls), control_frames]
    latent_controls: tuple[str, ...] = ()  # an encoder: the decoder controls it writes, in order
    encoder: str = ""  # a decoder: its encoder's file name, beside it

    @property
    def control_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.controls)

    @property
    def export_digest(self) -> str:
        """The sha256 of the export a converted model was made from ("" if none is known): two
        files that differ here are not one model (an encoder and its decoder, two precisions)."""
        return str(self.extra.get("rave", {}).get("ts_sha256") or "")

    @property
    def is_encoder(self) -> bool:
        """Audio in, latents out: drives a decoder from audio; never played by itself."""
        return bool(self.latent_output)

    @property
    def takes_audio(self) -> bool:
        """The model takes audio itself (an effect, or an encoder)."""
        return bool(self.audio_input)

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
            inputs={k: v for k, v in (("controls", self.controls_input), ("audio", self.audio_input)) if v},
            outputs={k: v for k, v in (("audio", self.audio_output), ("latent", self.latent_output)) if v},
            state=[list(p) for p in self.state],
            latency_samples=self.latency_samples,
            license=self.license,
            source=self.source,
        )
        if self.kind:
            d["kind"] = self.kind
        if self.voices > 1:
            d["voices"] = self.voices
        if self.latent_output:
            d["latent_controls"] = list(self.latent_controls)
        if self.encoder:
            d["encoder"] = self.encoder
        return d


def _need(d: dict, key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        import difflib

        near = difflib.get_close_matches(key, [k for k in d if isinstance(k, str)], n=1, cutoff=0.75)
        raise CardError(f"{where}: card key {key!r} is missing" + (f" (the card has {near[0]!r}: a typo?)" if near else ""))
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


def no_card_said(where: str) -> str:
    """The one line for a file with no card, and how to give it one."""
    return (f"{where}: no pi-synth model card (ONNX metadata key {CARD_KEY!r}); write one with "
            f"'pi-synth card {where} --init' (it guesses from the graph) or re-export the model")


def parse_card(text: str | bytes | None, where: str = "model") -> Card:
    """Parse and validate card JSON; ``where`` names the file in errors."""
    if text is None:
        raise CardError(no_card_said(where))
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
    voices = _int_in(d, "voices", 1, MAX_VOICES, where, default=1)

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
    kind = d.get("kind", "")
    if not isinstance(kind, str):
        raise CardError(f"{where}: card key 'kind' must be a string")
    audio_input = _opt_name(inputs, "audio", f"{where}: inputs")
    latent_output = _opt_name(outputs, "latent", f"{where}: outputs")
    if kind in ENCODER_KINDS and not latent_output:
        raise CardError(f"{where}: an encoder card needs outputs.latent (the graph output its latents leave by)")
    if latent_output:
        # an encoder: audio in, latents out. The first converter also named its input
        # "controls" and its output "audio" (the same tensors): those names are read as these
        if not audio_input:
            raise CardError(f"{where}: card outputs.latent needs inputs.audio (an encoder takes audio)")
        controls_input = "" if inputs.get("controls") in (None, audio_input) else \
            _need(inputs, "controls", str, f"{where}: inputs")
        audio_output = "" if outputs.get("audio") in (None, latent_output) else \
            _need(outputs, "audio", str, f"{where}: outputs")
        if audio_output:
            raise CardError(f"{where}: an encoder card has outputs.latent, not outputs.audio too")
    else:
        if "controls" not in inputs and audio_input:
            controls_input = ""  # an effect with no controls of its own
        else:
            controls_input = _need(inputs, "controls", str, f"{where}: inputs")
        audio_output = _need(outputs, "audio", str, f"{where}: outputs")
    if not controls_input and controls:
        raise CardError(f"{where}: the card lists controls but no inputs.controls to feed them to")
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
    names_in = [n for n in (controls_input, audio_input) if n] + [p[0] for p in state]
    names_out = [n for n in (audio_output, latent_output) if n] + [p[1] for p in state]
    for names, what in ((names_in, "input"), (names_out, "output")):
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise CardError(f"{where}: graph {what} {sorted(dup)[0]!r} is named twice in the card")
    latent_controls: tuple[str, ...] = ()
    if latent_output:
        raw_lc = d.get("latent_controls", [])
        if not isinstance(raw_lc, list) or not all(isinstance(n, str) and n for n in raw_lc) \
                or len(set(raw_lc)) != len(raw_lc):
            raise CardError(f"{where}: card key 'latent_controls' must be a list of distinct control names")
        latent_controls = tuple(raw_lc)
    encoder = d.get("encoder") or ""
    if not isinstance(encoder, str) or "/" in encoder or encoder in (".", ".."):
        raise CardError(f"{where}: card key 'encoder' must be the file name of the encoder beside the model")
    known = {
        "format", "name", "description", "sample_rate", "block_size", "channels",
        "control_frames", "controls", "inputs", "outputs", "state", "latency_samples",
        "license", "source", "kind", "voices", "latent_controls", "encoder",
    }
    return Card(
        name=name, sample_rate=sample_rate, block_size=block_size, channels=channels,
        control_frames=control_frames, controls=tuple(controls),
        controls_input=controls_input, audio_output=audio_output, state=tuple(state),
        kind=kind, description=str(d.get("description", "")), latency_samples=latency, voices=voices,
        license=str(d.get("license", "")), source=str(d.get("source", "")),
        extra={k: v for k, v in d.items() if k not in known},
        audio_input=audio_input, latent_output=latent_output, latent_controls=latent_controls,
        encoder=encoder,
    )


def _opt_name(d: dict, key: str, where: str) -> str:
    """An optional graph tensor name (``inputs.audio``, ``outputs.latent``): "" when absent."""
    if key not in d:
        return ""
    v = d[key]
    if not isinstance(v, str) or not v:
        raise CardError(f"{where}: card key {key!r} must be a graph tensor name, got {v!r}")
    return v


def load_card(path) -> Card:
    """Read and validate the card of a model file without building a session."""
    import os

    path = os.fspath(path)
    meta = read_metadata(path)
    if CARD_KEY not in meta:
        _near_card_key(meta, path)
    return parse_card(meta.get(CARD_KEY), where=path)


def _near_card_key(meta: dict, where: str) -> None:
    """A card stored under another spelling of the key (``pi-synth``, ``PI_SYNTH``): say so."""
    for k in meta:
        if k != CARD_KEY and k.lower().replace("-", "_").replace(" ", "_") in (CARD_KEY, "pisynth", "pi_synth_card"):
            raise CardError(f"{where}: the model card is stored under the metadata key {k!r}; the player reads "
                            f"{CARD_KEY!r}: write it again with 'pi-synth card {where} --from CARD.json' or rename "
                            "the key in your export")


def card_json(path) -> dict[str, Any]:
    """The card of a model file as JSON, unvalidated (tools that edit cards start here)."""
    import os

    path = os.fspath(path)
    meta = read_metadata(path)
    text = meta.get(CARD_KEY)
    if text is None:
        _near_card_key(meta, path)
        raise CardError(no_card_said(path))
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


def _dynamic(d) -> bool:
    return not isinstance(d, int) or d < 0


def _shape(arg, where: str, what: str, batched: bool = False) -> tuple[int, ...]:
    """The tensor's shape; for a batched tensor (a card with ``voices`` > 1) the shape of
    one voice: the dynamic leading dimension as 1."""
    dims = list(arg.shape)
    if batched:
        if not dims or not _dynamic(dims[0]):
            raise CardError(
                f"{where}: graph {what} {arg.name!r} has shape {arg.shape}, but the card says "
                "\"voices\" > 1: export it with a dynamic leading dimension named 'voices' "
                "(one row per voice)"
            )
        dims[0] = 1
    shape = []
    for d in dims:
        if _dynamic(d):
            hint = ("; a batch of voices needs \"voices\": N in the card and the dynamic "
                    "dimension first" if dims and _dynamic(dims[0]) and not batched else "")
            raise CardError(
                f"{where}: graph {what} {arg.name!r} has a dynamic shape {arg.shape}; fix it in the file "
                f"('pi-synth card {where} --shape {arg.name}=1,…' writes the sizes the player uses) or "
                "export it with fixed shapes (batch 1, fixed block) so onnxruntime can plan memory"
                + hint
            )
        shape.append(d)
    return tuple(shape)


def check_graph(card: Card, inputs, outputs, where: str = "model") -> dict[str, tuple]:
    """Check the card against onnxruntime's ``get_inputs()``/``get_outputs()``.

    Returns ``{name: (shape, dtype)}`` for every graph input and output. For a batched
    note model (``voices`` > 1) the controls, the audio and every state tensor have a
    dynamic leading dimension, one row per voice; their shapes here are one voice's
    (leading 1), like a mono model's, and :func:`batched_outputs` names the extra outputs
    that have that leading dimension too.
    """
    ins = {a.name: a for a in inputs}
    outs = {a.name: a for a in outputs}
    specs: dict[str, tuple] = {}
    batched = card.voices > 1

    def spec(arg, what, rows=batched):
        dtype = ORT_TYPES.get(arg.type)
        if dtype is None:
            raise CardError(f"{where}: graph {what} {arg.name!r} has unsupported type {arg.type}")
        return _shape(arg, where, what, rows), dtype

    def need(name, table, key, want, what, meaning):
        """Check graph tensor ``name`` (the card's ``table.key``) is float32 ``want``."""
        pool = ins if table == "inputs" else outs
        if name not in pool:
            raise CardError(
                f"{where}: card {table}.{key} names {name!r}, but the graph's {table} are {sorted(pool)}"
            )
        shape, dtype = spec(pool[name], what)
        if want is not None and shape != want or dtype != "float32":
            raise CardError(
                f"{where}: graph {what} {name!r} is {dtype} {list(shape)}, the card says "
                f"float32 {list(want) if want else '[…]'} ({meaning})"
            )
        specs[name] = (shape, dtype)
        return shape

    if card.controls_input:
        need(card.controls_input, "inputs", "controls", (1, len(card.controls), card.control_frames),
             "input", "1, len(controls), control_frames")
    if card.audio_input:
        need(card.audio_input, "inputs", "audio", (1, 1, card.block_size), "input", "1, 1, block_size: mono")
    if card.audio_output:
        need(card.audio_output, "outputs", "audio", (1, card.channels, card.block_size),
             "output", "1, channels, block_size")
    if card.latent_output:
        k = len(card.latent_controls)
        shape = need(card.latent_output, "outputs", "latent", (1, k, card.control_frames) if k else None,
                     "output", "1, len(latent_controls), control_frames")
        if not k and (len(shape) != 3 or shape[0] != 1 or shape[2] != card.control_frames):
            raise CardError(
                f"{where}: graph output {card.latent_output!r} is {list(shape)}, the card says "
                f"[1, latents, {card.control_frames}] (1, latents, control_frames)"
            )
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
            f"{where}: graph input {extra_in[0]!r} is neither the controls or audio input nor a state "
            "input in the card; the player feeds only those: re-export without it (its value fixed inside "
            "forward), or, if the model carries it from block to block, pair it with that output in 'state'"
        )
    for name in sorted(set(outs) - set(specs)):  # extra outputs are computed and ignored
        a = outs[name]
        specs[name] = spec(a, "output", batched and bool(a.shape) and _dynamic(a.shape[0]))
    return specs


def batched_outputs(card: Card, outputs) -> set[str]:
    """Graph outputs with one row per voice (a batched model's dynamic leading dimension)."""
    if card.voices <= 1:
        return set()
    return {a.name for a in outputs if a.shape and _dynamic(a.shape[0])}
