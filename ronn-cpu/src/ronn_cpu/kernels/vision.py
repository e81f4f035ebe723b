"""Vision kernels: GridSample, AffineGrid, RoiAlign, MaxRoiPool, NonMaxSuppression,
ImageDecoder, RotaryEmbedding and SwiGLU.

Sampling kernels gather with flat indices and weights computed for every output point at
once; the only Python loops run over small axes (interpolation taps, ROI groups, the
batch and classes of NonMaxSuppression, the boxes it keeps).
"""

from __future__ import annotations

import io
from itertools import product
from typing import Any

import ml_dtypes
import numpy as np

from ronn.kernel import KernelContext, KernelRun, KernelTable

KERNELS = KernelTable()

_NARROW_FLOATS = frozenset(np.dtype(t) for t in (np.float16, ml_dtypes.bfloat16))

#: elements one gathered block of RoiAlign may hold before it is split into chunks
_CHUNK_ELEMENTS = 1 << 22


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """float32 for half-width floats (numpy computes them slowly and coarsely), else float32/64."""
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return dtype
    return np.dtype(np.float32)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- GridSample ---------------------------------------------------------------------------

_GRID_MODES = {
    16: {"bilinear": "linear", "nearest": "nearest", "bicubic": "cubic"},
    20: {"linear": "linear", "nearest": "nearest", "cubic": "cubic"},
}


def _reflect(x: Any, low: float, high: float, xp: Any) -> Any:
    """Fold coordinates outside [low, high] back in by reflecting at the borders."""
    span = high - low
    if span <= 0:
        return xp.full_like(x, low)
    below = x < low
    distance = xp.where(below, low - x, x - high)
    folds = xp.trunc(distance / span)
    rest = distance - folds * span
    even = xp.fmod(folds, 2) == 0
    from_below = xp.where(even, low + rest, high - rest)
    from_above = xp.where(even, high - rest, low + rest)
    return xp.where(below, from_below, xp.where(x > high, from_above, x))


def _cubic_weights(t: Any, xp: Any) -> list[Any]:
    """Keys cubic convolution weights (a = -0.75) of taps -1, 0, 1, 2 at fraction ``t``."""
    a = -0.75
    s = t + 1
    u = 1 - t
    v = 2 - t
    return [
        ((a * s - 5 * a) * s + 8 * a) * s - 4 * a,
        ((a + 2) * t - (a + 3)) * t * t + 1,
        ((a + 2) * u - (a + 3)) * u * u + 1,
        ((a * v - 5 * a) * v + 8 * a) * v - 4 * a,
    ]


def _axis_taps(
    coord: Any, size: int, mode: str, padding: str, align_corners: bool, xp: Any
) -> tuple[list[Any], list[Any]]:
    """Source indices and weights along one spatial axis, for normalised coordinates ``coord``.

    Follows onnxruntime: denormalise, round (nearest), pull out-of-range coordinates back
    (border: clamp, except for cubic, whose taps alone are clamped; reflection: reflect),
    then resolve each tap index by the padding mode.
    """
    if align_corners:
        x = (coord + 1) / 2 * (size - 1)
        low, high = 0.0, float(size - 1)
    else:
        x = ((coord + 1) * size - 1) / 2
        low, high = -0.5, size - 0.5
    if mode == "nearest":
        x = xp.rint(x)
    outside = (x < low) | (x > high)
    if padding == "border" and mode != "cubic":
        x = xp.where(outside, xp.clip(x, 0, size - 1), x)
    elif padding == "reflection":
        x = xp.where(outside, _reflect(x, low, high, xp), x)

    if mode == "nearest":
        starts, weights = [x], [None]
    else:
        base = xp.floor(x)
        t = x - base
        if mode == "linear":
            starts, weights = [base, base + 1], [1 - t, t]
        else:
            starts = [base - 1, base, base + 1, base + 2]
            weights = _cubic_weights(t, xp)

    indices = []
    for i, start in enumerate(starts):
        if padding == "zeros":
            valid = (start >= 0) & (start < size)
            weights[i] = valid if weights[i] is None else xp.where(valid, weights[i], 0)
        elif padding == "reflection":
            start = _reflect(start, low, high, xp)
        # NaN coordinates become index 0 (with zero weight under zeros padding)
        start = xp.nan_to_num(start, nan=0.0, posinf=0.0, neginf=0.0)
        indices.append(xp.clip(start.astype(np.int64), 0, size - 1))
    return indices, weights


