"""Kernel of ``ronn::ScaledDotProductAttention`` (the optimizer's ``attention_fusion``).

``Y = MatMul(Softmax(S, axis=-1), V)`` with ``S = MatMul(Q, K) * scale`` (K already transposed),
then ``Where(condition, S, fill)`` (``condition_keeps=1``; ``Where(condition, fill, S)`` for 0)
and ``+ mask`` when given: the function body of ``ronn.optimizer.fused_ops``, step by step.
``scale`` is rounded to float32 first, as the body's ``Constant(value_float)`` is.

float32/float64 on numpy, ranks 2 to 4: one batched GEMM into a fresh scores array, one numba
pass per head (scale, fill, mask and Softmax in place; masks and conditions as they are, their
axes of size 1 broadcast in the pass), one batched GEMM into the result. A 4-D result is laid
out as (batch, length, heads, depth) and returned as its (batch, heads, length, depth) view, so
the usual head merge (Transpose 0,2,1,3 then Reshape) needs no copy. Anything else (other
types, more axes, a mask that widens the scores, CuPy) runs the body's steps with ``xp``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ronn.kernel import KernelContext, KernelRun, KernelTable

from .. import jit

KERNELS = KernelTable(domain="ronn")

_FAST = (np.dtype(np.float32), np.dtype(np.float64))
#: the Softmax pass's work per score (the exp and the row's sweeps), for ``jit.parallel``
_SOFTMAX_WORK = 16


def _as_4d(array: np.ndarray, scores: tuple[int, ...], rank: int) -> np.ndarray | None:
    """``array`` (a mask or condition) as 4-D, when it broadcasts to the scores (``rank`` axes,
    ``scores`` padded to 4-D) without widening them: each axis of size 1 or the scores'.
    None otherwise."""
    if array.ndim > rank:
        return None
    if array.ndim < 4:
        array = array.reshape((1,) * (4 - array.ndim) + array.shape)
    for size, full in zip(array.shape, scores):
        if size != full and size != 1:
            return None
    return array


def _lead(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> tuple[int, ...]:
    """The batch axes of the result (before the last two)."""
    lead = q.shape[:-2]
    if lead == k.shape[:-2] == v.shape[:-2]:
        return lead
    return np.broadcast_shapes(lead, k.shape[:-2], v.shape[:-2])


@KERNELS.register("ScaledDotProductAttention", since=1)
def scaled_dot_product_attention(ctx: KernelContext) -> KernelRun:
    """Attention in two batched GEMMs around one numba pass over the scores."""
    xp = ctx.xp
    scale32 = float(np.float32(ctx.attr("scale", 1.0)))
    keeps = bool(int(ctx.attr("condition_keeps", 1)))
    dummies: dict[np.dtype, tuple[np.ndarray, np.ndarray]] = {}
    kernels: dict[str, Any] = {}

    def kernel(name: str, work: int) -> Any:
        if not kernels:
            kernels["module"] = jit.load("attention")
        name += "_par" if jit.parallel(work) else ""
        found = kernels.get(name)
        if found is None:
            found = kernels[name] = getattr(kernels["module"], name)
        return found

    def steps(q, k, v, mask, condition, fill):
        """The body's operators, one after the other (any type, any namespace)."""
        s = xp.matmul(q, k)
        s = s * s.dtype.type(scale32)
        if condition is not None:
            s = xp.where(condition, s, fill) if keeps else xp.where(condition, fill, s)
        if mask is not None:
            s = s + mask
        with np.errstate(invalid="ignore", over="ignore"):
            s = s - xp.max(s, axis=-1, keepdims=True)
            xp.exp(s, out=s)
            s /= xp.sum(s, axis=-1, keepdims=True)
        return xp.matmul(s, v)

    def fast(q, k, v, mask, condition, fill):
        dtype = q.dtype
        length, width = q.shape[-2], v.shape[-1]
        lead = _lead(q, k, v)
        if len(lead) > 2:  # the numba pass takes 4-D scores: more axes run the body's steps
            return None
        full = lead + (length, k.shape[-1])
        scores = (1,) * (2 - len(lead)) + full  # 4-D
        if dtype not in dummies:
            dummies[dtype] = (np.zeros((1, 1, 1, 1), dtype), np.zeros((1, 1, 1, 1), np.bool_))
        mask4, condition4 = dummies[dtype]
        if mask is not None:
            mask4 = _as_4d(mask, scores, len(full))
        if condition is not None:
            condition4 = _as_4d(condition, scores, len(full))
            if fill.ndim > len(full):
                return None
        if mask4 is None or condition4 is None:
            return None  # a mask widening the scores: the body's steps
        s = np.matmul(q, k)
        if s.shape != full:  # V's batch axes widen the scores
            s = np.ascontiguousarray(np.broadcast_to(s, full))
        s = s.reshape(scores)
        normalize = kernel("softmax_f32" if dtype == np.float32 else "softmax_f64", s.size * _SOFTMAX_WORK)
        fill_value = dtype.type(0) if fill is None else dtype.type(fill.reshape(-1)[0])
        normalize(s, dtype.type(scale32), condition4, keeps, fill_value, condition is not None, mask4, mask is not None)
        if len(lead) < 2:
            return np.matmul(s.reshape(full), v)
        # (B, H, S, Dv) as a view of (B, S, H, Dv): the usual head merge after it is free
        out = np.empty((lead[0], length, lead[1], width), dtype).transpose(0, 2, 1, 3)
        return np.matmul(s, v, out=out)

    def run(q, k, v, mask=None, condition=None, fill=None):
        if condition is None or fill is None:
            condition = fill = None
        if (
            xp is np and q.dtype in _FAST and q.dtype == k.dtype == v.dtype and min(q.ndim, k.ndim, v.ndim) >= 2
            and (mask is None or mask.dtype == q.dtype)
            and (fill is None or (fill.dtype == q.dtype and fill.size == 1))
            and q.shape[-1] == k.shape[-2] and k.shape[-1] == v.shape[-2] and q.size and k.size and v.size
            and (mask is None or mask.size) and (condition is None or condition.size)
        ):  # fmt: skip
            y = fast(q, k, v, mask, condition, fill)
            if y is not None:
                return (y,)
        return (steps(q, k, v, mask, condition, fill),)

    return run
