"""The graph optimizer on real models and on each fusion pattern, across ronn-core (passes),
ronn-cpu (fused kernels) and ronn-onnx (saving).

For every model: the outputs with ORT_ENABLE_ALL agree with ORT_DISABLE_ALL, the optimized
model saved through ``optimized_model_filepath`` loads in onnxruntime (which inlines the fused
operators' function bodies) with the same outputs, and ronn reading it back runs its fused
kernels instead.
"""

from __future__ import annotations

import glob
import math
import os
from collections import Counter

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import ronn
from ronn_onnx.testing import data_dir

Level = ronn.GraphOptimizationLevel
HERE = os.path.dirname(__file__)
LIGHT = sorted(glob.glob(os.path.join(data_dir(), "light", "*.onnx")))
EXPORTED = sorted(glob.glob(os.path.join(HERE, "models", "*.onnx")))
RTOL, ATOL = 1e-4, 1e-5


def feeds_for(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs: symbolic dimensions are batch 2 (the first) or sequence 7; token ids
    below 1000, masks of ones, token types 0 or 1."""
    rng = np.random.default_rng(seed)
    init = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in init:
            continue
        t = value.type.tensor_type
        dims = [d.dim_value if d.dim_value else (2 if i == 0 else 7) for i, d in enumerate(t.shape.dim)]
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        if np.issubdtype(dtype, np.integer):
            if "mask" in value.name:
                feeds[value.name] = np.ones(dims, dtype)
            else:
                high = 2 if "type" in value.name else 1000
                feeds[value.name] = rng.integers(0, high, size=dims).astype(dtype)
        else:
            feeds[value.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


def session(source, level: Level = Level.ORT_ENABLE_ALL, saved: str | None = None) -> ronn.InferenceSession:
    options = ronn.SessionOptions()
    options.graph_optimization_level = level
    if saved:
        options.optimized_model_filepath = saved
    return ronn.InferenceSession(source, options)


def assert_outputs_close(expected, actual, names, rtol=RTOL, atol=ATOL, what="") -> None:
    assert len(expected) == len(actual)
    for name, e, a in zip(names, expected, actual):
        e, a = np.asarray(e), np.asarray(a)
        assert e.dtype == a.dtype and e.shape == a.shape, f"{what} {name}: {a.dtype}{a.shape} != {e.dtype}{e.shape}"
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"{what} {name}")


def fused_ops(model) -> Counter:
    return Counter(n.op_type for _, n in model.graph.walk() if n.domain == "ronn")


def check_round_trip(source, tmp_path, feeds, rtol=RTOL, atol=ATOL, reference=None) -> ronn.InferenceSession:
    """ENABLE_ALL vs DISABLE_ALL (or ``reference`` outputs), then the saved file in onnxruntime
    and back in ronn. Returns the optimized session."""
    saved = str(tmp_path / "optimized.onnx")
    plain = session(source, Level.ORT_DISABLE_ALL)
    optimized = session(source, saved=saved)
    names = [o.name for o in plain.get_outputs()]
    assert [o.name for o in optimized.get_outputs()] == names
    expected = plain.run(None, feeds) if reference is None else reference
    got = optimized.run(None, feeds)
    assert_outputs_close(expected, got, names, rtol, atol, "ENABLE_ALL vs DISABLE_ALL:")

    onnx.checker.check_model(saved)
    theirs = onnxruntime.InferenceSession(saved, providers=["CPUExecutionProvider"])
    assert [o.name for o in theirs.get_outputs()] == names
    assert_outputs_close(got, theirs.run(None, feeds), names, rtol, atol, "onnxruntime on the saved model:")

    again = session(saved)
    assert fused_ops(again.model) == fused_ops(optimized.model)  # the fused kernels, not the bodies
    assert_outputs_close(got, again.run(None, feeds), names, 1e-5, 1e-6, "ronn on the saved model:")
    return optimized


# --- real models ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", LIGHT + EXPORTED, ids=[os.path.basename(p)[:-5] for p in LIGHT + EXPORTED])
def test_real_model_optimizes_and_round_trips(path: str, tmp_path) -> None:
    model = onnx.load(path)
    feeds = feeds_for(model)
    optimized = check_round_trip(path, tmp_path, feeds)
    assert len(optimized.model.graph.nodes) < len(model.graph.node)


def test_exported_models_fuse_what_they_should() -> None:
    counts = {os.path.basename(p)[:-5]: Counter(n.op_type for n in session(p).model.graph.nodes) for p in EXPORTED}
    assert counts["resnet_tiny"]["BatchNormalization"] == 0 and counts["resnet_tiny"]["FusedConv"] == 16
    assert counts["mobilenetv3_tiny"]["HardSwish"] == 0 and counts["mobilenetv3_tiny"]["HardSigmoid"] == 0
    assert counts["bert_tiny"]["Erf"] == 0 and counts["bert_tiny"]["Identity"] == 0
    assert counts["gpt2_tiny"]["Tanh"] == 0 and counts["gpt2_tiny"]["Constant"] == 0
    assert counts["gpt2_tiny"]["Gemm"] == 0  # the Reshape-Gemm-Reshape linears are MatMuls


# --- one pattern at a time ------------------------------------------------------------------

RNG = np.random.default_rng(7)


def _init(name: str, value, dtype=np.float32) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _model(nodes, inputs, outputs, inits, opset: int) -> onnx.ModelProto:
    """A checked model; outputs declared without a shape get the one onnx infers."""
    graph = helper.make_graph(nodes, "pattern", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in model.graph.output:
        if not out.type.tensor_type.HasField("shape") and out.name in known:
            out.type.CopyFrom(known[out.name].type)
    onnx.checker.check_model(model)
    return model


def _float(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def conv_pattern(activation: str, opset: int, *, residual: str | None = None, bias: bool = True,
                 batchnorm: bool = True, dtype=np.float32) -> onnx.ModelProto:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    c = 4
    inits = [_init("W", RNG.standard_normal((c, 3, 3, 3)) * 0.3, dtype)]
    conv_in = ["x", "W"]
    if bias:
        inits.append(_init("B", RNG.standard_normal(c), dtype))
        conv_in.append("B")
    nodes = [helper.make_node("Conv", conv_in, ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    last = "c"
    if batchnorm:
        inits += [
            _init("scale", RNG.uniform(0.5, 1.5, c), dtype), _init("shift", RNG.standard_normal(c), dtype),
            _init("mean", RNG.standard_normal(c), dtype), _init("var", RNG.uniform(0.5, 1.5, c), dtype),
        ]
        nodes.append(helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"], epsilon=1e-3))
        last = "n"
    inputs = [_float("x", ["N", 3, 6, 6], elem)]
    if residual == "same":
        inputs.append(_float("z", ["N", c, 6, 6], elem))
    elif residual == "broadcast":
        inputs.append(_float("z", [1, c, 1, 1], elem))
    if residual:
        nodes.append(helper.make_node("Add", [last, "z"], ["r"]))
        last = "r"
    if activation == "Clip":
        if opset < 11:
            nodes.append(helper.make_node("Clip", [last], ["y"], min=0.0, max=6.0))
        else:
            inits += [_init("lo", 0.0, dtype), _init("hi", 6.0, dtype)]
            nodes.append(helper.make_node("Clip", [last, "lo", "hi"], ["y"]))
    elif activation == "ClipMin":
        inits.append(_init("lo", -0.5, dtype))
        nodes.append(helper.make_node("Clip", [last, "lo"], ["y"]))
    elif activation == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", [last], ["y"], alpha=0.2))
    elif activation == "HardSigmoid":
        nodes.append(helper.make_node("HardSigmoid", [last], ["y"], alpha=0.3, beta=0.4))
    elif activation:
        nodes.append(helper.make_node(activation, [last], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    return _model(nodes, inputs, [_float("y", None, elem)], inits, opset)


CONV_CASES = {
    "relu-opset9": (conv_pattern("Relu", 9), "FusedConv"),
    "clip-attributes-opset9": (conv_pattern("Clip", 9), "FusedConv"),
    "clip-inputs-opset13": (conv_pattern("Clip", 13), "FusedConv"),
    "clip-min-only": (conv_pattern("ClipMin", 13), "FusedConv"),
    "leaky-relu": (conv_pattern("LeakyRelu", 17), "FusedConv"),
    "hard-sigmoid": (conv_pattern("HardSigmoid", 17), "FusedConv"),
    "hard-swish": (conv_pattern("HardSwish", 17), "FusedConv"),
    "sigmoid": (conv_pattern("Sigmoid", 17), "FusedConv"),
    "tanh": (conv_pattern("Tanh", 17), "FusedConv"),
    "residual-relu": (conv_pattern("Relu", 17, residual="same"), "FusedConv"),
    "residual-no-bias": (conv_pattern("Relu", 17, residual="same", bias=False, batchnorm=False), "FusedConv"),
    "residual-only": (conv_pattern(None, 17, residual="same"), "FusedConv"),
    "broadcast-residual": (conv_pattern("Relu", 17, residual="broadcast"), "FusedConv"),
    "float16": (conv_pattern("Relu", 17, dtype=np.float16), "FusedConv"),
    "batchnorm-only": (conv_pattern(None, 17), None),
}


@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv_patterns(name: str, tmp_path) -> None:
    model, fused = CONV_CASES[name]
    feeds = feeds_for(model, seed=1)
    reference = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    rtol, atol = (1e-2, 1e-2) if "float16" in name else (RTOL, ATOL)
    optimized = check_round_trip(model.SerializeToString(), tmp_path, feeds, rtol, atol, reference)
    ops = Counter(n.op_type for n in optimized.model.graph.nodes)
    assert ops["BatchNormalization"] == 0
    if fused:
        assert ops == Counter({fused: 1}), ops
    else:
        assert ops == Counter({"Conv": 1}), ops


def batchnorm_pattern(activation: str, *, reader: bool = False, dtype=np.float32) -> onnx.ModelProto:
    """A pre-activation block (DenseNet): ``activation(BatchNormalization(x))`` then a Conv
    (float32; onnxruntime has no float64 Conv); with ``reader`` the normalized value is also a
    graph output (nothing may fuse)."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    c = 5
    inits = [
        _init("scale", RNG.uniform(0.5, 1.5, c), dtype), _init("shift", RNG.standard_normal(c), dtype),
        _init("mean", RNG.standard_normal(c), dtype), _init("var", RNG.uniform(0.5, 1.5, c), dtype),
        _init("W", RNG.standard_normal((3, c, 1, 1)) * 0.3, dtype),
    ]
    nodes = [helper.make_node("BatchNormalization", ["x", "scale", "shift", "mean", "var"], ["n"], epsilon=1e-3)]
    if activation == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", ["n"], ["a"], alpha=0.2))
    elif activation == "Clip":
        inits += [_init("lo", 0.0, dtype), _init("hi", 6.0, dtype)]
        nodes.append(helper.make_node("Clip", ["n", "lo", "hi"], ["a"]))
    else:
        nodes.append(helper.make_node(activation, ["n"], ["a"]))
    nodes.append(helper.make_node("Conv" if dtype == np.float32 else "Neg", ["a", "W"][: 2 if dtype == np.float32 else 1], ["y"]))
    outputs = [_float("y", None, elem)] + ([_float("n", None, elem)] if reader else [])
    return _model(nodes, [_float("x", ["N", c, 4, 6], elem)], outputs, inits, 17)


BATCHNORM_CASES = {
    "relu": (batchnorm_pattern("Relu"), True),
    "leaky-relu": (batchnorm_pattern("LeakyRelu"), True),
    "clip": (batchnorm_pattern("Clip"), True),
    "sigmoid-float64": (batchnorm_pattern("Sigmoid", dtype=np.float64), True),
    "normalized-value-read-elsewhere": (batchnorm_pattern("Relu", reader=True), False),
}


@pytest.mark.parametrize("name", list(BATCHNORM_CASES))
def test_batchnorm_activation_patterns(name: str, tmp_path) -> None:
    model, fuses = BATCHNORM_CASES[name]
    feeds = feeds_for(model, seed=3)
    reference = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    optimized = check_round_trip(model.SerializeToString(), tmp_path, feeds, reference=reference)
    ops = Counter(n.op_type for n in optimized.model.graph.nodes)
    assert (ops["FusedBatchNormalization"] == 1) is fuses, ops
    assert (ops["BatchNormalization"] == 0) is fuses, ops


def gemm_pattern(kind: str) -> onnx.ModelProto:
    w = _init("W", RNG.standard_normal((5, 3)))
    b = _init("b", RNG.standard_normal(3))
    if kind == "gemm-no-c":
        nodes = [helper.make_node("Gemm", ["x", "W"], ["g"], alpha=0.5), helper.make_node("Relu", ["g"], ["y"])]
        return _model(nodes, [_float("x", ["N", 5])], [_float("y", None)], [w], 13)
    if kind == "gemm-transposed":
        wt = _init("W", RNG.standard_normal((3, 5)))
        nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["g"], transB=1), helper.make_node("Tanh", ["g"], ["y"])]
        return _model(nodes, [_float("x", ["N", 5])], [_float("y", None)], [wt, b], 13)
    if kind == "matmul-add-2d":
        nodes = [
            helper.make_node("MatMul", ["x", "W"], ["p"]),
            helper.make_node("Add", ["p", "b"], ["s"]),
            helper.make_node("Sigmoid", ["s"], ["y"]),
        ]
        return _model(nodes, [_float("x", ["N", 5])], [_float("y", None)], [w, b], 13)
    # matmul-add-3d
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["p"]),
        helper.make_node("Add", ["b", "p"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    return _model(nodes, [_float("x", ["N", "S", 5])], [_float("y", None)], [w, b], 13)


GEMM_CASES = {
    "gemm-no-c": "FusedGemm",
    "gemm-transposed": "FusedGemm",
    "matmul-add-2d": "FusedGemm",
    "matmul-add-3d": "FusedMatMul",
}


@pytest.mark.parametrize("kind", list(GEMM_CASES))
def test_gemm_and_matmul_patterns(kind: str, tmp_path) -> None:
    model = gemm_pattern(kind)
    feeds = feeds_for(model, seed=2)
    reference = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    optimized = check_round_trip(model.SerializeToString(), tmp_path, feeds, reference=reference)
    assert [n.op_type for n in optimized.model.graph.nodes] == [GEMM_CASES[kind]]


def layer_norm_pattern(opset: int, *, square: str = "Pow") -> onnx.ModelProto:
    if opset >= 18:
        axes_inits = [_init("axes", [-1], np.int64)]
        reduce = lambda src, dst: helper.make_node("ReduceMean", [src, "axes"], [dst])  # noqa: E731
    else:
        axes_inits = []
        reduce = lambda src, dst: helper.make_node("ReduceMean", [src], [dst], axes=[-1])  # noqa: E731
    nodes = [
        reduce("x", "mean"),
        helper.make_node("Sub", ["x", "mean"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["d2"]) if square == "Pow" else helper.make_node("Mul", ["d", "d"], ["d2"]),
        reduce("d2", "var"),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["std"]),
        helper.make_node("Div", ["d", "std"], ["n"]),
        helper.make_node("Mul", ["n", "gamma"], ["g"]),
        helper.make_node("Add", ["g", "beta"], ["y"]),
    ]
    inits = axes_inits + [
        _init("two", 2.0), _init("eps", 1e-5),
        _init("gamma", RNG.standard_normal(16)), _init("beta", RNG.standard_normal(16)),
    ]
    return _model(nodes, [_float("x", ["N", "S", 16])], [_float("y", None)], inits, opset)


def gelu_pattern(opset: int, form: str) -> onnx.ModelProto:
    if form == "erf":
        nodes = [
            helper.make_node("Mul", ["x", "inv_sqrt2"], ["t"]),
            helper.make_node("Erf", ["t"], ["e"]),
            helper.make_node("Add", ["one", "e"], ["a"]),
            helper.make_node("Mul", ["a", "half"], ["h"]),
            helper.make_node("Mul", ["x", "h"], ["y"]),
        ]
    else:
        nodes = [
            helper.make_node("Mul", ["x", "half"], ["hx"]),
            helper.make_node("Mul", ["x", "x"], ["x2"]),
            helper.make_node("Mul", ["x", "x2"], ["x3"]),
            helper.make_node("Mul", ["c", "x3"], ["cx3"]),
            helper.make_node("Add", ["x", "cx3"], ["inner"]),
            helper.make_node("Mul", ["k", "inner"], ["scaled"]),
            helper.make_node("Tanh", ["scaled"], ["t"]),
            helper.make_node("Add", ["t", "one"], ["a"]),
            helper.make_node("Mul", ["hx", "a"], ["y"]),
        ]
    inits = [
        _init("inv_sqrt2", 1 / math.sqrt(2)), _init("one", 1.0), _init("half", 0.5),
        _init("c", 0.044715), _init("k", math.sqrt(2 / math.pi)),
    ]
    inits = [i for i in inits if any(i.name in n.input for n in nodes)]
    return _model(nodes, [_float("x", ["N", 9])], [_float("y", None)], inits, opset)


NORM_CASES = {
    "layer-norm-opset13": (layer_norm_pattern(13), "LayerNormalization", "ronn"),
    "layer-norm-opset17": (layer_norm_pattern(17, square="Mul"), "LayerNormalization", ""),
    "layer-norm-opset18": (layer_norm_pattern(18), "LayerNormalization", ""),
    "gelu-erf-opset13": (gelu_pattern(13, "erf"), "Gelu", "ronn"),
    "gelu-tanh-opset13": (gelu_pattern(13, "tanh"), "Gelu", "ronn"),
    "gelu-erf-opset20": (gelu_pattern(20, "erf"), "Gelu", ""),
    "gelu-tanh-opset20": (gelu_pattern(20, "tanh"), "Gelu", ""),
}


@pytest.mark.parametrize("name", list(NORM_CASES))
def test_layer_norm_and_gelu_patterns(name: str, tmp_path) -> None:
    model, op, domain = NORM_CASES[name]
    feeds = feeds_for(model, seed=3)
    reference = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    optimized = check_round_trip(model.SerializeToString(), tmp_path, feeds, reference=reference)
    assert [(n.domain, n.op_type) for n in optimized.model.graph.nodes] == [(domain, op)]


def test_shape_arithmetic_and_layout_chains(tmp_path) -> None:
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape with dynamic axes, Transpose pairs,
    Squeeze/Unsqueeze, Identity as a graph output and inference Dropout."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Unsqueeze", ["seq", "axes0"], ["seq1"]),
        helper.make_node("Concat", ["batch1", "seq1", "heads", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["split"]),
        helper.make_node("Transpose", ["split"], ["t1"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 2, 1, 3]),
        helper.make_node("Unsqueeze", ["t2", "axes0"], ["u"]),
        helper.make_node("Squeeze", ["u", "axes0"], ["s"]),
        helper.make_node("Dropout", ["s"], ["d"]),
        helper.make_node("Relu", ["d"], ["r"]),
        helper.make_node("Identity", ["r"], ["y"]),
    ]
    inits = [
        _init("zero", 0, np.int64), _init("one", 1, np.int64), _init("axes0", [0], np.int64),
        _init("heads", [2], np.int64), _init("minus_one", [-1], np.int64),
    ]
    model = _model(nodes, [_float("x", ["B", "S", 8])], [_float("y", ["B", "S", 2, 4])], inits, 13)
    feeds = feeds_for(model, seed=4)
    reference = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    optimized = check_round_trip(model.SerializeToString(), tmp_path, feeds, reference=reference)
    graph = optimized.model.graph
    assert [n.op_type for n in graph.nodes] == ["Reshape", "Relu"]
    assert graph.initializers[graph.nodes[0].inputs[1]].tolist() == [0, 0, 2, -1]
    assert graph.nodes[-1].outputs == ["y"]


def test_constant_subgraphs_fold_in_loop_bodies(tmp_path) -> None:
    body = helper.make_graph(
        [
            helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2.0, np.float32))),
            helper.make_node("Mul", ["two", "two"], ["four"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Mul", ["acc_in", "four"], ["acc_out"]),
        ],
        "body",
        [_float("i", [], TensorProto.INT64), _float("cond_in", [], TensorProto.BOOL), _float("acc_in", [3])],
        [_float("cond_out", [], TensorProto.BOOL), _float("acc_out", [3])],
    )
    nodes = [helper.make_node("Loop", ["trips", "", "x"], ["y"], body=body)]
    model = _model(nodes, [_float("x", [3])], [_float("y", [3])], [_init("trips", 3, np.int64)], 13)
    feeds = {"x": np.array([1.0, -2.0, 0.5], np.float32)}
    optimized = check_round_trip(model.SerializeToString(), tmp_path, feeds)
    loop = optimized.model.graph.nodes[0]
    assert [n.op_type for n in loop.attributes["body"].nodes] == ["Identity", "Mul"]
    np.testing.assert_allclose(optimized.run(None, feeds)[0], feeds["x"] * 64)
