"""Tensor kernels beyond the node suite: old opsets, strings and bools, edge cases, errors."""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import ronn
from ronn.errors import KernelError

RNG = np.random.default_rng(0)


def _elem_type(value: np.ndarray) -> int:
    if value.dtype.kind in "OUS":
        return TensorProto.STRING
    return helper.np_dtype_to_tensor_dtype(value.dtype)


def _model(node: onnx.NodeProto, feeds: dict, opset: int, domain: str = "") -> onnx.ModelProto:
    inputs = []
    for name, value in feeds.items():
        if isinstance(value, list):
            inputs.append(helper.make_tensor_sequence_value_info(name, _elem_type(value[0]), None))
        else:
            inputs.append(helper.make_tensor_value_info(name, _elem_type(value), None))
    outputs = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in node.output if o]
    graph = helper.make_graph([node], "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, opset)])
    model.ir_version = 8 if opset < 21 else 10
    return model


def _ronn(model: onnx.ModelProto, feeds: dict) -> list:
    return ronn.InferenceSession(model.SerializeToString()).run(None, feeds)


def _reference(model: onnx.ModelProto, feeds: dict) -> list:
    return ReferenceEvaluator(model).run(None, feeds)


def _ort(model: onnx.ModelProto, feeds: dict) -> list:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for output in model.graph.output:
        output.ClearField("type")
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _same(got, want, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    want = np.asarray(want)
    assert isinstance(got, np.ndarray), type(got)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype.kind in "OUS":
        assert got.dtype == object
        assert got.tolist() == want.astype(object).tolist()
        return
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if got.dtype in (np.dtype(ml_dtypes.bfloat16),):
        got, want = got.astype(np.float32), want.astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)


def _check(node, feeds: dict, opset: int, expected=None, against=_reference, **tolerance) -> list:
    """Run one node through ronn; compare with ``expected`` or with ``against``'s results."""
    model = _model(node, feeds, opset)
    got = _ronn(model, feeds)
    want = expected if expected is not None else against(model, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        _same(g, w, **tolerance)
    return got


def _fails(node, feeds: dict, opset: int, fragment: str) -> None:
    model = _model(node, feeds, opset)
    with pytest.raises(KernelError, match=fragment):
        _ronn(model, feeds)


def _strings(*shape: int) -> np.ndarray:
    count = int(np.prod(shape))
    return np.array([f"s{i}" for i in range(count)], dtype=object).reshape(shape)


def _floats(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _i64(values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# --- Reshape, Flatten, Squeeze, Unsqueeze, Transpose --------------------------------------


def test_reshape_opset1_shape_attribute() -> None:
    node = helper.make_node("Reshape", ["x"], ["y"], shape=[0, -1])
    x = _floats(2, 3, 4)
    _check(node, {"x": x}, 1, [x.reshape(2, 12)])


def test_reshape_allowzero_keeps_zero() -> None:
    node = helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)
    x = np.zeros((0, 3), dtype=np.float32)
    _check(node, {"x": x, "s": _i64([3, 0])}, 14, [x.reshape(3, 0)])


def test_reshape_strings_and_error() -> None:
    node = helper.make_node("Reshape", ["x", "s"], ["y"])
    x = _strings(2, 3)
    _check(node, {"x": x, "s": _i64([3, -1])}, 13, [x.reshape(3, 2)])
    _fails(node, {"x": x, "s": _i64([4, -1])}, 13, "cannot reshape")


@pytest.mark.parametrize("opset", [1, 9, 13])
@pytest.mark.parametrize("axis", [0, 2, -1, 3])
def test_flatten(opset: int, axis: int) -> None:
    if opset < 11 and axis < 0:
        pytest.skip("negative axis needs opset 11")
    node = helper.make_node("Flatten", ["x"], ["y"], axis=axis)
    x = _floats(2, 3, 4)
    cut = axis % 3 if axis < 0 else axis
    _check(node, {"x": x}, opset, [x.reshape(int(np.prod(x.shape[:cut])), -1)])


@pytest.mark.parametrize("opset", [1, 11])
def test_squeeze_unsqueeze_axes_attribute(opset: int) -> None:
    x = _floats(1, 3, 1)
    axes = [0, 2] if opset == 1 else [-1, 0]
    _check(helper.make_node("Squeeze", ["x"], ["y"], axes=axes), {"x": x}, opset, [x.reshape(3)])
    _check(helper.make_node("Squeeze", ["x"], ["y"]), {"x": x}, opset, [x.reshape(3)])
    want = x.reshape(1, 1, 1, 3, 1) if opset == 1 else x.reshape(1, 1, 3, 1, 1)
    _check(helper.make_node("Unsqueeze", ["x"], ["y"], axes=axes), {"x": x}, opset, [want])


def test_squeeze_unsqueeze_axes_input() -> None:
    x = _strings(1, 3, 1)
    _check(helper.make_node("Squeeze", ["x", "a"], ["y"]), {"x": x, "a": _i64([-3])}, 13, [x.reshape(3, 1)])
    _check(helper.make_node("Unsqueeze", ["x", "a"], ["y"]), {"x": x, "a": _i64([-1, 1])}, 13, [x.reshape(1, 1, 3, 1, 1)])
    _fails(helper.make_node("Squeeze", ["x", "a"], ["y"]), {"x": x, "a": _i64([1])}, 13, "not 1")
    _fails(helper.make_node("Unsqueeze", ["x", "a"], ["y"]), {"x": x, "a": _i64([1, 1])}, 13, "duplicates")


@pytest.mark.parametrize("value", [_strings(2, 3, 4), np.arange(24).reshape(2, 3, 4) % 2 == 0])
def test_transpose_strings_bools(value: np.ndarray) -> None:
    _check(helper.make_node("Transpose", ["x"], ["y"]), {"x": value}, 13, [value.transpose()])
    _check(helper.make_node("Transpose", ["x"], ["y"], perm=[1, 2, 0]), {"x": value}, 1, [value.transpose(1, 2, 0)])


# --- Concat, Split, Slice ------------------------------------------------------------------


def test_concat_opset1_default_axis_and_strings() -> None:
    a, b = _floats(2, 1), _floats(2, 3)
    _check(helper.make_node("Concat", ["a", "b"], ["y"]), {"a": a, "b": b}, 1, [np.concatenate([a, b], 1)])
    s, t = _strings(2, 2), _strings(1, 2)
    _check(helper.make_node("Concat", ["a", "b"], ["y"], axis=-2), {"a": s, "b": t}, 13, [np.concatenate([s, t], 0)])
    _fails(helper.make_node("Concat", ["a", "b"], ["y"], axis=0), {"a": a, "b": b}, 13, "cannot join")


@pytest.mark.parametrize("opset", [2, 11])
def test_split_attribute(opset: int) -> None:
    x = _floats(2, 6)
    node = helper.make_node("Split", ["x"], ["a", "b", "c"], axis=-1 if opset == 11 else 1, split=[1, 2, 3])
    _check(node, {"x": x}, opset, [x[:, :1], x[:, 1:3], x[:, 3:]])
    node = helper.make_node("Split", ["x"], ["a", "b"], axis=1)
    _check(node, {"x": x}, opset, [x[:, :3], x[:, 3:]])


def test_split_opset1_second_input() -> None:
    x = _floats(5)
    node = helper.make_node("Split", ["x", "s"], ["a", "b"])
    _check(node, {"x": x, "s": _i64([2, 3])}, 1, [x[:2], x[2:]])


def test_split_input_and_num_outputs() -> None:
    x = _strings(7, 2)
    node = helper.make_node("Split", ["x", "s"], ["a", "b"], axis=0)
    _check(node, {"x": x, "s": _i64([0, 7])}, 13, [x[:0], x])
    node = helper.make_node("Split", ["x"], ["a", "b", "c"], axis=0, num_outputs=3)
    _check(node, {"x": x}, 18, [x[:3], x[3:6], x[6:]])
    node = helper.make_node("Split", ["x", "s"], ["a", "b"], axis=0)
    _fails(node, {"x": x, "s": _i64([3, 3])}, 13, "add up")


def test_slice_opset1_attributes() -> None:
    x = _floats(4, 5)
    node = helper.make_node("Slice", ["x"], ["y"], starts=[1, -100], ends=[1000, -1], axes=[0, 1])
    _check(node, {"x": x}, 1, [x[1:, :-1]])
    node = helper.make_node("Slice", ["x"], ["y"], starts=[1], ends=[3])
    _check(node, {"x": x}, 1, [x[1:3]])


@pytest.mark.parametrize(
    "starts,ends,axes,steps",
    [
        ([-1], [-1000], [1], [-1]),
        ([10], [0], [-1], [-2]),
        ([0, 2**62], [2**62, -(2**62)], [0, 1], [3, -1]),
        ([-3, 1], [-1, 2**62], [1, 0], [1, 2]),
        ([2], [2], [0], [1]),
        ([-100], [100], [0], [-1]),
    ],
)
def test_slice_inputs(starts, ends, axes, steps) -> None:
    x = np.arange(30, dtype=np.int32).reshape(5, 6)
    node = helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"])
    feeds = {"x": x, "s": _i64(starts), "e": _i64(ends), "a": _i64(axes), "t": _i64(steps)}
    _check(node, feeds, 13)


def test_slice_strings_int32_indices() -> None:
    x = _strings(3, 4)
    node = helper.make_node("Slice", ["x", "s", "e"], ["y"])
    feeds = {"x": x, "s": np.array([1, 1], np.int32), "e": np.array([3, -1], np.int32)}
    _check(node, feeds, 13, [x[1:3, 1:-1]])
    node = helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"])
    _fails(node, {**feeds, "a": _i64([0, 1]), "t": _i64([1, 0])}, 13, "steps")


# --- Expand, Tile, Pad, CenterCropPad ------------------------------------------------------


def test_expand_strings_bools() -> None:
    node = helper.make_node("Expand", ["x", "s"], ["y"])
    x = _strings(3, 1)
    _check(node, {"x": x, "s": _i64([2, 1, 4])}, 13, [np.broadcast_to(x, (2, 3, 4))])
    b = np.array([True, False])
    _check(node, {"x": b, "s": _i64([3, 1])}, 8, [np.broadcast_to(b, (3, 2))])
    _fails(node, {"x": x, "s": _i64([2, 4])}, 13, "cannot broadcast")


def test_tile() -> None:
    x = _strings(2, 3)
    _check(helper.make_node("Tile", ["x", "r"], ["y"]), {"x": x, "r": _i64([2, 1])}, 13, [np.tile(x, (2, 1))])
    f = _floats(2, 3)
    node = helper.make_node("Tile", ["x", "t", "a"], ["y"])
    _check(node, {"x": f, "t": _i64(3), "a": _i64(1)}, 1, [np.tile(f, (1, 3))])


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [[1, 2, 2, 1], [0, -1, 2, 0], [2, 0, 0, 3], [-1, 1, 0, -2]])
def test_pad_modes(mode: str, pads: list[int]) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    node = helper.make_node("Pad", ["x", "p", "v"], ["y"], mode=mode)
    feeds = {"x": x, "p": _i64(pads), "v": np.array(7.5, np.float32)}
    if min(pads) >= 0:
        _check(node, feeds, 19)
        return
    cropped = x[max(-pads[0], 0) : 3 - max(-pads[2], 0), max(-pads[1], 0) : 4 - max(-pads[3], 0)]
    width = [(max(pads[0], 0), max(pads[2], 0)), (max(pads[1], 0), max(pads[3], 0))]
    extra = {"constant_values": 7.5} if mode == "constant" else {}
    _check(node, feeds, 19, [np.pad(cropped, width, mode=mode, **extra)])


def test_pad_axes_and_old_attributes() -> None:
    x = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    node = helper.make_node("Pad", ["x", "p", "", "a"], ["y"], mode="reflect")
    _check(node, {"x": x, "p": _i64([1, 2, 1, 0]), "a": _i64([-1, 1])}, 18)
    node = helper.make_node("Pad", ["x"], ["y"], pads=[0, 1, 0, 0, 1, 0], value=3.0)
    _check(node, {"x": x}, 2, [np.pad(x, [(0, 0), (1, 1), (0, 0)], constant_values=3)])
    node = helper.make_node("Pad", ["x"], ["y"], paddings=[0, 0, 1, 0, 0, 1], mode="edge")
    _check(node, {"x": x}, 1, [np.pad(x, [(0, 0), (0, 0), (1, 1)], mode="edge")])


def test_pad_strings_and_bools() -> None:
    s = _strings(2, 2)
    node = helper.make_node("Pad", ["x", "p"], ["y"])
    want = np.array([["", "", ""], ["s0", "s1", ""], ["s2", "s3", ""]], dtype=object)
    _check(node, {"x": s, "p": _i64([1, 0, 0, 1])}, 13, [want])
    node = helper.make_node("Pad", ["x", "p", "v"], ["y"], mode="constant")
    _check(node, {"x": s, "p": _i64([0, 1, 0, 0]), "v": np.array("z", dtype=object)}, 13, [np.array([["z", "s0", "s1"], ["z", "s2", "s3"]], dtype=object)])
    b = np.array([True, False])
    _check(helper.make_node("Pad", ["x", "p"], ["y"], mode="edge"), {"x": b, "p": _i64([1, 2])}, 13, [np.array([True, True, False, False, False])])


@pytest.mark.parametrize("shape,axes", [([2, 7], None), ([5, 2], [0, 1]), ([4], [-1]), ([6, 3], [1, 0])])
def test_center_crop_pad(shape, axes) -> None:
    x = np.arange(35, dtype=np.float32).reshape(5, 7)
    node = helper.make_node("CenterCropPad", ["x", "s"], ["y"], **({} if axes is None else {"axes": axes}))
    _check(node, {"x": x, "s": _i64(shape)}, 18)


# --- Shape, Size, Identity, Constant, ConstantOfShape --------------------------------------


@pytest.mark.parametrize("start,end", [(None, None), (1, None), (-2, None), (0, -1), (-10, 10), (2, 1)])
def test_shape_window(start, end) -> None:
    kwargs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    x = _floats(2, 3, 4)
    got = _check(helper.make_node("Shape", ["x"], ["y"], **kwargs), {"x": x}, 15)
    assert got[0].dtype == np.int64


def test_size_and_shape_of_strings() -> None:
    s = _strings(2, 5)
    _check(helper.make_node("Size", ["x"], ["y"]), {"x": s}, 13, [np.array(10, np.int64)])
    _check(helper.make_node("Shape", ["x"], ["y"]), {"x": s}, 1, [_i64([2, 5])])


def test_identity_sequence() -> None:
    seq = [_floats(2), _floats(3)]
    model = _model(helper.make_node("Identity", ["x"], ["y"]), {"x": seq}, 16)
    (got,) = _ronn(model, {"x": seq})
    assert isinstance(got, list) and len(got) == 2
    _same(got[1], seq[1])


@pytest.mark.parametrize(
    "attribute,value,expected",
    [
        ("value_float", 1.5, np.array(1.5, np.float32)),
        ("value_floats", [1.0, 2.0], np.array([1.0, 2.0], np.float32)),
        ("value_int", 7, np.array(7, np.int64)),
        ("value_ints", [1, -2], _i64([1, -2])),
        ("value_string", "hi", np.array("hi", dtype=object)),
        ("value_strings", ["a", "b"], np.array(["a", "b"], dtype=object)),
        ("value", numpy_helper.from_array(np.array([[True, False]])), np.array([[True, False]])),
    ],
)
def test_constant_attributes(attribute: str, value, expected: np.ndarray) -> None:
    node = helper.make_node("Constant", [], ["y"], **{attribute: value})
    _check(node, {}, 13 if attribute != "value" else 1, [expected])


def test_constant_sparse_value() -> None:
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([5.0, 6.0], np.float32), "values"),
        numpy_helper.from_array(_i64([1, 4]), "indices"),
        [2, 3],
    )
    node = helper.make_node("Constant", [], ["y"], sparse_value=sparse)
    _check(node, {}, 11, [np.array([[0, 5, 0], [0, 6, 0]], np.float32)])


def test_constant_of_shape() -> None:
    node = helper.make_node("ConstantOfShape", ["s"], ["y"])
    _check(node, {"s": _i64([2, 0])}, 9, [np.zeros((2, 0), np.float32)])
    node = helper.make_node("ConstantOfShape", ["s"], ["y"], value=numpy_helper.from_array(np.array([3], np.int32)))
    _check(node, {"s": _i64([])}, 20, [np.array(3, np.int32)])
    node = helper.make_node("ConstantOfShape", ["s"], ["y"], value=numpy_helper.from_array(np.array([True])))
    _check(node, {"s": _i64([2, 2])}, 21, [np.ones((2, 2), bool)])


# --- Range, EyeLike, OneHot, Trilu, CumSum, CumProd, Det -----------------------------------


@pytest.mark.parametrize(
    "start,limit,delta,dtype",
    [
        (0, 10, 3, np.int64),
        (10, 4, -2, np.int32),
        (5, 1, 1, np.int16),
        (0.5, 3.0, 0.4, np.float32),
        (1.0, -2.0, -0.75, np.float64),
        (0.0, 2.0, 0.25, np.float16),
    ],
)
def test_range(start, limit, delta, dtype) -> None:
    node = helper.make_node("Range", ["a", "b", "c"], ["y"])
    feeds = {"a": np.array(start, dtype), "b": np.array(limit, dtype), "c": np.array(delta, dtype)}
    _check(node, feeds, 11)


