"""The native (C) masked Softmax of attention scores called directly, against a numpy reference
written here: MiniLM's and GPT-2's heads, odd row lengths (1, 5, 16, 17, 33, rows longer than
a group), float64, conditions and masks broadcast, per element or strided, NaN and -inf rows,
and arguments the C code declines (numba serves them)."""

from __future__ import annotations

import numpy as np
import pytest
from ronn_cpu import native

pytestmark = pytest.mark.skipif(native.extension("attention") is None, reason="no C compiler here")

RNG = np.random.default_rng(13)
TOL = {np.float32: {"rtol": 1e-5, "atol": 1e-37}, np.float64: {"rtol": 1e-13, "atol": 1e-300}}

# scores (A, B, S, T), mask, condition: MiniLM, GPT-2, then odd ones
CASES = {
    "minilm": ((2, 12, 14, 14), (2, 1, 1, 14), None),
    "gpt2": ((2, 12, 32, 32), (2, 1, 1, 32), (1, 1, 32, 32)),
    "gpt2-causal-only": ((2, 12, 32, 32), None, (1, 1, 32, 32)),
    "one-key": ((1, 3, 4, 1), (1, 1, 4, 1), (1, 3, 4, 1)),
    "five": ((2, 1, 3, 5), (2, 1, 3, 5), (2, 1, 1, 5)),
    "sixteen": ((1, 2, 5, 16), (1, 2, 5, 16), (1, 1, 5, 16)),
    "seventeen": ((1, 2, 5, 17), (1, 1, 1, 17), (1, 2, 5, 17)),
    "row-per-query": ((2, 3, 4, 33), (2, 3, 4, 1), (2, 1, 4, 1)),
    "one-query": ((2, 2, 1, 40), (2, 1, 1, 40), None),
    "long": ((1, 2, 8, 300), (1, 1, 1, 300), (1, 1, 8, 300)),
    "longer-than-a-group": ((1, 1, 3, 4100), (1, 1, 1, 4100), (1, 1, 3, 4100)),
    "plain": ((3, 2, 6, 9), None, None),
}


def _facade():
    return native.facade("attention")


def reference(s, scale, condition, keeps, fill, mask):
    """The body's steps in the scores' type (S * scale, Where, + mask), the Softmax in float64;
    a row whose maximum is not finite is NaN."""
    t = s * s.dtype.type(scale)
    if condition is not None:
        t = np.where(condition, t, fill) if keeps else np.where(condition, fill, t)
    if mask is not None:
        t = t + mask
    w = t.astype(np.float64)
    top = w.max(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(w - top)
        y = e / e.sum(axis=-1, keepdims=True)
    y[np.broadcast_to(~np.isfinite(top), y.shape)] = np.nan
    return y


def _operands(shape, mask_shape, condition_shape, dtype):
    mask = None
    if mask_shape is not None:
        mask = np.where(RNG.random(mask_shape) < 0.2, -np.inf, RNG.standard_normal(mask_shape)).astype(dtype)
    condition = None if condition_shape is None else RNG.random(condition_shape) < 0.7
    return mask, condition


def _run(fn, s, scale, condition, keeps, fill, mask):
    dtype = s.dtype
    dummy_mask, dummy_condition = np.zeros((1, 1, 1, 1), dtype), np.zeros((1, 1, 1, 1), np.bool_)
    fn(s, dtype.type(scale), dummy_condition if condition is None else condition, keeps, dtype.type(fill),
       condition is not None, dummy_mask if mask is None else mask, mask is not None)  # fmt: skip


def _check(got, want, dtype):
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, equal_nan=True, **TOL[dtype])


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keeps", [True, False])
@pytest.mark.parametrize("parallel", [False, True])
def test_softmax_matches_reference(case, dtype, keeps, parallel):
    shape, mask_shape, condition_shape = CASES[case]
    s = (RNG.standard_normal(shape) * 4).astype(dtype)
    mask, condition = _operands(shape, mask_shape, condition_shape, dtype)
    fill = np.finfo(dtype).min
    want = reference(s, 0.3, condition, keeps, fill, mask)
    name = f"softmax_{'f32' if dtype == np.float32 else 'f64'}{'_par' if parallel else ''}"
    _run(getattr(_facade(), name), s, 0.3, condition, keeps, fill, mask)
    _check(s, want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [5, 14, 40])
