"""Tensor kernels that index: Gather*, Scatter*, TensorScatter, Compress, NonZero, TopK, Unique."""

from __future__ import annotations

import numpy as np

from ronn.kernel import KernelContext, KernelRun

from ._tensor_base import HALF_TYPES, KERNELS, as_array, normalize_axis, scalar_int

_FULL = slice(None)


def _checked_indices(indices: np.ndarray, dim: int, op: str) -> np.ndarray:
    """Indices with negatives wrapped, as intp; a ValueError when any lies outside ``[-dim, dim)``."""
    if indices.size == 0:
        return indices.astype(np.intp, copy=False)
    low, high = int(indices.min()), int(indices.max())
    if low < -dim or high >= dim:
        bad = low if low < -dim else high
        raise ValueError(f"{op}: index {bad} is out of range for an axis of size {dim}")
    idx = indices.astype(np.intp, copy=False)
    if low < 0:
        idx = np.where(idx < 0, idx + dim, idx)
    return idx


# --- Gather, GatherElements, GatherND ------------------------------------------------------


@KERNELS.register("Gather", since=(1, 11, 13))
def gather(ctx: KernelContext) -> KernelRun:
    axis = ctx.attr("axis", 0)

    def run(x, indices):
        ax = axis if 0 <= axis < x.ndim else normalize_axis(axis, x.ndim, "Gather")
        try:
            out = x.take(indices, axis=ax)
        except IndexError:
            out = None
        if out is None:  # raise outside the handler, without numpy's error chained
            _checked_indices(indices, x.shape[ax], "Gather")
            raise ValueError(f"Gather: indices out of range for an axis of size {x.shape[ax]}")
        return (as_array(out, x.dtype),)

    return run


@KERNELS.register("GatherElements", since=(11, 13))
def gather_elements(ctx: KernelContext) -> KernelRun:
    axis = ctx.attr("axis", 0)

    def run(x, indices):
        rank = x.ndim
        ax = normalize_axis(axis, rank, "GatherElements")
        if indices.ndim != rank:
            raise ValueError(f"GatherElements: indices rank {indices.ndim} differs from data rank {rank}")
        idx = _checked_indices(indices, x.shape[ax], "GatherElements")
        window = tuple(_FULL if i == ax else slice(0, n) for i, n in enumerate(indices.shape))
        return (np.take_along_axis(x[window], idx, axis=ax),)

    return run


@KERNELS.register("GatherND", since=(11, 12, 13))
def gather_nd(ctx: KernelContext) -> KernelRun:
    batch_dims = ctx.attr("batch_dims", 0)

    def run(x, indices):
        depth = indices.shape[-1] if indices.ndim else 0
        if indices.ndim < 1 or batch_dims + depth > x.ndim:
            raise ValueError(
                f"GatherND: indices of shape {indices.shape} do not fit data of shape {x.shape} "
                f"with batch_dims={batch_dims}"
            )
        batch_shape = x.shape[:batch_dims]
        if indices.shape[:batch_dims] != batch_shape:
            raise ValueError(f"GatherND: batch dimensions of {indices.shape} and {x.shape} differ")
        batch = int(np.prod(batch_shape, dtype=np.int64))
        data = x.reshape((batch,) + x.shape[batch_dims:])
        points = int(np.prod(indices.shape[batch_dims:-1], dtype=np.int64))
        coords = indices.reshape(batch, points, depth)
        rows = np.arange(batch)[:, None]
        picks = [rows if depth else np.repeat(rows, coords.shape[1], axis=1)]
        for j in range(depth):
            picks.append(_checked_indices(coords[..., j], x.shape[batch_dims + j], "GatherND"))
        out = data[tuple(picks)]
        return (out.reshape(indices.shape[:-1] + x.shape[batch_dims + depth :]),)

    return run


# --- Scatter, ScatterElements, ScatterND, TensorScatter ------------------------------------

_REDUCERS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _reduction(ctx: KernelContext, allowed: tuple[str, ...]) -> np.ufunc | None:
    name = ctx.attr("reduction", "none")
    if name == "none":
        return None
    if name not in allowed:
        raise ctx.fail(f"unsupported reduction {name!r}")
    return _REDUCERS[name]


