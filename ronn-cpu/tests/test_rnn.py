"""RNN, GRU and LSTM beyond the node suite, checked against onnxruntime.

Covers directions, sequence_lens (reverse within each length), initial states, layout,
peepholes, input_forget, linear_before_reset, clip, activations with alpha/beta, optional
outputs, float64/float16/bfloat16, and the older opset versions.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

import ronn

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _model(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opset: int) -> bytes:
    inputs = [
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
        for name, value in feeds.items()
    ]
    elem = helper.np_dtype_to_tensor_dtype(feeds["X"].dtype)
    outputs = [helper.make_tensor_value_info(name, elem, None) for name in node.output if name]
    graph = helper.make_graph([node], "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 10
    return model.SerializeToString()


def _compare(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opset: int = 22, rtol: float = 1e-5) -> None:
    model = _model(node, feeds, opset)
    expected = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)
    actual = ronn.InferenceSession(model).run(None, feeds)
    assert len(actual) == len(expected)
    for e, a in zip(expected, actual):
        assert a.dtype == e.dtype and a.shape == e.shape
        np.testing.assert_allclose(a.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=rtol)


def _feeds(
    op: str,
    *,
    steps: int = 4,
    batch: int = 3,
    inputs: int = 5,
    hidden: int = 6,
    directions: int = 1,
    dtype: type = np.float32,
    layout: int = 0,
    bias: bool = True,
    lengths: list[int] | None = None,
    initial: bool = False,
    peepholes: bool = False,
    seed: int = 0,
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Random inputs for a node; returns the node's input names ('' for omitted) and feeds."""
    rng = np.random.default_rng(seed)
    gates = GATES[op]

    def rand(*shape: int) -> np.ndarray:
        return rng.uniform(-1, 1, shape).astype(dtype)

    x_shape = (batch, steps, inputs) if layout else (steps, batch, inputs)
    state_shape = (batch, directions, hidden) if layout else (directions, batch, hidden)
    values: dict[str, np.ndarray | None] = {
        "X": rand(*x_shape),
        "W": rand(directions, gates * hidden, inputs),
        "R": rand(directions, gates * hidden, hidden),
        "B": rand(directions, 2 * gates * hidden) if bias else None,
        "sequence_lens": None if lengths is None else np.array(lengths, dtype=np.int32),
        "initial_h": rand(*state_shape) if initial else None,
    }
    if op == "LSTM":
        values["initial_c"] = rand(*state_shape) if initial else None
        values["P"] = rand(directions, 3 * hidden) if peepholes else None
    names = [name if value is not None else "" for name, value in values.items()]
    while names and not names[-1]:
        names.pop()
    return names, {k: v for k, v in values.items() if v is not None}


def _node(op: str, names: list[str], outputs: int = 0, **attrs) -> onnx.NodeProto:
    all_outputs = ["Y", "Y_h", "Y_c"][: 3 if op == "LSTM" else 2]
    return helper.make_node(op, names, all_outputs[: outputs or len(all_outputs)], **attrs)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_directions_initial_state(op: str, direction: str) -> None:
    directions = 2 if direction == "bidirectional" else 1
    names, feeds = _feeds(op, directions=directions, initial=True)
    _compare(_node(op, names, hidden_size=6, direction=direction), feeds)


