"""Pointwise numba kernels: fused per-channel epilogues, and erf, tanh and Gelu.

Epilogues, over a channel-major tensor, activation included:

``bias_<act>(dst, shift, res, has_res, channels, inner, params)``:
``dst = act(dst + shift[c] (+ res))`` in place (the epilogue of a fresh output);
``affine_<act>(src, dst, scale, shift, res, has_res, channels, inner, params)``:
``dst = act(src * scale[c] + shift[c] (+ res))`` (BatchNormalization), ``dst`` distinct.

Arrays are flat views of C-contiguous tensors seen as (outer, C, inner); ``inner == 1`` is the
column layout of a 2-D Gemm output (rows, C) with one value per column. ``params`` holds the
constants in the tensor's dtype: alpha, beta, 0, 1, 1/6, 1/2. Each activation has its own
serial and ``_par`` (parallel) function, which hands the loops its ``act_*`` function: a
compile-time constant inlined into them, so the loops vectorise and each compiles only its own
activation (one function for all activations took ten times longer to compile). In-place and
out-of-place passes are separate functions because a loop reading and writing one array
through two names does not vectorise.

Unary kernels over flat arrays (``erf``, ``tanh``, ``gelu``, ``gelu_tanh`` and their ``_par``
variants) evaluate rational fits in float64, which vectorise where libm's calls do not:

* tanh: a fit made for ronn (``TANH_P``/``TANH_Q``: tanh(x)/x ~ P(x*x)/Q(x*x) on [-9, 9],
  relative error < 1e-7, < 5e-7 evaluated in float32; +-1 beyond: float32's tanh is 1 past 9.01);
* erf: ronn's fit (``ERF_P``/``ERF_Q``: erf(x)/x ~ P(x*x)/Q(x*x) on [-4, 4], relative error
  < 5e-9, +-1 beyond), the same as the numpy kernels of ``ronn_cpu.kernels.elementwise`` use
  (a test checks the coefficients agree).

Binary kernels (``binary_add``/``_sub``/``_mul``/``_div``) serve small float arrays, where
numpy's call and errstate cost more than the arithmetic.

Everything shares this one file on purpose: numba's on-disk cache does not notice changes to
functions defined in another file.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

NONE, RELU, LEAKY_RELU, CLIP, SIGMOID, HARD_SIGMOID, HARD_SWISH, TANH, GELU, GELU_TANH = range(10)
KINDS = {
    None: NONE,
    "Relu": RELU,
    "LeakyRelu": LEAKY_RELU,
    "Clip": CLIP,
    "Sigmoid": SIGMOID,
    "HardSigmoid": HARD_SIGMOID,
    "HardSwish": HARD_SWISH,
    "Tanh": TANH,
    "Gelu": GELU,
    "GeluTanh": GELU_TANH,
}


ERF_P = (
    1.1283791671409666, 0.09373204366442975, 0.041048583126128135, -0.0001094202135044496,
    0.00016709394537444176, -1.336497787482716e-05, 3.4571404501083223e-07,
    3.998579646256268e-09, 4.325513985899536e-12,
)  # fmt: skip
ERF_Q = (
    1.0, 0.416401198799072, 0.07517871325184577, 0.007132165279040129, 0.000292000310144235,
    -7.665989971801989e-06, -1.2765576932325986e-06, 7.54926671872271e-08,
)  # fmt: skip
TANH_P = (
    0.999999956254161, 0.12932287331317302, 0.002934506848215025, 9.385471189516e-06,
    -1.31019459136128e-08, 1.8987894589983512e-11,
)  # fmt: skip
TANH_Q = (1.0, 0.4626558693821354, 0.023820283001855652, 0.00022995284403742053)
_T0, _T1, _T2, _T3, _T4, _T5 = TANH_P
_U0, _U1, _U2, _U3 = TANH_Q
_P0, _P1, _P2, _P3, _P4, _P5, _P6, _P7, _P8 = ERF_P
_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7 = ERF_Q
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_TANH_SCALE = math.sqrt(2.0 / math.pi)

_UNARY = {"cache": True, "nogil": True, "error_model": "numpy"}
_UNARY_PAR = dict(_UNARY, parallel=True)
_CHUNK = 4096


@njit(inline="always")
def erf_value(v):
    """erf of a float64 by the rational fit (NaN stays NaN)."""
    c = v
    if c > 4.0:
        c = 4.0
    elif c < -4.0:
        c = -4.0
    t = c * c
    num = (((((((_P8 * t + _P7) * t + _P6) * t + _P5) * t + _P4) * t + _P3) * t + _P2) * t + _P1) * t + _P0
    den = ((((((_Q7 * t + _Q6) * t + _Q5) * t + _Q4) * t + _Q3) * t + _Q2) * t + _Q1) * t + _Q0
    r = c * num / den
    if v >= 4.0:
        r = 1.0
    elif v <= -4.0:
        r = -1.0
    return r


@njit(inline="always")
def tanh_value(v):
    """tanh of a float64 by the rational fit (NaN stays NaN)."""
    c = v
    if c > 9.0:
        c = 9.0
    elif c < -9.0:
        c = -9.0
    t = c * c
    num = ((((_T5 * t + _T4) * t + _T3) * t + _T2) * t + _T1) * t + _T0
    den = ((_U3 * t + _U2) * t + _U1) * t + _U0
    r = c * num / den
    if v >= 9.0:
        r = 1.0
    elif v <= -9.0:
        r = -1.0
    return r


@njit(inline="always")
def _tanh_range(x, y, start, stop):
    src = x[start:stop]
    dst = y[start:stop]
    for i in range(stop - start):
        dst[i] = tanh_value(float(src[i]))


@njit(inline="always")
def _erf_range(x, y, start, stop):
    src = x[start:stop]
    dst = y[start:stop]
    for i in range(stop - start):
        dst[i] = erf_value(float(src[i]))


@njit(inline="always")
def _gelu_range(x, y, start, stop):
    src = x[start:stop]
    dst = y[start:stop]
    for i in range(stop - start):
        v = float(src[i])
        dst[i] = 0.5 * v * (1.0 + erf_value(v * _SQRT_HALF))


@njit(inline="always")
def _gelu_tanh_range(x, y, start, stop):
    src = x[start:stop]
    dst = y[start:stop]
    for i in range(stop - start):
        v = float(src[i])
        dst[i] = 0.5 * v * (1.0 + tanh_value(_TANH_SCALE * (v + 0.044715 * v * v * v)))


@njit(**_UNARY)
def erf(x, y):
    """y = erf(x) (flat arrays)."""
    _erf_range(x, y, 0, x.size)


@njit(**_UNARY_PAR)
def erf_par(x, y):
    chunks = (x.size + _CHUNK - 1) // _CHUNK
    for k in prange(chunks):
        _erf_range(x, y, k * _CHUNK, min(x.size, (k + 1) * _CHUNK))


@njit(**_UNARY)
def tanh(x, y):
    """y = tanh(x) (flat arrays)."""
    _tanh_range(x, y, 0, x.size)


@njit(**_UNARY_PAR)
def tanh_par(x, y):
    chunks = (x.size + _CHUNK - 1) // _CHUNK
    for k in prange(chunks):
        _tanh_range(x, y, k * _CHUNK, min(x.size, (k + 1) * _CHUNK))


@njit(**_UNARY)
def gelu(x, y):
    """y = x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2))) (flat arrays)."""
    _gelu_range(x, y, 0, x.size)


@njit(**_UNARY_PAR)
def gelu_par(x, y):
    chunks = (x.size + _CHUNK - 1) // _CHUNK
    for k in prange(chunks):
        _gelu_range(x, y, k * _CHUNK, min(x.size, (k + 1) * _CHUNK))


@njit(**_UNARY)
def gelu_tanh(x, y):
    """y = x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) (flat arrays)."""
    _gelu_tanh_range(x, y, 0, x.size)


@njit(**_UNARY_PAR)
def gelu_tanh_par(x, y):
    chunks = (x.size + _CHUNK - 1) // _CHUNK
    for k in prange(chunks):
        _gelu_tanh_range(x, y, k * _CHUNK, min(x.size, (k + 1) * _CHUNK))


# --- activations: one small function each, passed to the loops as a compile-time constant --


@njit(inline="always")
def act_none(v, a, b, zero, one, sixth, half):
    return v


@njit(inline="always")
def act_relu(v, a, b, zero, one, sixth, half):
    return zero if v < zero else v


@njit(inline="always")
def act_leaky_relu(v, a, b, zero, one, sixth, half):
    return v * a if v < zero else v


@njit(inline="always")
def act_clip(v, a, b, zero, one, sixth, half):
    return a if v < a else (b if v > b else v)


@njit(inline="always")
def act_sigmoid(v, a, b, zero, one, sixth, half):
    return one / (one + math.exp(-v))


@njit(inline="always")
def act_hard_sigmoid(v, a, b, zero, one, sixth, half):
    g = v * a + b
    return zero if g < zero else (one if g > one else g)


@njit(inline="always")
def act_hard_swish(v, a, b, zero, one, sixth, half):
    g = v * sixth + half
    return v * (zero if g < zero else (one if g > one else g))


@njit(inline="always")
def act_tanh(v, a, b, zero, one, sixth, half):
    return tanh_value(v)


@njit(inline="always")
def act_gelu(v, a, b, zero, one, sixth, half):
    return 0.5 * v * (1.0 + erf_value(v * _SQRT_HALF))


@njit(inline="always")
def act_gelu_tanh(v, a, b, zero, one, sixth, half):
    return 0.5 * v * (1.0 + tanh_value(_TANH_SCALE * (v + 0.044715 * v * v * v)))


@njit(inline="always")
def _bias_rows(dst, shift, res, has_res, channels, inner, params, act, r0, r1):
    a = params[0]
    b = params[1]
    zero = params[2]
    one = params[3]
    sixth = params[4]
    half = params[5]
    if inner == 1:  # (rows, C): one value per column
        for r in range(r0, r1):
            d_row = dst[r * channels : (r + 1) * channels]
            if has_res:
                r_row = res[r * channels : (r + 1) * channels]
                for c in range(channels):
                    d_row[c] = act(d_row[c] + shift[c] + r_row[c], a, b, zero, one, sixth, half)
            else:
                for c in range(channels):
                    d_row[c] = act(d_row[c] + shift[c], a, b, zero, one, sixth, half)
    else:  # (outer, C, inner): row r is one channel plane
        for r in range(r0, r1):
            t = shift[r % channels]
            d_row = dst[r * inner : (r + 1) * inner]
            if has_res:
                r_row = res[r * inner : (r + 1) * inner]
                for i in range(inner):
                    d_row[i] = act(d_row[i] + t + r_row[i], a, b, zero, one, sixth, half)
            else:
                for i in range(inner):
                    d_row[i] = act(d_row[i] + t, a, b, zero, one, sixth, half)


@njit(inline="always")
def _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, act, r0, r1):
    a = params[0]
    b = params[1]
    zero = params[2]
    one = params[3]
    sixth = params[4]
    half = params[5]
    if inner == 1:
        for r in range(r0, r1):
            s_row = src[r * channels : (r + 1) * channels]
            d_row = dst[r * channels : (r + 1) * channels]
            if has_res:
                r_row = res[r * channels : (r + 1) * channels]
                for c in range(channels):
                    v = s_row[c] * scale[c] + shift[c] + r_row[c]
                    d_row[c] = act(v, a, b, zero, one, sixth, half)
            else:
                for c in range(channels):
                    d_row[c] = act(s_row[c] * scale[c] + shift[c], a, b, zero, one, sixth, half)
    else:
        for r in range(r0, r1):
            s = scale[r % channels]
            t = shift[r % channels]
            s_row = src[r * inner : (r + 1) * inner]
            d_row = dst[r * inner : (r + 1) * inner]
            if has_res:
                r_row = res[r * inner : (r + 1) * inner]
                for i in range(inner):
                    d_row[i] = act(s_row[i] * s + t + r_row[i], a, b, zero, one, sixth, half)
            else:
                for i in range(inner):
                    d_row[i] = act(s_row[i] * s + t, a, b, zero, one, sixth, half)


@njit(inline="always")
def _rows_of(size, channels, inner):
    return size // (channels if inner == 1 else inner)


_OPTS = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": {"contract"}}
_PAR = dict(_OPTS, parallel=True)
_CHUNKS = 64  # parallel work items (rows are split into at most this many ranges)


# --- per activation: in-place bias and out-of-place affine, serial and parallel ----------


@njit(**_OPTS)
def bias_none(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, act_none, 0, rows)


@njit(**_PAR)
def bias_none_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(
            dst, shift, res, has_res, channels, inner, params, act_none,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def affine_none(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, act_none, 0, rows)


@njit(**_PAR)
def affine_none_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, act_none,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_relu(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, act_relu, 0, rows)


@njit(**_PAR)
def bias_relu_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(
            dst, shift, res, has_res, channels, inner, params, act_relu,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def affine_relu(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, act_relu, 0, rows)


@njit(**_PAR)
def affine_relu_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, act_relu,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_leaky_relu(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, act_leaky_relu, 0, rows)


@njit(**_PAR)
def bias_leaky_relu_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(
            dst, shift, res, has_res, channels, inner, params, act_leaky_relu,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def affine_leaky_relu(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, act_leaky_relu, 0, rows)


@njit(**_PAR)
def affine_leaky_relu_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, act_leaky_relu,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_clip(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, act_clip, 0, rows)


@njit(**_PAR)
def bias_clip_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(
            dst, shift, res, has_res, channels, inner, params, act_clip,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def affine_clip(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, act_clip, 0, rows)


@njit(**_PAR)
def affine_clip_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, act_clip,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_sigmoid(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, act_sigmoid, 0, rows)


@njit(**_PAR)
def bias_sigmoid_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(
            dst, shift, res, has_res, channels, inner, params, act_sigmoid,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def affine_sigmoid(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, act_sigmoid, 0, rows)


@njit(**_PAR)
def affine_sigmoid_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, act_sigmoid,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_hard_sigmoid(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, act_hard_sigmoid, 0, rows)


@njit(**_PAR)
def bias_hard_sigmoid_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(
            dst, shift, res, has_res, channels, inner, params, act_hard_sigmoid,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def affine_hard_sigmoid(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, act_hard_sigmoid, 0, rows)


@njit(**_PAR)
def affine_hard_sigmoid_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, act_hard_sigmoid,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_hard_swish(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, act_hard_swish, 0, rows)


@njit(**_PAR)
def bias_hard_swish_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(
            dst, shift, res, has_res, channels, inner, params, act_hard_swish,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def affine_hard_swish(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, act_hard_swish, 0, rows)


@njit(**_PAR)
def affine_hard_swish_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, act_hard_swish,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_tanh(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, act_tanh, 0, rows)


@njit(**_PAR)
def bias_tanh_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(
            dst, shift, res, has_res, channels, inner, params, act_tanh,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def affine_tanh(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, act_tanh, 0, rows)


@njit(**_PAR)
def affine_tanh_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, act_tanh,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_gelu(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, act_gelu, 0, rows)


@njit(**_PAR)
def bias_gelu_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(
            dst, shift, res, has_res, channels, inner, params, act_gelu,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def affine_gelu(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, act_gelu, 0, rows)


@njit(**_PAR)
def affine_gelu_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, act_gelu,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_gelu_tanh(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, act_gelu_tanh, 0, rows)


@njit(**_PAR)
def bias_gelu_tanh_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(
            dst, shift, res, has_res, channels, inner, params, act_gelu_tanh,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def affine_gelu_tanh(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, act_gelu_tanh, 0, rows)


@njit(**_PAR)
def affine_gelu_tanh_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, act_gelu_tanh,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


BIAS = (
    bias_none, bias_relu, bias_leaky_relu, bias_clip, bias_sigmoid, bias_hard_sigmoid,
    bias_hard_swish, bias_tanh,
    bias_gelu, bias_gelu_tanh,
)
BIAS_PAR = (
    bias_none_par, bias_relu_par, bias_leaky_relu_par, bias_clip_par, bias_sigmoid_par,
    bias_hard_sigmoid_par, bias_hard_swish_par, bias_tanh_par,
    bias_gelu_par, bias_gelu_tanh_par,
)
AFFINE = (
    affine_none, affine_relu, affine_leaky_relu, affine_clip, affine_sigmoid, affine_hard_sigmoid,
    affine_hard_swish, affine_tanh,
    affine_gelu, affine_gelu_tanh,
)
AFFINE_PAR = (
    affine_none_par, affine_relu_par, affine_leaky_relu_par, affine_clip_par, affine_sigmoid_par,
    affine_hard_sigmoid_par, affine_hard_swish_par, affine_tanh_par,
    affine_gelu_par, affine_gelu_tanh_par,
)


# --- binary arithmetic on small float arrays (no numpy call or errstate to pay) ------------

SAME, B_ROWS, B_SCALAR, A_ROWS, A_SCALAR = range(5)


@njit(inline="always")
def op_add(x, y):
    return x + y


@njit(inline="always")
def op_sub(x, y):
    return x - y


@njit(inline="always")
def op_mul(x, y):
    return x * y


@njit(inline="always")
def op_div(x, y):
    return x / y


@njit(inline="always")
def _binary(a, b, out, mode, op):
    """out = a op b over flat arrays: ``mode`` says how the smaller operand repeats (SAME,
    B_ROWS: b is one row repeated, B_SCALAR, A_ROWS, A_SCALAR)."""
    n = out.size
    if mode == SAME:
        for i in range(n):
            out[i] = op(a[i], b[i])
    elif mode == B_SCALAR:
        v = b[0]
        for i in range(n):
            out[i] = op(a[i], v)
    elif mode == A_SCALAR:
        v = a[0]
        for i in range(n):
            out[i] = op(v, b[i])
    elif mode == B_ROWS:
        m = b.size
        for r in range(n // m):
            src = a[r * m : (r + 1) * m]
            dst = out[r * m : (r + 1) * m]
            for j in range(m):
                dst[j] = op(src[j], b[j])
    else:
        m = a.size
        for r in range(n // m):
            src = b[r * m : (r + 1) * m]
            dst = out[r * m : (r + 1) * m]
            for j in range(m):
                dst[j] = op(a[j], src[j])


@njit(**_UNARY)
def binary_add(a, b, out, mode):
    """out = a + b (see ``_binary``)."""
    _binary(a, b, out, mode, op_add)


@njit(**_UNARY)
def binary_sub(a, b, out, mode):
    """out = a - b (see ``_binary``)."""
    _binary(a, b, out, mode, op_sub)


@njit(**_UNARY)
def binary_mul(a, b, out, mode):
    """out = a * b (see ``_binary``)."""
    _binary(a, b, out, mode, op_mul)


@njit(**_UNARY)
def binary_div(a, b, out, mode):
    """out = a / b (see ``_binary``)."""
    _binary(a, b, out, mode, op_div)


BINARY = {"add": binary_add, "subtract": binary_sub, "multiply": binary_mul, "divide": binary_div}
