"""Model-local functions: calls are replaced by the function's body, renamed apart.

A call is kept as it is when a provider of the session implements the operator itself
(``has_kernel``): the optimizer saves its fused ``ronn``-domain operators with a function body
of standard operators for other runtimes, and ronn runs its own kernel for them instead.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

from .errors import InvalidGraphError
from .ir import Function, Graph, Model, Node

MAX_DEPTH = 32


#: ``has_kernel(domain, op_type, opset)``: whether a provider of the session runs the operator
KernelCheck = Callable[[str, str, int], bool]


def inline_functions(model: Model, has_kernel: KernelCheck | None = None) -> bool:
    """Expand calls of model-local functions, in all graphs; True when any was expanded.

    With ``has_kernel``, a call whose operator a provider implements (at the model's opset
    for the function's domain) stays a call; its body is then only what other runtimes read.
    """
    if not model.functions:
        return False
    counter = itertools.count()
    changed = _expand_graph(model.graph, model, counter, depth=0, has_kernel=has_kernel)
    if changed:
        for fn in model.functions.values():
            for domain, version in fn.opset_imports.items():
                model.opset_imports.setdefault(domain, version)
    return changed


def _expand_graph(
    graph: Graph, model: Model, counter: Any, depth: int, has_kernel: KernelCheck | None = None
) -> bool:
    nodes, changed = _expand_nodes(graph.nodes, model, counter, depth, has_kernel)
    graph.nodes = nodes
    return changed


def _runs_natively(node: Node, model: Model, has_kernel: KernelCheck | None) -> bool:
    if has_kernel is None:
        return False
    opset = model.opset(node.domain)
    return opset is not None and has_kernel(node.domain, node.op_type, opset)


def _expand_nodes(
    nodes: list[Node], model: Model, counter: Any, depth: int, has_kernel: KernelCheck | None = None
) -> tuple[list[Node], bool]:
    if depth > MAX_DEPTH:
        raise InvalidGraphError(f"model-local functions nest deeper than {MAX_DEPTH} (recursion?)")
    result: list[Node] = []
    changed = False
    for node in nodes:
        for sub in node.subgraphs():
            changed |= _expand_graph(sub, model, counter, depth, has_kernel)
        fn = model.function_for(node)
        if fn is None or _runs_natively(node, model, has_kernel):
            result.append(node)
            continue
        body = instantiate(fn, node, f"{node.name or fn.name}__{next(counter)}__")
        expanded, _ = _expand_nodes(body, model, counter, depth + 1, has_kernel)
        result.extend(expanded)
        changed = True
    return result, changed


def instantiate(fn: Function, call: Node, prefix: str) -> list[Node]:
    """The body of ``fn`` for one call: formal names bound to the call's, the rest prefixed."""
    if len(call.inputs) > len(fn.inputs) or len(call.outputs) > len(fn.outputs):
        raise InvalidGraphError(
            f"{call.label()} passes {len(call.inputs)} inputs / {len(call.outputs)} outputs to "
            f"function {fn.name!r}, which takes {len(fn.inputs)} / {len(fn.outputs)}"
        )
    names: dict[str, str] = {"": ""}
    for i, formal in enumerate(fn.inputs):
        names[formal] = call.inputs[i] if i < len(call.inputs) else ""
    for i, formal in enumerate(fn.outputs):
        names[formal] = call.outputs[i] if i < len(call.outputs) else prefix + formal

    def rename(name: str) -> str:
        if name not in names:
            names[name] = prefix + name
        return names[name]

    attributes = dict(fn.attribute_defaults)
    attributes.update(call.attributes)
    body = []
    for original in fn.nodes:
        node = copy.deepcopy(original)
        node.inputs = [rename(n) for n in node.inputs]
        node.outputs = [rename(n) for n in node.outputs]
        node.name = prefix + (node.name or node.op_type)
        for key, ref in node.attribute_refs.items():
            if ref in attributes:
                node.attributes[key] = attributes[ref]
        node.attribute_refs = {}
        for sub in node.subgraphs():
            _rename_free_variables(sub, names)
        body.append(node)
    return body


def _rename_free_variables(graph: Graph, names: dict[str, str]) -> None:
    """Point a subgraph's reads of the enclosing function's values at their new names."""
    free = graph.free_variables()
    for node in graph.nodes:
        node.inputs = [names.get(n, n) if n in free else n for n in node.inputs]
        for sub in node.subgraphs():
            _rename_free_variables(sub, names)
    for out in graph.outputs:
        if out.name in free:
            out.name = names.get(out.name, out.name)