@pytest.mark.parametrize("k,dtype", [(0, None), (1, TensorProto.BOOL), (-2, TensorProto.INT32), (5, None)])
def test_eye_like(k: int, dtype) -> None:
    kwargs = {"k": k} if dtype is None else {"k": k, "dtype": dtype}
    _check(helper.make_node("EyeLike", ["x"], ["y"], **kwargs), {"x": _floats(3, 4)}, 9)


@pytest.mark.parametrize("axis", [-1, 0, 1, -3])
def test_one_hot(axis: int) -> None:
    node = helper.make_node("OneHot", ["i", "d", "v"], ["y"], axis=axis)
    feeds = {"i": np.array([[1.7, -1], [9, -1.5]], np.float32), "d": np.array(4.0, np.float32), "v": np.array([2, 5], np.float32)}
    _check(node, feeds, 11, against=_ort)  # float indices truncate, as in onnxruntime
    feeds = {"i": _i64([[1, -1], [9, -5]]), "d": _i64(4), "v": np.array([2, 5], np.int32)}
    _check(node, feeds, 11)


def test_one_hot_string_values() -> None:
    node = helper.make_node("OneHot", ["i", "d", "v"], ["y"])
    feeds = {"i": _i64([0, 2]), "d": _i64([3]), "v": np.array(["off", "on"], dtype=object)}
    want = np.array([["on", "off", "off"], ["off", "off", "on"]], dtype=object)
    _check(node, feeds, 11, [want])


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, -1, 2, 10])
def test_trilu(upper: int, k) -> None:
    x = np.arange(2 * 3 * 5, dtype=np.int64).reshape(2, 3, 5)
    inputs, feeds = ["x"], {"x": x}
    if k is not None:
        inputs.append("k")
        feeds["k"] = _i64(k)
    _check(helper.make_node("Trilu", inputs, ["y"], upper=upper), feeds, 14)


