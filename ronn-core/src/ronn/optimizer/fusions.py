"""Operator fusions: MatMul + Add into Gemm, Conv / Gemm / MatMul with their bias,
residual and activation, and BatchNormalization with its activation, into the ``ronn`` domain's fused operators (see :mod:`.fused_ops`).

A fusion into a ``ronn`` operator happens only when the provider that would run the standard
nodes has the fused kernel too, so a provider without it keeps the standard operators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..ir import Graph, Model, Node
from ..registry import OptimizerContext
from ._graph import GraphIndex, can_fuse, on_every_graph, remove_dead_nodes, sort_nodes, standard_opset
from .fused_ops import CONV_ATTRIBUTES, GEMM_ATTRIBUTES, Activation, activation_of, make_fused_node

_FLOATS = ("float16", "float32", "float64", "bfloat16")


def _standard(node: Node | None, op: str) -> bool:
    return node is not None and node.domain in ("", "ai.onnx") and node.op_type == op


# --- MatMul + Add -> Gemm ------------------------------------------------------------------


def fuse_matmul_add(model: Model, context: OptimizerContext) -> bool:
    """``Add(MatMul(A, B), C)`` with 2-D A and B, and C broadcasting to the product, is a Gemm."""
    return on_every_graph(model, _matmul_add)


def _broadcasts_to_product(c_shape: tuple | None, n: object) -> bool:
    """Whether C of ``c_shape`` broadcasts one way to (M, N): (N,), (1, N), (1,), (1, 1), ()."""
    if c_shape is None or len(c_shape) > 2:
        return False
    if len(c_shape) == 2 and c_shape[0] != 1:
        return False
    if c_shape and c_shape[-1] != 1 and not (isinstance(n, int) and c_shape[-1] == n):
        return False
    return True


def _matmul_add(graph: Graph) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    changed = False
    for node in graph.nodes:
        if not _standard(node, "MatMul") or index.removed(node):
            continue
        add = index.only_user(node.outputs[0])
        if not _standard(add, "Add") or index.removed(add) or len(add.inputs) != 2:
            continue
        a_shape, b_shape = index.shape(node.inputs[0]), index.shape(node.inputs[1])
        dtype = index.dtype(node.inputs[0])
        if a_shape is None or b_shape is None or len(a_shape) != 2 or len(b_shape) != 2:
            continue
        if dtype is None or dtype.name not in _FLOATS:
            continue
        bias = add.inputs[1] if add.inputs[0] == node.outputs[0] else add.inputs[0]
        if not _broadcasts_to_product(index.shape(bias), b_shape[1]) or index.dtype(bias) != dtype:
            continue
        index.replace(add, Node("Gemm", [node.inputs[0], node.inputs[1], bias], list(add.outputs), name=node.name))
        index.remove(node)
        changed = True
    index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed


# --- activations ---------------------------------------------------------------------------


def _activation_after(index: GraphIndex, value: str, opset: int) -> tuple[Node, Activation] | None:
    user = index.only_user(value)
    if user is None or index.removed(user):
        return None
    act = activation_of(user, index, opset)
    return (user, act) if act is not None else None


def _residual_after(index: GraphIndex, value: str) -> tuple[Node, str] | None:
    """The Add (or two-input Sum) that is the only reader of ``value``, with its other operand."""
    add = index.only_user(value)
    if not (_standard(add, "Add") or _standard(add, "Sum")) or index.removed(add) or len(add.inputs) != 2:
        return None
    other = add.inputs[1] if add.inputs[0] == value else add.inputs[0]
    return add, other


def fuse_conv_activation(model: Model, context: OptimizerContext) -> bool:
    """Conv [+ residual Add] [+ activation] -> ``ronn::FusedConv``."""
    if not can_fuse(context, model, ["Conv"], "FusedConv"):
        return False
    return on_every_graph(model, lambda graph: _fuse_conv(graph, model))


def _fuse_conv(graph: Graph, model: Model) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    opset = standard_opset(model)
    changed = False
    for node in graph.nodes:
        if not _standard(node, "Conv") or index.removed(node) or len(node.inputs) < 2:
            continue
        chain = [node]
        inputs = (list(node.inputs) + ["", ""])[:3]
        residual = _residual_after(index, node.outputs[0])
        if residual is not None:
            chain.append(residual[0])
            inputs.append(residual[1])
        after = _activation_after(index, chain[-1].outputs[0], opset)
        activation = Activation()
        if after is not None:
            chain.append(after[0])
            activation = after[1]
        if len(chain) == 1:
            continue
        attributes = {k: v for k, v in node.attributes.items() if k in CONV_ATTRIBUTES}
        attributes.update(activation.attributes())
        dtype = index.dtype(node.inputs[0]) or index.dtype(node.inputs[1])
        fused = make_fused_node(model, "FusedConv", inputs, list(chain[-1].outputs), attributes, dtype, node.name)
        if fused is None:
            continue
        index.replace(chain[-1], fused)
        for done in chain[:-1]:
            index.remove(done)
        changed = True
    index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed


def fuse_batchnorm_activation(model: Model, context: OptimizerContext) -> bool:
    """Inference BatchNormalization + activation -> ``ronn::FusedBatchNormalization``
    (pre-activation networks such as DenseNet, where the BatchNormalization cannot fold into a
    convolution before it). Opsets before 9 (``is_test`` / ``spatial`` variants) are left."""
    if standard_opset(model) < 9 or not can_fuse(context, model, ["BatchNormalization"], "FusedBatchNormalization"):
        return False

    def attributes(node: Node) -> dict[str, Any] | None:
        if len(node.inputs) != 5 or int(node.attributes.get("training_mode", 0)) or any(node.outputs[1:]):
            return None
        return {"epsilon": float(node.attributes.get("epsilon", 1e-5))}

    return on_every_graph(model, lambda graph: _fuse_with_activation(graph, model, "BatchNormalization", attributes))


def fuse_gemm_activation(model: Model, context: OptimizerContext) -> bool:
    """Gemm + activation -> ``ronn::FusedGemm``."""
    if not can_fuse(context, model, ["Gemm"], "FusedGemm"):
        return False

    def attributes(node: Node) -> dict[str, Any]:
        return {k: v for k, v in node.attributes.items() if k in GEMM_ATTRIBUTES}

    return on_every_graph(model, lambda graph: _fuse_with_activation(graph, model, "Gemm", attributes))


def _fuse_with_activation(
    graph: Graph, model: Model, op: str, attributes_of: Callable[[Node], dict[str, Any] | None]
) -> bool:
    """Each standard ``op`` node followed by an activation (its output's only reader) becomes
    ``ronn::Fused{op}`` with the node's inputs, ``attributes_of(node)`` (None: not fusable)
    and the activation's attributes."""
    sort_nodes(graph)
    index = GraphIndex(graph)
    opset = standard_opset(model)
    changed = False
    for node in graph.nodes:
        if not _standard(node, op) or index.removed(node):
            continue
        own = attributes_of(node)
        after = _activation_after(index, node.outputs[0], opset) if own is not None else None
        if after is None:
            continue
        attributes = dict(own)
        attributes.update(after[1].attributes())
        dtype = index.dtype(node.inputs[0])
        fused = make_fused_node(model, f"Fused{op}", list(node.inputs), list(after[0].outputs), attributes, dtype, node.name)
        if fused is None:
            continue
        index.replace(after[0], fused)
        index.remove(node)
        changed = True
    index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed


def fuse_matmul_activation(model: Model, context: OptimizerContext) -> bool:
    """MatMul [+ bias Add] [+ activation] -> ``ronn::FusedMatMul`` (any rank)."""
    if not can_fuse(context, model, ["MatMul"], "FusedMatMul"):
        return False
    return on_every_graph(model, lambda graph: _fuse_matmul(graph, model))


def _fuse_matmul(graph: Graph, model: Model) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    opset = standard_opset(model)
    changed = False
    for node in graph.nodes:
        if not _standard(node, "MatMul") or index.removed(node) or len(node.inputs) != 2:
            continue
        dtype = index.dtype(node.inputs[0]) or index.dtype(node.inputs[1])
        if dtype is None or dtype.name not in _FLOATS:
            continue
        chain = [node]
        inputs = list(node.inputs)
        bias = _residual_after(index, node.outputs[0])
        if bias is not None and index.dtype(bias[1]) == dtype:
            chain.append(bias[0])
            inputs.append(bias[1])
        after = _activation_after(index, chain[-1].outputs[0], opset)
        activation = Activation()
        if after is not None:
            chain.append(after[0])
            activation = after[1]
        if len(chain) == 1:
            continue
        fused = make_fused_node(
            model, "FusedMatMul", inputs, list(chain[-1].outputs), activation.attributes(), dtype, node.name
        )
        if fused is None:
            continue
        index.replace(chain[-1], fused)
        for done in chain[:-1]:
            index.remove(done)
        changed = True
    index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed
