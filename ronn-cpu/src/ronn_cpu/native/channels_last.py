"""Native channels-last kernels behind :mod:`ronn_cpu.jit.channels_last`'s interface.

Each function takes the numba kernel's arguments; the C function declines (NotImplemented)
what it does not cover (a strided array, mixed dtypes, a negative pad), and the numba kernel
runs instead. Names not defined here are the numba module's. ``stem`` and ``stem_par`` have no
numba twin (the numba module lacks them, so callers check for them): where the C function
declines, numba's NCHW im2col, a product and numba's epilogue compute the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


def stem(
    x: Any, w: Any, tiled: Any, res: Any, has_res: bool, y: Any, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
    ph: int, pw: int, params: Any,
) -> None:  # fmt: skip
    """A dense convolution from an NCHW image: x (N, C, H, W), w (C * kh * kw, M) (rows (c, i, j)),
    y (N, OH, OW, M) = act(conv + bias (+ res)), bias = tiled[:M]."""
    if _c.stem(1, x, w, tiled, res, has_res, y, kh, kw, sh, sw, dh, dw, ph, pw, params) is NotImplemented:
        _stem_numba(x, w, tiled, res, has_res, y, kh, kw, sh, sw, dh, dw, ph, pw, params, False)


def stem_par(
    x: Any, w: Any, tiled: Any, res: Any, has_res: bool, y: Any, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
    ph: int, pw: int, params: Any,
) -> None:  # fmt: skip
    """:func:`stem` with its output rows split over ``jit.THREADS`` threads."""
    if _c.stem(jit.THREADS, x, w, tiled, res, has_res, y, kh, kw, sh, sw, dh, dw, ph, pw, params) is NotImplemented:
        _stem_numba(x, w, tiled, res, has_res, y, kh, kw, sh, sw, dh, dw, ph, pw, params, True)


def _stem_numba(
    x: Any, w: Any, tiled: Any, res: Any, has_res: bool, y: Any, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
    ph: int, pw: int, params: Any, wide: bool,
) -> None:  # fmt: skip
    """What :func:`stem` computes, by numba's kernels: the NCHW im2col, a product, the epilogue."""
    n, oh, ow, outputs = y.shape
    columns = np.empty((w.shape[0], oh * ow), y.dtype)
    out = np.empty((n, oh * ow, outputs), y.dtype)
    for image in range(n):
        load_numba("conv").im2col_rows(np.ascontiguousarray(x[image], y.dtype), columns, kh, kw, sh, sw, dh, dw, ph, pw,
                                       oh, ow, 0, oh)  # fmt: skip
        np.matmul(columns.T, w, out=out[image])
    flat = out.reshape(-1)
    finish = _numba().finish_par if wide else _numba().finish
    shift = np.ascontiguousarray(tiled, y.dtype)
    finish(flat, shift, np.ascontiguousarray(res, y.dtype).reshape(-1) if has_res else flat, has_res,
           np.ascontiguousarray(params, y.dtype))  # fmt: skip
    y[...] = out.reshape(y.shape)


def squeeze_excitation(x: Any, w1: Any, b1: Any, w2: Any, b2: Any, y: Any, params1: Any, params2: Any) -> None:
    """A squeeze-and-excitation block over x and y (N, P * C)."""
    if _c.squeeze_excitation(x, w1, b1, w2, b2, y, params1, params2) is NotImplemented:
        _numba().squeeze_excitation(x, w1, b1, w2, b2, y, params1, params2)


def __getattr__(name: str) -> Any:
    return getattr(_numba(), name)