def test_trilu_strings() -> None:
    x = _strings(2, 2)
    want = np.array([["s0", "s1"], ["", "s3"]], dtype=object)
    _check(helper.make_node("Trilu", ["x"], ["y"]), {"x": x}, 14, [want])


@pytest.mark.parametrize("op", ["CumSum", "CumProd"])
@pytest.mark.parametrize("exclusive,reverse", list(itertools.product([0, 1], [0, 1])))
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint64])
def test_cumulative(op: str, exclusive: int, reverse: int, dtype) -> None:
    x = (np.arange(12).reshape(3, 4) % 4 + 1).astype(dtype)
    node = helper.make_node(op, ["x", "a"], ["y"], exclusive=exclusive, reverse=reverse)
    _check(node, {"x": x, "a": np.array(-1, np.int32)}, 14 if op == "CumSum" else 26)


def test_cumsum_float16() -> None:
    x = np.linspace(0, 1, 8).astype(np.float16).reshape(2, 4)
    node = helper.make_node("CumSum", ["x", "a"], ["y"])
    _check(node, {"x": x, "a": _i64(1)}, 14, [np.cumsum(x.astype(np.float32), 1).astype(np.float16)], rtol=1e-3)


def test_det() -> None:
    x = _floats(2, 3, 3, 3)
    _check(helper.make_node("Det", ["x"], ["y"]), {"x": x}, 11, rtol=1e-4)
    h = _floats(2, 2).astype(np.float16)
    _check(helper.make_node("Det", ["x"], ["y"]), {"x": h}, 11, [np.asarray(np.linalg.det(h.astype(np.float32))).astype(np.float16)])


# --- DepthToSpace, SpaceToDepth, ReverseSequence -------------------------------------------


@pytest.mark.parametrize("opset,mode", [(1, None), (11, "DCR"), (13, "CRD")])
def test_depth_to_space(opset: int, mode) -> None:
    kwargs = {"blocksize": 2} if mode is None else {"blocksize": 2, "mode": mode}
    x = _floats(2, 8, 2, 3)
    _check(helper.make_node("DepthToSpace", ["x"], ["y"], **kwargs), {"x": x}, opset)


@pytest.mark.parametrize("opset", [1, 13])
def test_space_to_depth(opset: int) -> None:
    x = _strings(1, 2, 4, 6)
    y = _check(helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2), {"x": x}, opset,
               [x.reshape(1, 2, 2, 2, 3, 2).transpose(0, 3, 5, 1, 2, 4).reshape(1, 8, 2, 3)])
    assert y[0].shape == (1, 8, 2, 3)


