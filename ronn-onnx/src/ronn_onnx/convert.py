"""ONNX protobuf <-> ronn IR."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, numpy_helper

from ronn.dtypes import DataType
from ronn.errors import ModelFormatError
from ronn.ir import (
    Function,
    Graph,
    MapType,
    Model,
    Node,
    OptionalType,
    SequenceType,
    TensorType,
    ValueInfo,
    ValueType,
)

from .external import external_array  # noqa: E402

# --- protobuf -> IR -----------------------------------------------------------------------


def tensor_to_array(tensor: onnx.TensorProto) -> np.ndarray:
    """A TensorProto's value as a numpy array (strings as an object array of ``str``).

    External tensors are memory-mapped from the files of the model being converted
    (see :data:`ronn_onnx.external.current_source`).
    """
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return external_array(tensor)
    array = numpy_helper.to_array(tensor)
    if tensor.data_type == onnx.TensorProto.STRING:
        flat = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v) for v in array.ravel()]
        array = np.array(flat, dtype=object).reshape(array.shape)
    return array


def sparse_to_array(sparse: onnx.SparseTensorProto) -> np.ndarray:
    """A SparseTensorProto as a dense array."""
    values = tensor_to_array(sparse.values)
    indices = tensor_to_array(sparse.indices).astype(np.int64)
    dims = tuple(sparse.dims)
    dense = np.zeros(int(np.prod(dims)) if dims else 1, dtype=values.dtype)
    if indices.ndim == 2:
        flat = np.ravel_multi_index(tuple(indices.T), dims) if indices.size else indices.reshape(-1)
    else:
        flat = indices
    dense[flat] = values.reshape(-1)
    return dense.reshape(dims)


def type_from_proto(proto: onnx.TypeProto) -> ValueType | None:
    """A TypeProto as an IR value type (None when unset)."""
    kind = proto.WhichOneof("value")
    if kind == "tensor_type" or kind == "sparse_tensor_type":
        t = getattr(proto, kind)
        shape: tuple[Any, ...] | None = None
        if t.HasField("shape"):
            shape = tuple(_dim(d) for d in t.shape.dim)
        return TensorType(DataType(t.elem_type), shape)
    if kind == "sequence_type":
        return SequenceType(type_from_proto(proto.sequence_type.elem_type))
    if kind == "optional_type":
        return OptionalType(type_from_proto(proto.optional_type.elem_type))
    if kind == "map_type":
        return MapType(DataType(proto.map_type.key_type), type_from_proto(proto.map_type.value_type))
    return None


def _dim(dim: onnx.TensorShapeProto.Dimension) -> int | str | None:
    value = dim.dim_value
    if value or dim.HasField("dim_value"):  # most dimensions are sizes: one look-up
        return value
    return dim.dim_param or None


def _value_info(proto: onnx.ValueInfoProto, known: dict[bytes, ValueType | None] | None = None) -> ValueInfo:
    """A ValueInfoProto as IR; ``known`` shares one (immutable) type among values whose
    TypeProtos are equal byte for byte (the many values of a model that share a shape)."""
    value_type = None
    if proto.HasField("type"):
        if known is None:
            value_type = type_from_proto(proto.type)
        else:
            key = proto.type.SerializeToString()
            if key in known:
                value_type = known[key]
            else:
                value_type = known[key] = type_from_proto(proto.type)
    return ValueInfo(proto.name, value_type, proto.doc_string)


def attribute_value(attr: AttributeProto) -> Any:
    """An AttributeProto's value as a plain Python value."""
    t = attr.type
    if t == AttributeProto.FLOAT:
        return float(attr.f)
    if t == AttributeProto.INT:
        return int(attr.i)
    if t == AttributeProto.STRING:
        return attr.s.decode("utf-8", "surrogateescape")
    if t == AttributeProto.TENSOR:
        return tensor_to_array(attr.t)
    if t == AttributeProto.SPARSE_TENSOR:
        return sparse_to_array(attr.sparse_tensor)
    if t == AttributeProto.GRAPH:
        return graph_from_proto(attr.g)
    if t == AttributeProto.TYPE_PROTO:
        return type_from_proto(attr.tp)
    if t == AttributeProto.FLOATS:
        return [float(v) for v in attr.floats]
    if t == AttributeProto.INTS:
        return [int(v) for v in attr.ints]
    if t == AttributeProto.STRINGS:
        return [v.decode("utf-8", "surrogateescape") for v in attr.strings]
    if t == AttributeProto.TENSORS:
        return [tensor_to_array(v) for v in attr.tensors]
    if t == AttributeProto.GRAPHS:
        return [graph_from_proto(v) for v in attr.graphs]
    if t == AttributeProto.SPARSE_TENSORS:
        return [sparse_to_array(v) for v in attr.sparse_tensors]
    if t == AttributeProto.TYPE_PROTOS:
        return [type_from_proto(v) for v in attr.type_protos]
    raise ModelFormatError(f"attribute {attr.name!r} has unknown type {t}")


