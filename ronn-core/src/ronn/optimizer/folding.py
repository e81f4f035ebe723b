"""Per-channel affine operations folded into the weights before them.

* ``conv_bn_fusion``: ``BatchNormalization(Conv(x, W, B))`` with constant statistics becomes
  ``Conv(x, W * s, (B - mean) * s + beta)`` with ``s = scale / sqrt(var + epsilon)``.
* ``conv_mul_fusion``: a Conv (or an inference BatchNormalization) times a constant that varies
  only along the channel axis scales the weights and bias (scale and bias) instead; a division
  by one multiplies by its reciprocal.
* ``conv_add_fusion``: a Conv (or BatchNormalization) plus or minus such a constant moves it
  into the bias.

The new weights are computed in float64 and rounded once to the weights' type; weights shared
with other nodes are never changed in place (the folded ones are new initializers).
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Model, Node
from ..registry import OptimizerContext
from ._graph import (
    GraphIndex,
    Namer,
    on_every_graph,
    readonly,
    release_constants,
    remove_dead_nodes,
    sort_nodes,
)


def _standard(node: Node | None, op: str) -> bool:
    return node is not None and node.domain in ("", "ai.onnx") and node.op_type == op


class _Affine:
    """A Conv or BatchNormalization whose per-channel scale and shift can absorb constants."""

    def __init__(self, node: Node, index: GraphIndex) -> None:
        self.node = node
        self.ok = False
        if _standard(node, "Conv") and len(node.inputs) >= 2:
            weights = index.constant(node.inputs[1])
            bias = index.constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
            if weights is None or weights.dtype.kind != "f" or weights.ndim < 3:
                return
            if len(node.inputs) > 2 and node.inputs[2] and bias is None:
                return
            self.channels = weights.shape[0]
            self.rank = weights.ndim
            self.dtype = weights.dtype
            self.scale = weights  # scaled along axis 0
            self.shift = bias
            self.ok = bias is None or bias.shape == (self.channels,)
        elif _standard(node, "BatchNormalization") and len(node.inputs) == 5:
            if int(node.attributes.get("training_mode", 0)) or not int(node.attributes.get("spatial", 1)):
                return
            if any(index.is_used(o) for o in node.outputs[1:] if o):
                return
            params = [index.constant(n) for n in node.inputs[1:]]
            rank = index.rank(node.inputs[0])
            if any(p is None or p.ndim != 1 or p.dtype.kind != "f" for p in params):
                return
            self.channels = params[0].shape[0]
            if any(p.shape != (self.channels,) for p in params):  # type: ignore[union-attr]
                return
            self.rank = rank
            self.dtype = params[0].dtype  # type: ignore[union-attr]
            self.scale = params[0]
            self.shift = params[1]
            self.ok = True

    def channel_values(self, value: np.ndarray | None) -> np.ndarray | None:
        """``value`` as one float64 number per channel, when it varies along the channel axis only."""
        if value is None or self.rank is None or value.dtype != self.dtype or value.ndim > self.rank:
            return None
        shape = (1,) * (self.rank - value.ndim) + value.shape
        if any(d != 1 for axis, d in enumerate(shape) if axis != 1) or shape[1] not in (1, self.channels):
            return None
        return np.broadcast_to(value.astype(np.float64).reshape(-1), (self.channels,))

    def rebuilt(
        self, scale: np.ndarray, shift: np.ndarray | None, output: str, index: GraphIndex, namer: Namer
    ) -> Node:
        """The node with new per-channel scale and shift, writing ``output``."""
        graph = index.graph
        node = self.node
        inputs = list(node.inputs)
        if _standard(node, "Conv"):
            if scale is not self.scale:  # the weights changed (an added bias leaves them)
                inputs[1] = _add(graph, namer, f"{node.name or output}_W", scale.astype(self.dtype, copy=False))
            if shift is not None:
                bias_name = _add(graph, namer, f"{node.name or output}_B", shift.astype(self.dtype))
                inputs = inputs[:2] + [bias_name]
        else:
            if scale is not self.scale:
                inputs[1] = _add(graph, namer, f"{node.name or output}_scale", scale.astype(self.dtype, copy=False))
            assert shift is not None
            inputs[2] = _add(graph, namer, f"{node.name or output}_bias", shift.astype(self.dtype))
        outputs = [output] + ([""] * (len(node.outputs) - 1) if _standard(node, "BatchNormalization") else [])
        return Node(
            node.op_type, inputs, outputs[: len(node.outputs)], name=node.name,
            attributes=dict(node.attributes), doc_string=node.doc_string,
        )

    def times(self, factor: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(scale, shift) after multiplying the output by a per-channel ``factor``.

        The scale (for a Conv: all its weights) is computed in float64 and rounded once into
        the weights' type, in one pass without a float64 copy of the weights.
        """
        per_channel = np.asarray(factor, np.float64).reshape((-1,) + (1,) * (self.scale.ndim - 1))
        scale = np.multiply(
            self.scale, per_channel, out=np.empty(self.scale.shape, self.dtype), dtype=np.float64,
            casting="same_kind",
        )
        shift = None if self.shift is None else self.shift.astype(np.float64) * factor
        return scale, shift

    def plus(self, term: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) after adding a per-channel ``term`` to the output: the scale is
        unchanged (the same array)."""
        shift = term if self.shift is None else self.shift.astype(np.float64) + term
        return self.scale, shift


def _add(graph: Graph, namer: Namer, base: str, value: np.ndarray) -> str:
    name = namer.fresh(base)
    graph.initializers[name] = readonly(value)
    return name


# --- Conv + BatchNormalization ------------------------------------------------------------


def fuse_conv_batchnorm(model: Model, context: OptimizerContext) -> bool:
    """Fold inference BatchNormalization into the Conv before it."""
    namer = Namer(model)
    return on_every_graph(model, lambda graph: _conv_bn(graph, namer))


def _conv_bn(graph: Graph, namer: Namer) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    changed = False
    for bn in graph.nodes:
        if not _standard(bn, "BatchNormalization") or index.removed(bn):
            continue
        conv = index.producer.get(bn.inputs[0])
        if not _standard(conv, "Conv") or index.removed(conv) or index.only_user(bn.inputs[0]) is not bn:
            continue
        target = _Affine(conv, index)
        norm = _Affine(bn, index)
        if not target.ok or not norm.ok or norm.channels != target.channels or norm.dtype != target.dtype:
            continue
        epsilon = float(bn.attributes.get("epsilon", 1e-5))
        gamma, beta, mean, var = (np.asarray(index.constant(n), np.float64) for n in bn.inputs[1:5])
        factor = gamma / np.sqrt(var + epsilon)
        scale, shift = target.times(factor)
        shift = (shift if shift is not None else 0.0) - mean * factor + beta
        index.replace(bn, target.rebuilt(scale, shift, bn.outputs[0], index, namer))
        index.remove(conv)
        release_constants(index, conv.inputs + bn.inputs)
        changed = True
    index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed


# --- Conv/BatchNormalization + per-channel Mul or Add --------------------------------------


def fuse_conv_mul(model: Model, context: OptimizerContext) -> bool:
    """Fold a per-channel constant Mul (or Div) into the Conv or BatchNormalization before it."""
    namer = Namer(model)
    return on_every_graph(model, lambda graph: _conv_elementwise(graph, namer, ("Mul", "Div")))


def fuse_conv_add(model: Model, context: OptimizerContext) -> bool:
    """Fold a per-channel constant Add (or Sub) into the Conv's or BatchNormalization's bias."""
    namer = Namer(model)
    return on_every_graph(model, lambda graph: _conv_elementwise(graph, namer, ("Add", "Sub")))


def _conv_elementwise(graph: Graph, namer: Namer, ops: tuple[str, ...]) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    changed = False
    for node in graph.nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ops or len(node.inputs) != 2:
            continue
        if index.removed(node):
            continue
        for position in (0, 1):
            if position == 1 and node.op_type in ("Sub", "Div"):
                break  # c - conv and c / conv are not affine in the weights
            source = index.producer.get(node.inputs[position])
            if source is None or index.removed(source) or index.only_user(node.inputs[position]) is not node:
                continue
            target = _Affine(source, index)
            if not target.ok:
                continue
            values = target.channel_values(index.constant(node.inputs[1 - position]))
            if values is None:
                continue
            if node.op_type == "Mul":
                scale, shift = target.times(values)
            elif node.op_type == "Div":
                if not np.all(values):
                    continue
                scale, shift = target.times(1.0 / values)
            elif node.op_type == "Add":
                scale, shift = target.plus(values)
            else:
                scale, shift = target.plus(-values)
            index.replace(node, target.rebuilt(scale, shift, node.outputs[0], index, namer))
            index.remove(source)
            release_constants(index, source.inputs + node.inputs)
            changed = True
            break
    index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed
