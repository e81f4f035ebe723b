"""Attention in numba: the masked Softmax of the scores, between two BLAS products.

Arrays are 4-D (A, B, rows, columns), any strides; the mask and the condition broadcast to the
scores (each axis of size 1 or the scores'). Each step rounds to the scores' type as the standard
operators do, in the body's order: ``S * scale``, ``Where``, ``+ mask``, Softmax.

``softmax_<type>[_par](s, scale, condition, keeps, fill, use_condition, mask, use_mask)``: that
pass in place over the C-contiguous scores ``s`` (the BLAS product Q·Kᵀ), head by head. (Whole
heads in numba, dot products and axpys, were 2-3x slower than OpenBLAS's small GEMMs even for
MiniLM's 14x14 heads.)

The Softmax takes the row's maximum, exponentiates ``x - max``, sums in float64 and multiplies
by the reciprocal, as :mod:`ronn_cpu.jit.norm` does; a row whose maximum is not finite (all
-inf, any NaN, +inf) is NaN, as that computation gives. The exp runs over a head's whole
(rows, columns) block at once, so that short rows vectorise too: float32 by a polynomial
(Cephes' expf, about 1 ulp; 0 below -87.33, where float32's normal numbers end), float64 by
libm. Only the maximum and the sums are compiled with fastmath (their own functions):
reassociating anything else would break the exp's range reduction and the body's rounding
order.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_OPTS = {"cache": True, "nogil": True, "error_model": "numpy"}
_PAR = dict(_OPTS, parallel=True)
_REDUCE = dict(_OPTS, fastmath={"nnan", "nsz", "reassoc"})

_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_LOWEST = np.float32(-87.33)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)
_E0 = np.float32(5.0000001201e-1)
_E1 = np.float32(1.6666665459e-1)
_E2 = np.float32(4.1665795894e-2)
_E3 = np.float32(8.3334519073e-3)
_E4 = np.float32(1.3981999507e-3)
_E5 = np.float32(1.9875691500e-4)


# --- reductions (fastmath, each its own function) -------------------------------------------


@njit(**_REDUCE)
def _top(row):
    """The row's maximum (a NaN may or may not win: the caller checks the maximum, and a NaN
    left in the row makes its sum NaN)."""
    top = row[0]
    for j in range(1, row.shape[0]):
        v = row[j]
        top = v if v > top else top
    return top


@njit(**dict(_OPTS, fastmath={"reassoc"}))
def _sum(row):
    """The row's sum in float64."""
    total = 0.0
    for j in range(row.shape[0]):
        total += row[j]
    return total


# --- exp over a flat block --------------------------------------------------------------------


@njit(inline="always")
def _exp_f32(x, bits):
    """exp of every element of the contiguous float32 ``x`` (all <= 0, or NaN) in place;
    ``bits``: int32 scratch as long. Branch-free, so that it vectorises."""
    for j in range(x.shape[0]):
        v = x[j]
        low = v < _LOWEST
        v = _LOWEST if low else v
        z = np.floor(v * _LOG2E + _HALF)
        r = v - z * _LN2_HI
        r = r - z * _LN2_LO
        p = ((((((_E5 * r + _E4) * r + _E3) * r + _E2) * r + _E1) * r + _E0) * (r * r) + r) + _ONE
        bits[j] = (np.int32(z) + np.int32(127)) << np.int32(23)
        x[j] = _ZERO if low else p
    powers = bits.view(np.float32)
    for j in range(x.shape[0]):
        x[j] = x[j] * powers[j]


@njit(inline="always")
def _exp_f64(x, bits):
    for j in range(x.shape[0]):
        x[j] = math.exp(x[j])


# --- the masked Softmax of one head's block ---------------------------------------------------


@njit(inline="always")
def _at(array, a, b, i):
    """The row of a 4-D ``array`` broadcast to the scores (its axes of size 1 repeat)."""
    return array[a if array.shape[0] > 1 else 0, b if array.shape[1] > 1 else 0, i if array.shape[2] > 1 else 0]


@njit(inline="always")
def _softmax_block(block, scale, condition, keeps, fill, use_condition, mask, use_mask, a, b, bits, exp):
    """Scale, fill, add and normalize the rows of ``block`` (S, T), C-contiguous, in place,
    with the ``condition`` and ``mask`` of head (a, b) (4-D, each axis 1 or the scores')."""
    length, width = block.shape
    if width == 0:
        return
    for i in range(length):
        row = block[i]
        for j in range(width):
            row[j] = row[j] * scale
        if use_condition:
            kept = _at(condition, a, b, i)
            if kept.shape[0] == 1:
                if kept[0] != keeps:
                    row[:] = fill
            else:
                for j in range(width):
                    if kept[j] != keeps:
                        row[j] = fill
        if use_mask:
            bias = _at(mask, a, b, i)
            if bias.shape[0] == 1:
                add = bias[0]
                for j in range(width):
                    row[j] = row[j] + add
            else:
                for j in range(width):
                    row[j] = row[j] + bias[j]
        top = _top(row)
        if not math.isfinite(top):
            top = top - top  # NaN: so is the row, as the standard Softmax gives
        for j in range(width):
            row[j] = row[j] - top
    exp(block.reshape(length * width), bits)
    for i in range(length):
        row = block[i]
        inv = 1.0 / _sum(row)
        for j in range(width):
            row[j] = row[j] * inv


@njit(inline="always")
def _softmax_heads(s, scale, condition, keeps, fill, use_condition, mask, use_mask, h0, h1, exp):
    heads = s.shape[1]
    bits = np.empty(s.shape[2] * s.shape[3], np.int32)
    for h in range(h0, h1):
        a = h // heads
        b = h % heads
        _softmax_block(s[a, b], scale, condition, keeps, fill, use_condition, mask, use_mask, a, b, bits, exp)


@njit(**_OPTS)
def softmax_f32(s, scale, condition, keeps, fill, use_condition, mask, use_mask):
    """Scale, fill, add and normalize every row of the float32 scores ``s`` in place."""
    _softmax_heads(s, scale, condition, keeps, fill, use_condition, mask, use_mask, 0, s.shape[0] * s.shape[1],
                   _exp_f32)


@njit(**_PAR)
def softmax_f32_par(s, scale, condition, keeps, fill, use_condition, mask, use_mask):
    for h in prange(s.shape[0] * s.shape[1]):
        _softmax_heads(s, scale, condition, keeps, fill, use_condition, mask, use_mask, h, h + 1, _exp_f32)


@njit(**_OPTS)
def softmax_f64(s, scale, condition, keeps, fill, use_condition, mask, use_mask):
    _softmax_heads(s, scale, condition, keeps, fill, use_condition, mask, use_mask, 0, s.shape[0] * s.shape[1],
                   _exp_f64)


@njit(**_PAR)
def softmax_f64_par(s, scale, condition, keeps, fill, use_condition, mask, use_mask):
    for h in prange(s.shape[0] * s.shape[1]):
        _softmax_heads(s, scale, condition, keeps, fill, use_condition, mask, use_mask, h, h + 1, _exp_f64)
