"""Fused per-channel passes over a channel-major tensor, activation included.

``bias_<act>(dst, shift, res, has_res, channels, inner, params)``:
``dst = act(dst + shift[c] (+ res))`` in place (the epilogue of a fresh output);
``affine_<act>(src, dst, scale, shift, res, has_res, channels, inner, params)``:
``dst = act(src * scale[c] + shift[c] (+ res))`` (BatchNormalization), ``dst`` distinct.

Arrays are flat views of C-contiguous tensors seen as (outer, C, inner); ``inner == 1`` is the
column layout of a 2-D Gemm output (rows, C) with one value per column. ``params`` holds the
constants in the tensor's dtype: alpha, beta, 0, 1, 1/6, 1/2. Each activation has its own
serial and ``_par`` (parallel) function: the activation is a compile-time constant after
inlining, so the loops vectorise. In-place and out-of-place passes are separate functions
because a loop reading and writing one array through two names does not vectorise.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

NONE, RELU, LEAKY_RELU, CLIP, SIGMOID, HARD_SIGMOID, HARD_SWISH, TANH = range(8)
KINDS = {
    None: NONE,
    "Relu": RELU,
    "LeakyRelu": LEAKY_RELU,
    "Clip": CLIP,
    "Sigmoid": SIGMOID,
    "HardSigmoid": HARD_SIGMOID,
    "HardSwish": HARD_SWISH,
    "Tanh": TANH,
}


@njit(inline="always")
def activate(v, kind, a, b, zero, one, sixth, half):
    """The activation ``kind`` of one value (a constant ``kind`` folds the branches away)."""
    if kind == RELU:
        return zero if v < zero else v
    if kind == LEAKY_RELU:
        return v * a if v < zero else v
    if kind == CLIP:
        return a if v < a else (b if v > b else v)
    if kind == SIGMOID:
        return one / (one + math.exp(-v))
    if kind == HARD_SIGMOID:
        g = v * a + b
        return zero if g < zero else (one if g > one else g)
    if kind == HARD_SWISH:
        g = v * sixth + half
        return v * (zero if g < zero else (one if g > one else g))
    if kind == TANH:
        return math.tanh(v)
    return v


@njit(inline="always")
def _bias_rows(dst, shift, res, has_res, channels, inner, params, kind, r0, r1):
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
                    d_row[c] = activate(d_row[c] + shift[c] + r_row[c], kind, a, b, zero, one, sixth, half)
            else:
                for c in range(channels):
                    d_row[c] = activate(d_row[c] + shift[c], kind, a, b, zero, one, sixth, half)
    else:  # (outer, C, inner): row r is one channel plane
        for r in range(r0, r1):
            t = shift[r % channels]
            d_row = dst[r * inner : (r + 1) * inner]
            if has_res:
                r_row = res[r * inner : (r + 1) * inner]
                for i in range(inner):
                    d_row[i] = activate(d_row[i] + t + r_row[i], kind, a, b, zero, one, sixth, half)
            else:
                for i in range(inner):
                    d_row[i] = activate(d_row[i] + t, kind, a, b, zero, one, sixth, half)


@njit(inline="always")
def _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, kind, r0, r1):
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
                    d_row[c] = activate(v, kind, a, b, zero, one, sixth, half)
            else:
                for c in range(channels):
                    d_row[c] = activate(s_row[c] * scale[c] + shift[c], kind, a, b, zero, one, sixth, half)
    else:
        for r in range(r0, r1):
            s = scale[r % channels]
            t = shift[r % channels]
            s_row = src[r * inner : (r + 1) * inner]
            d_row = dst[r * inner : (r + 1) * inner]
            if has_res:
                r_row = res[r * inner : (r + 1) * inner]
                for i in range(inner):
                    d_row[i] = activate(s_row[i] * s + t + r_row[i], kind, a, b, zero, one, sixth, half)
            else:
                for i in range(inner):
                    d_row[i] = activate(s_row[i] * s + t, kind, a, b, zero, one, sixth, half)


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
    _bias_rows(dst, shift, res, has_res, channels, inner, params, NONE, 0, rows)


@njit(**_PAR)
def bias_none_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(dst, shift, res, has_res, channels, inner, params, NONE, k * rows // chunks, (k + 1) * rows // chunks)


@njit(**_OPTS)
def affine_none(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, NONE, 0, rows)


@njit(**_PAR)
def affine_none_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, NONE,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_relu(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, RELU, 0, rows)


@njit(**_PAR)
def bias_relu_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(dst, shift, res, has_res, channels, inner, params, RELU, k * rows // chunks, (k + 1) * rows // chunks)


@njit(**_OPTS)
def affine_relu(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, RELU, 0, rows)


@njit(**_PAR)
def affine_relu_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, RELU,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_leaky_relu(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, LEAKY_RELU, 0, rows)


@njit(**_PAR)
def bias_leaky_relu_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(dst, shift, res, has_res, channels, inner, params, LEAKY_RELU, k * rows // chunks, (k + 1) * rows // chunks)


@njit(**_OPTS)
def affine_leaky_relu(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, LEAKY_RELU, 0, rows)


@njit(**_PAR)
def affine_leaky_relu_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, LEAKY_RELU,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_clip(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, CLIP, 0, rows)


@njit(**_PAR)
def bias_clip_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(dst, shift, res, has_res, channels, inner, params, CLIP, k * rows // chunks, (k + 1) * rows // chunks)


@njit(**_OPTS)
def affine_clip(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, CLIP, 0, rows)


@njit(**_PAR)
def affine_clip_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, CLIP,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_sigmoid(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, SIGMOID, 0, rows)


@njit(**_PAR)
def bias_sigmoid_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(dst, shift, res, has_res, channels, inner, params, SIGMOID, k * rows // chunks, (k + 1) * rows // chunks)


@njit(**_OPTS)
def affine_sigmoid(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, SIGMOID, 0, rows)


@njit(**_PAR)
def affine_sigmoid_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, SIGMOID,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_hard_sigmoid(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, HARD_SIGMOID, 0, rows)


@njit(**_PAR)
def bias_hard_sigmoid_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(dst, shift, res, has_res, channels, inner, params, HARD_SIGMOID, k * rows // chunks, (k + 1) * rows // chunks)


@njit(**_OPTS)
def affine_hard_sigmoid(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, HARD_SIGMOID, 0, rows)


@njit(**_PAR)
def affine_hard_sigmoid_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, HARD_SIGMOID,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_hard_swish(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, HARD_SWISH, 0, rows)


@njit(**_PAR)
def bias_hard_swish_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(dst, shift, res, has_res, channels, inner, params, HARD_SWISH, k * rows // chunks, (k + 1) * rows // chunks)


@njit(**_OPTS)
def affine_hard_swish(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, HARD_SWISH, 0, rows)


@njit(**_PAR)
def affine_hard_swish_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, HARD_SWISH,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


@njit(**_OPTS)
def bias_tanh(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    _bias_rows(dst, shift, res, has_res, channels, inner, params, TANH, 0, rows)


@njit(**_PAR)
def bias_tanh_par(dst, shift, res, has_res, channels, inner, params):
    rows = _rows_of(dst.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _bias_rows(dst, shift, res, has_res, channels, inner, params, TANH, k * rows // chunks, (k + 1) * rows // chunks)


@njit(**_OPTS)
def affine_tanh(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    _affine_rows(src, dst, scale, shift, res, has_res, channels, inner, params, TANH, 0, rows)


@njit(**_PAR)
def affine_tanh_par(src, dst, scale, shift, res, has_res, channels, inner, params):
    rows = _rows_of(src.size, channels, inner)
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _affine_rows(
            src, dst, scale, shift, res, has_res, channels, inner, params, TANH,
            k * rows // chunks, (k + 1) * rows // chunks,
        )  # fmt: skip


BIAS = (
    bias_none, bias_relu, bias_leaky_relu, bias_clip, bias_sigmoid, bias_hard_sigmoid,
    bias_hard_swish, bias_tanh,
)
BIAS_PAR = (
    bias_none_par, bias_relu_par, bias_leaky_relu_par, bias_clip_par, bias_sigmoid_par,
    bias_hard_sigmoid_par, bias_hard_swish_par, bias_tanh_par,
)
AFFINE = (
    affine_none, affine_relu, affine_leaky_relu, affine_clip, affine_sigmoid, affine_hard_sigmoid,
    affine_hard_swish, affine_tanh,
)
AFFINE_PAR = (
    affine_none_par, affine_relu_par, affine_leaky_relu_par, affine_clip_par, affine_sigmoid_par,
    affine_hard_sigmoid_par, affine_hard_swish_par, affine_tanh_par,
)
