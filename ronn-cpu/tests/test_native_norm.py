"""The native (C) LayerNormalization, Softmax and LogSoftmax kernels called directly, against
numpy references written here: MiniLM/GPT-2 rows, odd widths (1, 7, 33, ...), float64, rows of
NaN and infinities, and arguments the C code declines (numba serves them)."""

from __future__ import annotations

import numpy as np
import pytest
from ronn_cpu import native

pytestmark = pytest.mark.skipif(native.extension("norm") is None, reason="no C compiler here")

RNG = np.random.default_rng(11)

# (rows, width): MiniLM's and GPT-2's hidden rows, their attention rows, odd widths, one long row
SHAPES = [(28, 384), (64, 768), (336, 14), (768, 32), (1, 1), (5, 1), (3, 7), (9, 33), (4, 100), (2, 5000)]
TOL = {np.float32: 1e-5, np.float64: 1e-13}


def _facade():
    return native.facade("norm")


def reference_layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, epsilon: float):
    """y, mean and 1 / std per row, in float64."""
    w = x.astype(np.float64)
    mean = w.mean(axis=1)
    var = ((w - mean[:, None]) ** 2).mean(axis=1)
    inv = 1 / np.sqrt(var + epsilon)
    y = (w - mean[:, None]) * inv[:, None] * scale.astype(np.float64)
    return (y if bias is None else y + bias.astype(np.float64)), mean, inv


