"""Kernels of the fused operators the optimizer creates (domain ``ronn``, since_version 1).

Each builds the standard kernel it extends (Conv, Gemm, MatMul, LayerNormalization, Gelu) once,
with a context for a plain node of that operator, so it gets the same weight preparation and
speed, then finishes the result in place: bias, residual and activation in one epilogue. The
semantics (see ``ronn.optimizer.fused_ops``):

* ``FusedConv(X, W, B?, Z?)``: ``activation(Conv(X, W) + B + Z)``;
* ``FusedGemm(A, B, C?)``: ``activation(Gemm(A, B, C))``;
* ``FusedMatMul(A, B, bias?)``: ``activation(MatMul(A, B) + bias)``;
* ``FusedBatchNormalization(X, scale, B, mean, var)``: ``activation(BatchNormalization(X))``
  in inference;
* ``LayerNormalization`` and ``Gelu``: the standard operators (opsets 17 and 20) for models
  of older opsets;
* ``SqueezeExcitation(X, W1, B1?, W2, B2?)``: ``X * gate(Conv(act(Conv(mean(X), W1, B1)), W2,
  B2))`` over channels-last X (the layout pass creates it; see ``_channels_last``).

``FusedConv`` with ``channels_last`` 1 or 2 runs ``_channels_last.ChannelsLastConv``.

``activation`` is Relu, LeakyRelu, Clip, Sigmoid, HardSigmoid, HardSwish, Tanh, Gelu or
Identity, with ``activation_alpha``/``activation_beta`` (LeakyRelu's alpha, HardSigmoid's alpha
and beta, Clip's min and max) and ``activation_approximate`` (Gelu's).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ronn.ir import Node
from ronn.kernel import KernelContext, KernelRun, KernelTable

KERNELS = KernelTable(domain="ronn")

CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
GEMM_ATTRIBUTES = ("alpha", "beta", "transA", "transB")
#: the opset whose standard operator a fused kernel extends, when the model's is unknown
NEWEST = {"Conv": 22, "Gemm": 13, "MatMul": 13}

Finish = Callable[[Any, Any, Any], Any]


# --- building the standard kernels ---------------------------------------------------------


def _standard_factory(op_type: str, opset: int) -> Any:
    from . import elementwise, nn

    best: tuple[int, Any] | None = None
    for table in (nn.KERNELS, elementwise.KERNELS):
        for domain, op, version, factory in table.entries:
            if domain == "" and op == op_type and version <= opset and (best is None or version > best[0]):
                best = (version, factory)
    if best is None:
        raise LookupError(f"ronn-cpu has no {op_type} kernel for opset {opset}")
    return best[1]


def _model_opset(ctx: KernelContext, op_type: str) -> int:
    opset = ctx.model.opset("") if ctx.model is not None else None
    return int(opset) if opset else NEWEST.get(op_type, 22)


def standard_kernel(
    ctx: KernelContext, op_type: str, inputs: int, attributes: dict[str, Any], opset: int
) -> KernelRun:
    """The CPU kernel of the standard ``op_type`` for this node's first ``inputs`` inputs."""
    node = Node(op_type, list(ctx.node.inputs[:inputs]), list(ctx.node.outputs[:1]), name=ctx.node.name,
                attributes=attributes)
    sub = dataclasses.replace(
        ctx,
        node=node,
        opset=opset,
        input_types=list(ctx.input_types[:inputs]),
        output_types=list(ctx.output_types[:1]),
        constant_inputs=list(ctx.constant_inputs[:inputs]),
    )
    return _standard_factory(op_type, opset)(sub)


# --- the epilogue ----------------------------------------------------------------------------


def _gelu_kernel(ctx: KernelContext, approximate: Any) -> KernelRun:
    node = Node("Gelu", ["x"], ["y"], attributes={"approximate": str(approximate or "none")})
    sub = KernelContext(node=node, opset=20, xp=ctx.xp, provider=ctx.provider, model=ctx.model)
    return _standard_factory("Gelu", 20)(sub)


