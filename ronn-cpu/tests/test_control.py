"""If/Loop/Scan, sequences, optionals, strings and Gradient beyond the node suite.

The models use only operators of these families plus Add, so the tests do not depend on
other kernel families.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ronn

F = TensorProto.FLOAT
I64 = TensorProto.INT64
BOOL = TensorProto.BOOL
STR = TensorProto.STRING


def _vi(name: str, elem: int = F, shape=None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _seq_vi(name: str, elem: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_sequence_value_info(name, elem, None)


def _model(nodes, inputs, outputs, opset: int = 21, initializers=(), extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    return helper.make_model(graph, opset_imports=opsets)


def _run(model: onnx.ModelProto, feeds: dict) -> list:
    return ronn.InferenceSession(model.SerializeToString()).run(None, feeds)


# --- If -----------------------------------------------------------------------------------


def test_if_reads_outer_values_and_nests() -> None:
    inner_then = helper.make_graph([helper.make_node("Add", ["x", "x"], ["t2"])], "it", [], [_vi("t2")])
    inner_else = helper.make_graph([helper.make_node("Add", ["x", "y"], ["e2"])], "ie", [], [_vi("e2")])
    then_branch = helper.make_graph(
        [helper.make_node("If", ["c2"], ["nested"], then_branch=inner_then, else_branch=inner_else)],
        "then", [], [_vi("nested")],
    )
    else_branch = helper.make_graph([], "else", [], [_vi("y")])  # an outer value as the output
    model = _model(
        [helper.make_node("If", ["c"], ["out"], then_branch=then_branch, else_branch=else_branch)],
        [_vi("c", BOOL, []), _vi("c2", BOOL, []), _vi("x", F, [2]), _vi("y", F, [2])],
        [_vi("out", F, [2])],
    )
    x, y = np.array([1, 2], np.float32), np.array([10, 20], np.float32)
    for c, c2, want in ((True, True, x + x), (True, False, x + y), (False, True, y)):
        (got,) = _run(model, {"c": np.array(c), "c2": np.array(c2), "x": x, "y": y})
        np.testing.assert_array_equal(got, want)


# --- Loop ---------------------------------------------------------------------------------


def _accumulating_loop(opset: int) -> onnx.ModelProto:
    """y += step (an outer value) each trip; the running sums are the scan output."""
    body = helper.make_graph(
        [helper.make_node("Add", ["y_in", "step"], ["y_out"]), helper.make_node("Add", ["y_out", "zero"], ["scan"])],
        "body",
        [_vi("i", I64, []), _vi("cond_in", BOOL, []), _vi("y_in", F, [2])],
        [_vi("cond_in", BOOL, []), _vi("y_out", F, [2]), _vi("scan", F, [2])],
    )
    return _model(
        [helper.make_node("Loop", ["M", "cond", "y0"], ["y", "scans"], body=body)],
        [_vi("M", I64, []), _vi("cond", BOOL, []), _vi("y0", F, [2]), _vi("step", F, [2])],
        [_vi("y", F, [2]), _vi("scans", F, [None, 2])],
        opset=opset,
        initializers=[helper.make_tensor("zero", F, [2], [0, 0])],
    )


@pytest.mark.parametrize("opset", [1, 11, 13, 16, 21])
def test_loop_outer_scope_and_scan_outputs(opset: int) -> None:
    model = _accumulating_loop(opset)
    feeds = {"M": np.array(3, np.int64), "cond": np.array(True), "y0": np.zeros(2, np.float32), "step": np.array([1, 2], np.float32)}
    y, scans = _run(model, feeds)
    np.testing.assert_array_equal(y, [3, 6])
    np.testing.assert_array_equal(scans, [[1, 2], [2, 4], [3, 6]])
    ref = ReferenceEvaluator(model).run(None, feeds)
    np.testing.assert_array_equal(scans, ref[1])


def test_loop_zero_trips_gives_empty_scan_outputs() -> None:
    model = _accumulating_loop(13)
    feeds = {"M": np.array(0, np.int64), "cond": np.array(True), "y0": np.ones(2, np.float32), "step": np.ones(2, np.float32)}
    y, scans = _run(model, feeds)
    np.testing.assert_array_equal(y, [1, 1])
    assert scans.shape == (0, 2) and scans.dtype == np.float32
    y, scans = _run(model, {**feeds, "M": np.array(5, np.int64), "cond": np.array(False)})
    np.testing.assert_array_equal(y, [1, 1])


def test_loop_condition_stops_and_omitted_inputs() -> None:
    """No M and no cond: the body's condition (flags[i]) alone ends the loop."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["i", "one"], ["next"]),
            helper.make_node("SequenceAt", ["flags", "i"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "next"], ["acc_out"]),
        ],
        "body",
        [_vi("i", I64, []), _vi("cond_in", BOOL, []), _vi("acc_in", I64, [])],
        [_vi("cond_out", BOOL, []), _vi("acc_out", I64, [])],
    )
    model = _model(
        [helper.make_node("Loop", ["", "", "acc0"], ["acc"], body=body)],
        [_vi("acc0", I64, []), _seq_vi("flags", BOOL)],
        [_vi("acc", I64, [])],
        initializers=[helper.make_tensor("one", I64, [], [1])],
    )
    flags = [np.array(v) for v in (True, True, False, True)]
    (acc,) = _run(model, {"acc0": np.array(10, np.int64), "flags": flags})
    assert acc == 10 + 1 + 2 + 3


def test_nested_loop_reads_two_scopes_up() -> None:
    inner = helper.make_graph(
        [helper.make_node("Add", ["a_in", "outer_step"], ["a_out"])],
        "inner",
        [_vi("j", I64, []), _vi("c", BOOL, []), _vi("a_in", F, [])],
        [_vi("c", BOOL, []), _vi("a_out", F, [])],
    )
    outer_body = helper.make_graph(
        [helper.make_node("Loop", ["N", "", "b_in"], ["b_out"], body=inner)],
        "outer",
        [_vi("i", I64, []), _vi("c", BOOL, []), _vi("b_in", F, [])],
        [_vi("c", BOOL, []), _vi("b_out", F, [])],
    )
    model = _model(
        [helper.make_node("Loop", ["M", "", "b0"], ["b"], body=outer_body)],
        [_vi("M", I64, []), _vi("N", I64, []), _vi("b0", F, []), _vi("outer_step", F, [])],
        [_vi("b", F, [])],
    )
    feeds = {"M": np.array(3, np.int64), "N": np.array(4, np.int64), "b0": np.array(0, np.float32), "outer_step": np.array(0.5, np.float32)}
    (b,) = _run(model, feeds)
    assert b.shape == () and b == 6.0


def test_loop_carries_sequences() -> None:
    body = helper.make_graph(
        [helper.make_node("SequenceInsert", ["s_in", "x"], ["s_out"])],
        "body",
        [_vi("i", I64, []), _vi("c", BOOL, []), _seq_vi("s_in")],
        [_vi("c", BOOL, []), _seq_vi("s_out")],
    )
    model = _model(
        [helper.make_node("SequenceEmpty", [], ["s0"]), helper.make_node("Loop", ["M", "", "s0"], ["s"], body=body)],
        [_vi("M", I64, []), _vi("x", F, [1])],
        [_seq_vi("s")],
    )
    (s,) = _run(model, {"M": np.array(3, np.int64), "x": np.array([7], np.float32)})
    assert isinstance(s, list) and len(s) == 3 and all(v.tolist() == [7] for v in s)


# --- Scan ---------------------------------------------------------------------------------


def _scan_body(state_shape, elem_shape) -> onnx.GraphProto:
    return helper.make_graph(
        [helper.make_node("Add", ["s_in", "x"], ["s_out"]), helper.make_node("Add", ["s_out", "bias"], ["y"])],
        "body",
        [_vi("s_in", F, state_shape), _vi("x", F, elem_shape)],
        [_vi("s_out", F, state_shape), _vi("y", F, elem_shape)],
    )


@pytest.mark.parametrize(
    ("in_dir", "in_axis", "out_dir", "out_axis"),
    [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 1, 0), (1, -1, 0, -1), (0, 1, 0, 1)],
)
def test_scan_axes_and_directions(in_dir: int, in_axis: int, out_dir: int, out_axis: int) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    elem_shape = [4] if in_axis == 0 else [3]
    node = helper.make_node(
        "Scan", ["s0", "x"], ["s", "ys"], body=_scan_body(elem_shape, elem_shape), num_scan_inputs=1,
        scan_input_directions=[in_dir], scan_input_axes=[in_axis],
        scan_output_directions=[out_dir], scan_output_axes=[out_axis],
    )
    model = _model([node], [_vi("s0", F, elem_shape), _vi("x", F, [3, 4]), _vi("bias", F, [])], [_vi("s"), _vi("ys")], opset=16)
    feeds = {"s0": np.zeros(elem_shape, np.float32), "x": x, "bias": np.array(100, np.float32)}
    got = _run(model, feeds)
    # independent expectation
    steps = np.moveaxis(x, in_axis, 0)
    if in_dir:
        steps = steps[::-1]
    state, outs = np.zeros(elem_shape, np.float32), []
    for step in steps:
        state = state + step
        outs.append(state + 100)
    if out_dir:
        outs = outs[::-1]
    np.testing.assert_array_equal(got[0], state)
    np.testing.assert_array_equal(got[1], np.stack(outs, axis=out_axis % 2))