def reference_softmax(x: np.ndarray, log: bool) -> np.ndarray:
    """Softmax or LogSoftmax per row in float64; a row with a NaN or +inf, or all -inf, is NaN."""
    w = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        shifted = w - w.max(axis=1, keepdims=True)
        total = np.exp(shifted).sum(axis=1, keepdims=True)
        y = shifted - np.log(total) if log else np.exp(shifted) / total
    bad = np.isnan(w).any(axis=1) | np.isposinf(w).any(axis=1) | np.isneginf(w).all(axis=1)
    y[bad] = np.nan
    return y


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_norm_matches_reference(shape, dtype, parallel, with_bias):
    x = (RNG.standard_normal(shape) * 3 + 2).astype(dtype)
    scale = RNG.standard_normal(shape[1]).astype(dtype)
    bias = RNG.standard_normal(shape[1]).astype(dtype) if with_bias else None
    y = np.full(shape, 7, dtype)
    mean = np.full(shape[0], 7.0)
    inv = np.full(shape[0], 7.0)
    fn = _facade().layer_norm_par if parallel else _facade().layer_norm
    fn(x, scale, scale if bias is None else bias, with_bias, 1e-5, y, mean, inv)
    want, want_mean, want_inv = reference_layer_norm(x, scale, bias, 1e-5)
    np.testing.assert_allclose(y, want, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(mean, want_mean, rtol=1e-13, atol=1e-13)  # float64 statistics either way
    np.testing.assert_allclose(inv, want_inv, rtol=1e-12)


def test_layer_norm_sums_in_double():
    x = np.full((1, 1 << 16), 1.0 + 2.0**-23, np.float32)  # a float32 sum would drift
    x[0, ::2] = 1.0
    y = np.empty_like(x)
    mean, inv = np.empty(1), np.empty(1)
    ones = np.ones(x.shape[1], np.float32)
    _facade().layer_norm(x, ones, ones, False, 0.0, y, mean, inv)
    assert mean[0] == 1.0 + 2.0**-24
    np.testing.assert_allclose(y[0, :4], [-1, 1, -1, 1], rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_matches_reference(shape, dtype, log):
    x = (RNG.standard_normal(shape) * 5).astype(dtype)
    y = np.full(shape, 7, dtype)
    (_facade().log_softmax if log else _facade().softmax)(x, y)
    want = reference_softmax(x, log)
    np.testing.assert_allclose(y, want, rtol=TOL[dtype], atol=TOL[dtype] if log else 1e-30)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("width", [3, 20, 70])
def test_softmax_special_rows(dtype, log, width):
    """NaN anywhere, a +inf, or all -inf: NaN; -inf beside finite values: 0 (log: -inf); huge
    and tiny spreads: exp's whole range, underflow included."""
    x = (RNG.standard_normal((8, width)) * 3).astype(dtype)
    x[0, width // 2] = np.nan
    x[1, -1] = np.inf
    x[2] = -np.inf
    x[3, :2] = -np.inf
    x[4] = np.finfo(dtype).max
    x[5, 0] = np.finfo(dtype).min
    x[6] = np.linspace(-110.0, 0.0, width)  # down past float32's denormals
    x[7, 0] = 1e30
    y = np.empty_like(x)
    (_facade().log_softmax if log else _facade().softmax)(x, y)
    want = reference_softmax(x, log)
    assert np.array_equal(np.isnan(y), np.isnan(want))
    assert np.isnan(y[:3]).all() and not np.isnan(y[3:]).any()
    np.testing.assert_allclose(y, want, rtol=TOL[dtype], atol=TOL[dtype] if log else 1e-37, equal_nan=True)


def test_float32_exp_covers_its_range():
    """exp(x - max) for x - max from 0 down to -110: float32 denormals, then 0."""
    width = 1 << 15
    x = -np.linspace(0.0, 110.0, width, dtype=np.float32).reshape(1, width)
    y = np.empty_like(x)
    _facade().softmax(x, y)
    want = reference_softmax(x, False)
    assert y[0, -1] == 0 and 0 < y[y > 0].min() < np.finfo(np.float32).tiny
    np.testing.assert_allclose(y, want, rtol=2e-6, atol=3e-45)


def test_strided_input_falls_back_to_numba():
    x = RNG.standard_normal((6, 40)).astype(np.float32)[:, ::2]  # not C-contiguous
    y = np.empty((6, 20), np.float32)
    c = native.extension("norm")
    assert c.softmax(1, x, y) is NotImplemented
    _facade().softmax(x, y)
    np.testing.assert_allclose(y, reference_softmax(x, False), rtol=1e-5)
    scale, mean, inv = np.ones(20, np.float32), np.empty(6), np.empty(6)
    assert c.layer_norm(1, x, scale, scale, False, 1e-5, y, mean, inv) is NotImplemented
    _facade().layer_norm(x, scale, scale, False, 1e-5, y, mean, inv)
    np.testing.assert_allclose(y, reference_layer_norm(x, scale, None, 1e-5)[0], rtol=1e-5, atol=1e-5)


def test_in_place_falls_back_to_numba():
    x = (RNG.standard_normal((4, 9)) * 3).astype(np.float32)
    want = reference_softmax(x, False)
    assert native.extension("norm").softmax(1, x, x) is NotImplemented  # overlapping: declined
    _facade().softmax(x, x)
    np.testing.assert_allclose(x, want, rtol=1e-5)


def test_mixed_dtypes_and_bad_shapes_are_declined():
    c = native.extension("norm")
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    scale, rows = np.ones(8, np.float32), np.empty(3)
    assert c.softmax(1, x, np.empty((3, 8), np.float64)) is NotImplemented
    assert c.softmax(1, x, np.empty((3, 9), np.float32)) is NotImplemented
    assert c.softmax(1, x.reshape(3, 2, 4), np.empty((3, 2, 4), np.float32)) is NotImplemented
    assert c.layer_norm(1, x, scale.astype(np.float64), scale, True, 1e-5, np.empty_like(x), rows, rows.copy()) \
        is NotImplemented  # fmt: skip
    assert c.layer_norm(1, x, scale[:7], scale, True, 1e-5, np.empty_like(x), rows, rows.copy()) is NotImplemented
    assert c.layer_norm(1, x, scale, scale, True, 1e-5, np.empty_like(x), rows.astype(np.float32), rows) \
        is NotImplemented  # fmt: skip
    assert c.layer_norm(1, x, scale, scale, True, 1e-5, np.empty_like(x), rows, rows.copy()) is None
    assert c.softmax(1, x, np.empty_like(x)) is None


def test_facade_is_what_load_returns_and_delegates_other_names():
    from ronn_cpu.jit import load

    module = load("norm")
    assert module.__name__ == "ronn_cpu.native.norm"
    assert callable(module._layer_norm_rows)  # a numba helper, served by the numba module


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("threads", [1, 2])
def test_rows_past_numbas_limit_run_natively_in_a_session(op, threads, monkeypatch):
    """A vocabulary-sized softmax (past the 64K elements numba's kernels take) through a session."""
    import ronn
    from onnx import TensorProto, helper

    facade = native.facade("norm")
    calls: list[str] = []
    for name in ("softmax", "log_softmax", "softmax_par", "log_softmax_par"):
        kernel = getattr(facade, name)
        monkeypatch.setattr(facade, name, lambda *a, _k=kernel, _n=name: (calls.append(_n), _k(*a))[1])

    x = (RNG.standard_normal((4, 50257)) * 4).astype(np.float32)
    x[1, :] = -np.inf  # a fully masked row: NaN, as onnxruntime gives
    node = helper.make_node(op, ["x"], ["y"], axis=-1)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    providers = [("CPUExecutionProvider", {"intra_op_num_threads": str(threads)})]
    (y,) = ronn.InferenceSession(model.SerializeToString(), providers=providers).run(None, {"x": x})
    wide = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        shifted = wide - wide.max(axis=1, keepdims=True)
        logsum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    want = shifted - logsum if op == "LogSoftmax" else np.exp(shifted - logsum)
    np.testing.assert_allclose(y, want.astype(np.float32), rtol=2e-5, atol=1e-7 if op == "Softmax" else 2e-5)
    kernel = "softmax" if op == "Softmax" else "log_softmax"
    assert calls == [kernel + ("_par" if threads > 1 else "")]