def make_epilogue(ctx: KernelContext) -> Finish:
    """``finish(y, bias, residual)``: ``activation(y + bias + residual)``, in place where it can.

    ``y`` is a fresh result of the standard kernel; ``bias`` has one value per channel (axis 1,
    the columns of a 2-D result); ``residual`` broadcasts to ``y``.
    """
    from ._epilogue import epilogue

    name = str(ctx.attr("activation", "Identity"))
    alpha = ctx.attr("activation_alpha", None)
    beta = ctx.attr("activation_beta", None)
    gelu = _gelu_kernel(ctx, ctx.attr("activation_approximate", None)) if name == "Gelu" else None
    if name in ("Identity", "Gelu"):
        activation, alpha, beta = None, 0.01, 0.0
    elif name == "Clip":
        activation = name
        alpha = -math.inf if alpha is None else float(alpha)
        beta = math.inf if beta is None else float(beta)
    else:
        activation = name
        alpha = float(alpha) if alpha is not None else (0.2 if name == "HardSigmoid" else 0.01)
        beta = float(beta) if beta is not None else (0.5 if name == "HardSigmoid" else 0.0)

    def finish(y: Any, bias: Any, residual: Any) -> Any:
        if residual is not None and np.broadcast_shapes(y.shape, residual.shape) != y.shape:
            y = (y + residual).astype(y.dtype, copy=False)  # the residual widens the result
            residual = None
        y = epilogue(y, bias=bias, activation=activation, alpha=alpha, beta=beta, residual=residual)
        return y if gelu is None else gelu(y)[0]

    return finish


# --- the kernels -----------------------------------------------------------------------------


@KERNELS.register("FusedConv", since=1)
def fused_conv(ctx: KernelContext) -> KernelRun:
    """Conv, then bias, residual ``Z`` and activation in one pass over the result;
    ``channels_last`` 1 (X, Z, Y channels-last) or 2 (X channels-first, Z and Y channels-last)
    runs :class:`._channels_last.ChannelsLastConv`."""
    layout = int(ctx.attr("channels_last", 0))
    if layout:
        return _channels_last_conv(ctx, layout)
    attributes = {k: v for k, v in ctx.node.attributes.items() if k in CONV_ATTRIBUTES}
    conv = standard_kernel(ctx, "Conv", 2, attributes, _model_opset(ctx, "Conv"))
    finish = make_epilogue(ctx)

    def run(x, w, b=None, z=None):
        (y,) = conv(x, w)
        return (finish(y, b, z),)

    return run


#: the optimizer's layout pass asks this before it creates channels-last FusedConv nodes
fused_conv.supports_channels_last = True  # type: ignore[attr-defined]


def activation_spec(ctx: KernelContext, prefix: str = "") -> tuple[str | None, float, float]:
    """The node's fused activation (attributes ``prefix + "activation..."``) as an epilogue name
    (``_epilogue.ACTIVATIONS``), alpha and beta."""
    name = str(ctx.attr(prefix + "activation", "Identity"))
    alpha = ctx.attr(prefix + "activation_alpha", None)
    beta = ctx.attr(prefix + "activation_beta", None)
    if name == "Identity":
        return None, 0.01, 0.0
    if name == "Gelu":
        tanh = str(ctx.attr(prefix + "activation_approximate", "none")) == "tanh"
        return ("GeluTanh" if tanh else "Gelu"), 0.01, 0.0
    if name == "Clip":
        return name, -math.inf if alpha is None else float(alpha), math.inf if beta is None else float(beta)
    alpha = float(alpha) if alpha is not None else (0.2 if name == "HardSigmoid" else 0.01)
    beta = float(beta) if beta is not None else (0.5 if name == "HardSigmoid" else 0.0)
    return name, alpha, beta


