"""Reductions and ArgMax/ArgMin beyond the node suite: old opsets, empty sets, dtypes."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ronn

REDUCTIONS = [
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSum",
    "ReduceLogSumExp",
]


def _model(node: onnx.NodeProto, inputs: list[tuple[str, int]], opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(name, dtype, None) for name, dtype in inputs],
        [helper.make_tensor_value_info(name, TensorProto.UNDEFINED, None) for name in node.output],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _run(model: onnx.ModelProto, feeds: dict) -> list:
    return ronn.InferenceSession(model.SerializeToString()).run(None, feeds)


def _reference(model: onnx.ModelProto, feeds: dict) -> list:
    return ReferenceEvaluator(model).run(None, feeds)


def _positive(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.5, 2.0, shape).astype(dtype)


ATTRIBUTE_AXES_OPSETS = [
    (op, opset) for op in REDUCTIONS for opset in (1, 11, 13) if not (op == "ReduceSum" and opset == 13)
]


@pytest.mark.parametrize(("op", "opset"), ATTRIBUTE_AXES_OPSETS)
@pytest.mark.parametrize("keepdims", [0, 1])
def test_axes_attribute_opsets(op: str, opset: int, keepdims: int) -> None:
    node = helper.make_node(op, ["x"], ["y"], axes=[0, -1], keepdims=keepdims)
    model = _model(node, [("x", TensorProto.FLOAT)], opset)
    x = _positive((3, 4, 5))
    (got,) = _run(model, {"x": x})
    (want,) = _reference(model, {"x": x})
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("op", REDUCTIONS)
def test_no_axes_reduces_everything_in_old_opsets(op: str) -> None:
    model = _model(helper.make_node(op, ["x"], ["y"], keepdims=0), [("x", TensorProto.FLOAT)], 11)
    x = _positive((2, 3))
    (got,) = _run(model, {"x": x})
    assert isinstance(got, np.ndarray) and got.shape == ()
    np.testing.assert_allclose(got, _reference(model, {"x": x})[0], rtol=1e-5)


@pytest.mark.parametrize("op", REDUCTIONS)
def test_axes_input_and_noop(op: str) -> None:
    opset = 13 if op == "ReduceSum" else 18
    axes = np.array([1], dtype=np.int64)
    x = _positive((2, 3, 4))
    model = _model(helper.make_node(op, ["x", "axes"], ["y"]), [("x", TensorProto.FLOAT), ("axes", TensorProto.INT64)], opset)
    (got,) = _run(model, {"x": x, "axes": axes})
    np.testing.assert_allclose(got, _reference(model, {"x": x, "axes": axes})[0], rtol=1e-5)
    noop = _model(helper.make_node(op, ["x", "axes"], ["y"], noop_with_empty_axes=1), [("x", TensorProto.FLOAT), ("axes", TensorProto.INT64)], opset)
    (same,) = _run(noop, {"x": x, "axes": np.array([], dtype=np.int64)})
    np.testing.assert_array_equal(same, x)
    omitted = _model(helper.make_node(op, ["x"], ["y"], keepdims=0), [("x", TensorProto.FLOAT)], opset)
    (everything,) = _run(omitted, {"x": x})
    assert everything.shape == ()


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("ReduceSum", 0.0),
        ("ReduceProd", 1.0),
        ("ReduceMax", -np.inf),
        ("ReduceMin", np.inf),
        ("ReduceL1", 0.0),
        ("ReduceL2", 0.0),
        ("ReduceSumSquare", 0.0),
        ("ReduceLogSum", -np.inf),
        ("ReduceLogSumExp", -np.inf),
    ],
)
def test_empty_set(op: str, expected: float) -> None:
    opset = 13 if op == "ReduceSum" else 18
    model = _model(helper.make_node(op, ["x", "axes"], ["y"], keepdims=1), [("x", TensorProto.FLOAT), ("axes", TensorProto.INT64)], opset)
    (got,) = _run(model, {"x": np.zeros((2, 0, 4), np.float32), "axes": np.array([1], np.int64)})
    assert got.shape == (2, 1, 4) and got.dtype == np.float32
    assert np.all(got == expected)


def test_empty_set_integer_max_min() -> None:
    for op, expected in (("ReduceMax", np.iinfo(np.int32).min), ("ReduceMin", np.iinfo(np.int32).max)):
        model = _model(helper.make_node(op, ["x", "axes"], ["y"], keepdims=0), [("x", TensorProto.INT32), ("axes", TensorProto.INT64)], 20)
        (got,) = _run(model, {"x": np.zeros((0, 3), np.int32), "axes": np.array([0], np.int64)})
        assert got.dtype == np.int32 and got.shape == (3,) and np.all(got == expected)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float64, np.float16, ml_dtypes.bfloat16])
def test_dtypes_kept(dtype) -> None:
    onnx_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    x = np.arange(1, 13).reshape(3, 4).astype(dtype)
    for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceProd", "ReduceSumSquare"):
        opset = 13 if op == "ReduceSum" else 18
        model = _model(helper.make_node(op, ["x", "axes"], ["y"], keepdims=0), [("x", onnx_type), ("axes", TensorProto.INT64)], opset)
        (got,) = _run(model, {"x": x, "axes": np.array([1], np.int64)})
        assert got.dtype == np.dtype(dtype), op
        want = {
            "ReduceSum": x.astype(np.float64).sum(1),
            "ReduceMean": x.astype(np.float64).mean(1),
            "ReduceMax": x.astype(np.float64).max(1),
            "ReduceProd": x.astype(np.float64).prod(1),
            "ReduceSumSquare": (x.astype(np.float64) ** 2).sum(1),
        }[op]
        if np.dtype(dtype).kind == "i":
            want = want.astype(dtype)
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-2)


def test_log_sum_exp_is_stable() -> None:
    model = _model(helper.make_node("ReduceLogSumExp", ["x"], ["y"], axes=[1], keepdims=0), [("x", TensorProto.FLOAT)], 13)
    x = np.array([[1000.0, 1000.0], [-1000.0, -1000.0]], np.float32)
    (got,) = _run(model, {"x": x})
    np.testing.assert_allclose(got, [1000 + np.log(2), -1000 + np.log(2)], rtol=1e-6)


def test_bool_max_min() -> None:
    x = np.array([[True, False], [False, False]])
    for op, want in (("ReduceMax", [True, False]), ("ReduceMin", [False, False])):
        model = _model(helper.make_node(op, ["x", "axes"], ["y"], keepdims=0), [("x", TensorProto.BOOL), ("axes", TensorProto.INT64)], 20)
        (got,) = _run(model, {"x": x, "axes": np.array([1], np.int64)})
        assert got.dtype == np.bool_
        np.testing.assert_array_equal(got, want)


def test_bad_axis_is_an_error() -> None:
    model = _model(helper.make_node("ReduceSum", ["x"], ["y"], axes=[3]), [("x", TensorProto.FLOAT)], 11)
    with pytest.raises(ronn.RonnError, match="out of range"):
        _run(model, {"x": np.zeros((2, 2), np.float32)})


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("opset", [1, 11, 12, 13])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_arg_reductions(op: str, opset: int, keepdims: int) -> None:
    x = np.array([[3, 1, 3, 1], [2, 2, 0, 0], [5, 5, 5, 5]], np.float32)
    kwargs = {"axis": -1 if opset >= 11 else 1, "keepdims": keepdims}
    if opset >= 12:
        kwargs["select_last_index"] = 1
    model = _model(helper.make_node(op, ["x"], ["y"], **kwargs), [("x", TensorProto.FLOAT)], opset)
    (got,) = _run(model, {"x": x})
    (want,) = _reference(model, {"x": x})
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_arg_max_default_axis_and_scalar() -> None:
    model = _model(helper.make_node("ArgMax", ["x"], ["y"]), [("x", TensorProto.INT32)], 13)
    x = np.array([[1, 9], [7, 2]], np.int32)
    (got,) = _run(model, {"x": x})
    np.testing.assert_array_equal(got, [[1, 0]])
