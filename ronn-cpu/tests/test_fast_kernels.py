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
    ("Gelu", 0.0, 0.0),
    ("GeluTanh", 0.0, 0.0),
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
    if activation == "Gelu":
        return 0.5 * v * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))
    if activation == "GeluTanh":
        return 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
    return np.tanh(v)


@pytest.mark.parametrize("activation,alpha,beta", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(1, 64, 56, 56), (2, 7, 5), (3, 17), (1, 16, 1, 1), (2, 3, 4, 5, 6)])
def test_epilogue_matches_reference(activation, alpha, beta, dtype, shape):
    if activation in ("Gelu", "GeluTanh") and math.prod(shape) > 10000:
        shape = (1, 8, 20, 20)  # the float64 reference is a Python-level erf
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
        with np.errstate(all="ignore"):
            got = epilogue(y.copy(), activation=activation, alpha=alpha, beta=beta)
            want = epilogue_numpy(y.copy(), activation=activation, alpha=alpha, beta=beta)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=str(activation))
        np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-6, atol=1e-6,
                                   err_msg=str(activation))  # fmt: skip


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
    ((1, 24, 2, 3), (7, 24, 1, 1), {}),
    ((1, 9, 3), (5, 9, 1), {}),
    ((1, 3, 6, 6), (2, 3, 3, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ((1, 3, 7, 6), (2, 3, 3, 3), {"auto_pad": "SAME_UPPER", "dilations": [2, 1]}),
    ((1, 3, 6, 6), (2, 3, 3, 3), {"auto_pad": "VALID"}),
    ((1, 3, 3, 3), (2, 3, 3, 3), {}),
    ((1, 32, 28, 28), (32, 32, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 3, 64, 64), (16, 3, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}),
    ((1, 48, 30, 30), (48, 1, 3, 3), {"group": 48, "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((1, 200, 20, 20), (200, 1, 3, 3), {"group": 200, "pads": [1, 1, 1, 1]}),
]

#: stride-1 convolutions with at most half as many outputs as inputs: the kn2row path
KN2ROW_CASES = [
    ((2, 16, 9, 10), (8, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 16, 9, 10), (4, 16, 3, 3), {}),
    ((1, 16, 9, 10), (4, 16, 3, 2), {"pads": [0, 1, 2, 0], "dilations": [2, 1]}),
    ((1, 12, 11, 9), (6, 12, 5, 5), {"pads": [2, 2, 2, 2], "dilations": [1, 2]}),
    ((2, 16, 20), (8, 16, 3), {"pads": [1, 2], "dilations": [2]}),
    ((1, 16, 6, 6), (8, 16, 3, 3), {"auto_pad": "SAME_UPPER", "dilations": [2, 2]}),
    ((1, 128, 14, 14), (32, 128, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 64, 40, 40), (32, 64, 3, 3), {"pads": [1, 1, 1, 1]}),  # the parallel sums
    ((1, 8, 9, 10), (4, 8, 2, 2), {"auto_pad": "SAME_UPPER"}),  # even kernel: uneven pads
]
#: convolutions with more outputs, over at least 100 positions: shifted-copy columns
SHIFTED_CASES = [
    ((2, 4, 12, 11), (6, 4, 3, 2), {"pads": [1, 0, 2, 1], "dilations": [2, 1]}),
    ((1, 3, 14, 15), (8, 3, 5, 5), {"pads": [2, 2, 2, 2]}),
    ((1, 3, 150), (5, 3, 4), {"pads": [1, 2]}),
    ((1, 8, 12, 12), (8, 8, 3, 3), {"auto_pad": "SAME_LOWER"}),
    ((1, 4, 11, 12), (6, 4, 2, 3), {"auto_pad": "SAME_LOWER"}),
    ((2, 6, 10, 12), (6, 6, 4, 4), {"pads": [2, 1, 1, 2]}),
    # strided: the columns come from the padded image's stride phases
    ((2, 4, 24, 23), (6, 4, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((1, 3, 40, 41), (8, 3, 7, 7), {"pads": [3, 2, 3, 1], "strides": [2, 2]}),
    ((1, 5, 33, 30), (4, 5, 3, 2), {"pads": [0, 1, 2, 0], "strides": [2, 1]}),
    ((1, 5, 21, 40), (4, 5, 2, 3), {"pads": [1, 1, 0, 2], "strides": [1, 3], "dilations": [2, 1]}),
    ((1, 4, 36, 37), (5, 4, 5, 5), {"pads": [4, 4, 4, 4], "strides": [3, 3], "dilations": [2, 2]}),
    ((2, 3, 300), (4, 3, 5), {"pads": [2, 1], "strides": [2]}),
    ((1, 4, 25, 26), (6, 4, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
]
CONV_CASES += KN2ROW_CASES + SHIFTED_CASES


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


@pytest.mark.parametrize(
    "case", [c for c in KN2ROW_CASES + SHIFTED_CASES if "auto_pad" not in c[2]], ids=lambda c: f"{c[0]}-{c[1]}-{sorted(c[2].items())}")
def test_stride1_conv_paths_match_onnxruntime(case):  # (onnxruntime has no dilated SAME padding)
    x_shape, w_shape, attrs = case
    x = RNG.standard_normal(x_shape).astype(np.float32)
    w = RNG.standard_normal(w_shape).astype(np.float32)
    b = RNG.standard_normal(w_shape[0]).astype(np.float32)
    for bias in (True, False):
        model = _conv_model(np.float32, attrs, bias, True, w, b)
        np.testing.assert_allclose(_run_ronn(model, {"x": x})[0], _run_ort(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_stride1_conv_paths_with_weight_inputs_from_many_threads():
    """Prepared weights (kn2row's stacked taps) are per weight: concurrent runs feeding
    different weights each get their own convolution."""
    from concurrent.futures import ThreadPoolExecutor

    cases = []
    for x_shape, w_shape, attrs in (KN2ROW_CASES[0], SHIFTED_CASES[1]):
        model = _conv_model(np.float32, attrs, False, False, None, None)
        session = ronn.InferenceSession(model)
        strides, pads, dilations = _conv_pads(x_shape, w_shape, attrs)
        for seed in range(6):
            rng = np.random.default_rng(seed)
            x = rng.standard_normal(x_shape).astype(np.float32)
            w = rng.standard_normal(w_shape).astype(np.float32)
            cases.append((session, x, w, reference_conv(x, w, None, strides, pads, dilations, 1)))

    def check(case):
        runner, x, w, want = case
        for _ in range(5):
            (got,) = runner.run(None, {"x": x, "w": w})
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(check, cases * 2))


def test_stride1_paths_give_way_to_banded_im2col_on_large_images(monkeypatch):
    """Past their scratch budget (large images) the kn2row and shifted-copy paths leave the
    convolution to the banded im2col, whose memory stays bounded; results are the same."""
    from ronn_cpu.kernels import _conv

    chosen = []
    for name in ("_kn2row_plan", "_shifted_plan", "_im2col_plan"):
        original = getattr(_conv.FastConv, name)

        def spy(self, *args, _original=original, _name=name):
            chosen.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(_conv.FastConv, name, spy)
    monkeypatch.setattr(_conv, "_STRIDE1_SCRATCH", 1 << 10)
    for x_shape, w_shape, attrs in (KN2ROW_CASES[0], SHIFTED_CASES[1]):
        x = RNG.standard_normal(x_shape).astype(np.float32)
        w = RNG.standard_normal(w_shape).astype(np.float32)
        (got,) = _run_ronn(_conv_model(np.float32, attrs, False, True, w, None), {"x": x})
        strides, pads, dilations = _conv_pads(x_shape, w_shape, attrs)
        np.testing.assert_allclose(got, reference_conv(x, w, None, strides, pads, dilations, 1), rtol=1e-4, atol=1e-4)
    assert chosen == ["_im2col_plan", "_im2col_plan"]


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
    # the direct 2x2 / stride 2 and 3x3 paths: even and odd sizes, pads, ceil_mode, strides 1-3
    ((2, 5, 8, 10), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((1, 3, 9, 7), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((1, 3, 9, 7), {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 4, 12, 13), {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}),
    ((1, 4, 12, 13), {"kernel_shape": [3, 3], "strides": [1, 1]}),
    ((1, 4, 17, 16), {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [1, 0, 2, 1]}),
    ((2, 3, 15, 14), {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [0, 1, 1, 0], "ceil_mode": 1}),
    ((1, 3, 20, 18), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
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


# --- batch normalization ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (3, 4), (1, 6, 11), (1, 64, 56, 56)])
def test_batch_normalization_matches_reference(dtype, shape):
    channels = shape[1]
    x = RNG.standard_normal(shape).astype(dtype)
    params = [RNG.standard_normal(channels).astype(dtype) for _ in range(3)]
    var = RNG.uniform(0.5, 2, channels).astype(dtype)
    scale, bias, mean = params
    model = _model(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
        [_value("x", dtype)], [_value("y", dtype)],
        [numpy_helper.from_array(a, n) for a, n in zip((scale, bias, mean, var), "sbmv")],
    )  # fmt: skip
    (got,) = _run_ronn(model, {"x": x})
    stat = (1, -1) + (1,) * (len(shape) - 2)
    wide = [a.astype(np.float64).reshape(stat) for a in (scale, bias, mean, var)]
    want = (x.astype(np.float64) - wide[2]) / np.sqrt(wide[3] + 1e-3) * wide[0] + wide[1]
    assert got.dtype == np.dtype(dtype)
    tol = max(_tolerance(dtype), 1e-10)  # folded into x * factor + offset: a few ulps of the offset
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("activation,alpha,beta", ACTIVATIONS)
def test_batch_norm_kernel_with_activation(activation, alpha, beta):
    from ronn.ir import Node
    from ronn.kernel import KernelContext

    from ronn_cpu.kernels._norm import batch_norm_kernel

    x = (RNG.standard_normal((2, 6, 5, 5)) * 3).astype(np.float32)
    scale, bias, mean = (RNG.standard_normal(6).astype(np.float32) for _ in range(3))
    var = RNG.uniform(0.5, 2, 6).astype(np.float32)
    node = Node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], attributes={"epsilon": 1e-5})
    ctx = KernelContext(node=node, opset=15, xp=np, provider="CPUExecutionProvider",
                        constant_inputs=[None, scale, bias, mean, var])  # fmt: skip
    run = batch_norm_kernel(ctx, activation=activation, alpha=alpha, beta=beta)
    (got,) = run(x, scale, bias, mean, var)[:1]
    stat = (1, -1, 1, 1)
    base = (x.astype(np.float64) - mean.reshape(stat)) / np.sqrt(var.reshape(stat) + 1e-5) * scale.reshape(stat)
    want = reference_activation(base + bias.reshape(stat), activation, alpha, beta)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# --- transformer kernels --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "a_shape,b_shape",
    [((2, 7, 64), (64, 48)), ((14, 64), (64, 1000)), ((3, 2, 5, 8), (8, 3)), ((2, 2, 7, 32), (2, 2, 32, 7)),
     ((5,), (5, 4)), ((4, 5), (5,)), ((1, 0, 3), (3, 2))],
)  # fmt: skip
@pytest.mark.parametrize("constant", [True, False])
def test_matmul_matches_numpy(dtype, a_shape, b_shape, constant):
    a = RNG.standard_normal(a_shape).astype(dtype)
    b = RNG.standard_normal(b_shape).astype(dtype)
    inputs = [_value("a", dtype)] + ([] if constant else [_value("b", dtype)])
    model = _model([helper.make_node("MatMul", ["a", "b"], ["y"])], inputs, [_value("y", dtype)],
                   [numpy_helper.from_array(b, "b")] if constant else [])  # fmt: skip
    session = ronn.InferenceSession(model)
    for _ in range(2):  # the second run reuses the prepared weight
        (got,) = session.run(None, {"a": a} if constant else {"a": a, "b": b})
        want = np.matmul(a.astype(np.float64), b.astype(np.float64))
        assert got.dtype == np.dtype(dtype) and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=_tolerance(dtype) * 50, atol=_tolerance(dtype) * 50)


@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("c_shape", [None, (6,), (1, 6), (4, 6), (4, 1), (1,), ()])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0), (1.0, 0.0)])
def test_gemm_matches_numpy(trans_a, trans_b, c_shape, alpha, beta):
    a = RNG.standard_normal((5, 4) if trans_a else (4, 5)).astype(np.float32)
    b = RNG.standard_normal((6, 5) if trans_b else (5, 6)).astype(np.float32)
    names = ["a", "b"] + ([] if c_shape is None else ["c"])
    initializers = [numpy_helper.from_array(b, "b")]
    if c_shape is not None:
        c = RNG.standard_normal(c_shape).astype(np.float32)
        initializers.append(numpy_helper.from_array(c, "c"))
    node = helper.make_node("Gemm", names, ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    model = _model([node], [_value("a", np.float32)], [_value("y", np.float32)], initializers)
    (got,) = _run_ronn(model, {"a": a})
    want = alpha * (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    if c_shape is not None:
        want = want + beta * c.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    (theirs,) = _run_ort(model, {"a": a})
    np.testing.assert_allclose(got, theirs, rtol=1e-5, atol=1e-5)


def reference_layer_norm(x, scale, bias, axis, epsilon):
    x = x.astype(np.float64)
    axes = tuple(range(axis % x.ndim, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + epsilon) * scale
    return (y if bias is None else y + bias), mean, 1 / np.sqrt(var + epsilon)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape,axis", [((2, 7, 64), -1), ((3, 4, 5), 1), ((6, 10), 0), ((2, 3, 768), -1), ((1, 1), -1)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_normalization(dtype, shape, axis, with_bias):
    x = (RNG.standard_normal(shape) * 3 + 1).astype(dtype)
    normalized = shape[axis % len(shape):]
    scale = RNG.standard_normal(normalized).astype(dtype)
    bias = RNG.standard_normal(normalized).astype(dtype) if with_bias else None
    names = ["x", "s"] + (["b"] if with_bias else [])
    initializers = [numpy_helper.from_array(scale, "s")] + ([numpy_helper.from_array(bias, "b")] if with_bias else [])
    node = helper.make_node("LayerNormalization", names, ["y", "mean", "inv"], axis=axis, epsilon=1e-5)
    outputs = [_value("y", dtype), _value("mean", np.float32), _value("inv", np.float32)]
    model = _model([node], [_value("x", dtype)], outputs, initializers)
    got, mean, inv = _run_ronn(model, {"x": x})
    want, want_mean, want_inv = reference_layer_norm(x, scale.astype(np.float64),
                                                     None if bias is None else bias.astype(np.float64), axis, 1e-5)
    tol = max(_tolerance(dtype), 1e-6) * 20
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inv, want_inv, rtol=1e-4, atol=1e-5)


def test_layer_normalization_broadcast_scale_takes_the_reference_path():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    scale = RNG.standard_normal((1, 4)).astype(np.float32)  # broadcasts over the last axis
    model = _model([helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=-2)], [_value("x", np.float32)],
                   [_value("y", np.float32)], [numpy_helper.from_array(scale, "s")])  # fmt: skip
    (got,) = _run_ronn(model, {"x": x})
    want, _, _ = reference_layer_norm(x, scale.astype(np.float64), None, -2, 1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape,axis,opset", [((2, 2, 7, 7), -1, 13), ((3, 5), 1, 11), ((2, 3, 4), 1, 11),
                                              ((2, 3, 4), 1, 13), ((2, 300, 300), -1, 13), ((4, 1), -1, 13)])
def test_softmax(op, dtype, shape, axis, opset):
    x = (RNG.standard_normal(shape) * 5).astype(dtype)
    model = _model([helper.make_node(op, ["x"], ["y"], axis=axis)], [_value("x", dtype)], [_value("y", dtype)],
                   opset=opset)  # fmt: skip
    (got,) = _run_ronn(model, {"x": x})
    wide = x.astype(np.float64)
    if opset < 13:
        rows = wide.reshape(math.prod(shape[: axis % len(shape)]), -1)
        shifted = rows - rows.max(axis=1, keepdims=True)
        log = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log = log.reshape(shape)
    else:
        shifted = wide - wide.max(axis=axis, keepdims=True)
        log = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    want = log if op == "LogSoftmax" else np.exp(log)
    tol = _tolerance(dtype) * 50
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol)


def test_softmax_special_rows():
    x = np.array([[1.0, np.nan, 2.0], [-np.inf, -np.inf, -np.inf], [np.inf, 1.0, 0.0], [3.0, 3.0, 3.0]], np.float32)
    for op in ("Softmax", "LogSoftmax"):
        model = _model([helper.make_node(op, ["x"], ["y"], axis=-1)], [_value("x", np.float32)],
                       [_value("y", np.float32)])  # fmt: skip
        (got,) = _run_ronn(model, {"x": x})
        (want,) = _run_ort(model, {"x": x})
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=op)
        np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-6, err_msg=op)


@pytest.mark.parametrize("op,attrs", [("Erf", {}), ("Gelu", {}), ("Gelu", {"approximate": "tanh"}), ("Tanh", {})])
@pytest.mark.parametrize("size", [1, 100, 5000, 300000])
def test_unary_float32_kernels(op, attrs, size):
    x = np.concatenate([RNG.standard_normal(size) * 4, [0.0, -0.0, 10.0, -10.0, np.inf, -np.inf, np.nan]])
    x = x.astype(np.float32)[: max(size, 7)]
    opset = 20 if op == "Gelu" else 17
    model = _model([helper.make_node(op, ["x"], ["y"], **attrs)], [_value("x", np.float32)],
                   [_value("y", np.float32)], opset=opset)  # fmt: skip
    (got,) = _run_ronn(model, {"x": x})
    v = x.astype(np.float64)
    with np.errstate(all="ignore"):
        if op == "Erf":
            want = np.vectorize(math.erf)(v)
        elif op == "Tanh":
            want = np.tanh(v)
        elif attrs:
            want = reference_activation(v, "GeluTanh", 0, 0)
        else:
            want = reference_activation(v, "Gelu", 0, 0)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=2e-6, atol=2e-7)


