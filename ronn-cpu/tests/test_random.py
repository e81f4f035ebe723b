"""Random kernels: dtypes and shapes (checked against onnxruntime where it has the kernel),
seed reproducibility, fresh draws without a seed, and the distributions' statistics.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import ronn
from ronn.errors import InvalidGraphError, KernelError

FLOAT, DOUBLE, FLOAT16, BFLOAT16 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16
INT32, INT64, BOOL, UINT8 = TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL, TensorProto.UINT8

_NUMPY = {FLOAT: np.float32, DOUBLE: np.float64, FLOAT16: np.float16, BFLOAT16: ml_dtypes.bfloat16,
          INT32: np.int32, INT64: np.int64, BOOL: np.bool_, UINT8: np.uint8}


def _model(op: str, inputs: list[tuple[str, int]], out_type: int, opset: int, **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, [n for n, _ in inputs], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(name, dtype, None) for name, dtype in inputs],
        [helper.make_tensor_value_info("y", out_type, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    return model


def _session(model: onnx.ModelProto) -> ronn.InferenceSession:
    return ronn.InferenceSession(model.SerializeToString())


def _ort(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


# model, feeds, output element type of every op
def _cases(opset: int, out_type: int) -> list[tuple[str, onnx.ModelProto, dict]]:
    x = np.zeros((3, 4), np.float32)
    p = np.full((3, 4), 0.5, np.float32)
    logits = np.zeros((2, 5), np.float32)
    return [
        ("RandomUniform", _model("RandomUniform", [], out_type, opset, shape=[3, 4], dtype=out_type), {}),
        ("RandomNormal", _model("RandomNormal", [], out_type, opset, shape=[3, 4], dtype=out_type), {}),
        ("RandomUniformLike", _model("RandomUniformLike", [("x", FLOAT)], out_type, opset, dtype=out_type), {"x": x}),
        ("RandomNormalLike", _model("RandomNormalLike", [("x", FLOAT)], out_type, opset, dtype=out_type), {"x": x}),
        ("Bernoulli", _model("Bernoulli", [("x", FLOAT)], out_type, max(opset, 15), dtype=out_type), {"x": p}),
        ("Multinomial", _model("Multinomial", [("x", FLOAT)], INT32, max(opset, 7), sample_size=4), {"x": logits}),
    ]


@pytest.mark.parametrize("out_type", [FLOAT, DOUBLE])  # onnxruntime has no float16 random kernels
def test_dtypes_and_shapes_match_onnxruntime(out_type: int) -> None:
    for name, model, feeds in _cases(15, out_type):
        got = _session(model).run(None, feeds)[0]
        want = _ort(model, feeds)
        assert isinstance(got, np.ndarray), name
        assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, want.dtype)


@pytest.mark.parametrize("out_type", [FLOAT, DOUBLE, FLOAT16, BFLOAT16])
def test_opset22_dtypes(out_type: int) -> None:
    for name, model, feeds in _cases(22, out_type):
        got = _session(model).run(None, feeds)[0]
        want = np.int32 if name == "Multinomial" else _NUMPY[out_type]
        assert got.dtype == want, (name, got.dtype)
        assert got.shape == ((2, 4) if name == "Multinomial" else (3, 4)), name


def test_like_ops_default_to_the_input_dtype() -> None:
    for op in ("RandomUniformLike", "RandomNormalLike", "Bernoulli"):
        model = _model(op, [("x", DOUBLE)], DOUBLE, 22)
        got = _session(model).run(None, {"x": np.full((2, 0, 3), 0.5)})[0]
        assert got.dtype == np.float64 and got.shape == (2, 0, 3)
        got = _session(model).run(None, {"x": np.full((5,), 0.5)})[0]
        assert got.dtype == np.float64 and got.shape == (5,)


def test_like_ops_need_a_float_dtype() -> None:
    model = _model("RandomUniformLike", [("x", INT32)], INT32, 22)
    with pytest.raises(KernelError, match="dtype"):
        _session(model).run(None, {"x": np.zeros((2,), np.int32)})
    model = _model("RandomNormalLike", [("x", INT32)], FLOAT16, 22, dtype=FLOAT16)
    got = _session(model).run(None, {"x": np.zeros((2, 3), np.int32)})[0]
    assert got.dtype == np.float16 and got.shape == (2, 3)


@pytest.mark.parametrize("out_type", [BOOL, INT32, UINT8, DOUBLE, BFLOAT16])
def test_bernoulli_output_types(out_type: int) -> None:
    model = _model("Bernoulli", [("x", FLOAT)], out_type, 22, dtype=out_type)
    p = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    got = _session(model).run(None, {"x": p})[0]
    assert got.dtype == _NUMPY[out_type]
    np.testing.assert_array_equal(got.astype(np.float64), [0, 1, 0, 1])


def test_bad_dtype_attributes_fail_at_session_creation() -> None:
    for model in (
        _model("RandomUniform", [], INT32, 22, shape=[2], dtype=INT32),
        _model("Multinomial", [("x", FLOAT)], FLOAT, 22, dtype=FLOAT),
        _model("Bernoulli", [("x", FLOAT)], TensorProto.STRING, 22, dtype=TensorProto.STRING),
    ):
        with pytest.raises(InvalidGraphError, match="dtype"):
            _session(model)


@pytest.mark.parametrize("opset", [15, 22])
def test_seed_reproducible_across_runs_and_sessions(opset: int) -> None:
    for name, model, feeds in _cases(opset, FLOAT):
        seeded = onnx.ModelProto.FromString(model.SerializeToString())
        seeded.graph.node[0].attribute.append(helper.make_attribute("seed", 1.5))
        session = _session(seeded)
        first = session.run(None, feeds)[0]
        np.testing.assert_array_equal(session.run(None, feeds)[0], first, err_msg=name)
        np.testing.assert_array_equal(_session(seeded).run(None, feeds)[0], first, err_msg=name)


def test_different_seeds_and_no_seed_draw_different_values() -> None:
    def model(seed: float | None) -> onnx.ModelProto:
        attrs = {"shape": [1000]}
        if seed is not None:
            attrs["seed"] = seed
        return _model("RandomNormal", [], FLOAT, 22, **attrs)

    a = _session(model(1.0)).run(None, {})[0]
    b = _session(model(2.0)).run(None, {})[0]
    c = _session(model(-1.0)).run(None, {})[0]
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    session = _session(model(None))
    first, second = session.run(None, {})[0], session.run(None, {})[0]
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, _session(model(None)).run(None, {})[0])


# --- statistics ---------------------------------------------------------------------------

_SAMPLES = 200_000


def test_uniform_statistics() -> None:
    model = _model("RandomUniform", [], DOUBLE, 22, shape=[_SAMPLES], dtype=DOUBLE, low=-2.0, high=6.0)
    values = _session(model).run(None, {})[0]
    assert values.min() >= -2.0 and values.max() < 6.0
    assert abs(values.mean() - 2.0) < 0.03
    assert abs(values.var() - 64 / 12) < 0.05
    counts = np.histogram(values, bins=8, range=(-2, 6))[0]
    assert np.all(np.abs(counts / _SAMPLES - 1 / 8) < 0.005)


def test_uniform_like_statistics() -> None:
    model = _model("RandomUniformLike", [("x", FLOAT)], FLOAT, 22, low=1.0, high=2.0, seed=3.0)
    values = _session(model).run(None, {"x": np.zeros((400, 500), np.float32)})[0]
    assert values.dtype == np.float32 and values.shape == (400, 500)
    assert abs(values.mean() - 1.5) < 0.005
    assert abs(values.var() - 1 / 12) < 0.002


@pytest.mark.parametrize("op", ["RandomNormal", "RandomNormalLike"])
def test_normal_statistics(op: str) -> None:
    if op == "RandomNormal":
        model = _model(op, [], FLOAT, 22, shape=[_SAMPLES], mean=3.0, scale=0.5)
        feeds = {}
    else:
        model = _model(op, [("x", FLOAT)], FLOAT, 22, mean=3.0, scale=0.5)
        feeds = {"x": np.zeros((_SAMPLES,), np.float32)}
    values = _session(model).run(None, feeds)[0].astype(np.float64)
    assert abs(values.mean() - 3.0) < 0.01
    assert abs(values.std() - 0.5) < 0.01
    within_one_sigma = np.mean(np.abs(values - 3.0) < 0.5)
    assert abs(within_one_sigma - 0.6827) < 0.01


def test_bernoulli_statistics() -> None:
    p = np.repeat(np.array([0.0, 0.1, 0.5, 0.9, 1.0]), 40_000)
    model = _model("Bernoulli", [("x", DOUBLE)], DOUBLE, 22)
    draws = _session(model).run(None, {"x": p})[0].reshape(5, -1)
    means = draws.mean(axis=1)
    np.testing.assert_allclose(means, [0.0, 0.1, 0.5, 0.9, 1.0], atol=0.01)
    assert set(np.unique(draws)) <= {0.0, 1.0}


def test_multinomial_statistics() -> None:
    probabilities = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.0, 0.25, 0.05]])
    with np.errstate(divide="ignore"):
        logits = np.log(probabilities).astype(np.float32) + 5  # unnormalised log-probabilities
    model = _model("Multinomial", [("x", FLOAT)], INT64, 22, sample_size=50_000, dtype=INT64)
    samples = _session(model).run(None, {"x": logits})[0]
    assert samples.dtype == np.int64 and samples.shape == (2, 50_000)
    for row in range(2):
        frequencies = np.bincount(samples[row], minlength=4) / samples.shape[1]
        np.testing.assert_allclose(frequencies, probabilities[row], atol=0.01)
    assert not np.any(samples[1] == 1)  # a zero-probability class is never drawn


def test_multinomial_seeded_matches_across_sessions_and_default_int32() -> None:
    model = _model("Multinomial", [("x", DOUBLE)], INT32, 7, sample_size=7, seed=11.0)
    logits = np.random.default_rng(0).standard_normal((3, 6))
    a = _session(model).run(None, {"x": logits})[0]
    b = _session(model).run(None, {"x": logits})[0]
    assert a.dtype == np.int32 and a.shape == (3, 7)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() < 6
