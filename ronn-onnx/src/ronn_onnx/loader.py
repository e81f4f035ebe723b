"""Load ONNX models from a path, bytes or a ModelProto; check versions; infer shapes; save."""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from ronn.errors import (
    InvalidGraphError,
    ModelError,
    ModelFormatError,
    ModelNotFoundError,
    UnsupportedModelVersionError,
)
from ronn.ir import Graph, Model, TensorType

from .convert import model_from_proto, model_to_proto
from .external import load_external_data, uses_external_data

logger = logging.getLogger("ronn.onnx")

#: The newest opset of each domain that ronn accepts: what the installed onnx defines.
MAX_IR_VERSION = onnx.IR_VERSION


@lru_cache(maxsize=None)
def max_opset(domain: str) -> int | None:
    """The newest opset version onnx defines for ``domain`` (None for custom domains)."""
    if domain in ("", "ai.onnx"):
        return onnx.defs.onnx_opset_version()
    versions = [s.since_version for s in onnx.defs.get_all_schemas_with_history() if s.domain == domain]
    return max(versions) if versions else None


def read_proto(source: Any) -> tuple[onnx.ModelProto, str, str | None]:
    """Parse ``source`` into a ModelProto; return it, a name for messages and its folder."""
    if isinstance(source, onnx.ModelProto):
        return source, "<ModelProto>", None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name, folder = f"<{len(data)} bytes>", None
    else:
        path = os.fspath(source)
        if not os.path.exists(path):
            raise ModelNotFoundError(f"model file not found: {path}")
        if os.path.isdir(path):
            raise ModelNotFoundError(f"model path is a folder, not a file: {path}")
        with open(path, "rb") as handle:
            data = handle.read()
        name, folder = path, os.path.dirname(os.path.abspath(path))
    if not data:
        raise ModelFormatError(f"{name}: the file is empty, not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelFormatError(
            f"{name}: not a valid ONNX model (protobuf parse failed: {exc}); "
            "the file may be truncated or of another format"
        ) from None
    if not proto.HasField("graph") or proto.ir_version <= 0:
        raise ModelFormatError(
            f"{name}: not an ONNX model (no graph or no IR version); the file may be truncated "
            "or of another format"
        )
    return proto, name, folder


def check_versions(proto: onnx.ModelProto, name: str) -> None:
    """Refuse IR and opset versions the installed onnx does not define."""
    if proto.ir_version > MAX_IR_VERSION:
        raise UnsupportedModelVersionError(
            f"{name}: IR version {proto.ir_version} is newer than the newest supported ({MAX_IR_VERSION})"
        )
    if proto.ir_version >= 3 and not proto.opset_import:
        raise UnsupportedModelVersionError(f"{name}: the model imports no opset")
    for opset in proto.opset_import:
        newest = max_opset(opset.domain)
        if opset.version < 1:
            raise UnsupportedModelVersionError(
                f"{name}: opset {opset.domain or 'ai.onnx'} version {opset.version} is invalid"
            )
        if newest is not None and opset.version > newest:
            raise UnsupportedModelVersionError(
                f"{name}: opset {opset.domain or 'ai.onnx'} version {opset.version} is newer than "
                f"the newest supported ({newest})"
            )


def infer_shapes(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """onnx's shape and type inference; the model unchanged when inference cannot run."""
    try:
        return onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference is an aid, not a requirement
        logger.debug("%s: shape inference skipped: %s", name, exc)
        return proto


def load_proto(source: Any, *, with_external_data: bool = True) -> tuple[onnx.ModelProto, str]:
    """Read, check and (with external data) complete a model."""
    proto, name, folder = read_proto(source)
    check_versions(proto, name)
    if with_external_data and uses_external_data(proto):
        if folder is None:
            raise ModelError(
                f"{name}: the model keeps tensors in external data files; load it from its path"
            )
        load_external_data(proto, folder, name)
    return proto, name


def load_model(source: Any, options: dict[str, str] | None = None) -> Model:
    """Load an ONNX model into the IR, with inferred value types."""
    proto, name = load_proto(source)
    declared = _dim_params(proto.graph)
    inferred = infer_shapes(proto, name)
    try:
        model = model_from_proto(inferred, source=name)
        _forget_invented_dims(model.graph, declared)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelFormatError(f"{name}: cannot read the model: {exc}") from exc
    try:
        model.graph.topological_order()
    except InvalidGraphError as exc:
        raise InvalidGraphError(f"{name}: {exc}") from None
    return model


def _dim_params(graph: onnx.GraphProto) -> set[str]:
    """Symbolic dimension names the model itself declares (main graph)."""
    names = set()
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.HasField("tensor_type"):
            names.update(d.dim_param for d in value.type.tensor_type.shape.dim if d.dim_param)
    return names


def _forget_invented_dims(graph: Graph, declared: set[str]) -> None:
    """onnx's inference names unknown sizes ``unk__N``; report them as unknown, as onnxruntime does."""
    for info in [*graph.inputs, *graph.outputs, *graph.value_info.values()]:
        t = info.type
        if isinstance(t, TensorType) and t.shape is not None:
            if any(isinstance(d, str) and d.startswith("unk__") and d not in declared for d in t.shape):
                shape = tuple(
                    None if isinstance(d, str) and d.startswith("unk__") and d not in declared else d
                    for d in t.shape
                )
                info.type = TensorType(t.dtype, shape)


def save_model(model: Model, path: str) -> None:
    """Write the IR as an ONNX file (external data for models over 2 GB)."""
    proto = model_to_proto(model)
    large = proto.ByteSize() > 2**31 - 1 if _small_enough(model) else True
    onnx.save_model(
        proto,
        path,
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=os.path.basename(path) + ".data" if large else None,
    )


def _small_enough(model: Model) -> bool:
    total = sum(getattr(v, "nbytes", 0) for v in model.graph.initializers.values())
    return total < 2**31 - 2**26


class OnnxLoader:
    """Loads and saves ONNX models (the eager half of ronn_onnx.plugin.LazyOnnxLoader)."""

    def load(self, source: Any, options: dict[str, str]) -> Model:
        """Load ``source``."""
        return load_model(source, options)

    def save(self, model: Model, path: str) -> None:
        """Save ``model`` as ONNX."""
        save_model(model, path)
