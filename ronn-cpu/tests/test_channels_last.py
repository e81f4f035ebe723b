"""Channels-last convolutions (``ronn::FusedConv`` with ``channels_last``), the fused
squeeze-and-excitation block, and the layout pass that creates them, against independent
numpy references and onnxruntime."""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ronn

ort = pytest.importorskip("onnxruntime")

RNG = np.random.default_rng(2024)
Level = ronn.GraphOptimizationLevel
TOLERANCE = {np.float32: (2e-5, 2e-5), np.float64: (1e-11, 1e-11)}


def _elem(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _value(name, dtype, shape=None):
    return helper.make_tensor_value_info(name, _elem(dtype), shape)


def _model(nodes, inputs, outputs, initializers=(), opset=17, ronn_domain=False) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("ronn", 1)] if ronn_domain else [])
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    return model.SerializeToString()


def _session(model, level=Level.ORT_ENABLE_ALL, threads: int | None = None, **options) -> ronn.InferenceSession:
    so = ronn.SessionOptions()
    so.graph_optimization_level = level
    for key, value in options.items():
        setattr(so, key, value)
    providers = None
    if threads is not None:
        providers = [("CPUExecutionProvider", {"intra_op_num_threads": str(threads)})]
    return ronn.InferenceSession(model, so, providers=providers)


# --- independent references ---------------------------------------------------------------