def test_scan_8_batches_and_sequence_lens() -> None:
    node = helper.make_node("Scan", ["lens", "s0", "x"], ["s", "ys"], body=_scan_body([2], [2]), num_scan_inputs=1, directions=[1])
    model = _model([node], [_vi("lens", TensorProto.INT32, [2]), _vi("s0", F, [2, 2]), _vi("x", F, [2, 3, 2]), _vi("bias", F, [])], [_vi("s"), _vi("ys")], opset=8)
    x = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    s0 = np.ones((2, 2), np.float32)
    s, ys = _run(model, {"lens": np.array([3, 2], np.int32), "s0": s0, "x": x, "bias": np.array(0, np.float32)})
    np.testing.assert_array_equal(s[0], 1 + x[0].sum(0))
    np.testing.assert_array_equal(s[1], 1 + x[1, :2].sum(0))
    np.testing.assert_array_equal(ys[0], 1 + np.cumsum(x[0][::-1], axis=0))
    np.testing.assert_array_equal(ys[1, :2], 1 + np.cumsum(x[1, :2][::-1], axis=0))
    np.testing.assert_array_equal(ys[1, 2], [0, 0])
    # sequence_lens omitted: every batch runs the full length
    model2 = _model([helper.make_node("Scan", ["", "s0", "x"], ["s", "ys"], body=_scan_body([2], [2]), num_scan_inputs=1)],
                    [_vi("s0", F, [2, 2]), _vi("x", F, [2, 3, 2]), _vi("bias", F, [])], [_vi("s"), _vi("ys")], opset=8)
    s, ys = _run(model2, {"s0": s0, "x": x, "bias": np.array(1, np.float32)})
    np.testing.assert_array_equal(s, 1 + x.sum(1))
    np.testing.assert_array_equal(ys, 2 + np.cumsum(x, axis=1))


# --- sequences and optionals --------------------------------------------------------------


def test_sequence_ops() -> None:
    nodes = [
        helper.make_node("SequenceConstruct", ["a", "b", "c"], ["s"]),
        helper.make_node("SequenceErase", ["s", "minus_one"], ["s2"]),
        helper.make_node("SequenceInsert", ["s2", "c", "zero"], ["s3"]),
        helper.make_node("SequenceLength", ["s3"], ["n"]),
        helper.make_node("SequenceAt", ["s3", "minus_one"], ["last"]),
        helper.make_node("SequenceErase", ["s3"], ["s4"]),
        helper.make_node("ConcatFromSequence", ["s4"], ["cat"], axis=0),
        helper.make_node("ConcatFromSequence", ["s4"], ["stacked"], axis=-1, new_axis=1),
    ]
    model = _model(
        nodes,
        [_vi("a", F, [2]), _vi("b", F, [2]), _vi("c", F, [2])],
        [_vi("n", I64, []), _vi("last", F, [2]), _vi("cat", F, [4]), _vi("stacked", F, [2, 2]), _seq_vi("s")],
        initializers=[helper.make_tensor("zero", I64, [], [0]), helper.make_tensor("minus_one", I64, [], [-1])],
    )
    a, b, c = (np.full(2, v, np.float32) for v in (1, 2, 3))
    n, last, cat, stacked, s = _run(model, {"a": a, "b": b, "c": c})
    assert n.dtype == np.int64 and n == 3
    np.testing.assert_array_equal(last, b)
    np.testing.assert_array_equal(cat, np.concatenate([c, a]))
    np.testing.assert_array_equal(stacked, np.stack([c, a], axis=-1))
    assert len(s) == 3  # the input sequence is untouched by Erase/Insert


def test_sequence_position_out_of_range() -> None:
    model = _model([helper.make_node("SequenceAt", ["s", "p"], ["x"])], [_seq_vi("s"), _vi("p", I64, [])], [_vi("x")])
    with pytest.raises(ronn.RonnError, match="out of range"):
        _run(model, {"s": [np.zeros(1, np.float32)], "p": np.array(1, np.int64)})


