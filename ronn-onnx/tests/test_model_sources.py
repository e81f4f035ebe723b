"""safetensors weights and memory-mapped external data, against onnxruntime and the
`safetensors` package itself."""

from __future__ import annotations

import logging
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime
import pytest
import safetensors.numpy
from onnx import TensorProto, helper, numpy_helper

import ronn
from ronn.errors import ModelError
from ronn_onnx import load_model, save_model
from ronn_onnx.safetensors import export_initializers, read_safetensors, write_safetensors

RNG = np.random.default_rng(0)
WEIGHTS = {
    "w1": RNG.standard_normal((8, 16)).astype(np.float32),
    "b1": RNG.standard_normal(16).astype(np.float32),
    "w2": RNG.standard_normal((16, 4)).astype(np.float32),
}


def mlp(with_weights: bool) -> onnx.ModelProto:
    """x @ w1 + b1 -> relu -> @ w2; the weights either initializers or graph inputs."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])]
    inits = []
    if with_weights:
        inits = [numpy_helper.from_array(v, k) for k, v in WEIGHTS.items()]
    else:
        inputs += [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in WEIGHTS.items()]
    graph = helper.make_graph(nodes, "mlp", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


X = RNG.standard_normal((3, 8)).astype(np.float32)


def reference() -> np.ndarray:
    session = onnxruntime.InferenceSession(mlp(False).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": X, **WEIGHTS})[0]


# --- safetensors --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, np.int64, np.int8, np.uint8, np.bool_, ml_dtypes.bfloat16])
def test_our_files_read_in_safetensors_and_back(tmp_path: Path, dtype) -> None:
    arrays = {"a": (RNG.standard_normal((3, 5)) * 10).astype(dtype), "empty": np.zeros((0, 2), dtype), "s": np.asarray(7, dtype)}
    ours = tmp_path / "ours.safetensors"
    write_safetensors(arrays, ours, metadata={"k": "v"})
    if dtype is not ml_dtypes.bfloat16:  # the numpy API of safetensors has no bfloat16
        theirs = safetensors.numpy.load_file(str(ours))
        for name, value in arrays.items():
            np.testing.assert_array_equal(theirs[name], value)
    back = read_safetensors(ours)
    for name, value in arrays.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape
        np.testing.assert_array_equal(back[name], value)
    assert not back["a"].flags.writeable


def test_files_written_by_safetensors_are_memory_mapped(tmp_path: Path) -> None:
    path = tmp_path / "theirs.safetensors"
    safetensors.numpy.save_file(WEIGHTS, str(path))
    arrays = read_safetensors(path)
    assert all(isinstance(a, np.memmap) for a in arrays.values())
    for name, value in WEIGHTS.items():
        np.testing.assert_array_equal(arrays[name], value)


def test_a_graph_without_weights_filled_from_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    safetensors.numpy.save_file(WEIGHTS, str(path))
    session = ronn.InferenceSession(mlp(False).SerializeToString(), weights=path)
    assert [i.name for i in session.get_inputs()] == ["x"]
    np.testing.assert_allclose(session.run(None, {"x": X})[0], reference(), rtol=1e-5, atol=1e-6)


def test_initializers_replaced_from_several_files_and_exported(tmp_path: Path) -> None:
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    safetensors.numpy.save_file({"w1": WEIGHTS["w1"], "b1": WEIGHTS["b1"]}, str(first))
    safetensors.numpy.save_file({"w2": WEIGHTS["w2"]}, str(second))
    zeros = mlp(True)
    for tensor in zeros.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(np.zeros_like(WEIGHTS[tensor.name]), tensor.name))
    session = ronn.InferenceSession(zeros.SerializeToString(), weights=[first, str(second)])
    np.testing.assert_allclose(session.run(None, {"x": X})[0], reference(), rtol=1e-5, atol=1e-6)

    exported = tmp_path / "exported.safetensors"
    assert sorted(export_initializers(session.model, exported)) == sorted(WEIGHTS)
    for name, value in safetensors.numpy.load_file(str(exported)).items():
        np.testing.assert_array_equal(value, WEIGHTS[name])


def test_mismatched_weights_are_clear_errors(tmp_path: Path, caplog) -> None:
    bad_shape = tmp_path / "shape.safetensors"
    safetensors.numpy.save_file({**WEIGHTS, "w1": np.zeros((8, 15), np.float32)}, str(bad_shape))
    with pytest.raises(ModelError, match=r"tensor 'w1' has shape \[8, 15\], the model declares \[8, 16\]"):
        ronn.InferenceSession(mlp(False).SerializeToString(), weights=bad_shape)
    bad_type = tmp_path / "type.safetensors"
    safetensors.numpy.save_file({**WEIGHTS, "b1": WEIGHTS["b1"].astype(np.float64)}, str(bad_type))
    with pytest.raises(ModelError, match=r"tensor 'b1' is float64, the model declares tensor\(float\)"):
        ronn.InferenceSession(mlp(False).SerializeToString(), weights=bad_type)
    extra = tmp_path / "extra.safetensors"
    safetensors.numpy.save_file({**WEIGHTS, "unused.bias": np.zeros(2, np.float32)}, str(extra))
    with caplog.at_level(logging.WARNING, logger="ronn.onnx"):
        ronn.InferenceSession(mlp(False).SerializeToString(), weights=extra)
    assert "match no initializer or input: unused.bias" in caplog.text
    with pytest.raises(ModelError, match="not found"):
        ronn.InferenceSession(mlp(False).SerializeToString(), weights=tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelError, match="not a safetensors file"):
        ronn.InferenceSession(mlp(False).SerializeToString(), weights=junk)


# --- external data ------------------------------------------------------------------------


def test_external_data_is_memory_mapped_and_matches_onnxruntime(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    save_model(load_model(mlp(True).SerializeToString()), str(path), external_data=True, threshold=0)
    data = tmp_path / "model.onnx.data"
    assert data.exists() and data.stat().st_size >= sum(v.nbytes for v in WEIGHTS.values())
    model = load_model(str(path))
    assert all(isinstance(v, np.memmap) for v in model.graph.initializers.values())
    expected = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    np.testing.assert_allclose(ronn.InferenceSession(str(path)).run(None, {"x": X})[0], expected, rtol=1e-6)
    np.testing.assert_allclose(expected, reference(), rtol=1e-5, atol=1e-6)


def test_external_data_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    save_model(load_model(mlp(True).SerializeToString()), str(path), external_data=True, threshold=0)
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "length":
            entry.value = str(int(entry.value) - 4)
    onnx.save(proto, str(path))
    with pytest.raises(ModelError, match="needs .* bytes, its external data has"):
        ronn.InferenceSession(str(path))