def _scatter_into(out: np.ndarray, where: tuple, updates: np.ndarray, reducer: np.ufunc | None) -> None:
    if reducer is None:
        out[where] = updates
    else:
        reducer.at(out, where, updates)


def _scatter_elements(axis: int, reducer: np.ufunc | None, op: str) -> KernelRun:
    def run(x, indices, updates):
        rank = x.ndim
        ax = normalize_axis(axis, rank, op)
        if indices.shape != updates.shape or indices.ndim != rank:
            raise ValueError(
                f"{op}: indices {indices.shape} and updates {updates.shape} must share a shape of rank {rank}"
            )
        idx = _checked_indices(indices, x.shape[ax], op)
        where = list(np.ogrid[tuple(slice(0, n) for n in indices.shape)]) if rank else []
        where[ax] = idx
        out = x.copy()
        _scatter_into(out, tuple(where), updates, reducer)
        return (out,)

    return run


@KERNELS.register("Scatter", since=(9, 11))
def scatter(ctx: KernelContext) -> KernelRun:
    return _scatter_elements(ctx.attr("axis", 0), None, "Scatter")


@KERNELS.register("ScatterElements", since=(11, 13, 16, 18))
def scatter_elements(ctx: KernelContext) -> KernelRun:
    allowed = ("add", "mul", "max", "min") if ctx.opset >= 18 else ("add", "mul")
    return _scatter_elements(ctx.attr("axis", 0), _reduction(ctx, allowed), "ScatterElements")


@KERNELS.register("ScatterND", since=(11, 13, 16, 18))
def scatter_nd(ctx: KernelContext) -> KernelRun:
    allowed = ("add", "mul", "max", "min") if ctx.opset >= 18 else ("add", "mul")
    reducer = _reduction(ctx, allowed)

    def run(x, indices, updates):
        depth = indices.shape[-1] if indices.ndim else 0
        if indices.ndim < 1 or depth > x.ndim:
            raise ValueError(
                f"ScatterND: indices of shape {indices.shape} do not fit data of shape {x.shape}"
            )
        expected = indices.shape[:-1] + x.shape[depth:]
        if updates.shape != expected:
            raise ValueError(f"ScatterND: updates have shape {updates.shape}, expected {expected}")
        where = tuple(_checked_indices(indices[..., j], x.shape[j], "ScatterND") for j in range(depth))
        out = x.copy()
        _scatter_into(out, where, updates, reducer)
        return (out,)

    return run


@KERNELS.register("TensorScatter", since=(24,))
def tensor_scatter(ctx: KernelContext) -> KernelRun:
    mode = ctx.attr("mode", "linear")
    if mode not in ("linear", "circular"):
        raise ctx.fail(f"unsupported mode {mode!r}")
    axis = ctx.attr("axis", -2)

    def run(past, update, write_indices=None):
        rank = past.ndim
        ax = normalize_axis(axis, rank, "TensorScatter")
        if ax == 0:
            raise ValueError("TensorScatter: axis must not be the batch axis 0")
        if update.ndim != rank or any(
            u != p for i, (u, p) in enumerate(zip(update.shape, past.shape)) if i != ax
        ) or update.shape[ax] > past.shape[ax]:
            raise ValueError(
                f"TensorScatter: update shape {update.shape} does not fit cache shape {past.shape}"
            )
        batch, capacity, length = past.shape[0], past.shape[ax], update.shape[ax]
        if write_indices is None:
            starts = np.zeros(batch, dtype=np.int64)
        else:
            starts = write_indices.astype(np.int64).reshape(-1)
        if starts.shape[0] != batch:
            raise ValueError(f"TensorScatter: {starts.shape[0]} write_indices for a batch of {batch}")
        positions = starts[:, None] + np.arange(length)[None, :]
        if mode == "circular":
            positions %= capacity
        elif positions.size and (positions.min() < 0 or positions.max() >= capacity):
            raise ValueError(
                f"TensorScatter: writing {length} steps at {starts.tolist()} "
                f"overruns the cache length {capacity}"
            )
        out = past.copy()
        moved = np.moveaxis(out, ax, 1)
        moved[np.arange(batch)[:, None], positions] = np.moveaxis(update, ax, 1)
        return (out,)

    return run


