"""What the optimizer passes share: a use/definition index over one graph, constants, renaming,
dead-code removal and fresh names.

Passes rewrite one graph at a time (the main graph and every subgraph). A subgraph reads values
of its enclosing graphs by name; the index counts such reads as uses by the node that holds the
subgraph, so a value a subgraph reads is never removed, and renaming a value renames the reads
inside subgraphs too (unless a subgraph shadows one of the names: then the rewrite is refused).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..ir import Graph, Model, Node, TensorType, ValueInfo, ValueType, tensor_type_of

#: Operators whose results change from run to run: never folded, merged or removed as duplicates.
RANDOM_OPS = frozenset(
    {
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "Dropout",
    }
)

#: The ``ronn`` domain of the fused operators, and its version.
RONN_DOMAIN = "ronn"
RONN_OPSET = 1


def graphs(model: Model) -> list[Graph]:
    """The main graph, then every subgraph (outer graphs before the graphs they hold)."""
    found: list[Graph] = []

    def visit(graph: Graph) -> None:
        found.append(graph)
        for node in graph.nodes:
            for sub in node.subgraphs():
                visit(sub)

    visit(model.graph)
    return found


def on_every_graph(model: Model, rewrite: Callable[[Graph], bool]) -> bool:
    """Apply ``rewrite`` to every graph of the model; True when any changed."""
    changed = False
    for graph in graphs(model):
        changed |= bool(rewrite(graph))
    return changed


def standard_opset(model: Model) -> int:
    """The model's opset of the default domain (the newest onnx knows when it imports none)."""
    return model.opset("") or 21


# --- names ---------------------------------------------------------------------------------


class Namer:
    """Fresh value and node names, unique in the whole model."""

    def __init__(self, model: Model) -> None:
        taken: set[str] = set()
        for graph in graphs(model):
            taken.update(v.name for v in graph.inputs)
            taken.update(v.name for v in graph.outputs)
            taken.update(graph.initializers)
            for node in graph.nodes:
                taken.update(node.inputs)
                taken.update(node.outputs)
                taken.add(node.name)
        self._taken = taken
        self._counter = itertools.count()

    def fresh(self, base: str) -> str:
        """A name starting with ``base`` that nothing in the model uses."""
        base = base or "ronn"
        if base not in self._taken:
            self._taken.add(base)
            return base
        while True:
            name = f"{base}__{next(self._counter)}"
            if name not in self._taken:
                self._taken.add(name)
                return name


# --- the index -----------------------------------------------------------------------------


