"""Bad input gets a ronn error that names the problem, never a numpy or protobuf traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

import ronn
from ronn.errors import (
    InputShapeError,
    InputTypeError,
    InvalidGraphError,
    InvalidInputNameError,
    MissingInputError,
    ModelFormatError,
    ModelNotFoundError,
    RonnError,
    UnsupportedModelVersionError,
    UnsupportedOperatorError,
)
from ronn_api.demo import DEMO_MODEL_PATH


def model_bytes(nodes, inputs, outputs, opset: int = 17, extra_opsets=()) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    opsets = [helper.make_opsetid("", opset), *[helper.make_opsetid(d, v) for d, v in extra_opsets]]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelNotFoundError, match=str(path)):
        ronn.InferenceSession(str(path))
    with pytest.raises(FileNotFoundError):  # also catchable as the builtin
        ronn.InferenceSession(path)


def test_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("these are my notes, not a model\n")
    with pytest.raises(ModelFormatError, match=f"{path}: not a valid ONNX model"):
        ronn.InferenceSession(str(path))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty"):
        ronn.InferenceSession(str(empty))


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_a_truncated_model(tmp_path: Path, keep: float) -> None:
    data = Path(DEMO_MODEL_PATH).read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises((ModelFormatError, InvalidGraphError), match=str(path)):
        ronn.InferenceSession(str(path))


def test_operators_nobody_implements_are_reported_together() -> None:
    data = model_bytes(
        [
            helper.make_node("Frobnicate", ["x"], ["a"], domain="com.nobody"),
            helper.make_node("Relu", ["a"], ["b"]),
            helper.make_node("Zap", ["b"], ["y"], domain="com.nobody"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        extra_opsets=[("com.nobody", 3)],
    )
    with pytest.raises(UnsupportedOperatorError) as info:
        ronn.InferenceSession(data)
    assert info.value.operators == [("com.nobody", "Frobnicate", 3), ("com.nobody", "Zap", 3)]


def test_an_opset_newer_than_supported() -> None:
    data = model_bytes(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        opset=999,
    )
    with pytest.raises(UnsupportedModelVersionError, match="opset ai.onnx version 999"):
        ronn.InferenceSession(data)


def test_a_dangling_input_names_the_node() -> None:
    data = model_bytes(
        [helper.make_node("Relu", ["ghost"], ["y"], name="lost")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    with pytest.raises(InvalidGraphError, match=r"node 'lost' \(Relu\) reads 'ghost'"):
        ronn.InferenceSession(data)


@pytest.fixture(scope="module")
def demo() -> ronn.InferenceSession:
    return ronn.InferenceSession(DEMO_MODEL_PATH)


def image(*shape: int, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).random(shape).astype(dtype)


def test_wrong_input_name(demo) -> None:
    with pytest.raises(InvalidInputNameError, match=r"'picture' is not an input of the model; inputs: \['image'\]"):
        demo.run(None, {"picture": image(1, 1, 28, 28)})


def test_missing_input(demo) -> None:
    with pytest.raises(MissingInputError, match=r"\['image'\].*image: tensor\(float\)\['batch', 1, 28, 28\]"):
        demo.run(None, {})


def test_wrong_dtype(demo) -> None:
    with pytest.raises(InputTypeError, match=r"'image' expects tensor\(float\) but got tensor\(double\)"):
        demo.run(None, {"image": image(1, 1, 28, 28, dtype=np.float64)})


def test_wrong_rank(demo) -> None:
    with pytest.raises(InputShapeError, match=r"'image' expects rank 4 \['batch', 1, 28, 28\], got rank 3"):
        demo.run(None, {"image": image(1, 28, 28)})


def test_wrong_static_dimension(demo) -> None:
    with pytest.raises(InputShapeError, match=r"'image' expects shape .* got \[1, 1, 28, 27\] \(dimension 3 must be 28, is 27\)"):
        demo.run(None, {"image": image(1, 1, 28, 27)})


def test_all_errors_are_ronn_errors(demo) -> None:
    for feed in ({"picture": 1}, {}, {"image": "text"}):
        with pytest.raises(RonnError):
            demo.run(None, feed)


def test_inputs_are_left_as_they_were(demo) -> None:
    x = image(3, 1, 28, 28)
    before = x.copy()
    flags = (x.flags.writeable, x.flags.c_contiguous)
    out = demo.run(None, {"image": x})
    np.testing.assert_array_equal(x, before)
    assert (x.flags.writeable, x.flags.c_contiguous) == flags
    assert out[0].shape == (3, 10)