@pytest.mark.parametrize(
    ("split", "keepdims", "shapes"),
    [
        (None, 1, [(1, 2)] * 3),
        (None, 0, [(2,)] * 3),
        (np.array(2, np.int64), 1, [(2, 2), (1, 2)]),
        (np.array([1, 2], np.int32), 1, [(1, 2), (2, 2)]),
    ],
)
def test_split_to_sequence(split, keepdims: int, shapes) -> None:
    inputs = [_vi("x", F, [3, 2])]
    names = ["x"]
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(3, 2)}
    if split is not None:
        inputs.append(_vi("split", helper.np_dtype_to_tensor_dtype(split.dtype), list(split.shape)))
        names.append("split")
        feeds["split"] = split
    model = _model([helper.make_node("SplitToSequence", names, ["s"], keepdims=keepdims)], inputs, [_seq_vi("s")])
    (s,) = _run(model, feeds)
    assert [p.shape for p in s] == shapes
    np.testing.assert_array_equal(np.concatenate([p.reshape(-1, 2) for p in s]), feeds["x"])


def test_sequence_map_with_outer_value() -> None:
    body = helper.make_graph([helper.make_node("Add", ["e", "offset"], ["o"])], "body", [_vi("e")], [_vi("o")])
    model = _model(
        [helper.make_node("SequenceMap", ["s"], ["out"], body=body)],
        [_seq_vi("s"), _vi("offset", F, [])],
        [_seq_vi("out")],
    )
    seq = [np.array([1, 2], np.float32), np.array([3], np.float32)]
    (out,) = _run(model, {"s": seq, "offset": np.array(10, np.float32)})
    assert [o.tolist() for o in out] == [[11, 12], [13]]


def test_optionals() -> None:
    opt_type = helper.make_tensor_type_proto(F, [2])
    nodes = [
        helper.make_node("Optional", ["x"], ["full"]),
        helper.make_node("Optional", [], ["empty"], type=opt_type),
        helper.make_node("OptionalHasElement", ["full"], ["has_full"]),
        helper.make_node("OptionalHasElement", ["empty"], ["has_empty"]),
        helper.make_node("OptionalHasElement", ["x"], ["has_plain"]),
        helper.make_node("OptionalGetElement", ["full"], ["got"]),
        helper.make_node("OptionalGetElement", ["x"], ["got_plain"]),
    ]
    model = _model(
        nodes,
        [_vi("x", F, [2])],
        [_vi("has_full", BOOL, []), _vi("has_empty", BOOL, []), _vi("has_plain", BOOL, []), _vi("got", F, [2]), _vi("got_plain", F, [2])],
        opset=18,
    )
    x = np.array([1, 2], np.float32)
    has_full, has_empty, has_plain, got, got_plain = _run(model, {"x": x})
    assert has_full.dtype == np.bool_ and has_full.shape == ()
    assert bool(has_full) and not bool(has_empty) and bool(has_plain)
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(got_plain, x)


def test_optional_get_element_of_empty_fails() -> None:
    nodes = [
        helper.make_node("Optional", [], ["empty"], type=helper.make_tensor_type_proto(F, [2])),
        helper.make_node("OptionalGetElement", ["empty"], ["y"]),
    ]
    model = _model(nodes, [], [_vi("y", F, [2])], opset=18)
    with pytest.raises(ronn.RonnError, match="empty"):
        _run(model, {})


# --- strings ------------------------------------------------------------------------------


def _strings(*values) -> np.ndarray:
    return np.array(values, dtype=object)


def test_string_normalizer() -> None:
    node = helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="UPPER", is_case_sensitive=0, stopwords=["the"])
    model = _model([node], [_vi("x", STR, [1, 3])], [_vi("y", STR, None)], opset=10)
    (y,) = _run(model, {"x": _strings(["The", "cat", "sat"])})
    assert y.shape == (1, 2) and y.tolist() == [["CAT", "SAT"]]
    (y,) = _run(model, {"x": _strings(["the", "THE", "tHe"])})
    assert y.shape == (1, 1) and y.tolist() == [[""]]