class GraphIndex:
    """Producers and consumers of every value of one graph, kept current by its edit methods.

    Passes look patterns up here, change nodes through :meth:`replace_uses`, :meth:`remove` and
    :meth:`replace`, then call :meth:`commit` to write the node list back (in its original
    order, with replacements in place of the nodes they replace).
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.outputs = {v.name for v in graph.outputs}
        self.inputs = {v.name for v in graph.inputs}
        self.producer: dict[str, Node] = {}
        self.consumers: dict[str, list[Node]] = {}
        self.subgraph_reads: set[str] = set()
        self._removed: set[int] = set()
        self._replaced: dict[int, Node] = {}
        for node in graph.nodes:
            self._add(node)
        self._types: dict[str, ValueType] | None = None

    def _add(self, node: Node) -> None:
        for name in node.outputs:
            if name:
                self.producer[name] = node
        for name in node.inputs:
            if name:
                self.consumers.setdefault(name, []).append(node)
        for sub in node.subgraphs():
            for name in sub.free_variables():
                self.subgraph_reads.add(name)
                self.consumers.setdefault(name, []).append(node)

    def _drop(self, node: Node) -> None:
        for name in node.outputs:
            if name and self.producer.get(name) is node:
                del self.producer[name]
        for name in set(node.inputs) | {n for sub in node.subgraphs() for n in sub.free_variables()}:
            users = self.consumers.get(name)
            if users:
                self.consumers[name] = [u for u in users if u is not node]

    # --- questions ------------------------------------------------------------------------

    def users(self, name: str) -> list[Node]:
        """Nodes that read ``name`` (a node once per input slot that reads it)."""
        return self.consumers.get(name, [])

    def is_used(self, name: str) -> bool:
        """Whether a node, a subgraph or the graph's outputs read ``name``."""
        return bool(self.consumers.get(name)) or name in self.outputs

    def only_user(self, name: str) -> Node | None:
        """The one node that reads ``name`` once, when nothing else does (no graph output)."""
        if name in self.outputs or name in self.subgraph_reads:
            return None
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 else None

    def internal(self, name: str) -> bool:
        """Whether ``name`` is an intermediate value a rewrite may make disappear."""
        return name in self.producer and name not in self.outputs and name not in self.subgraph_reads

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is an initializer a feed cannot override."""
        if not name or name in self.inputs:
            return None
        value = self.graph.initializers.get(name)
        return value if isinstance(value, np.ndarray) else None

    def types(self) -> dict[str, ValueType]:
        """Known value types (inputs, outputs, value_info, initializers); computed once."""
        if self._types is None:
            self._types = value_types(self.graph)
        return self._types

    def tensor_type(self, name: str) -> TensorType | None:
        """The tensor type of ``name`` when known."""
        value = self.constant(name)
        if value is not None:
            return tensor_type_of(value)
        t = self.types().get(name)
        return t if isinstance(t, TensorType) else None

    def dtype(self, name: str) -> np.dtype | None:
        """The numpy dtype of ``name`` when known."""
        t = self.tensor_type(name)
        if t is None:
            return None
        try:
            return t.dtype.np_dtype
        except Exception:  # types numpy cannot hold
            return None

    def shape(self, name: str) -> tuple[Any, ...] | None:
        """The shape of ``name`` when its rank is known (dims: int, symbol name or None)."""
        t = self.tensor_type(name)
        return None if t is None or t.shape is None else tuple(t.shape)

    def rank(self, name: str) -> int | None:
        shape = self.shape(name)
        return None if shape is None else len(shape)

    # --- edits ----------------------------------------------------------------------------

    def can_rename(self, old: str, new: str) -> bool:
        """Whether reads of ``old`` can become reads of ``new`` (no subgraph shadows either)."""
        if old not in self.subgraph_reads:
            return True
        return all(_rename_safe(sub, old, new) for node in self.users(old) for sub in node.subgraphs())

    def replace_uses(self, old: str, new: str) -> None:
        """Every read of ``old`` (subgraphs included) becomes a read of ``new``."""
        users = self.consumers.pop(old, [])
        seen: set[int] = set()
        for node in users:
            if id(node) in seen:
                continue
            seen.add(id(node))
            node.inputs = [new if name == old else name for name in node.inputs]
            for sub in node.subgraphs():
                _rename_reads(sub, old, new)
        self.consumers.setdefault(new, []).extend(users)
        if old in self.subgraph_reads:
            self.subgraph_reads.add(new)

    def replace_value(self, old: str, new: str) -> bool:
        """Make ``old`` (about to lose its producer) mean ``new``; False when it cannot.

        A graph output keeps its name: then ``new``'s producer is renamed to produce ``old``
        instead, which needs ``new`` to be an intermediate value of this graph.
        """
        if old == new:
            return True
        if old not in self.outputs:
            if not self.can_rename(old, new):
                return False
            self.replace_uses(old, new)
            return True
        producer = self.producer.get(new)
        if (
            producer is None
            or new in self.outputs
            or new in self.inputs
            or new in self.graph.initializers
            or not self.can_rename(new, old)
        ):
            return False
        # new's producer comes before old's, so every reader of either still follows it
        producer.outputs = [old if o == new else o for o in producer.outputs]
        self.producer.pop(new, None)
        old_producer = self.producer.get(old)
        self.producer[old] = producer
        if old_producer is not None and old_producer is not producer:
            # the node that produced old is going away; it must not claim old any more
            old_producer.outputs = ["" if o == old else o for o in old_producer.outputs]
        self.replace_uses(new, old)
        info = self.graph.value_info.get(new)
        if info is not None and old not in self.graph.value_info:
            self.graph.value_info[old] = type(info)(old, info.type, info.doc_string)
        return True

    def remove(self, node: Node) -> None:
        """Drop ``node`` (its outputs must have no readers left, or be replaced)."""
        self._drop(node)
        self._removed.add(id(node))

    def replace(self, node: Node, new: Node) -> None:
        """Put ``new`` where ``node`` was."""
        self._drop(node)
        self._replaced[id(node)] = new
        self._add(new)

    def removed(self, node: Node) -> bool:
        return id(node) in self._removed or id(node) in self._replaced

    def commit(self) -> bool:
        """Write the edited node list back to the graph; True when anything changed."""
        if not self._removed and not self._replaced:
            return False
        nodes = []
        for node in self.graph.nodes:
            if id(node) in self._removed:
                continue
            nodes.append(self._replaced.get(id(node), node))
        self.graph.nodes = nodes
        self._removed.clear()
        self._replaced.clear()
        return True


def _rename_safe(graph: Graph, old: str, new: str) -> bool:
    """Whether renaming outer reads of ``old`` to ``new`` inside ``graph`` keeps their meaning."""
    defined = graph.defined_names()
    if old in defined:
        return True  # the subgraph's own value: outer reads stop here
    if new in defined:
        return False  # the subgraph shadows new: its reads would change meaning
    return all(_rename_safe(sub, old, new) for node in graph.nodes for sub in node.subgraphs())


def _rename_reads(graph: Graph, old: str, new: str) -> None:
    if old in graph.defined_names():
        return
    for node in graph.nodes:
        node.inputs = [new if name == old else name for name in node.inputs]
        for sub in node.subgraphs():
            _rename_reads(sub, old, new)
    for out in graph.outputs:
        if out.name == old:
            out.name = new


def value_types(graph: Graph) -> dict[str, ValueType]:
    """Known types of a graph's values."""
    types: dict[str, ValueType] = {}
    for info in [*graph.inputs, *graph.value_info.values(), *graph.outputs]:
        if info.type is not None:
            types[info.name] = info.type
    for name, value in graph.initializers.items():
        if isinstance(value, np.ndarray):
            types[name] = tensor_type_of(value)
    return types


