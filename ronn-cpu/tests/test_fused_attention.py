"""The ``ronn::ScaledDotProductAttention`` kernel against an independent float64 numpy
reference of its function body, on odd shapes, broadcast masks, conditions and NaN rows."""

from __future__ import annotations

import numpy as np
import pytest

from ronn.ir import Node
from ronn.kernel import KernelContext
from ronn_cpu.kernels.fused_attention import scaled_dot_product_attention

RNG = np.random.default_rng(5)


def kernel(scale: float, keeps: int = 1):
    node = Node("ScaledDotProductAttention", ["q", "k", "v", "m", "c", "f"], ["y"], domain="ronn",
                attributes={"scale": scale, "condition_keeps": keeps})
    return scaled_dot_product_attention(KernelContext(node=node, opset=1, xp=np, provider="CPUExecutionProvider"))


def reference(q, k, v, scale, mask=None, condition=None, fill=None, keeps=1):
    """The body in float64: MatMul, Mul by float32(scale), Where, Add, Softmax(-1), MatMul."""
    s = np.matmul(q.astype(np.float64), k.astype(np.float64)) * float(np.float32(scale))
    if condition is not None:
        s = np.where(condition, s, fill) if keeps else np.where(condition, fill, s)
    if mask is not None:
        s = s + mask
    with np.errstate(invalid="ignore", over="ignore"):
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
    return np.matmul(s, v.astype(np.float64))


# (q, k (already transposed), v, mask, condition): mask -inf here and there, condition random
CASES = {
    "bert": ((2, 3, 5, 4), (2, 3, 4, 5), (2, 3, 5, 4), (2, 1, 1, 5), None),
    "gpt2": ((2, 3, 5, 4), (2, 3, 4, 5), (2, 3, 5, 4), (2, 1, 1, 5), (1, 1, 5, 5)),
    "keys-differ": ((2, 3, 4, 5), (2, 3, 5, 6), (2, 3, 6, 7), (2, 1, 4, 6), (1, 1, 4, 6)),
    "rank3": ((3, 4, 5), (3, 5, 6), (3, 6, 7), (6,), None),
    "rank2": ((4, 5), (5, 6), (6, 7), (4, 6), (4, 1)),
    "v-widens": ((1, 3, 4, 5), (1, 3, 5, 6), (2, 3, 6, 7), (2, 1, 4, 6), None),
    "mask-raises-rank": ((3, 4, 5), (3, 5, 6), (3, 6, 7), (1, 3, 4, 6), None),
    "mask-per-query": ((2, 3, 4, 5), (2, 3, 5, 6), (2, 3, 6, 7), (2, 3, 4, 1), (2, 1, 4, 6)),
    "rank5": ((1, 2, 3, 4, 5), (1, 2, 3, 5, 6), (1, 2, 3, 6, 7), None, (4, 6)),
    "long-rows": ((1, 2, 3, 8), (1, 2, 8, 300), (1, 2, 300, 5), (1, 1, 1, 300), None),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keeps", [1, 0])
@pytest.mark.parametrize("case", list(CASES))
def test_kernel_matches_the_body(case: str, keeps: int, dtype) -> None:
    qs, ks, vs, ms, cs = CASES[case]
    q, k, v = (RNG.standard_normal(s).astype(dtype) for s in (qs, ks, vs))
    mask = None if ms is None else np.where(RNG.random(ms) < 0.3, -np.inf, RNG.standard_normal(ms)).astype(dtype)
    condition = None if cs is None else RNG.random(cs) < 0.7
    fill = None if cs is None else np.array(np.finfo(dtype).min, dtype)
    (y,) = kernel(0.3, keeps)(q, k, v, mask, condition, fill)
    expected = reference(q, k, v, 0.3, mask, condition, fill, keeps)
    assert y.dtype == np.dtype(dtype) and y.shape == expected.shape
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-13}
    np.testing.assert_allclose(y, expected, equal_nan=True, **tol)
    assert np.array_equal(np.isnan(y), np.isnan(expected))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_rows(dtype) -> None:
    """All -inf, a +inf or a NaN in a row: NaN, as Softmax gives; finfo.min rows: uniform."""
    q = np.ones((1, 1, 4, 2), dtype)
    k = np.ones((1, 1, 2, 3), dtype)
    v = RNG.standard_normal((1, 1, 3, 2)).astype(dtype)
    mask = np.zeros((1, 1, 4, 3), dtype)
    mask[0, 0, 0] = -np.inf
    mask[0, 0, 1, 1] = np.inf
    mask[0, 0, 2, 2] = np.nan
    mask[0, 0, 3] = np.finfo(dtype).min
    (y,) = kernel(1.0)(q, k, v, mask)
    assert np.isnan(y[0, 0, :3]).all()
    np.testing.assert_allclose(y[0, 0, 3], v[0, 0].mean(0), rtol=1e-5)


def test_exp_is_close_to_libm_over_its_range() -> None:
    """float32 scores cover exp's whole range (underflow to 0 included) within a few ulps."""
    width = 4096
    q = np.ones((1, 1, 1, 1), np.float32)
    k = np.linspace(-110.0, 0.0, width, dtype=np.float32).reshape(1, 1, 1, width)
    v = np.eye(width, dtype=np.float32)[None, None]
    (y,) = kernel(1.0)(q, k, v)
    expected = reference(q, k, v, 1.0)
    np.testing.assert_allclose(y, expected, rtol=2e-6, atol=1e-37)


def test_the_result_is_laid_out_for_the_head_merge() -> None:
    """A 4-D result is a (B, H, S, D) view of a (B, S, H, D) array: Transpose(0, 2, 1, 3) and
    Reshape to (B, S, H * D) after it copy nothing."""
    q = RNG.standard_normal((2, 3, 5, 4)).astype(np.float32)
    k = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    v = RNG.standard_normal((2, 3, 5, 4)).astype(np.float32)
    (y,) = kernel(0.5)(q, k, v)
    merged = y.transpose(0, 2, 1, 3)
    assert merged.flags.c_contiguous
    np.testing.assert_allclose(y, reference(q, k, v, 0.5), rtol=1e-5, atol=1e-6)
