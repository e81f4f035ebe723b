"""Pooling: MaxPool, AveragePool, LpPool, their global forms, and MaxUnpool.

Windows are reduced with whole-array operations on strided slices of the padded input:
max and sum windows separably, one spatial axis at a time; MaxPool's Indices one kernel tap
at a time (each tap a slice covering every output position).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ronn.kernel import KernelContext, KernelRun

from ..jit import load, parallel
from ._conv import Geometry, taps
from ._nn_common import KERNELS, auto_pad_attr, ints, pad_spatial, same_pads, tap_slices, widen

_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# --- geometry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolAttrs:
    """A pooling node's window attributes."""

    kernel: list[int]
    strides: list[int] | None
    dilations: list[int] | None
    pads: list[int] | None
    auto_pad: str
    ceil_mode: bool


def pool_attrs(ctx: KernelContext) -> PoolAttrs:
    """Read and check a pooling node's attributes."""
    kernel = [int(k) for k in ctx.attr("kernel_shape")]

    def optional(name: str) -> list[int] | None:
        value = ctx.attr(name, None)
        return None if value is None else [int(v) for v in value]

    attrs = PoolAttrs(
        kernel,
        optional("strides"),
        optional("dilations"),
        optional("pads"),
        auto_pad_attr(ctx),
        bool(ctx.attr("ceil_mode", 0)),
    )
    rank = len(kernel)
    if any(k < 1 for k in kernel):
        raise ctx.fail(f"kernel_shape must be positive, got {kernel}")
    for name, count in (("strides", rank), ("dilations", rank), ("pads", 2 * rank)):
        value = getattr(attrs, name)
        if value is not None and len(value) != count:
            raise ctx.fail(f"{name} {value} does not match kernel_shape {kernel}")
        if value is not None and any(v < (0 if name == "pads" else 1) for v in value):
            raise ctx.fail(f"{name} has invalid values {value}")
    return attrs


@dataclass(frozen=True)
class Window:
    """Where a pooling window reads: output shape, pads applied, and per-axis geometry."""

    out_shape: tuple[int, ...]
    geo: Geometry
    #: the explicit end pads (``geo.ends`` also covers ceil_mode's overhang)
    declared_ends: list[int]