def _batchwise_feeds(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """layout=0 feeds rearranged for layout=1."""
    moved = {"X": feeds["X"].swapaxes(0, 1)}
    for name in ("initial_h", "initial_c"):
        if name in feeds:
            moved[name] = feeds[name].swapaxes(0, 1)
    return {**feeds, **{k: np.ascontiguousarray(v) for k, v in moved.items()}}


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("lengths", [None, [1, 4, 2]])
def test_batchwise_layout(op: str, direction: str, lengths: list[int] | None) -> None:
    """layout=1 (which onnxruntime lacks) against onnxruntime's layout=0 result, transposed."""
    directions = 2 if direction == "bidirectional" else 1
    names, feeds = _feeds(op, directions=directions, initial=True, lengths=lengths)
    plain = _model(_node(op, names, hidden_size=6, direction=direction), feeds, 22)
    expected = onnxruntime.InferenceSession(plain, providers=["CPUExecutionProvider"]).run(None, feeds)
    batchwise = _batchwise_feeds(feeds)
    node = _node(op, names, hidden_size=6, direction=direction, layout=1)
    actual = ronn.InferenceSession(_model(node, batchwise, 22)).run(None, batchwise)
    np.testing.assert_allclose(actual[0], expected[0].transpose(2, 0, 1, 3), rtol=1e-5, atol=1e-5)
    for e, a in zip(expected[1:], actual[1:]):
        np.testing.assert_allclose(a, e.swapaxes(0, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_sequence_lens(op: str, direction: str) -> None:
    directions = 2 if direction == "bidirectional" else 1
    names, feeds = _feeds(op, steps=5, batch=4, directions=directions, lengths=[5, 0, 3, 1], initial=True)
    _compare(_node(op, names, hidden_size=6, direction=direction), feeds)


@pytest.mark.parametrize("linear_before_reset", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_gru_linear_before_reset(linear_before_reset: int, direction: str) -> None:
    directions = 2 if direction == "bidirectional" else 1
    names, feeds = _feeds("GRU", directions=directions, initial=True)
    node = _node("GRU", names, hidden_size=6, direction=direction, linear_before_reset=linear_before_reset)
    _compare(node, feeds)


@pytest.mark.parametrize("input_forget", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_peepholes_input_forget(input_forget: int, direction: str) -> None:
    directions = 2 if direction == "bidirectional" else 1
    names, feeds = _feeds("LSTM", directions=directions, initial=True, peepholes=True)
    node = _node("LSTM", names, hidden_size=6, direction=direction, input_forget=input_forget)
    _compare(node, feeds)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_clip(op: str) -> None:
    names, feeds = _feeds(op, directions=2, initial=True)
    feeds["X"] = feeds["X"] * 4
    _compare(_node(op, names, hidden_size=6, direction="bidirectional", clip=0.7), feeds)


ACTIVATIONS = [
    ("Relu", [], []),
    ("Tanh", [], []),
    ("Sigmoid", [], []),
    ("Affine", [0.5], [0.25]),
    ("LeakyRelu", [0.3], []),
    ("ThresholdedRelu", [0.2], []),
    ("ScaledTanh", [1.5], [0.7]),
    ("HardSigmoid", [0.3], [0.4]),
    ("Elu", [0.8], []),
    ("Softsign", [], []),
    ("Softplus", [], []),
]


@pytest.mark.parametrize(("name", "alpha", "beta"), ACTIVATIONS)
def test_rnn_activations(name: str, alpha: list[float], beta: list[float]) -> None:
    names, feeds = _feeds("RNN", initial=True)
    attrs = {"activations": [name]}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    _compare(_node("RNN", names, hidden_size=6, **attrs), feeds)


def test_activations_per_direction_with_parameters() -> None:
    names, feeds = _feeds("LSTM", directions=2, initial=True)
    node = _node(
        "LSTM",
        names,
        hidden_size=6,
        direction="bidirectional",
        activations=["HardSigmoid", "Tanh", "ScaledTanh", "Sigmoid", "LeakyRelu", "Softsign"],
        activation_alpha=[0.3, 1.2, 0.2],
        activation_beta=[0.45, 0.8],
    )
    _compare(node, feeds)


def test_gru_activations_per_direction() -> None:
    names, feeds = _feeds("GRU", directions=2, initial=True)
    node = _node(
        "GRU",
        names,
        hidden_size=6,
        direction="bidirectional",
        activations=["HardSigmoid", "Elu", "LeakyRelu", "Affine"],
        activation_alpha=[0.3, 1.1, 0.1, 0.9],
        activation_beta=[0.45, 0.2],
    )
    _compare(node, feeds)


OUTPUT_CHOICES = [["Y"], ["", "Y_h"], ["Y", ""]]


@pytest.mark.parametrize(
    ("op", "outputs"),
    [(op, o) for op in ("RNN", "GRU", "LSTM") for o in OUTPUT_CHOICES]
    + [("LSTM", ["", "", "Y_c"]), ("LSTM", ["Y", "", "Y_c"])],
)
def test_optional_outputs(op: str, outputs: list[str]) -> None:
    names, feeds = _feeds(op, bias=False)
    node = helper.make_node(op, names, outputs, hidden_size=6)
    _compare(node, feeds)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_float64(op: str) -> None:
    """float64 against onnxruntime's float32 kernel (it has no float64 one for these ops)."""
    names, feeds = _feeds(op, directions=2, dtype=np.float64, initial=True, lengths=[4, 2, 3])
    node = _node(op, names, hidden_size=6, direction="bidirectional")
    single = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in feeds.items()}
    reference = onnxruntime.InferenceSession(_model(node, single, 22), providers=["CPUExecutionProvider"])
    expected = reference.run(None, single)
    actual = ronn.InferenceSession(_model(node, feeds, 22)).run(None, feeds)
    for e, a in zip(expected, actual):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_half_precision_matches_float32(op: str, dtype: type) -> None:
    names, feeds = _feeds(op, directions=2, initial=True)
    node = _node(op, names, hidden_size=6, direction="bidirectional")
    half = {k: v.astype(dtype) if v.dtype == np.float32 else v for k, v in feeds.items()}
    single = {k: v.astype(np.float32) for k, v in half.items()}
    expected = ronn.InferenceSession(_model(node, single, 22)).run(None, single)
    actual = ronn.InferenceSession(_model(node, half, 22)).run(None, half)
    for e, a in zip(expected, actual):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a.astype(np.float32), e, atol=2e-2)


@pytest.mark.parametrize(("op", "opset"), [("RNN", 7), ("GRU", 7), ("LSTM", 7), ("RNN", 14), ("GRU", 14), ("LSTM", 14)])
def test_older_opsets(op: str, opset: int) -> None:
    names, feeds = _feeds(op, directions=2, initial=True, lengths=[4, 1, 3])
    attrs = {"linear_before_reset": 1} if op == "GRU" else {}
    _compare(_node(op, names, hidden_size=6, direction="bidirectional", **attrs), feeds, opset=opset)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_opset_1_matches_opset_7(op: str) -> None:
    names, feeds = _feeds(op, directions=2, initial=True)
    node = _node(op, names, hidden_size=6, direction="bidirectional")
    expected = ronn.InferenceSession(_model(node, feeds, 7)).run(None, feeds)
    old = _node(op, names, hidden_size=6, direction="bidirectional", output_sequence=1)
    actual = ronn.InferenceSession(_model(old, feeds, 1)).run(None, feeds)
    for e, a in zip(expected, actual):
        np.testing.assert_array_equal(a, e)


def test_gru_3_matches_gru_7() -> None:
    names, feeds = _feeds("GRU", directions=2, initial=True, lengths=[4, 1, 3])
    node = _node("GRU", names, hidden_size=6, direction="bidirectional", linear_before_reset=1)
    expected = ronn.InferenceSession(_model(node, feeds, 7)).run(None, feeds)
    actual = ronn.InferenceSession(_model(node, feeds, 3)).run(None, feeds)
    for e, a in zip(expected, actual):
        np.testing.assert_array_equal(a, e)


def test_bad_activation_is_rejected() -> None:
    names, feeds = _feeds("RNN")
    node = _node("RNN", names, hidden_size=6, activations=["Swish"])
    with pytest.raises(Exception, match="Swish"):
        ronn.InferenceSession(_model(node, feeds, 22))
