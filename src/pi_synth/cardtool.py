"""``pi-synth card``: read, write and edit the model card inside an ``.onnx`` file.

For people bringing models made elsewhere: ``--init`` writes a starting card guessed from
the graph (its inputs and outputs: the audio output, the controls input, state pairs),
``--set KEY=VALUE`` edits one key (dotted paths reach into lists: ``controls.0.name``),
``--update FIELDS.json`` merges a few keys, ``--from CARD.json`` writes a whole card. Every write is checked the way the player
checks a file (the card's keys, then the card against the graph in onnxruntime) before
the file is touched, and is atomic; nothing here needs the ``onnx`` package, so it runs
on the Pi.

Exports from other tools are made playable on the way (``model/onnxrewrite.py``): weights
kept in a separate ``.onnx.data`` file are put inside (one file to copy), and dynamic
dimensions are fixed (a leading ``batch`` as 1, others from ``--shape NAME=1,4,1``), the
outputs' from one trial call.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

from pi_synth.errors import CardError, ConfigError, ModelError, PiSynthError

__all__ = ["starting_card", "set_key", "cmd_card"]


def _session(src):
    """A session on a model file, or on a model's bytes (a file being made playable)."""
    from pi_synth.model.session import open_session

    return open_session(src)


def _graph(src):
    sess = _session(src)
    return sess.get_inputs(), sess.get_outputs()


def _dynamic(dims) -> bool:
    return not all(isinstance(d, int) and d >= 0 for d in dims)


def parse_shapes(items) -> dict[str, list[int]]:
    """``--shape NAME=1,4,1`` → ``{"NAME": [1, 4, 1]}``."""
    shapes = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        try:
            dims = [int(d) for d in text.replace("x", ",").split(",")]
        except ValueError:
            dims = []
        if not sep or not name or not dims or any(d < 1 for d in dims):
            raise ConfigError(f"--shape {item!r}: use NAME=D,D,D with positive sizes, e.g. --shape controls=1,4,1")
        shapes[name.strip()] = dims
    return shapes


def playable_bytes(path, shapes: dict[str, list[int]], *, guess: bool) -> tuple[bytes | None, list[str]]:
    """The model at ``path`` made playable by the player's rules, and what was done, or
    (None, []) when it already is: external weights put inside; dynamic input dimensions
    fixed from ``shapes`` (or, with ``guess``, a leading one as 1; without, a leading one
    is left to the card: a batched model's voices), and the outputs' from one trial call
    with zeros."""
    import numpy as np

    from pi_synth.model.card import ORT_TYPES
    from pi_synth.model.onnxrewrite import external_files, fix_dims, inline_external_data

    where = os.fspath(path)
    data = Path(path).read_bytes()
    said: list[str] = []
    ext = external_files(data, where)
    if ext:
        data = inline_external_data(data, Path(path).parent, where)
        said.append(f"its weights ({', '.join(ext)}) are now inside the file")
    sess = _session(data)
    inputs = {a.name: a for a in sess.get_inputs()}
    unknown = sorted(set(shapes) - set(inputs))
    if unknown:
        raise ConfigError(f"--shape {unknown[0]}: not a graph input; the inputs are {sorted(inputs)}")
    fixed: dict[str, list[int]] = {}
    for name, a in inputs.items():
        dims = list(a.shape)
        if name in shapes:
            want = shapes[name]
            if len(want) != len(dims) or any(isinstance(d, int) and d >= 0 and d != w for d, w in zip(dims, want)):
                raise ConfigError(f"--shape {name}={','.join(map(str, want))}: the graph's {name!r} is {dims}")
            if _dynamic(dims):
                fixed[name] = want
        elif _dynamic(dims):
            if not _dynamic(dims[1:]) and not guess:
                continue  # a batched model's voices (a card with "voices" > 1): the card check decides
            if guess and not _dynamic(dims[1:]):
                fixed[name] = [1, *dims[1:]]
            else:
                example = ",".join(str(d) if isinstance(d, int) and d >= 0 else ("1" if i == 0 else "N")
                                   for i, d in enumerate(dims))
                raise CardError(f"{where}: graph input {name!r} has a dynamic shape {dims}; say the shape the "
                                f"player should use, e.g. --shape {name}={example}")
    if fixed:
        data = fix_dims(data, fixed, where)
        # an input left dynamic (a batched model's voices) runs its trial with one row
        feeds = {n: np.zeros(fixed.get(n) or [d if isinstance(d, int) and d > 0 else 1 for d in a.shape],
                             dtype=ORT_TYPES.get(a.type, "float32"))
                 for n, a in inputs.items()}
        trial = _session(data)
        try:
            results = trial.run(None, feeds)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CardError(f"{where}: with the shapes {fixed} the graph does not run ({msg}); "
                            "give the right ones with --shape NAME=D,D,D") from None
        declared = {a.name for a in sess.get_outputs() if _dynamic(a.shape)}
        outs = {a.name: list(r.shape) for a, r in zip(trial.get_outputs(), results) if a.name in declared}
        data = fix_dims(data, outs, where)
        said.append("dynamic dimensions fixed: " + ", ".join(f"{n} {v}" for n, v in {**fixed, **outs}.items()))
    return (data, said) if said else (None, [])


