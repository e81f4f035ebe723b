"""Normalizations (Batch, Instance, Layer, Group, RMS, LRN, Lp, MeanVariance) and Dropout.

Narrow float inputs are computed in float32 (or the node's ``stash_type``) and cast back.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ronn.dtypes import to_numpy
from ronn.ir import TensorType
from ronn.kernel import KernelContext, KernelRun

from ..jit import load, parallel
from ._nn_common import KERNELS, compute_dtype, widen

_FAST = (np.dtype(np.float32), np.dtype(np.float64))


def _output_dtype(ctx: KernelContext, index: int, fallback: np.dtype) -> np.dtype:
    """The declared element type of output ``index``, else ``fallback``."""
    types = ctx.output_types
    if index < len(types) and isinstance(types[index], TensorType):
        try:
            return np.dtype(types[index].dtype.np_dtype)
        except TypeError:
            pass
    return np.dtype(fallback)


def _stash_dtype(ctx: KernelContext) -> np.dtype:
    """The dtype a node's ``stash_type`` names (float32 by default)."""
    stash = int(ctx.attr("stash_type", 1))
    try:
        return np.dtype(to_numpy(stash))
    except TypeError:
        raise ctx.fail(f"unsupported stash_type {stash}") from None


def _normalized_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _channel_param(value: Any, ndim: int, dtype: np.dtype) -> Any:
    """A per-channel (or per channel-and-position) parameter shaped to broadcast over axis 1."""
    value = value.astype(dtype, copy=False)
    return value.reshape((1,) + value.shape + (1,) * (ndim - 1 - value.ndim))


