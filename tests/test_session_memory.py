"""Sessions and optimizer passes never hold two copies of a large weight: a session of an IR
model shares its read-only arrays, weight folds compute in one pass, and a Transpose of a weight
read nowhere else folds once instead of running on every call."""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import ronn
from ronn.optimizer import constant_folding
from ronn.optimizer.folding import fuse_conv_add, fuse_conv_batchnorm
from ronn.registry import OptimizerContext
from ronn_onnx import load_model

RNG = np.random.default_rng(0)
Level = ronn.GraphOptimizationLevel


def model_bytes(nodes, inputs, outputs, initializers) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def onnxruntime_run(data: bytes, feeds: dict) -> list:
    return onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def context() -> OptimizerContext:
    host = ronn.get_plugin_host()
    return OptimizerContext(Level.ORT_ENABLE_ALL, host.kernels(), ("CPUExecutionProvider",), {})


def mlp() -> bytes:
    return model_bytes(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [numpy_helper.from_array(RNG.standard_normal((16, 8)).astype(np.float32), "w"),
         numpy_helper.from_array(RNG.standard_normal(8).astype(np.float32), "b")],
    )


def test_a_session_of_an_ir_model_shares_its_read_only_weights() -> None:
    data = mlp()
    model = load_model(data)
    weights = model.graph.initializers["w"]
    session = ronn.InferenceSession(model)
    shared = [v for v in session.model.graph.initializers.values() if np.shares_memory(v, weights)]
    assert shared and all(v is weights or v.base is weights for v in shared)
    twin = ronn.InferenceSession(model)
    assert twin.model is not session.model and twin.model.graph is not session.model.graph
    x = RNG.standard_normal((2, 16)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], onnxruntime_run(data, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_a_writable_array_of_the_callers_model_is_copied() -> None:
    data = mlp()
    model = load_model(data)
    writable = np.array(model.graph.initializers["b"])  # the caller may change this one later
    model.graph.initializers["b"] = writable
    session = ronn.InferenceSession(model, _disable_all())
    assert session.model.graph.initializers["b"] is not writable
    x = RNG.standard_normal((2, 16)).astype(np.float32)
    before = session.run(None, {"x": x})[0]
    writable += 100.0
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], before)


def _disable_all() -> ronn.SessionOptions:
    options = ronn.SessionOptions()
    options.graph_optimization_level = Level.ORT_DISABLE_ALL
    return options


def transposed_weight_model(tied: bool) -> bytes:
    """``y = x @ W.T`` (and, when ``tied``, also ``e = W[ids]``, as tied embeddings do)."""
    nodes = [
        helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "Wt"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 32])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 64])]
    if tied:
        nodes.append(helper.make_node("Gather", ["W", "ids"], ["e"]))
        inputs.append(helper.make_tensor_value_info("ids", TensorProto.INT64, [2]))
        outputs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 32]))
    weight = RNG.standard_normal((64, 32)).astype(np.float32)
    return model_bytes(nodes, inputs, outputs, [numpy_helper.from_array(weight, "W")])


@pytest.mark.parametrize("tied", [False, True])
def test_a_transposed_weight_over_the_folding_limit(monkeypatch, tied: bool) -> None:
    """Over the size limit, a Transpose folds only when it frees its input: the model never grows."""
    monkeypatch.setattr(constant_folding, "MAX_FOLDED_BYTES", 1024)  # the weight is 8 KB
    data = transposed_weight_model(tied)
    session = ronn.InferenceSession(data)
    ops = [n.op_type for n in session.model.graph.nodes]
    initializers = session.model.graph.initializers
    if tied:
        assert "Transpose" in ops and "W" in initializers
    else:
        assert "Transpose" not in ops and "W" not in initializers
        folded = [v for v in initializers.values() if v.shape == (32, 64)]
        assert len(folded) == 1 and folded[0].flags.c_contiguous  # a copy, not a view keeping W
        assert sum(v.nbytes for v in initializers.values()) == 64 * 32 * 4
    feeds = {"x": RNG.standard_normal((3, 32)).astype(np.float32)}
    if tied:
        feeds["ids"] = np.array([3, 60], np.int64)
    for ours, theirs in zip(session.run(None, feeds), onnxruntime_run(data, feeds)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def conv_model(after: str) -> bytes:
    """Conv (with bias) followed by a per-channel ``after`` (BatchNormalization or Add)."""
    channels = 8
    weights = RNG.standard_normal((channels, 3, 3, 3)).astype(np.float32)
    bias = RNG.standard_normal(channels).astype(np.float32)
    initializers = [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")]
    if after == "BatchNormalization":
        stats = [RNG.standard_normal(channels), RNG.standard_normal(channels),
                 RNG.standard_normal(channels), RNG.uniform(0.5, 2.0, channels)]
        names = ["gamma", "beta", "mean", "var"]
        initializers += [numpy_helper.from_array(s.astype(np.float32), n) for s, n in zip(stats, names)]
        tail = helper.make_node("BatchNormalization", ["c", *names], ["y"], epsilon=1e-3)
    else:
        shift = RNG.standard_normal((1, channels, 1, 1)).astype(np.float32)
        initializers.append(numpy_helper.from_array(shift, "shift"))
        tail = helper.make_node("Add", ["c", "shift"], ["y"])
    return model_bytes(
        [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]), tail],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
        initializers,
    )


def test_a_bias_folded_into_a_conv_keeps_its_weights() -> None:
    model = load_model(conv_model("Add"))
    weights = model.graph.initializers["W"]
    assert fuse_conv_add(model, context())
    (conv,) = model.graph.nodes
    assert model.graph.initializers[conv.inputs[1]] is weights  # not a rounded copy of itself


def test_batchnorm_folds_in_float64_rounded_once() -> None:
    model = load_model(conv_model("BatchNormalization"))
    init = dict(model.graph.initializers)
    assert fuse_conv_batchnorm(model, context())
    (conv,) = model.graph.nodes
    factor = init["gamma"].astype(np.float64) / np.sqrt(init["var"].astype(np.float64) + 1e-3)
    expected = (init["W"].astype(np.float64) * factor.reshape(-1, 1, 1, 1)).astype(np.float32)
    folded = model.graph.initializers[conv.inputs[1]]
    assert folded.dtype == np.float32 and not folded.flags.writeable
    np.testing.assert_array_equal(folded, expected)
    assert "W" not in model.graph.initializers  # the unfolded weights are gone


@pytest.mark.parametrize("after", ["BatchNormalization", "Add"])
def test_folded_convs_run_as_onnxruntime(after: str) -> None:
    data = conv_model(after)
    x = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)
    ours = ronn.InferenceSession(data).run(None, {"x": x})[0]
    np.testing.assert_allclose(ours, onnxruntime_run(data, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_the_caller_s_model_is_left_as_it_was() -> None:
    model = load_model(conv_model("BatchNormalization"))
    nodes = [(n.op_type, list(n.inputs)) for n in model.graph.nodes]
    arrays = dict(model.graph.initializers)
    ronn.InferenceSession(model)
    assert [(n.op_type, list(n.inputs)) for n in model.graph.nodes] == nodes
    assert model.graph.initializers.keys() == arrays.keys()
    assert all(model.graph.initializers[k] is v for k, v in arrays.items())


def test_a_session_holds_its_weights_once(tmp_path) -> None:
    """Loading, optimizing and preparing kernels (MatMul, Gemm with transB, Gather) never keeps a
    second copy of a weight: traced memory after creation stays near the weights' size."""
    embedding = RNG.standard_normal((1024, 256)).astype(np.float32)  # 1 MiB each
    dense = RNG.standard_normal((256, 1024)).astype(np.float32)
    projection = RNG.standard_normal((256, 1024)).astype(np.float32)  # used transposed
    bias = RNG.standard_normal(1024).astype(np.float32)
    data = model_bytes(
        [
            helper.make_node("Gather", ["E", "ids"], ["e"]),
            helper.make_node("MatMul", ["e", "D"], ["h"]),
            helper.make_node("Add", ["h", "bias"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["r"]),
            helper.make_node("Gemm", ["r", "P"], ["y"], transB=1),
        ],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 256])],
        [numpy_helper.from_array(embedding, "E"), numpy_helper.from_array(dense, "D"),
         numpy_helper.from_array(projection, "P"), numpy_helper.from_array(bias, "bias")],
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    feeds = {"ids": np.array([1, 5, 1000, 7], np.int64)}
    ronn.InferenceSession(str(path)).run(None, feeds)  # imports, plugins and kernels warm
    size = embedding.nbytes + dense.nbytes + projection.nbytes + bias.nbytes
    tracemalloc.start()
    try:
        session = ronn.InferenceSession(str(path))
        session.run(None, feeds)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 1.2 * size, f"a session of {size} bytes of weights holds {held} bytes"
    assert peak < 1.3 * size, f"creating a session of {size} bytes of weights peaked at {peak} bytes"
    np.testing.assert_allclose(session.run(None, feeds)[0], onnxruntime_run(data, feeds)[0], rtol=1e-4, atol=1e-4)


def _if_model() -> bytes:
    """A Conv inside both branches of an If: kernels built for subgraphs too."""
    weight = numpy_helper.from_array(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    branches = [
        helper.make_graph([helper.make_node("Conv", ["x", "w"], [f"y{k}"], pads=[1, 1, 1, 1])], f"branch{k}", [],
                          [helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, None)])
        for k in (0, 1)
    ]  # fmt: skip
    return model_bytes(
        [helper.make_node("If", ["flag"], ["y"], then_branch=branches[0], else_branch=branches[1])],
        [helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight],
    )  # fmt: skip


@pytest.mark.parametrize("name", ["if_conv", "resnet_tiny", "gpt2_tiny"])
def test_a_session_is_freed_when_its_last_reference_goes(name: str, tmp_path) -> None:
    """No reference cycle keeps a session, its compiled graphs and its weights alive until the
    next garbage collection: dropping the session frees them at once."""
    import gc
    import os
    import weakref

    if name == "if_conv":
        path = tmp_path / "if_conv.onnx"
        path.write_bytes(_if_model())
        feeds = {"flag": np.array(True), "x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)}
    else:
        path = os.path.join(os.path.dirname(__file__), "models", f"{name}.onnx")
        session = ronn.InferenceSession(path)
        feeds = {}
        for arg in session.get_inputs():
            shape = [d if isinstance(d, int) else 2 for d in arg.shape]
            feeds[arg.name] = (
                RNG.integers(0, 100, shape).astype(np.int64) if "int" in arg.type else RNG.standard_normal(shape).astype(np.float32)
            )
        del session
    gc.collect()
    gc.disable()
    try:
        session = ronn.InferenceSession(str(path))
        session.run(None, feeds)
        if name == "resnet_tiny":  # an intermediate the optimizer fused away: the twin session runs it
            import onnx

            session.run([onnx.load(str(path)).graph.node[1].output[0]], feeds)
        alive = [weakref.ref(session), weakref.ref(session._graph)]
        del session
        assert [ref() is None for ref in alive] == [True, True]
    finally:
        gc.enable()
