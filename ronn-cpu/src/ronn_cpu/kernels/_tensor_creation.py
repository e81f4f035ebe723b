"""Tensor kernels that make or transform whole tensors: Constant, ConstantOfShape, Range,
EyeLike, OneHot, Trilu, CumSum, CumProd, Det."""

from __future__ import annotations

import math

import numpy as np

from ronn.dtypes import to_numpy
from ronn.kernel import KernelContext, KernelRun

from ._tensor_base import HALF_TYPES, KERNELS, int_tuple, normalize_axis, scalar_int, zero_value

_CONSTANT_ATTRS = {
    "value": None,
    "sparse_value": None,
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
    "value_string": object,
    "value_strings": object,
}


def _readonly(value: np.ndarray) -> np.ndarray:
    value = np.array(value, copy=True)
    value.setflags(write=False)
    return value


@KERNELS.register("Constant", since=(1, 9, 11, 12, 13, 19, 21, 23, 24, 25))
def constant(ctx: KernelContext) -> KernelRun:
    given = [name for name in _CONSTANT_ATTRS if ctx.has_attr(name)]
    if len(given) != 1:
        raise ctx.fail(f"needs exactly one of {', '.join(_CONSTANT_ATTRS)}; got {given or 'none'}")
    name = given[0]
    raw = ctx.attr(name)
    dtype = _CONSTANT_ATTRS[name]
    if dtype is None:
        value = np.asarray(raw)
    else:
        value = np.array(raw, dtype=dtype)
    value = _readonly(value)

    def run():
        return (value,)

    return run


@KERNELS.register("ConstantOfShape", since=(9, 20, 21, 23, 24, 25))
def constant_of_shape(ctx: KernelContext) -> KernelRun:
    xp = ctx.xp
    raw = ctx.attr("value", None)
    if raw is None:
        fill = np.zeros((), dtype=np.float32)
    else:
        fill = np.asarray(raw).reshape(-1)
        if fill.size != 1:
            raise ctx.fail(f"value must hold one element, got {fill.size}")
        fill = fill.reshape(())
    dtype = fill.dtype

    def run(shape):
        dims = int_tuple(shape)
        if any(d < 0 for d in dims):
            raise ValueError(f"ConstantOfShape: negative dimension in shape {dims}")
        out = xp.empty(dims, dtype=dtype)
        out[...] = fill
        return (out,)

    return run


@KERNELS.register("Range", since=(11, 27))
def range_(ctx: KernelContext) -> KernelRun:
    xp = ctx.xp

    def run(start, limit, delta):
        dtype = start.dtype
        if dtype.kind in "iu":
            s, lim, d = int(start.item()), int(limit.item()), int(delta.item())
            if d == 0:
                raise ValueError("Range: delta must not be 0")
            count = max(-((s - lim) // d), 0)  # ceil((lim - s) / d)
            return (xp.arange(s, s + count * d, d, dtype=dtype) if count else xp.zeros(0, dtype=dtype),)
        s, lim, d = float(start.item()), float(limit.item()), float(delta.item())
        if d == 0:
            raise ValueError("Range: delta must not be 0")
        count = max(math.ceil((lim - s) / d), 0)
        return ((xp.arange(count, dtype=np.float64) * d + s).astype(dtype),)

    return run


@KERNELS.register("EyeLike", since=(9, 22))
def eye_like(ctx: KernelContext) -> KernelRun:
    code = ctx.attr("dtype", None)
    dtype = None if code is None else to_numpy(code)
    k = ctx.attr("k", 0)

    def run(x):
        if x.ndim != 2:
            raise ValueError(f"EyeLike: input must be 2-D, got shape {x.shape}")
        out_type = x.dtype if dtype is None else dtype
        return (np.eye(x.shape[0], x.shape[1], k, dtype=out_type),)

    return run


@KERNELS.register("OneHot", since=(9, 11, 28))
def one_hot(ctx: KernelContext) -> KernelRun:
    axis = ctx.attr("axis", -1)

    def run(indices, depth, values):
        size = int(np.asarray(depth).reshape(-1)[0]) if np.asarray(depth).size == 1 else None
        if size is None or size < 1:
            raise ValueError(f"OneHot: depth must be one positive value, got {np.asarray(depth).tolist()}")
        if values.size != 2:
            raise ValueError(f"OneHot: values must hold [off_value, on_value], got shape {values.shape}")
        idx = indices if indices.dtype.kind in "iu" else indices.astype(np.int64)
        idx = idx.astype(np.int64, copy=False)
        idx = np.where(idx < 0, idx + size, idx)
        ax = normalize_axis(axis, idx.ndim + 1, "OneHot")
        positions = np.arange(size).reshape((size,) + (1,) * (idx.ndim - ax))
        hot = np.expand_dims(idx, ax) == positions
        return (values.reshape(-1).take(hot.astype(np.intp)),)

    return run


@KERNELS.register("Trilu", since=(14,))
def trilu(ctx: KernelContext) -> KernelRun:
    upper = bool(ctx.attr("upper", 1))

    def run(x, k=None):
        if x.ndim < 2:
            raise ValueError(f"Trilu: input rank {x.ndim} is below 2")
        diagonal = 0 if k is None else scalar_int(k, "Trilu", "k")
        rows, cols = x.shape[-2:]
        offset = np.arange(cols)[None, :] - np.arange(rows)[:, None]
        keep = offset >= diagonal if upper else offset <= diagonal
        return (np.where(keep, x, zero_value(x.dtype)),)

    return run


def _cumulative(ctx: KernelContext, ufunc: np.ufunc, identity: int, op: str) -> KernelRun:
    exclusive = bool(ctx.attr("exclusive", 0))
    reverse = bool(ctx.attr("reverse", 0))

    def run(x, axis):
        ax = normalize_axis(scalar_int(axis, op, "axis"), x.ndim, op)
        work = x.astype(np.float32) if x.dtype in HALF_TYPES else x
        if reverse:
            work = np.flip(work, ax)
        if exclusive:
            out = np.empty_like(work)
            lead = (slice(None),) * ax
            out[lead + (slice(0, 1),)] = identity
            if work.shape[ax] > 1:
                head, tail = lead + (slice(0, -1),), lead + (slice(1, None),)
                ufunc.accumulate(work[head], axis=ax, dtype=work.dtype, out=out[tail])
        else:
            out = ufunc.accumulate(work, axis=ax, dtype=work.dtype)
        if reverse:
            out = np.flip(out, ax)
        return (out.astype(x.dtype, copy=False),)

    return run


@KERNELS.register("CumSum", since=(11, 14))
def cumsum(ctx: KernelContext) -> KernelRun:
    return _cumulative(ctx, np.add, 0, "CumSum")


@KERNELS.register("CumProd", since=(26,))
def cumprod(ctx: KernelContext) -> KernelRun:
    return _cumulative(ctx, np.multiply, 1, "CumProd")


@KERNELS.register("Det", since=(11, 22))
def det(ctx: KernelContext) -> KernelRun:
    def run(x):
        if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"Det: expects [..., M, M] matrices, got shape {x.shape}")
        work = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
        return (np.asarray(np.linalg.det(work)).astype(x.dtype, copy=False),)

    return run
