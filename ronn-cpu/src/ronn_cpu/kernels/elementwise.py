"""Elementwise kernels: unary math, activations, binary arithmetic, comparison, logic,
bitwise operators, casts and linear quantization.

Float math on float16, bfloat16 and the float 8 types runs in float32 and is rounded back;
numpy warnings (overflow, invalid values) are silenced, the results follow IEEE rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ronn.kernel import KernelContext, KernelRun, KernelTable

from ..jit import parallel
from . import _cast, _quantize

KERNELS = KernelTable()

_WIDEN = _cast.NARROW_FLOATS | {np.dtype(np.float16)}
_F32 = np.dtype(np.float32)

Fn = Callable[[Any], Any]
Fn2 = Callable[[Any, Any], Any]


def _widen(x: Any) -> Any:
    """float16 and narrower floats as float32, for computing."""
    return x.astype(_F32) if x.dtype in _WIDEN else x


def _narrow(xp: Any, y: Any, dtype: np.dtype) -> Any:
    """A computed value as an array of the operator's output dtype."""
    if not isinstance(y, xp.ndarray):
        y = xp.asarray(y)
    return y if y.dtype == dtype else _cast.astype(y, dtype)


def _array(xp: Any, y: Any) -> Any:
    """Ufunc results on 0-d inputs are numpy scalars: make them arrays."""
    return y if isinstance(y, xp.ndarray) else xp.asarray(y)


def _elementwise(op: str, since: tuple[int, ...], make: Callable[[KernelContext], Fn]) -> None:
    """Register a one-input op computing ``make(ctx)(x)``, widened, in ``x``'s dtype."""

    def factory(ctx: KernelContext) -> KernelRun:
        xp = ctx.xp
        fn = make(ctx)

        def run(x):
            with np.errstate(all="ignore"):
                if x.ndim == 0:  # numpy turns 0-d results into scalars, which in-place math rejects
                    return (_narrow(xp, fn(_widen(x).reshape(1)), x.dtype).reshape(()),)
                return (_narrow(xp, fn(_widen(x)), x.dtype),)

        return run

    factory.__name__ = factory.__qualname__ = op.lower()
    KERNELS.register(op, since=since)(factory)


def _simple(op: str, since: tuple[int, ...], fn: Callable[[Any, Any], Any]) -> None:
    """Register a one-input op with no attributes: ``fn(xp, x)``."""
    _elementwise(op, since, lambda ctx: lambda x, _xp=ctx.xp: fn(_xp, x))


# --- erf ---------------------------------------------------------------------------------

_SQRT_PI = math.sqrt(math.pi)
#: Maclaurin coefficients of erf(x) / x as a polynomial in x*x (used for |x| < 2)
_ERF_SERIES = [(-1) ** n / (math.factorial(n) * (2 * n + 1)) * 2 / _SQRT_PI for n in range(34)][::-1]
_ERF_SPLIT = 2.0
#: erf(x) / x ~ P(x*x) / Q(x*x) on [-4, 4], relative error < 5e-9: a rational fit made for
#: ronn (weighted least squares, reweighted toward minimax); past 4 it is +-1 (erf(4) = 1 - 1.5e-8)
_ERF_P = (
    1.1283791671409666, 0.09373204366442975, 0.041048583126128135, -0.0001094202135044496,
    0.00016709394537444176, -1.336497787482716e-05, 3.4571404501083223e-07,
    3.998579646256268e-09, 4.325513985899536e-12,
)  # fmt: skip
_ERF_Q = (
    1.0, 0.416401198799072, 0.07517871325184577, 0.007132165279040129, 0.000292000310144235,
    -7.665989971801989e-06, -1.2765576932325986e-06, 7.54926671872271e-08,
)  # fmt: skip


def _horner(xp: Any, coefficients: tuple[float, ...], t: Any) -> Any:
    """sum(c[i] * t**i), evaluated in place."""
    result = xp.full_like(t, coefficients[-1])
    for coefficient in coefficients[-2::-1]:
        result *= t
        result += coefficient
    return result


