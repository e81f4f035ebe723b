"""External data: tensors whose bytes live in files beside the model.

Locations are resolved inside the model's folder only: absolute paths, ``..`` and links that
lead outside it are refused, so a model file cannot make ronn read arbitrary files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import onnx

from ronn.errors import ModelError


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
    """Whether any tensor keeps its bytes outside the model file."""
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in iter_tensors(proto))


def resolve_location(folder: str, location: str, model_name: str, tensor_name: str) -> str:
    """The file a location names, refusing anything outside ``folder``."""
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location:
        raise ModelError(
            f"{model_name}: tensor {tensor_name!r} has external data location {location!r}; "
            "only relative paths inside the model's folder are allowed"
        )
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, path]) != root:
        raise ModelError(
            f"{model_name}: tensor {tensor_name!r} has external data location {location!r}, "
            "which leads outside the model's folder"
        )
    if not os.path.isfile(path):
        raise ModelError(
            f"{model_name}: cannot load external data for tensor {tensor_name!r}: "
            f"file {location!r} not found beside the model"
        )
    return path


def load_external_data(proto: onnx.ModelProto, folder: str, model_name: str) -> None:
    """Read every external tensor's bytes into the proto (``raw_data``)."""
    for tensor in iter_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        path = resolve_location(folder, info.get("location", ""), model_name, tensor.name)
        offset = int(info.get("offset", 0) or 0)
        length = info.get("length")
        size = os.path.getsize(path)
        count = int(length) if length else size - offset
        if offset < 0 or count < 0 or offset + count > size:
            raise ModelError(
                f"{model_name}: external data of tensor {tensor.name!r} (offset {offset}, length "
                f"{count}) runs past the end of {info.get('location')!r} ({size} bytes)"
            )
        with open(path, "rb") as handle:
            handle.seek(offset)
            tensor.raw_data = handle.read(count)
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]