def _zero_of(dtype: np.dtype) -> Any:
    return "" if dtype == object else np.zeros((), dtype)


def _grid_sample(
    x: Any, grid: Any, mode: str, padding: str, align_corners: bool, xp: Any
) -> Any:
    """Sample ``x`` [N, C, *spatial] at ``grid`` [N, *out, ndim] (last axis reversed: x, y, z)."""
    n, c = x.shape[:2]
    spatial = tuple(x.shape[2:])
    ndim = len(spatial)
    if grid.ndim != ndim + 2 or grid.shape[-1] != ndim or grid.shape[0] != n:
        raise ValueError(
            f"GridSample: grid shape {list(grid.shape)} does not fit input shape {list(x.shape)}"
        )
    out_spatial = tuple(grid.shape[1:-1])
    out_shape = (n, c, *out_spatial)
    if 0 in out_shape:
        return xp.zeros(out_shape, dtype=x.dtype)
    if 0 in spatial:
        raise ValueError("GridSample: input has an empty spatial axis")
    interpolate = mode != "nearest"
    if interpolate and (x.dtype == object or x.dtype.kind in "USb"):
        raise TypeError(f"GridSample mode {mode!r} cannot interpolate {x.dtype} data")

    coord_dtype = np.float64 if grid.dtype == np.float64 else np.float32
    coords = grid.reshape(n, -1, ndim).astype(coord_dtype)
    taps = [
        _axis_taps(coords[:, :, ndim - 1 - axis], size, mode, padding, align_corners, xp)
        for axis, size in enumerate(spatial)
    ]
    strides = [int(np.prod(spatial[axis + 1 :])) for axis in range(ndim)]
    flat = x.reshape(n, c, -1)

    if not interpolate:
        index = sum(taps[a][0][0] * strides[a] for a in range(ndim))
        values = xp.take_along_axis(flat, index[:, None, :], axis=2)
        if padding == "zeros":
            valid = taps[0][1][0]
            for axis in range(1, ndim):
                valid = valid & taps[axis][1][0]
            values = xp.where(valid[:, None, :], values, _zero_of(x.dtype))
        return values.reshape(out_shape)

    if x.dtype.kind == "c":
        work = np.complex128 if x.dtype == np.complex128 else np.complex64
    elif x.dtype.kind == "f" or x.dtype in _NARROW_FLOATS:
        work = _compute_dtype(x.dtype)
    else:
        work = np.float64
    flat = flat.astype(work, copy=False)
    result = xp.zeros((n, c, coords.shape[1]), dtype=work)
    for combo in product(*(range(len(t[0])) for t in taps)):
        index = sum(taps[a][0][k] * strides[a] for a, k in enumerate(combo))
        weight = taps[0][1][combo[0]]
        for axis in range(1, ndim):
            weight = weight * taps[axis][1][combo[axis]]
        result += xp.take_along_axis(flat, index[:, None, :], axis=2) * weight[:, None, :].astype(work)
    return _cast_result(result.reshape(out_shape), x.dtype, xp)


def _cast_result(values: Any, dtype: np.dtype, xp: Any) -> Any:
    """Interpolated values in the input's dtype (integers rounded and saturated)."""
    if values.dtype == dtype:
        return values
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return xp.clip(xp.rint(values), info.min, info.max).astype(dtype)
    if dtype.kind == "b":
        return xp.rint(values) != 0
    return values.astype(dtype)


