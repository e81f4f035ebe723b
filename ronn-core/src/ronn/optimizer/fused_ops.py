"""The fused operators of the ``ronn`` domain: how they are built, and their function bodies.

Every fused node the optimizer creates calls a model-local function (domain ``ronn``) whose
body is the same computation in standard operators. ronn runs its own kernel for the node (the
session keeps calls whose operator a provider implements); a model saved through
``optimized_model_filepath`` still loads in other runtimes, which inline the body. What the
body needs to know beyond attributes it can reference (the activation, which optional inputs
are present, typed constants) tells its bodies apart as function *overloads* (ONNX IR 10).

Operators (all ``since_version`` 1):

``FusedConv(X, W, B?, Z?)``
    ``activation(Conv(X, W, B) + Z)``: Conv's attributes, plus ``activation`` and its
    parameters. ``Z`` (a residual, broadcast to the Conv's result) is added *before* the
    activation; with ``activation="Identity"`` the node is a Conv plus a residual.
    ``channels_last`` (int, default 0; 2-D convolutions): 1 when X, Z and Y are channels-last
    (N, H, W, C), 2 when X is (N, C, H, W) and Z and Y are channels-last (the layout pass,
    :mod:`.layout`); W stays (M, C/group, kH, kW).
``FusedGemm(A, B, C?)``
    ``activation(Gemm(A, B, C))``: Gemm's attributes, plus the activation's.
``FusedBatchNormalization(X, scale, B, input_mean, input_var)``
    ``activation(BatchNormalization(X, ...))`` in inference: ``epsilon`` plus the activation's.
``FusedMatMul(A, B, bias?)``
    ``activation(MatMul(A, B) + bias)``: only the activation's attributes.
``LayerNormalization(X, Scale, B?)``
    the standard operator (opset 17), for models whose opset predates it.
``Gelu(X)``
    the standard operator (opset 20), ``approximate`` "none" or "tanh", for older opsets.
``SqueezeExcitation(X, W1, B1?, W2, B2?)``
    a squeeze-and-excitation block over channels-last X (N, H, W, C) (``channels_last=1``,
    from the layout pass): ``X * gate(Conv(act(Conv(m, W1, B1)), W2, B2))`` with ``m`` the
    mean over H and W, W1 (C1, C, 1, 1), W2 (C, C1, 1, 1); ``activation...`` attributes for
    act and ``gate_activation...`` for gate.
``ScaledDotProductAttention(Q, K, V, mask?, condition?, fill?)``
    ``MatMul(Softmax(S, axis=-1), V)`` with ``S = MatMul(Q, K) * scale`` (K already
    transposed: (..., D, T)), then ``Where(condition, S, fill)`` (``condition_keeps=1``) or
    ``Where(condition, fill, S)`` (``condition_keeps=0``) when a condition is given, then
    ``+ mask``. ``scale`` is a float attribute (float32), cast to the scores' type.

Activation attributes: ``activation`` (one of :data:`ACTIVATIONS`), ``activation_alpha`` and
``activation_beta`` (floats: LeakyRelu's alpha, HardSigmoid's alpha and beta, Clip's min and
max), ``activation_approximate`` (Gelu's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ir import Function, Model, Node, function_key
from ._graph import RONN_DOMAIN, RONN_OPSET, GraphIndex, scalar, standard_opset

#: activations the fused operators apply, as the standard operators of the same name
ACTIVATIONS = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu")

CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
GEMM_ATTRIBUTES = ("alpha", "beta", "transA", "transB")
ACTIVATION_ATTRIBUTES = ("activation", "activation_alpha", "activation_beta", "activation_approximate")

_FLOAT_LOWEST = float(np.finfo(np.float32).min)
_FLOAT_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Activation:
    """An activation to fuse: the operator and its parameters."""

    op: str = "Identity"
    alpha: float | None = None
    beta: float | None = None
    approximate: str | None = None

    def attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {"activation": self.op}
        if self.alpha is not None:
            attrs["activation_alpha"] = float(self.alpha)
        if self.beta is not None:
            attrs["activation_beta"] = float(self.beta)
        if self.approximate is not None:
            attrs["activation_approximate"] = self.approximate
        return attrs


def activation_of(node: Node, index: GraphIndex, opset: int) -> Activation | None:
    """The activation ``node`` applies, when it is one the fused operators support."""
    if node.domain not in ("", "ai.onnx", RONN_DOMAIN) or len(node.outputs) != 1:
        return None
    op = node.op_type
    if node.domain == RONN_DOMAIN:
        if op == "Gelu":
            return Activation("Gelu", approximate=str(node.attributes.get("approximate", "none")))
        return None
    if op not in ACTIVATIONS or not node.inputs:
        return None
    attrs = node.attributes
    if op in ("Relu", "Sigmoid", "Tanh", "HardSwish"):
        return Activation(op)
    if op == "LeakyRelu":
        return Activation(op, alpha=float(attrs.get("alpha", 0.01)))
    if op == "HardSigmoid":
        return Activation(op, alpha=float(attrs.get("alpha", 0.2)), beta=float(attrs.get("beta", 0.5)))
    if op == "Gelu":
        return Activation(op, approximate=str(attrs.get("approximate", "none")))
    # Clip
    if opset < 11:
        return Activation(op, alpha=float(attrs.get("min", _FLOAT_LOWEST)), beta=float(attrs.get("max", _FLOAT_MAX)))
    bounds = []
    for position, default in ((1, -math.inf), (2, math.inf)):
        if len(node.inputs) > position and node.inputs[position]:
            value = scalar(index.constant(node.inputs[position]))
            if value is None:
                return None
            bounds.append(value)
        else:
            bounds.append(default)
    return Activation(op, alpha=bounds[0], beta=bounds[1])


# --- building fused nodes ------------------------------------------------------------------


def make_fused_node(
    model: Model,
    op_type: str,
    inputs: list[str],
    outputs: list[str],
    attributes: dict[str, Any],
    dtype: np.dtype | None,
    name: str = "",
) -> Node | None:
    """A ``ronn`` node calling the function overload that computes the same in standard
    operators (added to the model with the ``ronn`` opset import); None when no body can be
    written for it (then the fusion does not happen)."""
    while inputs and not inputs[-1]:
        inputs = inputs[:-1]
    opset = standard_opset(model)
    try:
        overload, body = _BODIES[op_type](inputs, attributes, dtype, opset)
    except _NoBody:
        return None
    node = Node(op_type, list(inputs), list(outputs), name=name, domain=RONN_DOMAIN,
                attributes=dict(attributes), overload=overload)
    key = function_key(RONN_DOMAIN, op_type, overload)
    if key not in model.functions:
        formal_inputs, nodes, attribute_names = body
        model.functions[key] = Function(
            domain=RONN_DOMAIN,
            name=op_type,
            inputs=formal_inputs,
            outputs=["Y"],
            nodes=nodes,
            attributes=list(attribute_names),
            opset_imports={"": opset},
            doc_string=f"ronn's fused {op_type} ({overload}) in standard operators",
            overload=overload,
        )
    model.opset_imports.setdefault(RONN_DOMAIN, RONN_OPSET)
    return node


class _NoBody(Exception):
    pass


def _refs(*names: str) -> dict[str, str]:
    return {n: n for n in names}


def _constant(name: str, value: float, dtype: np.dtype | None) -> Node:
    if dtype is None or dtype == np.float32:
        return Node("Constant", [], [name], attributes={"value_float": float(value)})
    if dtype.kind != "f":
        raise _NoBody
    return Node("Constant", [], [name], attributes={"value": np.array(value, dtype=dtype)})


def _float_name(value: float) -> str:
    return repr(float(value))


def _activation_body(
    source: str, attributes: dict[str, Any], dtype: np.dtype | None, opset: int
) -> tuple[str, list[Node]]:
    """(overload part, nodes) applying the activation of ``attributes`` to ``source``, into Y."""
    op = str(attributes.get("activation", "Identity"))
    if op == "Identity":
        return "Identity", [Node("Identity", [source], ["Y"])]
    if op in ("Relu", "Sigmoid", "Tanh"):
        return op, [Node(op, [source], ["Y"])]
    if op == "HardSwish":
        if opset < 14:
            raise _NoBody
        return op, [Node(op, [source], ["Y"])]
    if op == "LeakyRelu":
        return op, [Node(op, [source], ["Y"], attribute_refs={"alpha": "activation_alpha"})]
    if op == "HardSigmoid":
        return op, [Node(op, [source], ["Y"], attribute_refs={"alpha": "activation_alpha", "beta": "activation_beta"})]
    if op == "Clip":
        low = float(attributes.get("activation_alpha", -math.inf))
        high = float(attributes.get("activation_beta", math.inf))
        tag = f"Clip[{_float_name(low)},{_float_name(high)}]"
        if opset < 11:
            return tag, [Node("Clip", [source], ["Y"], attributes={"min": low, "max": high})]
        if dtype is None:
            raise _NoBody
        nodes = []
        inputs = [source, "", ""]
        for position, value in ((1, low), (2, high)):
            if math.isinf(value):
                continue
            nodes.append(_constant(f"clip_{position}", value, dtype))
            inputs[position] = f"clip_{position}"
        while not inputs[-1]:
            inputs.pop()
        nodes.append(Node("Clip", inputs, ["Y"]))
        return f"{tag}:{dtype.name}", nodes
    if op == "Gelu":
        approximate = str(attributes.get("activation_approximate", "none"))
        if opset >= 20:
            return f"Gelu_{approximate}", [Node("Gelu", [source], ["Y"], attributes={"approximate": approximate})]
        return f"Gelu_{approximate}", _gelu_nodes(source, approximate, dtype)
    raise _NoBody


def _gelu_nodes(source: str, approximate: str, dtype: np.dtype | None) -> list[Node]:
    if dtype != np.float32:
        raise _NoBody  # the constants are float32 (older opsets have no CastLike)
    nodes = [_constant("one", 1.0, dtype), _constant("half", 0.5, dtype)]
    if approximate == "tanh":
        nodes += [
            _constant("k", math.sqrt(2 / math.pi), dtype),
            _constant("c", 0.044715, dtype),
            Node("Mul", [source, source], ["x2"]),
            Node("Mul", ["x2", source], ["x3"]),
            Node("Mul", ["x3", "c"], ["cx3"]),
            Node("Add", [source, "cx3"], ["inner"]),
            Node("Mul", ["inner", "k"], ["scaled"]),
            Node("Tanh", ["scaled"], ["t"]),
        ]
    elif approximate == "none":
        nodes += [
            _constant("r", 1 / math.sqrt(2), dtype),
            Node("Mul", [source, "r"], ["scaled"]),
            Node("Erf", ["scaled"], ["t"]),
        ]
    else:
        raise _NoBody
    return nodes + [
        Node("Add", ["t", "one"], ["t1"]),
        Node("Mul", [source, "t1"], ["xt"]),
        Node("Mul", ["xt", "half"], ["Y"]),
    ]


def _conv_body(inputs: list[str], attributes: dict[str, Any], dtype: Any, opset: int):  # noqa: ANN202
    residual = len(inputs) > 3 and bool(inputs[3])
    layout = int(attributes.get("channels_last", 0))
    conv_refs = _refs(*CONV_ATTRIBUTES)
    if layout == 0:
        nodes = [Node("Conv", ["X", "W", "B"], ["conv"], attribute_refs=conv_refs)]
    elif layout in (1, 2):
        # the convolution channels-first between Transposes: X (1) and the result to (N, H, W, C)
        nodes = []
        source = "X"
        if layout == 1:
            nodes.append(Node("Transpose", ["X"], ["x_first"], attributes={"perm": [0, 3, 1, 2]}))
            source = "x_first"
        nodes += [
            Node("Conv", [source, "W", "B"], ["conv_first"], attribute_refs=conv_refs),
            Node("Transpose", ["conv_first"], ["conv"], attributes={"perm": [0, 2, 3, 1]}),
        ]
    else:
        raise _NoBody
    source = "conv"
    if residual:
        nodes.append(Node("Add", ["conv", "Z"], ["sum"]))
        source = "sum"
    tag, tail = _activation_body(source, attributes, dtype, opset)
    overload = tag + ("_residual" if residual else "") + ("", "_nhwc", "_nchw_nhwc")[layout]
    names = CONV_ATTRIBUTES + ACTIVATION_ATTRIBUTES + (("channels_last",) if layout else ())
    return overload, (["X", "W", "B", "Z"], nodes + tail, names)


def _gemm_body(inputs: list[str], attributes: dict[str, Any], dtype: Any, opset: int):  # noqa: ANN202
    nodes = [Node("Gemm", ["A", "B", "C"], ["gemm"], attribute_refs=_refs(*GEMM_ATTRIBUTES))]
    tag, tail = _activation_body("gemm", attributes, dtype, opset)
    return tag, (["A", "B", "C"], nodes + tail, GEMM_ATTRIBUTES + ACTIVATION_ATTRIBUTES)


def _batchnorm_body(inputs: list[str], attributes: dict[str, Any], dtype: Any, opset: int):  # noqa: ANN202
    formal = ["X", "scale", "B", "input_mean", "input_var"]
    nodes = [Node("BatchNormalization", formal, ["normalized"], attribute_refs={"epsilon": "epsilon"})]
    tag, tail = _activation_body("normalized", attributes, dtype, opset)
    return tag, (formal, nodes + tail, ("epsilon",) + ACTIVATION_ATTRIBUTES)


def _matmul_body(inputs: list[str], attributes: dict[str, Any], dtype: Any, opset: int):  # noqa: ANN202
    biased = len(inputs) > 2 and bool(inputs[2])
    nodes = [Node("MatMul", ["A", "B"], ["product"])]
    source = "product"
    if biased:
        nodes.append(Node("Add", ["product", "bias"], ["sum"]))
        source = "sum"
    tag, tail = _activation_body(source, attributes, dtype, opset)
    overload = tag + ("_bias" if biased else "")
    return overload, (["A", "B", "bias"], nodes + tail, ACTIVATION_ATTRIBUTES)


def _layer_norm_body(inputs: list[str], attributes: dict[str, Any], dtype: Any, opset: int):  # noqa: ANN202
    axis = int(attributes.get("axis", -1))
    if axis >= 0 or opset >= 18 or dtype != np.float32 or "epsilon" not in attributes:
        raise _NoBody  # the body needs negative axes and ReduceMean's axes attribute
    biased = len(inputs) > 2 and bool(inputs[2])
    axes = list(range(axis, 0))
    nodes = [
        Node("Constant", [], ["eps"], attribute_refs={"value_float": "epsilon"}),
        Node("ReduceMean", ["X"], ["mean"], attributes={"axes": axes, "keepdims": 1}),
        Node("Sub", ["X", "mean"], ["d"]),
        Node("Mul", ["d", "d"], ["d2"]),
        Node("ReduceMean", ["d2"], ["var"], attributes={"axes": axes, "keepdims": 1}),
        Node("Add", ["var", "eps"], ["var_eps"]),
        Node("Sqrt", ["var_eps"], ["std"]),
        Node("Div", ["d", "std"], ["normalized"]),
        Node("Mul", ["normalized", "Scale"], ["scaled" if biased else "Y"]),
    ]
    if biased:
        nodes.append(Node("Add", ["scaled", "B"], ["Y"]))
    overload = f"axis{axis}" + ("_bias" if biased else "")
    return overload, (["X", "Scale", "B"], nodes, ("axis", "epsilon", "stash_type"))


def _gelu_body(inputs: list[str], attributes: dict[str, Any], dtype: Any, opset: int):  # noqa: ANN202
    approximate = str(attributes.get("approximate", "none"))
    return approximate, (["X"], _gelu_nodes("X", approximate, dtype), ("approximate",))


def _attention_body(inputs: list[str], attributes: dict[str, Any], dtype: Any, opset: int):  # noqa: ANN202
    """``MatMul(Softmax([Where(condition, .., fill)] MatMul(Q, K) * scale [+ mask]), V)``."""
    if dtype is None or dtype.name not in ("float32", "float64"):
        raise _NoBody
    masked = len(inputs) > 3 and bool(inputs[3])
    conditioned = len(inputs) > 5 and bool(inputs[4]) and bool(inputs[5])
    keeps = int(attributes.get("condition_keeps", 1))
    scale = float(np.float32(attributes.get("scale", 1.0)))  # a float attribute: float32, as the kernel
    parts = [dtype.name]
    if opset >= 12:
        nodes = [Node("Constant", [], ["scale32"], attribute_refs={"value_float": "scale"})]
    else:  # no value_float yet: the scale is part of the body
        nodes = [Node("Constant", [], ["scale32"], attributes={"value": np.array(scale, np.float32)})]
        parts.append(f"scale{_float_name(scale)}")
    factor = "scale32"
    if dtype != np.float32:
        nodes.append(Node("Cast", ["scale32"], ["factor"], attributes={"to": 11}))  # DOUBLE
        factor = "factor"
    nodes += [Node("MatMul", ["Q", "K"], ["product"]), Node("Mul", ["product", factor], ["scores"])]
    source = "scores"
    if conditioned:
        operands = ["condition", source, "fill"] if keeps else ["condition", "fill", source]
        nodes.append(Node("Where", operands, ["kept"]))
        source = "kept"
        parts.append("where" if keeps else "masked_fill")
    if masked:
        nodes.append(Node("Add", [source, "mask"], ["biased"]))
        source = "biased"
        parts.append("mask")
    nodes += [Node("Softmax", [source], ["probs"], attributes={"axis": -1}), Node("MatMul", ["probs", "V"], ["Y"])]
    formal = ["Q", "K", "V", "mask", "condition", "fill"][: max(3, len(inputs))]  # those the node passes
    attribute_names = ("scale", "condition_keeps") if conditioned else ("scale",)
    return "_".join(parts), (formal, nodes, attribute_names)


def _prefixed_activation(
    source: str, output: str, attributes: dict[str, Any], dtype: Any, opset: int, prefix: str
) -> tuple[str, list[Node]]:
    """:func:`_activation_body` for the activation attributes named ``prefix + "activation..."``,
    writing ``output``; its internal values and attribute references carry the prefix."""
    view = {name: attributes[prefix + name] for name in ACTIVATION_ATTRIBUTES if prefix + name in attributes}
    tag, nodes = _activation_body(source, view, dtype, opset)

    def rename(name: str) -> str:
        return name if name in ("", source) else output if name == "Y" else prefix + name

    renamed = [
        Node(n.op_type, [rename(i) for i in n.inputs], [rename(o) for o in n.outputs], attributes=dict(n.attributes),
             attribute_refs={k: prefix + v for k, v in n.attribute_refs.items()})
        for n in nodes
    ]  # fmt: skip
    return tag, renamed


#: the squeeze-and-excitation block's second activation (the gate)
GATE_ATTRIBUTES = tuple("gate_" + name for name in ACTIVATION_ATTRIBUTES)


def _squeeze_excitation_body(inputs: list[str], attributes: dict[str, Any], dtype: Any, opset: int):  # noqa: ANN202
    """``X * gate(Conv(act(Conv(mean(X), W1, B1)), W2, B2))`` over channels-last X."""
    if int(attributes.get("channels_last", 1)) != 1 or dtype is None or dtype.kind != "f":
        raise _NoBody
    if opset >= 18:
        nodes = [
            Node("Constant", [], ["axes"], attributes={"value": np.array([1, 2], dtype=np.int64)}),
            Node("ReduceMean", ["X", "axes"], ["mean"], attributes={"keepdims": 1}),
        ]
    else:
        nodes = [Node("ReduceMean", ["X"], ["mean"], attributes={"axes": [1, 2], "keepdims": 1})]
    nodes += [
        Node("Transpose", ["mean"], ["mean_first"], attributes={"perm": [0, 3, 1, 2]}),
        Node("Conv", ["mean_first", "W1", "B1"], ["fc1"]),
    ]
    tag1, act1 = _prefixed_activation("fc1", "hidden", attributes, dtype, opset, "")
    nodes += act1 + [Node("Conv", ["hidden", "W2", "B2"], ["fc2"])]
    tag2, act2 = _prefixed_activation("fc2", "gate_first", attributes, dtype, opset, "gate_")
    nodes += act2 + [
        Node("Transpose", ["gate_first"], ["gate"], attributes={"perm": [0, 2, 3, 1]}),
        Node("Mul", ["X", "gate"], ["Y"]),
    ]
    names = ACTIVATION_ATTRIBUTES + GATE_ATTRIBUTES + ("channels_last",)
    return f"{tag1}_{tag2}_nhwc", (["X", "W1", "B1", "W2", "B2"], nodes, names)


_BODIES = {
    "SqueezeExcitation": _squeeze_excitation_body,
    "FusedConv": _conv_body,
    "FusedGemm": _gemm_body,
    "FusedBatchNormalization": _batchnorm_body,
    "FusedMatMul": _matmul_body,
    "LayerNormalization": _layer_norm_body,
    "Gelu": _gelu_body,
    "ScaledDotProductAttention": _attention_body,
}
