"""Chains of layout operators: Squeeze/Unsqueeze/Reshape chains (basic) and Transpose pairs
(extended)."""

from __future__ import annotations

import math

from ..ir import Graph, Model, Node
from ..registry import OptimizerContext
from ._graph import GraphIndex, axes_of, int_list, on_every_graph, remove_dead_nodes, sort_nodes

#: operators that only change a tensor's shape, keeping its elements in order
RESHAPING = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten"})


def _standard(node: Node | None, *ops: str) -> bool:
    return node is not None and node.domain in ("", "ai.onnx") and node.op_type in ops


# --- Squeeze / Unsqueeze / Reshape ---------------------------------------------------------


def simplify_reshape_chains(model: Model, context: OptimizerContext) -> bool:
    """``Reshape(any reshaping op(x), constant)`` reads x directly; ``Unsqueeze`` then
    ``Squeeze`` (or the reverse) on the same axes, and a Reshape to the input's own static
    shape, disappear."""
    return on_every_graph(model, _simplify_chains)


def _static_target(node: Node, index: GraphIndex) -> list[int] | None:
    """A Reshape's constant target when it does not depend on its input's shape (no 0 copies)."""
    target = int_list(index.constant(node.inputs[1])) if len(node.inputs) > 1 else None
    if target is None:
        return None
    if 0 in target and not int(node.attributes.get("allowzero", 0)):
        return None
    return target


def _resolved(target: list[int], shape: tuple, allowzero: bool) -> list[int] | None:
    """The shape a Reshape to ``target`` gives a tensor of static ``shape``."""
    if not all(isinstance(d, int) for d in shape):
        return None
    dims = [shape[i] if t == 0 and not allowzero and i < len(shape) else t for i, t in enumerate(target)]
    if dims.count(-1) > 1:
        return None
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known == 0:
            return None
        dims[dims.index(-1)] = math.prod(shape) // known
    return dims


def _same_axes(first: Node, second: Node, index: GraphIndex) -> bool:
    a = axes_of(first, index)
    b = axes_of(second, index)
    if not a or not b:
        return False
    if sorted(a) == sorted(b):
        return True
    # normalise against the rank both lists refer to: the wider of the two tensors
    rank = index.rank(first.outputs[0]) if first.op_type == "Unsqueeze" else index.rank(first.inputs[0])
    if rank is None:
        return False
    return sorted(x % rank for x in a) == sorted(x % rank for x in b)


def _simplify_chains(graph: Graph) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    changed = False
    for node in graph.nodes:
        if index.removed(node) or not node.inputs or not node.inputs[0]:
            continue
        source = index.producer.get(node.inputs[0])
        if _standard(node, "Reshape") and len(node.inputs) > 1:
            target = _static_target(node, index)
            if target is not None and _standard(source, *RESHAPING) and not index.removed(source):
                index.replace(node, Node(
                    node.op_type, [source.inputs[0], node.inputs[1]], list(node.outputs),
                    name=node.name, domain=node.domain, attributes=dict(node.attributes),
                ))
                changed = True
                continue
            full = int_list(index.constant(node.inputs[1]))
            shape = index.shape(node.inputs[0])
            if full is not None and shape is not None:
                resolved = _resolved(full, shape, bool(int(node.attributes.get("allowzero", 0))))
                if resolved is not None and tuple(resolved) == tuple(shape):
                    if index.replace_value(node.outputs[0], node.inputs[0]):
                        index.remove(node)
                        changed = True
            continue
        if (
            _standard(node, "Squeeze", "Unsqueeze")
            and _standard(source, "Squeeze", "Unsqueeze")
            and source.op_type != node.op_type
            and not index.removed(source)
            and _same_axes(source, node, index)
        ):
            if index.replace_value(node.outputs[0], source.inputs[0]):
                index.remove(node)
                changed = True
    index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed


# --- Transpose -----------------------------------------------------------------------------


def _perm(node: Node, rank: int | None) -> list[int] | None:
    perm = node.attributes.get("perm")
    if perm is not None:
        return [int(p) for p in perm]
    return list(reversed(range(rank))) if rank is not None else None


def fuse_transposes(model: Model, context: OptimizerContext) -> bool:
    """Two Transposes in a row become one (or none when they cancel); an identity Transpose
    goes."""
    return on_every_graph(model, _fuse_transposes)


def _fuse_transposes(graph: Graph) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    changed = False
    for node in graph.nodes:
        if not _standard(node, "Transpose") or index.removed(node):
            continue
        source = index.producer.get(node.inputs[0])
        explicit = node.attributes.get("perm")
        if _standard(source, "Transpose") and not index.removed(source):
            rank = len(explicit) if explicit is not None else None
            first = _perm(source, rank if rank is not None else index.rank(source.inputs[0]))
            if first is None:
                continue
            second = _perm(node, len(first))
            if second is None or len(second) != len(first):
                continue
            combined = [first[p] for p in second]
            if combined == list(range(len(combined))):
                if index.replace_value(node.outputs[0], source.inputs[0]):
                    index.remove(node)
                    changed = True
                continue
            index.replace(node, Node(
                "Transpose", [source.inputs[0]], list(node.outputs), name=node.name,
                attributes={"perm": combined},
            ))
            changed = True
            continue
        perm = _perm(node, index.rank(node.inputs[0]))
        if perm is not None and perm == list(range(len(perm))):
            if index.replace_value(node.outputs[0], node.inputs[0]):
                index.remove(node)
                changed = True
    index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed
