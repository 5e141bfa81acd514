"""Read and write an ONNX file's ``metadata_props`` without the ``onnx`` package.

The Pi needs only onnxruntime; but onnxruntime only reads metadata after building a
whole session, which is slow and gives poor errors for a file that is not ONNX at
all. ONNX files are protobuf ``ModelProto`` messages: the top level is a handful of
fields, ``metadata_props`` is field 14 (``StringStringEntryProto``: key = 1,
value = 2), and the big graph (field 7) can be skipped by its length. So we walk the
top level, skip what we do not need, and say clearly what is wrong with a broken file.
Writing is the same walk: every top-level field is copied byte for byte except the
metadata entry being replaced, and the new entry is appended — so a card can be written
or edited on the Pi itself (``pi-synth card``), where there is no ``onnx`` package.
"""

from __future__ import annotations

import os

from pi_synth.errors import ModelError

_METADATA_PROPS = 14
_GRAPH = 7
_IR_VERSION = 1
_OPSET_IMPORT = 8
_PRODUCER_NAME = 2


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


def _spans(buf: memoryview, pos: int, end: int):
    """Yield (field number, wire type, start, stop, body) for each field of one message:
    ``buf[start:stop]`` is the whole field as written (to copy it unchanged), ``body``
    the (start, stop) of a length-delimited field's payload, else None."""
    while pos < end:
        first = pos
        tag, pos = _varint(buf, pos, end)
        field, wire = tag >> 3, tag & 7
        body = None
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            body = (pos, pos + n)
            pos += n
        else:
            raise ValueError(f"unknown wire type {wire}")
        yield field, wire, first, pos, body


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


def _not_onnx(data: bytes, where: str) -> ModelError | None:
    """A file people mistake for a model: say what it is and how to make one of it."""
    if data[:4] == b"PK\x03\x04":  # a ZIP: TorchScript (.ts/.pt) and PyTorch checkpoints are ZIPs
        import io
        import zipfile

        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            names = []
        if any(n.endswith(("constants.pkl", "data.pkl")) or "/code/" in n for n in names):
            return ModelError(
                f"{where}: this is a TorchScript/PyTorch file, not ONNX; convert a RAVE export with "
                f"'pi-synth convert rave {where} -o MODEL.onnx' (on a desktop, with pi-synth[convert])")
        return ModelError(f"{where}: this is a ZIP archive, not an ONNX model; unpack it and pass the .onnx inside")
    return None


def parse_metadata(data: bytes, where: str = "model") -> dict[str, str]:
    if not data:
        raise ModelError(f"{where}: model file is empty; copy it again")
    other = _not_onnx(data, where)
    if other is not None:
        raise other
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


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _encode_varint(field << 3 | 2) + _encode_varint(len(payload)) + payload


def set_metadata(data: bytes, key: str, value: str, *, producer: str | None = None,
                 where: str = "model") -> bytes:
    """``data`` (an ONNX file's bytes) with ``metadata_props[key] = value`` (and the
    producer name, if given); every other field kept as it was."""
    parse_metadata(data, where)  # refuses what is not ONNX, naming the file
    buf = memoryview(data)
    out = bytearray()
    for field, wire, start, stop, body in _spans(buf, 0, len(buf)):  # parse_metadata has checked it
        if wire == 2 and field == _PRODUCER_NAME and producer is not None:
            continue
        if wire == 2 and field == _METADATA_PROPS:
            k = next((bytes(buf[v[0]:v[1]]).decode("utf-8") for f, w, v in _fields(buf, *body)
                      if f == 1 and w == 2), "")
            if k == key:
                continue
        out += buf[start:stop]
    entry = _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, value.encode("utf-8"))
    out += _length_delimited(_METADATA_PROPS, entry)
    if producer is not None:
        out += _length_delimited(_PRODUCER_NAME, producer.encode("utf-8"))
    return bytes(out)


def write_metadata(path: str | os.PathLike, key: str, value: str, *, producer: str | None = None) -> None:
    """Set one ``metadata_props`` entry of the file at ``path``, atomically (a copy beside
    it, then a rename: a power cut leaves the old file or the new one)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelError(f"{path}: cannot read model file ({e.strerror})") from None
    new = set_metadata(data, key, value, producer=producer, where=path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise ModelError(f"{path}: cannot write model file ({e.strerror})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
