"""Native pooling behind :mod:`ronn_cpu.jit.pool`'s interface.

Each function calls the C kernel and, where it declines the arguments (a strided array,
another dtype, a geometry it does not take), the numba kernel. Other names are the numba
module's.
"""

from __future__ import annotations

from typing import Any

from .. import jit
from ..jit import load_numba
from . import extension

_c: Any = extension("pool")


def _pool(kernel: str, threads: int, fallback: str, args: tuple[Any, ...]) -> None:
    if getattr(_c, kernel)(threads, *args) is NotImplemented:
        getattr(load_numba("pool"), fallback)(*args)


def max_pool(
    x: Any, y: Any, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, ph: int, pw: int, lowest: Any
) -> None:
    """Window maxima of x (C, H, W) into y (C, OH, OW); ``lowest`` fills the pads."""
    _pool("max_pool", 1, "max_pool", (x, y, kh, kw, sh, sw, dh, dw, ph, pw, lowest))


def max_pool_par(
    x: Any, y: Any, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, ph: int, pw: int, lowest: Any
) -> None:
    """:func:`max_pool` with the channels split across ``jit.THREADS`` threads."""
    _pool("max_pool", jit.THREADS, "max_pool_par", (x, y, kh, kw, sh, sw, dh, dw, ph, pw, lowest))


def average_pool(
    x: Any, y: Any, counts: Any, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, ph: int, pw: int
) -> None:
    """Window sums of x (C, H, W) over the positions inside it, divided by ``counts`` (OH, OW)."""
    _pool("average_pool", 1, "average_pool", (x, y, counts, kh, kw, sh, sw, dh, dw, ph, pw))


def average_pool_par(
    x: Any, y: Any, counts: Any, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, ph: int, pw: int
) -> None:
    """:func:`average_pool` with the channels split across ``jit.THREADS`` threads."""
    _pool("average_pool", jit.THREADS, "average_pool_par", (x, y, counts, kh, kw, sh, sw, dh, dw, ph, pw))


def plane_means(x: Any, y: Any) -> None:
    """y[r] = the mean of row r of x (rows, size), summed in float64."""
    if _c.plane_means(x, y) is NotImplemented:
        load_numba("pool").plane_means(x, y)


def __getattr__(name: str) -> Any:
    return getattr(load_numba("pool"), name)
