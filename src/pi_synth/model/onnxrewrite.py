"""Make a model made elsewhere into one playable file, without the ``onnx`` package.

Two things other tools' exports do that a pi-synth model cannot:

- **External data.** ``torch.onnx.export`` (torch ≥ 2.5) writes ``X.onnx`` plus
  ``X.onnx.data`` by default; copy only the ``.onnx`` to the Pi and it will not load.
  :func:`inline_external_data` puts the weights back inside, so the model is one file.
- **Dynamic dimensions** (a ``batch`` or ``frames`` axis). onnxruntime plans memory once
  for fixed shapes, and the card is checked against them; :func:`fix_dims` writes the
  shapes the player will use into the graph's inputs and outputs.

Both walk the protobuf as ``onnxfile`` does: every field is copied byte for byte except
the few being rewritten (``TensorProto`` external data → ``raw_data``, a ``ValueInfoProto``'s
shape), found by their field numbers in onnx.proto. So this runs on the Pi too.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from pi_synth.errors import ModelError
from pi_synth.model.onnxfile import _encode_varint, _fields, _length_delimited, _spans, parse_metadata

__all__ = ["external_files", "inline_external_data", "fix_dims"]

# onnx.proto field numbers
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_SPARSE = 1, 5, 11, 12, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 5, 6, 10, 11
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_NAME, _TENSOR_RAW, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 8, 9, 13, 14
_VI_NAME, _VI_TYPE = 1, 2
_TYPE_TENSOR, _TT_SHAPE, _SHAPE_DIM, _DIM_VALUE = 1, 2, 1, 1
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_MAX_PROTO = 2**31 - 1  # protobuf's limit for one message


def _copy(buf, start, end, handlers, drop: tuple[int, ...] = ()) -> bytes:
    """The message ``buf[start:end]`` with each length-delimited field in ``handlers``
    replaced by ``handler(buf, body_start, body_end)`` (None drops the field), and the
    fields numbered in ``drop`` left out."""
    out = bytearray()
    for field, wire, first, stop, body in _spans(buf, start, end):
        if field in drop:
            continue
        handler = handlers.get(field) if wire == 2 else None
        if handler is None:
            out += buf[first:stop]
            continue
        new = handler(buf, *body)
        if new is not None:
            out += _length_delimited(field, new)
    return bytes(out)


def _text(buf, span) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8")


def _tensor_external(buf, start, end) -> tuple[str, dict[str, str]] | None:
    """(tensor name, its external_data entries) if the tensor's data lives in another file."""
    name, entries, location = "", {}, 0
    for field, wire, value in _fields(buf, start, end):
        if field == _TENSOR_NAME and wire == 2:
            name = _text(buf, value)
        elif field == _TENSOR_LOCATION and wire == 0:
            location = value
        elif field == _TENSOR_EXTERNAL and wire == 2:
            kv = {f: _text(buf, v) for f, w, v in _fields(buf, *value) if w == 2 and f in (1, 2)}
            entries[kv.get(1, "")] = kv.get(2, "")
    return (name, entries) if location == _EXTERNAL else None


def _walk_tensors(on_tensor):
    """Handlers reaching every TensorProto a graph holds (initializers, sparse ones,
    Constant attributes, subgraphs of If/Loop/Scan), each replaced by ``on_tensor``."""
    graph: dict = {}
    attribute = {_ATTR_T: on_tensor, _ATTR_TENSORS: on_tensor,
                 _ATTR_G: lambda b, s, e: _copy(b, s, e, graph), _ATTR_GRAPHS: lambda b, s, e: _copy(b, s, e, graph)}
    node = {_NODE_ATTRIBUTE: lambda b, s, e: _copy(b, s, e, attribute)}
    sparse = {_SPARSE_VALUES: on_tensor, _SPARSE_INDICES: on_tensor}
    graph.update({_GRAPH_NODE: lambda b, s, e: _copy(b, s, e, node), _GRAPH_INITIALIZER: on_tensor,
                  _GRAPH_SPARSE: lambda b, s, e: _copy(b, s, e, sparse)})
    return {_MODEL_GRAPH: lambda b, s, e: _copy(b, s, e, graph)}


def external_files(data: bytes, where: str = "model") -> list[str]:
    """The files (relative to the model) that hold some of its tensors; [] for one file."""
    parse_metadata(data, where)  # refuses what is not ONNX, naming the file
    if b"location" not in data:  # every external_data entry has this key: one C-speed scan, no walk
        return []  # (the walk is ~20 ms of Python for a 5 MB model, which a hot swap's load would pay)
    found: list[str] = []

    def on_tensor(buf, start, end):
        ext = _tensor_external(buf, start, end)
        if ext is not None and ext[1].get("location", "") not in found:
            found.append(ext[1].get("location", ""))
        return bytes(buf[start:end])

    buf = memoryview(data)
    try:
        _copy(buf, 0, len(buf), _walk_tensors(on_tensor))
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{where}: not a valid ONNX file ({e}); copy it again") from None
    return found