def node_from_proto(proto: onnx.NodeProto) -> Node:
    """A NodeProto as an IR node."""
    attributes: dict[str, Any] = {}
    refs: dict[str, str] = {}
    for attr in proto.attribute:
        if attr.ref_attr_name:
            refs[attr.name] = attr.ref_attr_name
        else:
            attributes[attr.name] = attribute_value(attr)
    return Node(
        op_type=proto.op_type,
        inputs=list(proto.input),
        outputs=list(proto.output),
        name=proto.name,
        domain="" if proto.domain == "ai.onnx" else proto.domain,
        attributes=attributes,
        doc_string=proto.doc_string,
        attribute_refs=refs,
        overload=proto.overload,
    )


def graph_from_proto(proto: onnx.GraphProto) -> Graph:
    """A GraphProto as an IR graph."""
    initializers: dict[str, Any] = {t.name: _readonly(tensor_to_array(t)) for t in proto.initializer}
    for sparse in proto.sparse_initializer:
        initializers[sparse.values.name] = _readonly(sparse_to_array(sparse))
    known: dict[bytes, ValueType | None] = {}
    return Graph(
        nodes=[node_from_proto(n) for n in proto.node],
        inputs=[_value_info(v, known) for v in proto.input],
        outputs=[_value_info(v, known) for v in proto.output],
        initializers=initializers,
        value_info={v.name: _value_info(v, known) for v in proto.value_info},
        name=proto.name,
        doc_string=proto.doc_string,
    )


