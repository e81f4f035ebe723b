"""Neural-network kernels beyond the node suite: geometry corners, dtypes, old opsets.

Results are compared with onnxruntime where it implements the case, otherwise with onnx's
reference evaluator or an independent numpy computation.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ronn
from ronn.errors import KernelError

FLOAT = TensorProto.FLOAT


def _model(node: onnx.NodeProto, inputs: list[tuple[str, int]], outputs: list[int], opset: int,
           initializers: list[onnx.TensorProto] = ()) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(name, dtype, None) for name, dtype in inputs],
        [helper.make_tensor_value_info(name, dtype, None) for name, dtype in zip(node.output, outputs)],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    return model


def _ronn(model: onnx.ModelProto, feeds: dict) -> list:
    return ronn.InferenceSession(model.SerializeToString()).run(None, feeds)


def _ort(model: onnx.ModelProto, feeds: dict) -> list:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def _reference(model: onnx.ModelProto, feeds: dict) -> list:
    return ReferenceEvaluator(model).run(None, feeds)


def _same(got: list, want: list, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = np.asarray(w)
        assert isinstance(g, np.ndarray)
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        assert g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol)


def _randn(*shape: int, dtype=np.float32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --- Conv ---------------------------------------------------------------------------------

CONV_CASES = [
    # (input shape, weight shape, attributes)
    ((1, 3, 9), (4, 3, 3), {}),
    ((2, 4, 10), (6, 2, 3), {"group": 2, "strides": [2], "pads": [1, 2], "dilations": [2]}),
    ((2, 3, 8, 7), (5, 3, 3, 3), {"pads": [1, 0, 2, 1], "strides": [2, 1]}),
    ((1, 3, 8, 7), (5, 3, 3, 2), {"auto_pad": "SAME_UPPER", "strides": [2, 3]}),
    ((1, 3, 8, 7), (5, 3, 3, 2), {"auto_pad": "SAME_LOWER", "strides": [2, 2], "dilations": [2, 1]}),
    ((1, 3, 8, 7), (5, 3, 4, 2), {"auto_pad": "VALID", "strides": [3, 2]}),
    ((2, 6, 9, 9), (6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1]}),  # depthwise
    ((1, 4, 9, 9), (8, 1, 3, 3), {"group": 4, "strides": [2, 2], "pads": [0, 1, 1, 0]}),  # multiplier 2
    ((2, 8, 7, 7), (16, 8, 1, 1), {}),  # 1x1
    ((1, 8, 7, 7), (16, 4, 1, 1), {"group": 2, "strides": [2, 2]}),  # 1x1 strided, grouped
    ((1, 8, 6, 6), (4, 8, 1, 1), {"pads": [1, 1, 1, 1]}),  # padded 1x1
    ((1, 2, 5, 6, 7), (4, 2, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1], "strides": [1, 2, 2]}),
    ((1, 4, 5, 6, 7), (4, 2, 3, 3, 3), {"group": 2, "dilations": [1, 2, 2], "auto_pad": "SAME_UPPER"}),
]


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_geometry(case: int, with_bias: bool) -> None:
    x_shape, w_shape, attrs = CONV_CASES[case]
    inputs = ["x", "w"] + (["b"] if with_bias else [])
    node = helper.make_node("Conv", inputs, ["y"], **attrs)
    model = _model(node, [(n, FLOAT) for n in inputs], [FLOAT], 11)
    feeds = {"x": _randn(*x_shape), "w": _randn(*w_shape, seed=1)}
    if with_bias:
        feeds["b"] = _randn(w_shape[0], seed=2)
    dilated_same = attrs.get("auto_pad", "").startswith("SAME") and attrs.get("dilations")
    # onnxruntime rejects dilations with SAME padding
    _same(_ronn(model, feeds), (_reference if dilated_same else _ort)(model, feeds))


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_conv_dtypes(dtype) -> None:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], group=2)
    model = _model(node, [("x", elem), ("w", elem), ("b", elem)], [elem], 11)
    feeds = {"x": _randn(1, 4, 6, 6, dtype=dtype), "w": _randn(6, 2, 3, 3, dtype=dtype, seed=1),
             "b": _randn(6, dtype=dtype, seed=2)}
    rtol = 2e-3 if dtype == np.float16 else 1e-10
    want = _ort(model, feeds) if dtype == np.float16 else _reference(model, feeds)  # no double Conv in onnxruntime
    _same(_ronn(model, feeds), want, rtol=rtol, atol=rtol)


def test_conv_bfloat16_matches_float32() -> None:
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    bf16 = TensorProto.BFLOAT16
    model = _model(node, [("x", bf16), ("w", bf16)], [bf16], 22)
    x = _randn(1, 2, 5, 5).astype(ml_dtypes.bfloat16)
    w = _randn(3, 2, 3, 3, seed=1).astype(ml_dtypes.bfloat16)
    (got,) = _ronn(model, {"x": x, "w": w})
    model32 = _model(node, [("x", FLOAT), ("w", FLOAT)], [FLOAT], 22)
    (want,) = _ort(model32, {"x": x.astype(np.float32), "w": w.astype(np.float32)})
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=1e-2, atol=1e-2)


def test_conv_weight_initializer_and_feed_change_between_runs() -> None:
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    model = _model(node, [("x", FLOAT), ("w", FLOAT)], [FLOAT], 11)
    session = ronn.InferenceSession(model.SerializeToString())
    x = _randn(1, 2, 5, 5)
    for seed in (1, 2):
        w = _randn(3, 2, 3, 3, seed=seed)
        (got,) = session.run(None, {"x": x, "w": w})
        _same([got], _ort(model, {"x": x, "w": w}))
    w = _randn(3, 2, 3, 3, seed=3)
    init_model = _model(node, [("x", FLOAT)], [FLOAT], 11, [onnx.numpy_helper.from_array(w, "w")])
    session = ronn.InferenceSession(init_model.SerializeToString())
    for seed in (4, 5):
        x = _randn(1, 2, 5, 5, seed=seed)
        _same(session.run(None, {"x": x}), _ort(init_model, {"x": x}))


def test_conv_rejects_mismatched_channels() -> None:
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=2)
    model = _model(node, [("x", FLOAT), ("w", FLOAT)], [FLOAT], 11)
    with pytest.raises(KernelError, match="channels"):
        _ronn(model, {"x": _randn(1, 4, 5, 5), "w": _randn(3, 4, 3, 3)})


# --- ConvTranspose ------------------------------------------------------------------------

CONV_TRANSPOSE_CASES = [
    ((1, 3, 5), (3, 2, 3), {"strides": [2]}),
    ((2, 4, 4, 5), (4, 3, 3, 3), {"strides": [2, 2], "pads": [1, 0, 1, 2], "output_padding": [1, 1]}),
    ((1, 4, 4, 5), (4, 2, 3, 2), {"group": 2, "strides": [2, 3], "dilations": [2, 1]}),
    ((1, 2, 3, 3), (2, 3, 3, 3), {"strides": [3, 2], "output_shape": [10, 8]}),
    ((1, 2, 3, 4), (2, 3, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 3, 4), (2, 3, 4, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((1, 2, 3, 3, 2), (2, 2, 2, 2, 2), {"strides": [2, 1, 2], "pads": [0, 1, 0, 0, 0, 1]}),
    ((1, 6, 4, 4), (6, 1, 3, 3), {"group": 6, "strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
]


@pytest.mark.parametrize("case", range(len(CONV_TRANSPOSE_CASES)))
def test_conv_transpose_geometry(case: int) -> None:
    x_shape, w_shape, attrs = CONV_TRANSPOSE_CASES[case]
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)
    model = _model(node, [("x", FLOAT), ("w", FLOAT), ("b", FLOAT)], [FLOAT], 11)
    feeds = {"x": _randn(*x_shape), "w": _randn(*w_shape, seed=1), "b": _randn(w_shape[1] * attrs.get("group", 1), seed=2)}
    got = _ronn(model, feeds)
    if attrs.get("auto_pad") in ("SAME_UPPER", "SAME_LOWER"):
        want = _reference(model, feeds)  # onnxruntime swaps SAME_UPPER and SAME_LOWER here
    else:
        want = _ort(model, feeds)
    _same(got, want)


# --- DeformConv and CausalConvWithState -------------------------------------------------


@pytest.mark.parametrize("with_mask", [False, True])
def test_deform_conv_groups_and_offset_groups(with_mask: bool) -> None:
    inputs = ["x", "w", "offset", "b"] + (["mask"] if with_mask else [])
    node = helper.make_node("DeformConv", inputs, ["y"], group=2, offset_group=2, pads=[1, 0, 1, 1], strides=[2, 1],
                            dilations=[1, 2])
    model = _model(node, [(n, FLOAT) for n in inputs], [FLOAT], 22)
    out_shape = ((5 + 2 - 3) // 2 + 1, (4 + 1 - 3) // 1 + 1)
    feeds = {"x": _randn(1, 4, 5, 4), "w": _randn(6, 2, 2, 2, seed=1), "b": _randn(6, seed=2),
             "offset": _randn(1, 2 * 4 * 2, *out_shape, seed=3)}
    if with_mask:
        feeds["mask"] = np.random.default_rng(4).uniform(0, 1, (1, 2 * 4, *out_shape)).astype(np.float32)
    _same(_ronn(model, feeds), _reference(model, feeds))


@pytest.mark.parametrize("activation", ["none", "silu"])
def test_causal_conv_with_state_decodes_incrementally(activation: str) -> None:
    node = helper.make_node("CausalConvWithState", ["x", "w", "b", "past"], ["y", "present"], activation=activation)
    model = _model(node, [(n, FLOAT) for n in ("x", "w", "b", "past")], [FLOAT, FLOAT], 27)
    x, w, b = _randn(2, 3, 6), _randn(3, 1, 4, seed=1), _randn(3, seed=2)
    past = np.zeros((2, 3, 3), np.float32)
    whole = _ronn(model, {"x": x, "w": w, "b": b, "past": past})
    _same(whole, _reference(model, {"x": x, "w": w, "b": b, "past": past}))
    state, steps = past, []
    for t in range(6):  # one position at a time, threading the state through
        y, state = _ronn(model, {"x": x[:, :, t : t + 1], "w": w, "b": b, "past": state})
        steps.append(y)
    np.testing.assert_allclose(np.concatenate(steps, axis=2), whole[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(state, whole[1])


# --- integer and quantized convolutions ---------------------------------------------------


def test_conv_integer_per_channel_zero_point() -> None:
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])
    model = _model(node, [("x", TensorProto.UINT8), ("w", TensorProto.UINT8), ("xz", TensorProto.UINT8),
                          ("wz", TensorProto.UINT8)], [TensorProto.INT32], 10)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.integers(0, 255, (1, 3, 7, 7), dtype=np.uint8), "w": rng.integers(0, 255, (4, 3, 3, 3), dtype=np.uint8),
             "xz": np.array(100, np.uint8), "wz": np.array([3, 120, 0, 255], np.uint8)}
    _same(_ronn(model, feeds), _reference(model, feeds), rtol=0, atol=0)


@pytest.mark.parametrize("signed", [False, True])
def test_qlinear_conv_per_channel(signed: bool) -> None:
    dt, elem = (np.int8, TensorProto.INT8) if signed else (np.uint8, TensorProto.UINT8)
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], pads=[1, 1, 1, 1])
    model = _model(node, [("x", elem), ("xs", FLOAT), ("xz", elem), ("w", TensorProto.INT8), ("ws", FLOAT),
                          ("wz", TensorProto.INT8), ("ys", FLOAT), ("yz", elem), ("b", TensorProto.INT32)], [elem], 10)
    rng = np.random.default_rng(0)
    info = np.iinfo(dt)
    feeds = {
        "x": rng.integers(info.min, info.max, (1, 3, 6, 6), dtype=dt), "xs": np.array(0.02, np.float32),
        "xz": np.array(3, dt), "w": rng.integers(-100, 100, (4, 3, 3, 3), dtype=np.int8),
        "ws": np.array([0.01, 0.02, 0.005, 0.03], np.float32), "wz": np.zeros(4, np.int8),
        "ys": np.array(0.5, np.float32), "yz": np.array(5, dt), "b": rng.integers(-500, 500, 4, dtype=np.int32),
    }
    (got,) = _ronn(model, feeds)
    (want,) = _reference(model, feeds)  # onnxruntime's u8s8 kernels saturate 16-bit sums here
    assert got.dtype == want.dtype
    assert np.abs(got.astype(np.int32) - want.astype(np.int32)).max() <= 1  # rounding ties may differ


# --- Col2Im -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image, block, attrs",
    [
        ([10], [3], {"strides": [2], "pads": [1, 2]}),
        ([6, 7], [2, 3], {"dilations": [2, 1], "pads": [1, 0, 1, 1], "strides": [1, 2]}),
        ([4, 5, 3], [2, 2, 2], {"strides": [2, 1, 1]}),
    ],
)
def test_col2im(image, block, attrs) -> None:
    rank = len(image)
    pads = attrs.get("pads", [0] * 2 * rank)
    strides = attrs.get("strides", [1] * rank)
    dilations = attrs.get("dilations", [1] * rank)
    counts = [(i + pads[a] + pads[a + rank] - (b - 1) * d - 1) // s + 1
              for a, (i, b, s, d) in enumerate(zip(image, block, strides, dilations))]
    node = helper.make_node("Col2Im", ["x", "image", "block"], ["y"], **attrs)
    model = _model(node, [("x", FLOAT), ("image", TensorProto.INT64), ("block", TensorProto.INT64)], [FLOAT], 18)
    feeds = {"x": _randn(2, 3 * int(np.prod(block)), int(np.prod(counts))),
             "image": np.array(image, np.int64), "block": np.array(block, np.int64)}
    _same(_ronn(model, feeds), _reference(model, feeds))


# --- pooling ------------------------------------------------------------------------------

POOL_CASES = [
    ((1, 2, 9), {"kernel_shape": [3], "strides": [2]}),
    ((2, 3, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 2, 7, 8), {"kernel_shape": [3, 2], "strides": [2, 3], "ceil_mode": 1}),
    ((1, 2, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1}),
    ((1, 2, 9, 9), {"kernel_shape": [2, 3], "dilations": [2, 2], "pads": [1, 1, 0, 2]}),
    ((1, 2, 7, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 7, 6), {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((1, 2, 7, 6), {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "VALID"}),
    ((1, 2, 5, 6, 4), {"kernel_shape": [2, 3, 2], "strides": [2, 1, 2], "pads": [0, 1, 1, 1, 1, 0]}),
]


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_max_pool_with_indices(case: int, storage_order: int) -> None:
    shape, attrs = POOL_CASES[case]
    if storage_order and len(shape) != 4:
        pytest.skip("onnxruntime's column-major indices are 2-D only")
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], storage_order=storage_order, **attrs)
    model = _model(node, [("x", FLOAT)], [FLOAT, TensorProto.INT64], 12)
    feeds = {"x": _randn(*shape)}
    _same(_ronn(model, feeds), _ort(model, feeds), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.float16, np.float64])
def test_max_pool_dtypes(dtype) -> None:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])
    model = _model(node, [("x", elem)], [elem], 12)
    x = (_randn(1, 2, 6, 7) * 50).astype(dtype)
    _same(_ronn(model, {"x": x}), _ort(model, {"x": x}), rtol=0, atol=0)


@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_average_pool(case: int, include_pad: int) -> None:
    shape, attrs = POOL_CASES[case]
    node = helper.make_node("AveragePool", ["x"], ["y"], count_include_pad=include_pad, **attrs)
    model = _model(node, [("x", FLOAT)], [FLOAT], 19)
    feeds = {"x": _randn(*shape)}
    _same(_ronn(model, feeds), _ort(model, feeds))


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("case", [0, 1, 4, 5])
def test_lp_pool(case: int, p: int) -> None:
    shape, attrs = POOL_CASES[case]
    node = helper.make_node("LpPool", ["x"], ["y"], p=p, **attrs)
    model = _model(node, [("x", FLOAT)], [FLOAT], 18)
    feeds = {"x": _randn(*shape)}
    _same(_ronn(model, feeds), _ort(model, feeds))


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 2, 4, 5), (1, 2, 3, 4, 2)])
def test_global_pools(op: str, shape) -> None:
    node = helper.make_node(op, ["x"], ["y"])
    model = _model(node, [("x", FLOAT)], [FLOAT], 11)
    feeds = {"x": _randn(*shape)}
    _same(_ronn(model, feeds), _ort(model, feeds))


def test_global_lp_pool_opset1_float_p() -> None:
    node = helper.make_node("GlobalLpPool", ["x"], ["y"], p=3.0)
    model = _model(node, [("x", FLOAT)], [FLOAT], 1)
    x = _randn(1, 2, 3, 4)
    (got,) = _ronn(model, {"x": x})
    np.testing.assert_allclose(got, (np.abs(x) ** 3).sum(axis=(2, 3), keepdims=True) ** (1 / 3), rtol=1e-5)


def test_max_unpool_round_trip() -> None:
    pool = helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2])
    unpool = helper.make_node("MaxUnpool", ["p", "i"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph([pool, unpool], "g", [helper.make_tensor_value_info("x", FLOAT, None)],
                              [helper.make_tensor_value_info("y", FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 10
    x = _randn(2, 3, 4, 6)
    _same(_ronn(model, {"x": x}), _ort(model, {"x": x}), rtol=0, atol=0)


# --- normalizations -----------------------------------------------------------------------


@pytest.mark.parametrize("opset", [6, 7, 9, 15])
def test_batch_normalization_inference_opsets(opset: int) -> None:
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3,
                            **({"is_test": 1} if opset < 7 else {}))
    model = _model(node, [(n, FLOAT) for n in "x s b m v".split()], [FLOAT], opset)
    rng = np.random.default_rng(0)
    feeds = {"x": _randn(2, 3, 4, 5), "s": _randn(3, seed=1), "b": _randn(3, seed=2),
             "m": _randn(3, seed=3), "v": rng.uniform(0.5, 2, 3).astype(np.float32)}
    (got,) = _ronn(model, feeds)
    shape = (1, 3, 1, 1)
    want = (feeds["x"] - feeds["m"].reshape(shape)) / np.sqrt(feeds["v"].reshape(shape) + 1e-3)
    want = want * feeds["s"].reshape(shape) + feeds["b"].reshape(shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_batch_normalization_not_spatial_opset7() -> None:
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], spatial=0)
    model = _model(node, [(n, FLOAT) for n in "x s b m v".split()], [FLOAT], 7)
    rng = np.random.default_rng(0)
    feeds = {"x": _randn(2, 3, 4), "s": _randn(3, 4, seed=1), "b": _randn(3, 4, seed=2),
             "m": _randn(3, 4, seed=3), "v": rng.uniform(0.5, 2, (3, 4)).astype(np.float32)}
    (got,) = _ronn(model, feeds)
    want = (feeds["x"] - feeds["m"]) / np.sqrt(feeds["v"] + 1e-5) * feeds["s"] + feeds["b"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_batch_normalization_training_float16_stats() -> None:
    f16 = TensorProto.FLOAT16
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], training_mode=1,
                            momentum=0.8)
    model = _model(node, [("x", f16), ("s", FLOAT), ("b", FLOAT), ("m", FLOAT), ("v", FLOAT)], [f16, FLOAT, FLOAT], 15)
    feeds = {"x": _randn(4, 3, 5, dtype=np.float16), "s": _randn(3, seed=1), "b": _randn(3, seed=2),
             "m": _randn(3, seed=3), "v": np.ones(3, np.float32)}
    y, rm, rv = _ronn(model, feeds)
    x = feeds["x"].astype(np.float32)
    mean, var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    assert y.dtype == np.float16 and rm.dtype == np.float32
    np.testing.assert_allclose(rm, feeds["m"] * 0.8 + mean * 0.2, rtol=1e-5)
    np.testing.assert_allclose(rv, 0.8 + var * 0.2, rtol=1e-5)
    want = (x - mean[:, None]) / np.sqrt(var[:, None] + 1e-5) * feeds["s"][:, None] + feeds["b"][:, None]
    np.testing.assert_allclose(y.astype(np.float32), want, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("axis", [1, -1])
def test_layer_normalization_dtypes_and_stash(dtype, axis: int) -> None:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y", "mean", "inv"], axis=axis)
    model = _model(node, [("x", elem), ("s", elem), ("b", elem)], [elem, FLOAT, FLOAT], 17)
    x = _randn(2, 3, 4, dtype=dtype)
    feeds = {"x": x, "s": _randn(*x.shape[axis:], dtype=dtype, seed=1), "b": _randn(*x.shape[axis:], dtype=dtype, seed=2)}
    got = _ronn(model, feeds)
    tol = 3e-3 if dtype == np.float16 else 1e-5
    _same(got, _ort(model, feeds), rtol=tol, atol=tol)


def test_group_normalization_opset18_per_group_scale() -> None:
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2, epsilon=1e-3)
    model = _model(node, [(n, FLOAT) for n in "xsb"], [FLOAT], 18)
    feeds = {"x": _randn(2, 4, 3, 3), "s": np.array([2.0, 0.5], np.float32), "b": np.array([1.0, -1.0], np.float32)}
    (got,) = _ronn(model, feeds)
    grouped = feeds["x"].reshape(2, 2, -1)
    normal = (grouped - grouped.mean(-1, keepdims=True)) / np.sqrt(grouped.var(-1, keepdims=True) + 1e-3)
    want = (normal * feeds["s"][:, None] + feeds["b"][:, None]).reshape(2, 4, 3, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_group_normalization_opset21_float16() -> None:
    f16 = TensorProto.FLOAT16
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3)
    model = _model(node, [(n, f16) for n in "xsb"], [f16], 21)
    feeds = {"x": _randn(2, 6, 4, dtype=np.float16), "s": _randn(6, dtype=np.float16, seed=1),
             "b": _randn(6, dtype=np.float16, seed=2)}
    _same(_ronn(model, feeds), _reference(model, feeds), rtol=3e-3, atol=3e-3)


def test_instance_normalization_float16() -> None:
    f16 = TensorProto.FLOAT16
    node = helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"])
    model = _model(node, [(n, f16) for n in "xsb"], [f16], 6)
    feeds = {"x": _randn(2, 3, 4, 5, dtype=np.float16), "s": _randn(3, dtype=np.float16, seed=1),
             "b": _randn(3, dtype=np.float16, seed=2)}
    _same(_ronn(model, feeds), _ort(model, feeds), rtol=3e-3, atol=3e-3)


def test_rms_normalization_output_takes_scale_type() -> None:
    node = helper.make_node("RMSNormalization", ["x", "s"], ["y"], axis=-2)
    model = _model(node, [("x", TensorProto.FLOAT16), ("s", FLOAT)], [FLOAT], 23)
    feeds = {"x": _randn(2, 3, 4, dtype=np.float16), "s": _randn(3, 4, seed=1)}
    (got,) = _ronn(model, feeds)
    x = feeds["x"].astype(np.float32)
    want = x / np.sqrt((x * x).mean(axis=(1, 2), keepdims=True) + 1e-5) * feeds["s"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [2, 3, 4])
def test_lrn_sizes(size: int) -> None:
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.01, beta=0.6, bias=2.0)
    model = _model(node, [("x", FLOAT)], [FLOAT], 13)
    x = _randn(2, 5, 3, 3)
    if size % 2:
        _same(_ronn(model, {"x": x}), _ort(model, {"x": x}))
        return
    # onnxruntime accepts odd sizes only (and onnx's reference loops over the wrong axis)
    low, high = (size - 1) // 2, -(-(size - 1) // 2)
    sums = np.stack([(x[:, max(0, c - low) : c + high + 1] ** 2).sum(axis=1) for c in range(5)], axis=1)
    _same(_ronn(model, {"x": x}), [x / (2.0 + 0.01 / size * sums) ** 0.6])


@pytest.mark.parametrize("p", [1, 2])
def test_lp_normalization_negative_values_and_zero_rows(p: int) -> None:
    node = helper.make_node("LpNormalization", ["x"], ["y"], p=p, axis=1)
    model = _model(node, [("x", FLOAT)], [FLOAT], 1)
    x = _randn(3, 4)
    x[1] = 0
    (got,) = _ronn(model, {"x": x})
    norm = np.abs(x).sum(axis=1, keepdims=True) if p == 1 else np.sqrt((x * x).sum(axis=1, keepdims=True))
    want = np.where(norm == 0, 0, x / np.where(norm == 0, 1, norm))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_mean_variance_normalization_axes() -> None:
    node = helper.make_node("MeanVarianceNormalization", ["x"], ["y"], axes=[1, -1])
    model = _model(node, [("x", FLOAT)], [FLOAT], 13)
    feeds = {"x": _randn(2, 3, 4)}
    _same(_ronn(model, feeds), _ort(model, feeds))


# --- Dropout ------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [6, 7, 10, 13])
def test_dropout_inference_opsets(opset: int) -> None:
    outputs = ["y"] if opset < 7 else ["y", "mask"]
    node = helper.make_node("Dropout", ["x"], outputs, ratio=0.3)
    mask_type = FLOAT if opset < 10 else TensorProto.BOOL
    model = _model(node, [("x", FLOAT)], [FLOAT, mask_type][: len(outputs)], opset)
    x = _randn(3, 4)
    got = _ronn(model, {"x": x})
    np.testing.assert_array_equal(got[0], x)
    if opset >= 7:
        assert got[1].dtype == (np.float32 if opset < 10 else np.bool_)
        assert got[1].all()


def test_dropout_training_with_seed_matches_reference() -> None:
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y", "mask"], seed=7)
    model = _model(node, [("x", FLOAT), ("r", FLOAT), ("t", TensorProto.BOOL)], [FLOAT, TensorProto.BOOL], 13)
    feeds = {"x": _randn(4, 5), "r": np.array(0.25, np.float32), "t": np.array(True)}
    _same(_ronn(model, feeds), _reference(model, feeds))


def test_dropout_training_without_seed_scales_kept_values() -> None:
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y", "mask"])
    model = _model(node, [("x", FLOAT), ("r", FLOAT), ("t", TensorProto.BOOL)], [FLOAT, TensorProto.BOOL], 13)
    x = _randn(50, 50)
    y, mask = _ronn(model, {"x": x, "r": np.array(0.5, np.float32), "t": np.array(True)})
    np.testing.assert_allclose(y, np.where(mask, x * 2, 0), rtol=1e-6)
    assert 0.3 < mask.mean() < 0.7


# --- Gemm, MatMul and friends -------------------------------------------------------------


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (1,), (5,), (3, 1), (3, 5)])
def test_gemm(trans_a: int, trans_b: int, c_shape) -> None:
    inputs = ["a", "b"] + (["c"] if c_shape else [])
    node = helper.make_node("Gemm", inputs, ["y"], transA=trans_a, transB=trans_b, alpha=0.5, beta=2.0)
    model = _model(node, [(n, FLOAT) for n in inputs], [FLOAT], 13)
    feeds = {"a": _randn(*((4, 3) if trans_a else (3, 4))), "b": _randn(*((5, 4) if trans_b else (4, 5)), seed=1)}
    if c_shape:
        feeds["c"] = _randn(*c_shape, seed=2)
    _same(_ronn(model, feeds), _ort(model, feeds))


def test_gemm_opset6_broadcast_and_int32() -> None:
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], broadcast=1)
    model = _model(node, [("a", FLOAT), ("b", FLOAT), ("c", FLOAT)], [FLOAT], 6)
    feeds = {"a": _randn(3, 4), "b": _randn(4, 5, seed=1), "c": _randn(5, seed=2)}
    _same(_ronn(model, feeds), [feeds["a"] @ feeds["b"] + feeds["c"]])
    i32 = TensorProto.INT32
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], alpha=2.0, transB=1)
    model = _model(node, [("a", i32), ("b", i32), ("c", i32)], [i32], 13)
    a, b, c = (np.arange(12, dtype=np.int32).reshape(3, 4), np.arange(20, dtype=np.int32).reshape(5, 4),
               np.arange(5, dtype=np.int32))
    _same(_ronn(model, {"a": a, "b": b, "c": c}), [2 * a @ b.T + c], rtol=0, atol=0)


@pytest.mark.parametrize("shapes", [((4,), (4,)), ((4,), (4, 3)), ((2, 3, 4), (4,)), ((2, 1, 3, 4), (5, 4, 2)), ((3, 4), (4, 2))])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int32, np.int64, np.uint64])
def test_matmul_shapes_and_dtypes(shapes, dtype) -> None:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    model = _model(node, [("a", elem), ("b", elem)], [elem], 13)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 10, shapes[0]).astype(dtype)
    b = rng.integers(0, 10, shapes[1]).astype(dtype)
    (got,) = _ronn(model, {"a": a, "b": b})
    want = np.asarray(np.matmul(a.astype(np.float64), b.astype(np.float64))).astype(dtype)
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-3)


def test_matmul_integer_per_row_and_column_zero_points() -> None:
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    u8 = TensorProto.UINT8
    model = _model(node, [("a", u8), ("b", u8), ("az", u8), ("bz", u8)], [TensorProto.INT32], 10)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(0, 255, (3, 4), dtype=np.uint8), "b": rng.integers(0, 255, (4, 2), dtype=np.uint8),
             "az": np.array([1, 100, 255], np.uint8), "bz": np.array([7, 200], np.uint8)}
    want = (feeds["a"].astype(np.int32) - feeds["az"][:, None]) @ (feeds["b"].astype(np.int32) - feeds["bz"])
    _same(_ronn(model, feeds), [want], rtol=0, atol=0)


def test_matmul_integer_batched_int8() -> None:
    node = helper.make_node("MatMulInteger", ["a", "b", "az"], ["y"])
    model = _model(node, [("a", TensorProto.INT8), ("b", TensorProto.INT8), ("az", TensorProto.INT8)], [TensorProto.INT32], 10)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(-128, 127, (2, 3, 4), dtype=np.int8), "b": rng.integers(-128, 127, (4, 5), dtype=np.int8),
             "az": np.array(-3, np.int8)}
    _same(_ronn(model, feeds), _ort(model, feeds), rtol=0, atol=0)


def test_qlinear_matmul_per_column_scale() -> None:
    u8 = TensorProto.UINT8
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    model = _model(node, [("a", u8), ("as", FLOAT), ("az", u8), ("b", u8), ("bs", FLOAT), ("bz", u8), ("ys", FLOAT),
                          ("yz", u8)], [u8], 10)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(0, 255, (3, 4), dtype=np.uint8), "as": np.array(0.01, np.float32),
             "az": np.array(120, np.uint8), "b": rng.integers(0, 255, (4, 2), dtype=np.uint8),
             "bs": np.array([0.02, 0.005], np.float32), "bz": np.array([128, 100], np.uint8),
             "ys": np.array(0.05, np.float32), "yz": np.array(128, np.uint8)}
    (got,) = _ronn(model, feeds)
    acc = (feeds["a"].astype(np.int64) - 120) @ (feeds["b"].astype(np.int64) - feeds["bz"])
    want = np.clip(np.rint(acc * (0.01 * feeds["bs"].astype(np.float64) / 0.05)) + 128, 0, 255)
    assert got.dtype == np.uint8
    assert np.abs(got.astype(np.int32) - want).max() <= 1


@pytest.mark.parametrize(
    "equation, shapes",
    [
        ("ij,jk->ik", [(3, 4), (4, 5)]),
        ("bij, bjk -> bik", [(2, 3, 4), (2, 4, 5)]),
        ("...ij,...jk", [(2, 3, 4), (1, 4, 5)]),
        ("ii->i", [(4, 4)]),
        ("ij->", [(3, 4)]),
        ("Ab,bC->AC", [(3, 4), (4, 2)]),
        ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_einsum(equation: str, shapes, dtype) -> None:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    names = [f"x{i}" for i in range(len(shapes))]
    node = helper.make_node("Einsum", names, ["y"], equation=equation)
    model = _model(node, [(n, elem) for n in names], [elem], 12)
    rng = np.random.default_rng(0)
    feeds = {n: rng.integers(-5, 5, s).astype(dtype) for n, s in zip(names, shapes)}
    (got,) = _ronn(model, feeds)
    want = np.asarray(np.einsum(equation.replace(" ", ""), *feeds.values()))
    assert isinstance(got, np.ndarray) and got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=1e-5)


# --- Softmax family -----------------------------------------------------------------------


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset", [1, 11, 13])
@pytest.mark.parametrize("axis", [None, 0, 1, 2, -1])
def test_softmax_family_axis_semantics(op: str, opset: int, axis) -> None:
    if opset < 11 and axis is not None and axis < 0:
        pytest.skip("negative axes need opset 11")
    node = helper.make_node(op, ["x"], ["y"], **({} if axis is None else {"axis": axis}))
    model = _model(node, [("x", FLOAT)], [FLOAT], opset)
    x = _randn(2, 3, 4)
    if op == "Hardmax":
        x[0, 0, :2] = 5.0  # a tie: the first maximum wins
    _same(_ronn(model, {"x": x}), _ort(model, {"x": x}), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_family_float16(op: str) -> None:
    f16 = TensorProto.FLOAT16
    node = helper.make_node(op, ["x"], ["y"])
    model = _model(node, [("x", f16)], [f16], 13)
    x = _randn(3, 5, dtype=np.float16)
    _same(_ronn(model, {"x": x}), _ort(model, {"x": x}), rtol=2e-3, atol=2e-3)


# --- attention ----------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [0, 1])
@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_attention_gqa_3d_with_cache(causal: int, mask) -> None:
    inputs = ["q", "k", "v", "mask" if mask else "", "past_k", "past_v"]
    node = helper.make_node("Attention", inputs, ["y", "present_k", "present_v"], is_causal=causal,
                            q_num_heads=4, kv_num_heads=2)
    mask_type = TensorProto.BOOL if mask == "bool" else FLOAT
    model = _model(node, [("q", FLOAT), ("k", FLOAT), ("v", FLOAT)] + ([("mask", mask_type)] if mask else [])
                   + [("past_k", FLOAT), ("past_v", FLOAT)], [FLOAT] * 3, 23)
    feeds = {"q": _randn(2, 3, 4 * 8), "k": _randn(2, 3, 2 * 8, seed=1), "v": _randn(2, 3, 2 * 5, seed=2),
             "past_k": _randn(2, 2, 4, 8, seed=3), "past_v": _randn(2, 2, 4, 5, seed=4)}
    if mask == "bool":
        feeds["mask"] = np.random.default_rng(5).uniform(size=(3, 7)) > 0.3
        feeds["mask"][:, 0] = True
    elif mask == "float":
        feeds["mask"] = _randn(2, 1, 3, 7, seed=5)
    _same(_ronn(model, feeds), _reference(model, feeds), rtol=1e-5, atol=1e-6)


def test_attention_scores_output_modes() -> None:
    for mode in range(4):
        node = helper.make_node("Attention", ["q", "k", "v", "mask"], ["y", "", "", "scores"], qk_matmul_output_mode=mode,
                                softcap=3.0)
        model = _model(node, [("q", FLOAT), ("k", FLOAT), ("v", FLOAT), ("mask", FLOAT)], [FLOAT, FLOAT], 23)
        model.graph.output.pop()
        model.graph.output.append(helper.make_tensor_value_info("scores", FLOAT, None))
        feeds = {"q": _randn(1, 2, 3, 4), "k": _randn(1, 2, 5, 4, seed=1), "v": _randn(1, 2, 5, 4, seed=2),
                 "mask": _randn(3, 5, seed=3)}
        y, scores = _ronn(model, feeds)
        raw = feeds["q"] @ feeds["k"].swapaxes(-1, -2) / 2  # scale 1/sqrt(head size 4)
        capped = np.tanh(raw / 3) * 3
        biased = capped + feeds["mask"]
        probs = np.exp(biased - biased.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        np.testing.assert_allclose(scores, (raw, capped, biased, probs)[mode], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y, probs @ feeds["v"], rtol=1e-5, atol=1e-6)


def test_attention_fully_masked_rows_are_zero() -> None:
    node = helper.make_node("Attention", ["q", "k", "v", "mask"], ["y"])
    model = _model(node, [("q", FLOAT), ("k", FLOAT), ("v", FLOAT), ("mask", TensorProto.BOOL)], [FLOAT], 23)
    mask = np.array([[True, False], [False, False]])
    (y,) = _ronn(model, {"q": _randn(1, 1, 2, 4), "k": _randn(1, 1, 2, 4, seed=1), "v": _randn(1, 1, 2, 4, seed=2),
                         "mask": mask})
    assert np.isfinite(y).all() and not y[0, 0, 1].any()


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
def test_linear_attention_prefill_equals_token_by_token(rule: str) -> None:
    inputs = ["q", "k", "v", "past"] + (["decay"] if "gated" in rule else [""]) + (["beta"] if "delta" in rule else [])
    while inputs[-1] == "":
        inputs.pop()
    node = helper.make_node("LinearAttention", inputs, ["y", "state"], q_num_heads=4, kv_num_heads=2, update_rule=rule)
    model = _model(node, [(n, FLOAT) for n in inputs if n], [FLOAT, FLOAT], 27)
    rng = np.random.default_rng(0)
    feeds = {"q": _randn(2, 5, 4 * 3), "k": _randn(2, 5, 2 * 3, seed=1) / 2, "v": _randn(2, 5, 2 * 4, seed=2),
             "past": _randn(2, 2, 3, 4, seed=3), "decay": -rng.uniform(0, 1, (2, 5, 2)).astype(np.float32),
             "beta": rng.uniform(0, 1, (2, 5, 2)).astype(np.float32)}
    feeds = {n: feeds[n] for n in inputs if n}
    whole = _ronn(model, feeds)
    _same(whole, _reference(model, feeds), rtol=1e-5, atol=1e-5)
    state, ys = feeds["past"], []
    for t in range(5):
        step = {n: (a[:, t : t + 1] if n not in ("past",) else state) for n, a in feeds.items()}
        y, state = _ronn(model, step)
        ys.append(y)
    np.testing.assert_allclose(np.concatenate(ys, axis=1), whole[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state, whole[1], rtol=1e-5, atol=1e-5)
