"""Basic clean-ups: legacy initializer inputs, Identity and inference-Dropout elimination,
dead-code and common-subexpression elimination."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Graph, Model, Node
from ..registry import OptimizerContext
from ._graph import (
    RANDOM_OPS,
    GraphIndex,
    on_every_graph,
    remove_dead_nodes,
    sort_nodes,
)

#: initializers up to this size are merged with identical ones by CSE
MERGE_INITIALIZER_BYTES = 1 << 16


def legacy_initializer_inputs(model: Model, context: OptimizerContext) -> bool:
    """Before IR version 4 every initializer had to be listed among the graph's inputs, and
    such models treat them as constants (onnxruntime neither lists them as overridable nor
    accepts feeds for them). Drop them from the inputs so passes see them as constants."""
    if not 0 < model.ir_version < 4:
        return False
    graph = model.graph
    kept = [v for v in graph.inputs if v.name not in graph.initializers]
    changed = len(kept) != len(graph.inputs)
    graph.inputs = kept
    model.ir_version = 4  # what the graph now is: initializers need not be inputs
    return changed


# --- Identity and Dropout ------------------------------------------------------------------


def eliminate_identities(model: Model, context: OptimizerContext) -> bool:
    """Remove Identity nodes, Casts to the type a value already has, and Dropout nodes that
    are identities at inference."""
    return on_every_graph(model, lambda graph: _eliminate_identities(graph, model))


def _passthrough(node: Node, index: GraphIndex, model: Model) -> str | None:
    """The input a node forwards unchanged, or None."""
    if node.domain not in ("", "ai.onnx") or not node.inputs or not node.inputs[0]:
        return None
    if node.op_type == "Identity":
        return node.inputs[0]
    if node.op_type == "Cast" and isinstance(node.attributes.get("to"), int):  # Cast-1 names types
        source = index.tensor_type(node.inputs[0])
        if source is not None and int(source.dtype) == node.attributes["to"]:
            return node.inputs[0]  # a Cast to the type the value already has
        return None
    if node.op_type == "Dropout":
        if len(node.outputs) > 1 and node.outputs[1] and index.is_used(node.outputs[1]):
            return None  # the mask is read
        if (model.opset("") or 0) >= 12 and len(node.inputs) > 2 and node.inputs[2]:
            training = index.constant(node.inputs[2])
            if training is None or bool(np.asarray(training).reshape(-1)[0]):
                return None
        return node.inputs[0]
    return None


def _eliminate_identities(graph: Graph, model: Model) -> bool:
    index = GraphIndex(graph)
    for node in list(graph.nodes):
        source = _passthrough(node, index, model)
        if source is None or not node.outputs[0]:
            continue
        if index.replace_value(node.outputs[0], source):
            index.remove(node)
    changed = index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed


# --- dead code -----------------------------------------------------------------------------


def eliminate_dead_code(model: Model, context: OptimizerContext) -> bool:
    """Remove nodes whose results nothing reads, and initializers nothing reads."""
    return on_every_graph(model, remove_dead_nodes)


# --- common subexpressions -----------------------------------------------------------------


def eliminate_common_subexpressions(model: Model, context: OptimizerContext) -> bool:
    """Merge identical small initializers, then nodes computing the same operator with the same
    attributes on the same inputs (random operators and nodes holding subgraphs excepted)."""
    return on_every_graph(model, _cse)


def _hashable(value: Any) -> Any:
    """A hashable stand-in for an attribute value; raises TypeError for subgraphs."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return ("array", value.shape, tuple(str(v) for v in value.reshape(-1)))
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, float) and value != value:
        raise TypeError("NaN never compares equal")
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if hasattr(value, "nodes"):  # a Graph
        raise TypeError("subgraph")
    hash(value)
    return value


def _node_key(node: Node) -> Any:
    try:
        attributes = tuple(sorted((k, _hashable(v)) for k, v in node.attributes.items()))
    except TypeError:
        return None
    return (
        node.domain,
        node.op_type,
        node.overload,
        tuple(node.inputs),
        len(node.outputs),
        attributes,
        tuple(sorted(node.attribute_refs.items())),
    )


def _merge_initializers(graph: Graph, index: GraphIndex) -> bool:
    canonical: dict[Any, str] = {}
    changed = False
    for name in list(graph.initializers):
        value = index.constant(name)
        if value is None or value.dtype == object or value.nbytes > MERGE_INITIALIZER_BYTES:
            continue
        if name in index.outputs:
            continue
        key = (value.dtype.str, value.shape, value.tobytes())
        first = canonical.setdefault(key, name)
        if first == name or not index.can_rename(name, first):
            continue
        index.replace_uses(name, first)
        del graph.initializers[name]
        changed = True
    return changed


def _cse(graph: Graph) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    changed = _merge_initializers(graph, index)
    seen: dict[Any, Node] = {}
    for node in graph.nodes:
        if not node.outputs or (node.domain in ("", "ai.onnx") and node.op_type in RANDOM_OPS):
            continue
        key = _node_key(node)
        if key is None:
            continue
        first = seen.get(key)
        if first is None:
            seen[key] = node
            continue
        pairs = list(zip(node.outputs, first.outputs))
        if any(
            dup and (dup in index.outputs or not keep or not index.can_rename(dup, keep))
            for dup, keep in pairs
        ):
            continue
        for dup, keep in pairs:
            if dup:
                index.replace_uses(dup, keep)
        index.remove(node)
        changed = True
    index.commit()
    return changed


__all__ = [
    "eliminate_common_subexpressions",
    "eliminate_dead_code",
    "eliminate_identities",
    "legacy_initializer_inputs",
]
