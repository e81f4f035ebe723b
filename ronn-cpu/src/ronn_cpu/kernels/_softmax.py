"""Softmax, LogSoftmax and Hardmax.

Before opset 13 they flatten the input to 2-D at ``axis`` (default 1) and normalize each
row; from opset 13 they normalize along the single ``axis`` (default -1).

They compute in the input's type, float16 and bfloat16 included (numpy rounds each step
to it), which is what the node suite's function-expanded graphs expect.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ronn.kernel import KernelContext, KernelRun

from ..jit import load, parallel
from ._nn_common import KERNELS


def _softmax(xp: Any, x: Any, axis: int) -> Any:
    exp = x - xp.max(x, axis=axis, keepdims=True)
    xp.exp(exp, out=exp)
    exp /= xp.sum(exp, axis=axis, keepdims=True)
    return exp


def _log_softmax(xp: Any, x: Any, axis: int) -> Any:
    shifted = x - xp.max(x, axis=axis, keepdims=True)
    shifted -= xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))
    return shifted


def _hardmax(xp: Any, x: Any, axis: int) -> Any:
    """One at the first maximum along ``axis``, zero elsewhere."""
    first = xp.expand_dims(xp.argmax(x, axis=axis), axis)
    positions = xp.arange(x.shape[axis]).reshape((-1,) + (1,) * (x.ndim - 1 - axis))
    return (positions == first).astype(x.dtype)


_FAST = (np.dtype(np.float32), np.dtype(np.float64))
#: with numba's kernels, inputs of at most this many elements go to them (their exp is scalar,
#: numpy's SIMD); the C kernels (``ANY_SIZE``) take every size, in parallel when it pays
NUMBA_MAX = 1 << 16


def _along_axis(ctx: KernelContext, compute: Callable[[Any, Any, int], Any], fast: str | None = None) -> KernelRun:
    """A kernel applying ``compute`` per the opset's axis semantics.

    ``fast`` names a numba row kernel of :mod:`ronn_cpu.jit.norm` for float32/float64 inputs
    normalized along their last axis (or flattened at ``axis``, before opset 13).
    """
    xp = ctx.xp
    flatten = ctx.opset < 13
    axis = int(ctx.attr("axis", 1 if flatten else -1))
    kernel: list[Any] = []

    def run_fast(x):
        if not kernel:
            module = load("norm")
            kernel.extend((getattr(module, fast), getattr(module, fast + "_par", None)))
        rank = x.ndim
        along = axis % rank
        rows = math.prod(x.shape[:along]) if flatten else x.size // x.shape[-1]
        values = np.ascontiguousarray(x).reshape(rows, -1)
        y = np.empty_like(values)
        wide = kernel[1] is not None and parallel(values.size * 8)
        kernel[1 if wide else 0](values, y)
        return (y.reshape(x.shape),)

    def run(x):
        rank = max(x.ndim, 1)
        if not -rank <= axis < rank:
            raise ValueError(f"axis {axis} is out of range for an input of shape {x.shape}")
        if x.size == 0:
            return (xp.empty_like(x),)
        if (
            fast is not None and x.dtype in _FAST and xp is np and (flatten or axis % rank == rank - 1)
            and (x.size <= NUMBA_MAX or getattr(load("norm"), "ANY_SIZE", False))
        ):  # fmt: skip
            return run_fast(x)
        with np.errstate(invalid="ignore"):  # all -inf rows give NaN, warning-free
            if flatten:
                along = axis % rank
                rows = x.reshape(math.prod(x.shape[:along]), -1)
                y = compute(xp, rows, 1).reshape(x.shape)
            else:
                y = compute(xp, x, axis % rank)
        return (y.astype(x.dtype, copy=False),)

    return run


@KERNELS.register("Softmax", since=(1, 11, 13))
def softmax(ctx: KernelContext) -> KernelRun:
    """Softmax: exp(x - max) normalized to sum to one."""
    return _along_axis(ctx, _softmax, "softmax")


@KERNELS.register("LogSoftmax", since=(1, 11, 13))
def log_softmax(ctx: KernelContext) -> KernelRun:
    """LogSoftmax: the log of Softmax, computed stably."""
    return _along_axis(ctx, _log_softmax, "log_softmax")


@KERNELS.register("Hardmax", since=(1, 11, 13))
def hardmax(ctx: KernelContext) -> KernelRun:
    """Hardmax: a one-hot of the first maximum."""
    return _along_axis(ctx, _hardmax)
