"""External data: tensors whose bytes live in files beside the model, memory-mapped.

Locations are resolved inside the model's folder only: absolute paths, ``..`` and links that
lead outside it are refused, so a model file cannot make ronn read arbitrary files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import onnx

from ronn.dtypes import to_numpy
from ronn.errors import ModelError

from ._wire import TensorBytes, is_detached


def iter_tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of the model: initializers and tensor attributes, subgraphs included."""

    def graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            yield from node_tensors(node)

    def node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from graph_tensors(attr.g)
            for g in attr.graphs:
                yield from graph_tensors(g)

    yield from graph_tensors(proto.graph)
    for function in proto.functions:
        for node in function.node:
            yield from node_tensors(node)


def uses_external_data(proto: onnx.ModelProto) -> bool:
    """Whether any tensor keeps its bytes outside the model file (detached ones are inside it)."""
    return any(
        t.data_location == onnx.TensorProto.EXTERNAL and not is_detached(t) for t in iter_tensors(proto)
    )


def resolve_location(folder: str, location: str, model_name: str, tensor_name: str) -> str:
    """The file a location names, refusing anything outside ``folder``.

    The location must stay inside the folder as written (no absolute path, no ``..`` out).
    Links are then resolved: the target must lie inside the folder too, or, for a model in
    the Hugging Face cache (``<cache>/snapshots/<commit>/...``), in that cache's ``blobs``.
    """
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location:
        raise ModelError(
            f"{model_name}: tensor {tensor_name!r} has external data location {location!r}; "
            "only relative paths inside the model's folder are allowed"
        )
    root = os.path.abspath(folder)
    written = os.path.normpath(os.path.join(root, location))
    real = os.path.realpath(written)
    if os.path.commonpath([root, written]) != root or not _link_allowed(root, real):
        raise ModelError(
            f"{model_name}: tensor {tensor_name!r} has external data location {location!r}, "
            "which leads outside the model's folder"
        )
    if not os.path.isfile(real):
        raise ModelError(
            f"{model_name}: cannot load external data for tensor {tensor_name!r}: "
            f"file {location!r} not found beside the model"
        )
    return real


def _link_allowed(root: str, real: str) -> bool:
    """Whether a resolved path is inside the model's folder, or in its Hub cache's blobs."""
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, real]) == real_root:
        return True
    parts = real_root.split(os.sep)
    if "snapshots" in parts:
        cache = os.sep.join(parts[: len(parts) - 1 - parts[::-1].index("snapshots")])
        blobs = os.path.join(cache, "blobs")
        return os.path.dirname(real) == blobs
    return False


#: packed sub-byte types: their bytes must be unpacked, so they are read, not mapped
_PACKED = {
    onnx.TensorProto.INT4, onnx.TensorProto.UINT4, onnx.TensorProto.FLOAT4E2M1,
    getattr(onnx.TensorProto, "INT2", -1), getattr(onnx.TensorProto, "UINT2", -1),
}


@dataclass(frozen=True)
class ExternalSource:
    """Where a model's tensor bytes are: the folder of its external data files (None for a
    model read from bytes), its name for messages, and its detached tensors' source."""

    folder: str | None
    model_name: str
    detached: TensorBytes | None = None


#: set while a model is converted, so tensor conversion can find external files
current_source: ContextVar[ExternalSource | None] = ContextVar("ronn_external_source", default=None)


def external_array(tensor: onnx.TensorProto) -> np.ndarray:
    """The value of an external tensor: a read-only memory map of its file where possible.

    A tensor detached from the model's own bytes (see :mod:`ronn_onnx._wire`) is read from
    them into a new array.
    """
    source = current_source.get()
    if is_detached(tensor):
        if source is None or source.detached is None:
            raise ModelError(f"tensor {tensor.name!r} was detached from a model no longer being read")
        return source.detached.read(tensor, to_numpy(tensor.data_type))
    if source is None or source.folder is None:
        raise ModelError(
            f"tensor {tensor.name!r} keeps its data in an external file; load the model from its path"
        )
    info = {entry.key: entry.value for entry in tensor.external_data}
    path = resolve_location(source.folder, info.get("location", ""), source.model_name, tensor.name)
    offset = int(info.get("offset", 0) or 0)
    size = os.path.getsize(path)
    length = int(info["length"]) if info.get("length") else size - offset
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelError(
            f"{source.model_name}: external data of tensor {tensor.name!r} (offset {offset}, "
            f"length {length}) runs past the end of {info.get('location')!r} ({size} bytes)"
        )
    shape = tuple(int(d) for d in tensor.dims)
    if tensor.data_type in _PACKED or tensor.data_type == onnx.TensorProto.STRING:
        return _read_packed(tensor, path, offset, length)
    dtype = to_numpy(tensor.data_type)
    count = int(np.prod(shape, dtype=np.int64))
    if count * dtype.itemsize != length:
        raise ModelError(
            f"{source.model_name}: tensor {tensor.name!r} of shape {list(shape)} and type {dtype} "
            f"needs {count * dtype.itemsize} bytes, its external data has {length}"
        )
    if count == 0:
        array = np.empty(shape, dtype)
    else:
        array = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    return array


def _read_packed(tensor: onnx.TensorProto, path: str, offset: int, length: int) -> np.ndarray:
    from onnx import numpy_helper

    copy = onnx.TensorProto()
    copy.CopyFrom(tensor)
    del copy.external_data[:]
    copy.data_location = onnx.TensorProto.DEFAULT
    with open(path, "rb") as handle:
        handle.seek(offset)
        copy.raw_data = handle.read(length)
    return numpy_helper.to_array(copy)