def _erf_rational(values: Any, xp: Any) -> Any:
    """erf of a float64 array by the rational fit (|error| < 5e-9 relative)."""
    clamped = xp.clip(values, -4.0, 4.0)
    square = clamped * clamped
    ratio = _horner(xp, _ERF_P, square)
    ratio /= _horner(xp, _ERF_Q, square)
    ratio *= clamped
    xp.copyto(ratio, xp.sign(values), where=xp.abs(values) >= 4.0)  # exactly +-1 beyond the fit
    return ratio


_BLOCK = 1 << 16  # elements per pass: float64 temporaries stay in cache


def _blockwise_float64(xp: Any, x: Any, fn: Callable[[Any, Any], Any]) -> Any:
    """``fn(block, xp)`` over float64 blocks of ``x``, stored back in ``x``'s dtype."""
    flat = x.reshape(-1)
    out = xp.empty(flat.shape, dtype=x.dtype)
    for start in range(0, flat.size, _BLOCK):
        out[start : start + _BLOCK] = fn(flat[start : start + _BLOCK].astype(np.float64), xp)
    return out.reshape(x.shape)


_pointwise: Any = None  # ronn_cpu.jit.epilogue once loaded


def _numba_unary(name: str, x: Any) -> Any:
    """A float32 array through the numba kernel ``name`` of :mod:`ronn_cpu.jit.epilogue`."""
    global _pointwise
    if _pointwise is None:
        from ..jit import load

        _pointwise = load("epilogue")
    values = x if x.flags.c_contiguous else np.ascontiguousarray(x)
    out = np.empty_like(values)
    fn = getattr(_pointwise, name + "_par") if parallel(values.size * 16) else getattr(_pointwise, name)
    fn(values.reshape(-1), out.reshape(-1))
    return out


def gelu_values(x: Any, tanh_form: bool) -> Any:
    """Gelu of a float array (exact or the tanh form), in its dtype; float16 computes in float32."""
    dtype = x.dtype
    values = x.astype(_F32) if dtype in _WIDEN else x
    with np.errstate(all="ignore"):
        if tanh_form:
            if values.dtype == _F32 and values.size:
                y = _numba_unary("gelu_tanh", values)
            else:
                scale = math.sqrt(2 / math.pi)
                y = 0.5 * values * (1 + np.tanh(scale * (values + 0.044715 * values * values * values)))
        else:
            y = _gelu_exact(np, values)
    return y.astype(dtype, copy=False)


def _erf(xp: Any, x: Any) -> Any:
    """erf: the rational fit for float32 and narrower, a series/continued fraction for float64."""
    if x.dtype == np.float64:
        return _erf_double(xp, x)
    if x.dtype == _F32 and xp is np and x.size:
        return _numba_unary("erf", x)
    return _blockwise_float64(xp, x, _erf_rational)


def _gelu_block(values: Any, xp: Any) -> Any:
    result = _erf_rational(values * (1 / math.sqrt(2)), xp)
    result += 1
    result *= values
    result *= 0.5
    return result


def _gelu_exact(xp: Any, x: Any) -> Any:
    """x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2)))."""
    if x.dtype == np.float64:
        return 0.5 * x * (1 + _erf_double(xp, x * (1 / math.sqrt(2))))
    if x.dtype == _F32 and xp is np and x.size:
        return _numba_unary("gelu", x)
    return _blockwise_float64(xp, x, _gelu_block)


def _erf_double(xp: Any, values: Any) -> Any:
    """erf to ~1e-15 relative: a power series below 2, a continued fraction for erfc above."""
    magnitude = xp.abs(values)
    small = xp.minimum(magnitude, _ERF_SPLIT)
    square = small * small
    poly = xp.zeros_like(square)
    for coefficient in _ERF_SERIES:
        poly = poly * square + coefficient
    result = small * poly
    large = magnitude >= _ERF_SPLIT
    if large.any():
        big = magnitude[large]
        fraction = big.copy()
        for k in range(40, 0, -1):  # erfc(t) = exp(-t*t) / sqrt(pi) / (t + 1/2 / (t + 1 / (t + ...)))
            fraction = big + (k / 2) / fraction
        result[large] = 1.0 - xp.exp(-big * big) / _SQRT_PI / fraction
    return xp.copysign(result, values)


# --- unary math ----------------------------------------------------------------------------

