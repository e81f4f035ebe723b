"""Row-wise kernels over the last axis of a (rows, D) C-contiguous array: LayerNormalization,
Softmax and LogSoftmax.

Statistics accumulate in float64 (the sums may be reassociated: within a few ulps of any
summation order), so float32 rows normalise as accurately as numpy's pairwise sums or better.
"""

from __future__ import annotations

import math

from numba import njit, prange

_OPTS = {"cache": True, "nogil": True, "error_model": "numpy"}
_PAR = dict(_OPTS, parallel=True)
_SUMS = dict(_OPTS, fastmath={"reassoc", "contract"})


@njit(inline="always")
def _layer_norm_rows(x, scale, bias, has_bias, epsilon, y, mean_out, inv_out, r0, r1):
    width = x.shape[1]
    for r in range(r0, r1):
        row = x[r]
        total = 0.0
        for i in range(width):
            total += row[i]
        mean = total / width
        spread = 0.0
        for i in range(width):
            d = row[i] - mean
            spread += d * d
        inv = 1.0 / math.sqrt(spread / width + epsilon)
        mean_out[r] = mean
        inv_out[r] = inv
        out = y[r]
        if has_bias:
            for i in range(width):
                out[i] = (row[i] - mean) * inv * scale[i] + bias[i]
        else:
            for i in range(width):
                out[i] = (row[i] - mean) * inv * scale[i]


@njit(**_SUMS)
def layer_norm(x, scale, bias, has_bias, epsilon, y, mean_out, inv_out):
    """y = (x - mean) / sqrt(var + eps) * scale (+ bias), per row; mean and 1/std per row."""
    _layer_norm_rows(x, scale, bias, has_bias, epsilon, y, mean_out, inv_out, 0, x.shape[0])


@njit(**dict(_PAR, fastmath={"reassoc", "contract"}))
def layer_norm_par(x, scale, bias, has_bias, epsilon, y, mean_out, inv_out):
    rows = x.shape[0]
    for r in prange(rows):
        _layer_norm_rows(x, scale, bias, has_bias, epsilon, y, mean_out, inv_out, r, r + 1)


@njit(inline="always")
def _softmax_rows(x, y, log, r0, r1):
    width = x.shape[1]
    for r in range(r0, r1):
        row = x[r]
        out = y[r]
        top = row[0]
        for i in range(1, width):
            v = row[i]
            if v > top or v != v:
                top = v
        total = 0.0
        if log:
            for i in range(width):
                total += math.exp(row[i] - top)
            shift = top + math.log(total)
            for i in range(width):
                out[i] = row[i] - shift
        else:
            for i in range(width):
                e = math.exp(row[i] - top)
                out[i] = e
                total += e
            inv = 1.0 / total
            for i in range(width):
                out[i] = out[i] * inv


@njit(**_SUMS)
def softmax(x, y):
    """Softmax of each row of x (rows, D) into y."""
    _softmax_rows(x, y, False, 0, x.shape[0])


@njit(**_SUMS)
def log_softmax(x, y):
    """LogSoftmax of each row of x (rows, D) into y."""
    _softmax_rows(x, y, True, 0, x.shape[0])
