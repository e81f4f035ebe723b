"""The layout pass: runs of convolutions kept channels-last (N, H, W, C) inside the plan.

A depthwise convolution runs several times faster over channels-last data on the CPU (each
tap a contiguous run of channels), 1x1 convolutions are plain GEMMs either way, and the
operators between convolutions (activations, per-channel or scalar arithmetic, residual
additions, squeeze-and-excitation scaling, global pooling) do not care about the layout. So
the pass finds *regions*: connected 2-D convolutions (standard ``Conv`` or ``ronn::FusedConv``,
one group or depthwise, constant weights) and such operators, and rewrites each region that
pays to channels-last:

* each convolution becomes ``ronn::FusedConv`` with ``channels_last=1`` (X, Z and Y are
  (N, H, W, C)), or ``channels_last=2`` for a convolution reading a tensor from outside the
  region (X stays (N, C, H, W): the stem reads the image as it is);
* elementwise operators stay as they are; their per-channel constants ((C, 1, 1) or
  (1, C, 1, 1)) are transposed; ``GlobalAveragePool``/``GlobalMaxPool`` become
  ``ReduceMean``/``ReduceMax`` over axes 1 and 2; ``Concat`` on channels joins axis 3;
* a ``Transpose`` brings a tensor from outside into the region (unless every reader is a
  convolution that reads it channels-first, or it is itself a channels-first Transpose of a
  channels-last tensor), and one ``Transpose`` gives every value read outside the region
  (or a graph output) back in its original layout, under its original name.

Values inside a region get fresh names (their shapes differ), so fetching one of the
originals by name goes to the twin session that runs the model as stored.

A region pays when it holds a depthwise convolution and at least two convolutions per
Transpose it adds. The pass runs only when the provider that runs the convolutions has a
``ronn::FusedConv`` kernel whose factory declares ``supports_channels_last``.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Model, Node, TensorType, ValueInfo
from ..registry import OptimizerContext
from ._graph import (
    RONN_DOMAIN,
    RONN_OPSET,
    GraphIndex,
    Namer,
    first_kernel_provider,
    graphs,
    readonly,
    remove_dead_nodes,
    sort_nodes,
    standard_opset,
)
from .fused_ops import CONV_ATTRIBUTES, make_fused_node

#: NCHW -> NHWC and back
TO_LAST = [0, 2, 3, 1]
TO_FIRST = [0, 3, 1, 2]

#: elementwise operators of one tensor input (any further inputs must be scalars)
UNARY = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Clip", "Gelu", "Mish", "ThresholdedRelu", "Abs", "Neg", "Exp", "Log", "Sqrt",
    "Reciprocal", "Erf", "Identity", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos",
})  # fmt: skip
#: elementwise operators of two tensors, broadcasting
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Pow"})
#: global pooling and the reduction that replaces it channels-last
POOLS = {"GlobalAveragePool": "ReduceMean", "GlobalMaxPool": "ReduceMax"}
_FLOATS = ("float32", "float64")
#: Transposes added per convolution, at most (twice as many convolutions as Transposes)
CONVS_PER_TRANSPOSE = 2


def convert_to_channels_last(model: Model, context: OptimizerContext) -> bool:
    """Rewrite the regions that pay to channels-last (see the module docstring)."""
    if not _has_channels_last_kernel(model, context):
        return False
    namer = Namer(model)
    squeeze = _provider_has(model, context, "SqueezeExcitation")
    changed = False
    for graph in graphs(model):
        changed |= _Layout(graph, model, namer, squeeze).run()
    if changed:
        model.opset_imports.setdefault(RONN_DOMAIN, RONN_OPSET)
    return changed


def _conv_providers(model: Model, context: OptimizerContext) -> list[str]:
    """The provider that runs the model's convolutions (every provider when none has Conv)."""
    provider = first_kernel_provider(context, "", ["Conv"], standard_opset(model))
    return [provider] if provider is not None else list(context.providers)


def _has_channels_last_kernel(model: Model, context: OptimizerContext) -> bool:
    for name in _conv_providers(model, context):
        factory = context.kernels.lookup(RONN_DOMAIN, "FusedConv", RONN_OPSET, name)
        if factory is not None and getattr(factory, "supports_channels_last", False):
            return True
    return False


