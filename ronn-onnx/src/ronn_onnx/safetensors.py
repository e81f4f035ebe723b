"""safetensors files: read memory-mapped, write streamed, fill and export initializers.

The format: an 8-byte little-endian header length, a JSON header mapping each tensor name to
its dtype, shape and byte range (``data_offsets``, relative to the end of the header), and
the raw little-endian bytes. Reading maps the file, so a model of several GB does not take
its size twice in memory; writing streams one tensor at a time.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import ml_dtypes
import numpy as np

from ronn.errors import ModelError
from ronn.ir import Model, TensorType
from ronn.dtypes import from_numpy

logger = logging.getLogger("ronn.onnx")

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, as read-only arrays mapped from the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelError(f"safetensors file not found: {path}")
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ModelError(f"{path}: too short to be a safetensors file")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(_MAX_HEADER, size - 8):
            raise ModelError(f"{path}: not a safetensors file (header length {header_len})")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: not a safetensors file ({exc})") from None
    base = 8 + header_len
    arrays: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        arrays[name] = _map_tensor(path, name, entry, base, size)
    return arrays


def _map_tensor(path: str, name: str, entry: dict[str, Any], base: int, size: int) -> np.ndarray:
    try:
        dtype = _DTYPES[entry["dtype"]]
        shape = tuple(int(d) for d in entry["shape"])
        begin, end = (int(v) for v in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{path}: tensor {name!r} has an unsupported or malformed entry {entry!r}") from None
    count = int(np.prod(shape, dtype=np.int64))
    if end - begin != count * dtype.itemsize or begin < 0 or base + end > size:
        raise ModelError(
            f"{path}: tensor {name!r} ({entry['dtype']}{list(shape)}) does not fit its byte range "
            f"[{begin}, {end})"
        )
    if count == 0:
        array = np.empty(shape, dtype)
        array.flags.writeable = False
        return array
    return np.memmap(path, dtype=dtype, mode="r", offset=base + begin, shape=shape)


def write_safetensors(
    arrays: Mapping[str, np.ndarray], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``arrays`` as a safetensors file, one tensor at a time (no second copy in memory)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, value in arrays.items():
        array = np.asarray(value)
        kind = _NAMES.get(array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype)
        if kind is None:
            raise ModelError(f"tensor {name!r} has dtype {array.dtype}, which safetensors cannot hold")
        header[name] = {"dtype": kind, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # keep tensor data 8-byte aligned
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)))
        handle.write(blob)
        for value in arrays.values():
            array = np.asarray(value)
            np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tofile(handle)


def fill_initializers(model: Model, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    """Set the model's initializers by name from safetensors files; return the names filled.

    A tensor replaces the initializer of its name, or gives a value to the graph input of its
    name (a graph exported without its weights). Its dtype and shape must match what the model
    declares. Tensors that match nothing are reported in a warning.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    graph = model.graph
    declared = {v.name: v.type for v in graph.inputs}
    filled: list[str] = []
    unmatched: list[str] = []
    for path in paths:
        for name, array in read_safetensors(path).items():
            if name in graph.initializers:
                _check(name, array, _type_of(graph.initializers[name]), path)
            elif name in declared:
                _check(name, array, declared[name], path)
            else:
                unmatched.append(name)
                continue
            graph.initializers[name] = array
            filled.append(name)
    if unmatched:
        logger.warning(
            "%s: %d safetensors tensor(s) match no initializer or input: %s",
            model.source, len(unmatched), ", ".join(unmatched[:10]) + (" ..." if len(unmatched) > 10 else ""),
        )
    return filled


def _type_of(value: Any) -> TensorType | None:
    array = np.asarray(value)
    return TensorType(from_numpy(array.dtype), tuple(array.shape))


def _check(name: str, array: np.ndarray, expected: Any, path: Any) -> None:
    if not isinstance(expected, TensorType):
        return
    actual = from_numpy(array.dtype)
    if actual != expected.dtype:
        raise ModelError(
            f"{os.fspath(path)}: tensor {name!r} is {array.dtype}, the model declares {expected}"
        )
    if expected.shape is not None:
        fits = len(expected.shape) == array.ndim and all(
            not isinstance(d, int) or d == s for d, s in zip(expected.shape, array.shape)
        )
        if not fits:
            raise ModelError(
                f"{os.fspath(path)}: tensor {name!r} has shape {list(array.shape)}, the model "
                f"declares {list(expected.shape)}"
            )


def export_initializers(model: Model, path: str | os.PathLike[str]) -> list[str]:
    """Write the model's numeric initializers to a safetensors file; return their names."""
    arrays = {
        name: value
        for name, value in model.graph.initializers.items()
        if isinstance(value, np.ndarray) and value.dtype in _NAMES
    }
    write_safetensors(arrays, path, metadata={"format": "ronn", "source": model.source})
    return list(arrays)
