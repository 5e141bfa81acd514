"""Read an ONNX file's ``metadata_props`` without the ``onnx`` package.

The Pi needs only onnxruntime; but onnxruntime only reads metadata after building a
whole session, which is slow and gives poor errors for a file that is not ONNX at
all. ONNX files are protobuf ``ModelProto`` messages: the top level is a handful of
fields, ``metadata_props`` is field 14 (``StringStringEntryProto``: key = 1,
value = 2), and the big graph (field 7) can be skipped by its length. So we walk the
top level, skip what we do not need, and say clearly what is wrong with a broken file.
"""

from __future__ import annotations

import os

from pi_synth.errors import ModelError

_METADATA_PROPS = 14
_GRAPH = 7
_IR_VERSION = 1
_OPSET_IMPORT = 8


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= end:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview, pos: int, end: int):
    """Yield (field number, wire type, value or (start, stop)) for one message."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value
        elif wire == 1:
            pos += 8
            yield field, wire, None
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise ValueError(f"field {field} runs past the end of the file")
            yield field, wire, (pos, pos + n)
            pos += n
        elif wire == 5:
            pos += 4
            yield field, wire, None
        else:
            raise ValueError(f"unknown wire type {wire}")
    if pos != end:
        raise ValueError("truncated message")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Return the model's ``metadata_props`` as a dict; ModelError if not ONNX."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ModelError(f"{path}: model file not found; check the path or run 'pi-synth info'") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: is a folder, not a model file") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read model file ({e.strerror})") from None
    return parse_metadata(data, path)


def parse_metadata(data: bytes, where: str = "model") -> dict[str, str]:
    if not data:
        raise ModelError(f"{where}: model file is empty; copy it again")
    buf = memoryview(data)
    meta: dict[str, str] = {}
    seen_graph = seen_ir = False
    try:
        for field, wire, value in _fields(buf, 0, len(buf)):
            if field == _IR_VERSION and wire == 0:
                seen_ir = True
            elif field == _GRAPH and wire == 2:
                seen_graph = True
            elif field == _METADATA_PROPS and wire == 2:
                key = val = ""
                for f2, w2, v2 in _fields(buf, *value):
                    if w2 == 2 and f2 in (1, 2):
                        text = bytes(buf[v2[0]:v2[1]]).decode("utf-8")
                        if f2 == 1:
                            key = text
                        else:
                            val = text
                meta[key] = val
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(
            f"{where}: not a valid ONNX file ({e}); it may be truncated or not a model — copy it again"
        ) from None
    if not (seen_graph and seen_ir):
        raise ModelError(f"{where}: not an ONNX model (no graph); is this the right file?")
    return meta