def _provider_has(model: Model, context: OptimizerContext, op_type: str) -> bool:
    return any(
        context.kernels.lookup(RONN_DOMAIN, op_type, RONN_OPSET, name) is not None
        for name in _conv_providers(model, context)
    )


def _standard(node: Node, *ops: str) -> bool:
    return node.domain in ("", "ai.onnx") and node.op_type in ops


class _Layout:
    """The regions of one graph, and their rewrite."""

    def __init__(self, graph: Graph, model: Model, namer: Namer, squeeze: bool) -> None:
        self.graph = graph
        self.model = model
        self.namer = namer
        self.squeeze = squeeze  # the provider runs ronn::SqueezeExcitation
        self.opset = standard_opset(model)
        sort_nodes(graph)
        self.index = GraphIndex(graph)
        self._spatial_names: dict[str, bool] = {}  # _spatial's answers until the graph changes

    # --- what can go channels-last ------------------------------------------------------

    def _spatial(self, name: str) -> bool:
        """Whether ``name`` is a non-constant 4-D float tensor."""
        known = self._spatial_names.get(name)
        if known is None:
            known = self._spatial_names[name] = self._is_spatial(name)
        return known

    def _is_spatial(self, name: str) -> bool:
        if not name or self.index.constant(name) is not None:
            return False
        shape = self.index.shape(name)
        dtype = self.index.dtype(name)
        return shape is not None and len(shape) == 4 and dtype is not None and dtype.name in _FLOATS

    def _scalar(self, name: str) -> bool:
        value = self.index.constant(name)
        return value is not None and value.size == 1 and value.ndim <= 4

    def _per_channel(self, name: str) -> bool:
        """A constant of shape (C, 1, 1) or (1, C, 1, 1): one value per channel of a 4-D tensor."""
        value = self.index.constant(name)
        if value is None:
            return False
        shape = value.shape
        return (len(shape) == 3 and shape[1:] == (1, 1)) or (len(shape) == 4 and shape[0] == 1 and shape[2:] == (1, 1))

    def conv_kind(self, node: Node) -> str | None:
        """"depthwise" or "conv" for a convolution the channels-last kernel runs, else None."""
        fused = node.domain == RONN_DOMAIN and node.op_type == "FusedConv"
        if not (fused or _standard(node, "Conv")) or len(node.inputs) < 2 or len(node.outputs) != 1:
            return None
        if fused and int(node.attributes.get("channels_last", 0)):
            return None
        weight = self.index.constant(node.inputs[1])
        bias = node.inputs[2] if len(node.inputs) > 2 else ""
        if weight is None or weight.ndim != 4 or weight.dtype.name not in _FLOATS:
            return None
        if bias and self.index.constant(bias) is None:
            return None
        if not self._spatial(node.inputs[0]) or not self._spatial(node.outputs[0]):
            return None
        if len(node.inputs) > 3 and node.inputs[3] and not self._spatial(node.inputs[3]):
            return None
        group = int(node.attributes.get("group", 1))
        if group == 1:
            return "conv"
        if weight.shape[1] == 1 and weight.shape[0] == group:
            return "depthwise"
        return None

    def convertible(self, node: Node) -> bool:
        if self.conv_kind(node) is not None:
            return True
        if node.domain not in ("", "ai.onnx") or len(node.outputs) != 1 or not self._spatial(node.outputs[0]):
            return False
        op = node.op_type
        inputs = [n for n in node.inputs if n]
        if op in UNARY:
            if not inputs or not self._spatial(node.inputs[0]):
                return False
            rest = node.inputs[1:]
            if op == "PRelu":
                return all(self._scalar(n) or self._per_channel(n) for n in rest)
            return all(not n or self._scalar(n) for n in rest)
        if op in BINARY:
            if len(inputs) != 2 or len(node.inputs) != 2:
                return False
            tensors = [n for n in inputs if self._spatial(n)]
            others = [n for n in inputs if not self._spatial(n)]
            return bool(tensors) and all(self._scalar(n) or self._per_channel(n) for n in others)
        if op in POOLS:
            return len(inputs) == 1 and self._spatial(node.inputs[0])
        if op == "Concat":
            axis = int(node.attributes.get("axis", 0))
            return axis in (1, -3) and bool(inputs) and all(self._spatial(n) for n in inputs)
        return False

    # --- regions ------------------------------------------------------------------------

    def regions(self) -> list[list[Node]]:
        """Connected groups of convertible nodes (through the 4-D values they share)."""
        nodes = [n for n in self.graph.nodes if self.convertible(n)]
        parent = list(range(len(nodes)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        first: dict[str, int] = {}  # value -> the first node touching it
        for i, node in enumerate(nodes):
            for name in [*node.inputs, *node.outputs]:
                if not self._spatial(name):
                    continue
                if name in first:
                    parent[find(i)] = find(first[name])
                else:
                    first[name] = i
        groups: dict[int, list[Node]] = {}
        for i, node in enumerate(nodes):
            groups.setdefault(find(i), []).append(node)
        return [self._trimmed(region) for region in groups.values()]

    def _trimmed(self, region: list[Node]) -> list[Node]:
        """The region less the global pools whose result only leaves it: pooling channels-first
        after the Transpose is cheaper than a reduction over the outer axes."""
        members = {id(n) for n in region}
        while True:
            leaving = [
                n for n in region
                if n.op_type in POOLS and not any(id(u) in members for u in self.index.users(n.outputs[0]))
            ]  # fmt: skip
            if not leaving:
                return region
            for node in leaving:
                members.discard(id(node))
            region = [n for n in region if id(n) in members]

    def run(self) -> bool:
        changed = False
        for region in self.regions():
            plan = _RegionPlan(self, region)
            if plan.pays() and plan.rewrite():
                changed = True
                self._spatial_names.clear()
        if changed:
            self.index.commit()
            sort_nodes(self.graph)
            remove_dead_nodes(self.graph)
        return changed


class _RegionPlan:
    """One region: the values crossing its border, and its rewrite."""

    def __init__(self, layout: _Layout, nodes: list[Node]) -> None:
        self.layout = layout
        self.nodes = nodes
        index = layout.index
        members = {id(n) for n in nodes}
        self.members = members
        produced = {o for n in nodes for o in n.outputs if o}
        #: values produced here that something outside reads (a node, a subgraph, the graph)
        self.leaving = [
            v for v in sorted(produced)
            if v in index.outputs or v in index.subgraph_reads or any(id(u) not in members for u in index.users(v))
        ]  # fmt: skip
        #: 4-D values from outside that region nodes read
        entering: list[str] = []
        for node in nodes:
            for name in node.inputs:
                if name and name not in produced and layout._spatial(name) and name not in entering:
                    entering.append(name)
        self.entering = entering
        #: entering values that are channels-first Transposes of channels-last tensors
        self.sources = {v: s for v in entering if (s := self._transposed_source(v)) is not None}
        #: the other entering values every region reader takes as a convolution's X (read
        #: channels-first)
        self.read_first = {v for v in entering if v not in self.sources and self._only_conv_inputs(v)}
        self.convs = [n for n in nodes if layout.conv_kind(n) is not None]
        self.depthwise = [n for n in self.convs if layout.conv_kind(n) == "depthwise"]
        #: squeeze-and-excitation blocks: the Mul that ends one -> (x, gap, fc1, fc2)
        self.squeezes: dict[int, tuple[str, Node, Node, Node]] = {}
        if layout.squeeze:
            for node in nodes:
                found = self._squeeze_excitation(node)
                if found is not None:
                    self.squeezes[id(node)] = found
        self.absorbed = {id(n) for _, *parts in self.squeezes.values() for n in parts}

    def _pointwise(self, node: Node | None) -> bool:
        """A 1x1 convolution of one group with no padding, stride or dilation, and no residual."""
        if node is None or id(node) not in self.members or self.layout.conv_kind(node) != "conv":
            return False
        if len(node.inputs) > 3 and node.inputs[3]:
            return False
        weight = self.layout.index.constant(node.inputs[1])
        attrs = node.attributes
        return (
            weight is not None and weight.shape[2:] == (1, 1)
            and all(int(p) == 0 for p in attrs.get("pads", ()))
            and all(int(v) == 1 for v in [*attrs.get("strides", ()), *attrs.get("dilations", ())])
            and str(attrs.get("auto_pad", "NOTSET")) in ("NOTSET", "VALID")
        )  # fmt: skip

    def _squeeze_excitation(self, mul: Node) -> tuple[str, Node, Node, Node] | None:
        """``Mul(x, fc2(fc1(GlobalAveragePool(x))))``: (x, pool, fc1, fc2), each step read once."""
        index = self.layout.index
        if not _standard(mul, "Mul") or len(mul.inputs) != 2 or id(mul) not in self.members:
            return None
        for x, g in (mul.inputs, mul.inputs[::-1]):
            fc2 = index.producer.get(g)
            if not self._pointwise(fc2) or index.only_user(g) is not mul:
                continue
            fc1 = index.producer.get(fc2.inputs[0])
            if not self._pointwise(fc1) or index.only_user(fc2.inputs[0]) is not fc2:
                continue
            pool = index.producer.get(fc1.inputs[0])
            if (
                pool is None or id(pool) not in self.members or not _standard(pool, "GlobalAveragePool")
                or pool.inputs[0] != x or index.only_user(fc1.inputs[0]) is not fc1
            ):  # fmt: skip
                continue
            return x, pool, fc1, fc2
        return None

    def _only_conv_inputs(self, name: str) -> bool:
        readers = [u for u in self.layout.index.users(name) if id(u) in self.members]
        return bool(readers) and all(
            self.layout.conv_kind(u) is not None and u.inputs[0] == name and name not in u.inputs[1:]
            for u in readers
        )

    def _transposed_source(self, name: str) -> str | None:
        """x when ``name`` is ``Transpose(x, perm=[0, 3, 1, 2])`` (x is already channels-last)."""
        producer = self.layout.index.producer.get(name)
        if producer is None or not _standard(producer, "Transpose"):
            return None
        perm = producer.attributes.get("perm")
        if perm is None or [int(p) for p in perm] != TO_FIRST:
            return None
        return producer.inputs[0]

    def _back_transposes(self, name: str) -> list[Node] | None:
        """The readers outside the region when all are ``Transpose(name, perm=[0, 2, 3, 1])``
        (they become the channels-last value itself), else None."""
        index = self.layout.index
        if name in index.outputs or name in index.subgraph_reads:
            return None
        readers = [u for u in index.users(name) if id(u) not in self.members]
        if not readers or not all(
            _standard(u, "Transpose") and [int(p) for p in u.attributes.get("perm", ())] == TO_LAST
            for u in readers
        ):
            return None
        return readers

    def transposes(self) -> int:
        entering = [v for v in self.entering if v not in self.read_first and v not in self.sources]
        leaving = [v for v in self.leaving if self._back_transposes(v) is None]
        return len(entering) + len(leaving)

    def pays(self) -> bool:
        return bool(self.depthwise) and CONVS_PER_TRANSPOSE * self.transposes() <= len(self.convs)

    # --- rewrite ------------------------------------------------------------------------

    def rewrite(self) -> bool:
        """Rewrite the region; False (and nothing changed in the graph) when a fused node has
        no function body."""
        layout = self.layout
        graph, index, namer = layout.graph, layout.index, layout.namer
        twin: dict[str, str] = {}
        added: list[Node] = []
        for name in self.entering:
            if name in self.read_first:
                continue
            if name in self.sources:
                twin[name] = self.sources[name]
                continue
            twin[name] = self._declare_twin(name)
            added.append(Node("Transpose", [name], [twin[name]], name=namer.fresh(f"{name}_to_nhwc"),
                              attributes={"perm": list(TO_LAST)}))  # fmt: skip
        for node in self.nodes:
            if id(node) in self.absorbed:
                continue
            for out in node.outputs:
                if out and out not in twin:
                    twin[out] = self._declare_twin(out)
        converted: list[tuple[Node, Node | None]] = []
        for node in self.nodes:
            if id(node) in self.absorbed:
                converted.append((node, None))
                continue
            new = self._squeeze_node(node, twin) if id(node) in self.squeezes else self._converted(node, twin)
            if new is None:
                return False  # no function body for a fused node: the region stays as it is
            converted.append((node, new))
        for node, new in converted:
            if new is None:
                index.remove(node)
            else:
                index.replace(node, new)
        back: list[Node] = []
        for name in self.leaving:
            readers = self._back_transposes(name)
            if readers is not None:
                back.extend(readers)  # they make the value channels-last again: read the region's
                continue
            added.append(Node("Transpose", [twin[name]], [name], name=namer.fresh(f"{name}_to_nchw"),
                              attributes={"perm": list(TO_FIRST)}))  # fmt: skip
        graph.nodes.extend(added)
        for node in added:
            index._add(node)
        for reader in back:
            source = twin[reader.inputs[0]]
            if index.replace_value(reader.outputs[0], source):
                index.remove(reader)
                if index.producer.get(source) is None:  # renamed to the reader's (graph output) name
                    twin[reader.inputs[0]] = reader.outputs[0]
            else:  # the channels-last value under the reader's name
                index.replace(reader, Node("Identity", [source], list(reader.outputs), name=reader.name))
        return True

    def _declare_twin(self, name: str) -> str:
        layout = self.layout
        fresh = layout.namer.fresh(f"{name}_nhwc")
        t = layout.index.tensor_type(name)
        if t is not None:
            shape = None if t.shape is None else tuple(t.shape[p] for p in TO_LAST)
            layout.graph.value_info[fresh] = ValueInfo(fresh, TensorType(t.dtype, shape))
        return fresh

    def _constant_last(self, name: str) -> str:
        """A per-channel constant reshaped to broadcast over (N, H, W, C)."""
        layout = self.layout
        value = layout.index.constant(name)
        if value is None or value.size == 1 or not layout._per_channel(name):
            return name
        shape = (1, 1, value.shape[0]) if value.ndim == 3 else (1, 1, 1, value.shape[1])
        fresh = layout.namer.fresh(f"{name}_nhwc")
        layout.graph.initializers[fresh] = readonly(np.ascontiguousarray(value.reshape(shape)))
        return fresh

    def _converted(self, node: Node, twin: dict[str, str]) -> Node | None:
        layout = self.layout
        outputs = [twin.get(o, o) for o in node.outputs]
        kind = layout.conv_kind(node)
        if kind is not None:
            x = node.inputs[0]
            inputs = [x if x in self.read_first else twin[x], *node.inputs[1:3]]
            while len(inputs) < 3:
                inputs.append("")
            if len(node.inputs) > 3 and node.inputs[3]:
                inputs.append(twin[node.inputs[3]])
            attributes = {k: v for k, v in node.attributes.items() if k in CONV_ATTRIBUTES}
            if node.domain == RONN_DOMAIN:
                attributes.update({k: v for k, v in node.attributes.items() if k.startswith("activation")})
            else:
                attributes["activation"] = "Identity"
            attributes["channels_last"] = 2 if x in self.read_first else 1
            dtype = layout.index.dtype(x)
            return make_fused_node(layout.model, "FusedConv", inputs, outputs, attributes, dtype, node.name)
        op = node.op_type
        inputs = [twin.get(n, n) if layout._spatial(n) else self._constant_last(n) for n in node.inputs]
        if op in POOLS:
            return self._reduction(node, POOLS[op], inputs[0], outputs[0])
        attributes = dict(node.attributes)
        if op == "Concat":
            attributes["axis"] = 3
        return Node(op, inputs, outputs, name=node.name, domain=node.domain, attributes=attributes)

    def _squeeze_node(self, mul: Node, twin: dict[str, str]) -> Node | None:
        layout = self.layout
        x, _, fc1, fc2 = self.squeezes[id(mul)]
        attributes: dict[str, object] = {"channels_last": 1}
        for prefix, conv in (("", fc1), ("gate_", fc2)):
            if conv.domain == RONN_DOMAIN:
                attributes.update({prefix + k: v for k, v in conv.attributes.items() if k.startswith("activation")})
            else:
                attributes[prefix + "activation"] = "Identity"
        inputs = [twin[x], fc1.inputs[1], fc1.inputs[2] if len(fc1.inputs) > 2 else "",
                  fc2.inputs[1], fc2.inputs[2] if len(fc2.inputs) > 2 else ""]  # fmt: skip
        dtype = layout.index.dtype(x)
        return make_fused_node(layout.model, "SqueezeExcitation", inputs, [twin[mul.outputs[0]]], attributes,
                               dtype, mul.name)  # fmt: skip

    def _reduction(self, node: Node, op: str, source: str, output: str) -> Node:
        """``op`` over axes 1 and 2, keeping them (the axes an input from opset 18)."""
        layout = self.layout
        if layout.opset >= 18:
            axes = layout.namer.fresh(f"{node.name or output}_axes")
            layout.graph.initializers[axes] = readonly(np.array([1, 2], dtype=np.int64))
            return Node(op, [source, axes], [output], name=node.name, attributes={"keepdims": 1})
        return Node(op, [source], [output], name=node.name, attributes={"axes": [1, 2], "keepdims": 1})

