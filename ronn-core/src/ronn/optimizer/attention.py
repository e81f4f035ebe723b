"""Scaled dot-product attention into one ``ronn::ScaledDotProductAttention`` node.

``attention_fusion`` recognises attention as torch exports it in eager mode (BERT/MiniLM,
GPT-2, ``scaled_dot_product_attention``): from the Softmax backwards,

    MatMul(Q', K') -> [Div or Mul by a constant] -> [Where(condition, ., fill)]
                   -> [Add mask] -> Softmax(last axis) -> MatMul(., V)

where ``Q'`` and ``K'`` may each be a Mul by a constant (torch's square-root scales; on the key
side before or after a Transpose). ``K'`` stays what the first MatMul reads (keys already
transposed, (..., D, T)): ronn's Transpose is a view, so absorbing it would save nothing. The
Where may keep the scores where the condition holds (``torch.where(causal, s, min)``) or fill
them there (``masked_fill``). The head split and merge (Reshape, Transpose) stay as they are.

Conservative: every value that disappears has this chain as its only reader and is no graph
output; float32/float64 only; ranks of Q, K, V, the mask and the condition known (at least 2
for Q, K and V, no operand raising the scores' rank); scale and fill are one-element constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir import Graph, Model, Node
from ..registry import OptimizerContext
from ._graph import GraphIndex, can_fuse, on_every_graph, remove_dead_nodes, scalar, sort_nodes, standard_opset
from .fused_ops import make_fused_node

OP = "ScaledDotProductAttention"
_DTYPES = ("float32", "float64")


def fuse_attention(model: Model, context: OptimizerContext) -> bool:
    """Scaled dot-product attention subgraphs -> ``ronn::ScaledDotProductAttention``."""
    if not can_fuse(context, model, ["MatMul", "Softmax"], OP):
        return False
    return on_every_graph(model, lambda graph: _attention(graph, model))


def _is(node: Node | None, *ops: str) -> bool:
    return node is not None and node.domain in ("", "ai.onnx") and node.op_type in ops


@dataclass
class _Match:
    """What the walk from the Softmax back to Q·Kᵀ found."""

    matmul: Node
    nodes: list[Node] = field(default_factory=list)  # every node that goes (besides the last MatMul)
    scale: float = 1.0
    mask: str = ""
    condition: str = ""
    fill: str = ""
    keeps: int = 1
    #: (node, replacement) to apply once the fused node exists
    edits: list[tuple[Node, Node]] = field(default_factory=list)


class _Walker:
    """Matches the chain backwards from the Softmax's input, one stage at a time."""

    STAGES = ("add", "where", "scale", "matmul")

    def __init__(self, index: GraphIndex, dtype: np.dtype, rank: int) -> None:
        self.index = index
        self.dtype = dtype
        self.rank = rank

    def producer(self, value: str, reader: Node) -> Node | None:
        """The producer of ``value`` when it is an intermediate ``reader`` alone reads."""
        index = self.index
        node = index.producer.get(value)
        if node is None or index.removed(node) or not index.internal(value) or index.only_user(value) is not reader:
            return None
        return node

    def constant(self, name: str) -> float | None:
        """The value of a one-element constant of the scores' type that keeps their rank."""
        value = self.index.constant(name)
        if value is None or value.dtype != self.dtype or value.ndim > self.rank:
            return None
        return scalar(value)

    def fits(self, name: str) -> bool:
        """Whether an operand's rank is known and does not raise the scores' rank."""
        rank = self.index.rank(name)
        return rank is not None and rank <= self.rank

    def walk(self, value: str, reader: Node, stages: tuple[str, ...]) -> _Match | None:
        node = self.producer(value, reader)
        if node is None:
            return None
        for position, stage in enumerate(stages):
            rest = stages[position + 1 :]
            if stage == "add" and _is(node, "Add") and len(node.inputs) == 2:
                return self._add(node, rest)
            if stage == "where" and _is(node, "Where") and len(node.inputs) == 3:
                return self._where(node, rest)
            if stage == "scale" and _is(node, "Div", "Mul") and len(node.inputs) == 2:
                return self._scale(node, rest)
            if stage == "matmul" and _is(node, "MatMul") and len(node.inputs) == 2:
                return _Match(node)
        return None

    def _add(self, node: Node, rest: tuple[str, ...]) -> _Match | None:
        a, b = node.inputs
        if a == b:
            return None
        for scores, mask in ((a, b), (b, a)):
            if not mask or not self.fits(mask) or self.index.dtype(mask) not in (None, self.dtype):
                continue
            found = self.walk(scores, node, rest)
            if found is not None:
                found.mask = mask
                found.nodes.append(node)
                return found
        return None

    def _where(self, node: Node, rest: tuple[str, ...]) -> _Match | None:
        condition, a, b = node.inputs
        if not condition or not self.fits(condition):
            return None
        for scores, fill, keeps in ((a, b, 1), (b, a, 0)):
            if self.constant(fill) is None:
                continue
            found = self.walk(scores, node, rest)
            if found is not None:
                found.condition, found.fill, found.keeps = condition, fill, keeps
                found.nodes.append(node)
                return found
        return None

    def _scale(self, node: Node, rest: tuple[str, ...]) -> _Match | None:
        sides = [(node.inputs[0], node.inputs[1])] if node.op_type == "Div" else [node.inputs, node.inputs[::-1]]
        for scores, factor_name in sides:
            factor = self.constant(factor_name)
            if factor is None or factor == 0 or not np.isfinite(factor):
                continue
            found = self.walk(scores, node, rest)
            if found is not None:
                found.scale *= 1.0 / factor if node.op_type == "Div" else factor
                found.nodes.append(node)
                return found
        return None

    def operand_scale(self, value: str, reader: Node) -> tuple[str, float, Node] | None:
        """(x, s, mul) when ``value`` is ``Mul(x, s)`` (s a one-element constant) read by ``reader`` alone."""
        mul = self.producer(value, reader)
        if not _is(mul, "Mul") or len(mul.inputs) != 2:  # type: ignore[union-attr]
            return None
        for x, factor_name in (mul.inputs, mul.inputs[::-1]):  # type: ignore[union-attr]
            factor = self.constant(factor_name)
            rank = self.index.rank(x)
            if factor is None or not np.isfinite(factor) or self.index.constant(x) is not None or rank is None:
                continue
            if self.index.constant(factor_name).ndim <= rank:  # type: ignore[union-attr]  # x keeps its rank
                return x, factor, mul  # type: ignore[return-value]
        return None


