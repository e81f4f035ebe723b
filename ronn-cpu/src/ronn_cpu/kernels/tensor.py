"""Tensor kernels: shape and layout, creation, indexing, resizing.

Shape-only operators (Reshape, Squeeze, Unsqueeze, Flatten, Identity, Transpose, Slice,
Split) return views of their input where numpy can: kernels never write into inputs, so
sharing memory is safe. The other modules of the family (``_tensor_creation``,
``_tensor_indexing``, ``_resize``) register into the same :data:`KERNELS` table.
"""

from __future__ import annotations

import numpy as np

from ronn.kernel import KernelContext, KernelRun

from ._tensor_base import (
    KERNELS,
    int_list,
    int_tuple,
    normalize_axes,
    normalize_axis,
    remember,
    scalar_int,
    zero_value,
)

__all__ = ["KERNELS"]

_FULL = slice(None)


# --- Reshape, Flatten, Squeeze, Unsqueeze -----------------------------------------------


def _reshape_target(in_shape: tuple[int, ...], dims: tuple[int, ...], allowzero: bool) -> tuple[int, ...]:
    """The output shape: 0 copies the input's dimension (unless allowzero), -1 is inferred."""
    if not allowzero and 0 in dims:
        if len(dims) > len(in_shape) and 0 in dims[len(in_shape) :]:
            raise ValueError(
                f"Reshape: a 0 in shape {list(dims)} copies a dimension the input of shape {in_shape} lacks"
            )
        dims = tuple(in_shape[i] if d == 0 else d for i, d in enumerate(dims))
    known = 1
    unknown = [i for i, d in enumerate(dims) if d < 0]
    for d in dims:
        if d >= 0:
            known *= d
    total = 1
    for d in in_shape:
        total *= d
    if len(unknown) > 1 or (unknown and dims[unknown[0]] != -1):
        raise ValueError(f"Reshape: shape {list(dims)} may hold a single -1 and no other negative value")
    if unknown:
        if known == 0 or total % known:
            raise ValueError(f"Reshape: cannot reshape a tensor of shape {in_shape} to {list(dims)}")
        dims = dims[: unknown[0]] + (total // known,) + dims[unknown[0] + 1 :]
    elif known != total:
        raise ValueError(f"Reshape: cannot reshape a tensor of shape {in_shape} to {list(dims)}")
    return dims


@KERNELS.register("Reshape", since=(1, 5, 13, 14, 19, 21, 23, 24, 25))
def reshape(ctx: KernelContext) -> KernelRun:
    allowzero = bool(ctx.attr("allowzero", 0))
    plans: dict = {}

    def reshaped(x, dims: tuple[int, ...]):
        key = (x.shape, dims)
        target = plans.get(key)
        if target is None:
            target = remember(plans, key, _reshape_target(x.shape, dims, allowzero))
        return (x.reshape(target),)

    if ctx.opset < 5:
        attr_dims = tuple(int_list(ctx.attr("shape")))
        return lambda x: reshaped(x, attr_dims)

    def run(x, shape):
        return reshaped(x, int_tuple(shape))

    return run


@KERNELS.register("Flatten", since=(1, 9, 11, 13, 21, 23, 24, 25))
def flatten(ctx: KernelContext) -> KernelRun:
    axis = ctx.attr("axis", 1)

    def run(x):
        rank = x.ndim
        if axis < -rank or axis > rank:
            raise ValueError(f"Flatten: axis {axis} is out of range for a tensor of rank {rank}")
        cut = axis + rank if axis < 0 else axis
        outer = 1
        for d in x.shape[:cut]:
            outer *= d
        inner = 1
        for d in x.shape[cut:]:
            inner *= d
        return (x.reshape(outer, inner),)

    return run


def _squeezed_shape(shape: tuple[int, ...], axes: tuple[int, ...] | None) -> tuple[int, ...]:
    if axes is None:
        return tuple(d for d in shape if d != 1)
    drop = normalize_axes(list(axes), len(shape), "Squeeze")
    for a in drop:
        if shape[a] != 1:
            raise ValueError(f"Squeeze: axis {a} of shape {shape} is not 1")
    return tuple(d for i, d in enumerate(shape) if i not in drop)


@KERNELS.register("Squeeze", since=(1, 11, 13, 21, 23, 24, 25))
def squeeze(ctx: KernelContext) -> KernelRun:
    plans: dict = {}

    def squeezed(x, axes):
        key = (x.shape, axes)
        target = plans.get(key)
        if target is None:
            target = remember(plans, key, _squeezed_shape(x.shape, axes))
        return (x.reshape(target),)

    if ctx.opset < 13:
        attr_axes = ctx.attr("axes", None)
        attr_axes = tuple(int_list(attr_axes)) if attr_axes else None
        return lambda x: squeezed(x, attr_axes)

    def run(x, axes=None):
        return squeezed(x, None if axes is None or axes.size == 0 else int_tuple(axes))

    return run


@KERNELS.register("Unsqueeze", since=(1, 11, 13, 21, 23, 24, 25))
def unsqueeze(ctx: KernelContext) -> KernelRun:
    plans: dict = {}

    def unsqueezed(x, axes: tuple[int, ...]):
        key = (x.shape, axes)
        target = plans.get(key)
        if target is None:
            rank = x.ndim + len(axes)
            inserted = normalize_axes(list(axes), rank, "Unsqueeze")
            dims = iter(x.shape)
            target = remember(plans, key, tuple(1 if i in inserted else next(dims) for i in range(rank)))
        return (x.reshape(target),)

    if ctx.opset < 13:
        attr_axes = tuple(int_list(ctx.attr("axes")))
        return lambda x: unsqueezed(x, attr_axes)

    def run(x, axes):
        return unsqueezed(x, int_tuple(axes))

    return run


# --- Transpose, Identity, Shape, Size ------------------------------------------------------


@KERNELS.register("Transpose", since=(1, 13, 21, 23, 24, 25))
def transpose(ctx: KernelContext) -> KernelRun:
    perm = ctx.attr("perm", None)
    if perm is not None:
        perm = tuple(int(p) for p in perm)
        if sorted(perm) != list(range(len(perm))):
            raise ctx.fail(f"perm {list(perm)} is not a permutation")

    def run(x):
        if perm is None:
            return (x.transpose(),)
        if len(perm) != x.ndim:
            raise ValueError(f"Transpose: perm {list(perm)} does not fit a tensor of rank {x.ndim}")
        return (x.transpose(perm),)

    return run


@KERNELS.register("Identity", since=(1, 13, 14, 16, 19, 21, 23, 24, 25))
def identity(ctx: KernelContext) -> KernelRun:
    def run(x):
        return (x,)

    return run


@KERNELS.register("Shape", since=(1, 13, 15, 19, 21, 23, 24, 25))
def shape(ctx: KernelContext) -> KernelRun:
    start = ctx.attr("start", 0)
    end = ctx.attr("end", None)
    window = slice(start, end)
    plans: dict = {}

    def run(x):
        out = plans.get(x.shape)
        if out is None:  # one read-only array per input shape, shared from run to run
            out = np.array(x.shape[window], dtype=np.int64)
            out.setflags(write=False)
            remember(plans, x.shape, out)
        return (out,)

    return run


@KERNELS.register("Size", since=(1, 13, 19, 21, 23, 24, 25))
def size(ctx: KernelContext) -> KernelRun:
    return lambda x: (np.array(x.size, dtype=np.int64),)


# --- Concat, Split, Slice ------------------------------------------------------------------


@KERNELS.register("Concat", since=(1, 4, 11, 13))
def concat(ctx: KernelContext) -> KernelRun:
    axis = ctx.attr("axis", 1 if ctx.opset < 4 else None)
    if axis is None:
        raise ctx.fail("lacks required attribute 'axis'")
    xp = ctx.xp

    def run(*inputs):
        rank = inputs[0].ndim
        ax = axis if 0 <= axis < rank else normalize_axis(axis, rank, "Concat")
        try:
            return (xp.concatenate(inputs, axis=ax),)
        except ValueError:
            shapes = ", ".join(str(t.shape) for t in inputs)
            raise ValueError(f"Concat: cannot join shapes {shapes} along axis {axis}") from None

    return run


def _split_sizes(dim: int, count: int, split: list[int] | None) -> list[int]:
    if split is None:
        chunk = -(-dim // count) if count else 0
        return [max(0, min(chunk, dim - i * chunk)) for i in range(count)]
    if len(split) != count:
        raise ValueError(f"Split: {len(split)} split sizes for {count} outputs")
    if any(s < 0 for s in split) or sum(split) != dim:
        raise ValueError(f"Split: sizes {split} do not add up to the axis length {dim}")
    return split


@KERNELS.register("Split", since=(1, 2, 11, 13, 18))
def split(ctx: KernelContext) -> KernelRun:
    axis = ctx.attr("axis", 0)
    count = ctx.num_outputs
    num_outputs = ctx.attr("num_outputs", None)
    if num_outputs is not None and num_outputs != count:
        raise ctx.fail(f"num_outputs={num_outputs} but the node has {count} outputs")
    attr_split = ctx.attr("split", None) if ctx.opset < 13 else None
    if attr_split is not None:
        attr_split = int_list(attr_split)

    plans: dict = {}

    def plan(shape: tuple[int, ...], sizes: list[int] | None) -> list[tuple[slice, ...]]:
        ax = normalize_axis(axis, len(shape), "Split")
        lead = (_FULL,) * ax
        windows, offset = [], 0
        for s in _split_sizes(shape[ax], count, sizes):
            windows.append(lead + (slice(offset, offset + s),))
            offset += s
        return windows

    def run(x, split_input=None):
        sizes = attr_split if split_input is None else list(int_tuple(split_input))
        key = (x.shape, None if sizes is None else tuple(sizes))
        windows = plans.get(key)
        if windows is None:
            windows = remember(plans, key, plan(x.shape, sizes))
        return [x[w] for w in windows]

    return run


def _slice_window(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX Slice bounds (negative wrap, clamping) as a Python slice."""
    if step == 0:
        raise ValueError("Slice: steps must not be 0")
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return slice(start, end if end >= 0 else None, step)


def _slice_plan(
    shape: tuple[int, ...],
    starts: list[int],
    ends: list[int],
    axes: list[int] | None,
    steps: list[int] | None,
) -> tuple[slice, ...]:
    """The index tuple that slices a tensor of ``shape``."""
    rank = len(shape)
    if len(starts) != len(ends):
        raise ValueError(f"Slice: {len(starts)} starts but {len(ends)} ends")
    if axes is None:
        axes = list(range(len(starts)))
    else:
        if len(axes) != len(starts):
            raise ValueError(f"Slice: {len(axes)} axes for {len(starts)} starts")
        axes = normalize_axes(axes, rank, "Slice")
    if steps is None:
        steps = [1] * len(starts)
    elif len(steps) != len(starts):
        raise ValueError(f"Slice: {len(steps)} steps for {len(starts)} starts")
    window = [_FULL] * rank
    for a, s, e, st in zip(axes, starts, ends, steps):
        if a >= rank:
            raise ValueError(f"Slice: axis {a} is out of range for a tensor of rank {rank}")
        window[a] = _slice_window(s, e, st, shape[a])
    return tuple(window)


@KERNELS.register("Slice", since=(1, 10, 11, 13))
def slice_(ctx: KernelContext) -> KernelRun:
    plans: dict = {}
    if ctx.opset < 10:
        starts = int_list(ctx.attr("starts"))
        ends = int_list(ctx.attr("ends"))
        axes = ctx.attr("axes", None)
        axes = None if axes is None else int_list(axes)

        def run_attr(x):
            window = plans.get(x.shape)
            if window is None:
                window = remember(plans, x.shape, _slice_plan(x.shape, starts, ends, axes, None))
            return (x[window],)

        return run_attr

    def run(x, starts, ends, axes=None, steps=None):
        key = (
            x.shape,
            int_tuple(starts),
            int_tuple(ends),
            None if axes is None else int_tuple(axes),
            None if steps is None else int_tuple(steps),
        )
        window = plans.get(key)
        if window is None:
            _, starts_, ends_, axes_, steps_ = key
            window = remember(plans, key, _slice_plan(x.shape, list(starts_), list(ends_), axes_, steps_))
        return (x[window],)

    return run


# --- Expand, Tile, Pad, CenterCropPad ------------------------------------------------------


@KERNELS.register("Expand", since=(8, 13))
def expand(ctx: KernelContext) -> KernelRun:
    xp = ctx.xp
    plans: dict = {}

    def run(x, shape):
        key = (x.shape, int_tuple(shape))
        out_shape = plans.get(key)
        if out_shape is None:
            try:
                out_shape = remember(plans, key, np.broadcast_shapes(*key))
            except ValueError:
                raise ValueError(f"Expand: shape {x.shape} cannot broadcast to {list(key[1])}") from None
        if out_shape == x.shape:
            return (x,)
        out = xp.empty(out_shape, dtype=x.dtype)
        out[...] = x
        return (out,)

    return run


@KERNELS.register("Tile", since=(1, 6, 13))
def tile(ctx: KernelContext) -> KernelRun:
    xp = ctx.xp
    if ctx.opset < 6:

        def run_axis(x, tiles, axis):
            reps = [1] * x.ndim
            reps[normalize_axis(scalar_int(axis, "Tile", "axis"), x.ndim, "Tile")] = scalar_int(
                tiles, "Tile", "tiles"
            )
            return (xp.tile(x, reps),)

        return run_axis

    def run(x, repeats):
        reps = list(int_tuple(repeats))
        if len(reps) != x.ndim:
            raise ValueError(f"Tile: {len(reps)} repeats for a tensor of rank {x.ndim}")
        if any(r < 0 for r in reps):
            raise ValueError(f"Tile: repeats {reps} must not be negative")
        return (xp.tile(x, reps),)

    return run


_PAD_MODES = frozenset({"constant", "reflect", "edge", "wrap"})


def _pad(x: np.ndarray, pads: list[int], axes: list[int] | None, mode: str, value) -> np.ndarray:
    rank = x.ndim
    axes = list(range(rank)) if axes is None else normalize_axes(axes, rank, "Pad")
    if len(pads) != 2 * len(axes):
        raise ValueError(f"Pad: {len(pads)} pads for {len(axes)} axes (expected twice as many)")
    before = [0] * rank
    after = [0] * rank
    for i, a in enumerate(axes):
        before[a] = pads[i]
        after[a] = pads[len(axes) + i]
    if any(p < 0 for p in before + after):  # negative pads crop
        crop = tuple(
            slice(max(-b, 0), d - max(-e, 0)) for b, e, d in zip(before, after, x.shape)
        )
        x = x[crop]
        before = [max(b, 0) for b in before]
        after = [max(e, 0) for e in after]
    if not any(before) and not any(after):
        return x
    if mode == "constant":
        out_shape = tuple(d + b + e for d, b, e in zip(x.shape, before, after))
        out = np.empty(out_shape, dtype=x.dtype)
        out[...] = value
        out[tuple(slice(b, b + d) for b, d in zip(before, x.shape))] = x
        return out
    try:
        return np.pad(x, list(zip(before, after)), mode=mode)
    except ValueError as exc:
        raise ValueError(f"Pad: mode {mode!r} cannot pad shape {x.shape}: {exc}") from None


def _pad_value(value, dtype: np.dtype):
    if value is None or (isinstance(value, np.ndarray) and value.size == 0):
        return zero_value(dtype)
    arr = np.asarray(value).reshape(-1)
    if dtype.kind == "O":
        return np.array(arr[0], dtype=object)
    return arr[:1].astype(dtype).reshape(())


@KERNELS.register("Pad", since=(1, 2, 11, 13, 18, 19, 21, 23, 24, 25))
def pad(ctx: KernelContext) -> KernelRun:
    mode = ctx.attr("mode", "constant")
    if mode not in _PAD_MODES or (mode == "wrap" and ctx.opset < 19):
        raise ctx.fail(f"unsupported mode {mode!r}")
    if ctx.opset < 11:
        pads = int_list(ctx.attr("paddings" if ctx.opset < 2 else "pads"))
        value = ctx.attr("value", 0.0)

        def run_attr(x):
            return (_pad(x, pads, None, mode, _pad_value(value, x.dtype)),)

        return run_attr

    def run(x, pads, constant_value=None, axes=None):
        return (
            _pad(
                x,
                list(int_tuple(pads)),
                None if axes is None else list(int_tuple(axes)),
                mode,
                _pad_value(constant_value, x.dtype) if mode == "constant" else None,
            ),
        )

    return run


@KERNELS.register("CenterCropPad", since=(18,))
def center_crop_pad(ctx: KernelContext) -> KernelRun:
    attr_axes = ctx.attr("axes", None)

    def run(x, shape):
        sizes = list(int_tuple(shape))
        rank = x.ndim
        axes = list(range(rank)) if attr_axes is None else normalize_axes(attr_axes, rank, "CenterCropPad")
        if len(sizes) != len(axes):
            raise ValueError(f"CenterCropPad: shape {sizes} does not match axes {axes}")
        out_shape = list(x.shape)
        source = [_FULL] * rank
        target = [_FULL] * rank
        for a, want in zip(axes, sizes):
            have = x.shape[a]
            if want < 0:
                raise ValueError(f"CenterCropPad: negative size {want}")
            out_shape[a] = want
            if want < have:
                start = (have - want) // 2
                source[a] = slice(start, start + want)
            elif want > have:
                start = (want - have) // 2
                target[a] = slice(start, start + have)
        out = np.empty(out_shape, dtype=x.dtype)
        out[...] = zero_value(x.dtype)
        out[tuple(target)] = x[tuple(source)]
        return (out,)

    return run


# --- DepthToSpace, SpaceToDepth, ReverseSequence -------------------------------------------


def _check_blocks(x: np.ndarray, op: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{op}: expects a 4-D NCHW tensor, got shape {x.shape}")


@KERNELS.register("DepthToSpace", since=(1, 11, 13, 28))
def depth_to_space(ctx: KernelContext) -> KernelRun:
    block = ctx.attr("blocksize")
    mode = ctx.attr("mode", "DCR") if ctx.opset >= 11 else "DCR"
    if mode not in ("DCR", "CRD"):
        raise ctx.fail(f"unsupported mode {mode!r}")
    if block <= 0:
        raise ctx.fail(f"blocksize {block} must be positive")

    def run(x):
        _check_blocks(x, "DepthToSpace")
        b, c, h, w = x.shape
        if c % (block * block):
            raise ValueError(f"DepthToSpace: {c} channels are not divisible by blocksize² = {block * block}")
        depth = c // (block * block)
        if mode == "DCR":
            tmp = x.reshape(b, block, block, depth, h, w).transpose(0, 3, 4, 1, 5, 2)
        else:
            tmp = x.reshape(b, depth, block, block, h, w).transpose(0, 1, 4, 2, 5, 3)
        return (tmp.reshape(b, depth, h * block, w * block),)

    return run


@KERNELS.register("SpaceToDepth", since=(1, 13, 28))
def space_to_depth(ctx: KernelContext) -> KernelRun:
    block = ctx.attr("blocksize")
    mode = ctx.attr("mode", "DCR") if ctx.opset >= 28 else "DCR"
    if mode not in ("DCR", "CRD"):
        raise ctx.fail(f"unsupported mode {mode!r}")
    if block <= 0:
        raise ctx.fail(f"blocksize {block} must be positive")
    order = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)

    def run(x):
        _check_blocks(x, "SpaceToDepth")
        b, c, h, w = x.shape
        if h % block or w % block:
            raise ValueError(f"SpaceToDepth: spatial size {h}x{w} is not divisible by blocksize {block}")
        tmp = x.reshape(b, c, h // block, block, w // block, block).transpose(order)
        return (tmp.reshape(b, c * block * block, h // block, w // block),)

    return run


@KERNELS.register("ReverseSequence", since=(10, 28))
def reverse_sequence(ctx: KernelContext) -> KernelRun:
    batch_axis = ctx.attr("batch_axis", 1)
    time_axis = ctx.attr("time_axis", 0)
    if {batch_axis, time_axis} != {0, 1}:
        raise ctx.fail(f"batch_axis={batch_axis} and time_axis={time_axis} must be 0 and 1")

    def run(x, sequence_lens):
        if x.ndim < 2:
            raise ValueError(f"ReverseSequence: input rank {x.ndim} is below 2")
        batch, steps = x.shape[batch_axis], x.shape[time_axis]
        lens = sequence_lens.astype(np.int64, copy=False).reshape(-1)
        if lens.shape[0] != batch:
            raise ValueError(f"ReverseSequence: {lens.shape[0]} sequence_lens for a batch of {batch}")
        if lens.size and (lens.min() < 0 or lens.max() > steps):
            raise ValueError(f"ReverseSequence: sequence_lens {lens.tolist()} must lie in [0, {steps}]")
        t = np.arange(steps)[None, :]
        limit = lens[:, None]
        order = np.where(t < limit, limit - 1 - t, t)  # (batch, time)
        if time_axis < batch_axis:
            order = order.T
        order = order.reshape(order.shape + (1,) * (x.ndim - 2))
        return (np.take_along_axis(x, order, axis=time_axis),)

    return run


from . import _resize, _tensor_creation, _tensor_indexing  # noqa: E402,F401  (register into KERNELS)