def pool_window(attrs: PoolAttrs, in_shape: Sequence[int]) -> Window:
    """The output shape and pads of a pooling over spatial ``in_shape``."""
    rank = len(attrs.kernel)
    if len(in_shape) != rank:
        raise ValueError(f"input has {len(in_shape)} spatial axes, kernel_shape {attrs.kernel} {rank}")
    strides = ints(attrs.strides, rank, 1)
    dilations = ints(attrs.dilations, rank, 1)
    spans = [(k - 1) * d + 1 for k, d in zip(attrs.kernel, dilations)]
    out_shape, begins, declared = [], [], []
    for axis, (size, stride, span) in enumerate(zip(in_shape, strides, spans)):
        if attrs.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out, begin, end = same_pads(attrs.auto_pad, size, stride, span)
        else:
            begin = end = 0
            if attrs.auto_pad == "NOTSET" and attrs.pads is not None:
                begin, end = attrs.pads[axis], attrs.pads[axis + rank]
            room = size + begin + end - span
            out = (-(-room // stride) if attrs.ceil_mode else room // stride) + 1
            if attrs.ceil_mode and (out - 1) * stride >= size + begin:
                out -= 1  # the last window must start inside the input or its leading pad
        if out < 1:
            raise ValueError(f"kernel {attrs.kernel} does not fit the input {tuple(in_shape)}")
        out_shape.append(out)
        begins.append(begin)
        declared.append(end)
    ends = [  # what the last window needs: more than the declared pad under ceil_mode
        (o - 1) * s + span - size - b for o, s, span, size, b in zip(out_shape, strides, spans, in_shape, begins)
    ]
    return Window(tuple(out_shape), Geometry(strides, dilations, begins, ends), declared)


class _Windows:
    """Pooling windows per input shape (cached), and the fast 1-D/2-D numba path."""

    def __init__(self, attrs: PoolAttrs) -> None:
        self.attrs = attrs
        self._cache: dict[tuple[int, ...], tuple[Window, Any]] = {}

    def window(self, shape: tuple[int, ...]) -> Window:
        return self._entry(shape)[0]

    def _entry(self, shape: tuple[int, ...]) -> tuple[Window, Any]:
        entry = self._cache.get(shape)
        if entry is None:
            if len(self._cache) > 32:
                self._cache.clear()
            entry = self._cache[shape] = (pool_window(self.attrs, shape[2:]), {})
        return entry

    def fast(self, x: Any) -> bool:
        """Whether ``x`` can take the numba path."""
        return x.dtype in _FAST_DTYPES and x.ndim in (3, 4) and isinstance(x, np.ndarray)

    def geometry(self, x: Any) -> tuple[Window, tuple[int, ...]]:
        """The window and the 2-D (kh, kw, sh, sw, dh, dw, ph, pw) the kernels take."""
        window = self._entry(x.shape)[0]
        geo = window.geo
        if x.ndim == 3:
            values = (1, self.attrs.kernel[0], 1, geo.strides[0], 1, geo.dilations[0], 0, geo.begins[0])
        else:
            values = (*self.attrs.kernel, *geo.strides, *geo.dilations, *geo.begins)
        return window, values

    def run_max(self, x: np.ndarray) -> np.ndarray:
        module = load("pool")
        window, geometry = self.geometry(x)
        y = np.empty(x.shape[:2] + window.out_shape, dtype=x.dtype)
        x4, y4 = _as_planes(np.ascontiguousarray(x)), _as_planes(y)
        fn = module.max_pool_par if parallel(y.size * math.prod(self.attrs.kernel)) else module.max_pool
        lowest = x.dtype.type(-np.inf)
        for image in range(x.shape[0]):
            fn(x4[image], y4[image], *geometry, lowest)
        return y

    def run_average(self, x: np.ndarray, include_pad: bool) -> np.ndarray:
        module = load("pool")
        window, geometry = self.geometry(x)
        counts = self._entry(x.shape)[1].get((include_pad, x.dtype))
        if counts is None:
            counts = _window_counts(np, window, x.shape[2:], self.attrs.kernel, include_pad)
            counts = np.ascontiguousarray(counts.reshape(-1, window.out_shape[-1]), dtype=x.dtype)
            self._entry(x.shape)[1][(include_pad, x.dtype)] = counts
        y = np.empty(x.shape[:2] + window.out_shape, dtype=x.dtype)
        x4, y4 = _as_planes(np.ascontiguousarray(x)), _as_planes(y)
        fn = module.average_pool_par if parallel(y.size * math.prod(self.attrs.kernel)) else module.average_pool
        for image in range(x.shape[0]):
            fn(x4[image], y4[image], counts, *geometry)
        return y


def _as_planes(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) as is; (N, C, L) as (N, C, 1, L)."""
    return x if x.ndim == 4 else x.reshape(x.shape[:2] + (1,) + x.shape[2:])


# --- window reductions --------------------------------------------------------------------


def _tap_views(padded: Any, kernel: Sequence[int], window: Window) -> Iterator[Any]:
    """Each kernel tap's (N, C, *out) slice of the padded input, taps in row-major order."""
    everything = (slice(None), slice(None))
    geo = window.geo
    for tap in taps(kernel):
        yield padded[everything + tap_slices(tap, window.out_shape, geo.strides, geo.dilations)]


def _separable(xp: Any, padded: Any, kernel: Sequence[int], window: Window, combine: Any) -> Any:
    """Reduce every window with ``combine`` (maximum, add), one spatial axis at a time.

    Max and sum windows are separable, so this costs ``sum(kernel)`` passes, not ``prod``.
    """
    current = padded
    for axis in reversed(range(len(kernel))):
        k, o = kernel[axis], window.out_shape[axis]
        s, d = window.geo.strides[axis], window.geo.dilations[axis]
        lead = (slice(None),) * (axis + 2)
        reduced = current[lead + (slice(0, (o - 1) * s + 1, s),)].copy()
        for t in range(1, k):
            combine(reduced, current[lead + (slice(t * d, t * d + (o - 1) * s + 1, s),)], out=reduced)
        current = reduced
    return current


def _lowest(dtype: np.dtype) -> Any:
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


# --- MaxPool ------------------------------------------------------------------------------


def max_pool(xp: Any, x: Any, kernel: Sequence[int], window: Window, with_taps: bool) -> tuple[Any, Any]:
    """The window maxima, and (when asked) each maximum's flat tap index (first on ties)."""
    padded = pad_spatial(xp, x, window.geo.begins, window.geo.ends, _lowest(x.dtype))
    if not with_taps:
        return _separable(xp, padded, kernel, window, xp.maximum), None
    best = best_tap = None
    for index, view in enumerate(_tap_views(padded, kernel, window)):
        if best is None:
            best = view.copy()
            best_tap = xp.zeros(view.shape, dtype=np.int64)
        else:
            better = view > best
            best = xp.where(better, view, best)
            best_tap[better] = index
    return best, best_tap


def _flat_indices(
    xp: Any, best_tap: Any, kernel: Sequence[int], window: Window, x_shape: Sequence[int], column_major: bool
) -> Any:
    """Flat input indices (batch and channel included) of the chosen taps."""
    rank = len(kernel)
    spatial = x_shape[2:]
    tap_coords = np.array(taps(kernel), dtype=np.int64).reshape(-1, rank)
    if column_major:
        axis_steps = [math.prod(spatial[:axis]) for axis in range(rank)]
    else:
        axis_steps = [math.prod(spatial[axis + 1 :]) for axis in range(rank)]
    flat = xp.zeros(best_tap.shape, dtype=np.int64)
    for axis in range(rank):
        shape = [1] * (rank + 2)
        shape[axis + 2] = window.out_shape[axis]
        starts = xp.arange(window.out_shape[axis], dtype=np.int64) * window.geo.strides[axis]
        starts -= window.geo.begins[axis]
        offsets = xp.asarray(tap_coords[:, axis] * window.geo.dilations[axis])
        flat += (starts.reshape(shape) + offsets[best_tap]) * axis_steps[axis]
    planes = xp.arange(x_shape[0] * x_shape[1], dtype=np.int64).reshape(x_shape[:2] + (1,) * rank)
    return flat + planes * math.prod(spatial)


@KERNELS.register("MaxPool", since=(1, 8, 10, 11, 12, 22))
def max_pool_op(ctx: KernelContext) -> KernelRun:
    """MaxPool, with the optional Indices output (row- or column-major flat indices)."""
    xp = ctx.xp
    attrs = pool_attrs(ctx)
    column_major = int(ctx.attr("storage_order", 0)) == 1
    want_indices = ctx.num_outputs > 1 and bool(ctx.node.outputs[1])

    windows = _Windows(attrs)

    def run(x):
        if not want_indices and windows.fast(x):
            return (windows.run_max(x),)
        window = windows.window(x.shape)
        values = x if x.dtype.kind in "iu" else widen(x)
        best, best_tap = max_pool(xp, values, attrs.kernel, window, want_indices)
        y = best.astype(x.dtype, copy=False)
        if not want_indices:
            return (y,)
        return (y, _flat_indices(xp, best_tap, attrs.kernel, window, x.shape, column_major))

    return run


# --- AveragePool and LpPool ---------------------------------------------------------------


def _window_counts(
    xp: Any, window: Window, in_shape: Sequence[int], kernel: Sequence[int], include_pad: bool
) -> Any:
    """How many positions of each window count toward an average, shaped (1, 1, *out)."""
    rank = len(kernel)
    total = None
    for axis in range(rank):
        begin, size = window.geo.begins[axis], in_shape[axis]
        low, high = (0, begin + size + window.declared_ends[axis]) if include_pad else (begin, begin + size)
        starts = np.arange(window.out_shape[axis]) * window.geo.strides[axis]
        positions = starts[:, None] + np.arange(kernel[axis]) * window.geo.dilations[axis]
        counts = ((positions >= low) & (positions < high)).sum(axis=1)
        shape = [1] * (rank + 2)
        shape[axis + 2] = -1
        counts = counts.reshape(shape)
        total = counts if total is None else total * counts
    return xp.asarray(total)


def _window_sums(xp: Any, values: Any, kernel: Sequence[int], window: Window) -> Any:
    """The sum of each window over the zero-padded input."""
    padded = pad_spatial(xp, values, window.geo.begins, window.geo.ends, 0)
    return _separable(xp, padded, kernel, window, xp.add)


@KERNELS.register("AveragePool", since=(1, 7, 10, 11, 19, 22))
def average_pool(ctx: KernelContext) -> KernelRun:
    """AveragePool: window means, counting pads or not (count_include_pad)."""
    xp = ctx.xp
    attrs = pool_attrs(ctx)
    include_pad = bool(ctx.attr("count_include_pad", 0))

    windows = _Windows(attrs)

    def run(x):
        if windows.fast(x):
            return (windows.run_average(x, include_pad),)
        window = windows.window(x.shape)
        values = widen(x)
        sums = _window_sums(xp, values, attrs.kernel, window)
        counts = _window_counts(xp, window, x.shape[2:], attrs.kernel, include_pad)
        return ((sums / counts.astype(values.dtype)).astype(x.dtype, copy=False),)

    return run


def _p_attr(ctx: KernelContext) -> float:
    p = ctx.attr("p", 2.0 if ctx.opset < 2 else 2)
    if p <= 0:
        raise ctx.fail(f"p must be positive, got {p}")
    return p


def _p_power(xp: Any, values: Any, p: float) -> Any:
    magnitude = xp.abs(values)
    if p == 1:
        return magnitude
    if p == 2:
        return magnitude * magnitude
    return magnitude**p


def _p_root(xp: Any, values: Any, p: float) -> Any:
    if p == 1:
        return values
    if p == 2:
        return xp.sqrt(values)
    return values ** (1.0 / p)


@KERNELS.register("LpPool", since=(1, 2, 11, 18, 22))
def lp_pool(ctx: KernelContext) -> KernelRun:
    """LpPool: the p-norm of each window."""
    xp = ctx.xp
    attrs = pool_attrs(ctx)
    p = _p_attr(ctx)

    def run(x):
        window = pool_window(attrs, x.shape[2:])
        sums = _window_sums(xp, _p_power(xp, widen(x), p), attrs.kernel, window)
        return (_p_root(xp, sums, p).astype(x.dtype, copy=False),)

    return run


# --- global pools -------------------------------------------------------------------------


def _spatial_axes(x: Any) -> tuple[int, ...]:
    if x.ndim < 3:
        raise ValueError(f"global pooling needs an input of rank 3 or more, got shape {x.shape}")
    return tuple(range(2, x.ndim))


_means: Any = None  # ronn_cpu.jit.pool.plane_means once loaded


def _load_means() -> Any:
    global _means
    _means = load("pool").plane_means
    return _means


@KERNELS.register("GlobalAveragePool", since=(1, 22))
def global_average_pool(ctx: KernelContext) -> KernelRun:
    """GlobalAveragePool: the mean over every spatial axis."""
    xp = ctx.xp

    def run(x):
        if x.dtype in _FAST_DTYPES and x.ndim >= 3 and x.size and xp is np:
            # one contiguous reduction per (n, c) plane
            planes = x.reshape(x.shape[0] * x.shape[1], -1)
            y = np.empty(x.shape[:2] + (1,) * (x.ndim - 2), x.dtype)
            (_means or _load_means())(planes, y.reshape(-1))
            return (y,)
        return (xp.mean(widen(x), axis=_spatial_axes(x), keepdims=True).astype(x.dtype, copy=False),)

    return run


@KERNELS.register("GlobalMaxPool", since=(1, 22))
def global_max_pool(ctx: KernelContext) -> KernelRun:
    """GlobalMaxPool: the maximum over every spatial axis."""
    xp = ctx.xp

    def run(x):
        return (xp.max(widen(x), axis=_spatial_axes(x), keepdims=True).astype(x.dtype, copy=False),)

    return run


@KERNELS.register("GlobalLpPool", since=(1, 2, 22))
def global_lp_pool(ctx: KernelContext) -> KernelRun:
    """GlobalLpPool: the p-norm over every spatial axis."""
    xp = ctx.xp
    p = _p_attr(ctx)

    def run(x):
        sums = xp.sum(_p_power(xp, widen(x), p), axis=_spatial_axes(x), keepdims=True)
        return (_p_root(xp, sums, p).astype(x.dtype, copy=False),)

    return run


# --- MaxUnpool ----------------------------------------------------------------------------


@KERNELS.register("MaxUnpool", since=(9, 11, 22))
def max_unpool(ctx: KernelContext) -> KernelRun:
    """MaxUnpool: scatter pooled values back to the flat indices MaxPool reported."""
    xp = ctx.xp
    attrs = pool_attrs(ctx)

    def run(x, indices, output_shape=None):
        rank = len(attrs.kernel)
        if x.ndim != rank + 2 or indices.shape != x.shape:
            raise ValueError(f"input {x.shape} and indices {indices.shape} do not fit kernel {attrs.kernel}")
        strides = ints(attrs.strides, rank, 1)
        pads = ints(attrs.pads, 2 * rank, 0)
        inferred = x.shape[:2] + tuple(
            (n - 1) * s + k - pads[a] - pads[a + rank]
            for a, (n, s, k) in enumerate(zip(x.shape[2:], strides, attrs.kernel))
        )
        y = xp.zeros(math.prod(inferred), dtype=x.dtype)
        flat = indices.reshape(-1)
        if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= y.size):
            raise ValueError(f"indices out of range for the unpooled shape {inferred}")
        y[flat] = x.reshape(-1)
        y = y.reshape(inferred)
        if output_shape is None:
            return (y,)
        # as onnx's reference: indices address the inferred shape, then zeros pad to output_shape
        shape = tuple(int(v) for v in np.asarray(output_shape).reshape(-1))
        if len(shape) != x.ndim or any(o < i for o, i in zip(shape, inferred)):
            raise ValueError(f"output_shape {shape} is smaller than the unpooled shape {inferred}")
        if shape == inferred:
            return (y,)
        out = xp.zeros(shape, dtype=x.dtype)
        out[tuple(slice(0, n) for n in inferred)] = y
        return (out,)

    return run
