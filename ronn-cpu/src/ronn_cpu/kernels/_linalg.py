"""Matrix products: Gemm, MatMul, MatMulInteger, QLinearMatMul and Einsum."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from ronn.kernel import KernelContext, KernelRun

from ._nn_common import KERNELS, derived, rounded_to, widen


def _scaled(xp: Any, y: Any, factor: float) -> Any:
    """``y * factor`` in ``y``'s dtype family (integers stay integers for whole factors)."""
    if factor == 1:
        return y
    if y.dtype.kind in "iu" and float(factor).is_integer():
        return y * y.dtype.type(int(factor))
    if y.dtype.kind in "iu":
        return y * np.float64(factor)
    return y * y.dtype.type(factor)


_FAST = (np.dtype(np.float32), np.dtype(np.float64))


class _Prepared:
    """An operand prepared once (widened, maybe transposed, C-contiguous) while its source stays."""

    __slots__ = ("derive", "source", "value")

    def __init__(self, derive: Any, constant: Any = None) -> None:
        self.derive = derive
        self.source: Any = None
        self.value: Any = None
        if isinstance(constant, np.ndarray):
            self(constant)

    def __call__(self, source: Any) -> Any:
        if source is self.source:
            return self.value
        value = self.derive(source)
        self.source, self.value = source, value  # a run racing this one recomputes: harmless
        return value


@KERNELS.register("Gemm", since=(1, 6, 7, 9, 11, 13))
def gemm(ctx: KernelContext) -> KernelRun:
    """Gemm: ``alpha * op(A) @ op(B) + beta * C`` with C broadcast to the product.

    Before opset 7 a ``broadcast`` attribute allowed broadcasting C; like onnxruntime, C is
    broadcast whenever its shape allows, whatever the attribute says. A constant B is
    widened and made C-contiguous once; a C of one value per column (or a scalar) is added
    in one pass over the product.
    """
    xp = ctx.xp
    alpha = float(ctx.attr("alpha", 1.0))
    beta = float(ctx.attr("beta", 1.0))
    trans_a = bool(ctx.attr("transA", 0))
    trans_b = bool(ctx.attr("transB", 0))
    if xp is np:
        # B keeps its layout: with transB each output column is one contiguous dot product, so
        # equal columns give equal outputs (as in onnxruntime), which a later Softmax can need
        weights = _Prepared(
            lambda b: np.ascontiguousarray(widen(b)).T if trans_b else np.ascontiguousarray(widen(b)), ctx.constant(1)
        )
    else:
        weights = derived(ctx, 1, lambda b: widen(b).T if trans_b else widen(b))
    columns = _Prepared(lambda c: np.ascontiguousarray(widen(c).reshape(-1) * c.dtype.type(beta)))

    def run(a, b, c=None):
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"Gemm needs 2-D operands, got shapes {a.shape} and {b.shape}")
        left = widen(a).T if trans_a else widen(a)
        product = xp.matmul(left, weights(b))
        if (
            c is not None and xp is np and product.dtype in _FAST and product.dtype == a.dtype == c.dtype
            and beta != 0
            and product.ndim == 2 and c.size in (product.shape[1], 1) and c.ndim <= 2
            and (c.ndim < 2 or c.shape[0] == 1) and product.size
        ):  # fmt: skip
            from ._epilogue import epilogue

            if alpha != 1:
                product *= product.dtype.type(alpha)
            bias = columns(c)
            if bias.size == 1:
                product += bias[0]
                return (product,)
            return (epilogue(product, bias=bias),)
        y = _scaled(xp, product, alpha)
        if c is not None and beta != 0:
            y = y + _scaled(xp, widen(c), beta)
        return (xp.asarray(y).astype(a.dtype, copy=False),)

    return run