def test_pointwise_fits_agree_with_the_numpy_kernels():
    from ronn_cpu.jit import load
    from ronn_cpu.kernels import elementwise

    module = load("epilogue")
    assert module.ERF_P == elementwise._ERF_P and module.ERF_Q == elementwise._ERF_Q


# --- threads --------------------------------------------------------------------------------


def test_intra_op_num_threads_provider_option():
    import ronn_cpu.jit as jit
    from ronn.errors import ProviderError

    from ronn_cpu.provider import CPUExecutionProvider

    before = jit.THREADS
    try:
        provider = CPUExecutionProvider({"intra_op_num_threads": "1"})
        assert provider.intra_op_num_threads == 1 and jit.THREADS == 1
        assert not jit.parallel(1 << 30)
        x = RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)
        w = RNG.standard_normal((4, 4, 3, 3)).astype(np.float32)
        model = _conv_model(np.float32, {"pads": [1, 1, 1, 1]}, False, True, w, None)
        session = ronn.InferenceSession(model, providers=[("CPUExecutionProvider", {"intra_op_num_threads": "1"})])
        (got,) = session.run(None, {"x": x})
        np.testing.assert_allclose(got, reference_conv(x, w, None, [1, 1], [1] * 4, [1, 1], 1), rtol=1e-4, atol=1e-4)
        assert CPUExecutionProvider({"intra_op_num_threads": "0"}).intra_op_num_threads == 0
        with pytest.raises(ProviderError):
            CPUExecutionProvider({"intra_op_num_threads": "-2"})
        with pytest.raises(ProviderError):
            CPUExecutionProvider({"intra_op_num_threads": "two"})
    finally:
        jit.set_threads(before if before != jit.cores() else 0)