@KERNELS.register("GridSample", since=(16, 20, 22))
def grid_sample(ctx: KernelContext) -> KernelRun:
    """Sample the input at the grid's normalised coordinates (2-D at opset 16, N-D from 20)."""
    xp = ctx.xp
    names = _GRID_MODES[16 if ctx.opset < 20 else 20]
    default_mode = "bilinear" if ctx.opset < 20 else "linear"
    mode_name = _text(ctx.attr("mode", default_mode))
    if mode_name not in names:
        raise ctx.fail(f"mode must be one of {sorted(names)} at opset {ctx.opset}, got {mode_name!r}")
    mode = names[mode_name]
    padding = _text(ctx.attr("padding_mode", "zeros"))
    if padding not in ("zeros", "border", "reflection"):
        raise ctx.fail(f"padding_mode must be zeros, border or reflection, got {padding!r}")
    align_corners = bool(ctx.attr("align_corners", 0))
    four_d_only = ctx.opset < 20

    def run(x: Any, grid: Any) -> tuple[Any]:
        if x.ndim < 3:
            raise ValueError(f"GridSample expects input of rank >= 3, got shape {list(x.shape)}")
        if four_d_only and x.ndim != 4:
            raise ValueError(f"GridSample-{ctx.opset} expects a 4-D input, got shape {list(x.shape)}")
        return (_grid_sample(x, grid, mode, padding, align_corners, xp),)

    return run


# --- AffineGrid ---------------------------------------------------------------------------


def _base_coords(size: int, align_corners: bool) -> np.ndarray:
    """Normalised pixel coordinates along one axis, in float64."""
    index = np.arange(size, dtype=np.float64)
    if align_corners:
        if size == 1:
            return np.ones(1)  # onnxruntime (Eigen's LinSpaced) puts a lone point at +1
        return -1 + index * (2.0 / (size - 1))
    step = 2.0 / size
    return -1 + step / 2 + index * step


@KERNELS.register("AffineGrid", since=20)
def affine_grid(ctx: KernelContext) -> KernelRun:
    """Sampling grid [N, (D,) H, W, ndim] of affine matrices theta over an output size."""
    xp = ctx.xp
    align_corners = bool(ctx.attr("align_corners", 0))

    def run(theta: Any, size: Any) -> tuple[Any]:
        dims = [int(v) for v in np.asarray(size).reshape(-1)]
        if len(dims) not in (4, 5):
            raise ValueError(f"AffineGrid size must have 4 or 5 entries, got {dims}")
        spatial = dims[2:]
        ndim = len(spatial)
        if theta.ndim != 3 or theta.shape[1:] != (ndim, ndim + 1):
            raise ValueError(
                f"AffineGrid theta must have shape [N, {ndim}, {ndim + 1}] for size {dims}, "
                f"got {list(theta.shape)}"
            )
        axes = [xp.asarray(_base_coords(s, align_corners)) for s in spatial]
        # homogeneous points ordered (x, y[, z], 1): the last spatial axis first
        mesh = xp.meshgrid(*axes, indexing="ij")
        points = [m.reshape(-1) for m in reversed(mesh)]
        points.append(xp.ones_like(points[0]))
        base = xp.stack(points, axis=0)  # [ndim + 1, P]
        grid = xp.matmul(theta.astype(np.float64), base)  # [N, ndim, P]
        grid = xp.moveaxis(grid, 1, 2).reshape(theta.shape[0], *spatial, ndim)
        return (grid.astype(theta.dtype),)

    return run


# --- RoiAlign -----------------------------------------------------------------------------


def _roi_axis(coord: Any, size: int, xp: Any) -> tuple[Any, Any, Any, Any]:
    """Bilinear (low index, high index, low weight, high weight) along one axis, zero outside."""
    valid = (coord >= -1.0) & (coord <= size)
    coord = xp.maximum(coord, 0)
    low = xp.nan_to_num(coord, nan=0.0).astype(np.int64)
    at_end = low >= size - 1
    low = xp.where(at_end, size - 1, low)
    high = xp.where(at_end, size - 1, low + 1)
    coord = xp.where(at_end, low.astype(coord.dtype), coord)
    frac = coord - low
    w_low = xp.where(valid, 1 - frac, 0)
    w_high = xp.where(valid, frac, 0)
    return low, high, w_low, w_high


