"""Native convolution helpers behind :mod:`ronn_cpu.jit.conv`'s interface.

Each function calls the C kernel and, where it declines (a strided array, mixed dtypes), the
numba one. Names not defined here are the numba module's.
"""

from __future__ import annotations

from typing import Any

from .. import jit
from ..jit import load_numba
from . import extension

_c: Any = extension("conv")


def _numba(name: str) -> Any:
    return getattr(load_numba("conv"), name)


def im2col_rows(
    x: Any, cols: Any, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, ph: int, pw: int,
    oh_count: int, ow_count: int, oh0: int, oh1: int,
) -> None:  # fmt: skip
    """Fill ``cols`` (C*kh*kw, (oh1 - oh0) * OW) with the taps of output rows oh0..oh1 of ``x`` (C, H, W)."""
    args = (x, cols, kh, kw, sh, sw, dh, dw, ph, pw, oh_count, ow_count, oh0, oh1)
    if _c.im2col_rows(*args) is NotImplemented:
        _numba("im2col_rows")(*args)


def _kn2row(threads: int, fallback: str, args: tuple[Any, ...]) -> None:
    if _c.kn2row_sum(threads, *args) is NotImplemented:
        _numba(fallback)(*args)


def kn2row_sum(parts: Any, y: Any, bias: Any, kh: int, kw: int, dh: int, dw: int, pitch: int, oh: int, ow: int) -> None:
    """The shifted sums of the per-tap products ``parts`` (kh*kw*M, HP*pitch) into y (M, OH*OW)."""
    _kn2row(1, "kn2row_sum", (parts, y, bias, kh, kw, dh, dw, pitch, oh, ow))


def kn2row_sum_par(
    parts: Any, y: Any, bias: Any, kh: int, kw: int, dh: int, dw: int, pitch: int, oh: int, ow: int
) -> None:
    """``kn2row_sum`` with the output channels split over :data:`ronn_cpu.jit.THREADS` threads."""
    _kn2row(jit.THREADS, "kn2row_sum_par", (parts, y, bias, kh, kw, dh, dw, pitch, oh, ow))


def _depthwise(threads: int, fallback: str, args: tuple[Any, ...]) -> None:
    if _c.depthwise(threads, *args) is NotImplemented:
        _numba(fallback)(*args)


def depthwise(x: Any, w: Any, bias: Any, y: Any, sh: int, sw: int, dh: int, dw: int, ph: int, pw: int) -> None:
    """A depthwise convolution of one image: x (C, H, W), w (C, kh, kw), bias (C,), y (C, OH, OW)."""
    _depthwise(1, "depthwise", (x, w, bias, y, sh, sw, dh, dw, ph, pw))


def depthwise_par(x: Any, w: Any, bias: Any, y: Any, sh: int, sw: int, dh: int, dw: int, ph: int, pw: int) -> None:
    """``depthwise`` with the channels split over :data:`ronn_cpu.jit.THREADS` threads."""
    _depthwise(jit.THREADS, "depthwise_par", (x, w, bias, y, sh, sw, dh, dw, ph, pw))


def depthwise_small(x: Any, w: Any, bias: Any, y: Any, sh: int, sw: int, dh: int, dw: int, ph: int, pw: int) -> None:
    """``depthwise`` for small planes: channels-last inside."""
    args = (x, w, bias, y, sh, sw, dh, dw, ph, pw)
    if _c.depthwise_small(*args) is NotImplemented:
        _numba("depthwise_small")(*args)


def gemm_small(w: Any, x: Any, y: Any, shift: Any) -> None:
    """y (M, P) = w (M, K) @ x (K, P) + shift per row, for GEMMs too small for BLAS."""
    if _c.gemm_small(w, x, y, shift) is NotImplemented:
        _numba("gemm_small")(w, x, y, shift)


def gemm_small_dot(w: Any, x: Any, y: Any, shift: Any) -> None:
    """``gemm_small`` for fewer than 8 positions: one dot product per output."""
    if _c.gemm_small_dot(w, x, y, shift) is NotImplemented:
        _numba("gemm_small_dot")(w, x, y, shift)


def __getattr__(name: str) -> Any:
    return getattr(load_numba("conv"), name)