def function_from_proto(proto: onnx.FunctionProto) -> Function:
    """A FunctionProto as an IR function."""
    defaults = {a.name: attribute_value(a) for a in proto.attribute_proto}
    return Function(
        domain=proto.domain,
        name=proto.name,
        inputs=list(proto.input),
        outputs=list(proto.output),
        nodes=[node_from_proto(n) for n in proto.node],
        attributes=list(proto.attribute) + list(defaults),
        attribute_defaults=defaults,
        opset_imports={("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import},
        doc_string=proto.doc_string,
        overload=proto.overload,
    )


def model_from_proto(proto: onnx.ModelProto, source: str = "<memory>") -> Model:
    """A ModelProto as an IR model."""
    functions = {}
    for f in proto.functions:
        fn = function_from_proto(f)
        functions[fn.key] = fn
    return Model(
        graph=graph_from_proto(proto.graph),
        opset_imports={("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import},
        ir_version=proto.ir_version,
        producer_name=proto.producer_name,
        producer_version=proto.producer_version,
        domain=proto.domain,
        model_version=proto.model_version if proto.HasField("model_version") else None,
        doc_string=proto.doc_string,
        metadata={p.key: p.value for p in proto.metadata_props},
        functions=functions,
        source=source,
    )


def _readonly(array: np.ndarray) -> np.ndarray:
    if array.flags.writeable:
        array.flags.writeable = False
    return array


# --- IR -> protobuf -----------------------------------------------------------------------


def array_to_tensor(array: np.ndarray, name: str = "") -> onnx.TensorProto:
    """A numpy array as a TensorProto."""
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind in "US":
        flat = [str(v).encode("utf-8", "surrogateescape") for v in array.ravel()]
        tensor = onnx.helper.make_tensor(name, onnx.TensorProto.STRING, array.shape, flat)
        return tensor
    return numpy_helper.from_array(np.ascontiguousarray(array).reshape(array.shape), name)


def type_to_proto(value_type: ValueType | None) -> onnx.TypeProto:
    """An IR value type as a TypeProto."""
    proto = onnx.TypeProto()
    if isinstance(value_type, TensorType):
        proto.tensor_type.elem_type = int(value_type.dtype)
        if value_type.shape is not None:
            shape = proto.tensor_type.shape
            shape.SetInParent()
            for dim in value_type.shape:
                d = shape.dim.add()
                if isinstance(dim, int):
                    d.dim_value = dim
                elif isinstance(dim, str):
                    d.dim_param = dim
    elif isinstance(value_type, SequenceType):
        proto.sequence_type.elem_type.CopyFrom(type_to_proto(value_type.elem))
    elif isinstance(value_type, OptionalType):
        proto.optional_type.elem_type.CopyFrom(type_to_proto(value_type.elem))
    elif isinstance(value_type, MapType):
        proto.map_type.key_type = int(value_type.key)
        proto.map_type.value_type.CopyFrom(type_to_proto(value_type.value))
    return proto


def _value_info_proto(info: ValueInfo) -> onnx.ValueInfoProto:
    proto = onnx.ValueInfoProto(name=info.name, doc_string=info.doc_string)
    if info.type is not None:
        proto.type.CopyFrom(type_to_proto(info.type))
    return proto


def attribute_to_proto(name: str, value: Any) -> AttributeProto:
    """A plain Python attribute value as an AttributeProto."""
    if isinstance(value, Graph):
        return onnx.helper.make_attribute(name, graph_to_proto(value))
    if isinstance(value, np.ndarray):
        return onnx.helper.make_attribute(name, array_to_tensor(value))
    if isinstance(value, (TensorType, SequenceType, OptionalType, MapType)):
        attr = AttributeProto(name=name, type=AttributeProto.TYPE_PROTO)
        attr.tp.CopyFrom(type_to_proto(value))
        return attr
    if isinstance(value, list) and value:
        first = value[0]
        if isinstance(first, Graph):
            return onnx.helper.make_attribute(name, [graph_to_proto(g) for g in value])
        if isinstance(first, np.ndarray):
            return onnx.helper.make_attribute(name, [array_to_tensor(v) for v in value])
        if isinstance(first, (TensorType, SequenceType, OptionalType, MapType)):
            attr = AttributeProto(name=name, type=AttributeProto.TYPE_PROTOS)
            attr.type_protos.extend(type_to_proto(v) for v in value)
            return attr
    return onnx.helper.make_attribute(name, value)


@functools.lru_cache(maxsize=None)
def _reference_type(domain: str, op_type: str, name: str) -> int:
    """The type of an operator's attribute from its schema (0 when onnx does not know it)."""
    try:
        schema = onnx.defs.get_schema(op_type, domain=domain)
    except onnx.defs.SchemaError:
        return 0
    attr = schema.attributes.get(name)
    return int(attr.type) if attr is not None else 0


def node_to_proto(node: Node) -> onnx.NodeProto:
    """An IR node as a NodeProto."""
    proto = onnx.helper.make_node(
        node.op_type, node.inputs, node.outputs, name=node.name or None, domain=node.domain or None,
        doc_string=node.doc_string or None,
    )
    for key, value in node.attributes.items():
        proto.attribute.append(attribute_to_proto(key, value))
    for key, ref in node.attribute_refs.items():
        attr = AttributeProto(name=key, ref_attr_name=ref)
        attr_type = _reference_type(node.domain, node.op_type, key)
        if attr_type:
            attr.type = attr_type  # onnx's checker wants references typed
        proto.attribute.append(attr)
    if node.overload:
        proto.overload = node.overload
    return proto


def graph_to_proto(graph: Graph) -> onnx.GraphProto:
    """An IR graph as a GraphProto."""
    return onnx.helper.make_graph(
        [node_to_proto(n) for n in graph.nodes],
        graph.name or "graph",
        [_value_info_proto(v) for v in graph.inputs],
        [_value_info_proto(v) for v in graph.outputs],
        initializer=[array_to_tensor(v, k) for k, v in graph.initializers.items()],
        doc_string=graph.doc_string or None,
        value_info=[_value_info_proto(v) for v in graph.value_info.values()],
    )


def model_to_proto(model: Model) -> onnx.ModelProto:
    """An IR model as a ModelProto."""
    opsets = [onnx.helper.make_opsetid(d, v) for d, v in model.opset_imports.items()]
    proto = onnx.helper.make_model(graph_to_proto(model.graph), opset_imports=opsets)
    proto.ir_version = model.ir_version or onnx.IR_VERSION
    proto.producer_name = model.producer_name
    proto.producer_version = model.producer_version
    proto.domain = model.domain
    if model.model_version is not None:
        proto.model_version = model.model_version
    proto.doc_string = model.doc_string
    for key, value in model.metadata.items():
        proto.metadata_props.add(key=key, value=value)
    for fn in model.functions.values():
        fproto = onnx.helper.make_function(
            fn.domain, fn.name, fn.inputs, fn.outputs, [node_to_proto(n) for n in fn.nodes],
            [onnx.helper.make_opsetid(d, v) for d, v in fn.opset_imports.items()],
            attributes=[a for a in fn.attributes if a not in fn.attribute_defaults],
        )
        for key, value in fn.attribute_defaults.items():
            fproto.attribute_proto.append(attribute_to_proto(key, value))
        if fn.overload:
            fproto.overload = fn.overload
        if fn.doc_string:
            fproto.doc_string = fn.doc_string
        proto.functions.append(fproto)
    return proto
