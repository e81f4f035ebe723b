"""Take an ONNX model's large tensor bytes out of its serialized form, without parsing them.

Parsing a model with protobuf copies every weight into the message, converting the message
copies them again into arrays, and onnx's shape inference serializes and parses the whole
model twice more. :func:`detach_tensors` instead rewrites the serialized model, replacing each
large ``raw_data`` field with a reference to where its bytes lie in the source: an external
data entry whose location is :data:`DETACHED` and whose offset and length are the field's
place in the source. The rest of the model (nodes, small tensors, types) is parsed as usual,
and each weight is read once, straight into its array (see :class:`TensorBytes`).

Only the protobuf wire format is needed (tag, varint, length-delimited); messages are only
entered where a large tensor can be: the main graph's initializers and the tensor
attributes of its nodes, subgraphs included.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the external data location of a detached tensor; never a valid location of a real file
#: (``resolve_location`` refuses any location containing ``:``)
DETACHED = "ronn:detached"

#: raw_data of at least this many bytes is detached
MIN_DETACHED_BYTES = 1024
#: integer tensors smaller than this stay in the message: onnx's shape inference propagates
#: the values of small integer constants (shapes, axes, indices) into the shapes it infers
MIN_DETACHED_INTEGER_BYTES = 65536

# ONNX element types read as plain little-endian arrays (packed 2/4/6-bit types and strings are not)
_FLOATS = {1, 10, 11, 14, 15, 16, 17, 18, 19, 20, 24}
_INTEGERS = {2, 3, 4, 5, 6, 7, 9, 12, 13}

# field numbers of onnx.proto
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER = 1, 5
_NODE_ATTRIBUTE = 5
_ATTRIBUTE_TENSOR, _ATTRIBUTE_GRAPH, _ATTRIBUTE_TENSORS, _ATTRIBUTE_GRAPHS = 5, 6, 10, 11
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_RAW_DATA = 1, 2, 9
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@dataclass(frozen=True)
class _Field:
    number: int
    wire: int
    start: int  # where the field's tag starts
    value: int  # a varint's value, or where a length-delimited payload starts
    end: int  # where the field ends


def _fields(buf: Any, start: int, end: int) -> Iterator[_Field]:
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
        elif wire == _LENGTH:
            length, pos = _varint(buf, pos, end)
            value, pos = pos, pos + length
        elif wire == _FIXED64:
            value, pos = pos, pos + 8
        elif wire == _FIXED32:
            value, pos = pos, pos + 4
        else:
            raise WireError(f"unsupported wire type {wire}")
        if pos > end or number == 0:
            raise WireError("field runs past its message")
        yield _Field(number, wire, field_start, value, pos)


def _length_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LENGTH) + _encode_varint(len(payload)) + payload


def _entry(key: str, value: str) -> bytes:
    """A StringStringEntryProto (external_data) field."""
    return _length_field(_TENSOR_EXTERNAL_DATA, _length_field(1, key.encode()) + _length_field(2, value.encode()))


_LOCATION_EXTERNAL = _encode_varint(_TENSOR_DATA_LOCATION << 3 | _VARINT) + _encode_varint(1)


class _Detacher:
    def __init__(self, buf: Any) -> None:
        self.buf = buf
        self.count = 0
        self.detached_bytes = 0

    def message(self, start: int, end: int, children: dict[int, Any]) -> bytes | None:
        """The message rewritten, or None when nothing in it is detached."""
        pieces: list[Any] = []
        copied = start  # source bytes [copied, field.start) are still to be copied verbatim
        changed = False
        for field in _fields(self.buf, start, end):
            rewrite = children.get(field.number)
            if rewrite is None or field.wire != _LENGTH or field.end - field.value < MIN_DETACHED_BYTES:
                continue
            new = rewrite(field.value, field.end)
            if new is None:
                continue
            pieces.append(self.buf[copied:field.start])
            pieces.append(_length_field(field.number, new))
            copied = field.end
            changed = True
        if not changed:
            return None
        pieces.append(self.buf[copied:end])
        return b"".join(pieces)

    def model(self, start: int, end: int) -> bytes | None:
        return self.message(start, end, {_MODEL_GRAPH: self.graph})

    def graph(self, start: int, end: int) -> bytes | None:
        return self.message(start, end, {_GRAPH_NODE: self.node, _GRAPH_INITIALIZER: self.tensor})

    def node(self, start: int, end: int) -> bytes | None:
        return self.message(start, end, {_NODE_ATTRIBUTE: self.attribute})

    def attribute(self, start: int, end: int) -> bytes | None:
        return self.message(
            start, end,
            {
                _ATTRIBUTE_TENSOR: self.tensor, _ATTRIBUTE_TENSORS: self.tensor,
                _ATTRIBUTE_GRAPH: self.graph, _ATTRIBUTE_GRAPHS: self.graph,
            },
        )

    def tensor(self, start: int, end: int) -> bytes | None:
        dims: list[int] = []
        data_type = 0
        raw: _Field | None = None
        for field in _fields(self.buf, start, end):
            if field.number == _TENSOR_DIMS:
                if field.wire == _VARINT:
                    dims.append(field.value)
                elif field.wire == _LENGTH:  # packed
                    pos = field.value
                    while pos < field.end:
                        dim, pos = _varint(self.buf, pos, field.end)
                        dims.append(dim)
                else:
                    return None
            elif field.number == _TENSOR_DATA_TYPE and field.wire == _VARINT:
                data_type = field.value
            elif field.number == _TENSOR_RAW_DATA and field.wire == _LENGTH and raw is None:
                raw = field
            elif field.number in (_TENSOR_RAW_DATA, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION):
                return None  # a second raw_data, or external data already: leave it to onnx
        if raw is None:
            return None
        length = raw.end - raw.value
        if data_type in _INTEGERS:
            if length < MIN_DETACHED_INTEGER_BYTES:
                return None
        elif data_type not in _FLOATS:
            return None
        if any(d >= 2**63 for d in dims):  # negative: the tensor is malformed, onnx will say so
            return None
        if int(np.prod(dims, dtype=object)) * element_size(data_type) != length:
            return None
        self.count += 1
        self.detached_bytes += length
        return b"".join(
            (
                self.buf[start:raw.start],
                self.buf[raw.end:end],
                _entry("location", DETACHED),
                _entry("offset", str(raw.value)),
                _entry("length", str(length)),
                _LOCATION_EXTERNAL,
            )
        )


def element_size(data_type: int) -> int:
    """Bytes per element of an ONNX element type that :func:`detach_tensors` detaches."""
    from ronn.dtypes import to_numpy

    return to_numpy(data_type).itemsize


def detach_tensors(buf: Any) -> tuple[Any, int]:
    """``buf`` (a serialized ModelProto) with its large tensors' bytes detached, and how many
    tensors were; ``buf`` itself when none was (or when it is not well-formed: protobuf will
    then report the error)."""
    detacher = _Detacher(buf)
    try:
        rewritten = detacher.model(0, len(buf))
    except (WireError, IndexError):
        return buf, 0
    if rewritten is None:
        return buf, 0
    return rewritten, detacher.count


def is_detached(tensor: Any) -> bool:
    """Whether a TensorProto's bytes were detached by :func:`detach_tensors`."""
    return (
        tensor.data_location == 1
        and len(tensor.external_data) == 3
        and tensor.external_data[0].key == "location"
        and tensor.external_data[0].value == DETACHED
    )