_simple("Abs", (1, 6, 13), lambda xp, x: xp.abs(x))
_simple("Neg", (1, 6, 13), lambda xp, x: xp.negative(x))
_simple("Sign", (9, 13), lambda xp, x: xp.sign(x))
_simple("Ceil", (1, 6, 13), lambda xp, x: xp.ceil(x))
_simple("Floor", (1, 6, 13), lambda xp, x: xp.floor(x))
_simple("Round", (11, 22), lambda xp, x: xp.rint(x))
_simple("Exp", (1, 6, 13), lambda xp, x: xp.exp(x))
_simple("Log", (1, 6, 13), lambda xp, x: xp.log(x))
_simple("Sqrt", (1, 6, 13), lambda xp, x: xp.sqrt(x))
_simple("Reciprocal", (1, 6, 13), lambda xp, x: xp.reciprocal(x))
_simple("Sin", (7, 22), lambda xp, x: xp.sin(x))
_simple("Cos", (7, 22), lambda xp, x: xp.cos(x))
_simple("Tan", (7, 22), lambda xp, x: xp.tan(x))
_simple("Asin", (7, 22), lambda xp, x: xp.arcsin(x))
_simple("Acos", (7, 22), lambda xp, x: xp.arccos(x))
_simple("Atan", (7, 22), lambda xp, x: xp.arctan(x))
_simple("Sinh", (9, 22), lambda xp, x: xp.sinh(x))
_simple("Cosh", (9, 22), lambda xp, x: xp.cosh(x))
_simple("Asinh", (9, 22), lambda xp, x: xp.arcsinh(x))
_simple("Acosh", (9, 22), lambda xp, x: xp.arccosh(x))
_simple("Atanh", (9, 22), lambda xp, x: xp.arctanh(x))
_simple("Erf", (9, 13), _erf)
def _tanh(xp: Any, x: Any) -> Any:
    """tanh; float32 through the vectorised numba fit (relative error < 5e-7)."""
    if x.dtype == _F32 and xp is np and x.size >= 1024:  # below, numpy's call is cheaper
        return _numba_unary("tanh", x)
    return xp.tanh(x)


_simple("Tanh", (1, 6, 13), _tanh)
_simple("Not", (1,), lambda xp, x: xp.logical_not(x))
_simple("BitwiseNot", (18,), lambda xp, x: xp.invert(x))


@KERNELS.register("IsNaN", since=(9, 13, 20))
def isnan(ctx: KernelContext) -> KernelRun:
    xp = ctx.xp

    def run(x):
        return (_array(xp, xp.isnan(_widen(x))),)

    return run


@KERNELS.register("IsInf", since=(10, 20))
def isinf(ctx: KernelContext) -> KernelRun:
    xp = ctx.xp
    positive = bool(ctx.attr("detect_positive", 1))
    negative = bool(ctx.attr("detect_negative", 1))

    def run(x):
        x = _widen(x)
        if positive and negative:
            return (_array(xp, xp.isinf(x)),)
        if positive:
            return (_array(xp, xp.isposinf(x)),)
        if negative:
            return (_array(xp, xp.isneginf(x)),)
        return (xp.zeros(x.shape, dtype=bool),)

    return run


# --- activations -----------------------------------------------------------------------------


def _sigmoid(xp: Any, x: Any) -> Any:
    """1 / (1 + exp(-x)): exp overflowing to inf gives the right limit 0."""
    result = xp.negative(x)
    xp.exp(result, out=result)
    result += 1
    return xp.reciprocal(result, out=result)


