"""Large tensors are read once, straight into their arrays (ronn_onnx._wire): the IR is the same
as protobuf's parse gives, from a path, bytes or a ModelProto, and loading holds no second copy."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ronn.errors import ModelFormatError
from ronn_onnx import load_model
from ronn_onnx._wire import detach_tensors
from ronn_onnx.convert import model_from_proto
from ronn_onnx.loader import _dim_params, _forget_invented_dims, read_detached

RNG = np.random.default_rng(0)


def tensor(name: str, array: np.ndarray, onnx_type: int | None = None) -> TensorProto:
    """A TensorProto holding ``array``'s bytes as raw_data (any element type numpy can hold)."""
    if onnx_type is None:
        return numpy_helper.from_array(array, name)
    return helper.make_tensor(name, onnx_type, array.shape, array.tobytes(), raw=True)


def every_kind_of_tensor() -> onnx.ModelProto:
    """Initializers of many element types and sizes, a large Constant, and a large tensor in a
    subgraph: everything ``detach_tensors`` may take out, and things it must leave."""
    big = {
        "f32": RNG.standard_normal((64, 48)).astype(np.float32),
        "f16": RNG.standard_normal((40, 30)).astype(np.float16),
        "f64": RNG.standard_normal((9, 17)),
        "i64_big": RNG.integers(-9, 9, 9000).astype(np.int64),
        "i64_small": np.array([1, -1, 0, 5], np.int64),
        "i32_mid": RNG.integers(0, 9, 1000).astype(np.int32),  # under the integer threshold
        "u8": RNG.integers(0, 255, 70000).astype(np.uint8),
        "flag": RNG.integers(0, 2, 70000).astype(bool),
        "scalar": np.array(3.5, np.float32),
    }
    initializers = [tensor(name, value) for name, value in big.items()]
    bf16 = RNG.standard_normal((33, 31)).astype(ml_dtypes.bfloat16)
    initializers.append(tensor("bf16", bf16, TensorProto.BFLOAT16))
    big_constant = RNG.standard_normal((16, 48)).astype(np.float32)
    then_value = RNG.standard_normal((64, 48)).astype(np.float32)
    then_branch = helper.make_graph(
        [helper.make_node("Constant", [], ["t"], value=numpy_helper.from_array(then_value, "tv"))],
        "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [64, 48])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["f32"], ["e"])],
        "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [64, 48])],
    )
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(big_constant, "cv")),
        helper.make_node("MatMul", ["c", "w"], ["m"]),
        helper.make_node("If", ["cond"], ["branch"], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Reshape", ["branch", "i64_small"], ["r"], allowzero=0),
    ]
    inputs = [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])]
    initializers.append(tensor("w", RNG.standard_normal((48, 8)).astype(np.float32)))
    graph = helper.make_graph(
        nodes, "kinds", inputs,
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, None)],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def reference(proto: onnx.ModelProto):
    """The IR as the plain protobuf path gives it: onnx's inference on the whole model."""
    inferred = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)
    model = model_from_proto(inferred)
    _forget_invented_dims(model.graph, _dim_params(proto.graph))
    return model