def reference_conv(x, w, b, strides, pads, dilations, group):
    """A direct NCHW convolution in float64: every tap a strided slice, summed with einsum."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    n, channels = x.shape[:2]
    out_channels, in_group = w.shape[:2]
    kernel = w.shape[2:]
    padded = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    out = [(padded.shape[2 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(2)]
    y = np.zeros((n, out_channels, *out))
    per_group = out_channels // group
    for g in range(group):
        xs = padded[:, g * in_group : (g + 1) * in_group]
        ws = w[g * per_group : (g + 1) * per_group]
        for tap in itertools.product(range(kernel[0]), range(kernel[1])):
            window = tuple(slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in zip(tap, dilations, out, strides))
            y[:, g * per_group : (g + 1) * per_group] += np.einsum(
                "nchw,mc->nmhw", xs[(slice(None), slice(None)) + window], ws[:, :, tap[0], tap[1]]
            )
    if b is not None:
        y += b.astype(np.float64).reshape(1, -1, 1, 1)
    return y


def reference_activation(v, activation, alpha, beta):
    alpha, beta = float(np.float32(alpha)), float(np.float32(beta))  # float attributes are float32
    if activation in (None, "Identity"):
        return v
    if activation == "Relu":
        return np.maximum(v, 0)
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
    if activation == "Tanh":
        return np.tanh(v)
    raise ValueError(activation)


def _activation_attributes(activation, alpha, beta, prefix=""):
    attrs = {prefix + "activation": activation or "Identity"}
    if activation in ("LeakyRelu", "Clip", "HardSigmoid"):
        attrs[prefix + "activation_alpha"] = alpha
    if activation in ("Clip", "HardSigmoid"):
        attrs[prefix + "activation_beta"] = beta
    return attrs


# --- the channels-last FusedConv kernel ---------------------------------------------------

ACTIVATIONS = [
    (None, 0.0, 0.0),
    ("Relu", 0.0, 0.0),
    ("LeakyRelu", 0.1, 0.0),
    ("Clip", -0.5, 1.5),
    ("HardSigmoid", 0.2, 0.5),
    ("HardSwish", 0.0, 0.0),
    ("Sigmoid", 0.0, 0.0),
    ("Tanh", 0.0, 0.0),
]

#: (channels, out_channels, group, kernel, strides, pads (top, left, bottom, right), dilations, size)
GEOMETRIES = [
    (16, 16, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (9, 7)),  # depthwise 3x3
    (24, 24, 24, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (11, 8)),  # depthwise stride 2, odd size
    (12, 12, 12, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), (7, 9)),  # depthwise 5x5
    (10, 10, 10, (5, 5), (2, 2), (2, 1, 2, 3), (1, 1), (13, 10)),  # depthwise 5x5 stride 2, asymmetric pads
    (8, 8, 8, (3, 3), (1, 2), (2, 2, 2, 2), (2, 2), (9, 11)),  # depthwise dilated
    (5, 5, 5, (3, 1), (1, 1), (0, 0, 0, 0), (1, 1), (6, 4)),  # depthwise 3x1, no pads
    (3, 16, 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (15, 12)),  # a stem
    (6, 7, 1, (3, 2), (1, 2), (1, 0, 2, 1), (2, 1), (9, 8)),  # dense, odd everything
    (16, 24, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), (7, 7)),  # pointwise
    (40, 96, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), (14, 14)),  # pointwise through BLAS
    (12, 20, 1, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), (9, 7)),  # pointwise stride 2
    (9, 4, 1, (1, 1), (1, 1), (1, 0, 0, 1), (1, 1), (5, 6)),  # pointwise with pads
    (64, 32, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), (1, 1)),  # 1x1 spatial (squeeze-excitation)
    (8, 12, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (6, 6)),  # grouped: the reference path
    (6, 12, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (6, 5)),  # depthwise multiplier 2: reference path
]


def _conv_case(geometry, dtype, batch, layout, activation, residual, constant_weights):
    channels, out_channels, group, kernel, strides, pads, dilations, size = geometry
    x = RNG.standard_normal((batch, channels, *size)).astype(dtype)
    w = (RNG.standard_normal((out_channels, channels // group, *kernel)) / math.sqrt(channels // group * math.prod(kernel))).astype(dtype)
    b = RNG.standard_normal(out_channels).astype(dtype)
    expected = reference_conv(x, w, b, strides, pads, dilations, group)
    z = None
    if residual:
        z = RNG.standard_normal(expected.shape).astype(dtype)
        expected = expected + z
    expected = reference_activation(expected, *activation).transpose(0, 2, 3, 1)
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=[pads[0], pads[1], pads[2], pads[3]],
                 dilations=list(dilations), group=group, channels_last=layout,
                 **_activation_attributes(*activation))  # fmt: skip
    feeds = {"x": x if layout == 2 else np.ascontiguousarray(x.transpose(0, 2, 3, 1))}
    names = ["x", "W", "B"] + (["z"] if residual else [])
    inputs = [_value("x", dtype, list(feeds["x"].shape))]
    initializers = []
    if constant_weights:
        initializers = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    else:
        inputs += [_value("W", dtype, list(w.shape)), _value("B", dtype, [out_channels])]
        feeds.update(W=w, B=b)
    if residual:
        feeds["z"] = np.ascontiguousarray(z.transpose(0, 2, 3, 1))
        inputs.append(_value("z", dtype, list(feeds["z"].shape)))
    node = helper.make_node("FusedConv", names, ["y"], domain="ronn", **attrs)
    model = _model([node], inputs, [_value("y", dtype)], initializers, ronn_domain=True)
    return model, feeds, expected


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[f"g{i}" for i in range(len(GEOMETRIES))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channels_last_conv_matches_reference(geometry, dtype):
    for layout, batch, residual in ((1, 1, False), (1, 2, True), (2, 3, False)):
        model, feeds, expected = _conv_case(geometry, dtype, batch, layout, ("HardSwish", 0.0, 0.0), residual, True)
        got = _session(model, Level.ORT_DISABLE_ALL).run(None, feeds)[0]
        assert got.dtype == dtype and got.shape == expected.shape
        rtol, atol = TOLERANCE[dtype]
        np.testing.assert_allclose(got, expected, rtol=rtol * 10, atol=atol * 10, err_msg=f"layout {layout}")


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=[a[0] or "none" for a in ACTIVATIONS])
@pytest.mark.parametrize("geometry", [GEOMETRIES[0], GEOMETRIES[3], GEOMETRIES[6], GEOMETRIES[9], GEOMETRIES[12]],
                         ids=["dw3", "dw5s2", "stem", "pointwise", "squeeze"])  # fmt: skip
def test_channels_last_conv_activations(activation, geometry):
    for residual, constant in ((False, True), (True, False)):
        model, feeds, expected = _conv_case(geometry, np.float32, 2, 1, activation, residual, constant)
        got = _session(model, Level.ORT_DISABLE_ALL).run(None, feeds)[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_channels_last_conv_same_padding_and_broadcast_residual():
    x = RNG.standard_normal((1, 9, 10, 8)).astype(np.float32)  # NHWC
    w = RNG.standard_normal((8, 1, 3, 3)).astype(np.float32)
    z = RNG.standard_normal((1, 1, 1, 8)).astype(np.float32)  # broadcasts over the output
    node = helper.make_node("FusedConv", ["x", "W", "", "z"], ["y"], domain="ronn", auto_pad="SAME_UPPER",
                            strides=[2, 2], group=8, channels_last=1, activation="Relu")  # fmt: skip
    model = _model([node], [_value("x", np.float32, [1, 9, 10, 8]), _value("z", np.float32, [1, 1, 1, 8])],
                   [_value("y", np.float32)], [numpy_helper.from_array(w, "W")], ronn_domain=True)  # fmt: skip
    got = _session(model, Level.ORT_DISABLE_ALL).run(None, {"x": x, "z": z})[0]
    # SAME_UPPER with stride 2: out 5x5, total pads 2 (rows: 1 and 1) and 1 (columns: the end)
    conv = reference_conv(x.transpose(0, 3, 1, 2), w, None, (2, 2), (1, 0, 1, 1), (1, 1), 8)
    np.testing.assert_allclose(got, np.maximum(conv.transpose(0, 2, 3, 1) + z, 0), rtol=1e-5, atol=1e-5)


def test_channels_last_conv_large_outputs_use_threads():
    """Shapes big enough for the parallel variants, at two threads, agree with one thread."""
    geometry = (64, 64, 64, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), (40, 40))
    model, feeds, expected = _conv_case(geometry, np.float32, 1, 1, ("Relu", 0.0, 0.0), True, True)
    got = _session(model, Level.ORT_DISABLE_ALL, threads=2).run(None, feeds)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# --- squeeze and excitation ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("first,gate", [(("Relu", 0.0, 0.0), ("HardSigmoid", 1 / 6, 0.5)),
                                        ((None, 0.0, 0.0), ("Sigmoid", 0.0, 0.0)),
                                        (("LeakyRelu", 0.2, 0.0), ("Clip", 0.0, 1.0))])  # fmt: skip
@pytest.mark.parametrize("shape,hidden", [((1, 56, 56, 16), 8), ((2, 7, 5, 72), 24), ((1, 1, 1, 300), 12)])
def test_squeeze_excitation_matches_reference(dtype, first, gate, shape, hidden):
    channels = shape[-1]
    x = RNG.standard_normal(shape).astype(dtype)
    # weights scaled by fan-in, as trained layers are: unscaled, a float32 sum of 300 products
    # (either kernel's, in any order) misses the float64 reference by up to 9e-5
    w1 = (RNG.standard_normal((hidden, channels, 1, 1)) / math.sqrt(channels)).astype(dtype)
    b1 = RNG.standard_normal(hidden).astype(dtype)
    w2 = (RNG.standard_normal((channels, hidden, 1, 1)) / math.sqrt(hidden)).astype(dtype)
    b2 = RNG.standard_normal(channels).astype(dtype)
    mean = x.astype(np.float64).mean(axis=(1, 2))
    h = reference_activation(mean @ w1[:, :, 0, 0].T.astype(np.float64) + b1, *first)
    g = reference_activation(h @ w2[:, :, 0, 0].T.astype(np.float64) + b2, *gate)
    expected = x * g[:, None, None, :]
    attrs = {"channels_last": 1, **_activation_attributes(*first), **_activation_attributes(*gate, prefix="gate_")}
    node = helper.make_node("SqueezeExcitation", ["x", "W1", "B1", "W2", "B2"], ["y"], domain="ronn", **attrs)
    inits = [numpy_helper.from_array(v, n) for v, n in ((w1, "W1"), (b1, "B1"), (w2, "W2"), (b2, "B2"))]
    model = _model([node], [_value("x", dtype, list(shape))], [_value("y", dtype)], inits, ronn_domain=True)
    got = _session(model, Level.ORT_DISABLE_ALL).run(None, {"x": x})[0]
    rtol = 2e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)


# --- the layout pass on whole models -------------------------------------------------------


def _init(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def mobilenet_block_model(dtype=np.float32, opset=17, batch="N", size=(32, 28)) -> bytes:
    """Stem conv + HardSwish, an inverted residual block with depthwise conv, squeeze-and-
    excitation, a residual Add, a per-channel affine, then global pooling and a classifier."""
    nodes, inits = [], []

    def conv(x, out, cin, cout, k, stride=1, group=1, act=None, name=None):
        w = (RNG.standard_normal((cout, cin // group, k, k)) / math.sqrt(cin // group * k * k)).astype(dtype)
        inits.extend([_init(f"{out}_w", w, dtype), _init(f"{out}_b", RNG.standard_normal(cout) * 0.1, dtype)])
        target = f"{out}_pre" if act else out
        nodes.append(helper.make_node("Conv", [x, f"{out}_w", f"{out}_b"], [target], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4, group=group, name=name or out))  # fmt: skip
        if act:
            nodes.append(helper.make_node(act, [target], [out]))

    conv("x", "stem", 3, 16, 3, stride=2, act="HardSwish")
    conv("stem", "expand", 16, 48, 1, act="Relu")
    conv("expand", "dw", 48, 48, 5, group=48, act="HardSwish")
    nodes.append(helper.make_node("GlobalAveragePool", ["dw"], ["se_mean"]))
    conv("se_mean", "se_fc1", 48, 12, 1, act="Relu")
    conv("se_fc1", "se_fc2", 12, 48, 1, act="HardSigmoid")
    nodes.append(helper.make_node("Mul", ["dw", "se_fc2"], ["scaled"]))
    conv("scaled", "project", 48, 16, 1)
    nodes.append(helper.make_node("Add", ["project", "stem"], ["block"]))
    inits += [_init("scale", RNG.uniform(0.5, 1.5, (16, 1, 1)), dtype), _init("shift", RNG.standard_normal((1, 16, 1, 1)), dtype)]
    nodes.append(helper.make_node("Mul", ["block", "scale"], ["scaled_block"]))
    nodes.append(helper.make_node("Add", ["scaled_block", "shift"], ["shifted"]))
    conv("shifted", "dw2", 16, 16, 3, stride=2, group=16, act="Relu")
    conv("dw2", "head", 16, 32, 1, act="HardSwish")
    nodes.append(helper.make_node("GlobalAveragePool", ["head"], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
    inits += [_init("fc_w", RNG.standard_normal((32, 10)) * 0.1, dtype), _init("fc_b", RNG.standard_normal(10), dtype)]
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]))
    inputs = [_value("x", dtype, [batch, 3, *size])]
    outputs = [_value("logits", dtype, [batch, 10]), _value("block", dtype, None)]  # block: inside the region
    graph = helper.make_graph(nodes, "mobilenet_block", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _ops(session) -> list[str]:
    return [(f"{n.domain}::" if n.domain else "") + n.op_type for n in session.model.graph.nodes]


@pytest.mark.parametrize("dtype,opset", [(np.float32, 17), (np.float64, 17), (np.float32, 18)])
def test_layout_pass_on_a_mobilenet_block(dtype, opset, tmp_path):
    model = mobilenet_block_model(dtype, opset)
    x = RNG.standard_normal((2, 3, 32, 28)).astype(dtype)
    saved = str(tmp_path / "optimized.onnx")
    optimized = _session(model, optimized_model_filepath=saved)
    ops = _ops(optimized)
    layouts = [n.attributes.get("channels_last") for n in optimized.model.graph.nodes if n.op_type == "FusedConv"]
    assert layouts.count(2) == 1 and layouts.count(1) == len(layouts) - 1  # the stem reads the image as it is
    assert ops.count("ronn::SqueezeExcitation") == 1
    assert ops.count("Transpose") == 2  # the head for its pooling, and "block" as a graph output
    assert "GlobalAveragePool" in ops  # the final pooling runs channels-first

    plain = _session(model, Level.ORT_DISABLE_ALL).run(None, {"x": x})
    got = optimized.run(None, {"x": x})
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    for p, a in zip(plain, got):
        assert a.dtype == p.dtype and a.shape == p.shape
        np.testing.assert_allclose(a, p, rtol=rtol, atol=rtol)
    onnx.checker.check_model(saved)
    if dtype == np.float32:  # onnxruntime has no float64 Conv
        reference = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
        # the saved model (channels-last nodes as function bodies) runs in onnxruntime
        theirs = ort.InferenceSession(saved, providers=["CPUExecutionProvider"]).run(None, {"x": x})
        for e, t, a in zip(reference, theirs, got):
            np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol)
            np.testing.assert_allclose(a, t, rtol=rtol, atol=rtol)
    # and in ronn, with the fused kernels again (float attributes such as HardSigmoid's
    # default alpha are float32 in the file)
    again = _session(saved)
    assert sorted(_ops(again)) == sorted(ops)
    for e, a in zip(again.run(None, {"x": x}), got):
        np.testing.assert_allclose(a, e, rtol=max(rtol, 1e-6), atol=max(rtol, 1e-6))


def test_values_inside_a_region_can_still_be_fetched():
    model = mobilenet_block_model()
    x = RNG.standard_normal((1, 3, 32, 28)).astype(np.float32)
    optimized = _session(model)
    plain = _session(model, Level.ORT_DISABLE_ALL)
    names = ["dw", "se_fc2", "scaled", "shifted", "dw2"]  # NCHW values the region keeps channels-last
    for name in names:
        assert name not in {o for n in optimized.model.graph.nodes for o in n.outputs}
    for got, expected in zip(optimized.run(names, {"x": x}), plain.run(names, {"x": x})):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_layout_pass_leaves_models_without_depthwise_convolutions():
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "w2"], ["y"], kernel_shape=[1, 1]),
    ]
    inits = [_init("w1", RNG.standard_normal((8, 3, 3, 3))), _init("w2", RNG.standard_normal((4, 8, 1, 1)))]
    model = _model(nodes, [_value("x", np.float32, [1, 3, 8, 8])], [_value("y", np.float32, [1, 4, 8, 8])], inits)
    session = _session(model)
    assert all(not n.attributes.get("channels_last") for n in session.model.graph.nodes)
    assert "Transpose" not in _ops(session)


def test_layout_pass_can_be_disabled():
    so = ronn.SessionOptions()
    so.add_session_config_entry("optimization.disabled_optimizers", "channels_last_layout")
    session = ronn.InferenceSession(mobilenet_block_model(), so)
    assert all(not n.attributes.get("channels_last") for n in session.model.graph.nodes)
    extended = _session(mobilenet_block_model(), Level.ORT_ENABLE_EXTENDED)
    assert all(not n.attributes.get("channels_last") for n in extended.model.graph.nodes)


def test_channels_last_input_transpose_is_reused():
    """A model that starts from an NHWC image (Transpose to NCHW, as TensorFlow exports do):
    the region reads the NHWC image directly."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x_nchw", "w1"], ["a"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["a", "w2"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["b"], ["c"]),
        helper.make_node("Conv", ["c", "w3"], ["d"], kernel_shape=[1, 1]),
        helper.make_node("Transpose", ["d"], ["y"], perm=[0, 2, 3, 1]),
    ]
    inits = [_init("w1", RNG.standard_normal((8, 3, 1, 1))), _init("w2", RNG.standard_normal((8, 1, 3, 3))),
             _init("w3", RNG.standard_normal((4, 8, 1, 1)))]  # fmt: skip
    model = _model(nodes, [_value("x", np.float32, [2, 9, 7, 3])], [_value("y", np.float32, [2, 9, 7, 4])], inits)
    session = _session(model)
    assert _ops(session).count("Transpose") == 0  # both cancel against the region's own
    x = RNG.standard_normal((2, 9, 7, 3)).astype(np.float32)
    expected = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=1e-4, atol=1e-4)


