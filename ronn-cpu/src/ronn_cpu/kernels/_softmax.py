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


def _along_axis(ctx: KernelContext, compute: Callable[[Any, Any, int], Any]) -> KernelRun:
    """A kernel applying ``compute`` per the opset's axis semantics."""
    xp = ctx.xp
    flatten = ctx.opset < 13
    axis = int(ctx.attr("axis", 1 if flatten else -1))

    def run(x):
        rank = max(x.ndim, 1)
        if not -rank <= axis < rank:
            raise ValueError(f"axis {axis} is out of range for an input of shape {x.shape}")
        if x.size == 0:
            return (xp.empty_like(x),)
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
    return _along_axis(ctx, _softmax)


@KERNELS.register("LogSoftmax", since=(1, 11, 13))
def log_softmax(ctx: KernelContext) -> KernelRun:
    """LogSoftmax: the log of Softmax, computed stably."""
    return _along_axis(ctx, _log_softmax)


@KERNELS.register("Hardmax", since=(1, 11, 13))
def hardmax(ctx: KernelContext) -> KernelRun:
    """Hardmax: a one-hot of the first maximum."""
    return _along_axis(ctx, _hardmax)