def _fixed(arg, where):
    dims = list(arg.shape)
    if not all(isinstance(d, int) and d >= 0 for d in dims):
        raise CardError(f"{where}: graph {arg.name!r} has a dynamic shape {dims}; export it with fixed "
                        "shapes (batch 1, a fixed block) before writing a card")
    return dims


def _stem(name: str) -> str:
    """A tensor's name without its in/out words, to pair a state input with its output; and
    without torch's recurrent suffixes (``h0``/``c0`` in, ``hn``/``cn`` out)."""
    s = re.sub(r"(^|[_.\-/])(in|input|out|output|next|new)(?=$|[_.\-/\d])", r"\1", name.lower())
    m = re.fullmatch(r"(.*[_./\-])?([a-z])_?[0n]", s) or re.fullmatch(r"(.*[_./\-])?([a-z]+)_[0n]", s)
    return (m.group(1) or "") + m.group(2) if m else s


def starting_card(path, *, sample_rate: int = 48000, name: str | None = None) -> dict:
    """A card guessed from the graph of ``path`` (a file, or a model's bytes): an input and
    an output of the same shape are a state pair (paired by name, else in order); then

    - a float output ``[1, channels, block]`` is the audio; a float input ``[1, 1, block]``
      beside it is an audio input (an effect); the remaining float input ``[1, C, F]`` is
      the controls (``c0``…, range -1..1: rename and re-range them with ``--set``);
    - with no such output, a float input ``[1, 1, block]`` and an output ``[1, K, F]`` make
      an encoder (its K latents drive the decoder's first K controls)."""
    where = os.fspath(path) if not isinstance(path, bytes) else (name or "model")
    inputs, outputs = _graph(path)
    ins = {a.name: (_fixed(a, where), a.type) for a in inputs}
    outs = {a.name: (_fixed(a, where), a.type) for a in outputs}
    def float3(spec) -> bool:
        return len(spec[0]) == 3 and spec[0][0] == 1 and spec[1] == "tensor(float)"

    def sounds(spec) -> bool:  # could be the audio output
        return float3(spec) and spec[0][1] in (1, 2) and spec[0][2] >= 16

    def named_pair(i: str, o: str) -> bool:
        """cache_in/cache_out, h/h_out, mem/mem_next, lstm.h0/lstm.hn: the output named as the
        input's next value. Not audio_in/audio nor audio_in/audio_out (an effect's sound)."""
        si, so = _stem(i).strip("_./-"), _stem(o).strip("_./-")
        return si == so and _stem(o) != o.lower() and so not in ("audio", "sound", "signal", "wav", "")

    state, used_in, used_out = [], set(), set()
    for by_name in (True, False):  # pairs named alike first (cache_in/cache_out), then by order
        for i_name, spec in ins.items():
            if i_name in used_in:
                continue
            for o, ospec in outs.items():
                if ospec != spec or o in used_out or (by_name and not named_pair(i_name, o)):
                    continue
                if not by_name and sounds(ospec) and sum(sounds(outs[x]) for x in outs if x not in used_out) == 1:
                    continue  # the last output that could be the audio is not taken for state by order
                state.append([i_name, o])
                used_in.add(i_name)
                used_out.add(o)
                break
    free_in = [n for n in ins if n not in used_in]
    free_out = [n for n in outs if n not in used_out]
    for kinds, word in ((("tensor(float16)", "tensor(bfloat16)"), "float16"), (("tensor(double)",), "float64")):
        odd = [n for n in [*free_in, *free_out] if (ins.get(n) or outs.get(n))[1] in kinds]
        if odd:
            raise CardError(f"{where}: {', '.join(odd)} {'is' if len(odd) == 1 else 'are'} {word}; pi-synth feeds "
                            "and reads float32: export the model in float32 (model.float() before torch.onnx.export)"
                            + (", then 'pi-synth quantize' makes it small and fast" if word == "float16" else ""))

    audio = [n for n in free_out if sounds(outs[n])]
    card = {
        "format": 1,
        "name": name or Path(where).name.split(".")[0],
        "description": "card written by 'pi-synth card --init': check the controls' names, ranges and the sample rate",
        "sample_rate": sample_rate,
    }
    tail = {"state": state, "latency_samples": 0, "license": "", "source": ""}
    sound_in = [n for n in free_in if float3(ins[n]) and ins[n][0][1] == 1 and ins[n][0][2] >= 16]
    if not audio and len(free_in) == 1 and len(sound_in) == 1 and len(free_out) == 1 and float3(outs[free_out[0]]):
        (_, k, frames), block = outs[free_out[0]][0], ins[sound_in[0]][0][2]
        card["description"] = (f"encoder card written by 'pi-synth card --init' ({k} latents, driving the "
                               "decoder's first controls): check the sample rate")
        return {**card, "kind": "encoder", "block_size": block, "channels": 1, "control_frames": frames,
                "controls": [], "inputs": {"audio": sound_in[0]}, "outputs": {"latent": free_out[0]}, **tail}
    if len(audio) != 1:
        flat = [n for n in free_out if outs[n][1] == "tensor(float)" and 1 <= len(outs[n][0]) <= 2
                and outs[n][0][-1] >= 16 and math.prod(outs[n][0]) == outs[n][0][-1]]
        fix = (f"re-export with a channel axis: {flat[0]} is {list(outs[flat[0]][0])}, pi-synth reads [1, channels, "
               "block] (audio.reshape(1, 1, -1) at the end of forward)" if flat and not audio
               else "write the card with --from CARD.json")
        raise CardError(f"{where}: cannot tell the audio output (want one float output [1, channels, block] "
                        f"with 1 or 2 channels and a block of at least 16 samples; outputs not paired with an input: "
                        f"{ {n: outs[n][0] for n in free_out} }); {fix}")
    _, ch, block = outs[audio[0]][0]
    effect_in = [n for n in sound_in if ins[n][0][2] == block]
    rest = [n for n in free_in if n not in effect_in]
    controls = [n for n in rest if float3(ins[n])]
    if len(effect_in) > 1 or len(controls) > 1 or len(rest) != len(controls) or not (controls or effect_in):
        others = [n for n in rest if n not in controls]
        if len(controls) == 1 and others:
            fix = (f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} not a controls, audio or state input "
                   "(the player feeds only those): re-export without it, its value fixed inside forward")
        elif len(rest) > 1 and all(ins[n][1] == "tensor(float)" for n in rest):
            fix = ("re-export with one input for them all: the model's controls are one [1, controls, frames] "
                   f"tensor (e.g. torch.cat([{', '.join(rest)}], dim=1) given as one input, split inside forward)")
        else:
            fix = "write the card with --from CARD.json"
        raise CardError(f"{where}: cannot tell the controls input (want one float input [1, controls, frames] "
                        f"besides the state inputs and an audio input [1, 1, {block}]; found {free_in}); {fix}")
    n_ctl, frames = ins[controls[0]][0][1:] if controls else (0, 1)
    io = {"controls": controls[0]} if controls else {}
    if effect_in:
        io["audio"] = effect_in[0]
        card["description"] = ("effect card written by 'pi-synth card --init' (audio in → audio out): check the "
                               "controls' names, ranges and the sample rate")
    return {
        **card,
        "block_size": block,
        "channels": ch,
        "control_frames": frames,
        "controls": [{"name": f"c{i}", "unit": "", "min": -1.0, "max": 1.0, "default": 0.0, "curve": "lin"}
                     for i in range(n_ctl)],
        "inputs": io,
        "outputs": {"audio": audio[0]},
        **tail,
    }