@pytest.mark.parametrize("batch_axis,time_axis", [(0, 1), (1, 0)])
def test_reverse_sequence(batch_axis: int, time_axis: int) -> None:
    x = np.arange(4 * 3 * 2).reshape(4, 3, 2).astype(np.float32)
    if batch_axis == 0:
        x = x.reshape(3, 4, 2)
    lens = _i64([4, 0, 2]) if batch_axis == 0 else _i64([1, 4, 3])
    node = helper.make_node("ReverseSequence", ["x", "l"], ["y"], batch_axis=batch_axis, time_axis=time_axis)
    _check(node, {"x": x, "l": lens}, 10)


# --- Gather family ---------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather(axis: int) -> None:
    x = _strings(3, 4)
    idx = np.array([[0, -1], [2, 1]], np.int32)
    _check(helper.make_node("Gather", ["x", "i"], ["y"], axis=axis), {"x": x, "i": idx}, 13, [np.take(x, idx, axis)])


def test_gather_scalar_index_and_errors() -> None:
    node = helper.make_node("Gather", ["x", "i"], ["y"])
    _check(node, {"x": _i64([4, 5, 6]), "i": _i64(-1)}, 13, [np.array(6, np.int64)])
    _fails(node, {"x": _i64([4, 5, 6]), "i": _i64([3])}, 13, "out of range")
    _fails(node, {"x": _i64([4, 5, 6]), "i": _i64([-4])}, 13, "out of range")


def test_gather_elements() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    node = helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1)
    _check(node, {"x": x, "i": _i64([[3, -4], [0, 1]])}, 13, against=_ort)
    _check(node, {"x": x, "i": _i64([[3, 0, 1, 1], [0, 1, 2, 0], [3, 3, 3, 3]])}, 13)
    _fails(node, {"x": x, "i": _i64([[4]])}, 13, "out of range")


@pytest.mark.parametrize("batch_dims,shape", [(0, (2, 3, 1)), (1, (2, 2, 2)), (2, (2, 3, 1))])
def test_gather_nd(batch_dims: int, shape) -> None:
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    last = shape[-1]
    limits = x.shape[batch_dims : batch_dims + last]
    idx = np.stack([RNG.integers(-d, d, shape[:-1]) for d in limits], axis=-1).astype(np.int64)
    if batch_dims == 2:
        idx = RNG.integers(-4, 4, shape).astype(np.int64)
    node = helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=batch_dims)
    if (idx < 0).any():  # the reference does not wrap negatives: compare with positives
        model_feeds = {"x": x, "i": idx}
        positive = np.where(idx < 0, idx + np.array(limits if batch_dims < 2 else [4]), idx)
        want = _reference(_model(node, {"x": x, "i": positive}, 13), {"x": x, "i": positive})
        _check(node, model_feeds, 13, want)
    else:
        _check(node, {"x": x, "i": idx}, 13)


def test_gather_scatter_empty_and_whole_slices() -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    node = helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=1)
    _check(node, {"x": x, "i": np.zeros((2, 5, 0), np.int64)}, 13, [np.broadcast_to(x[:, None], (2, 5, 3, 4))])
    _check(helper.make_node("GatherND", ["x", "i"], ["y"]), {"x": x, "i": np.zeros((0, 2), np.int64)}, 13)
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"])
    _check(node, {"x": x, "i": np.zeros((0, 1), np.int64), "u": np.zeros((0, 3, 4), np.float32)}, 13)
    _check(node, {"x": x, "i": _i64([[1, 2, 3], [0, 0, 0]]), "u": np.array([-1, -2], np.float32)}, 13)
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=1)
    _check(node, {"x": x, "i": np.zeros((0,), np.int64)}, 13)


def test_gather_nd_out_of_range() -> None:
    node = helper.make_node("GatherND", ["x", "i"], ["y"])
    _fails(node, {"x": _floats(2, 2), "i": _i64([[0, 2]])}, 13, "out of range")


# --- Scatter family ------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("axis", [0, -1])
def test_scatter_elements(reduction: str, axis: int) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    idx = _i64([[1, -1, 0], [2, 2, 0]]) if reduction != "none" else _i64([[1, -1, 0], [2, 1, 0]])
    updates = np.array([[10, 20, 30], [-1, 5, 2]], np.float32)
    node = helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=axis, reduction=reduction)
    positive = np.where(idx < 0, idx + x.shape[axis], idx)
    want = _reference(_model(node, {"x": x, "i": positive, "u": updates}, 18), {"x": x, "i": positive, "u": updates})
    _check(node, {"x": x, "i": idx, "u": updates}, 18, want)


def test_scatter_deprecated_and_strings() -> None:
    x = _strings(2, 3)
    node = helper.make_node("Scatter", ["x", "i", "u"], ["y"], axis=1)
    want = x.copy()
    want[0, 2], want[1, 0] = "a", "b"
    _check(node, {"x": x, "i": _i64([[2], [0]]), "u": np.array([["a"], ["b"]], dtype=object)}, 9, [want])
    node = helper.make_node("ScatterElements", ["x", "i", "u"], ["y"])
    _fails(node, {"x": _floats(2), "i": _i64([2]), "u": _floats(1)}, 13, "out of range")


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd(reduction: str) -> None:
    x = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    idx = _i64([[0, 1], [1, 2], [0, 1]]) if reduction != "none" else _i64([[0, 1], [1, 2]])
    updates = np.arange(idx.shape[0] * 4, dtype=np.int32).reshape(-1, 4) - 3
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction=reduction)
    _check(node, {"x": x, "i": idx, "u": updates}, 18)
    negative = idx - _i64([2, 3])
    _check(node, {"x": x, "i": negative, "u": updates}, 18, _reference(_model(node, {"x": x, "i": idx, "u": updates}, 18), {"x": x, "i": idx, "u": updates}))