def declare(graph: Graph, name: str, like: TensorType | None, shape: Iterable[Any] | None) -> None:
    """Record the type of a value a pass creates: ``like``'s element type, and ``shape``
    (ints stay, symbol names stay, anything else becomes an unknown dimension)."""
    if like is None:
        return
    dims = None
    if shape is not None:
        dims = tuple(
            d if isinstance(d, int) and d >= 0 else d[1] if isinstance(d, tuple) and d and d[0] == "param" else None
            for d in shape
        )
    graph.value_info[name] = ValueInfo(name, TensorType(like.dtype, dims))


# --- ordering and dead code ----------------------------------------------------------------


def sort_nodes(graph: Graph) -> None:
    """Order the graph's nodes so each comes after the producers of what it reads.

    Names no node of this graph produces (inputs, initializers, outer scope) are available
    from the start; a cycle leaves the order as it was.
    """
    producers: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for name in node.outputs:
            if name:
                producers[name] = index
    needs: list[set[int]] = []
    in_order = True
    for position, node in enumerate(graph.nodes):
        reads = set(node.inputs)
        for sub in node.subgraphs():
            reads |= sub.free_variables()
        need = {producers[n] for n in reads if n in producers}
        if in_order and need and max(need) >= position:
            in_order = False
        needs.append(need)
    if in_order:
        return  # already sorted (the usual case): keep the order as it is
    order: list[int] = []
    state = [0] * len(graph.nodes)  # 0 new, 1 on the stack, 2 placed
    for start in range(len(graph.nodes)):
        if state[start]:
            continue
        stack = [(start, iter(sorted(needs[start])))]
        state[start] = 1
        while stack:
            index, pending = stack[-1]
            for dep in pending:
                if state[dep] == 0:
                    state[dep] = 1
                    stack.append((dep, iter(sorted(needs[dep]))))
                    break
                if state[dep] == 1:
                    return  # a cycle: leave it for the engine to report
            else:
                stack.pop()
                state[index] = 2
                order.append(index)
    if order != list(range(len(graph.nodes))):
        graph.nodes = [graph.nodes[i] for i in order]