def _value(text: str):
    """A --set value: JSON when it parses (numbers, true, lists, objects), a string otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_key(card: dict, dotted: str, value) -> None:
    """Set ``card[a][b][0]…`` for ``dotted`` = ``a.b.0``; lists take indices."""
    parts = dotted.split(".")
    node = card
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            try:
                k = int(part)
                node[k]  # noqa: B018 - checks the index exists
            except (ValueError, IndexError):
                raise ConfigError(f"--set {dotted}: {'.'.join(parts[:i]) or 'the card'} is a list of "
                                  f"{len(node)}; use an index 0..{len(node) - 1}") from None
            if last:
                node[k] = value
            else:
                node = node[k]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {dotted}: {'.'.join(parts[:i])} is a value, not a table or list")


def _check_and_write(card: dict, path, out, data: bytes | None = None) -> None:
    """The player's own checks (card keys, then card against the graph), then the write;
    ``data``: the model's bytes made playable, written in place of the file's."""
    from pi_synth.model.card import check_graph, parse_card, write_card

    if not str(card.get("name", "")).strip():
        raise ConfigError(f"{out}: the card's name is empty; give the model one, e.g. --set name=mine")
    parsed = parse_card(json.dumps(card), where=os.fspath(out))
    inputs, outputs = _graph(path if data is None else data)
    check_graph(parsed, inputs, outputs, where=os.fspath(out))
    if data is not None:
        tmp = Path(f"{out}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, out)
        except OSError as e:
            raise ModelError(f"{out}: cannot write model file ({e.strerror})") from None
        finally:
            tmp.unlink(missing_ok=True)
    elif os.fspath(out) != os.fspath(path):
        import shutil

        shutil.copyfile(path, out)
    write_card(out, card)


def _json_object(path) -> dict:
    try:
        card = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(card, dict):
        raise ConfigError(f"{path}: a card is a JSON object")
    return card


def _card_voices(args, path, has_card: bool) -> int:
    """The ``voices`` of the card being written (1 when none says, or it cannot be read yet:
    reading it again below says why)."""
    from pi_synth.model.card import card_json

    try:
        card = _json_object(args.from_file) if args.from_file else card_json(path) if has_card else {}
        return int(card.get("voices", 1))
    except (PiSynthError, ValueError, TypeError):
        return 1


def cmd_card(args) -> int:
    from pi_synth.model.card import CARD_KEY, card_json
    from pi_synth.model.library import find_model
    from pi_synth.model.onnxfile import read_metadata

    path = find_model(args.model)
    out = Path(args.output) if args.output else path
    has_card = CARD_KEY in read_metadata(path)
    if args.init and has_card and not args.force:
        raise ModelError(f"{path}: it has a card already; edit it with --set, or replace it with "
                         "--init --force")
    edits = args.init or args.from_file or args.update or args.set or args.shape or args.output
    # a leading dynamic dimension is the card's voices only when the card says so; else it is
    # a batch of one, fixed as --init fixes it (a carded export's state: batch × …)
    guess = bool(args.init) or _card_voices(args, path, has_card) <= 1
    data, said = (playable_bytes(path, parse_shapes(args.shape), guess=guess) if edits else (None, []))
    if args.init:
        card = starting_card(path if data is None else data, sample_rate=args.sample_rate,
                             name=Path(path).name.split(".")[0])
    elif args.from_file:
        card = _json_object(args.from_file)
    elif has_card:
        card = card_json(path)
    else:
        raise CardError(f"{path}: no pi-synth model card; write a starting one with "
                        f"'pi-synth card {args.model} --init' (it guesses from the graph)")
    if args.update:
        card.update(_json_object(args.update))
    for item in args.set or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: use KEY=VALUE, e.g. --set controls.0.name=cutoff")
        set_key(card, key.strip(), _value(text))
    if edits:
        _check_and_write(card, path, out, data)
    print(json.dumps(card, indent=2, ensure_ascii=False))
    if edits:
        print(f"pi-synth: wrote the card into {out}" + (" (guessed from the graph: check controls and "
              "sample_rate)" if args.init else "") + "".join(f"; {s}" for s in said), file=sys.stderr)
        if why := first_block_said(out):
            print(f"pi-synth: WARNING: {why}", file=sys.stderr)
    return 0


def first_block_said(path) -> str:
    """What the player will say of the model's first block at the card's defaults (it must
    run and be finite), so a card is not written for a model that then will not load; ""
    when it plays."""
    import numpy as np

    from pi_synth.model.runtime import Runtime

    try:
        rt = Runtime(path, use_cache=False, warmup_blocks=0)
        out = rt.step()
        if rt.card.latent_output:
            out = rt.latent
    except PiSynthError as e:
        return f"the player will not load it: {e}"
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a graph that fails
        return f"its first block does not run ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    if not np.isfinite(out).all():
        return ("its first block at the card's defaults and zero state is not finite (NaN/inf): the player will "
                "refuse it; give defaults the model accepts (--set controls.0.default=…) or check the export")
    return ""