def test_scatter_nd_out_of_range() -> None:
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"])
    _fails(node, {"x": _floats(2, 2), "i": _i64([[2]]), "u": _floats(1, 2)}, 13, "out of range")


@pytest.mark.parametrize("mode", ["linear", "circular"])
@pytest.mark.parametrize("axis", [-2, 1, 2])
def test_tensor_scatter(mode: str, axis: int) -> None:
    past = _floats(2, 5, 6, 3)
    shape = list(past.shape)
    shape[axis] = 2
    update = _floats(*shape)
    writes = _i64([1, 4]) if mode == "circular" else _i64([0, 3])
    if mode == "linear" and past.shape[axis] < 5:
        writes = _i64([0, 1])
    node = helper.make_node("TensorScatter", ["p", "u", "w"], ["y"], mode=mode, axis=axis)
    _check(node, {"p": past, "u": update, "w": writes}, 24)


def test_tensor_scatter_without_write_indices_and_overrun() -> None:
    node = helper.make_node("TensorScatter", ["p", "u"], ["y"])
    _check(node, {"p": _floats(2, 4, 3), "u": _floats(2, 2, 3)}, 24)
    node = helper.make_node("TensorScatter", ["p", "u", "w"], ["y"])
    _fails(node, {"p": _floats(2, 4, 3), "u": _floats(2, 2, 3), "w": _i64([3, 0])}, 24, "overruns")


# --- Compress, NonZero, TopK, Unique --------------------------------------------------------


@pytest.mark.parametrize("axis", [None, 0, -1])
def test_compress(axis) -> None:
    x = _strings(3, 2)
    cond = np.array([True, False, True]) if axis != -1 else np.array([False])
    kwargs = {} if axis is None else {"axis": axis}
    node = helper.make_node("Compress", ["x", "c"], ["y"], **kwargs)
    _check(node, {"x": x, "c": cond}, 11, [np.compress(cond, x, axis=axis)])


def test_non_zero() -> None:
    node = helper.make_node("NonZero", ["x"], ["y"])
    x = np.array([[0, 1.5], [2, 0]], np.float32)
    _check(node, {"x": x}, 13, against=_ort)
    _check(node, {"x": np.array(3, np.int32)}, 13, against=_ort)
    _check(node, {"x": np.array([False, True])}, 9, against=_ort)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8, ml_dtypes.bfloat16])
@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("axis", [0, -1])
def test_top_k_ties(dtype, largest: int, axis: int) -> None:
    x = np.array([[3, 1, 3, 2], [1, 1, 2, 2], [0, 5, 5, 5]]).astype(dtype)
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=axis, largest=largest)
    values, indices = _check(node, {"x": x, "k": _i64([3 if axis == -1 else 2])}, 24 if dtype is ml_dtypes.bfloat16 else 11)
    assert indices.dtype == np.int64


def test_top_k_old_opsets() -> None:
    x = _floats(3, 5)
    order = np.argsort(-x, axis=1, kind="stable")[:, :2]
    node = helper.make_node("TopK", ["x"], ["v", "i"], k=2)
    _check(node, {"x": x}, 1, [np.take_along_axis(x, order, 1), order])
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"])
    _check(node, {"x": x, "k": _i64([2])}, 10, [np.take_along_axis(x, order, 1), order])
    _fails(node, {"x": x, "k": _i64([6])}, 10, "out of range")


@pytest.mark.parametrize("sorted_", [0, 1])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_unique(sorted_: int, axis) -> None:
    x = np.array([[2, 1, 2, 1], [0, 3, 0, 3], [2, 1, 2, 1]], np.int64)
    kwargs = {"sorted": sorted_} if axis is None else {"sorted": sorted_, "axis": axis}
    node = helper.make_node("Unique", ["x"], ["y", "i", "inv", "c"], **kwargs)
    if sorted_:
        _check(node, {"x": x}, 11)
        return
    # unsorted: uniques in order of first appearance (the reference errs off axis 0)
    flat = x.reshape(-1) if axis is None else np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    keys = [tuple(np.atleast_1d(row).tolist()) for row in flat]
    seen = list(dict.fromkeys(keys))
    first = _i64([keys.index(k) for k in seen])
    inverse = _i64([seen.index(k) for k in keys])
    counts = _i64([keys.count(k) for k in seen])
    values = np.take(x.reshape(-1) if axis is None else x, first, axis=0 if axis is None else axis)
    _check(node, {"x": x}, 11, [values, first, inverse, counts])


def test_unique_strings_and_partial_outputs() -> None:
    x = np.array(["b", "a", "b", "c", "a"], dtype=object)
    node = helper.make_node("Unique", ["x"], ["y", "", "inv"], sorted=0)
    model = _model(node, {"x": x}, 11)
    y, inv = _ronn(model, {"x": x})
    _same(y, np.array(["b", "a", "c"], dtype=object))
    _same(inv, _i64([0, 1, 0, 2, 1]))
    rows = np.array([["x", "y"], ["a", "b"], ["x", "y"]], dtype=object)
    node = helper.make_node("Unique", ["x"], ["y", "i", "inv", "c"], axis=0)
    _check(node, {"x": rows}, 11, [rows[[1, 0]], _i64([1, 0]), _i64([1, 0, 1]), _i64([1, 2])])