def _safe_location(location: str, where: str) -> str:
    p = PurePosixPath(location.replace("\\", "/"))
    if not location or p.is_absolute() or ".." in p.parts:
        raise ModelError(f"{where}: names external data {location!r} outside its folder; re-export it "
                         "with the weights inside the file")
    return str(p)


def inline_external_data(data: bytes, base_dir, where: str = "model") -> bytes:
    """``data`` with every tensor stored in another file (``location``/``offset``/
    ``length`` relative to ``base_dir``) moved inside as ``raw_data``: one self-contained
    file. A missing or short data file is a :class:`ModelError` naming it."""
    parse_metadata(data, where)
    opened: dict[str, bytes] = {}

    def read(location: str) -> bytes:
        rel = _safe_location(location, where)
        if rel not in opened:
            path = Path(base_dir) / rel
            try:
                opened[rel] = path.read_bytes()
            except FileNotFoundError:
                raise ModelError(missing_data_message(where, [location])) from None
            except OSError as e:
                raise ModelError(f"{where}: cannot read its external data {path} ({e.strerror})") from None
        return opened[rel]

    def on_tensor(buf, start, end):
        ext = _tensor_external(buf, start, end)
        if ext is None:
            return bytes(buf[start:end])
        name, entries = ext
        blob = read(entries.get("location", ""))
        try:
            offset = int(entries.get("offset", "0") or 0)
            length = int(entries["length"]) if entries.get("length") else len(blob) - offset
        except ValueError:
            raise ModelError(f"{where}: tensor {name!r} has a bad external offset/length {entries}") from None
        if offset < 0 or length < 0 or offset + length > len(blob):
            raise ModelError(f"{where}: tensor {name!r} wants bytes {offset}..{offset + length} of "
                             f"{entries.get('location')}, which has {len(blob)}; copy that file again")
        kept = _copy(buf, start, end, {}, drop=(_TENSOR_EXTERNAL, _TENSOR_LOCATION))
        return kept + _length_delimited(_TENSOR_RAW, blob[offset:offset + length])

    buf = memoryview(data)
    try:
        out = _copy(buf, 0, len(buf), _walk_tensors(on_tensor))
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{where}: not a valid ONNX file ({e}); copy it again") from None
    if len(out) > _MAX_PROTO:
        raise ModelError(f"{where}: its weights ({len(out) / 1e9:.1f} GB) are too big for one ONNX file, "
                         "and far too big to play on a Pi")
    return out


def missing_data_message(where: str, locations: list[str]) -> str:
    names = ", ".join(locations)
    return (f"{where}: its weights are in a separate file ({names}) that is not beside it; copy that "
            f"file next to it (then 'pi-synth card {where} -o ONE.onnx' makes one self-contained file; "
            "add --init if it has no card yet)")


def _shape_proto(dims) -> bytes:
    return b"".join(_length_delimited(_SHAPE_DIM, _encode_varint(_DIM_VALUE << 3) + _encode_varint(int(d)))
                    for d in dims)


def fix_dims(data: bytes, shapes: dict[str, list[int]], where: str = "model") -> bytes:
    """``data`` with the graph inputs/outputs named in ``shapes`` declared with those fixed
    dimensions (dynamic ones named ``batch``, ``frames``… become numbers)."""
    parse_metadata(data, where)

    def tensor_type(buf, start, end):
        return _copy(buf, start, end, {}, drop=(_TT_SHAPE,)) + _length_delimited(_TT_SHAPE, _shape_proto(dims))

    def value_info(buf, start, end):
        nonlocal dims
        name = next((_text(buf, v) for f, w, v in _fields(buf, start, end) if f == _VI_NAME and w == 2), "")
        if name not in shapes:
            return bytes(buf[start:end])
        dims = shapes[name]
        return _copy(buf, start, end, {_VI_TYPE: lambda b, s, e: _copy(b, s, e, {_TYPE_TENSOR: tensor_type})})

    dims: list[int] = []
    graph = {_GRAPH_INPUT: value_info, _GRAPH_OUTPUT: value_info}
    buf = memoryview(data)
    return _copy(buf, 0, len(buf), {_MODEL_GRAPH: lambda b, s, e: _copy(b, s, e, graph)})


def self_contained(path, where: str | None = None) -> bytes | None:
    """The bytes of the model at ``path`` as one file if its weights live in other files;
    None if it is one file already."""
    where = where or os.fspath(path)
    data = Path(path).read_bytes()
    if not external_files(data, where):
        return None
    return inline_external_data(data, Path(path).parent, where)
