"""Losses and training optimizers beyond the node suite: dtypes, old opsets, ignore_index
edge cases, errors, and several tensors per optimizer node."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ronn
from ronn.errors import InvalidGraphError, KernelError

TRAINING = "ai.onnx.preview.training"
RNG = np.random.default_rng(0)


def _model(node: onnx.NodeProto, inputs: dict[str, np.ndarray], opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
            for name, value in inputs.items()
        ],
        [helper.make_tensor_value_info(name, TensorProto.UNDEFINED, None) for name in node.output if name],
    )
    opsets = [helper.make_opsetid("", opset)]
    if node.domain == TRAINING:
        opsets.append(helper.make_opsetid(TRAINING, 1))
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def _run(model: onnx.ModelProto, feeds: dict) -> list:
    return ronn.InferenceSession(model.SerializeToString()).run(None, feeds)


def _reference(model: onnx.ModelProto, feeds: dict) -> list:
    return ReferenceEvaluator(model).run(None, feeds)


def _expected_nll(log_prob, target, weight=None, reduction="mean", ignore_index=None):
    """An element-by-element oracle, written independently of the kernel."""
    n, c = log_prob.shape[:2]
    flat = log_prob.reshape(n, c, -1).astype(np.float64)
    labels = target.reshape(n, -1)
    loss = np.zeros(labels.shape)
    weights = np.zeros(labels.shape)
    for i in range(labels.shape[0]):
        for d in range(labels.shape[1]):
            label = int(labels[i, d])
            if label == ignore_index:
                continue
            w = 1.0 if weight is None else float(weight[label])
            loss[i, d] = -flat[i, label, d] * w
            weights[i, d] = w
    if reduction == "none":
        return loss.reshape(target.shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / weights.sum()


def _log_softmax(x):
    x = x.astype(np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _loss_node(op, reduction, ignore_index, weighted, log_prob=False):
    inputs = ["x", "t"] + (["w"] if weighted else [])
    outputs = ["loss"] + (["log_prob"] if log_prob else [])
    attrs = {"reduction": reduction}
    if ignore_index is not None:
        attrs["ignore_index"] = ignore_index
    return helper.make_node(op, inputs, outputs, **attrs)


def _loss_case(shape, tdtype, ignore_index, weighted, dtype=np.float32):
    x = RNG.standard_normal(shape).astype(dtype)
    target = RNG.integers(0, shape[1], (shape[0],) + shape[2:]).astype(tdtype)
    if ignore_index is not None:
        target.flat[::3] = ignore_index
    feeds = {"x": x, "t": target}
    if weighted:
        feeds["w"] = RNG.uniform(0.1, 1.0, shape[1]).astype(dtype)
    return feeds


@pytest.mark.parametrize("op", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("ignore_index", [None, -1, 1, 7])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 4, 2, 3)])
def test_losses_against_oracle(op, reduction, ignore_index, weighted, shape):
    feeds = _loss_case(shape, np.int64, ignore_index, weighted)
    model = _model(_loss_node(op, reduction, ignore_index, weighted), feeds)
    (loss,) = _run(model, feeds)
    log_prob = _log_softmax(feeds["x"]) if op == "SoftmaxCrossEntropyLoss" else feeds["x"]
    expected = _expected_nll(log_prob, feeds["t"], feeds.get("w"), reduction, ignore_index)
    assert loss.dtype == np.float32
    assert loss.shape == np.shape(expected)
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float64, ml_dtypes.bfloat16])
@pytest.mark.parametrize("tdtype", [np.int32, np.int64])
@pytest.mark.parametrize("opset", [12, 13, 22])
def test_loss_dtypes_and_opsets(dtype, tdtype, opset):
    if dtype is ml_dtypes.bfloat16 and opset == 12:
        pytest.skip("bfloat16 arrives in later opsets")
    feeds = _loss_case((3, 4, 5), tdtype, 2, True, dtype)
    rtol = {np.float64: 1e-10, np.float16: 2e-3}.get(dtype, 2e-2)
    for op in ("NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"):
        op_opset = min(opset, 13) if op == "SoftmaxCrossEntropyLoss" else opset
        with_log_prob = op == "SoftmaxCrossEntropyLoss"
        node = _loss_node(op, "mean", 2, True, log_prob=with_log_prob)
        outputs = _run(_model(node, feeds, op_opset), feeds)
        x64 = feeds["x"].astype(np.float64)
        log_prob = _log_softmax(x64) if with_log_prob else x64
        expected = _expected_nll(log_prob, feeds["t"], feeds["w"].astype(np.float64), "mean", 2)
        assert outputs[0].dtype == np.dtype(dtype) and outputs[0].shape == ()
        np.testing.assert_allclose(outputs[0].astype(np.float64), expected, rtol=rtol)
        if with_log_prob:
            assert outputs[1].dtype == np.dtype(dtype) and outputs[1].shape == feeds["x"].shape
            np.testing.assert_allclose(outputs[1].astype(np.float64), log_prob, rtol=rtol, atol=rtol)


def test_sce_matches_reference_evaluator_with_log_prob():
    feeds = _loss_case((3, 5, 2, 2), np.int64, -3, True)
    model = _model(_loss_node("SoftmaxCrossEntropyLoss", "sum", -3, True, log_prob=True), feeds)
    got = _run(model, feeds)
    for actual, expected in zip(got, _reference(model, feeds), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_sce_is_stable_for_large_scores():
    x = np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32)
    feeds = {"x": x, "t": np.array([2], dtype=np.int64)}
    model = _model(_loss_node("SoftmaxCrossEntropyLoss", "none", None, False, log_prob=True), feeds)
    loss, log_prob = _run(model, feeds)
    np.testing.assert_allclose(loss, [2000.0])
    np.testing.assert_allclose(log_prob, [[0.0, -1000.0, -2000.0]])


def test_mean_over_all_ignored_samples_is_nan():
    feeds = {"x": np.zeros((2, 3), np.float32), "t": np.array([-1, -1], dtype=np.int64)}
    model = _model(_loss_node("NegativeLogLikelihoodLoss", "mean", -1, False), feeds)
    (loss,) = _run(model, feeds)
    assert loss.shape == () and np.isnan(loss)


def test_out_of_range_target_is_an_error():
    feeds = {"x": np.zeros((2, 3), np.float32), "t": np.array([0, 3], dtype=np.int64)}
    model = _model(_loss_node("NegativeLogLikelihoodLoss", "none", None, False), feeds)
    with pytest.raises(KernelError, match="outside the class range"):
        _run(model, feeds)


def test_bad_reduction_is_rejected_at_session_creation():
    feeds = {"x": np.zeros((2, 3), np.float32), "t": np.array([0, 1], dtype=np.int64)}
    model = _model(_loss_node("NegativeLogLikelihoodLoss", "max", None, False), feeds)
    with pytest.raises(InvalidGraphError, match="reduction"):
        ronn.InferenceSession(model.SerializeToString())


# --------------------------------------------------------------------------- optimizers


def _optimizer_feeds(count, states, dtype=np.float32, r_dtype=np.float32, step=3):
    feeds = {"R": np.array(0.1, dtype=r_dtype), "T": np.array(step, dtype=np.int64)}
    shapes = [(3,), (2, 2), ()][:count]
    for group in ["X", "G"] + states:
        for i, shape in enumerate(shapes):
            low = 0.0 if group == "H" else -1.0
            feeds[f"{group}{i}"] = RNG.uniform(low, 1.0, shape).astype(dtype)
    return feeds


def _optimizer_node(op, count, states, **attrs):
    inputs = ["R", "T"] + [f"{g}{i}" for g in ["X", "G"] + states for i in range(count)]
    outputs = [f"{g}{i}_new" for g in ["X"] + states for i in range(count)]
    return helper.make_node(op, inputs, outputs, domain=TRAINING, **attrs)


OPTIMIZERS = [
    ("Adagrad", ["H"], {"norm_coefficient": 0.01, "decay_factor": 0.1, "epsilon": 1e-5}),
    ("Adam", ["V", "H"], {"alpha": 0.8, "beta": 0.9, "norm_coefficient": 0.01, "norm_coefficient_post": 0.02}),
    ("Adam", ["V", "H"], {}),
    ("Momentum", ["V"], {"alpha": 0.9, "beta": 0.5, "norm_coefficient": 0.01, "mode": "standard"}),
    ("Momentum", ["V"], {"alpha": 0.9, "beta": 0.5, "norm_coefficient": 0.01, "mode": "nesterov"}),
]


@pytest.mark.parametrize(("op", "states", "attrs"), OPTIMIZERS)
@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("step", [0, 4])
@pytest.mark.parametrize(
    ("dtype", "r_dtype"), [(np.float32, np.float32), (np.float64, np.float32), (np.float32, np.float64)]
)
def test_optimizers_against_reference(op, states, attrs, count, step, dtype, r_dtype):
    feeds = _optimizer_feeds(count, states, dtype, r_dtype, step)
    model = _model(_optimizer_node(op, count, states, **attrs), feeds)
    got = _run(model, feeds)
    if op == "Adam" and not attrs:  # the reference needs every attribute spelled out
        attrs = {"alpha": 0.9, "beta": 0.999, "epsilon": 1e-6, "norm_coefficient": 0.0, "norm_coefficient_post": 0.0}
        model = _model(_optimizer_node(op, count, states, **attrs), feeds)
    expected = _reference(model, feeds)
    assert len(got) == count * (1 + len(states))
    for actual, want, name in zip(got, expected, model.graph.output, strict=True):
        source = feeds[name.name.removesuffix("_new")]
        assert actual.dtype == source.dtype and actual.shape == source.shape, name.name
        np.testing.assert_allclose(actual, want, rtol=1e-4, atol=1e-6, err_msg=name.name)


def test_momentum_first_step_uses_unit_gradient_scale():
    feeds = {
        "R": np.array(0.5, np.float32),
        "T": np.array(0, np.int64),
        "X0": np.array([1.0], np.float32),
        "G0": np.array([2.0], np.float32),
        "V0": np.array([4.0], np.float32),
    }
    node = _optimizer_node("Momentum", 1, ["V"], alpha=0.5, beta=0.1, norm_coefficient=0.0, mode="standard")
    x_new, v_new = _run(_model(node, feeds), feeds)
    np.testing.assert_allclose(v_new, [0.5 * 4.0 + 2.0])
    np.testing.assert_allclose(x_new, [1.0 - 0.5 * 4.0])


def test_momentum_rejects_unknown_mode():
    feeds = _optimizer_feeds(1, ["V"])
    node = _optimizer_node("Momentum", 1, ["V"], alpha=0.9, beta=0.5, norm_coefficient=0.0, mode="heavy")
    with pytest.raises(InvalidGraphError, match="mode"):
        ronn.InferenceSession(_model(node, feeds).SerializeToString())


def test_optimizer_rejects_uneven_groups():
    feeds = _optimizer_feeds(1, ["H"])
    node = helper.make_node("Adagrad", ["R", "T", "X0", "G0"], ["X0_new", "H0_new"], domain=TRAINING)
    with pytest.raises(InvalidGraphError, match="groups"):
        ronn.InferenceSession(_model(node, {k: feeds[k] for k in ("R", "T", "X0", "G0")}).SerializeToString())