def _roi_align_group(
    x_flat: Any, width: int, height: int, batch: Any, start_w: Any, start_h: Any,
    bin_w: Any, bin_h: Any, grid_h: int, grid_w: int, out_h: int, out_w: int,
    max_mode: bool, xp: Any,
) -> Any:
    """RoiAlign of ROIs sharing one sampling grid: [R, C, out_h, out_w]."""
    r = batch.shape[0]
    dtype = x_flat.dtype
    iy = (xp.arange(grid_h, dtype=dtype) + 0.5)
    ix = (xp.arange(grid_w, dtype=dtype) + 0.5)
    ph = xp.arange(out_h, dtype=dtype)
    pw = xp.arange(out_w, dtype=dtype)
    ys = (start_h[:, None, None] + ph[None, :, None] * bin_h[:, None, None]
          + iy[None, None, :] * bin_h[:, None, None] / grid_h)  # [R, out_h, grid_h]
    xs = (start_w[:, None, None] + pw[None, :, None] * bin_w[:, None, None]
          + ix[None, None, :] * bin_w[:, None, None] / grid_w)
    y_lo, y_hi, wy_lo, wy_hi = _roi_axis(ys, height, xp)
    x_lo, x_hi, wx_lo, wx_hi = _roi_axis(xs, width, xp)
    y_idx = xp.stack([y_lo, y_hi], axis=-1)  # [R, out_h, grid_h, 2]
    x_idx = xp.stack([x_lo, x_hi], axis=-1)
    wy = xp.stack([wy_lo, wy_hi], axis=-1)
    wx = xp.stack([wx_lo, wx_hi], axis=-1)
    flat_index = (y_idx[:, :, :, :, None, None, None] * width
                  + x_idx[:, None, None, None, :, :, :]).reshape(r, -1)
    weights = (wy[:, :, :, :, None, None, None] * wx[:, None, None, None, :, :, :]).reshape(r, -1)
    values = x_flat[batch[:, None], :, flat_index]  # [R, K, C]
    weighted = values * weights[:, :, None]
    weighted = weighted.reshape(r, out_h, grid_h * 2, out_w, grid_w * 2, -1)
    if max_mode:
        pooled = weighted.max(axis=(2, 4))
    else:
        pooled = weighted.sum(axis=(2, 4)) / max(grid_h * grid_w, 1)
    return xp.moveaxis(pooled, 3, 1)