@KERNELS.register("MatMul", since=(1, 9, 13))
def matmul(ctx: KernelContext) -> KernelRun:
    """MatMul: numpy.matmul semantics (batched, broadcast, 1-D operands promoted).

    An N-D A times a 2-D B runs as one (rows, K) x (K, N) GEMM; a constant B is prepared
    (widened, C-contiguous) once.
    """
    xp = ctx.xp
    weights = _Prepared((lambda b: np.ascontiguousarray(widen(b))) if xp is np else widen, ctx.constant(1))

    matmul_ = np.matmul

    def run(a, b):
        w = weights.value if b is weights.source else weights(b)
        if a.ndim > 2 and w.ndim == 2 and a.dtype == w.dtype and a.dtype in _FAST and xp is np:
            shape = a.shape
            if shape[-1] != w.shape[0]:
                raise ValueError(f"MatMul shapes {shape} and {b.shape} do not match")
            return (matmul_(a.reshape(-1, shape[-1]), w).reshape(shape[:-1] + (w.shape[1],)),)
        y = xp.matmul(widen(a), w)
        return (xp.asarray(y).astype(a.dtype, copy=False),)

    return run


def _centred(x: Any, zero_point: Any, per_row: bool) -> Any:
    """``x - zero_point`` as float64 (exact for 8-bit data, and float64 matmuls are BLAS).

    A 1-D zero point of several elements applies per row (the second-to-last axis) of A
    when ``per_row``, per column (the last axis) of B otherwise.
    """
    values = x.astype(np.float64)
    if zero_point is None:
        return values
    zp = zero_point.astype(np.float64)
    if zp.size == 1:
        zp = zp.reshape(())
    elif zp.ndim == 1 and per_row:
        zp = zp.reshape(-1, 1)
    return values - zp


def _exact_int32(xp: Any, values: Any) -> Any:
    return xp.rint(values).astype(np.int32)


@KERNELS.register("MatMulInteger", since=10)
def matmul_integer(ctx: KernelContext) -> KernelRun:
    """MatMulInteger: 8-bit matmul after removing zero points, into int32."""
    xp = ctx.xp

    def run(a, b, a_zero_point=None, b_zero_point=None):
        product = xp.matmul(_centred(a, a_zero_point, True), _centred(b, b_zero_point, False))
        return (_exact_int32(xp, xp.asarray(product)),)

    return run


def _per_axis(scale: Any, per_row: bool) -> Any:
    """A scale, 1-D scales reshaped for rows of A (``per_row``) or columns of B.

    Scales keep their type: the multiplier is formed in it, as onnx's definition does.
    """
    if scale.size == 1:
        return scale.reshape(())
    if scale.ndim == 1 and per_row:
        return scale.reshape(-1, 1)
    return scale


def _quantized(values: Any, dtype: np.dtype) -> Any:
    """Float ``values`` into integer ``dtype`` (round half even, saturate) or a float8 type."""
    if np.dtype(dtype).kind in "iu":
        return rounded_to(values, dtype)
    limit = float(ml_dtypes.finfo(dtype).max)
    return np.clip(values, -limit, limit).astype(dtype)


@KERNELS.register("QLinearMatMul", since=(10, 21))
def qlinear_matmul(ctx: KernelContext) -> KernelRun:
    """QLinearMatMul: a quantized matmul requantized to the output's scale and zero point."""
    xp = ctx.xp

    def run(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point=None):
        acc = xp.matmul(_centred(a, a_zero_point, True), _centred(b, b_zero_point, False))
        row_scale, col_scale = _per_axis(a_scale, True), _per_axis(b_scale, False)
        multiplier = (row_scale * col_scale / y_scale.reshape(())).astype(np.float64)
        scaled = acc * multiplier
        out_dtype = a.dtype if y_zero_point is None else y_zero_point.dtype
        if y_zero_point is not None:
            scaled += y_zero_point.astype(np.float64)
        return (_quantized(xp.asarray(scaled), out_dtype),)

    return run


@KERNELS.register("Einsum", since=(12, 28))
def einsum(ctx: KernelContext) -> KernelRun:
    """Einsum: numpy.einsum on the equation with spaces removed."""
    xp = ctx.xp
    equation = ctx.attr("equation")
    if isinstance(equation, bytes):
        equation = equation.decode()
    equation = equation.replace(" ", "")

    def run(*operands):
        if not operands:
            raise ValueError("Einsum needs at least one input")
        work = [widen(x) for x in operands]
        y = xp.einsum(equation, *work, optimize=len(work) > 1)
        return (xp.asarray(y).astype(operands[0].dtype, copy=False),)

    return run
