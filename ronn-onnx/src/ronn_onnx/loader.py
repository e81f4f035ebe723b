"""Load ONNX models from a path, bytes or a ModelProto; check versions; infer shapes; save."""

from __future__ import annotations

import logging
import mmap
import os
from dataclasses import replace
from functools import lru_cache
from typing import Any

import numpy as np

import onnx
from google.protobuf.message import DecodeError

from ronn.errors import (
    InvalidGraphError,
    ModelError,
    ModelFormatError,
    ModelNotFoundError,
    UnsupportedModelVersionError,
)
from ronn.dtypes import DataType, from_numpy
from ronn.ir import Graph, Model, TensorType

from ._wire import TensorBytes, detach_tensors
from .convert import model_from_proto, model_to_proto
from .external import ExternalSource, current_source, uses_external_data

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
    data, name, folder = _read_bytes(source)
    return _parse(data, name), name, folder


def read_detached(source: Any) -> tuple[onnx.ModelProto, str, str | None, TensorBytes | None]:
    """Like :func:`read_proto`, but the large tensors' bytes stay unparsed in the source.

    Their tensors in the returned proto refer to the source (see :mod:`ronn_onnx._wire`); the
    returned :class:`TensorBytes` reads them (None when nothing was detached). Close it when
    done.
    """
    if isinstance(source, onnx.ModelProto):
        try:
            data = source.SerializeToString()
        except Exception:  # noqa: BLE001 - over protobuf's 2 GB: use the message as it is
            return source, "<ModelProto>", None, None
        name, folder = "<ModelProto>", None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data, name, folder = _read_bytes(source)
    else:
        path, name, folder = _checked_path(source)
        mapped = _map(path, name)
        if mapped is None:  # not mappable (a pipe, some network file systems): read it
            data, name, folder = _read_bytes(source)
        else:
            with mapped:  # slices of a map are copies: nothing outlives it
                stripped, count = detach_tensors(mapped)
                if count:
                    proto = _parse(stripped, name)
                else:
                    with memoryview(mapped) as view:
                        proto = _parse(view, name)
                del stripped
            return proto, name, folder, TensorBytes(path=path) if count else None
    stripped, count = detach_tensors(memoryview(data))
    proto = _parse(stripped, name)
    return proto, name, folder, TensorBytes(data=data) if count else None


def _checked_path(source: Any) -> tuple[str, str, str]:
    path = os.fspath(source)
    if not os.path.exists(path):
        raise ModelNotFoundError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise ModelNotFoundError(f"model path is a folder, not a file: {path}")
    return path, path, os.path.dirname(os.path.abspath(path))


def _read_bytes(source: Any) -> tuple[bytes, str, str | None]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return data, f"<{len(data)} bytes>", None
    path, name, folder = _checked_path(source)
    with open(path, "rb") as handle:
        return handle.read(), name, folder


def _map(path: str, name: str) -> mmap.mmap | None:
    """The file memory-mapped read-only; None when it cannot be mapped."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ModelFormatError(f"{name}: the file is empty, not an ONNX model")
        try:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None


def _parse(data: Any, name: str) -> onnx.ModelProto:
    if not len(data):
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
    return proto


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


def load_proto(source: Any) -> tuple[onnx.ModelProto, str, str | None]:
    """Read and check a model; external data stays in its files (see :func:`load_model`)."""
    proto, name, folder = read_proto(source)
    _check(proto, name, folder)
    return proto, name, folder


def _check(proto: onnx.ModelProto, name: str, folder: str | None) -> None:
    check_versions(proto, name)
    if folder is None and uses_external_data(proto):
        raise ModelError(
            f"{name}: the model keeps tensors in external data files; load it from its path"
        )


def load_model(source: Any, options: dict[str, Any] | None = None) -> Model:
    """Load an ONNX model into the IR, with inferred value types.

    Each weight is read once, straight into its array: protobuf never holds the large tensors
    (see :func:`read_detached`), so neither parsing nor shape inference copies them. External
    data is memory-mapped, so a model of several GB does not take its size twice in memory.
    ``options["weights"]``: safetensors files whose tensors fill the initializers.
    """
    proto, name, folder, tensor_bytes = read_detached(source)
    try:
        _check(proto, name, folder)
        declared = _dim_params(proto.graph)
        proto = infer_shapes(proto, name)
        token = current_source.set(ExternalSource(folder, name, tensor_bytes))
        try:
            model = model_from_proto(proto, source=name)
            _forget_invented_dims(model.graph, declared)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelFormatError(f"{name}: cannot read the model: {exc}") from exc
        finally:
            current_source.reset(token)
    finally:
        if tensor_bytes is not None:
            tensor_bytes.close()
    weights = (options or {}).get("weights")
    if weights:
        from .safetensors import fill_initializers

        fill_initializers(model, weights)
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


#: above this many bytes of initializers a model is saved with external data (protobuf's 2 GB)
EXTERNAL_DATA_LIMIT = 2**31 - 2**26
_ALIGN = 4096


def save_model(
    model: Model,
    path: str,
    *,
    external_data: bool | None = None,
    threshold: int = 1024,
    location: str | None = None,
) -> None:
    """Write the IR as an ONNX file.

    With ``external_data`` (by default: when the initializers exceed 2 GB), initializers of at
    least ``threshold`` bytes are streamed, 4 KiB-aligned, into ``location`` (default
    ``<file>.data``) beside the model, so saving never holds a second copy of the weights.
    """
    arrays = {k: v for k, v in model.graph.initializers.items() if isinstance(v, np.ndarray)}
    if external_data is None:
        external_data = sum(a.nbytes for a in arrays.values()) > EXTERNAL_DATA_LIMIT
    if not external_data:
        onnx.save_model(model_to_proto(model), path)
        return
    location = location or os.path.basename(path) + ".data"
    big = {
        name: a for name, a in arrays.items()
        if a.nbytes >= threshold and a.dtype != object and int(from_numpy(a.dtype)) not in _PACKED_TYPES
    }
    small = {k: v for k, v in model.graph.initializers.items() if k not in big}
    proto = model_to_proto(replace(model, graph=replace(model.graph, initializers=small)))
    data_path = os.path.join(os.path.dirname(os.path.abspath(path)), location)
    offset = 0
    with open(data_path, "wb") as handle:
        for name, array in big.items():
            handle.write(b"\0" * (-offset % _ALIGN))
            offset += -offset % _ALIGN
            tensor = onnx.TensorProto(name=name, data_type=int(from_numpy(array.dtype)), dims=array.shape)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(array.nbytes))):
                tensor.external_data.add(key=key, value=value)
            np.ascontiguousarray(array).tofile(handle)
            offset += array.nbytes
            proto.graph.initializer.append(tensor)
    onnx.save_model(proto, path)


_PACKED_TYPES = {int(DataType.INT4), int(DataType.UINT4), int(DataType.FLOAT4E2M1), int(DataType.INT2), int(DataType.UINT2)}


class OnnxLoader:
    """Loads and saves ONNX models (the eager half of ronn_onnx.plugin.LazyOnnxLoader)."""

    def load(self, source: Any, options: dict[str, Any]) -> Model:
        """Load ``source``."""
        return load_model(source, options)

    def save(self, model: Model, path: str) -> None:
        """Save ``model`` as ONNX."""
        save_model(model, path)