def _moments(xp: Any, x: Any, axes: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """Mean and (population) variance over ``axes`` (reduced axes kept), and ``x - mean``."""
    mean = xp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    return mean, xp.mean(centred * centred, axis=axes, keepdims=True), centred


# --- BatchNormalization -------------------------------------------------------------------


@KERNELS.register("BatchNormalization", since=(1, 6, 7, 9, 14, 15))
def batch_normalization(ctx: KernelContext) -> KernelRun:
    """BatchNormalization: running statistics for inference, batch statistics in training."""
    return batch_norm_kernel(ctx)


def batch_norm_kernel(
    ctx: KernelContext, *, activation: str | None = None, alpha: float = 0.01, beta: float = 0.0
) -> KernelRun:
    """BatchNormalization's kernel, with an optional activation fused into inference.

    For fused operators: in inference, ``activation(BatchNormalization(x))`` is one numba pass
    over x (float32/float64) with the per-channel factor and offset folded once while the
    statistics inputs stay the same arrays (initializers). ``activation`` and its
    ``alpha``/``beta`` are those of :func:`ronn_cpu.kernels._epilogue.epilogue`.
    """
    from ._epilogue import ACTIVATIONS, epilogue_numpy

    if activation not in ACTIVATIONS:
        raise ctx.fail(f"unsupported fused activation {activation!r}")
    xp = ctx.xp
    epsilon = float(ctx.attr("epsilon", 1e-5))
    momentum = float(ctx.attr("momentum", 0.9))
    spatial = bool(ctx.attr("spatial", 1)) if ctx.opset < 9 else True
    if ctx.opset >= 14:
        training = bool(ctx.attr("training_mode", 0))
    elif ctx.opset < 7:
        training = not bool(ctx.attr("is_test", 0)) and ctx.num_outputs > 1
    else:
        training = ctx.num_outputs > 1

    folded: list[Any] = [None]  # ((scale, bias, mean, var), dtype, factor, offset) last used

    def fold(scale, bias, mean, var, dtype):
        """Per-channel factor and offset (y = x * factor + offset), kept while the inputs stay."""
        entry = folded[0]
        if (
            entry is not None and entry[1] == dtype and entry[0][0] is scale and entry[0][1] is bias
            and entry[0][2] is mean and entry[0][3] is var
        ):  # fmt: skip
            return entry[2], entry[3]
        # formed in the compute dtype, as the reference does
        factor = (scale.astype(dtype) / np.sqrt(var.astype(dtype) + dtype.type(epsilon))).reshape(-1)
        offset = (bias.astype(dtype) - mean.astype(dtype) * factor.reshape(mean.shape)).reshape(-1)
        factor, offset = np.ascontiguousarray(factor), np.ascontiguousarray(offset)
        folded[0] = ((scale, bias, mean, var), dtype, factor, offset)
        return factor, offset

    def run(x, scale, bias, mean, var):
        if (
            not training and xp is np and x.dtype in _FAST and x.ndim >= 2 and x.size
            and scale.size == bias.size == mean.size == var.size == x.shape[1]
        ):  # fmt: skip
            from ._epilogue import affine

            factor, offset = fold(scale, bias, mean, var, x.dtype)
            y = np.empty(x.shape, x.dtype)
            if x.dtype == np.float64 and activation in ("Tanh", "Gelu", "GeluTanh"):
                affine(np.ascontiguousarray(x), y, factor, offset)  # float64: exact activation after
                y = epilogue_numpy(y, activation=activation, alpha=alpha, beta=beta)
            else:
                affine(np.ascontiguousarray(x), y, factor, offset, activation=activation, alpha=alpha, beta=beta)
            return (y,) + (None,) * (ctx.num_outputs - 1)
        work = compute_dtype(x.dtype)
        values = x.astype(work, copy=False)
        ndim = x.ndim
        if training:
            axes = (0,) if not spatial else tuple(a for a in range(ndim) if a != 1)
            batch_mean, batch_var, _ = _moments(xp, values, axes)
            centre, spread = batch_mean, batch_var
        else:
            centre, spread = _channel_param(mean, ndim, work), _channel_param(var, ndim, work)
        # y = x * a + c with a = scale / sqrt(var + eps), c = bias - mean * a: two passes over x
        factor = _channel_param(scale, ndim, work) / xp.sqrt(spread + work.type(epsilon))
        offset = _channel_param(bias, ndim, work) - centre * factor
        y = values * factor
        y += offset
        if activation is not None:
            y = epilogue_numpy(y, activation=activation, alpha=alpha, beta=beta)
        y = y.astype(x.dtype, copy=False)
        if not training:
            return (y,) + (None,) * (ctx.num_outputs - 1)
        stat_shape = mean.shape
        batch_mean = batch_mean.reshape(stat_shape)
        batch_var = batch_var.reshape(stat_shape)
        running_mean = mean.astype(work) * work.type(momentum) + batch_mean * work.type(1 - momentum)
        running_var = var.astype(work) * work.type(momentum) + batch_var * work.type(1 - momentum)
        outputs = [y, running_mean.astype(mean.dtype), running_var.astype(var.dtype)]
        if ctx.opset < 14:
            outputs += [batch_mean.astype(mean.dtype), batch_var.astype(var.dtype)]
        return tuple(outputs[: ctx.num_outputs])

    return run


# --- per-instance normalizations ----------------------------------------------------------


@KERNELS.register("InstanceNormalization", since=(1, 6, 22))
def instance_normalization(ctx: KernelContext) -> KernelRun:
    """InstanceNormalization: normalize each (sample, channel) over its spatial axes."""
    xp = ctx.xp
    epsilon = float(ctx.attr("epsilon", 1e-5))

    def run(x, scale, bias):
        if x.ndim < 3:
            raise ValueError(f"InstanceNormalization needs rank 3 or more, got shape {x.shape}")
        work = compute_dtype(x.dtype)
        values = x.astype(work, copy=False)
        _, var, y = _moments(xp, values, tuple(range(2, x.ndim)))
        y /= xp.sqrt(var + work.type(epsilon))
        y *= _channel_param(scale, x.ndim, work)
        y += _channel_param(bias, x.ndim, work)
        return (y.astype(x.dtype, copy=False),)

    return run


@KERNELS.register("LayerNormalization", since=17)
def layer_normalization(ctx: KernelContext) -> KernelRun:
    """LayerNormalization over the axes from ``axis`` on; optional Mean and InvStdDev outputs."""
    xp = ctx.xp
    axis = int(ctx.attr("axis", -1))
    epsilon = float(ctx.attr("epsilon", 1e-5))
    stash = _stash_dtype(ctx)
    stat_dtypes = [_output_dtype(ctx, i, stash) for i in (1, 2)]
    stash = compute_dtype(stash)
    outputs_wanted = max(1, ctx.num_outputs)
    fast_ok = xp is np and stash in _FAST
    prepared: dict[tuple[int, np.dtype], Any] = {}

    def vector(value: Any, normalized: tuple[int, ...], dtype: np.dtype) -> Any:
        """A scale or bias over the normalized axes as a contiguous 1-D array of ``dtype``,
        or None when it broadcasts (the reference path handles that)."""
        key = (id(value), normalized, dtype)
        entry = prepared.get(key)
        if entry is not None and entry[0] is value:
            return entry[1]
        shape = tuple(value.shape)
        while shape and shape[0] == 1 and len(shape) > len(normalized):
            shape = shape[1:]
        array = None
        if shape == normalized:
            array = np.ascontiguousarray(value.reshape(-1), dtype=dtype)
        if len(prepared) > 8:
            prepared.clear()
        prepared[key] = (value, array)
        return array

    def run_fast(x, scale, bias, first):
        rows = math.prod(x.shape[:first])
        width = x.size // rows
        normalized = x.shape[first:]
        gamma = vector(scale, normalized, x.dtype)
        beta = None if bias is None else vector(bias, normalized, x.dtype)
        if gamma is None or (bias is not None and beta is None):
            return None
        module = load("norm")
        values = np.ascontiguousarray(x).reshape(rows, width)
        y = np.empty_like(values)
        mean = np.empty(rows)
        inv_std = np.empty(rows)
        fn = module.layer_norm_par if parallel(x.size * 4) and rows > 1 else module.layer_norm
        fn(values, gamma, gamma if beta is None else beta, beta is not None, epsilon, y, mean, inv_std)
        y = y.reshape(x.shape)
        if outputs_wanted == 1:
            return (y,)
        stat_shape = x.shape[:first] + (1,) * (x.ndim - first)
        return (
            y,
            mean.reshape(stat_shape).astype(stat_dtypes[0]),
            inv_std.reshape(stat_shape).astype(stat_dtypes[1]),
        )[:outputs_wanted]

    def run(x, scale, bias=None):
        first = _normalized_axis(axis, x.ndim)
        if fast_ok and x.dtype in _FAST and x.size and first < x.ndim:
            result = run_fast(x, scale, bias, first)
            if result is not None:
                return result
        work = np.promote_types(stash, compute_dtype(x.dtype))
        values = x.astype(work, copy=False)
        mean, var, y = _moments(xp, values, tuple(range(first, x.ndim)))
        inv_std = 1 / xp.sqrt(var + work.type(epsilon))
        y *= inv_std
        y *= scale.astype(work, copy=False)
        if bias is not None:
            y += bias.astype(work, copy=False)
        outputs = (y.astype(x.dtype, copy=False), mean.astype(stat_dtypes[0]), inv_std.astype(stat_dtypes[1]))
        return outputs[:outputs_wanted]

    return run


@KERNELS.register("RMSNormalization", since=23)
def rms_normalization(ctx: KernelContext) -> KernelRun:
    """RMSNormalization: divide by the root mean square over the axes from ``axis`` on."""
    xp = ctx.xp
    axis = int(ctx.attr("axis", -1))
    epsilon = float(ctx.attr("epsilon", 1e-5))
    stash = compute_dtype(_stash_dtype(ctx))

    def run(x, scale):
        first = _normalized_axis(axis, x.ndim)
        work = np.promote_types(stash, compute_dtype(x.dtype))
        values = x.astype(work, copy=False)
        mean_square = xp.mean(values * values, axis=tuple(range(first, x.ndim)), keepdims=True)
        y = values / xp.sqrt(mean_square + work.type(epsilon)) * scale.astype(work, copy=False)
        return (y.astype(scale.dtype, copy=False),)

    return run


@KERNELS.register("GroupNormalization", since=(18, 21))
def group_normalization(ctx: KernelContext) -> KernelRun:
    """GroupNormalization: normalize channel groups; scale/bias per group (18) or channel (21)."""
    xp = ctx.xp
    groups = int(ctx.attr("num_groups"))
    epsilon = float(ctx.attr("epsilon", 1e-5))
    per_channel = ctx.opset >= 21
    stash = compute_dtype(_stash_dtype(ctx)) if per_channel else None
    if groups < 1:
        raise ctx.fail(f"num_groups must be positive, got {groups}")

    def run(x, scale, bias):
        n, channels = x.shape[:2]
        if channels % groups:
            raise ValueError(f"{channels} channels do not split into {groups} groups")
        work = compute_dtype(x.dtype) if stash is None else np.promote_types(stash, compute_dtype(x.dtype))
        grouped = x.astype(work, copy=False).reshape(n, groups, -1)
        _, var, normalized = _moments(xp, grouped, (2,))
        normalized /= xp.sqrt(var + work.type(epsilon))
        if per_channel:
            normalized = normalized.reshape(x.shape)
            y = normalized * _channel_param(scale, x.ndim, work) + _channel_param(bias, x.ndim, work)
        else:
            y = normalized * scale.astype(work).reshape(1, groups, 1) + bias.astype(work).reshape(1, groups, 1)
            y = y.reshape(x.shape)
        return (y.astype(x.dtype, copy=False),)

    return run


@KERNELS.register("MeanVarianceNormalization", since=(9, 13))
def mean_variance_normalization(ctx: KernelContext) -> KernelRun:
    """MeanVarianceNormalization: (x - mean) / (std + 1e-9) over ``axes``."""
    xp = ctx.xp
    axes_attr = [int(a) for a in ctx.attr("axes", [0, 2, 3])]

    def run(x):
        axes = tuple(sorted({_normalized_axis(a, x.ndim) for a in axes_attr}))
        work = compute_dtype(x.dtype)
        values = x.astype(work, copy=False)
        _, var, y = _moments(xp, values, axes)
        y /= xp.sqrt(var) + work.type(1e-9)
        return (y.astype(x.dtype, copy=False),)

    return run


@KERNELS.register("LpNormalization", since=(1, 22))
def lp_normalization(ctx: KernelContext) -> KernelRun:
    """LpNormalization: divide by the L1 or L2 norm along ``axis`` (zero norms give zeros)."""
    xp = ctx.xp
    axis = int(ctx.attr("axis", -1))
    p = int(ctx.attr("p", 2))
    if p not in (1, 2):
        raise ctx.fail(f"p must be 1 or 2, got {p}")

    def run(x):
        along = _normalized_axis(axis, x.ndim)
        values = widen(x)
        if p == 1:
            norm = xp.sum(xp.abs(values), axis=along, keepdims=True)
        else:
            norm = xp.sqrt(xp.sum(values * values, axis=along, keepdims=True))
        safe = xp.where(norm == 0, values.dtype.type(1), norm)
        y = xp.where(norm == 0, values.dtype.type(0), values / safe)
        return (y.astype(x.dtype, copy=False),)

    return run


@KERNELS.register("LRN", since=(1, 13))
def lrn(ctx: KernelContext) -> KernelRun:
    """LRN: local response normalization across neighbouring channels."""
    xp = ctx.xp
    size = int(ctx.attr("size"))
    alpha = float(ctx.attr("alpha", 1e-4))
    beta = float(ctx.attr("beta", 0.75))
    bias = float(ctx.attr("bias", 1.0))
    if size < 1:
        raise ctx.fail(f"size must be positive, got {size}")
    before, after = (size - 1) // 2, math.ceil((size - 1) / 2)

    def run(x):
        if x.ndim < 3:
            raise ValueError(f"LRN needs rank 3 or more, got shape {x.shape}")
        values = widen(x)
        channels = x.shape[1]
        squares = values * values
        padded = xp.zeros((x.shape[0], channels + before + after) + x.shape[2:], dtype=values.dtype)
        padded[:, before : before + channels] = squares
        total = xp.zeros_like(values)
        for offset in range(size):
            total += padded[:, offset : offset + channels]
        scale = values.dtype.type(bias) + values.dtype.type(alpha / size) * total
        y = values / scale ** values.dtype.type(beta)
        return (y.astype(x.dtype, copy=False),)

    return run


# --- Dropout ------------------------------------------------------------------------------


@KERNELS.register("Dropout", since=(1, 6, 7, 10, 12, 13, 22))
def dropout(ctx: KernelContext) -> KernelRun:
    """Dropout: identity at inference; random zeroing and 1/(1-ratio) scaling when training.

    With a ``seed`` attribute the mask is ``RandomState(seed).uniform(0, 1, shape) >= ratio``,
    as onnx's reference draws it.
    """
    xp = ctx.xp
    seed = ctx.attr("seed", None)
    ratio_attr = float(ctx.attr("ratio", 0.5))
    mask_is_bool = ctx.opset >= 10
    want_mask = ctx.num_outputs > 1 and bool(ctx.node.outputs[1])

    def run(x, ratio=None, training_mode=None):
        training = ctx.opset >= 12 and training_mode is not None and bool(np.asarray(training_mode))
        rate = ratio_attr if ratio is None else float(np.asarray(ratio))
        if not training or rate == 0:
            y = x
            keep = xp.ones(x.shape, dtype=bool) if want_mask else None
        else:
            if not 0 <= rate < 1:
                raise ValueError(f"dropout ratio must be in [0, 1), got {rate}")
            rng = np.random.RandomState(int(seed)) if seed is not None else np.random.RandomState()
            keep = xp.asarray(rng.uniform(0.0, 1.0, x.shape) >= rate)
            values = widen(x)
            y = (values * keep * values.dtype.type(1 / (1 - rate))).astype(x.dtype, copy=False)
        if not want_mask:
            return (y,)
        return (y, keep if mask_is_bool else keep.astype(x.dtype))

    return run