# --- Resize, Upsample ---------------------------------------------------------------------

COORDINATES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_crop_and_resize", "half_pixel_symmetric"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


def _resize_inputs(scales=None, sizes=None, roi=None) -> tuple[list[str], dict]:
    names, feeds = ["x", "roi" if roi is not None else "", "", ""], {}
    if roi is not None:
        feeds["roi"] = np.array(roi, np.float32)
    if scales is not None:
        names[2] = "scales"
        feeds["scales"] = np.array(scales, np.float32)
    if sizes is not None:
        names[3] = "sizes"
        feeds["sizes"] = _i64(sizes)
    while names[-1] == "":
        names.pop()
    return names, feeds


@pytest.mark.parametrize("coordinates", COORDINATES)
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("target", [("scales", [1, 1, 1.7, 0.6]), ("sizes", [1, 2, 3, 7]), ("scales", [1, 1, 0.34, 2.5])])
def test_resize_modes(coordinates: str, mode: str, target) -> None:
    kind, value = target
    roi = [0, 0, 0.2, 0.1, 1, 1, 0.9, 1.05] if coordinates == "tf_crop_and_resize" else None
    names, feeds = _resize_inputs(**{kind: value}, roi=roi)
    x = RNG.uniform(-1, 1, (1, 2, 5, 4)).astype(np.float32)
    node = helper.make_node("Resize", names, ["y"], mode=mode, coordinate_transformation_mode=coordinates, extrapolation_value=-3.0)
    _check(node, {"x": x, **feeds}, 19, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("nearest_mode", NEAREST)
@pytest.mark.parametrize("coordinates", ["half_pixel", "asymmetric", "align_corners"])
def test_resize_nearest_modes(nearest_mode: str, coordinates: str) -> None:
    names, feeds = _resize_inputs(scales=[1, 1, 2.5, 0.75])
    x = np.arange(2 * 8, dtype=np.int32).reshape(1, 1, 2, 8)
    node = helper.make_node("Resize", names, ["y"], mode="nearest", nearest_mode=nearest_mode, coordinate_transformation_mode=coordinates)
    _check(node, {"x": x, **feeds}, 13)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales", [[1, 1, 0.4, 0.7], [1, 1, 1.6, 0.3], [1, 1, 2.0, 3.0]])
def test_resize_antialias_and_exclude_outside(mode: str, scales) -> None:
    names, feeds = _resize_inputs(scales=scales)
    x = RNG.uniform(0, 255, (1, 1, 9, 11)).astype(np.float32)
    for extra in ({"antialias": 1}, {"exclude_outside": 1, "cubic_coeff_a": -0.5}):
        node = helper.make_node("Resize", names, ["y"], mode=mode, **extra)
        _check(node, {"x": x, **feeds}, 18, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("axes", [[2, 3], [3, 1], [-1]])
def test_resize_axes_and_policy(policy: str, axes) -> None:
    sizes = [7, 3][: len(axes)]
    names, feeds = _resize_inputs(sizes=sizes)
    x = RNG.uniform(0, 1, (1, 2, 4, 5)).astype(np.float32)
    positive = [a % 4 for a in axes]  # the reference does not normalise negative axes

    def compare(names, feeds, **attrs):
        node = helper.make_node("Resize", names, ["y"], axes=axes, **attrs)
        ref_node = helper.make_node("Resize", names, ["y"], axes=positive, **attrs)
        want = _reference(_model(ref_node, {"x": x, **feeds}, 18), {"x": x, **feeds})
        _check(node, {"x": x, **feeds}, 18, want, rtol=1e-4, atol=1e-5)

    compare(*_resize_inputs(sizes=sizes), mode="linear", keep_aspect_ratio_policy=policy)
    compare(*_resize_inputs(scales=[1.5, 0.5][: len(axes)]), mode="nearest")


def test_resize_integer_and_string_types() -> None:
    names, feeds = _resize_inputs(scales=[1, 1, 1.5, 1.5])
    x = RNG.integers(0, 256, (1, 1, 4, 4)).astype(np.uint8)
    _check(helper.make_node("Resize", names, ["y"], mode="cubic"), {"x": x, **feeds}, 13, atol=1)
    s = _strings(1, 1, 2, 2)
    got = _check(helper.make_node("Resize", names, ["y"], mode="nearest"), {"x": s, **feeds}, 13,
                 [np.repeat(np.repeat(s, [2, 1], axis=2), [2, 1], axis=3)])
    assert got[0].dtype == object


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [[1, 1, 0.6, 1.7], [1, 1, 2, 3]])
def test_resize_opset10_matches_onnxruntime(mode: str, scales) -> None:
    x = np.arange(30, dtype=np.float32).reshape(1, 1, 5, 6)
    node = helper.make_node("Resize", ["x", "s"], ["y"], mode=mode)
    _check(node, {"x": x, "s": np.array(scales, np.float32)}, 10, against=_ort)


def test_resize_opset11_roi_input_is_ignored_outside_crop() -> None:
    x = _floats(1, 1, 3, 4)
    node = helper.make_node("Resize", ["x", "roi", "s"], ["y"], mode="linear")
    feeds = {"x": x, "roi": np.array([], np.float32), "s": np.array([1, 1, 2, 0.5], np.float32)}
    _check(node, feeds, 11, against=_ort, rtol=1e-5)


def test_resize_needs_scales_or_sizes() -> None:
    node = helper.make_node("Resize", ["x", "", "s"], ["y"])
    _fails(node, {"x": _floats(1, 1, 2, 2), "s": np.array([], np.float32)}, 13, "scales and sizes")


@pytest.mark.parametrize("opset", [7, 9])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample(opset: int, mode: str) -> None:
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)
    scales = [1.0, 1.0, 2.0, 1.5]
    if opset == 7:
        node = helper.make_node("Upsample", ["x"], ["y"], mode=mode, scales=scales)
        feeds = {"x": x}
    else:
        node = helper.make_node("Upsample", ["x", "s"], ["y"], mode=mode)
        feeds = {"x": x, "s": np.array(scales, np.float32)}
    _check(node, feeds, opset, against=_ort)


