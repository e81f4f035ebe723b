"""``ai.onnx.preview.training`` kernels: Gradient.

Gradient differentiates the enclosing graph's value ``y`` with respect to the values ``xs``
by reverse mode. The kernel sees only its own node, so the factory finds the forward nodes
between ``xs`` (and the constants ``zs``) and ``y`` in the graph that holds the node,
compiles them as a subgraph (reusing their kernels), and at run time replays the forward
pass from the node's inputs, then walks it backwards with the rules below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ronn.ir import Graph, Node, ValueInfo
from ronn.kernel import KernelContext, KernelRun, KernelTable

KERNELS = KernelTable(domain="ai.onnx.preview.training")

#: rule(xp, node inputs, node outputs, output gradient) -> one gradient (or None) per input
Rule = Callable[[Any, list[Any], list[Any], Any], list[Any]]


def unbroadcast(xp: Any, grad: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``grad`` over the axes broadcasting added or stretched, to get back to ``shape``."""
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = xp.sum(grad, axis=tuple(range(extra)))
    stretched = tuple(i for i, d in enumerate(shape) if d == 1 and grad.shape[i] != 1)
    if stretched:
        grad = xp.sum(grad, axis=stretched, keepdims=True)
    return xp.reshape(grad, shape)


def _binary(local: Callable[[Any, Any, Any, Any], tuple[Any, Any]]) -> Rule:
    """A rule for a broadcasting binary op from its unreduced partial gradients."""

    def rule(xp: Any, ins: list[Any], outs: list[Any], g: Any) -> list[Any]:
        a, b = ins
        ga, gb = local(xp, a, b, g)
        return [unbroadcast(xp, ga, a.shape), unbroadcast(xp, gb, b.shape)]

    return rule


def _matmul(xp: Any, ins: list[Any], outs: list[Any], g: Any) -> list[Any]:
    a, b = ins
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = g
    if a.ndim == 1:
        g2 = xp.expand_dims(g2, -2)
    if b.ndim == 1:
        g2 = xp.expand_dims(g2, -1)
    ga = xp.matmul(g2, xp.swapaxes(b2, -1, -2))
    gb = xp.matmul(xp.swapaxes(a2, -1, -2), g2)
    ga = unbroadcast(xp, ga, a2.shape).reshape(a.shape)
    gb = unbroadcast(xp, gb, b2.shape).reshape(b.shape)
    return [ga, gb]


def _sum(xp: Any, ins: list[Any], outs: list[Any], g: Any) -> list[Any]:
    return [unbroadcast(xp, g, x.shape) for x in ins]


RULES: dict[str, Rule] = {
    "Add": _binary(lambda xp, a, b, g: (g, g)),
    "Sub": _binary(lambda xp, a, b, g: (g, -g)),
    "Mul": _binary(lambda xp, a, b, g: (g * b, g * a)),
    "Div": _binary(lambda xp, a, b, g: (g / b, -g * a / (b * b))),
    "Sum": _sum,
    "MatMul": _matmul,
    "Neg": lambda xp, ins, outs, g: [-g],
    "Identity": lambda xp, ins, outs, g: [g],
    "Relu": lambda xp, ins, outs, g: [g * (ins[0] > 0)],
    "Sigmoid": lambda xp, ins, outs, g: [g * outs[0] * (1 - outs[0])],
    "Tanh": lambda xp, ins, outs, g: [g * (1 - outs[0] * outs[0])],
    "Exp": lambda xp, ins, outs, g: [g * outs[0]],
    "Log": lambda xp, ins, outs, g: [g / ins[0]],
    "Sqrt": lambda xp, ins, outs, g: [g / (2 * outs[0])],
}


def _enclosing_graph(ctx: KernelContext) -> Graph:
    if ctx.model is None:
        raise ctx.fail("Gradient needs the model to find its forward graph")
    for graph, node in ctx.model.graph.walk():
        if node is ctx.node:
            return graph
    raise ctx.fail("Gradient cannot find the graph that holds it")


def _forward_nodes(ctx: KernelContext, graph: Graph, sources: set[str], y: str) -> list[Node]:
    """The nodes computing ``y`` from ``sources`` and initializers, in execution order."""
    producers = {o: n for n in graph.nodes for o in n.outputs if o}
    needed: dict[int, Node] = {}
    stack = [y]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen or name in sources or name in graph.initializers or not name:
            continue
        seen.add(name)
        node = producers.get(name)
        if node is None:
            raise ctx.fail(f"y depends on {name!r}, which is neither in xs, zs nor an initializer")
        if node.op_type not in RULES:
            raise ctx.fail(f"no gradient rule for {node.op_type} (node {node.label()})")
        needed[id(node)] = node
        stack.extend(node.inputs)
    known = sources | set(graph.initializers)
    return Graph(nodes=list(needed.values()), inputs=[], outputs=[]).topological_order(known)


@KERNELS.register("Gradient", since=1)
def gradient(ctx: KernelContext) -> KernelRun:
    """d y / d x for each x of ``xs``, with ``zs`` held constant."""
    xp = ctx.xp
    xs = list(ctx.attr("xs"))
    zs = list(ctx.attr("zs", []))
    y = ctx.attr("y")
    if ctx.num_inputs != len(xs) + len(zs):
        raise ctx.fail(f"Gradient takes {len(xs) + len(zs)} inputs (xs then zs), got {ctx.num_inputs}")
    if ctx.num_outputs != len(xs):
        raise ctx.fail(f"Gradient has one output per x ({len(xs)}), got {ctx.num_outputs}")
    graph = _enclosing_graph(ctx)
    sources = xs + zs
    nodes = _forward_nodes(ctx, graph, set(sources), y)
    computed = list(dict.fromkeys(o for n in nodes for o in n.outputs if o))
    used = {i for n in nodes for i in n.inputs}
    forward = ctx.compile_subgraph(
        Graph(
            nodes=nodes,
            inputs=[ValueInfo(name) for name in sources],
            outputs=[ValueInfo(name) for name in computed],
            initializers={k: v for k, v in graph.initializers.items() if k in used and k not in sources},
            name=f"{ctx.node.label()} forward",
        )
    )
    constants = {k: v for k, v in graph.initializers.items() if k in used and k not in sources}

    def run(*inputs: Any) -> list[Any]:
        values = dict(constants)
        values.update(zip(sources, inputs))
        values.update(zip(computed, forward(list(inputs), {})))
        if y not in values:
            raise ValueError(f"Gradient: y {y!r} was not computed")
        grads: dict[str, Any] = {y: xp.ones_like(values[y])}
        for node in reversed(nodes):
            g = grads.get(node.outputs[0])
            if g is None:
                continue
            ins = [values[i] for i in node.inputs]
            outs = [values[o] for o in node.outputs]
            for name, grad in zip(node.inputs, RULES[node.op_type](xp, ins, outs, g)):
                if grad is None or name in zs:
                    continue
                grads[name] = grad if name not in grads else grads[name] + grad
        results = []
        for name, x in zip(xs, inputs):
            grad = grads.get(name)
            results.append(xp.zeros_like(x) if grad is None else xp.asarray(grad).astype(x.dtype, copy=False))
        return results

    return run
