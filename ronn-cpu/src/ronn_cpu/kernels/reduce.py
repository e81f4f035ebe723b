"""Reduction kernels: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare, ArgMax/ArgMin.

Before opset 18 (13 for ReduceSum) the axes are an attribute; from then on they are an
optional input, and ``noop_with_empty_axes`` decides whether no axes means "all axes" or
"return the input unchanged". Half-precision inputs are reduced in float32 and cast back.
Reducing over an empty set gives the operation's identity (0 for sums, 1 for products,
-inf for max and log-sums, +inf for min, NaN for the mean).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ml_dtypes
import numpy as np

from ronn.kernel import KernelContext, KernelRun, KernelTable

KERNELS = KernelTable()

_HALF = {np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)}

#: the opset from which each reduction reads its axes from an input (18 unless listed)
_AXES_INPUT_SINCE = {"ReduceSum": 13}

Compute = Callable[[Any, Any, tuple[int, ...], bool], Any]


def normalize_axes(axes: Sequence[int], rank: int, what: str = "axis") -> tuple[int, ...]:
    """Axes in ``[0, rank)``, checked; negative ones count from the end."""
    result = set()
    for axis in axes:
        axis = int(axis)
        if not -max(rank, 1) <= axis < max(rank, 1):
            raise ValueError(f"{what} {axis} is out of range for a tensor of rank {rank}")
        if rank:  # a scalar has nothing to reduce: axis 0 / -1 is accepted and ignored
            result.add(axis % rank)
    return tuple(sorted(result))


def _reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _empty_fill(op_type: str, dtype: np.dtype) -> Any:
    """The value a reduction over zero elements gives, for ``dtype``."""
    if op_type == "ReduceProd":
        return 1
    if op_type in ("ReduceMax", "ReduceLogSum", "ReduceLogSumExp"):
        if dtype == np.bool_:
            return False
        return -np.inf if dtype.kind in "fcV" or dtype in _HALF else np.iinfo(dtype).min
    if op_type == "ReduceMin":
        if dtype == np.bool_:
            return True
        return np.inf if dtype.kind in "fcV" or dtype in _HALF else np.iinfo(dtype).max
    if op_type == "ReduceMean":
        return np.nan if dtype.kind in "fc" or dtype in _HALF else 0
    return 0


def _log_sum_exp(xp: Any, x: Any, axes: tuple[int, ...], keepdims: bool) -> Any:
    if x.dtype.kind not in "fc":
        x = x.astype(np.float64)
    peak = xp.max(x, axis=axes, keepdims=True)
    peak = xp.where(xp.isfinite(peak), peak, xp.zeros_like(peak))
    total = xp.log(xp.sum(xp.exp(x - peak), axis=axes, keepdims=True)) + peak
    return total if keepdims else xp.squeeze(total, axis=axes)


_COMPUTE: dict[str, Compute] = {
    "ReduceSum": lambda xp, x, a, k: xp.sum(x, axis=a, keepdims=k),
    "ReduceMean": lambda xp, x, a, k: xp.mean(x, axis=a, keepdims=k),
    "ReduceMax": lambda xp, x, a, k: xp.max(x, axis=a, keepdims=k),
    "ReduceMin": lambda xp, x, a, k: xp.min(x, axis=a, keepdims=k),
    "ReduceProd": lambda xp, x, a, k: xp.prod(x, axis=a, keepdims=k),
    "ReduceL1": lambda xp, x, a, k: xp.sum(xp.abs(x), axis=a, keepdims=k),
    "ReduceL2": lambda xp, x, a, k: xp.sqrt(xp.sum(x * x, axis=a, keepdims=k)),
    "ReduceSumSquare": lambda xp, x, a, k: xp.sum(x * x, axis=a, keepdims=k),
    "ReduceLogSum": lambda xp, x, a, k: xp.log(xp.sum(x, axis=a, keepdims=k)),
    "ReduceLogSumExp": _log_sum_exp,
}

_VERSIONS = {
    "ReduceSum": (1, 11, 13),
    "ReduceMean": (1, 11, 13, 18),
    "ReduceMax": (1, 11, 12, 13, 18, 20),
    "ReduceMin": (1, 11, 12, 13, 18, 20),
    "ReduceProd": (1, 11, 13, 18),
    "ReduceL1": (1, 11, 13, 18),
    "ReduceL2": (1, 11, 13, 18),
    "ReduceSumSquare": (1, 11, 13, 18),
    "ReduceLogSum": (1, 11, 13, 18, 28),
    "ReduceLogSumExp": (1, 11, 13, 18, 28),
}


def reduction(ctx: KernelContext) -> KernelRun:
    """Any ReduceXxx: axes from the attribute or the input, keepdims, empty-set identities."""
    xp = ctx.xp
    op_type = ctx.node.op_type
    compute = _COMPUTE[op_type]
    keepdims = bool(ctx.attr("keepdims", 1))
    axes_from_input = ctx.opset >= _AXES_INPUT_SINCE.get(op_type, 18)
    noop_when_empty = axes_from_input and bool(ctx.attr("noop_with_empty_axes", 0))
    static_axes = None if axes_from_input else ctx.attr("axes", None)
    if axes_from_input and ctx.has_attr("axes"):
        raise ctx.fail(f"from opset {_AXES_INPUT_SINCE.get(op_type, 18)} axes are an input, not an attribute")

    def run(data: Any, axes: Any = None) -> tuple[Any]:
        if axes_from_input:
            requested = None if axes is None or axes.size == 0 else axes.ravel().tolist()
            if requested is None and noop_when_empty:
                return (data,)
        else:
            requested = static_axes or None
        rank = data.ndim
        chosen = tuple(range(rank)) if requested is None else normalize_axes(requested, rank)
        if any(data.shape[a] == 0 for a in chosen):
            shape = _reduced_shape(data.shape, chosen, keepdims)
            return (xp.full(shape, _empty_fill(op_type, data.dtype), dtype=data.dtype),)
        work = data.astype(np.float32) if data.dtype in _HALF else data
        with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf is the answer
            result = compute(xp, work, chosen, keepdims)
        return (xp.asarray(result).astype(data.dtype, copy=False),)

    return run


for _op, _versions in _VERSIONS.items():
    KERNELS.register(_op, since=_versions)(reduction)


def _arg_reduction(ctx: KernelContext, find: Callable[..., Any]) -> KernelRun:
    xp = ctx.xp
    axis = int(ctx.attr("axis", 0))
    keepdims = bool(ctx.attr("keepdims", 1))
    select_last = bool(ctx.attr("select_last_index", 0))

    def run(data: Any) -> tuple[Any]:
        if data.ndim == 0:
            normalize_axes([axis], 0)
            return (xp.zeros((), dtype=np.int64),)
        (ax,) = normalize_axes([axis], data.ndim)
        if data.shape[ax] == 0:
            raise ValueError(f"cannot take {ctx.node.op_type} over axis {axis} of size 0")
        work = data.astype(np.float32) if data.dtype in _HALF else data
        if select_last:
            index = (data.shape[ax] - 1) - find(xp.flip(work, axis=ax), axis=ax)
        else:
            index = find(work, axis=ax)
        index = xp.asarray(index, dtype=np.int64)
        if keepdims:
            index = xp.expand_dims(index, ax)
        return (index,)

    return run


@KERNELS.register("ArgMax", since=(1, 11, 12, 13))
def arg_max(ctx: KernelContext) -> KernelRun:
    """Index of the largest element along ``axis`` (first or, with select_last_index, last)."""
    return _arg_reduction(ctx, ctx.xp.argmax)


@KERNELS.register("ArgMin", since=(1, 11, 12, 13))
def arg_min(ctx: KernelContext) -> KernelRun:
    """Index of the smallest element along ``axis`` (first or, with select_last_index, last)."""
    return _arg_reduction(ctx, ctx.xp.argmin)