# --- every element type through the layout and indexing kernels ----------------------------

DTYPES = [
    np.bool_, np.int8, np.uint16, np.int32, np.uint64, np.float16, np.float64, np.complex64,
    ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.int4, object,
]

LAYOUT_CASES = [
    ("Reshape", {"s": _i64([4, -1])}, {}),
    ("Transpose", {}, {"perm": [2, 0, 1]}),
    ("Concat", {"b": None}, {"axis": 1}),
    ("Slice", {"s": _i64([1, -1]), "e": _i64([-5, 0]), "a": _i64([2, 1]), "t": _i64([-2, -1])}, {}),
    ("Split", {}, {"axis": 2, "num_outputs": 3}),
    ("Unsqueeze", {"a": _i64([0, -1])}, {}),
    ("Flatten", {}, {"axis": 2}),
    ("Expand", {"s": _i64([2, 1, 1, 1])}, {}),
    ("Tile", {"r": _i64([1, 2, 1])}, {}),
    ("Pad", {"p": _i64([0, 1, -1, 1, 0, 2])}, {"mode": "edge"}),
    ("Pad", {"p": _i64([1, 0, 0, 0, 0, 1])}, {}),
    ("Gather", {"i": _i64([[2, -1]])}, {"axis": 2}),
    ("GatherElements", {"i": np.zeros((1, 3, 4), np.int64) - 1}, {"axis": 1}),
    ("GatherND", {"i": _i64([[0, 2], [0, -3]])}, {}),
    ("ScatterElements", {"i": _i64([[[1, 0, 2, 1]]]), "u": None}, {"axis": 1}),
    ("ScatterND", {"i": _i64([[0, 1, 3]]), "u": None}, {}),
    ("Compress", {"c": np.array([True, False, True])}, {"axis": 1}),
    ("ReverseSequence", {"l": _i64([3, 1])}, {"batch_axis": 0, "time_axis": 1}),
    ("CenterCropPad", {"s": _i64([5, 3])}, {"axes": [1, 2]}),
    ("Trilu", {}, {"upper": 0}),
    ("Identity", {}, {}),
    ("Unique", {}, {"axis": 2}),
    ("Resize", {"": None, "scales": np.array([1, 1.5, 0.5], np.float32)}, {"mode": "nearest"}),
]


def _typed(values: np.ndarray, dtype) -> np.ndarray:
    if dtype is object:
        return values.astype(np.int64).astype(str).astype(object)
    if dtype is np.bool_:
        return (values % 2).astype(bool)
    return values.astype(dtype)


def _numeric(values: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        return np.vectorize(lambda v: float(v) if v != "" else 0.0, otypes=[np.float64])(values) if values.size else values.astype(np.float64)
    return values.astype(np.float64) if values.dtype.kind != "c" else values.real.astype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op,extra,attrs", LAYOUT_CASES, ids=[f"{c[0]}{i}" for i, c in enumerate(LAYOUT_CASES)])
def test_element_types(op: str, extra: dict, attrs: dict, dtype) -> None:
    base = (np.arange(24).reshape(2, 3, 4) * 5) % 7
    if dtype is np.bool_:
        base = base % 2
    feeds, names = {"x": _typed(base, dtype)}, ["x"]
    reference = {"x": _typed(base, np.float64)}
    for name, value in extra.items():
        names.append(name)
        if name == "":
            continue
        if value is None:  # a second data tensor shaped for the op
            shape = {"Concat": (2, 1, 4), "ScatterElements": (1, 1, 4), "ScatterND": (1,)}[op]
            value = np.ones(shape, np.int64) * (1 if dtype is np.bool_ else 6)
            feeds[name], reference[name] = _typed(value, dtype), _typed(value, np.float64)
        else:
            feeds[name] = reference[name] = value
    count = 3 if op == "Split" else 4 if op == "Unique" else 1
    node = helper.make_node(op, names, [f"y{i}" for i in range(count)], **attrs)
    opset = 18 if op in ("Split", "CenterCropPad", "Resize", "Trilu") else 13
    want = _ronn(_model(node, reference, opset), reference)
    got = _ronn(_model(node, feeds, opset), feeds)
    for g, w in zip(got, want):
        if w.dtype == np.float64:
            assert g.dtype == feeds["x"].dtype, (g.dtype, feeds["x"].dtype)
            np.testing.assert_array_equal(_numeric(g), w if dtype is not np.bool_ else w != 0)
        else:
            np.testing.assert_array_equal(g, w)


def test_upsample_opset1_scale_attributes() -> None:
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    node = helper.make_node("Upsample", ["x"], ["y"], height_scale=2.0, width_scale=3.0)
    _check(node, {"x": x}, 1, [np.repeat(np.repeat(x, 2, axis=2), 3, axis=3)])
    node = helper.make_node("Upsample", ["x"], ["y"], height_scale=1.0, width_scale=2.0, mode="bilinear")
    want = np.array([0, 0.5, 1, 1.5, 2, 2], np.float32)
    _check(node, {"x": x}, 1, [np.stack([want, want + 3])[None, None]])
