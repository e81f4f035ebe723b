"""Native LayerNormalization, Softmax and LogSoftmax behind :mod:`ronn_cpu.jit.norm`'s interface.

Each function calls the C kernel and, where it declines (a strided array, mixed dtypes,
overlapping input and output), the numba one. Other names are the numba module's.
"""

from __future__ import annotations

from typing import Any

from .. import jit
from ..jit import load_numba
from . import extension

_c: Any = extension("norm")

#: rows of any length are worth a call here (the exp vectorises; numba's rows stop at 64K elements)
ANY_SIZE = True


def layer_norm(x: Any, scale: Any, bias: Any, has_bias: bool, epsilon: float, y: Any, mean: Any, inv: Any) -> None:
    """y = (x - mean) / sqrt(var + eps) * scale (+ bias), per row of x (rows, D); mean and 1/std per row."""
    if _c.layer_norm(1, x, scale, bias, has_bias, epsilon, y, mean, inv) is NotImplemented:
        load_numba("norm").layer_norm(x, scale, bias, has_bias, epsilon, y, mean, inv)


def layer_norm_par(x: Any, scale: Any, bias: Any, has_bias: bool, epsilon: float, y: Any, mean: Any, inv: Any) -> None:
    """:func:`layer_norm` with the rows split across ``jit.THREADS`` threads."""
    if _c.layer_norm(jit.THREADS, x, scale, bias, has_bias, epsilon, y, mean, inv) is NotImplemented:
        load_numba("norm").layer_norm_par(x, scale, bias, has_bias, epsilon, y, mean, inv)


def softmax(x: Any, y: Any) -> None:
    """Softmax of each row of x (rows, D) into y."""
    if _c.softmax(1, x, y) is NotImplemented:
        load_numba("norm").softmax(x, y)


def log_softmax(x: Any, y: Any) -> None:
    """LogSoftmax of each row of x (rows, D) into y."""
    if _c.log_softmax(1, x, y) is NotImplemented:
        load_numba("norm").log_softmax(x, y)


def softmax_par(x: Any, y: Any) -> None:
    """:func:`softmax` with the rows split across ``jit.THREADS`` threads (no numba twin)."""
    if _c.softmax(jit.THREADS, x, y) is NotImplemented:
        load_numba("norm").softmax(x, y)


def log_softmax_par(x: Any, y: Any) -> None:
    """:func:`log_softmax` with the rows split across ``jit.THREADS`` threads (no numba twin)."""
    if _c.log_softmax(jit.THREADS, x, y) is NotImplemented:
        load_numba("norm").log_softmax(x, y)


def __getattr__(name: str) -> Any:
    return getattr(load_numba("norm"), name)
