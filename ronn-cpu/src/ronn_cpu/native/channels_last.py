"""Native channels-last kernels behind :mod:`ronn_cpu.jit.channels_last`'s interface.

Each function takes the numba kernel's arguments; the C function declines (NotImplemented)
what it does not cover (a strided array, mixed dtypes, a negative pad), and the numba kernel
runs instead. Names not defined here are the numba module's.
"""

from __future__ import annotations

from typing import Any

from .. import jit
from ..jit import load_numba
from . import extension

_c: Any = extension("channels_last")


def _numba() -> Any:
    return load_numba("channels_last")


def depthwise(
    x: Any, w: Any, tiled: Any, res: Any, has_res: bool, y: Any, sh: int, sw: int, dh: int, dw: int, ph: int, pw: int,
    params: Any,
) -> None:  # fmt: skip
    """A depthwise convolution, x (N, H, W, C), w (kh, kw, C), y = act(conv + bias (+ res))."""
    if _c.depthwise(1, x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params) is NotImplemented:
        _numba().depthwise(x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params)


def depthwise_par(
    x: Any, w: Any, tiled: Any, res: Any, has_res: bool, y: Any, sh: int, sw: int, dh: int, dw: int, ph: int, pw: int,
    params: Any,
) -> None:  # fmt: skip
    """:func:`depthwise` with its output rows split over ``jit.THREADS`` threads."""
    if _c.depthwise(jit.THREADS, x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params) is NotImplemented:
        _numba().depthwise_par(x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params)


def finish(y: Any, tiled: Any, res: Any, has_res: bool, params: Any) -> None:
    """``y = act(y + bias (+ res))`` in place over flat (P, C) values."""
    if _c.finish(1, y, tiled, res, has_res, params) is NotImplemented:
        _numba().finish(y, tiled, res, has_res, params)


def finish_par(y: Any, tiled: Any, res: Any, has_res: bool, params: Any) -> None:
    """:func:`finish` split over ``jit.THREADS`` threads."""
    if _c.finish(jit.THREADS, y, tiled, res, has_res, params) is NotImplemented:
        _numba().finish_par(y, tiled, res, has_res, params)


def gemm(x: Any, w: Any, bias: Any, res: Any, has_res: bool, y: Any, params: Any) -> None:
    """y (P, M) = act(x (P, K) @ w (K, M) + bias (+ res)) for small products."""
    if _c.gemm(x, w, bias, res, has_res, y, params) is NotImplemented:
        _numba().gemm(x, w, bias, res, has_res, y, params)


def im2col(
    x: Any, cols: Any, n: int, oh0: int, oh1: int, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, ph: int,
    pw: int,
) -> None:  # fmt: skip
    """The taps of output rows oh0..oh1 of image n, one row of ``cols`` per output pixel."""
    if _c.im2col(x, cols, n, oh0, oh1, kh, kw, sh, sw, dh, dw, ph, pw) is NotImplemented:
        _numba().im2col(x, cols, n, oh0, oh1, kh, kw, sh, sw, dh, dw, ph, pw)


def squeeze_excitation(x: Any, w1: Any, b1: Any, w2: Any, b2: Any, y: Any, params1: Any, params2: Any) -> None:
    """A squeeze-and-excitation block over x and y (N, P * C)."""
    if _c.squeeze_excitation(x, w1, b1, w2, b2, y, params1, params2) is NotImplemented:
        _numba().squeeze_excitation(x, w1, b1, w2, b2, y, params1, params2)


def __getattr__(name: str) -> Any:
    return getattr(_numba(), name)