class TensorBytes:
    """The source a model was read from, to read detached tensors from: its file or its bytes.

    Each read makes a new array (aligned, owned): nothing keeps the source alive or mapped.
    """

    def __init__(self, path: str | None = None, data: Any = None) -> None:
        self._path = path
        self._data = memoryview(data).cast("B") if data is not None else None
        self._handle: Any = None

    def read(self, tensor: Any, dtype: np.dtype) -> np.ndarray:
        """The detached tensor's value as a new array of ``dtype`` and the tensor's shape."""
        info = {entry.key: entry.value for entry in tensor.external_data}
        offset, length = int(info["offset"]), int(info["length"])
        array = np.empty(tuple(int(d) for d in tensor.dims), dtype=np.dtype(dtype).newbyteorder("<"))
        target = array.reshape(-1).view(np.uint8)
        if target.nbytes != length:
            raise WireError(f"tensor {tensor.name!r}: {length} bytes for {target.nbytes}")
        if self._data is not None:
            target[:] = np.frombuffer(self._data, np.uint8, length, offset)
        else:
            self._read_file(offset, target)
        return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))

    def _read_file(self, offset: int, target: np.ndarray) -> None:
        if self._handle is None:
            if self._path is None:
                raise WireError("no source to read detached tensors from")
            self._handle = open(self._path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        view = memoryview(target)
        self._handle.seek(offset)
        done = 0
        while done < len(view):
            count = self._handle.readinto(view[done:])
            if not count:
                raise WireError(f"{self._path} ended early: was it changed while being loaded?")
            done += count

    def close(self) -> None:
        """Close the file (if one was opened)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> TensorBytes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