def _channels_last_conv(ctx: KernelContext, layout: int) -> KernelRun:
    from ._channels_last import ChannelsLastConv

    if ctx.xp is not np or layout not in (1, 2):
        raise ctx.fail(f"channels_last={layout} runs on numpy arrays with layout 1 or 2 only")
    activation, alpha, beta = activation_spec(ctx)
    op = ChannelsLastConv(ctx, activation=activation, alpha=alpha, beta=beta, nchw_input=layout == 2)

    def run(x, w, b=None, z=None):
        return (op(x, w, b, z),)

    return run


@KERNELS.register("SqueezeExcitation", since=1)
def squeeze_excitation(ctx: KernelContext) -> KernelRun:
    """A squeeze-and-excitation block over channels-last X (``channels_last=1``)."""
    from ._channels_last import SqueezeExcitation

    if ctx.xp is not np or int(ctx.attr("channels_last", 1)) != 1:
        raise ctx.fail("SqueezeExcitation runs on numpy arrays with channels_last=1 only")
    try:
        op = SqueezeExcitation(activation_spec(ctx), activation_spec(ctx, "gate_"))
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None

    def run(x, w1, b1, w2, b2=None):
        return (op(x, w1, b1, w2, b2),)

    return run


@KERNELS.register("FusedGemm", since=1)
def fused_gemm(ctx: KernelContext) -> KernelRun:
    """Gemm (with its C), then the activation in place."""
    attributes = {k: v for k, v in ctx.node.attributes.items() if k in GEMM_ATTRIBUTES}
    gemm = standard_kernel(ctx, "Gemm", 3, attributes, _model_opset(ctx, "Gemm"))
    finish = make_epilogue(ctx)

    def run(a, b, c=None):
        (y,) = gemm(a, b, c)
        return (finish(y, None, None),)

    return run


@KERNELS.register("FusedBatchNormalization", since=1)
def fused_batch_normalization(ctx: KernelContext) -> KernelRun:
    """Inference BatchNormalization and the activation in one pass over X."""
    from ._norm import batch_norm_kernel

    activation, alpha, beta = activation_spec(ctx)
    node = Node("BatchNormalization", list(ctx.node.inputs), list(ctx.node.outputs[:1]), name=ctx.node.name,
                attributes={"epsilon": float(ctx.attr("epsilon", 1e-5))})
    sub = dataclasses.replace(ctx, node=node, opset=15)
    return batch_norm_kernel(sub, activation=activation, alpha=alpha, beta=beta)


@KERNELS.register("FusedMatMul", since=1)
def fused_matmul(ctx: KernelContext) -> KernelRun:
    """MatMul, then the bias and the activation in place."""
    matmul = standard_kernel(ctx, "MatMul", 2, {}, _model_opset(ctx, "MatMul"))
    finish = make_epilogue(ctx)

    def run(a, b, bias=None):
        (y,) = matmul(a, b)
        if bias is None:
            return (finish(y, None, None),)
        columns = y.shape[-1] if y.ndim else 1
        if y.ndim >= 2 and y.size and bias.ndim and bias.shape[-1] == columns == bias.size and bias.ndim <= y.ndim:
            # one value per column: the epilogue's per-channel bias on the rows-by-columns view
            flat = finish(y.reshape(-1, columns), bias.reshape(-1), None)
            return (flat.reshape(y.shape),)
        return (finish(y, None, bias),)

    return run


@KERNELS.register("LayerNormalization", since=1)
def layer_normalization(ctx: KernelContext) -> KernelRun:
    """The standard LayerNormalization (opset 17) for models of older opsets."""
    return standard_kernel(ctx, "LayerNormalization", len(ctx.node.inputs), dict(ctx.node.attributes), 17)


@KERNELS.register("Gelu", since=1)
def gelu(ctx: KernelContext) -> KernelRun:
    """The standard Gelu (opset 20) for models of older opsets."""
    return standard_kernel(ctx, "Gelu", 1, dict(ctx.node.attributes), 20)