def _softplus(xp: Any, x: Any) -> Any:
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), stable for any x.

    log1p(e) for 0 <= e <= 1 uses a plain log at full relative precision (Goldberg's trick):
    e * log(u) / (u - 1) with u = 1 + e, where 0/0 (u == 1) means a factor of 1.
    """
    e = xp.abs(x)
    xp.negative(e, out=e)
    xp.exp(e, out=e)
    u = e + 1
    factor = xp.log(u)
    u -= 1
    factor /= u
    xp.fmin(factor, 1, out=factor)
    factor *= e
    factor += xp.maximum(x, 0)
    return factor


def _expm1_nonpositive(xp: Any, x: Any) -> Any:
    """exp(x) - 1 for x <= 0, accurate near 0: 2t / (1 - t) with t = tanh(x / 2)."""
    t = x * 0.5
    xp.tanh(t, out=t)
    denominator = 1 - t
    t += t
    t /= denominator
    return t


@KERNELS.register("Relu", since=(1, 6, 13, 14))
def relu(ctx: KernelContext) -> KernelRun:
    xp = ctx.xp

    def run(x):
        return (_narrow(xp, xp.maximum(_widen(x), 0), x.dtype),)

    return run


def _leaky_relu(ctx: KernelContext) -> Fn:
    alpha = ctx.attr("alpha", 0.01)
    xp = ctx.xp
    if alpha <= 1:
        return lambda x: xp.maximum(x, x * alpha)
    return lambda x: xp.minimum(x, x * alpha)


def _elu(ctx: KernelContext) -> Fn:
    alpha = ctx.attr("alpha", 1.0)
    xp = ctx.xp
    return lambda x: xp.maximum(x, 0) + alpha * _expm1_nonpositive(xp, xp.minimum(x, 0))


def _selu(ctx: KernelContext) -> Fn:
    alpha = ctx.attr("alpha", 1.67326319217681884765625)
    gamma = ctx.attr("gamma", 1.05070102214813232421875)
    xp = ctx.xp
    return lambda x: gamma * (xp.maximum(x, 0) + alpha * _expm1_nonpositive(xp, xp.minimum(x, 0)))


def _celu(ctx: KernelContext) -> Fn:
    alpha = ctx.attr("alpha", 1.0)
    if alpha == 0:
        raise ctx.fail("alpha must not be 0")
    xp = ctx.xp
    if alpha > 0:
        return lambda x: xp.maximum(x, 0) + alpha * _expm1_nonpositive(xp, xp.minimum(x, 0) * (1 / alpha))
    return lambda x: xp.maximum(x, 0) + xp.minimum(0, alpha * xp.expm1(x / alpha))


def _hard_sigmoid(ctx: KernelContext) -> Fn:
    alpha = ctx.attr("alpha", 0.2)
    beta = ctx.attr("beta", 0.5)
    return lambda x: ctx.xp.clip(x * alpha + beta, 0, 1)


def _hard_swish(ctx: KernelContext) -> Fn:
    return lambda x: x * ctx.xp.clip(x * (1 / 6) + 0.5, 0, 1)


def _thresholded_relu(ctx: KernelContext) -> Fn:
    alpha = ctx.attr("alpha", 1.0)
    return lambda x: ctx.xp.where(x > alpha, x, 0)


def _gelu(ctx: KernelContext) -> Fn:
    approximate = ctx.attr("approximate", "none")
    xp = ctx.xp
    if approximate == "tanh":
        scale = math.sqrt(2 / math.pi)

        def tanh_form(x):
            if x.dtype == _F32 and xp is np and x.size:
                return _numba_unary("gelu_tanh", x)  # one vectorised pass
            return 0.5 * x * (1 + xp.tanh(scale * (x + 0.044715 * x * x * x)))

        return tanh_form
    if approximate != "none":
        raise ctx.fail(f"approximate must be 'none' or 'tanh', not {approximate!r}")
    return lambda x: _gelu_exact(xp, x)


def _swish(ctx: KernelContext) -> Fn:
    alpha = ctx.attr("alpha", 1.0)
    return lambda x: x * _sigmoid(ctx.xp, x * alpha)


def _shrink(ctx: KernelContext) -> Fn:
    lambd = ctx.attr("lambd", 0.5)
    bias = ctx.attr("bias", 0.0)
    xp = ctx.xp
    return lambda x: xp.where(x < -lambd, x + bias, xp.where(x > lambd, x - bias, 0))


_elementwise("LeakyRelu", (1, 6, 16), _leaky_relu)
_elementwise("Elu", (1, 6, 22), _elu)
_elementwise("Selu", (1, 6, 22), _selu)
_elementwise("Celu", (12, 28), _celu)
_elementwise("HardSigmoid", (1, 6, 22), _hard_sigmoid)
_elementwise("HardSwish", (14, 22), _hard_swish)
_elementwise("ThresholdedRelu", (10, 22), _thresholded_relu)
_elementwise("Gelu", (20,), _gelu)
_elementwise("Swish", (24,), _swish)
_elementwise("Shrink", (9,), _shrink)
_simple("Sigmoid", (1, 6, 13), _sigmoid)
_simple("Softplus", (1, 22), _softplus)
_simple("Softsign", (1, 22), lambda xp, x: x / (1 + xp.abs(x)))
_simple("Mish", (18, 22), lambda xp, x: x * xp.tanh(_softplus(xp, x)))


@KERNELS.register("PRelu", since=(1, 6, 7, 9, 16))
def prelu(ctx: KernelContext) -> KernelRun:
    xp = ctx.xp
    legacy = ctx.opset < 7

    def run(x, slope):
        if legacy and slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1] != 1:
            slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))  # one slope per channel
        with np.errstate(all="ignore"):
            wide = _widen(x)
            y = xp.maximum(wide, 0) + xp.minimum(wide, 0) * _widen(slope)
        return (_narrow(xp, y, x.dtype),)

    return run


@KERNELS.register("Clip", since=(1, 6, 11, 12, 13))
def clip(ctx: KernelContext) -> KernelRun:
    xp = ctx.xp
    if ctx.opset < 11:
        low_attr = ctx.attr("min", -math.inf)
        high_attr = ctx.attr("max", math.inf)

        def run_attrs(x):
            with np.errstate(all="ignore"):
                y = xp.minimum(xp.maximum(_widen(x), low_attr), high_attr)
            return (_narrow(xp, y, x.dtype),)

        return run_attrs

    def run(x, low=None, high=None):
        y = _widen(x)
        if low is not None:
            y = xp.maximum(y, _widen(low))
        if high is not None:
            y = xp.minimum(y, _widen(high))
        if low is None and high is None:
            y = x.copy()
        return (_narrow(xp, y, x.dtype),)

    return run


# --- binary and variadic ---------------------------------------------------------------------


def _legacy_broadcast(ctx: KernelContext) -> Fn2 | None:
    """For opset < 7 binary ops: reshape B per the ``broadcast``/``axis`` attributes."""
    if ctx.opset >= 7:
        return None
    broadcast = bool(ctx.attr("broadcast", 0))
    axis = ctx.attr("axis", None)

    def align(a, b):
        if not broadcast:
            if a.shape != b.shape:
                raise ValueError(f"shapes {a.shape} and {b.shape} differ and broadcast is 0")
            return b
        if axis is None or b.ndim == 0:
            return b
        start = axis + a.ndim if axis < 0 else axis
        trailing = a.ndim - start - b.ndim
        placed = a.shape[start : start + b.ndim] if trailing >= 0 else ()
        if trailing < 0 or any(bd not in (1, ad) for ad, bd in zip(placed, b.shape)):
            raise ValueError(f"cannot broadcast {b.shape} into {a.shape} from axis {axis}")
        return b.reshape(b.shape + (1,) * trailing)

    return align


_FAST_FLOATS = (_F32, np.dtype(np.float64))
#: float arrays up to this size take the numba kernels (one call, no errstate); above, numpy's
#: loops win and the fixed costs do not matter
_SMALL_BINARY = 1 << 15


def _small_float_binary(name: str) -> Callable[[Any, Any], Any]:
    """``fn(a, b)``: the numba result for small same-dtype float arrays whose shapes broadcast
    as equal shapes, a scalar, or one operand a trailing block of the other; else None."""
    kernel: list[Any] = []

    def fn(a, b):
        size_a, size_b = a.size, b.size
        if size_a >= size_b:
            big, small = a, b
        else:
            big, small = b, a
        if not 0 < big.size <= _SMALL_BINARY or not (a.flags.c_contiguous and b.flags.c_contiguous):
            return None
        shape = big.shape
        if small.size == 1:
            if small.ndim > big.ndim:
                return None
            mode = 2 if small is b else 4  # B_SCALAR / A_SCALAR
        elif small.shape == shape:
            mode = 0  # SAME
        elif small.ndim <= big.ndim and shape[big.ndim - small.ndim :] == small.shape:
            mode = 1 if small is b else 3  # B_ROWS / A_ROWS
        else:
            trimmed = small.shape
            while trimmed and trimmed[0] == 1:
                trimmed = trimmed[1:]
            if len(small.shape) > big.ndim or shape[big.ndim - len(trimmed) :] != trimmed:
                return None
            mode = 1 if small is b else 3
        if not kernel:
            from ..jit import load

            kernel.append(load("epilogue").BINARY[name])
        out = np.empty(shape, a.dtype)
        kernel[0](a.reshape(-1), b.reshape(-1), out.reshape(-1), mode)
        return out

    return fn


def _binary(
    op: str, since: tuple[int, ...], make: Callable[[KernelContext], Fn2], small_floats: str | None = None
) -> None:
    """Register a two-input op with numpy broadcasting computing ``make(ctx)(a, b)``.

    With ``small_floats`` (add, subtract, multiply, divide), small float32/float64 operands of
    one dtype run as one numba call instead.
    """

    def factory(ctx: KernelContext) -> KernelRun:
        xp = ctx.xp
        fn = make(ctx)
        align = _legacy_broadcast(ctx)
        fast = _small_float_binary(small_floats) if small_floats and xp is np else None

        def run(a, b):
            if align is not None:
                b = align(a, b)
            elif fast is not None and a.dtype == b.dtype and a.dtype in _FAST_FLOATS:
                y = fast(a, b)
                if y is not None:
                    return (y,)
            with np.errstate(all="ignore"):
                return (_array(xp, fn(a, b)),)

        return run

    factory.__name__ = factory.__qualname__ = op.lower()
    KERNELS.register(op, since=since)(factory)


def _ufunc(op: str, since: tuple[int, ...], name: str) -> None:
    """A binary op that is one numpy ufunc, computed wide for narrow floats."""
    small_floats = name if name in ("add", "subtract", "multiply") else None

    def make(ctx: KernelContext) -> Fn2:
        ufunc = getattr(ctx.xp, name)

        def fn(a, b):
            if a.dtype in _WIDEN and b.dtype == a.dtype:
                result = ufunc(_widen(a), _widen(b))
                return result if result.dtype == np.bool_ else _narrow(ctx.xp, result, a.dtype)
            return ufunc(a, b)

        return fn

    _binary(op, since, make, small_floats)


for _op, _since, _name in (
    ("Add", (1, 6, 7, 13, 14), "add"),
    ("Sub", (1, 6, 7, 13, 14), "subtract"),
    ("Mul", (1, 6, 7, 13, 14), "multiply"),
    ("And", (1, 7), "logical_and"),
    ("Or", (1, 7), "logical_or"),
    ("Xor", (1, 7), "logical_xor"),
    ("Equal", (1, 7, 11, 13, 19), "equal"),
    ("Less", (1, 7, 9, 13), "less"),
    ("Greater", (1, 7, 9, 13), "greater"),
    ("LessOrEqual", (12, 16), "less_equal"),
    ("GreaterOrEqual", (12, 16), "greater_equal"),
    ("BitwiseAnd", (18,), "bitwise_and"),
    ("BitwiseOr", (18,), "bitwise_or"),
    ("BitwiseXor", (18,), "bitwise_xor"),
):
    _ufunc(_op, _since, _name)


def _divide(ctx: KernelContext) -> Fn2:
    """True division for floats; integer division truncating toward zero, as in C."""
    xp = ctx.xp

    def fn(a, b):
        if not _cast.is_integer(a.dtype):
            return _narrow(xp, xp.divide(_widen(a), _widen(b)), a.dtype)
        quotient = xp.floor_divide(a, b)
        if a.dtype.kind == "i":
            inexact = (quotient * b != a) & ((a < 0) != (b < 0)) & (b != 0)
            quotient = quotient + inexact.astype(a.dtype)
        return quotient

    return fn


def _modulo(ctx: KernelContext) -> Fn2:
    """``fmod=0``: the result takes the divisor's sign; ``fmod=1``: the dividend's (C fmod)."""
    xp = ctx.xp
    fmod = ctx.attr("fmod", 0)
    if fmod not in (0, 1):
        raise ctx.fail(f"fmod must be 0 or 1, not {fmod}")
    ufunc = xp.fmod if fmod else xp.mod

    def fn(a, b):
        return _narrow(xp, ufunc(_widen(a), _widen(b)), a.dtype)

    return fn


def _int_power(xp: Any, base: Any, exponent: Any) -> Any:
    """Integer powers in the base's type (wrapping); negative exponents as C's pow truncates."""
    dtype = base.dtype
    wide = np.dtype(np.int64) if _cast.is_signed(dtype) else np.dtype(np.uint64)
    negative = exponent < 0
    counts = _cast.astype(xp.where(negative, 0, exponent), wide)
    result = _cast.astype(xp.asarray(xp.power(_cast.astype(base, wide), counts)), dtype)
    if negative.any():
        odd = (exponent % 2) != 0
        reciprocal = xp.where(base == 1, 1, xp.where((base == -1) & odd, -1, xp.where(base == -1, 1, 0)))
        result = xp.where(negative, reciprocal.astype(dtype), result)
    return result


def _power(ctx: KernelContext) -> Fn2:
    """Pow keeping the base's type; mixed types computed in float64."""
    xp = ctx.xp

    def fn(base, exponent):
        dtype = base.dtype
        if _cast.is_integer(dtype) and _cast.is_integer(exponent.dtype):
            return _int_power(xp, base, exponent)
        if dtype == exponent.dtype and dtype.kind == "f" and dtype not in _WIDEN:
            return xp.power(base, exponent)
        if dtype == exponent.dtype and dtype in _WIDEN:
            return _narrow(xp, xp.power(_widen(base), _widen(exponent)), dtype)
        f64 = np.dtype(np.float64)
        wide = xp.power(_cast.astype(base, f64), _cast.astype(exponent, f64))
        return _narrow(xp, wide, dtype)

    return fn


def _bit_shift(ctx: KernelContext) -> Fn2:
    """Shifts; amounts outside [0, bits) give 0 (or -1 for a right shift of a negative)."""
    xp = ctx.xp
    direction = ctx.attr("direction")
    if direction not in ("LEFT", "RIGHT"):
        raise ctx.fail(f"direction must be 'LEFT' or 'RIGHT', not {direction!r}")
    left = direction == "LEFT"

    def fn(x, y):
        bits = x.dtype.itemsize * 8
        outside = (y < 0) | (y >= bits)
        amount = xp.where(outside, 0, y).astype(x.dtype)
        shifted = xp.left_shift(x, amount) if left else xp.right_shift(x, amount)
        if left or x.dtype.kind == "u":
            fill = xp.zeros((), dtype=x.dtype)
        else:
            fill = xp.where(x < 0, -1, 0).astype(x.dtype)
        return xp.where(outside, fill, shifted)

    return fn


_binary("Div", (1, 6, 7, 13, 14), _divide, "divide")
_binary("Mod", (10, 13, 28), _modulo)
_binary("Pow", (1, 7, 12, 13, 15), _power)
_binary("BitShift", (11, 28), _bit_shift)


def _variadic(op: str, since: tuple[int, ...], name: str, mean: bool = False) -> None:
    """Register a variadic op folding one ufunc over its broadcast inputs."""

    def factory(ctx: KernelContext) -> KernelRun:
        xp = ctx.xp
        ufunc = getattr(xp, name)

        def run(*inputs):
            if not inputs:
                raise ValueError(f"{op} needs at least one input")
            dtype = inputs[0].dtype
            result = _widen(inputs[0])
            with np.errstate(all="ignore"):
                for value in inputs[1:]:
                    result = ufunc(result, _widen(value))
                if mean:
                    result = result / result.dtype.type(len(inputs))
            if len(inputs) == 1 and result is inputs[0]:
                result = result.copy()
            return (_narrow(xp, result, dtype),)

        return run

    factory.__name__ = factory.__qualname__ = op.lower()
    KERNELS.register(op, since=since)(factory)


_variadic("Max", (1, 6, 8, 12, 13), "maximum")
_variadic("Min", (1, 6, 8, 12, 13), "minimum")
_variadic("Sum", (1, 6, 8, 13), "add")
_variadic("Mean", (1, 6, 8, 13), "add", mean=True)


@KERNELS.register("Where", since=(9, 16))
def where(ctx: KernelContext) -> KernelRun:
    xp = ctx.xp

    def run(condition, x, y):
        return (_array(xp, xp.where(condition, x, y)),)

    return run


# --- casts ---------------------------------------------------------------------------------


def _round_mode(ctx: KernelContext) -> str:
    mode = ctx.attr("round_mode", "up")
    if mode not in ("up", "down", "nearest"):
        raise ctx.fail(f"round_mode must be 'up', 'down' or 'nearest', not {mode!r}")
    return mode


@KERNELS.register("Cast", since=(1, 6, 9, 13, 19, 21, 23, 24, 25, 28))
def cast(ctx: KernelContext) -> KernelRun:
    try:
        dtype = _cast.onnx_dtype(ctx.attr("to"))
    except (TypeError, ValueError) as exc:
        raise ctx.fail(str(exc)) from None
    saturate = bool(ctx.attr("saturate", 1))
    round_mode = _round_mode(ctx)

    def run(x):
        return (_cast.cast(x, dtype, saturate, round_mode),)

    return run


@KERNELS.register("CastLike", since=(15, 19, 21, 23, 24, 25))
def cast_like(ctx: KernelContext) -> KernelRun:
    saturate = bool(ctx.attr("saturate", 1))
    round_mode = _round_mode(ctx)

    def run(x, like):
        dtype = _cast.STRING if like.dtype.kind in "OUS" else like.dtype
        return (_cast.cast(x, dtype, saturate, round_mode),)

    return run


@KERNELS.register("BitCast", since=(26,))
def bit_cast(ctx: KernelContext) -> KernelRun:
    try:
        dtype = _cast.onnx_dtype(ctx.attr("to"))
    except (TypeError, ValueError) as exc:
        raise ctx.fail(str(exc)) from None
    if dtype == _cast.STRING:
        raise ctx.fail("BitCast cannot produce strings")

    def run(x):
        return (_cast.bitcast(x, dtype),)

    return run


# --- quantization ----------------------------------------------------------------------------


@KERNELS.register("QuantizeLinear", since=(10, 13, 19, 21, 23, 24, 25, 28))
def quantize_linear(ctx: KernelContext) -> KernelRun:
    axis = ctx.attr("axis", 1)
    block_size = ctx.attr("block_size", 0)
    saturate = bool(ctx.attr("saturate", 1))
    output_code = ctx.attr("output_dtype", 0)
    precision_code = ctx.attr("precision", 0)
    if block_size < 0:
        raise ctx.fail(f"block_size must not be negative, got {block_size}")
    output_dtype = _cast.onnx_dtype(output_code) if output_code else None
    precision = _cast.onnx_dtype(precision_code) if precision_code else None
    if output_dtype is not None and not _quantize.is_quantized_type(output_dtype):
        raise ctx.fail(f"output_dtype {output_dtype} is not a quantized type")
    if precision is not None and not _cast.is_floating(precision):
        raise ctx.fail(f"precision {precision} is not a float type")

    def run(x, scale, zero_point=None):
        dtype = output_dtype or np.dtype(np.uint8)
        if zero_point is not None:
            if output_dtype is not None and zero_point.dtype != output_dtype:
                raise TypeError(
                    f"output_dtype {output_dtype} differs from the zero point's type {zero_point.dtype}"
                )
            dtype = zero_point.dtype
        y = _quantize.quantize(
            x, scale, zero_point, dtype,
            axis=axis, block_size=block_size, saturate=saturate, precision=precision,
        )  # fmt: skip
        return (y,)

    return run


@KERNELS.register("DequantizeLinear", since=(10, 13, 19, 21, 23, 24, 25, 28))
def dequantize_linear(ctx: KernelContext) -> KernelRun:
    axis = ctx.attr("axis", 1)
    block_size = ctx.attr("block_size", 0)
    output_code = ctx.attr("output_dtype", 0)
    if block_size < 0:
        raise ctx.fail(f"block_size must not be negative, got {block_size}")
    output_dtype = _cast.onnx_dtype(output_code) if output_code else None
    if output_dtype is not None and not _cast.is_floating(output_dtype):
        raise ctx.fail(f"output_dtype {output_dtype} is not a float type")

    def run(x, scale, zero_point=None):
        if zero_point is not None and zero_point.dtype != x.dtype:
            raise TypeError(f"the zero point's type {zero_point.dtype} differs from the input's {x.dtype}")
        dtype = output_dtype or scale.dtype
        if dtype == _cast.E8M0:
            dtype = _F32
        y = _quantize.dequantize(x, scale, zero_point, dtype, axis=axis, block_size=block_size)
        return (y,)

    return run


@KERNELS.register("DynamicQuantizeLinear", since=(11,))
def dynamic_quantize_linear(ctx: KernelContext) -> KernelRun:
    def run(x):
        return _quantize.dynamic_quantize(x)

    return run