def test_string_concat_split_regex() -> None:
    nodes = [
        helper.make_node("StringConcat", ["a", "b"], ["ab"]),
        helper.make_node("StringSplit", ["ab"], ["parts", "counts"], delimiter="-", maxsplit=1),
        helper.make_node("StringSplit", ["ab"], ["words", "word_counts"]),
        helper.make_node("RegexFullMatch", ["ab"], ["match"], pattern=r"[a-z]+(-\w+)+"),
    ]
    model = _model(
        nodes,
        [_vi("a", STR, [3]), _vi("b", STR, [])],
        [_vi("parts", STR, None), _vi("counts", I64, None), _vi("words", STR, None), _vi("word_counts", I64, None), _vi("match", BOOL, None)],
        opset=20,
    )
    a = _strings("x-y", "no dash ", "α")
    b = np.array("-z", dtype=object)
    parts, counts, words, word_counts, match = _run(model, {"a": a, "b": b})
    assert parts.tolist() == [["x", "y-z"], ["no dash ", "z"], ["α", "z"]]
    assert counts.tolist() == [2, 2, 2] and counts.dtype == np.int64
    assert words.tolist() == [["x-y-z", "", ""], ["no", "dash", "-z"], ["α-z", "", ""]]
    assert word_counts.tolist() == [1, 3, 1]
    assert match.tolist() == [True, False, False] and match.dtype == np.bool_
    want = ReferenceEvaluator(model).run(None, {"a": a.astype(str), "b": np.array("-z")})
    assert [want[i].tolist() for i in (1, 3, 4)] == [counts.tolist(), word_counts.tolist(), match.tolist()]


# --- Gradient -----------------------------------------------------------------------------

TRAINING = helper.make_opsetid("ai.onnx.preview.training", 1)


def _gradient_model(nodes, xs, y, shapes) -> onnx.ModelProto:
    grad = helper.make_node("Gradient", xs, [f"d_{x}" for x in xs], domain="ai.onnx.preview.training", xs=xs, y=y)
    return _model(
        [*nodes, grad],
        [_vi(x, F, shapes[x]) for x in xs],
        [_vi(y, F, None), *(_vi(f"d_{x}", F, shapes[x]) for x in xs)],
        opset=12,
        extra_opsets=[TRAINING],
    )


def test_gradient_broadcasting_and_chain() -> None:
    nodes = [
        helper.make_node("Mul", ["a", "b"], ["ab"]),  # [2,3] * [3]
        helper.make_node("Sigmoid", ["ab"], ["s"]),
        helper.make_node("Sub", ["s", "b"], ["d"]),
        helper.make_node("Div", ["d", "c"], ["q"]),  # / [2,1]
        helper.make_node("Tanh", ["q"], ["t"]),
        helper.make_node("Exp", ["t"], ["y"]),
    ]
    model = _gradient_model(nodes, ["a", "b", "c"], "y", {"a": [2, 3], "b": [3], "c": [2, 1]})
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 3)).astype(np.float64)
    b = rng.normal(size=3)
    c = rng.uniform(1, 2, size=(2, 1))

    def forward(a, b, c):
        return np.exp(np.tanh((1 / (1 + np.exp(-a * b)) - b) / c)).sum()

    feeds = {"a": a.astype(np.float32), "b": b.astype(np.float32), "c": c.astype(np.float32)}
    y, da, db, dc = _run(model, feeds)
    eps = 1e-6
    for value, grad, name in ((a, da, "a"), (b, db, "b"), (c, dc, "c")):
        assert grad.shape == value.shape and grad.dtype == np.float32
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            bumped = {k: v.copy() for k, v in (("a", a), ("b", b), ("c", c))}
            bumped[name][index] += eps
            numeric[index] = (forward(**bumped) - forward(a, b, c)) / eps
        np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=2e-4, err_msg=name)


def test_gradient_matmul_relu_log_neg() -> None:
    nodes = [
        helper.make_node("MatMul", ["w", "v"], ["wv"]),  # [2,3] @ [3]
        helper.make_node("Relu", ["wv"], ["r"]),
        helper.make_node("Neg", ["r"], ["n"]),
        helper.make_node("Identity", ["n"], ["m"]),
        helper.make_node("Exp", ["m"], ["e"]),
        helper.make_node("Log", ["e"], ["y"]),
    ]
    model = _gradient_model(nodes, ["w", "v"], "y", {"w": [2, 3], "v": [3]})
    w = np.array([[1, 2, 3], [-1, -2, -3]], np.float32)
    v = np.array([0.5, 1, 1.5], np.float32)
    y, dw, dv = _run(model, {"w": w, "v": v})
    mask = (w @ v > 0).astype(np.float32)
    np.testing.assert_allclose(dw, -np.outer(mask, v), rtol=1e-5)
    np.testing.assert_allclose(dv, -(mask @ w), rtol=1e-5)


def test_gradient_of_unsupported_op_fails_at_creation() -> None:
    nodes = [helper.make_node("ReduceSum", ["a"], ["y"])]
    model = _gradient_model(nodes, ["a"], "y", {"a": [2]})
    with pytest.raises(ronn.RonnError, match="no gradient rule"):
        ronn.InferenceSession(model.SerializeToString())
