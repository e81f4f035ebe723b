"""Shape arithmetic known before running: Shape/Size folding and Reshape fusion.

A small partial evaluator follows the integer vectors that shape computations build
(``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` and the like). Each element is an int, a
symbol standing for a dimension not known statically (the same symbol means the same size), or
unknown. Vectors whose elements are all ints become initializers (``shape_folding``); a
Reshape whose target is partly symbolic gets a constant target that copies the matching
dimensions of its input (``0``) and infers one (``-1``) (``reshape_fusion``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from ..dtypes import DataType
from ..ir import Graph, Model, Node
from ..registry import OptimizerContext
from ._graph import GraphIndex, Namer, declare, on_every_graph, readonly, remove_dead_nodes, sort_nodes

#: an element: a static int, a symbol (hashable tuple) or None (unknown)
Element = Union[int, tuple, None]
MAX_ELEMENTS = 64


@dataclass(frozen=True)
class Vector:
    """A small integer tensor of rank 0 or 1, element by element."""

    elements: tuple[Element, ...]
    scalar: bool
    dtype: np.dtype

    @property
    def known(self) -> bool:
        return all(isinstance(e, int) for e in self.elements)

    def array(self) -> np.ndarray:
        values = np.array(self.elements, dtype=self.dtype)
        return values.reshape(()) if self.scalar else values


def _dim_symbol(value: str, axis: int, dim: Any) -> Element:
    if isinstance(dim, int) and dim >= 0:
        return dim
    if isinstance(dim, str) and dim:
        return ("param", dim)
    return ("dim", value, axis)


def dim_symbols(index: GraphIndex, name: str) -> list[Element] | None:
    """The dimensions of ``name`` as elements, from its declared type, when its rank is known."""
    shape = index.shape(name)
    if shape is None:
        return None
    return [_dim_symbol(name, axis, dim) for axis, dim in enumerate(shape)]


#: operators whose first output has the shape of their first input
SAME_SHAPE = frozenset(
    {
        "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "BatchNormalization", "Cast",
        "CastLike", "Ceil", "Celu", "Clip", "Cos", "Cosh", "Dropout", "Elu", "Erf", "Exp", "Floor",
        "Gelu", "HardSigmoid", "HardSwish", "Hardmax", "Identity", "InstanceNormalization",
        "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu", "Log", "LogSoftmax", "LpNormalization",
        "Mish", "Neg", "Not", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin",
        "Sinh", "Softmax", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh", "ThresholdedRelu",
        "RMSNormalization", "GroupNormalization", "Swish",
    }
)  # fmt: skip
#: elementwise operators that broadcast their inputs
BROADCASTING = frozenset(
    {
        "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Equal", "Less",
        "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Where", "BitShift",
        "BitwiseAnd", "BitwiseOr", "BitwiseXor", "PRelu",
    }
)  # fmt: skip


class ShapeEvaluator:
    """Evaluates the graph's small integer vectors as far as they are known."""

    def __init__(self, graph: Graph, model: Model, index: GraphIndex) -> None:
        self.graph = graph
        self.model = model
        self.index = index
        self.values: dict[str, Vector] = {}
        #: dimensions worked out here, which may know more than the declared types
        self.dims: dict[str, list[Element]] = {}
        opset = model.opset("") or 0
        self.opset = opset
        failures = (ValueError, TypeError, IndexError, KeyError, OverflowError, ZeroDivisionError)
        for node in graph.nodes:
            if not node.outputs or not node.outputs[0]:
                continue
            try:
                if node.op_type == "Split" and node.domain in ("", "ai.onnx"):
                    for name, dims in zip(node.outputs, self._split_dims(node)):
                        if name and dims is not None:
                            self.dims[name] = self._merged(name, dims)
                    dims = None
                else:
                    dims = self._dims(node)
            except failures:
                dims = None
            if dims is not None:
                self.dims[node.outputs[0]] = self._merged(node.outputs[0], dims)
            if node.domain in ("", "ai.onnx"):
                try:
                    result = self._evaluate(node)
                except failures:
                    result = None
                if result is not None:
                    self.values[node.outputs[0]] = result

    # --- dimensions -----------------------------------------------------------------------

    def dims_of(self, name: str) -> list[Element] | None:
        """The dimensions of ``name`` as elements, when its rank is known."""
        if name in self.dims:
            return self.dims[name]
        value = self.index.constant(name)
        if value is not None:
            return list(value.shape)
        return dim_symbols(self.index, name)

    def _merged(self, name: str, dims: list[Element]) -> list[Element]:
        """Worked-out dimensions, completed by what the declared type knows better."""
        declared = dim_symbols(self.index, name)
        if declared is None or len(declared) != len(dims):
            return dims
        merged: list[Element] = []
        for axis, (mine, theirs) in enumerate(zip(dims, declared)):
            if isinstance(mine, int):
                merged.append(mine)
            elif isinstance(theirs, int) or (mine is None and theirs is not None):
                merged.append(theirs)
            elif mine is None:
                merged.append(("dim", name, axis))
            else:
                merged.append(mine)
        return merged

    def _dims(self, node: Node) -> list[Element] | None:
        op = node.op_type
        inputs = node.inputs
        if node.domain == "ronn":
            if op in ("Gelu", "LayerNormalization"):
                return self.dims_of(inputs[0])
            if op == "FusedMatMul":
                return self._matmul_dims(inputs[0], inputs[1])
            return None
        if node.domain not in ("", "ai.onnx") or not inputs:
            return None
        if op in SAME_SHAPE:
            return self.dims_of(inputs[0])
        if op in BROADCASTING:
            return _broadcast([self.dims_of(i) for i in inputs if i])
        if op == "MatMul":
            return self._matmul_dims(inputs[0], inputs[1])
        if op == "Transpose":
            dims = self.dims_of(inputs[0])
            if dims is None:
                return None
            perm = node.attributes.get("perm")
            perm = [int(p) for p in perm] if perm is not None else list(reversed(range(len(dims))))
            return [dims[p] for p in perm]
        if op == "Reshape":
            target = self.get(inputs[1]) if len(inputs) > 1 else None
            if target is None or target.scalar:
                return None
            dims = self.dims_of(inputs[0])
            allowzero = int(node.attributes.get("allowzero", 0))
            out: list[Element] = []
            for position, element in enumerate(target.elements):
                if element == 0 and not allowzero:
                    out.append(dims[position] if dims is not None and position < len(dims) else None)
                elif element == -1:
                    out.append(self._inferred(dims, target.elements, position))
                else:
                    out.append(element)
            return out
        if op in ("Unsqueeze", "Squeeze"):
            dims = self.dims_of(inputs[0])
            axes = node.attributes.get("axes")
            if axes is None and len(inputs) > 1 and inputs[1]:
                axes = self._ints(inputs[1])
                if axes is None:
                    return None
            if dims is None or axes is None:
                return None
            axes = [int(a) for a in axes]
            if op == "Squeeze":
                rank = len(dims)
                drop = {a % rank for a in axes}
                return [d for i, d in enumerate(dims) if i not in drop]
            rank = len(dims) + len(axes)
            inserted = {a % rank for a in axes}
            rest = iter(dims)
            return [1 if i in inserted else next(rest) for i in range(rank)]
        if op == "Gather":
            data, indices = self.dims_of(inputs[0]), self.dims_of(inputs[1])
            if data is None or indices is None:
                return None
            axis = int(node.attributes.get("axis", 0)) % len(data)
            return data[:axis] + indices + data[axis + 1 :]
        if op == "Concat":
            parts = [self.dims_of(i) for i in inputs if i]
            if not parts or any(p is None for p in parts) or len({len(p) for p in parts}) != 1:  # type: ignore[misc]
                return None
            axis = int(node.attributes.get("axis", 0)) % len(parts[0])  # type: ignore[arg-type]
            out = []
            for position in range(len(parts[0])):  # type: ignore[arg-type]
                column = [p[position] for p in parts]  # type: ignore[index]
                if position == axis:
                    static = all(isinstance(c, int) for c in column)
                    out.append(sum(column) if static else None)  # type: ignore[arg-type]
                else:
                    out.append(next((c for c in column if c is not None), None))
            return out
        if op == "Gemm":
            a, b = self.dims_of(inputs[0]), self.dims_of(inputs[1])
            if a is None or b is None or len(a) != 2 or len(b) != 2:
                return None
            m = a[1] if int(node.attributes.get("transA", 0)) else a[0]
            n = b[0] if int(node.attributes.get("transB", 0)) else b[1]
            return [m, n]
        return None

    def _split_dims(self, node: Node) -> list[list[Element] | None]:
        dims = self.dims_of(node.inputs[0])
        if dims is None:
            return []
        axis = int(node.attributes.get("axis", 0)) % len(dims)
        sizes = node.attributes.get("split")
        if sizes is None and len(node.inputs) > 1 and node.inputs[1]:
            sizes = self._ints(node.inputs[1])
            if sizes is None:
                return []
        count = len(node.outputs)
        if sizes is None:
            total = dims[axis]
            if not isinstance(total, int):
                return [None] * count
            if "num_outputs" in node.attributes:
                chunk = -(-total // count)
                sizes = [min(chunk, total - i * chunk) for i in range(count)]
            elif total % count == 0:
                sizes = [total // count] * count
            else:
                return [None] * count
        return [dims[:axis] + [int(size)] + dims[axis + 1 :] for size in sizes]

    def _matmul_dims(self, left: str, right: str) -> list[Element] | None:
        a, b = self.dims_of(left), self.dims_of(right)
        if a is None or b is None or len(a) < 2 or len(b) < 2:
            return None
        batch = _broadcast([a[:-2], b[:-2]])
        return None if batch is None else batch + [a[-2], b[-1]]

    @staticmethod
    def _inferred(dims: list[Element] | None, target: tuple[Element, ...], position: int) -> Element:
        """The -1 of a Reshape target: the input's size over the other target sizes, after the
        symbols common to both cancel out; None when a size is unknown."""
        if dims is None:
            return None
        numerator = list(dims)
        denominator: list[Element] = []
        for i, element in enumerate(target):
            if i == position:
                continue
            if element == 0:
                element = dims[i] if i < len(dims) else None
            denominator.append(element)
        for element in list(denominator):
            if not isinstance(element, int) and element is not None and element in numerator:
                numerator.remove(element)
                denominator.remove(element)
        if not all(isinstance(d, int) and d > 0 for d in numerator + denominator):
            return None
        total, rest = int(np.prod(numerator)), int(np.prod(denominator))  # type: ignore[arg-type]
        return total // rest if rest and total % rest == 0 else None

    def get(self, name: str) -> Vector | None:
        if not name:
            return None
        found = self.values.get(name)
        if found is not None:
            return found
        value = self.index.constant(name)
        if value is None or value.dtype.kind not in "iu" or value.ndim > 1 or value.size > MAX_ELEMENTS:
            return None
        return Vector(tuple(int(v) for v in value.reshape(-1)), value.ndim == 0, value.dtype)

    def _ints(self, name: str) -> list[int] | None:
        vector = self.get(name)
        return list(vector.elements) if vector is not None and vector.known else None  # type: ignore[arg-type]

    def _evaluate(self, node: Node) -> Vector | None:
        op = node.op_type
        inputs = node.inputs
        attrs = node.attributes
        if op == "Shape":
            dims = self.dims_of(inputs[0])
            if dims is None:
                return None
            rank = len(dims)
            start = _clamp(int(attrs.get("start", 0)), rank)
            end = _clamp(int(attrs.get("end", rank)), rank)
            return Vector(tuple(dims[start:end]), False, np.dtype(np.int64))
        if op == "Size":
            dims = self.dims_of(inputs[0])
            if dims is None or not all(isinstance(d, int) for d in dims):
                return None
            return Vector((int(np.prod(dims)),), True, np.dtype(np.int64))  # type: ignore[arg-type]
        if op == "Identity":
            return self.get(inputs[0])
        if op == "Cast":
            source = self.get(inputs[0])
            target = DataType(int(attrs.get("to", 0))).np_dtype if "to" in attrs else None
            if source is None or target is None or target.kind not in "iu" or source.dtype.kind not in "iu":
                return None
            return Vector(source.elements, source.scalar, target)
        if op == "Gather":
            data = self.get(inputs[0])
            indices = self.get(inputs[1]) if len(inputs) > 1 else None
            if data is None or data.scalar or indices is None or not indices.known:
                return None
            if int(attrs.get("axis", 0)) not in (0, -1):
                return None
            size = len(data.elements)
            positions = [int(i) + size if int(i) < 0 else int(i) for i in indices.elements]  # type: ignore[arg-type]
            picked = tuple(data.elements[p] for p in positions)
            return Vector(picked, indices.scalar, data.dtype)
        if op in ("Unsqueeze", "Squeeze"):
            data = self.get(inputs[0])
            if data is None:
                return None
            axes = attrs.get("axes")
            if axes is None and len(inputs) > 1 and inputs[1]:
                axes = self._ints(inputs[1])
                if axes is None:
                    return None
            axes = [int(a) for a in axes] if axes is not None else None
            if op == "Unsqueeze":
                return Vector(data.elements, False, data.dtype) if data.scalar and axes in ([0], [-1]) else None
            if not data.scalar and len(data.elements) == 1 and axes in (None, [0], [-1]):
                return Vector(data.elements, True, data.dtype)
            return None
        if op == "Concat":
            if int(attrs.get("axis", 0)) not in (0, -1):
                return None
            parts = [self.get(i) for i in inputs if i]
            if not parts or any(p is None or p.scalar for p in parts):
                return None
            elements = tuple(e for p in parts for e in p.elements)  # type: ignore[union-attr]
            if len(elements) > MAX_ELEMENTS:
                return None
            return Vector(elements, False, parts[0].dtype)  # type: ignore[union-attr]
        if op == "Slice":
            return self._slice(node)
        if op == "Reshape":
            data = self.get(inputs[0])
            target = self._ints(inputs[1]) if len(inputs) > 1 else None
            if data is None or target is None:
                return None
            if target == [] and len(data.elements) == 1:
                return Vector(data.elements, True, data.dtype)
            if len(target) == 1 and target[0] in (-1, len(data.elements)):
                return Vector(data.elements, False, data.dtype)
            return None
        if op in ("Add", "Sub", "Mul", "Div", "Max", "Min") and len(inputs) == 2:
            return self._arithmetic(op, self.get(inputs[0]), self.get(inputs[1]))
        return None

    def _slice(self, node: Node) -> Vector | None:
        data = self.get(node.inputs[0])
        if data is None or data.scalar:
            return None
        if self.opset < 10:
            starts = node.attributes.get("starts")
            ends = node.attributes.get("ends")
            axes = node.attributes.get("axes", [0])
            steps: list[int] | None = [1]
        else:
            extra = [self._ints(n) if n else None for n in node.inputs[1:]]
            extra += [None] * (4 - len(extra))
            starts, ends, axes, steps = extra
            if any(n and v is None for n, v in zip(node.inputs[1:], extra)):
                return None
            axes = axes if axes is not None else [0]
            steps = steps if steps is not None else [1]
        if starts is None or ends is None or len(starts) != 1 or list(axes) not in ([0], [-1]):
            return None
        step = int(steps[0]) if steps else 1
        if step == 0:
            return None
        size = len(data.elements)
        picked = data.elements[slice(*slice(int(starts[0]), int(ends[0]), step).indices(size))]
        return Vector(tuple(picked), False, data.dtype)

    @staticmethod
    def _arithmetic(op: str, a: Vector | None, b: Vector | None) -> Vector | None:
        if a is None or b is None or a.dtype.kind not in "iu":
            return None
        la, lb = len(a.elements), len(b.elements)
        if la != lb and 1 not in (la, lb):
            return None
        n = max(la, lb)
        left = a.elements * n if la == 1 else a.elements
        right = b.elements * n if lb == 1 else b.elements
        out: list[Element] = []
        for x, y in zip(left, right):
            if not isinstance(x, int) or not isinstance(y, int):
                # x * 1, x + 0 and the like keep a symbol
                if op in ("Mul", "Div") and y == 1 or op in ("Add", "Sub") and y == 0:
                    out.append(x)
                elif op == "Mul" and x == 1 or op == "Add" and x == 0:
                    out.append(y)
                else:
                    out.append(None)
                continue
            if op == "Add":
                out.append(x + y)
            elif op == "Sub":
                out.append(x - y)
            elif op == "Mul":
                out.append(x * y)
            elif op == "Div":
                if y == 0:
                    return None
                quotient = abs(x) // abs(y)
                out.append(quotient if (x >= 0) == (y >= 0) else -quotient)  # truncates, as C does
            elif op == "Max":
                out.append(max(x, y))
            else:
                out.append(min(x, y))
        return Vector(tuple(out), a.scalar and b.scalar, a.dtype)


def _broadcast(shapes: list[list[Element] | None]) -> list[Element] | None:
    """Numpy broadcasting of dimension lists (None where the result is not known)."""
    if not shapes or any(s is None for s in shapes):
        return None
    rank = max(len(s) for s in shapes)  # type: ignore[arg-type]
    padded = [[1] * (rank - len(s)) + list(s) for s in shapes]  # type: ignore[arg-type]
    out: list[Element] = []
    for column in zip(*padded):
        rest = {d for d in column if d != 1}
        if not rest:
            out.append(1)
        elif len(rest) == 1:
            out.append(next(iter(rest)))
        else:
            statics = {d for d in rest if isinstance(d, int)}
            out.append(next(iter(statics)) if len(statics) == 1 else None)
    return out


def _clamp(value: int, rank: int) -> int:
    if value < 0:
        value += rank
    return min(max(value, 0), rank)


# --- the passes ----------------------------------------------------------------------------


def fold_shapes(model: Model, context: OptimizerContext) -> bool:
    """Shape, Size and the integer arithmetic on them become initializers when fully known
    (and what then reads only constants is folded too)."""
    from .constant_folding import fold_graph

    def run(graph: Graph) -> bool:
        changed = _fold_shapes(graph, model)
        if changed:
            fold_graph(graph, model, context.kernels)
        return changed

    return on_every_graph(model, run)


def _fold_shapes(graph: Graph, model: Model) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    evaluator = ShapeEvaluator(graph, model, index)
    changed = False
    for node in graph.nodes:
        if len(node.outputs) != 1 or not node.outputs[0] or node.outputs[0] in index.outputs:
            continue
        vector = evaluator.values.get(node.outputs[0])
        if vector is None or not vector.known or node.op_type == "Constant":
            continue
        graph.initializers[node.outputs[0]] = readonly(vector.array())
        index.remove(node)
        changed = True
    index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed


def fuse_reshapes(model: Model, context: OptimizerContext) -> bool:
    """A Reshape whose target is computed from shapes gets a constant target instead."""
    namer = Namer(model)
    return on_every_graph(model, lambda graph: _fuse_reshapes(graph, model, namer))


def constant_target(elements: Sequence[Element], data_dims: list[Element] | None) -> list[int] | None:
    """A Reshape target equivalent to ``elements`` using 0 (copy the input's dimension) and
    one -1 (inferred) for what is not a static int; None when none exists."""
    target: list[int] = []
    for position, element in enumerate(elements):
        if isinstance(element, int):
            target.append(element)
        elif (
            element is not None
            and data_dims is not None
            and position < len(data_dims)
            and data_dims[position] == element
        ):
            target.append(0)
        else:
            target.append(-1)
    return target if target.count(-1) <= 1 else None


def _fuse_reshapes(graph: Graph, model: Model, namer: Namer) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    evaluator = ShapeEvaluator(graph, model, index)
    changed = False
    for node in graph.nodes:
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        if int(node.attributes.get("allowzero", 0)) or index.constant(node.inputs[1]) is not None:
            continue
        vector = evaluator.get(node.inputs[1])
        if vector is None or vector.scalar:
            continue
        data_dims = evaluator.dims_of(node.inputs[0])
        target = constant_target(vector.elements, data_dims)
        if target is None:
            continue
        if 0 in target and data_dims is None:
            continue
        name = namer.fresh(f"{node.name or node.outputs[0]}_shape")
        graph.initializers[name] = readonly(np.array(target, dtype=np.int64))
        index.replace(node, Node(
            node.op_type, [node.inputs[0], name], list(node.outputs), name=node.name,
            domain=node.domain, attributes=dict(node.attributes), doc_string=node.doc_string,
        ))
        changed = True
    index.commit()
    if changed:
        remove_dead_nodes(graph)
    return changed


# --- Reshape -> Gemm -> Reshape ------------------------------------------------------------


def fuse_gemm_reshapes(model: Model, context: OptimizerContext) -> bool:
    """``Reshape(Gemm(Reshape(x, [-1, K]), W, C), [*x.shape[:-1], N])``, the linear layer of
    exporters that flatten the leading axes, is ``MatMul(x, W) + C`` on x as it is."""
    namer = Namer(model)
    return on_every_graph(model, lambda graph: _gemm_reshapes(graph, model, namer))


def _standard_op(node: Node | None, op: str) -> bool:
    return node is not None and node.domain in ("", "ai.onnx") and node.op_type == op


def _gemm_reshapes(graph: Graph, model: Model, namer: Namer) -> bool:
    sort_nodes(graph)
    index = GraphIndex(graph)
    evaluator = ShapeEvaluator(graph, model, index)
    changed = False
    for gemm in graph.nodes:
        if not _standard_op(gemm, "Gemm") or index.removed(gemm) or len(gemm.inputs) < 2:
            continue
        attrs = gemm.attributes
        if int(attrs.get("transA", 0)) or float(attrs.get("alpha", 1.0)) != 1.0:
            continue
        if len(gemm.inputs) > 2 and gemm.inputs[2] and float(attrs.get("beta", 1.0)) != 1.0:
            continue
        flatten = index.producer.get(gemm.inputs[0])
        after = index.only_user(gemm.outputs[0])
        if not _standard_op(flatten, "Reshape") or not _standard_op(after, "Reshape"):
            continue
        if index.removed(flatten) or index.removed(after) or index.only_user(gemm.inputs[0]) is not gemm:
            continue
        weights = index.constant(gemm.inputs[1])
        if weights is None or weights.ndim != 2:
            continue
        if int(attrs.get("transB", 0)):
            weights = weights.T
        k, n = weights.shape
        x = flatten.inputs[0]
        dims = evaluator.dims_of(x)
        flat_target = evaluator.get(flatten.inputs[1])
        target = evaluator.get(after.inputs[1])
        if dims is None or flat_target is None or target is None or target.scalar:
            continue
        if len(flat_target.elements) != 2 or flat_target.elements[1] != k:
            continue
        lead = list(target.elements[:-1])
        if target.elements[-1] != n or not lead or any(e is None or e in (0, -1) for e in lead):
            continue
        reshape_to: list[int] | None = None
        if list(dims) != lead + [k]:
            # x's leading axes differ from the result's: reshape x to them (with its last axis K)
            reshape_to = constant_target(lead + [k], dims)
            if reshape_to is None:
                continue
        bias = gemm.inputs[2] if len(gemm.inputs) > 2 else ""
        if bias:
            shape = index.shape(bias)
            if shape is None or len(shape) > 2 or (len(shape) == 2 and shape[0] != 1):
                continue
        w_name = gemm.inputs[1]
        if int(attrs.get("transB", 0)):
            w_name = namer.fresh(f"{gemm.name or gemm.outputs[0]}_weights")
            graph.initializers[w_name] = readonly(np.ascontiguousarray(weights))
        if reshape_to is not None:
            shape_name = namer.fresh(f"{flatten.name or flatten.outputs[0]}_shape")
            graph.initializers[shape_name] = readonly(np.array(reshape_to, dtype=np.int64))
            reshaped = namer.fresh(f"{flatten.outputs[0]}_{len(reshape_to)}d")  # a new shape: a new name
            index.replace(flatten, Node("Reshape", [x, shape_name], [reshaped], name=flatten.name))
            declare(graph, reshaped, index.tensor_type(x), lead + [k])
            x = reshaped
        else:
            index.remove(flatten)
        output = after.outputs[0]
        if bias:
            product = namer.fresh(f"{gemm.outputs[0]}_matmul")
            like = index.tensor_type(after.outputs[0]) or index.tensor_type(flatten.inputs[0])
            declare(graph, product, like, lead + [n])
            index.replace(gemm, Node("MatMul", [x, w_name], [product], name=gemm.name))
            index.replace(after, Node("Add", [product, bias], [output], name=f"{gemm.name}_bias"))
        else:
            index.remove(gemm)
            index.replace(after, Node("MatMul", [x, w_name], [output], name=gemm.name))
        changed = True
    index.commit()
    if changed:
        sort_nodes(graph)
        remove_dead_nodes(graph)
    return changed