def assert_same_arrays(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name
        assert not a[name].flags.writeable, name


def sources(proto: onnx.ModelProto, tmp_path: Path) -> dict:
    path = tmp_path / "m.onnx"
    path.write_bytes(proto.SerializeToString())
    return {"path": str(path), "bytes": proto.SerializeToString(), "proto": proto,
            "bytearray": bytearray(proto.SerializeToString())}


@pytest.mark.parametrize("kind", ["path", "bytes", "proto", "bytearray"])
def test_detached_tensors_load_as_protobuf_gives_them(tmp_path: Path, kind: str) -> None:
    proto = every_kind_of_tensor()
    _, count = detach_tensors(memoryview(proto.SerializeToString()))
    # f32, f16, f64, i64_big, u8, flag, bf16, w, the Constant and the subgraph's Constant
    assert count == 10
    expected = reference(proto)
    model = load_model(sources(proto, tmp_path)[kind])
    assert_same_arrays(model.graph.initializers, expected.graph.initializers)
    constant, matmul, branch, _ = model.graph.nodes
    np.testing.assert_array_equal(constant.attributes["value"], expected.graph.nodes[0].attributes["value"])
    then_value = branch.attributes["then_branch"].nodes[0].attributes["value"]
    np.testing.assert_array_equal(then_value, expected.graph.nodes[2].attributes["then_branch"].nodes[0].attributes["value"])
    # shape inference saw the same model: the same inferred types everywhere
    assert {k: v.type for k, v in model.graph.value_info.items()} == {
        k: v.type for k, v in expected.graph.value_info.items()
    }
    assert [v.type for v in model.graph.outputs] == [v.type for v in expected.graph.outputs]


def test_small_integer_constants_stay_in_the_message_for_shape_inference() -> None:
    """Shapes computed from constants (here Reshape's target) are still inferred."""
    proto = every_kind_of_tensor()
    stripped, _ = detach_tensors(memoryview(proto.SerializeToString()))
    parsed = onnx.ModelProto()
    parsed.ParseFromString(stripped)
    kept = {t.name for t in parsed.graph.initializer if t.raw_data}
    assert kept == {"i64_small", "i32_mid", "scalar"}
    detached = [t for t in parsed.graph.initializer if not t.raw_data]
    assert all(t.data_location == TensorProto.EXTERNAL for t in detached)


def test_the_big_weights_are_read_into_arrays_of_their_own(tmp_path: Path) -> None:
    weight = RNG.standard_normal((256, 512)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    path = tmp_path / "m.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    loaded = load_model(str(path)).graph.initializers["w"]
    np.testing.assert_array_equal(loaded, weight)
    assert loaded.base is None and loaded.flags.aligned and loaded.flags.c_contiguous  # not a view of the file


def test_loading_holds_one_copy_of_the_weights(tmp_path: Path) -> None:
    """Peak traced memory while loading stays near the weights' size: no file-sized buffer,
    no protobuf-owned copy turned into a second array."""
    weights = [RNG.standard_normal((512, 512)).astype(np.float32) for _ in range(4)]  # 4 MB
    size = sum(w.nbytes for w in weights)
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", f"w{i}"], [f"h{i + 1}"]) for i in range(4)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("h4", TensorProto.FLOAT, [1, 512])],
        initializer=[numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)],
    )
    path = tmp_path / "m.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    load_model(str(path))  # imports and caches warm
    tracemalloc.start()
    try:
        model = load_model(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.25 * size, f"loading {size} bytes of weights peaked at {peak} bytes"
    for i, w in enumerate(weights):
        np.testing.assert_array_equal(model.graph.initializers[f"w{i}"], w)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_a_model_cut_inside_its_weights_is_a_format_error(tmp_path: Path, keep: float) -> None:
    proto = every_kind_of_tensor()
    data = proto.SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFormatError, match=str(path)):
        load_model(str(path))
    with pytest.raises(ModelFormatError):
        load_model(data[: int(len(data) * keep)])


def test_a_tensor_whose_bytes_do_not_match_its_shape_is_left_to_onnx() -> None:
    proto = every_kind_of_tensor()
    bad = proto.graph.initializer[0]
    bad.dims[0] = 65  # one row more than its raw_data holds
    _, count = detach_tensors(memoryview(proto.SerializeToString()))
    assert count == 9  # the malformed tensor stays in the message
    with pytest.raises(ModelFormatError, match="cannot read the model"):
        load_model(proto.SerializeToString())


def test_read_detached_reports_nothing_to_read_for_small_models() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    data = helper.make_model(graph).SerializeToString()
    proto, _, _, tensor_bytes = read_detached(data)
    assert tensor_bytes is None
    assert proto.SerializeToString() == data
