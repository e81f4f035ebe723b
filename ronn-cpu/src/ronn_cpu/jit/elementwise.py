"""Elementwise float kernels over flat arrays: erf and Gelu (exact and tanh form).

erf uses ronn's rational fit (``ERF_P``/``ERF_Q``: erf(x)/x ~ P(x*x)/Q(x*x) on [-4, 4], relative
error < 5e-9, +-1 beyond), evaluated in float64: the same fit as the numpy kernels of
``ronn_cpu.kernels.elementwise`` (a test checks the coefficients agree). It has no exp, so the
loops vectorise.
"""

from __future__ import annotations

import math

from numba import njit, prange

ERF_P = (
    1.1283791671409666, 0.09373204366442975, 0.041048583126128135, -0.0001094202135044496,
    0.00016709394537444176, -1.336497787482716e-05, 3.4571404501083223e-07,
    3.998579646256268e-09, 4.325513985899536e-12,
)  # fmt: skip
ERF_Q = (
    1.0, 0.416401198799072, 0.07517871325184577, 0.007132165279040129, 0.000292000310144235,
    -7.665989971801989e-06, -1.2765576932325986e-06, 7.54926671872271e-08,
)  # fmt: skip
_P0, _P1, _P2, _P3, _P4, _P5, _P6, _P7, _P8 = ERF_P
_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7 = ERF_Q
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_TANH_SCALE = math.sqrt(2.0 / math.pi)

_OPTS = {"cache": True, "nogil": True, "error_model": "numpy"}
_PAR = dict(_OPTS, parallel=True)
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
        dst[i] = 0.5 * v * (1.0 + math.tanh(_TANH_SCALE * (v + 0.044715 * v * v * v)))


@njit(**_OPTS)
def erf(x, y):
    """y = erf(x) (flat arrays)."""
    _erf_range(x, y, 0, x.size)


@njit(**_PAR)
def erf_par(x, y):
    chunks = (x.size + _CHUNK - 1) // _CHUNK
    for k in prange(chunks):
        _erf_range(x, y, k * _CHUNK, min(x.size, (k + 1) * _CHUNK))


@njit(**_OPTS)
def gelu(x, y):
    """y = x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2))) (flat arrays)."""
    _gelu_range(x, y, 0, x.size)


@njit(**_PAR)
def gelu_par(x, y):
    chunks = (x.size + _CHUNK - 1) // _CHUNK
    for k in prange(chunks):
        _gelu_range(x, y, k * _CHUNK, min(x.size, (k + 1) * _CHUNK))


@njit(**_OPTS)
def gelu_tanh(x, y):
    """y = x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) (flat arrays)."""
    _gelu_tanh_range(x, y, 0, x.size)


@njit(**_PAR)
def gelu_tanh_par(x, y):
    chunks = (x.size + _CHUNK - 1) // _CHUNK
    for k in prange(chunks):
        _gelu_tanh_range(x, y, k * _CHUNK, min(x.size, (k + 1) * _CHUNK))