def test_region_that_does_not_pay_stays_channels_first():
    """One depthwise convolution between operators the region cannot hold: two Transposes for
    one convolution do not pay."""
    nodes = [
        helper.make_node("MaxPool", ["x"], ["a"], kernel_shape=[2, 2]),
        helper.make_node("Conv", ["a", "w"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=4),
        helper.make_node("MaxPool", ["b"], ["y"], kernel_shape=[2, 2]),
    ]
    model = _model(nodes, [_value("x", np.float32, [1, 4, 8, 8])], [_value("y", np.float32, [1, 4, 2, 2])],
                   [_init("w", RNG.standard_normal((4, 1, 3, 3)))])  # fmt: skip
    assert "Transpose" not in _ops(_session(model))


def test_concat_and_pooling_inside_a_region(tmp_path):
    """Concat on channels and a global pooling whose result stays in the region (no
    squeeze-and-excitation pattern): Concat on axis 3 and a ReduceMean over axes 1 and 2."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=6),
        helper.make_node("Conv", ["x", "w2"], ["b"], kernel_shape=[1, 1]),
        helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
        helper.make_node("GlobalAveragePool", ["c"], ["m"]),
        helper.make_node("Sub", ["c", "m"], ["d"]),
        helper.make_node("Conv", ["d", "w3"], ["e"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=10),
        helper.make_node("Conv", ["e", "w4"], ["y"], kernel_shape=[1, 1]),
    ]
    inits = [_init("w1", RNG.standard_normal((6, 1, 3, 3))), _init("w2", RNG.standard_normal((4, 6, 1, 1))),
             _init("w3", RNG.standard_normal((10, 1, 3, 3))), _init("w4", RNG.standard_normal((5, 10, 1, 1)))]  # fmt: skip
    for opset in (17, 18):
        model = _model(nodes, [_value("x", np.float32, [2, 6, 7, 9])], [_value("y", np.float32, [2, 5, 7, 9])],
                       inits, opset=opset)  # fmt: skip
        saved = str(tmp_path / f"concat{opset}.onnx")
        session = _session(model, optimized_model_filepath=saved)
        ops = _ops(session)
        assert "ReduceMean" in ops and "Concat" in ops and ops.count("Transpose") == 1  # x: read channels-first
        x = RNG.standard_normal((2, 6, 7, 9)).astype(np.float32)
        expected = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        got = session.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
        theirs = ort.InferenceSession(saved, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, theirs, rtol=1e-4, atol=1e-4)


def test_threads_share_a_channels_last_session():
    session = _session(mobilenet_block_model())
    inputs = {seed: RNG.standard_normal((1 + seed % 3, 3, 32, 28)).astype(np.float32) for seed in range(8)}
    expected = {seed: session.run(None, {"x": x}) for seed, x in inputs.items()}
    failures: list[int] = []

    def work(offset: int) -> None:
        for step in range(16):
            seed = (offset + step) % 8
            got = session.run(None, {"x": inputs[seed]})
            if not all(np.array_equal(a, b) for a, b in zip(got, expected[seed])):
                failures.append(seed)

    threads = [threading.Thread(target=work, args=(i * 3,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