# --- Compress, NonZero ---------------------------------------------------------------------


@KERNELS.register("Compress", since=(9, 11, 28))
def compress(ctx: KernelContext) -> KernelRun:
    axis = ctx.attr("axis", None)

    def run(x, condition):
        keep = condition.reshape(-1).astype(bool, copy=False)
        if axis is None:
            flat = x.reshape(-1)
            limit, ax, source = flat.shape[0], 0, flat
        else:
            ax = normalize_axis(axis, x.ndim, "Compress")
            limit, source = x.shape[ax], x
        if keep.shape[0] > limit:
            if keep[limit:].any():
                raise ValueError(f"Compress: condition selects past the axis length {limit}")
            keep = keep[:limit]
        return (np.compress(keep, source, axis=ax),)

    return run


@KERNELS.register("NonZero", since=(9, 13))
def non_zero(ctx: KernelContext) -> KernelRun:
    def run(x):
        if x.ndim == 0:
            return (np.zeros((1, int(bool(x))), dtype=np.int64),)
        return (np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1),)

    return run


# --- TopK, Unique --------------------------------------------------------------------------


@KERNELS.register("TopK", since=(1, 10, 11, 24))
def top_k(ctx: KernelContext) -> KernelRun:
    axis = ctx.attr("axis", -1)
    largest = bool(ctx.attr("largest", 1))
    attr_k = ctx.attr("k") if ctx.opset < 10 else None

    def run(x, k=None):
        count = attr_k if k is None else scalar_int(k, "TopK", "K")
        ax = normalize_axis(axis, x.ndim, "TopK")
        n = x.shape[ax]
        if count < 0 or count > n:
            raise ValueError(f"TopK: K={count} is out of range for an axis of size {n}")
        work = x.astype(np.float32) if x.dtype in HALF_TYPES else x
        if largest:  # descending, ties by lower index: stable sort of the reversed axis
            order = np.argsort(np.flip(work, ax), axis=ax, kind="stable")
            order = (n - 1) - np.flip(order, ax)
        else:
            order = np.argsort(work, axis=ax, kind="stable")
        top = order[(_FULL,) * ax + (slice(0, count),)]
        return np.take_along_axis(x, top, axis=ax), top.astype(np.int64, copy=False)

    return run


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups of equal rows: (first index per group in sorted order, inverse, counts)."""
    n, width = rows.shape
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    if width == 1:
        order = np.argsort(rows[:, 0], kind="stable")
    elif width == 0:
        order = np.arange(n)
    else:
        order = np.lexsort(rows.T[::-1])
    ordered = rows[order]
    differs = ordered[1:] != ordered[:-1]
    if rows.dtype.kind in "fc":
        differs &= ~(np.isnan(ordered[1:]) & np.isnan(ordered[:-1]))
    starts = np.ones(n, dtype=bool)
    starts[1:] = differs.any(axis=1)
    group = np.cumsum(starts) - 1
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = group
    first = order[starts].astype(np.int64)
    counts = np.diff(np.append(np.flatnonzero(starts), n)).astype(np.int64)
    return first, inverse, counts


@KERNELS.register("Unique", since=(11, 28))
def unique(ctx: KernelContext) -> KernelRun:
    axis = ctx.attr("axis", None)
    keep_sorted = bool(ctx.attr("sorted", 1))
    outputs = ctx.num_outputs

    def run(x):
        if axis is None:
            source, ax = x.reshape(-1), 0
            rows = source.reshape(-1, 1)
        else:
            ax = normalize_axis(axis, x.ndim, "Unique")
            source = x
            rows = np.moveaxis(x, ax, 0).reshape(x.shape[ax], -1)
        work = rows.astype(np.float32) if rows.dtype in HALF_TYPES else rows
        first, inverse, counts = _unique_rows(work)
        if not keep_sorted:
            order = np.argsort(first, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.shape[0])
            first, counts, inverse = first[order], counts[order], rank[inverse]
        values = np.take(source, first, axis=ax)
        return (values, first, inverse, counts)[:outputs]

    return run