def remove_dead_nodes(graph: Graph) -> bool:
    """Drop nodes none of whose outputs is read (by a node, a subgraph or the graph's outputs),
    then initializers nothing reads (those a feed may override stay). True when any went."""
    index = GraphIndex(graph)
    changed = False
    for node in reversed(graph.nodes):
        if any(index.is_used(o) for o in node.outputs if o):
            continue
        index.remove(node)
        changed = True
    changed |= index.commit()
    inputs = {v.name for v in graph.inputs}
    unused = [name for name in graph.initializers if name not in inputs and not index.is_used(name)]
    for name in unused:
        del graph.initializers[name]
    return changed or bool(unused)


def release_constants(index: GraphIndex, names: Iterable[str]) -> None:
    """Delete the initializers among ``names`` that nothing reads any more (a rewrite just
    replaced their last reader), so a pass never holds old and new weights at once."""
    for name in set(names):
        if name and name not in index.inputs and name in index.graph.initializers and not index.is_used(name):
            del index.graph.initializers[name]


# --- small helpers -------------------------------------------------------------------------


def scalar(value: np.ndarray | None) -> float | None:
    """The one element of a constant holding a single number, else None."""
    if value is None or value.size != 1 or value.dtype.kind not in "fiub":
        return None
    return float(value.reshape(()))


def is_close(value: float | None, target: float, rtol: float = 1e-4) -> bool:
    return value is not None and abs(value - target) <= rtol * abs(target) + 1e-12


def readonly(array: np.ndarray) -> np.ndarray:
    """``array`` marked read-only, as initializers are (kernels never write into them)."""
    array = np.asarray(array)
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


def int_list(value: Any) -> list[int] | None:
    if value is None:
        return None
    return [int(v) for v in np.asarray(value).reshape(-1)]


def axes_of(node: Node, index: GraphIndex, input_position: int = 1) -> list[int] | None:
    """A Squeeze/Unsqueeze/Reduce node's axes: the attribute (older opsets) or the constant input."""
    if "axes" in node.attributes:
        return [int(a) for a in node.attributes["axes"]]
    if len(node.inputs) > input_position and node.inputs[input_position]:
        return int_list(index.constant(node.inputs[input_position]))
    return []


def first_kernel_provider(context: Any, domain: str, op_types: Iterable[str], opset: int) -> str | None:
    """The session's first provider (in order of preference) with kernels for all ``op_types``."""
    for provider in context.providers:
        if all(context.kernels.lookup(domain, op, opset, provider) is not None for op in op_types):
            return provider
    return None


def can_fuse(context: Any, model: Model, op_types: Iterable[str], fused: str) -> bool:
    """Whether to fuse nodes of ``op_types`` into ``ronn::fused``: the provider that would run
    the standard nodes has the fused kernel too (so a fusion never moves work to another
    provider, and a provider without the kernel keeps the standard operators)."""
    provider = first_kernel_provider(context, "", op_types, standard_opset(model))
    if provider is None:
        return context.has_kernel(RONN_DOMAIN, fused, RONN_OPSET)
    return context.kernels.lookup(RONN_DOMAIN, fused, RONN_OPSET, provider) is not None