@KERNELS.register("RoiAlign", since=(10, 16, 22))
def roi_align(ctx: KernelContext) -> KernelRun:
    """Average or max of bilinear samples over each ROI's output bins."""
    xp = ctx.xp
    mode = _text(ctx.attr("mode", "avg"))
    if mode not in ("avg", "max"):
        raise ctx.fail(f"mode must be avg or max, got {mode!r}")
    default_transform = "half_pixel" if ctx.opset >= 16 else "output_half_pixel"
    transform = _text(ctx.attr("coordinate_transformation_mode", default_transform))
    if transform not in ("half_pixel", "output_half_pixel"):
        raise ctx.fail(f"coordinate_transformation_mode must be half_pixel or output_half_pixel, got {transform!r}")
    half_pixel = transform == "half_pixel"
    out_h = int(ctx.attr("output_height", 1))
    out_w = int(ctx.attr("output_width", 1))
    sampling_ratio = int(ctx.attr("sampling_ratio", 0))
    spatial_scale = float(ctx.attr("spatial_scale", 1.0))
    if out_h <= 0 or out_w <= 0:
        raise ctx.fail(f"output_height and output_width must be positive, got {out_h}, {out_w}")
    if sampling_ratio < 0:
        raise ctx.fail(f"sampling_ratio must be >= 0, got {sampling_ratio}")
    max_mode = mode == "max"

    def run(x: Any, rois: Any, batch_indices: Any) -> tuple[Any]:
        if x.ndim != 4:
            raise ValueError(f"RoiAlign expects a 4-D input, got shape {list(x.shape)}")
        n, c, height, width = x.shape
        rois = rois.reshape(-1, 4) if rois.size else rois.reshape(0, 4)
        batch = batch_indices.reshape(-1).astype(np.int64)
        if rois.shape[0] != batch.shape[0]:
            raise ValueError(
                f"RoiAlign: {rois.shape[0]} rois but {batch.shape[0]} batch indices"
            )
        if batch.size and (batch.min() < 0 or batch.max() >= n):
            raise ValueError(f"RoiAlign: batch indices must lie in [0, {n - 1}]")
        work = _compute_dtype(x.dtype)
        out = xp.zeros((rois.shape[0], c, out_h, out_w), dtype=work)
        if rois.shape[0] == 0 or x.size == 0:
            return (out.astype(x.dtype),)
        boxes = rois.astype(work) * work.type(spatial_scale)
        if half_pixel:
            boxes = boxes - work.type(0.5)
        roi_w = boxes[:, 2] - boxes[:, 0]
        roi_h = boxes[:, 3] - boxes[:, 1]
        if not half_pixel:
            roi_w = xp.maximum(roi_w, 1)
            roi_h = xp.maximum(roi_h, 1)
        bin_h = roi_h / out_h
        bin_w = roi_w / out_w
        if sampling_ratio > 0:
            grid_h = xp.full(rois.shape[0], sampling_ratio, dtype=np.int64)
            grid_w = grid_h
        else:
            grid_h = xp.ceil(roi_h / out_h).astype(np.int64)
            grid_w = xp.ceil(roi_w / out_w).astype(np.int64)
        x_flat = x.reshape(n, c, height * width).astype(work, copy=False)
        groups = xp.unique(xp.stack([grid_h, grid_w], axis=1), axis=0)
        for gh, gw in groups.tolist():
            if gh <= 0 or gw <= 0:
                continue  # no samples: the bins stay 0
            members = xp.nonzero((grid_h == gh) & (grid_w == gw))[0]
            per_roi = out_h * gh * 2 * out_w * gw * 2 * c
            chunk = max(1, _CHUNK_ELEMENTS // max(per_roi, 1))
            for begin in range(0, members.shape[0], chunk):
                sel = members[begin : begin + chunk]
                out[sel] = _roi_align_group(
                    x_flat, width, height, batch[sel], boxes[sel, 0], boxes[sel, 1],
                    bin_w[sel], bin_h[sel], gh, gw, out_h, out_w, max_mode, xp,
                )
        return (out.astype(x.dtype),)

    return run


# --- MaxRoiPool ---------------------------------------------------------------------------


def _bin_masks(start: int, length: int, bins: int, size: int, xp: Any) -> tuple[Any, int, int]:
    """Per-bin membership masks over the ROI's clipped extent [lo, hi) of one axis."""
    # float32 like onnxruntime, so bin edges that land near an integer round the same way
    bin_size = np.float32(length) / np.float32(bins)
    edges = np.arange(bins + 1, dtype=np.float32) * bin_size
    begin = np.clip(np.floor(edges[:-1]).astype(np.int64) + start, 0, size)
    end = np.clip(np.ceil(edges[1:]).astype(np.int64) + start, 0, size)
    lo = int(begin.min())
    hi = int(max(end.max(), lo))
    positions = np.arange(lo, hi)
    masks = (positions[None, :] >= begin[:, None]) & (positions[None, :] < end[:, None])
    return xp.asarray(masks), lo, hi


@KERNELS.register("MaxRoiPool", since=(1, 22))
def max_roi_pool(ctx: KernelContext) -> KernelRun:
    """Max over each ROI's bins (Caffe's RoIPool: rounded ROI corners, floor/ceil bins)."""
    xp = ctx.xp
    pooled = [int(v) for v in ctx.attr("pooled_shape")]
    if len(pooled) != 2 or min(pooled) <= 0:
        raise ctx.fail(f"pooled_shape must be two positive ints, got {pooled}")
    out_h, out_w = pooled
    spatial_scale = float(ctx.attr("spatial_scale", 1.0))

    def run(x: Any, rois: Any) -> tuple[Any]:
        if x.ndim != 4:
            raise ValueError(f"MaxRoiPool expects a 4-D input, got shape {list(x.shape)}")
        n, c, height, width = x.shape
        rois = np.asarray(rois, dtype=np.float64).reshape(-1, 5)
        out = xp.zeros((rois.shape[0], c, out_h, out_w), dtype=x.dtype)
        # std::round: halves away from zero
        corners = np.sign(rois[:, 1:]) * np.floor(np.abs(rois[:, 1:] * spatial_scale) + 0.5)
        lowest = _lowest(x.dtype)
        for r in range(rois.shape[0]):
            b = int(rois[r, 0])
            if not 0 <= b < n:
                raise ValueError(f"MaxRoiPool: batch index {b} outside [0, {n - 1}]")
            x1, y1, x2, y2 = (int(v) for v in corners[r])
            roi_w = max(x2 - x1 + 1, 1)
            roi_h = max(y2 - y1 + 1, 1)
            rows, h0, h1 = _bin_masks(y1, roi_h, out_h, height, xp)
            cols, w0, w1 = _bin_masks(x1, roi_w, out_w, width, xp)
            if h1 <= h0 or w1 <= w0:
                continue
            crop = x[b, :, h0:h1, w0:w1]  # [C, h, w]
            by_col = xp.where(cols[None, None, :, :], crop[:, :, None, :], lowest).max(axis=3)  # [C, h, out_w]
            by_bin = xp.where(rows[None, :, :, None], by_col[:, None, :, :], lowest).max(axis=2)  # [C, out_h, out_w]
            empty = ~(rows.any(axis=1)[:, None] & cols.any(axis=1)[None, :])
            out[r] = xp.where(empty[None], 0, by_bin)
        return (out,)

    return run


def _lowest(dtype: np.dtype) -> Any:
    return np.array(-np.inf, dtype=dtype)


# --- NonMaxSuppression --------------------------------------------------------------------


def _corners(boxes: Any, center_point_box: bool, xp: Any) -> tuple[Any, Any, Any, Any]:
    """(x_min, y_min, x_max, y_max) of boxes given as corners [y1, x1, y2, x2] or centres."""
    if center_point_box:
        half_w = boxes[:, 2] / 2
        half_h = boxes[:, 3] / 2
        return (boxes[:, 0] - half_w, boxes[:, 1] - half_h,
                boxes[:, 0] + half_w, boxes[:, 1] + half_h)
    return (xp.minimum(boxes[:, 1], boxes[:, 3]), xp.minimum(boxes[:, 0], boxes[:, 2]),
            xp.maximum(boxes[:, 1], boxes[:, 3]), xp.maximum(boxes[:, 0], boxes[:, 2]))


def _suppressed_by(
    top: int, rest: Any, corners: tuple[Any, Any, Any, Any], areas: Any, iou_threshold: Any, xp: Any
) -> Any:
    """Which boxes of ``rest`` overlap box ``top`` by more than ``iou_threshold``."""
    x0, y0, x1, y1 = corners
    ix0 = xp.maximum(x0[rest], x0[top])
    ix1 = xp.minimum(x1[rest], x1[top])
    iy0 = xp.maximum(y0[rest], y0[top])
    iy1 = xp.minimum(y1[rest], y1[top])
    overlap = (ix1 > ix0) & (iy1 > iy0)
    inter = (ix1 - ix0) * (iy1 - iy0)
    union = areas[rest] + areas[top] - inter
    positive = overlap & (inter > 0) & (areas[rest] > 0) & (areas[top] > 0) & (union > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / xp.where(positive, union, 1)
    return positive & (iou > iou_threshold)


def _scalar_input(value: Any, default: Any, dtype: Any) -> Any:
    if value is None or np.asarray(value).size == 0:
        return default
    return np.asarray(value).reshape(-1)[0].astype(dtype)


@KERNELS.register("NonMaxSuppression", since=(10, 11))
def non_max_suppression(ctx: KernelContext) -> KernelRun:
    """Greedy per-class NMS; equal scores keep the lower box index first (as onnxruntime)."""
    xp = ctx.xp
    center_point_box = int(ctx.attr("center_point_box", 0))
    if center_point_box not in (0, 1):
        raise ctx.fail(f"center_point_box must be 0 or 1, got {center_point_box}")

    def run(boxes: Any, scores: Any, max_output_boxes_per_class: Any = None,
            iou_threshold: Any = None, score_threshold: Any = None) -> tuple[Any]:
        if boxes.ndim != 3 or boxes.shape[2] != 4:
            raise ValueError(f"NonMaxSuppression boxes must be [batch, boxes, 4], got {list(boxes.shape)}")
        if scores.ndim != 3 or scores.shape[0] != boxes.shape[0] or scores.shape[2] != boxes.shape[1]:
            raise ValueError(
                f"NonMaxSuppression scores {list(scores.shape)} do not match boxes {list(boxes.shape)}"
            )
        limit = max(int(_scalar_input(max_output_boxes_per_class, 0, np.int64)), 0)
        iou_limit = _scalar_input(iou_threshold, np.float32(0), scores.dtype)
        if not 0 <= float(iou_limit) <= 1:
            raise ValueError(f"NonMaxSuppression iou_threshold must lie in [0, 1], got {float(iou_limit)}")
        min_score = _scalar_input(score_threshold, None, scores.dtype)
        selected: list[tuple[int, int, Any]] = []
        if limit > 0:
            for b in range(boxes.shape[0]):
                corners = _corners(boxes[b], bool(center_point_box), xp)
                areas = (corners[2] - corners[0]) * (corners[3] - corners[1])
                for k in range(scores.shape[1]):
                    keep = _select(scores[b, k], corners, areas, iou_limit, min_score, limit, xp)
                    if keep.size:
                        selected.append((b, k, keep))
        if not selected:
            return (xp.zeros((0, 3), dtype=np.int64),)
        rows = [
            xp.stack([xp.full(keep.shape, b), xp.full(keep.shape, k), keep], axis=1)
            for b, k, keep in selected
        ]
        return (xp.concatenate(rows).astype(np.int64),)

    return run


def _select(
    class_scores: Any, corners: tuple[Any, Any, Any, Any], areas: Any, iou_limit: Any,
    min_score: Any, limit: int, xp: Any,
) -> Any:
    """Indices kept for one batch item and class, best score first."""
    candidates = xp.arange(class_scores.shape[0])
    if min_score is not None:
        candidates = candidates[class_scores > min_score]
    order = candidates[xp.argsort(-class_scores[candidates], kind="stable")]
    kept = []
    while order.size and len(kept) < limit:
        top = int(order[0])
        kept.append(top)
        rest = order[1:]
        order = rest[~_suppressed_by(top, rest, corners, areas, iou_limit, xp)]
    return xp.asarray(kept, dtype=np.int64)


# --- ImageDecoder -------------------------------------------------------------------------


@KERNELS.register("ImageDecoder", since=20)
def image_decoder(ctx: KernelContext) -> KernelRun:
    """Decode an encoded image (JPEG, PNG, BMP, TIFF, WebP, PNM, JPEG 2000) into [H, W, C] uint8."""
    pixel_format = _text(ctx.attr("pixel_format", "RGB"))
    if pixel_format not in ("RGB", "BGR", "Grayscale"):
        raise ctx.fail(f"pixel_format must be RGB, BGR or Grayscale, got {pixel_format!r}")
    try:
        from PIL import Image
    except ImportError:
        raise ctx.fail("ImageDecoder needs Pillow: install `ronn[image]`") from None

    def run(encoded: Any) -> tuple[np.ndarray]:
        data = np.asarray(encoded)
        if data.dtype != np.uint8:
            raise TypeError(f"ImageDecoder expects a uint8 tensor, got {data.dtype}")
        try:
            image = Image.open(io.BytesIO(data.tobytes()))
            image.load()
        except Exception as exc:
            raise ValueError(f"ImageDecoder could not decode the image: {exc}") from None
        if pixel_format == "Grayscale":
            pixels = np.asarray(image.convert("L"))[:, :, None]
        else:
            pixels = np.asarray(image.convert("RGB"))
            if pixel_format == "BGR":
                pixels = pixels[:, :, ::-1]
        return (np.ascontiguousarray(pixels, dtype=np.uint8),)

    return run


# --- RotaryEmbedding ----------------------------------------------------------------------


@KERNELS.register("RotaryEmbedding", since=23)
def rotary_embedding(ctx: KernelContext) -> KernelRun:
    """Rotate (halves or interleaved pairs of) the first ``rotary_embedding_dim`` features."""
    xp = ctx.xp
    interleaved = bool(ctx.attr("interleaved", 0))
    rotary_dim_attr = int(ctx.attr("rotary_embedding_dim", 0))
    num_heads = int(ctx.attr("num_heads", 0))
    if rotary_dim_attr < 0 or num_heads < 0:
        raise ctx.fail("rotary_embedding_dim and num_heads must be >= 0")

    def run(x: Any, cos_cache: Any, sin_cache: Any, position_ids: Any = None) -> tuple[Any]:
        if x.ndim == 4:
            heads = x.transpose(0, 2, 1, 3)  # [B, S, H, D]
        elif x.ndim == 3:
            if num_heads == 0 or x.shape[2] % num_heads:
                raise ValueError(
                    f"RotaryEmbedding: a 3-D input needs num_heads dividing {x.shape[2]}, got {num_heads}"
                )
            heads = x.reshape(x.shape[0], x.shape[1], num_heads, x.shape[2] // num_heads)
        else:
            raise ValueError(f"RotaryEmbedding expects a 3-D or 4-D input, got shape {list(x.shape)}")
        head_size = heads.shape[3]
        rotary_dim = rotary_dim_attr or head_size
        if rotary_dim > head_size or rotary_dim % 2:
            raise ValueError(
                f"RotaryEmbedding: rotary_embedding_dim {rotary_dim} must be even and <= head size {head_size}"
            )
        half = rotary_dim // 2
        if position_ids is not None:
            cos = cos_cache[position_ids]
            sin = sin_cache[position_ids]
        else:
            cos, sin = cos_cache, sin_cache
        if cos.shape[-1] != half or sin.shape[-1] != half:
            raise ValueError(
                f"RotaryEmbedding: cache last dimension must be {half}, got {cos.shape[-1]} and {sin.shape[-1]}"
            )
        work = _compute_dtype(x.dtype)
        cos = cos.astype(work)[:, :, None, :]
        sin = sin.astype(work)[:, :, None, :]
        rotate = heads[..., :rotary_dim].astype(work)
        if interleaved:
            first, second = rotate[..., 0::2], rotate[..., 1::2]
        else:
            first, second = rotate[..., :half], rotate[..., half:]
        real = cos * first - sin * second
        imag = sin * first + cos * second
        if interleaved:
            rotated = xp.stack([real, imag], axis=-1).reshape(rotate.shape)
        else:
            rotated = xp.concatenate([real, imag], axis=-1)
        out = xp.concatenate([rotated.astype(x.dtype), heads[..., rotary_dim:]], axis=-1)
        if x.ndim == 4:
            out = out.transpose(0, 2, 1, 3)
        return (xp.ascontiguousarray(out.reshape(x.shape)),)

    return run


# --- SwiGLU -------------------------------------------------------------------------------


@KERNELS.register("SwiGLU", since=28)
def swiglu(ctx: KernelContext) -> KernelRun:
    """Y = A * sigmoid(alpha * A) * B, with A and B of one shape (no broadcasting)."""
    xp = ctx.xp
    alpha = float(ctx.attr("alpha", 1.0))

    def run(a: Any, b: Any) -> tuple[Any]:
        if a.shape != b.shape:
            raise ValueError(f"SwiGLU inputs must have one shape, got {list(a.shape)} and {list(b.shape)}")
        work = _compute_dtype(a.dtype)
        gate = a.astype(work)
        with np.errstate(over="ignore"):
            sigmoid = 1 / (1 + xp.exp(-alpha * gate))
        return ((gate * sigmoid * b.astype(work)).astype(a.dtype),)

    return run
