"""The CPU provider's fast paths (numba kernels, GEMM convolutions, fused epilogues) against
independent numpy references and onnxruntime, on edge cases of shape, layout and dtype."""

from __future__ import annotations

import itertools
import math

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import ronn
from ronn_cpu.kernels._epilogue import epilogue, epilogue_numpy

ort = pytest.importorskip("onnxruntime")

RNG = np.random.default_rng(1234)


def _tensor_type(dtype):
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _value(name, dtype, shape=None):
    return helper.make_tensor_value_info(name, _tensor_type(dtype), shape)


def _run_ronn(model, feeds, **options):
    return ronn.InferenceSession(model, **options).run(None, feeds)


def _run_ort(model, feeds):
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)


def _tolerance(dtype):
    return {np.float16: 2e-3, np.float32: 2e-5, np.float64: 1e-12}[np.dtype(dtype).type]


# --- independent references ---------------------------------------------------------------


def reference_conv(x, w, b, strides, pads, dilations, group):
    """A direct convolution in float64: every tap a strided slice, summed with einsum."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    rank = x.ndim - 2
    n, channels = x.shape[:2]
    out_channels, in_group = w.shape[:2]
    kernel = w.shape[2:]
    padded = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + rank]) for i in range(rank)])
    out = [
        (padded.shape[2 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(rank)
    ]
    y = np.zeros((n, out_channels, *out))
    per_group = out_channels // group
    for g in range(group):
        xs_group = padded[:, g * in_group : (g + 1) * in_group]
        w_group = w[g * per_group : (g + 1) * per_group]
        for tap in itertools.product(*(range(k) for k in kernel)):
            window = tuple(
                slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in zip(tap, dilations, out, strides)
            )
            taken = xs_group[(slice(None), slice(None)) + window]
            y[:, g * per_group : (g + 1) * per_group] += np.einsum(
                "nc...,mc->nm...", taken, w_group[(slice(None), slice(None)) + tap]
            )
    if b is not None:
        y += b.astype(np.float64).reshape((1, -1) + (1,) * rank)
    return y


def same_pads(size, kernel, stride, dilation, upper):
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size)
    small, large = total // 2, total - total // 2
    return (small, large) if upper else (large, small)


# --- epilogue -------------------------------------------------------------------------------

ACTIVATIONS = [
    (None, 0.0, 0.0),
    ("Relu", 0.0, 0.0),
    ("LeakyRelu", 0.1, 0.0),
    ("Clip", -0.5, 1.5),
    ("Sigmoid", 0.0, 0.0),
    ("HardSigmoid", 0.2, 0.5),
    ("HardSwish", 0.0, 0.0),
    ("Tanh", 0.0, 0.0),
]


def reference_activation(v, activation, alpha, beta):
    if activation is None:
        return v
    if activation == "Relu":
        return np.where(v > 0, v, 0)
    if activation == "LeakyRelu":
        return np.where(v >= 0, v, v * alpha)
    if activation == "Clip":
        return np.minimum(np.maximum(v, alpha), beta)
    if activation == "Sigmoid":
        return 1 / (1 + np.exp(-v))
    if activation == "HardSigmoid":
        return np.clip(v * alpha + beta, 0, 1)
    if activation == "HardSwish":
        return v * np.clip(v / 6 + 0.5, 0, 1)
    return np.tanh(v)


@pytest.mark.parametrize("activation,alpha,beta", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(1, 64, 56, 56), (2, 7, 5), (3, 17), (1, 16, 1, 1), (2, 3, 4, 5, 6)])
def test_epilogue_matches_reference(activation, alpha, beta, dtype, shape):
    y = (RNG.standard_normal(shape) * 4).astype(dtype)
    bias = RNG.standard_normal(shape[1]).astype(dtype)
    residual = RNG.standard_normal(shape).astype(dtype)
    wide = y.astype(np.float64)
    bias_shape = (1, -1) + (1,) * (len(shape) - 2)
    for kwargs, expected in [
        ({}, wide),
        ({"bias": bias}, wide + bias.astype(np.float64).reshape(bias_shape)),
        ({"residual": residual}, wide + residual),
        ({"bias": bias, "residual": residual}, wide + bias.astype(np.float64).reshape(bias_shape) + residual),
    ]:
        got = epilogue(y.copy(), activation=activation, alpha=alpha, beta=beta, **kwargs)
        assert got.dtype == np.dtype(dtype) and got.shape == y.shape
        want = reference_activation(expected, activation, alpha, beta)
        tol = _tolerance(dtype)
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol * 10, atol=tol * 10)
        same = epilogue_numpy(y.copy(), activation=activation, alpha=alpha, beta=beta, **kwargs)
        np.testing.assert_allclose(got, same, rtol=tol * 10, atol=tol * 10)


def test_epilogue_special_values():
    y = np.array([[np.nan, np.inf, -np.inf, -0.0, 0.0, 1e30, -1e30, 3.0]], dtype=np.float32)
    for activation, alpha, beta in ACTIVATIONS:
        got = epilogue(y.copy(), activation=activation, alpha=alpha, beta=beta)
        with np.errstate(all="ignore"):
            want = epilogue_numpy(y.copy(), activation=activation, alpha=alpha, beta=beta)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=str(activation))
        np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-6, err_msg=str(activation))


def test_epilogue_broadcast_residual_and_read_only_inputs():
    y = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    residual = RNG.standard_normal((3, 1)).astype(np.float32)
    bias = RNG.standard_normal(3).astype(np.float32)
    bias.flags.writeable = False
    got = epilogue(y.copy(), bias=bias, residual=residual, activation="Relu")
    np.testing.assert_allclose(got, np.maximum(y + bias.reshape(1, 3, 1) + residual, 0), rtol=1e-6)
    with pytest.raises(ValueError):
        epilogue(y.copy(), activation="Gelu2")


# --- convolution ----------------------------------------------------------------------------

CONV_CASES = [
    # x shape, w shape, attributes
    ((1, 3, 10, 10), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 3, 10, 11), (4, 3, 3, 2), {"pads": [0, 1, 2, 0], "strides": [2, 1]}),
    ((1, 4, 9, 9), (6, 2, 3, 3), {"group": 2, "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ((1, 8, 7, 7), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    ((2, 8, 8, 9), (8, 1, 5, 5), {"group": 8, "pads": [2, 1, 2, 3], "strides": [2, 2]}),
    ((1, 8, 8, 9), (8, 1, 3, 3), {"group": 8, "dilations": [2, 1], "pads": [2, 1, 0, 3]}),
    ((1, 8, 8, 9), (16, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    ((1, 6, 4, 4), (6, 1, 3, 3), {"group": 6}),
    ((1, 6, 2, 2), (6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1], "strides": [3, 3]}),
    ((2, 16, 5, 5), (8, 16, 1, 1), {}),
    ((1, 16, 5, 5), (8, 16, 1, 1), {"strides": [2, 2]}),
    ((1, 16, 5, 5), (8, 16, 1, 1), {"pads": [1, 0, 0, 1]}),
    ((1, 12, 5, 5), (6, 4, 1, 1), {"group": 3}),
    ((1, 12, 5, 6), (6, 4, 2, 3), {"group": 3, "strides": [1, 2], "pads": [0, 1, 1, 0]}),
    ((1, 3, 20), (4, 3, 3), {"pads": [1, 2], "strides": [2]}),
    ((2, 4, 20), (4, 1, 5), {"group": 4, "pads": [2, 2], "dilations": [2]}),
    ((1, 3, 5, 5, 5), (4, 3, 3, 3, 3), {"pads": [1] * 6}),
    ((1, 4, 1, 1), (4, 4, 1, 1), {}),
    ((1, 3, 6, 6), (2, 3, 3, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ((1, 3, 7, 6), (2, 3, 3, 3), {"auto_pad": "SAME_UPPER", "dilations": [2, 1]}),
    ((1, 3, 6, 6), (2, 3, 3, 3), {"auto_pad": "VALID"}),
    ((1, 3, 3, 3), (2, 3, 3, 3), {}),
    ((1, 32, 28, 28), (32, 32, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 3, 64, 64), (16, 3, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}),
    ((1, 48, 30, 30), (48, 1, 3, 3), {"group": 48, "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((1, 200, 20, 20), (200, 1, 3, 3), {"group": 200, "pads": [1, 1, 1, 1]}),
]


def _conv_pads(x_shape, w_shape, attrs):
    rank = len(x_shape) - 2
    strides = attrs.get("strides", [1] * rank)
    dilations = attrs.get("dilations", [1] * rank)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pairs = [
            same_pads(x_shape[2 + i], w_shape[2 + i], strides[i], dilations[i], auto_pad == "SAME_UPPER")
            for i in range(rank)
        ]
        pads = [p[0] for p in pairs] + [p[1] for p in pairs]
    else:
        pads = attrs.get("pads", [0] * 2 * rank) if auto_pad == "NOTSET" else [0] * 2 * rank
    return strides, pads, dilations


def _conv_model(dtype, attrs, bias, constant, w, b):
    names = ["x", "w"] + (["b"] if bias else [])
    inputs = [_value("x", dtype)]
    initializers = []
    if constant:
        initializers = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if bias else [])
    else:
        inputs += [_value("w", dtype)] + ([_value("b", dtype)] if bias else [])
    return _model([helper.make_node("Conv", names, ["y"], **attrs)], inputs, [_value("y", dtype)], initializers)


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{sorted(c[2].items())}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_conv_matches_reference(case, dtype):
    x_shape, w_shape, attrs = case
    x = RNG.standard_normal(x_shape).astype(dtype)
    w = (RNG.standard_normal(w_shape) / math.sqrt(np.prod(w_shape[1:]))).astype(dtype)
    b = RNG.standard_normal(w_shape[0]).astype(dtype)
    strides, pads, dilations = _conv_pads(x_shape, w_shape, attrs)
    for bias, constant in [(True, True), (False, True), (True, False), (False, False)]:
        model = _conv_model(dtype, attrs, bias, constant, w, b)
        feeds = {"x": x} if constant else ({"x": x, "w": w, "b": b} if bias else {"x": x, "w": w})
        (got,) = _run_ronn(model, feeds)
        want = reference_conv(x, w, b if bias else None, strides, pads, dilations, attrs.get("group", 1))
        assert got.dtype == np.dtype(dtype) and got.shape == want.shape
        tol = _tolerance(dtype)
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol * 50, atol=tol * 50)


@pytest.mark.parametrize("case", [c for c in CONV_CASES if "dilations" not in c[2] or "auto_pad" not in c[2]][:20])
def test_conv_matches_onnxruntime(case):
    x_shape, w_shape, attrs = case
    x = RNG.standard_normal(x_shape).astype(np.float32)
    w = RNG.standard_normal(w_shape).astype(np.float32)
    b = RNG.standard_normal(w_shape[0]).astype(np.float32)
    model = _conv_model(np.float32, attrs, True, True, w, b)
    (got,) = _run_ronn(model, {"x": x})
    (want,) = _run_ort(model, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conv_repeated_runs_and_shapes():
    """Plans are per input shape; prepared weights are reused across runs."""
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    model = _conv_model(np.float32, {"pads": [1, 1, 1, 1]}, False, True, w, None)
    session = ronn.InferenceSession(model)
    for shape in [(1, 3, 8, 8), (2, 3, 5, 7), (1, 3, 8, 8), (1, 3, 1, 1)]:
        x = RNG.standard_normal(shape).astype(np.float32)
        (got,) = session.run(None, {"x": x})
        want = reference_conv(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_fused_conv_epilogue():
    """FastConv with an activation and a residual, as the optimizer's fused kernels use it."""
    from ronn.ir import Node
    from ronn.kernel import KernelContext

    from ronn_cpu.kernels._conv import FastConv

    x = RNG.standard_normal((2, 8, 9, 9)).astype(np.float32)
    for w_shape, attrs in [((8, 8, 3, 3), {"pads": [1, 1, 1, 1]}), ((8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
                           ((8, 8, 1, 1), {})]:  # fmt: skip
        w = RNG.standard_normal(w_shape).astype(np.float32)
        b = RNG.standard_normal(8).astype(np.float32)
        residual = RNG.standard_normal((2, 8, 9, 9)).astype(np.float32)
        node = Node("Conv", ["x", "w", "b"], ["y"], attributes=attrs)
        for activation, alpha, beta in ACTIVATIONS:
            ctx = KernelContext(node=node, opset=17, xp=np, provider="CPUExecutionProvider",
                                constant_inputs=[None, w, b])  # fmt: skip
            op = FastConv(ctx, activation=activation, alpha=alpha, beta=beta)
            got = op(x, w, b, residual)
            base = reference_conv(x, w, b, [1, 1], attrs.get("pads", [0] * 4), [1, 1], attrs.get("group", 1))
            want = reference_activation(base + residual, activation, alpha, beta)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"{activation} {w_shape}")


# --- pooling --------------------------------------------------------------------------------

POOL_CASES = [
    ((1, 3, 10, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((2, 4, 9, 11), {"kernel_shape": [2, 3], "strides": [2, 1], "pads": [0, 1, 1, 0]}),
    ((1, 2, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 2, 8, 8), {"kernel_shape": [3, 3], "strides": [3, 3], "ceil_mode": 1, "pads": [1, 1, 1, 1]}),
    ((1, 2, 8, 8), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 2, 8, 8), {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((1, 3, 20), {"kernel_shape": [4], "strides": [3], "pads": [1, 2]}),
    ((1, 64, 112, 112), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 8, 14, 14), {"kernel_shape": [14, 14]}),
    ((1, 2, 5, 5), {"kernel_shape": [1, 1]}),
]


def reference_pool(x, kind, kernel, strides, pads, include_pad=False):
    """Window max / mean in float64 by direct loops over output positions (no ceil_mode)."""
    rank = x.ndim - 2
    out = [(x.shape[2 + i] + pads[i] + pads[i + rank] - kernel[i]) // strides[i] + 1 for i in range(rank)]
    y = np.zeros(x.shape[:2] + tuple(out))
    for position in itertools.product(*(range(o) for o in out)):
        starts = [p * s - pads[i] for i, (p, s) in enumerate(zip(position, strides))]
        inside = tuple(slice(max(0, a), min(x.shape[2 + i], a + kernel[i])) for i, a in enumerate(starts))
        block = x[(slice(None), slice(None)) + inside].astype(np.float64).reshape(x.shape[:2] + (-1,))
        if kind == "max":
            y[(slice(None), slice(None)) + position] = block.max(axis=2)
        else:
            if include_pad:
                count = math.prod(
                    min(a + kernel[i], x.shape[2 + i] + pads[i + rank]) - max(a, -pads[i])
                    for i, a in enumerate(starts)
                )
            else:
                count = block.shape[2]
            y[(slice(None), slice(None)) + position] = block.sum(axis=2) / count
    return y


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"{c[0]}-{sorted(c[1].items())}")
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "AveragePoolIncludePad"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_pool_matches_onnxruntime_and_reference(case, op, dtype):
    shape, attrs = case
    attrs = dict(attrs)
    op_type = "AveragePool" if op.startswith("Average") else op
    if op == "AveragePoolIncludePad":
        attrs["count_include_pad"] = 1
    x = RNG.standard_normal(shape).astype(dtype)
    model = _model([helper.make_node(op_type, ["x"], ["y"], **attrs)], [_value("x", dtype)], [_value("y", dtype)])
    (got,) = _run_ronn(model, {"x": x})
    assert got.dtype == np.dtype(dtype)
    tol = _tolerance(dtype)
    if dtype != np.float16 and not (dtype == np.float64 and op_type == "AveragePool"):
        (want,) = _run_ort(model, {"x": x})
        np.testing.assert_allclose(got, want, rtol=tol * 10, atol=tol * 10)
    if "ceil_mode" not in attrs and "auto_pad" not in attrs:
        rank = len(shape) - 2
        want = reference_pool(
            x, "max" if op_type == "MaxPool" else "mean", attrs["kernel_shape"],
            attrs.get("strides", [1] * rank), attrs.get("pads", [0] * 2 * rank), op == "AveragePoolIncludePad",
        )  # fmt: skip
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol * 10, atol=tol * 10)


def test_max_pool_propagates_nan():
    x = RNG.standard_normal((1, 1, 4, 4)).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    model = _model(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])], [_value("x", np.float32)],
        [_value("y", np.float32)],
    )  # fmt: skip
    (got,) = _run_ronn(model, {"x": x})
    assert np.isnan(got[0, 0, :2, :2]).all() and not np.isnan(got[0, 0, 2:, 2:]).any()


@pytest.mark.parametrize("shape", [(1, 2048, 7, 7), (2, 3, 5), (1, 16, 1, 1), (2, 4, 3, 3, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_global_average_pool(shape, dtype):
    x = RNG.standard_normal(shape).astype(dtype)
    model = _model([helper.make_node("GlobalAveragePool", ["x"], ["y"])], [_value("x", dtype)], [_value("y", dtype)])
    (got,) = _run_ronn(model, {"x": x})
    want = x.astype(np.float64).mean(axis=tuple(range(2, len(shape))), keepdims=True)
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=_tolerance(dtype) * 10, atol=_tolerance(dtype) * 10)
