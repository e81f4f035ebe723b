"""ONNX -> IR -> ONNX, external data, version checks, inferred types."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from ronn.dtypes import DataType
from ronn.errors import ModelError, UnsupportedModelVersionError
from ronn.ir import SequenceType, TensorType
from ronn_onnx import load_model, save_model
from ronn_onnx.convert import model_from_proto, model_to_proto


def mlp(opset: int = 17) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
            helper.make_node("Add", ["h", "b"], ["y"], name="add"),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="test")
    model.metadata_props.add(key="author", value="ronn")
    return model


def test_ir_keeps_what_onnx_holds() -> None:
    model = load_model(mlp().SerializeToString())
    assert model.opset_imports == {"": 17}
    assert model.metadata == {"author": "ronn"}
    assert [n.op_type for n in model.graph.nodes] == ["MatMul", "Add"]
    assert model.graph.inputs[0].type == TensorType(DataType.FLOAT, ("batch", 4))
    # shape inference fills the intermediate's type
    assert model.graph.value_info["h"].type == TensorType(DataType.FLOAT, ("batch", 3))
    assert not model.graph.initializers["w"].flags.writeable


def test_round_trip_runs_the_same_in_onnxruntime(tmp_path: Path) -> None:
    original = mlp()
    path = tmp_path / "again.onnx"
    save_model(load_model(original.SerializeToString()), str(path))
    onnx.checker.check_model(str(path))
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    a = onnxruntime.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    b = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(a[0], b[0])


def test_attributes_of_every_kind_survive_a_round_trip() -> None:
    body = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])], "body",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
    )
    node = helper.make_node(
        "Custom", ["x"], ["y"], domain="com.t",
        f=1.5, i=3, s="text", t=numpy_helper.from_array(np.arange(3, dtype=np.int64)),
        floats=[1.0, 2.0], ints=[1, 2], strings=["a", "b"], g=body,
    )
    node.attribute.append(helper.make_attribute("tp", helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, None))))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.t", 1)])
    ir = model_from_proto(proto)
    attrs = ir.graph.nodes[0].attributes
    assert attrs["f"] == 1.5 and attrs["i"] == 3 and attrs["s"] == "text"
    assert attrs["floats"] == [1.0, 2.0] and attrs["ints"] == [1, 2] and attrs["strings"] == ["a", "b"]
    np.testing.assert_array_equal(attrs["t"], [0, 1, 2])
    assert attrs["tp"] == SequenceType(TensorType(DataType.FLOAT, None))
    again = model_from_proto(model_to_proto(ir))
    attrs2 = again.graph.nodes[0].attributes
    assert {k: v for k, v in attrs2.items() if k not in ("t", "g")} == {k: v for k, v in attrs.items() if k not in ("t", "g")}
    assert attrs2["g"].nodes[0].op_type == "Identity"


def test_external_data_loads_from_the_models_folder(tmp_path: Path) -> None:
    model = mlp()
    expected = numpy_helper.to_array(model.graph.initializer[0])
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").exists()
    ir = load_model(str(path))
    np.testing.assert_array_equal(ir.graph.initializers["w"], expected)


def test_missing_external_data_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ext.onnx"
    onnx.save_model(mlp(), str(path), save_as_external_data=True, location="ext.data", size_threshold=0)
    (tmp_path / "ext.data").unlink()
    with pytest.raises(ModelError, match=f"{path}: cannot load external data for tensor 'w': file 'ext.data' not found"):
        load_model(str(path))


@pytest.mark.parametrize("location", ["../outside.data", "/etc/passwd", "sub/../../outside.data"])
def test_external_data_outside_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "outside.data").write_bytes(b"\0" * 48)
    model = mlp()
    tensor = model.graph.initializer[0]
    tensor.ClearField("float_data")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    onnx.save_model(model, str(folder / "m.onnx"))
    with pytest.raises(ModelError, match="outside the model's folder|only relative paths"):
        load_model(str(folder / "m.onnx"))


def test_external_data_through_a_link_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.data").write_bytes(b"\0" * 48)
    (folder / "link.data").symlink_to(tmp_path / "secret.data")
    model = mlp()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="link.data")
    onnx.save_model(model, str(folder / "m.onnx"))
    with pytest.raises(ModelError, match="outside the model's folder"):
        load_model(str(folder / "m.onnx"))


def test_versions_are_checked() -> None:
    model = mlp()
    model.ir_version = onnx.IR_VERSION + 1
    with pytest.raises(UnsupportedModelVersionError, match="IR version"):
        load_model(model.SerializeToString())
    with pytest.raises(UnsupportedModelVersionError, match="opset ai.onnx version 0"):
        load_model(mlp(opset=0).SerializeToString())
