"""Decomposed LayerNormalization and GELU back into one operator.

* ``layer_norm_fusion``: ``ReduceMean -> Sub -> Pow 2 (or Mul by itself) -> ReduceMean -> Add
  epsilon -> Sqrt -> Div [-> Mul scale] [-> Add bias]`` over the trailing axes becomes
  LayerNormalization: the standard operator when the model's opset is 17 or newer, else
  ``ronn::LayerNormalization`` (float32 only).
* ``gelu_fusion``: ``0.5 * x * (1 + erf(x / sqrt 2))`` and ``0.5 * x * (1 + tanh(sqrt(2/pi) *
  (x + 0.044715 x^3)))`` (the products in any order) become Gelu: standard from opset 20, else
  ``ronn::Gelu`` with ``approximate`` "none" or "tanh" (float32 only).
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, Model, Node
from ..registry import OptimizerContext
from ._graph import (
    GraphIndex,
    Namer,
    axes_of,
    can_fuse,
    is_close,
    on_every_graph,
    readonly,
    remove_dead_nodes,
    scalar,
    sort_nodes,
    standard_opset,
)
from .fused_ops import make_fused_node


def _is(node: Node | None, *ops: str) -> bool:
    return node is not None and node.domain in ("", "ai.onnx") and node.op_type in ops


def _other(node: Node, value: str) -> str | None:
    """The other operand of a binary node one of whose operands is ``value``."""
    if len(node.inputs) != 2:
        return None
    if node.inputs[0] == value:
        return node.inputs[1]
    if node.inputs[1] == value:
        return node.inputs[0]
    return None


def _next(index: GraphIndex, value: str, *ops: str) -> Node | None:
    """The only reader of ``value``, when it is one of ``ops``."""
    user = index.only_user(value)
    return user if _is(user, *ops) and not index.removed(user) else None


# --- LayerNormalization --------------------------------------------------------------------


def fuse_layer_norm(model: Model, context: OptimizerContext) -> bool:
    """Decomposed layer normalizations -> LayerNormalization."""
    opset = standard_opset(model)
    if opset < 17 and not can_fuse(context, model, ["ReduceMean"], "LayerNormalization"):
        return False
    namer = Namer(model)
    return on_every_graph(model, lambda graph: _layer_norm(graph, model, namer, opset))


def _trailing_axis(axes: list[int] | None, rank: int | None) -> int | None:
    """The first of ``axes`` when they are the last axes of the tensor (as a negative axis)."""
    if not axes:
        return None
    if any(a >= 0 for a in axes):
        if rank is None:
            return None
        axes = [a - rank if a >= 0 else a for a in axes]
    axes = sorted(axes)
    return axes[0] if axes == list(range(axes[0], 0)) else None


def _layer_norm(graph: Graph, model: Model, namer: Namer, opset: int) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    changed = False
    for mean in graph.nodes:
        if not _is(mean, "ReduceMean") or index.removed(mean) or not int(mean.attributes.get("keepdims", 1)):
            continue
        x = mean.inputs[0]
        axis = _trailing_axis(axes_of(mean, index), index.rank(x))
        dtype = index.dtype(x)
        if axis is None or dtype is None or dtype.name not in ("float32", "float16"):
            continue
        if opset < 17 and dtype != np.float32:
            continue
        sub = _next(index, mean.outputs[0], "Sub")
        if sub is None or sub.inputs != [x, mean.outputs[0]]:
            continue
        d = sub.outputs[0]
        if d in index.outputs or d in index.subgraph_reads:
            continue
        users = {id(u): u for u in index.users(d)}
        if len(users) != 2:
            continue
        square = div = None
        for user in users.values():
            if _is(user, "Pow") and user.inputs[0] == d and is_close(scalar(index.constant(user.inputs[1])), 2.0):
                square = user
            elif _is(user, "Mul") and user.inputs == [d, d]:
                square = user
            elif _is(user, "Div") and user.inputs[0] == d:
                div = user
        if square is None or div is None or len(index.users(d)) != (3 if square.op_type == "Mul" else 2):
            continue
        var = _next(index, square.outputs[0], "ReduceMean")
        if var is None or not int(var.attributes.get("keepdims", 1)):
            continue
        if _trailing_axis(axes_of(var, index), index.rank(x)) != axis:
            continue
        add_eps = _next(index, var.outputs[0], "Add")
        eps_name = _other(add_eps, var.outputs[0]) if add_eps is not None else None
        epsilon = scalar(index.constant(eps_name)) if eps_name else None
        if epsilon is None:
            continue
        sqrt = _next(index, add_eps.outputs[0], "Sqrt")  # type: ignore[union-attr]
        if sqrt is None or div.inputs != [d, sqrt.outputs[0]] or index.only_user(sqrt.outputs[0]) is not div:
            continue
        chain = [mean, sub, square, var, add_eps, sqrt, div]
        last = div
        shape = index.shape(x)
        normalized = shape[axis:] if shape is not None else None
        scale_name = bias_name = None
        mul = _next(index, div.outputs[0], "Mul")
        if mul is not None:
            scale_name = _other(mul, div.outputs[0])
            if scale_name is None or not _fits(index.constant(scale_name), normalized, -axis, dtype):
                scale_name = None
            else:
                chain.append(mul)
                last = mul
        add = _next(index, last.outputs[0], "Add")
        if add is not None:
            bias_name = _other(add, last.outputs[0])
            if bias_name is None or not _fits(index.constant(bias_name), normalized, -axis, dtype):
                bias_name = None
            else:
                chain.append(add)
                last = add
        if scale_name is None:
            if normalized is None or not all(isinstance(n, int) for n in normalized):
                continue
            scale_name = namer.fresh(f"{mean.name or x}_scale")
            graph.initializers[scale_name] = readonly(np.ones(normalized, dtype=dtype))
        inputs = [x, scale_name] + ([bias_name] if bias_name else [])
        attributes = {"axis": axis, "epsilon": float(epsilon)}
        if opset >= 17:
            fused: Node | None = Node(
                "LayerNormalization", inputs, list(last.outputs), name=mean.name, attributes=attributes
            )
        else:
            fused = make_fused_node(
                model, "LayerNormalization", inputs, list(last.outputs), attributes, dtype, mean.name
            )
        if fused is None:
            continue
        index.replace(last, fused)
        for done in chain:
            if done is not last:
                index.remove(done)
        changed = True
    index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed


def _fits(value: np.ndarray | None, normalized: tuple | None, count: int, dtype: np.dtype) -> bool:
    """Whether a scale or bias constant covers exactly the normalized axes."""
    if value is None or value.dtype != dtype or value.ndim > count:
        return False
    shape = (1,) * (count - value.ndim) + value.shape
    if normalized is None:
        return value.ndim >= 1 and all(d == 1 for d in shape[:-1])
    return all(not isinstance(n, int) or n == d for n, d in zip(normalized, shape)) and all(
        isinstance(n, int) or d != 1 for n, d in zip(normalized, shape)
    )


# --- GELU ----------------------------------------------------------------------------------


def fuse_gelu(model: Model, context: OptimizerContext) -> bool:
    """Decomposed GELU (erf or tanh form) -> Gelu."""
    opset = standard_opset(model)
    if opset < 20 and not can_fuse(context, model, ["Erf"], "Gelu"):
        return False
    return on_every_graph(model, lambda graph: _gelu(graph, model, opset))


def _constant_near(index: GraphIndex, name: str | None, target: float) -> bool:
    return name is not None and is_close(scalar(index.constant(name)), target)


def _erf_input(index: GraphIndex, erf: Node) -> tuple[str, list[Node]] | None:
    """x and the scaling node when the Erf reads x / sqrt(2) (or x * 1/sqrt(2))."""
    scaled = index.producer.get(erf.inputs[0])
    if scaled is None or index.removed(scaled) or index.only_user(erf.inputs[0]) is not erf:
        return None
    if _is(scaled, "Div") and _constant_near(index, scaled.inputs[1], math.sqrt(2)):
        return scaled.inputs[0], [scaled]
    if _is(scaled, "Mul"):
        for position in (0, 1):
            if _constant_near(index, scaled.inputs[1 - position], 1 / math.sqrt(2)):
                return scaled.inputs[position], [scaled]
    return None


def _cube_of(index: GraphIndex, name: str) -> str | None:
    """x when ``name`` is x**3 (Pow 3, or x*x*x), computed for this use only."""
    node = index.producer.get(name)
    if node is None or index.only_user(name) is None:
        return None
    if _is(node, "Pow") and _constant_near(index, node.inputs[1], 3.0):
        return node.inputs[0]
    if _is(node, "Mul") and len(node.inputs) == 2:
        for position in (0, 1):
            square = index.producer.get(node.inputs[position])
            base = node.inputs[1 - position]
            if _is(square, "Mul") and square.inputs == [base, base] and index.only_user(node.inputs[position]) is node:
                return base
    return None


def _tanh_input(index: GraphIndex, tanh: Node) -> tuple[str, list[Node]] | None:
    """x and the nodes computing sqrt(2/pi) * (x + 0.044715 * x**3) into the Tanh."""
    scaled = index.producer.get(tanh.inputs[0])
    if not _is(scaled, "Mul") or index.only_user(tanh.inputs[0]) is not tanh:
        return None
    for position in (0, 1):
        if not _constant_near(index, scaled.inputs[1 - position], math.sqrt(2 / math.pi)):
            continue
        inner = index.producer.get(scaled.inputs[position])
        if not _is(inner, "Add") or index.only_user(scaled.inputs[position]) is not scaled:
            continue
        for side in (0, 1):
            term = index.producer.get(inner.inputs[side])
            x = inner.inputs[1 - side]
            if not _is(term, "Mul") or index.only_user(inner.inputs[side]) is not inner:
                continue
            for which in (0, 1):
                if not _constant_near(index, term.inputs[1 - which], 0.044715):
                    continue
                if _cube_of(index, term.inputs[which]) != x:
                    continue
                cube = index.producer[term.inputs[which]]
                nodes = [scaled, inner, term, cube]
                if cube.op_type == "Mul":
                    square = next(index.producer[i] for i in cube.inputs if i != x)
                    nodes.append(square)
                return x, nodes
    return None


def _gelu_product(index: GraphIndex, one_plus: Node, x: str) -> tuple[Node, list[Node]] | None:
    """The node computing 0.5 * x * one_plus (in any association) and the nodes it takes."""
    m1 = _next(index, one_plus.outputs[0], "Mul")
    if m1 is None:
        return None
    p = _other(m1, one_plus.outputs[0])
    if p is None:
        return None
    if _constant_near(index, p, 0.5):
        m2 = _next(index, m1.outputs[0], "Mul")
        if m2 is not None and _other(m2, m1.outputs[0]) == x:
            return m2, [m1, m2]
        return None
    if p == x:
        m2 = _next(index, m1.outputs[0], "Mul")
        if m2 is not None and _constant_near(index, _other(m2, m1.outputs[0]), 0.5):
            return m2, [m1, m2]
        return None
    half = index.producer.get(p)
    if _is(half, "Mul") and index.only_user(p) is m1 and not index.removed(half):
        other = _other(half, x)
        if other is not None and _constant_near(index, other, 0.5):
            return m1, [half, m1]
    return None


def _gelu(graph: Graph, model: Model, opset: int) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    changed = False
    for node in graph.nodes:
        if index.removed(node) or not _is(node, "Erf", "Tanh"):
            continue
        found = _erf_input(index, node) if node.op_type == "Erf" else _tanh_input(index, node)
        if found is None:
            continue
        x, head = found
        one_plus = _next(index, node.outputs[0], "Add")
        if one_plus is None or not _constant_near(index, _other(one_plus, node.outputs[0]), 1.0):
            continue
        product = _gelu_product(index, one_plus, x)
        if product is None:
            continue
        last, tail = product
        chain = head + [node, one_plus] + tail
        if any(index.removed(n) for n in chain):
            continue
        approximate = "none" if node.op_type == "Erf" else "tanh"
        dtype = index.dtype(x)
        if dtype is None or dtype.kind != "f":
            continue
        if opset >= 20:
            attributes = {"approximate": approximate}
            fused: Node | None = Node("Gelu", [x], list(last.outputs), name=node.name, attributes=attributes)
        else:
            fused = make_fused_node(
                model, "Gelu", [x], list(last.outputs), {"approximate": approximate}, dtype, node.name
            )
        if fused is None:
            continue
        index.replace(last, fused)
        for done in chain:
            if done is not last:
                index.remove(done)
        changed = True
    index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed
