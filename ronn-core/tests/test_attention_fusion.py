"""``attention_fusion``: scaled dot-product attention into ``ronn::ScaledDotProductAttention``.

The pattern is checked on the exported models (BERT, GPT-2) and on hand-built graphs; outputs
are compared with onnxruntime on the unoptimized model, and the optimized model saved through
``optimized_model_filepath`` runs in onnxruntime (which inlines the function body) and in
onnx's reference evaluator with the same outputs. Patterns that must not fuse stay as they are.
"""

from __future__ import annotations

import math
import os
from collections import Counter

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("ronn_cpu")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import ronn  # noqa: E402

Level = ronn.GraphOptimizationLevel
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OP = "ScaledDotProductAttention"
B, H, S, D = 2, 3, 5, 4


def session(source, level: Level = Level.ORT_ENABLE_ALL, saved: str | None = None, disabled: str = ""):
    options = ronn.SessionOptions()
    options.graph_optimization_level = level
    if saved:
        options.optimized_model_filepath = saved
    if disabled:
        options.add_session_config_entry("optimization.disabled_optimizers", disabled)
    return ronn.InferenceSession(source, options)


def ops(sess) -> Counter:
    return Counter((f"{n.domain}::" if n.domain else "") + n.op_type for n in sess.model.graph.nodes)


def fused_nodes(sess) -> list:
    return [n for n in sess.model.graph.nodes if n.domain == "ronn" and n.op_type == OP]


# --- the exported models --------------------------------------------------------------------

MODELS = {
    "bert_tiny": (os.path.join(ROOT, "tests", "models", "bert_tiny.onnx"), 2, {"mask": True}),
    "gpt2_tiny": (os.path.join(ROOT, "tests", "models", "gpt2_tiny.onnx"), 2, {"mask": True, "condition": True}),
    "minilm_l6": (os.path.join(ROOT, "benchmarks", "models", "minilm_l6.onnx"), 6, {"mask": True}),
    "gpt2_4layer": (
        os.path.join(ROOT, "benchmarks", "models", "gpt2_4layer.onnx"), 4, {"mask": True, "condition": True}
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_exported_attention_fuses(name: str) -> None:
    path, layers, expected = MODELS[name]
    if not os.path.exists(path):
        pytest.skip(f"{path} not built (benchmarks/make_models.py)")
    sess = session(path)
    counts = ops(sess)
    assert counts[f"ronn::{OP}"] == layers and counts["Softmax"] == 0, counts
    for node in fused_nodes(sess):
        assert bool(node.inputs[3:4] and node.inputs[3]) == expected.get("mask", False)
        assert bool(node.inputs[4:5] and node.inputs[4]) == expected.get("condition", False)
        assert node.attributes["scale"] in (pytest.approx(1 / math.sqrt(32)), pytest.approx(1 / 8))
    unfused = session(path, disabled="attention_fusion")
    assert ops(unfused)["Softmax"] == layers


def _token_feeds(sess, seed: int = 0, pad: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in sess.get_inputs():
        shape = [d if isinstance(d, int) else (2 if i == 0 else 7) for i, d in enumerate(value.shape)]
        if "mask" in value.name:
            feeds[value.name] = np.ones(shape, np.int64)
            if pad:
                feeds[value.name][1, -3:] = 0  # padding at the end of the second sequence
        elif "type" in value.name:
            feeds[value.name] = rng.integers(0, 2, size=shape).astype(np.int64)
        else:
            feeds[value.name] = rng.integers(0, 1000, size=shape).astype(np.int64)
    return feeds


@pytest.mark.parametrize("name", ["bert_tiny", "gpt2_tiny"])
@pytest.mark.parametrize("pad", [False, True], ids=["full", "padded"])
def test_exported_models_match_onnxruntime(name: str, pad: bool, tmp_path) -> None:
    path = MODELS[name][0]
    saved = str(tmp_path / "optimized.onnx")
    ours = session(path, saved=saved)
    assert fused_nodes(ours)
    feeds = _token_feeds(ours, pad=pad)
    theirs = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    expected = theirs.run(None, feeds)
    got = ours.run(None, feeds)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    round_trip = onnxruntime.InferenceSession(saved, providers=["CPUExecutionProvider"]).run(None, feeds)
    for e, g in zip(round_trip, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    again = session(saved)
    assert len(fused_nodes(again)) == len(fused_nodes(ours))  # the kernel, not the inlined body


# --- hand-built graphs ----------------------------------------------------------------------


def _info(name: str, shape, elem: int):
    return helper.make_tensor_value_info(name, elem, shape)


def attention_model(kind: str, *, dtype=np.float32, opset: int = 17, mask: bool = True) -> onnx.ModelProto:
    """Q, K, V (B, H, S, D) inputs and an optional additive mask (B, 1, 1, S): attention as
    ``kind`` writes it."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    lowest = np.finfo(dtype).min
    inputs = [_info(name, ["B", H, "S", D], elem) for name in ("q", "k", "v")]
    inits = [numpy_helper.from_array(np.array(math.sqrt(D), dtype), "sqrt_d")]
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2])]
    q, kt = "q", "kt"
    if kind in ("sdpa", "sdpa-before-transpose"):
        inits.append(numpy_helper.from_array(np.array(D**-0.25, dtype), "root_scale"))
        nodes = [helper.make_node("Mul", ["q", "root_scale"], ["qs"])]
        if kind == "sdpa":
            nodes += [helper.make_node("Transpose", ["k"], ["kt0"], perm=[0, 1, 3, 2]),
                      helper.make_node("Mul", ["kt0", "root_scale"], ["kt"])]
        else:
            nodes += [helper.make_node("Mul", ["root_scale", "k"], ["ks"]),
                      helper.make_node("Transpose", ["ks"], ["kt"], perm=[0, 1, 3, 2])]
        q = "qs"
    elif kind == "pre-transposed":
        inputs[1] = _info("k", ["B", H, D, "S"], elem)
        nodes, kt = [], "k"
    nodes.append(helper.make_node("MatMul", [q, kt], ["scores"]))
    last = "scores"
    if kind in ("bert", "gpt2", "masked-fill", "pre-transposed", "opset11", "extra-consumer", "softmax-output",
                "softmax-axis", "opset11-default-axis", "float16"):
        nodes.append(helper.make_node("Div", [last, "sqrt_d"], ["scaled"]))
        last = "scaled"
    elif kind == "mul-scale":
        inits.append(numpy_helper.from_array(np.array(1 / math.sqrt(D), dtype), "inv_sqrt_d"))
        nodes.append(helper.make_node("Mul", ["inv_sqrt_d", last], ["scaled"]))
        last = "scaled"
    elif kind == "input-scale":
        inputs.append(_info("divisor", [], elem))
        nodes.append(helper.make_node("Div", [last, "divisor"], ["scaled"]))
        last = "scaled"
    if kind in ("gpt2", "masked-fill"):
        causal = np.tril(np.ones((1, 1, S, S), bool))
        keep = causal if kind == "gpt2" else ~causal
        inits += [numpy_helper.from_array(keep, "causal"), numpy_helper.from_array(np.array(lowest, dtype), "lowest")]
        operands = [last, "lowest"] if kind == "gpt2" else ["lowest", last]
        nodes.append(helper.make_node("Where", ["causal", *operands], ["kept"]))
        last = "kept"
    if mask:
        inputs.append(_info("mask", ["B", 1, 1, "S"], elem))
        nodes.append(helper.make_node("Add", [last, "mask"], ["biased"]))
        last = "biased"
    axis = {"softmax-axis": 2, "opset11": 3}.get(kind, -1)
    softmax_attrs = {} if kind == "opset11-default-axis" else {"axis": axis}
    nodes.append(helper.make_node("Softmax", [last], ["probs"], **softmax_attrs))
    nodes.append(helper.make_node("MatMul", ["probs", "v"], ["y"]))
    outputs = [_info("y", None, elem)]
    if kind == "extra-consumer":
        outputs.append(_info("scaled", None, elem))
    if kind == "softmax-output":
        outputs.append(_info("probs", None, elem))
    graph = helper.make_graph(nodes, kind, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in inferred.graph.output}
    for out in model.graph.output:
        out.type.CopyFrom(known[out.name].type)
    onnx.checker.check_model(model)
    return model


def attention_feeds(model: onnx.ModelProto, seed: int = 0, masked_row: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape = value.type.tensor_type.shape.dim
        dims = [d.dim_value if d.dim_value else (B if d.dim_param == "B" else S) for d in shape]
        if value.name == "mask":
            mask = np.where(rng.random(dims) < 0.3, -10000.0, 0.0)
            if masked_row:
                mask[1] = -np.inf  # every key of the second batch masked: NaN rows, as Softmax gives
            feeds[value.name] = mask.astype(dtype)
        elif value.name == "divisor":
            feeds[value.name] = np.array(2.0, dtype)
        else:
            feeds[value.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


def tolerances(dtype) -> dict[str, float]:
    if dtype == np.float64:
        return {"rtol": 1e-6, "atol": 1e-8}  # the scale is a float attribute (float32)
    if dtype == np.float16:
        return {"rtol": 1e-2, "atol": 1e-3}
    return {"rtol": 1e-4, "atol": 1e-5}


def check(model: onnx.ModelProto, tmp_path, feeds: dict, *, fused: bool) -> ronn.InferenceSession:
    """ronn optimized vs onnxruntime on the model; the saved optimized model in onnxruntime, in
    onnx's reference evaluator and back in ronn. Returns the optimized session."""
    dtype = next(iter(feeds.values())).dtype
    tol = tolerances(dtype)
    source = model.SerializeToString()
    saved = str(tmp_path / "optimized.onnx")
    ours = session(source, saved=saved)
    assert len(fused_nodes(ours)) == (1 if fused else 0), ops(ours)
    expected = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ours.run(None, feeds)
    plain = session(source, Level.ORT_DISABLE_ALL).run(None, feeds)
    for e, g, p in zip(expected, got, plain):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, **tol, equal_nan=True)
        np.testing.assert_allclose(g, p, **tol, equal_nan=True)
    onnx.checker.check_model(saved)
    runtimes = [onnxruntime.InferenceSession(saved, providers=["CPUExecutionProvider"])]
    if fused:  # the body, step by step (not otherwise: its Softmax ignores opset < 13's flattening)
        runtimes.append(ReferenceEvaluator(saved))
    for runtime in runtimes:
        for e, g in zip(runtime.run(None, feeds), got):
            np.testing.assert_allclose(g, e, **tol, equal_nan=True)
    again = session(saved)
    assert len(fused_nodes(again)) == len(fused_nodes(ours))
    for e, g in zip(again.run(None, feeds), got):
        np.testing.assert_allclose(g, e, **tol, equal_nan=True)
    return ours


FUSED = {
    "bert": {},
    "bert-no-mask": {"kind": "bert", "mask": False},
    "bert-float64": {"kind": "bert", "dtype": np.float64},
    "mul-scale": {},
    "no-scale": {},
    "pre-transposed": {},
    "gpt2": {},
    "gpt2-no-mask": {"kind": "gpt2", "mask": False},
    "gpt2-float64": {"kind": "gpt2", "dtype": np.float64},
    "masked-fill": {},
    "sdpa": {},
    "sdpa-before-transpose": {},
    "opset11": {"opset": 11},
    "gpt2-opset13": {"kind": "gpt2", "opset": 13},
}


@pytest.mark.parametrize("case", list(FUSED))
def test_attention_patterns_fuse(case: str, tmp_path) -> None:
    params = dict(FUSED[case])
    model = attention_model(params.pop("kind", case), **params)
    ours = check(model, tmp_path, attention_feeds(model), fused=True)
    (node,) = fused_nodes(ours)
    left = ops(ours)
    assert left[f"ronn::{OP}"] == 1 and not {"Softmax", "MatMul", "Div", "Where", "Add"} & set(left), left
    scale = 1.0 if case == "no-scale" else 1 / math.sqrt(D)
    assert node.attributes["scale"] == pytest.approx(scale, rel=1e-6)
    if case in ("sdpa", "sdpa-before-transpose"):
        assert node.inputs[0] == "q" and ops(ours)["Mul"] == 0  # both square-root scales went
    if "gpt2" in case or case == "masked-fill":
        assert node.attributes["condition_keeps"] == (0 if case == "masked-fill" else 1)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # onnx's reference Softmax
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fully_masked_rows_are_nan_as_softmax_gives(dtype, tmp_path) -> None:
    model = attention_model("bert", dtype=dtype)
    feeds = attention_feeds(model, masked_row=True)
    ours = check(model, tmp_path, feeds, fused=True)
    y = ours.run(None, feeds)[0]
    assert np.isnan(y[1]).all() and not np.isnan(y[0]).any()


NOT_FUSED = {
    "extra-consumer": "the scaled scores are also a graph output",
    "softmax-output": "the probabilities are also a graph output",
    "softmax-axis": "Softmax over another axis",
    "opset11-default-axis": "opset 11's default axis 1 flattens (B, H, S, S) at H",
    "input-scale": "the scale is an input, not a constant",
    "float16": "float16 is left alone",
}


@pytest.mark.parametrize("case", list(NOT_FUSED))
def test_what_must_not_fuse_stays(case: str, tmp_path) -> None:
    opset = 11 if case == "opset11-default-axis" else 17
    dtype = np.float16 if case == "float16" else np.float32
    model = attention_model(case, opset=opset, dtype=dtype)
    ours = check(model, tmp_path, attention_feeds(model), fused=False)
    assert ops(ours)["Softmax"] == 1, NOT_FUSED[case]


def test_extra_reader_of_the_mask_sum_prevents_the_fusion(tmp_path) -> None:
    """A second reader of an intermediate (not a graph output) keeps the chain as it is."""
    model = attention_model("bert")
    model.graph.node.append(helper.make_node("Relu", ["biased"], ["extra"]))
    model.graph.output.append(_info("extra", ["B", H, "S", "S"], TensorProto.FLOAT))
    onnx.checker.check_model(model)
    check(model, tmp_path, attention_feeds(model), fused=False)


def test_the_pass_can_be_disabled() -> None:
    model = attention_model("gpt2")
    assert fused_nodes(session(model.SerializeToString())) != []
    assert fused_nodes(session(model.SerializeToString(), disabled="attention_fusion")) == []
    assert fused_nodes(session(model.SerializeToString(), Level.ORT_ENABLE_BASIC)) == []


def test_function_body_is_standard_operators() -> None:
    sess = session(attention_model("gpt2").SerializeToString())
    (node,) = fused_nodes(sess)
    body = sess.model.function_for(node)
    assert body is not None and body.overload == node.overload == "float32_where_mask"
    assert [n.op_type for n in body.nodes] == ["Constant", "MatMul", "Mul", "Where", "Add", "Softmax", "MatMul"]
