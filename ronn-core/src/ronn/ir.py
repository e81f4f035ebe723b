"""The graph IR: models, graphs, nodes, value types. Plain Python, independent of protobuf.

Loaders (``ronn-onnx`` for ONNX files) build these objects; optimizer passes rewrite them;
the session engine compiles them into a plan. Attribute values are plain Python values:
``int``, ``float``, ``str``, ``numpy.ndarray`` (tensors), :class:`Graph` (subgraphs),
:class:`ValueType` (type attributes) or lists of those.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from .dtypes import DataType, from_numpy, type_string
from .errors import InvalidGraphError

Dim = Union[int, str, None]  # a static size, a symbolic name, or unknown


@dataclass(frozen=True)
class TensorType:
    """A tensor's element type and shape (``shape=None``: rank unknown)."""

    dtype: DataType
    shape: tuple[Dim, ...] | None = None

    def __str__(self) -> str:
        return type_string(self.dtype)


@dataclass(frozen=True)
class SequenceType:
    """A sequence of values of one type."""

    elem: ValueType | None

    def __str__(self) -> str:
        return f"seq({self.elem})"


@dataclass(frozen=True)
class OptionalType:
    """A value that may be absent."""

    elem: ValueType | None

    def __str__(self) -> str:
        return f"optional({self.elem})"


@dataclass(frozen=True)
class MapType:
    """A map from a scalar key type to values of one type."""

    key: DataType
    value: ValueType | None

    def __str__(self) -> str:
        return f"map({self.key.type_string},{self.value})"


ValueType = Union[TensorType, SequenceType, OptionalType, MapType]


@dataclass
class ValueInfo:
    """A named value with its type, when known."""

    name: str
    type: ValueType | None = None
    doc_string: str = ""


#: standard operators with graph attributes (If, Loop, Scan, SequenceMap); other standard ones have none
_GRAPH_HOLDERS = frozenset({"If", "Loop", "Scan", "SequenceMap"})
_STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})


@dataclass
class Node:
    """One operator application. Omitted optional inputs and outputs are ``""``."""

    op_type: str
    inputs: list[str]
    outputs: list[str]
    name: str = ""
    domain: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    doc_string: str = ""
    #: attributes of a function body that refer to the caller's attributes: name -> caller's name
    attribute_refs: dict[str, str] = field(default_factory=dict)
    #: which overload of a model-local function the node calls (ONNX IR 10); "" for none
    overload: str = ""

    def label(self) -> str:
        """How errors name this node: ``'conv1' (Conv)``."""
        name = self.name or (self.outputs[0] if self.outputs else "?")
        domain = f"{self.domain}::" if self.domain and self.domain != "ai.onnx" else ""
        return f"node {name!r} ({domain}{self.op_type})"

    def subgraphs(self) -> list[Graph]:
        """Every graph held in this node's attributes (a new list; most often empty)."""
        if self.domain in _STANDARD_DOMAINS and self.op_type not in _GRAPH_HOLDERS:
            return []  # the standard operators without a graph attribute: most nodes, checked fast
        found: list[Graph] = []
        for value in self.attributes.values():
            if isinstance(value, Graph):
                found.append(value)
            elif isinstance(value, list) and value and isinstance(value[0], Graph):
                found.extend(value)  # attribute lists hold one type: checking the first is enough
        return found