# --- binary arithmetic -------------------------------------------------------------------------

BINARY_SHAPES = [
    ((2, 7, 64), (2, 7, 64)), ((2, 7, 64), (64,)), ((64,), (2, 7, 64)), ((2, 7, 64), ()), ((), (3, 4)),
    ((2, 7, 64), (1, 1, 64)), ((1, 64), (7, 64)), ((2, 2, 7, 7), (2, 1, 1, 7)), ((7, 1), (7, 64)),
    ((3, 1), (1, 4)), ((5,), (1, 2, 5)), ((1,), (1,)), ((4, 0), (4, 0)), ((300, 300), (300,)),
]


@pytest.mark.parametrize("op,ufunc", [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", np.divide)])
@pytest.mark.parametrize("a_shape,b_shape", BINARY_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_float_ops(op, ufunc, a_shape, b_shape, dtype):
    a = RNG.standard_normal(a_shape).astype(dtype)
    b = RNG.standard_normal(b_shape).astype(dtype)
    model = _model([helper.make_node(op, ["a", "b"], ["y"])], [_value("a", dtype), _value("b", dtype)],
                   [_value("y", dtype)])  # fmt: skip
    (got,) = _run_ronn(model, {"a": a, "b": b})
    want = ufunc(a, b)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=_tolerance(dtype), atol=0)


def test_binary_special_values_raise_no_warnings():
    import warnings

    a = np.array([1.0, -1.0, 0.0, np.inf, np.nan, 3e38], np.float32)
    b = np.array([0.0, 0.0, 0.0, np.inf, 1.0, 3e38], np.float32)
    for op, ufunc in [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", np.divide)]:
        model = _model([helper.make_node(op, ["a", "b"], ["y"])], [_value("a", np.float32), _value("b", np.float32)],
                       [_value("y", np.float32)])  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            (got,) = _run_ronn(model, {"a": a, "b": b})
        with np.errstate(all="ignore"):
            want = ufunc(a, b)
        np.testing.assert_array_equal(got, want, err_msg=op)


@pytest.mark.parametrize("positions", [4, 36])
def test_small_pointwise_gemm_ignores_what_the_output_held(positions):
    """The small 1x1-convolution GEMMs write every output: stale NaNs in a reused buffer never leak."""
    from ronn_cpu.jit import load

    module = load("conv")
    kernel = module.gemm_small if positions >= 8 else module.gemm_small_dot
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    x = rng.standard_normal((7, positions)).astype(np.float32)
    for shift in (np.zeros(5, np.float32), rng.standard_normal(5).astype(np.float32)):
        y = np.full((5, positions), np.nan, np.float32)
        kernel(w, x, y, shift)
        np.testing.assert_allclose(y, w.astype(np.float64) @ x + shift[:, None], rtol=1e-5, atol=1e-5)
