"""Operators that onnx defines by a function body run as that body when no kernel exists.

A pass of the ``ronn_register_optimizers`` hook: for each node whose operator no provider of
the session implements, it asks onnx for the operator's function body at the model's opset
(context-dependent bodies get the node and its input types) and replaces the node with it.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import onnx

from ronn.functions import instantiate
from ronn.ir import Graph, Model, Node, tensor_type_of
from ronn.registry import OptimizerContext

from .convert import attribute_to_proto, attribute_value, function_from_proto, node_to_proto, type_to_proto

logger = logging.getLogger("ronn.onnx")
MAX_ROUNDS = 8


def schema_defaults(schema: Any) -> dict[str, Any]:
    """The schema's default attribute values, as plain Python values."""
    defaults = {}
    for name, attr in schema.attributes.items():
        if attr.default_value is not None and attr.default_value.type != 0:
            defaults[name] = attribute_value(attr.default_value)
    return defaults


def function_body(node: Node, opset: int, input_types: list[Any]) -> onnx.FunctionProto | None:
    """onnx's function body for ``node`` at ``opset``, or None when it has none."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return None
    fn_defaults = schema_defaults(schema)
    data = b""
    plain = [v for v in schema.function_opset_versions if v <= opset]
    dependent = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    if schema.has_function and plain:
        data = schema.get_function_with_opset_version(max(plain))
    elif schema.has_context_dependent_function and dependent:
        if any(t is None for t in input_types):
            return None
        types = [type_to_proto(t).SerializeToString() for t in input_types]
        try:
            data = schema.get_context_dependent_function_with_opset_version(
                max(dependent), node_to_proto(node).SerializeToString(), types
            )
        except Exception as exc:  # onnx refuses bodies for some attribute combinations
            logger.debug("no function body for %s: %s", node.label(), exc)
            return None
    if not data:
        return None
    proto = onnx.FunctionProto()
    proto.ParseFromString(data)
    for name, value in fn_defaults.items():
        if name not in {a.name for a in proto.attribute_proto}:
            proto.attribute_proto.append(attribute_to_proto(name, value))
    return proto


def _types(graph: Graph) -> dict[str, Any]:
    types = {v.name: v.type for v in [*graph.inputs, *graph.outputs, *graph.value_info.values()]}
    for name, value in graph.initializers.items():
        types[name] = tensor_type_of(value)
    return types


def expand_function_operators(model: Model, context: OptimizerContext) -> bool:
    """Replace nodes that have no kernel but an onnx function body by that body."""
    counter = itertools.count()
    changed = False
    for _ in range(MAX_ROUNDS):
        round_changed = _expand_graph(model.graph, model, context, counter)
        changed |= round_changed
        if not round_changed:
            break
    return changed


def _expand_graph(graph: Graph, model: Model, context: OptimizerContext, counter: Any) -> bool:
    types = _types(graph)
    nodes: list[Node] = []
    changed = False
    for node in graph.nodes:
        for sub in node.subgraphs():
            changed |= _expand_graph(sub, model, context, counter)
        opset = model.opset(node.domain)
        if (
            opset is None
            or node.domain not in ("", "ai.onnx.ml", "ai.onnx.preview.training")
            or context.has_kernel(node.domain, node.op_type, opset)
            or (node.domain, node.op_type) in model.functions
        ):
            nodes.append(node)
            continue
        proto = function_body(node, opset, [types.get(i) if i else None for i in node.inputs])
        if proto is None:
            nodes.append(node)
            continue
        fn = function_from_proto(proto)
        for domain, version in fn.opset_imports.items():
            model.opset_imports.setdefault(domain, version)
        nodes.extend(instantiate(fn, node, f"{node.name or node.op_type}__fn{next(counter)}__"))
        logger.debug("%s runs as its onnx function body", node.label())
        changed = True
    graph.nodes = nodes
    return changed
