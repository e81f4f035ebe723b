"""Constant folding: nodes whose inputs are all constants become initializers.

A node folds when every input it reads is an initializer that no feed can override (Constant
nodes have no inputs, so they always fold). It is evaluated once with the CPU provider's own
kernel, so the folded value is exactly what the node would have computed at run time. Random
operators, nodes holding subgraphs, nodes producing a graph output, results that are not
tensors and results over :data:`MAX_FOLDED_BYTES` are left alone, unless they take no more
room than the inputs they free (a Transpose of a large weight nothing else reads folds, once,
instead of being transposed on every run).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ..ir import Graph, Model, Node, TensorType, ValueType, tensor_type_of
from ..kernel import KernelContext
from ..provider import NumpyAllocator
from ..registry import KernelRegistry, OptimizerContext
from ._graph import (
    RANDOM_OPS,
    GraphIndex,
    on_every_graph,
    readonly,
    release_constants,
    remove_dead_nodes,
    sort_nodes,
)

logger = logging.getLogger("ronn.optimizer")

CPU = "CPUExecutionProvider"
#: results larger than this stay computed at run time (they would bloat the model)
MAX_FOLDED_BYTES = 16 * 1024 * 1024


def fold_constants(model: Model, context: OptimizerContext) -> bool:
    """Replace every foldable node by initializers holding its results."""
    return on_every_graph(model, lambda graph: fold_graph(graph, model, context.kernels))


def fold_graph(graph: Graph, model: Model, kernels: KernelRegistry) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    types = index.types()
    changed = False
    for node in graph.nodes:
        if not _may_fold(node, index):
            continue
        values = [index.constant(name) if name else None for name in node.inputs]
        if any(name and value is None for name, value in zip(node.inputs, values)):
            continue
        if node.op_type == "Identity" and node.domain in ("", "ai.onnx"):
            results: list[Any] | None = [values[0]]  # the same array, not a copy
        else:
            freed = _freed_bytes(node, values, index)
            results = evaluate(node, values, model, kernels, types, limit=max(MAX_FOLDED_BYTES, freed))
            if results is not None:
                results = _within(results, freed)
        if results is None:
            continue
        for name, value in zip(node.outputs, results):
            if name:
                graph.initializers[name] = readonly(value)
        index.remove(node)
        release_constants(index, node.inputs)  # never hold a big input and its result at once
        changed = True
    index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed


def _freed_bytes(node: Node, values: list[Any], index: GraphIndex) -> int:
    """Bytes of the node's constant inputs that nothing else reads: folding the node frees them
    (0 when they are too small to matter: under :data:`MAX_FOLDED_BYTES` in all)."""
    if sum(value.nbytes for value in values if isinstance(value, np.ndarray)) <= MAX_FOLDED_BYTES:
        return 0
    only_here = {
        name: value for name, value in zip(node.inputs, values)
        if name and isinstance(value, np.ndarray) and index.only_user(name) is node
    }
    return sum(value.nbytes for value in only_here.values())


def _within(results: list[Any], freed: int) -> list[Any] | None:
    """The results when folding them keeps the model's size in bounds: each of at most
    :data:`MAX_FOLDED_BYTES`, or all together no more than the inputs they free (a Transpose of
    a large weight read nowhere else). Large results are made contiguous, so they never keep a
    freed input alive as the base of a view."""
    if all(value is None or value.nbytes <= MAX_FOLDED_BYTES for value in results):
        return results
    if sum(value.nbytes for value in results if value is not None) > freed:
        return None
    return [
        value if value is None or value.flags.c_contiguous else np.ascontiguousarray(value)
        for value in results
    ]


def _may_fold(node: Node, index: GraphIndex) -> bool:
    if not node.outputs or any(o in index.outputs for o in node.outputs if o):
        return False
    if node.domain in ("", "ai.onnx") and node.op_type in RANDOM_OPS:
        return False
    return not any(True for _ in node.subgraphs())


def _declared_bytes(value_type: ValueType | None) -> int:
    """Bytes of a tensor of a fully static declared type (0 when unknown)."""
    if not isinstance(value_type, TensorType) or value_type.shape is None:
        return 0
    if not all(isinstance(d, int) for d in value_type.shape):
        return 0
    try:
        itemsize = value_type.dtype.np_dtype.itemsize
    except TypeError:
        return 0
    return math.prod(value_type.shape) * itemsize  # type: ignore[arg-type]


def evaluate(
    node: Node,
    values: list[Any],
    model: Model,
    kernels: KernelRegistry,
    types: dict[str, ValueType],
    limit: int = MAX_FOLDED_BYTES,
) -> list[Any] | None:
    """The node's results computed by the CPU kernel from constant ``values``, or None when it
    cannot be folded (no kernel, an error, a result that is not a tensor or is too large)."""
    opset = model.opset(node.domain)
    if opset is None:
        return None
    factory = kernels.lookup(node.domain, node.op_type, opset, CPU)
    if factory is None:
        return None
    if any(_declared_bytes(types.get(o)) > limit for o in node.outputs if o):
        return None
    ctx = KernelContext(
        node=node,
        opset=opset,
        xp=np,
        provider=CPU,
        input_types=[tensor_type_of(v) if isinstance(v, np.ndarray) else None for v in values],
        output_types=[types.get(o) if o else None for o in node.outputs],
        model=model,
        allocator=NumpyAllocator(),
        constant_inputs=list(values),
    )
    try:
        run = factory(ctx)
        with np.errstate(all="ignore"):
            outputs = list(run(*values))
    except Exception as exc:  # a node that fails now fails at run time too, with its message
        logger.debug("not folding %s: %s", node.label(), exc)
        return None
    results: list[Any] = []
    for position, name in enumerate(node.outputs):
        if not name:
            results.append(None)
            continue
        if position >= len(outputs):
            return None
        value = outputs[position]
        if isinstance(value, np.generic):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray) or value.nbytes > limit:
            return None
        results.append(value)
    return results