@dataclass
class Graph:
    """A computation graph: nodes, typed inputs and outputs, constant initializers."""

    nodes: list[Node]
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    initializers: dict[str, Any] = field(default_factory=dict)
    value_info: dict[str, ValueInfo] = field(default_factory=dict)
    name: str = ""
    doc_string: str = ""

    def defined_names(self) -> set[str]:
        """Names this graph defines itself: inputs, initializers and node outputs."""
        names = {v.name for v in self.inputs}
        names.update(self.initializers)
        named_empty = "" in names
        for node in self.nodes:
            names.update(node.outputs)
        if not named_empty:
            names.discard("")  # an omitted optional output names nothing
        return names

    def free_variables(self) -> set[str]:
        """Names this graph (or its subgraphs) reads but does not define: the outer scope."""
        defined = self.defined_names()
        used: set[str] = set()
        for node in self.nodes:
            used.update(i for i in node.inputs if i)
            for sub in node.subgraphs():
                used.update(sub.free_variables())
        used.update(o.name for o in self.outputs)
        return used - defined

    def topological_order(self, outer_scope: Iterable[str] = ()) -> list[Node]:
        """Nodes in an order where each runs after its producers.

        Raises :class:`InvalidGraphError` naming the node whose input nothing produces, or
        the nodes caught in a cycle.
        """
        own = {v.name for v in self.inputs} | set(self.initializers)
        producers: dict[str, Node] = {}
        for node in self.nodes:
            for out in node.outputs:
                if not out:
                    continue
                if out in producers or out in own:
                    raise InvalidGraphError(
                        f"graph {self.name!r}: {node.label()} redefines value {out!r}"
                    )
                producers[out] = node
        # a value produced here shadows an outer value of the same name
        available = own | (set(outer_scope) - set(producers)) | {""}
        pending: dict[int, int] = {}
        waiting: dict[str, list[int]] = {}
        ready: list[int] = []
        for index, node in enumerate(self.nodes):
            needs = self._node_reads(node) - available
            for name in needs:
                if name not in producers:
                    raise InvalidGraphError(
                        f"graph {self.name!r}: {node.label()} reads {name!r}, "
                        "which no input, initializer, node or outer scope defines"
                    )
                waiting.setdefault(name, []).append(index)
            pending[index] = len(needs)
            if not needs:
                ready.append(index)
        order: list[Node] = []
        ready.reverse()
        while ready:
            index = ready.pop()
            node = self.nodes[index]
            order.append(node)
            for out in node.outputs:
                for consumer in waiting.pop(out, ()):
                    pending[consumer] -= 1
                    if pending[consumer] == 0:
                        ready.append(consumer)
        if len(order) != len(self.nodes):
            stuck = [self.nodes[i].label() for i, n in pending.items() if n > 0]
            raise InvalidGraphError(
                f"graph {self.name!r} has a cycle through {', '.join(stuck[:10])}"
            )
        for out in self.outputs:
            if out.name not in available and out.name not in producers:
                raise InvalidGraphError(
                    f"graph {self.name!r}: output {out.name!r} is not produced by any node"
                )
        return order

    @staticmethod
    def _node_reads(node: Node) -> set[str]:
        reads = {i for i in node.inputs if i}
        for sub in node.subgraphs():
            reads |= sub.free_variables()
        return reads

    def walk(self) -> Iterator[tuple[Graph, Node]]:
        """Every (graph, node) pair, subgraphs included, depth first."""
        for node in self.nodes:
            yield self, node
            for sub in node.subgraphs():
                yield from sub.walk()


@dataclass
class Function:
    """A model-local function: an operator defined by a body of nodes."""

    domain: str
    name: str
    inputs: list[str]
    outputs: list[str]
    nodes: list[Node]
    attributes: list[str] = field(default_factory=list)
    attribute_defaults: dict[str, Any] = field(default_factory=dict)
    opset_imports: dict[str, int] = field(default_factory=dict)
    doc_string: str = ""
    #: distinguishes functions of one name (ONNX IR 10); "" for none
    overload: str = ""

    @property
    def key(self) -> tuple[str, ...]:
        """The function's key in :attr:`Model.functions`."""
        return function_key(self.domain, self.name, self.overload)


def function_key(domain: str, name: str, overload: str = "") -> tuple[str, ...]:
    """How :attr:`Model.functions` keys a function: ``(domain, name)``, plus the overload if any."""
    return (domain, name, overload) if overload else (domain, name)


@dataclass
class Model:
    """A loaded model: its main graph, opset imports, metadata and local functions."""

    graph: Graph
    opset_imports: dict[str, int]
    ir_version: int = 0
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int | None = None
    doc_string: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    #: by :func:`function_key`: ``(domain, name)``, or ``(domain, name, overload)`` for overloads
    functions: dict[tuple[str, ...], Function] = field(default_factory=dict)
    #: where the model came from (a path, ``<bytes>``, an ``hf://`` reference), for messages
    source: str = "<memory>"

    def opset(self, domain: str) -> int | None:
        """The model's opset version for a domain (``""`` and ``ai.onnx`` are the same)."""
        if domain in ("", "ai.onnx"):
            return self.opset_imports.get("", self.opset_imports.get("ai.onnx"))
        return self.opset_imports.get(domain)

    def function_for(self, node: Node) -> Function | None:
        """The model-local function ``node`` calls, if any."""
        if not self.functions:
            return None
        return self.functions.get(function_key(node.domain, node.op_type, node.overload))


def tensor_type_of(value: Any) -> TensorType:
    """The :class:`TensorType` of a concrete numpy array."""
    arr = np.asarray(value)
    return TensorType(from_numpy(arr.dtype), tuple(arr.shape))