def _softmax_on_last_axis(node: Node, rank: int, opset: int) -> bool:
    axis = int(node.attributes.get("axis", -1 if opset >= 13 else 1))
    # before opset 13 Softmax flattens at axis: the same as the last axis when axis is the last
    return -rank <= axis < rank and axis % rank == rank - 1


def _attention(graph: Graph, model: Model) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    opset = standard_opset(model)
    changed = False
    for softmax in graph.nodes:
        if not _is(softmax, "Softmax") or index.removed(softmax) or len(softmax.outputs) != 1:
            continue
        probs = softmax.outputs[0]
        output = index.only_user(probs)
        if (
            not _is(output, "MatMul") or index.removed(output) or not index.internal(probs)
            or len(output.inputs) != 2 or output.inputs[0] != probs
        ):  # fmt: skip
            continue
        found = _match(index, softmax, opset)
        if found is None:
            continue
        match, q, k, dtype = found
        inputs = [q, k, output.inputs[1], match.mask, match.condition, match.fill]
        attributes = {"scale": float(match.scale)}
        if match.condition:
            attributes["condition_keeps"] = match.keeps
        fused = make_fused_node(model, OP, inputs, list(output.outputs), attributes, dtype, softmax.name)
        if fused is None:
            continue
        index.replace(output, fused)
        for done in match.nodes:
            index.remove(done)
        for old, new in match.edits:
            index.replace(old, new)
        changed = True
    index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed


def _match(index: GraphIndex, softmax: Node, opset: int) -> tuple[_Match, str, str, np.dtype] | None:
    """The chain feeding ``softmax`` and the Q and K the fused node reads, with their type."""
    scores = softmax.inputs[0]
    rank = index.rank(scores)
    dtype = index.dtype(scores)
    if rank is None or rank < 2 or dtype is None or dtype.name not in _DTYPES:
        return None
    if not _softmax_on_last_axis(softmax, rank, opset):
        return None
    output = index.only_user(softmax.outputs[0])
    value = output.inputs[1]  # type: ignore[union-attr]
    if (index.rank(value) or 0) < 2 or index.dtype(value) != dtype:
        return None
    walker = _Walker(index, dtype, rank)
    match = walker.walk(scores, softmax, _Walker.STAGES)
    if match is None:
        return None
    qk = match.matmul
    q, k = qk.inputs
    for operand in (q, k):
        if (index.rank(operand) or 0) < 2 or index.dtype(operand) != dtype:
            return None
    if index.rank(qk.outputs[0]) != rank:
        return None  # a mask or condition broadcast the scores to a higher rank
    match.nodes.append(qk)
    match.nodes.append(softmax)
    q_scaled = walker.operand_scale(q, qk)
    if q_scaled is not None:
        q, factor, mul = q_scaled
        match.scale *= factor
        match.nodes.append(mul)
    k_scaled = _key_scale(walker, k, qk)
    if k_scaled is not None:
        k, factor, mul, edit = k_scaled
        match.scale *= factor
        match.nodes.append(mul)
        if edit is not None:
            match.edits.append(edit)
    return match, q, k, dtype


def _key_scale(walker: _Walker, k: str, qk: Node) -> tuple[str, float, Node, tuple[Node, Node] | None] | None:
    """The key side's Mul by a constant, directly before the MatMul or before its Transpose:
    (what the MatMul reads then, the factor, the Mul, the Transpose's replacement if any)."""
    direct = walker.operand_scale(k, qk)
    if direct is not None:
        return direct[0], direct[1], direct[2], None
    transpose = walker.producer(k, qk)
    if not _is(transpose, "Transpose") or len(transpose.inputs) != 1:  # type: ignore[union-attr]
        return None
    behind = walker.operand_scale(transpose.inputs[0], transpose)  # type: ignore[union-attr]
    if behind is None:
        return None
    x, factor, mul = behind
    # the Transpose reads the unscaled keys instead (they precede the Mul that goes)
    unscaled = Node("Transpose", [x], list(transpose.outputs), name=transpose.name,  # type: ignore[union-attr]
                    domain=transpose.domain, attributes=dict(transpose.attributes))  # type: ignore[union-attr]
    return k, factor, mul, (transpose, unscaled)  # type: ignore[return-value]