def test_non_finite_rows(dtype, width):
    """All -inf, a +inf, a NaN (in the scores or the mask): NaN rows; -inf fills: zeros; a
    finfo.min mask: uniform; scores spread over exp's whole range: underflow to 0."""
    s = (RNG.standard_normal((1, 2, 7, width)) * 3).astype(dtype)
    mask = np.zeros((1, 1, 7, width), dtype)
    mask[0, 0, 0] = -np.inf
    mask[0, 0, 1, 1] = np.inf
    mask[0, 0, 2, -1] = np.nan
    mask[0, 0, 3] = np.finfo(dtype).min
    mask[0, 0, 4, :2] = -np.inf
    s[0, 1, 5, 0] = np.nan
    s[:, :, 6] = np.linspace(0.0, -120.0, width)
    want = reference(s, 1.0, None, True, 0, mask)
    _run(_facade().softmax_f32 if dtype == np.float32 else _facade().softmax_f64, s, 1.0, None, True, 0, mask)
    _check(s, want, dtype)
    assert np.isnan(s[:, :, :3]).all() and np.isnan(s[0, 1, 5]).all() and not np.isnan(s[0, 0, 5]).any()
    np.testing.assert_allclose(s[0, 0, 3], 1 / width, rtol=1e-6)
    assert (s[0, 0, 4, :2] == 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fill", [-np.inf, 0.0])
def test_fills(dtype, fill):
    """A row the condition fills whole with -inf is NaN; partly, zeros there."""
    s = RNG.standard_normal((2, 3, 6, 20)).astype(dtype)
    condition = RNG.random((2, 1, 6, 20)) < 0.5
    condition[0, 0, 0] = False
    want = reference(s, 0.5, condition, True, fill, None)
    _run(_facade().softmax_f32 if dtype == np.float32 else _facade().softmax_f64, s, 0.5, condition, True, fill, None)
    _check(s, want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_operands(dtype):
    """A transposed mask, a reversed condition, a broadcast view (stride 0): taken as they are."""
    s = RNG.standard_normal((2, 3, 9, 21)).astype(dtype)
    mask = RNG.standard_normal((2, 3, 21, 9)).astype(dtype).transpose(0, 1, 3, 2)
    condition = (RNG.random((1, 1, 9, 21)) < 0.8)[..., ::-1]
    want = reference(s, 0.7, condition, False, -50.0, mask)
    _run(_facade().softmax_f32 if dtype == np.float32 else _facade().softmax_f64, s, 0.7, condition, False, -50.0, mask)
    _check(s, want, dtype)
    s = RNG.standard_normal((2, 3, 9, 21)).astype(dtype)
    row = np.broadcast_to(RNG.standard_normal((2, 1, 1, 21)).astype(dtype), (2, 3, 9, 21))
    want = reference(s, 0.7, None, True, 0, row)
    _run(_facade().softmax_f32 if dtype == np.float32 else _facade().softmax_f64, s, 0.7, None, True, 0, row)
    _check(s, want, dtype)


def test_float32_exp_over_its_range():
    """Scores from 0 down to -110: within a few ulps of libm, 0 below float32's normal range."""
    s = np.linspace(0.0, -110.0, 4096, dtype=np.float32).reshape(1, 1, 1, 4096)
    want = reference(s, 1.0, None, True, 0, None)
    _run(_facade().softmax_f32, s, 1.0, None, True, 0, None)
    np.testing.assert_allclose(s, want, rtol=2e-6, atol=1e-37)


def test_declined_arguments():
    c = native.extension("attention")
    s = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)
    mask, condition = np.zeros((1, 1, 1, 4), np.float32), np.ones((1, 1, 3, 4), np.bool_)
    args = (np.float32(1), condition, True, np.float32(0), True, mask, True)
    assert c.softmax(1, s.transpose(0, 1, 3, 2), *args) is NotImplemented  # strided scores
    assert c.softmax(1, s.reshape(2, 3, 4), *args) is NotImplemented  # not 4-D
    assert c.softmax(1, s, *args[:5], mask.astype(np.float64), True) is NotImplemented  # mask's type
    assert c.softmax(1, s, *args[:5], np.zeros((1, 1, 1, 3), np.float32), True) is NotImplemented  # no broadcast
    assert c.softmax(1, s, args[0], condition.astype(np.uint8), *args[2:]) is NotImplemented  # not bool
    assert c.softmax(1, s, args[0], np.ones((2, 2, 3, 4), np.bool_), *args[2:]) is NotImplemented
    assert c.softmax(1, s, *args) is None


def test_a_byte_condition_falls_back_to_numba():
    s = RNG.standard_normal((2, 2, 5, 6)).astype(np.float32)
    condition = (RNG.random((1, 1, 5, 6)) < 0.6).astype(np.uint8)
    want = reference(s, 0.5, condition.astype(bool), True, -1e4, None)
    dummy = np.zeros((1, 1, 1, 1), np.float32)
    _facade().softmax_f32(s, np.float32(0.5), condition, True, np.float32(-1e4), True, dummy, False)
    _check(s, want, np.float32)


def test_facade_is_what_load_returns_and_delegates_other_names():
    from ronn_cpu.jit import load

    module = load("attention")
    assert module.__name__ == "ronn_cpu.native.attention"
    assert callable(module._exp_f32)  # a numba helper, served by the numba module
