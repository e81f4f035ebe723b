"""Model-local functions: calls are replaced by the function's body, renamed apart."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from .errors import InvalidGraphError
from .ir import Function, Graph, Model, Node

MAX_DEPTH = 32


def inline_functions(model: Model) -> bool:
    """Expand every call of a model-local function, in all graphs; True when any was expanded."""
    if not model.functions:
        return False
    counter = itertools.count()
    changed = _expand_graph(model.graph, model, counter, depth=0)
    if changed:
        for fn in model.functions.values():
            for domain, version in fn.opset_imports.items():
                model.opset_imports.setdefault(domain, version)
    return changed


def _expand_graph(graph: Graph, model: Model, counter: Any, depth: int) -> bool:
    nodes, changed = _expand_nodes(graph.nodes, model, counter, depth)
    graph.nodes = nodes
    return changed


def _expand_nodes(nodes: list[Node], model: Model, counter: Any, depth: int) -> tuple[list[Node], bool]:
    if depth > MAX_DEPTH:
        raise InvalidGraphError(f"model-local functions nest deeper than {MAX_DEPTH} (recursion?)")
    result: list[Node] = []
    changed = False
    for node in nodes:
        for sub in node.subgraphs():
            changed |= _expand_graph(sub, model, counter, depth)
        fn = model.functions.get((node.domain, node.op_type))
        if fn is None:
            result.append(node)
            continue
        body = instantiate(fn, node, f"{node.name or fn.name}__{next(counter)}__")
        expanded, _ = _expand_nodes(body, model, counter, depth + 1)
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
