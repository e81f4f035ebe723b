"""Resize and Upsample.

Interpolation is separable, so a tensor is resized one axis at a time: each output position
along the axis maps to a source coordinate (``coordinate_transformation_mode``), then either
picks one source index (nearest) or blends a few taps with kernel weights (linear, cubic;
antialiasing widens the kernel by ``1/scale`` when downsampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ronn.kernel import KernelContext, KernelRun

from ._tensor_base import KERNELS, cast_result, compute_dtype, normalize_axes

_COORDINATE_MODES = frozenset(
    {
        "half_pixel",
        "half_pixel_symmetric",
        "pytorch_half_pixel",
        "align_corners",
        "asymmetric",
        "tf_crop_and_resize",
    }
)
#: "simple" is the rounding of Upsample and opset-10 Resize: floor when enlarging, ceil when shrinking
_NEAREST_MODES = frozenset({"round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple"})
_POLICIES = frozenset({"stretch", "not_larger", "not_smaller"})


def _source_coordinates(
    mode: str, out_len: int, in_len: int, scale: float, length: float, roi: tuple[float, float]
) -> np.ndarray:
    """Where each output index along one axis samples the input.

    ``length`` is the unrounded output length (``scale * in_len``, or the requested size),
    which align_corners and tf_crop_and_resize stretch over, as onnx's reference does.
    """
    y = np.arange(out_len, dtype=np.float64)
    if mode == "asymmetric":
        return y / scale
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (y + 0.5) / scale - 0.5 if length != 1 else np.full(out_len, -0.5)
    if mode == "align_corners":
        return y * ((in_len - 1) / (length - 1)) if length != 1 else np.zeros(out_len)
    if mode == "half_pixel_symmetric":
        adjustment = out_len / length
        offset = in_len / 2 * (1 - adjustment)
        return offset + (y + 0.5) / scale - 0.5
    start, end = roi  # tf_crop_and_resize
    if length != 1:
        return start * (in_len - 1) + y * ((end - start) * (in_len - 1) / (length - 1))
    return np.full(out_len, (start + end) / 2 * (in_len - 1))


def _nearest_indices(x: np.ndarray, mode: str, scale: float) -> np.ndarray:
    if mode == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if mode == "floor" or (mode == "simple" and scale >= 1):
        return np.floor(x)
    return np.ceil(x)


def _cubic(t: np.ndarray, a: float) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


@dataclass(frozen=True)
class _Resizer:
    mode: str
    coordinates: str
    nearest: str = "round_prefer_floor"
    cubic_a: float = -0.75
    exclude_outside: bool = False
    extrapolation: float = 0.0
    antialias: bool = False
    axes: tuple[int, ...] | None = None
    policy: str = "stretch"

    def __call__(self, x: np.ndarray, roi=None, scales=None, sizes=None) -> np.ndarray:
        rank = x.ndim
        axes = list(range(rank)) if self.axes is None else normalize_axes(list(self.axes), rank, "Resize")
        in_dims = [x.shape[a] for a in axes]
        factors, out_dims, lengths = self._targets(in_dims, scales, sizes)
        windows = self._regions(roi, len(axes))
        passes = sorted(
            zip(axes, in_dims, out_dims, factors, lengths, windows),
            key=lambda p: p[2] / p[1] if p[1] else 0.0,  # shrink first: later passes see less data
        )
        result, work = x, None
        for axis, in_len, out_len, factor, length, window in passes:
            if out_len == in_len and factor == 1.0 and (
                self.coordinates != "tf_crop_and_resize" or window == (0.0, 1.0)
            ):
                continue
            if in_len == 0 and out_len > 0:
                raise ValueError(f"Resize: cannot resize an empty axis {axis} to {out_len}")
            if self.mode != "nearest" and work is None:
                work = compute_dtype(x.dtype)
                result = result.astype(work)
            result = self._resize_axis(result, axis, out_len, factor, length, window)
        if work is not None:
            result = cast_result(result, x.dtype)
        return result

    def _targets(self, in_dims: list[int], scales, sizes) -> tuple[list[float], list[int], list[float]]:
        """Per axis: the scale, the output length and the unrounded output length."""
        if scales is not None and scales.size:
            factors = scales.astype(np.float64).reshape(-1).tolist()
            if len(factors) != len(in_dims):
                raise ValueError(f"Resize: {len(factors)} scales for {len(in_dims)} axes")
            if any(not f > 0 for f in factors):
                raise ValueError(f"Resize: scales {factors} must be positive")
            lengths = [f * n for f, n in zip(factors, in_dims)]
            return factors, [int(math.floor(v)) for v in lengths], lengths
        if sizes is None or not sizes.size:
            raise ValueError("Resize: one of scales and sizes must be given")
        out_dims = sizes.reshape(-1).tolist()
        if len(out_dims) != len(in_dims):
            raise ValueError(f"Resize: {len(out_dims)} sizes for {len(in_dims)} axes")
        if any(o < 0 for o in out_dims):
            raise ValueError(f"Resize: sizes {out_dims} must not be negative")
        factors = [o / n if n else 1.0 for o, n in zip(out_dims, in_dims)]
        if self.policy == "stretch":
            return factors, out_dims, [float(o) for o in out_dims]
        common = min(factors) if self.policy == "not_larger" else max(factors)
        lengths = [common * n for n in in_dims]
        return [common] * len(factors), [int(v + 0.5) for v in lengths], lengths

    def _regions(self, roi, count: int) -> list[tuple[float, float]]:
        if self.coordinates != "tf_crop_and_resize" or roi is None or not roi.size:
            return [(0.0, 1.0)] * count
        values = roi.astype(np.float64).reshape(-1).tolist()
        if len(values) != 2 * count:
            raise ValueError(f"Resize: roi has {len(values)} values, expected {2 * count}")
        return list(zip(values[:count], values[count:]))

    def _resize_axis(
        self,
        data: np.ndarray,
        axis: int,
        out_len: int,
        scale: float,
        length: float,
        window: tuple[float, float],
    ) -> np.ndarray:
        in_len = data.shape[axis]
        x = _source_coordinates(self.coordinates, out_len, in_len, scale, length, window)
        shape = [1] * data.ndim
        shape[axis] = out_len
        if self.mode == "nearest":
            picks = np.clip(_nearest_indices(x, self.nearest, scale), 0, max(in_len - 1, 0)).astype(np.intp)
            out = np.take(data, picks, axis=axis)
        else:
            taps, weights = self._taps(x, in_len, scale)
            weights = weights.astype(data.dtype)
            out = np.take(data, taps[:, 0], axis=axis)
            out *= weights[:, 0].reshape(shape)
            for k in range(1, taps.shape[1]):
                term = np.take(data, taps[:, k], axis=axis)
                term *= weights[:, k].reshape(shape)
                out += term
        if self.coordinates == "tf_crop_and_resize":
            outside = (x < 0) | (x > in_len - 1)
            if outside.any():
                fill = np.asarray(self.extrapolation).astype(out.dtype)
                out = np.where(outside.reshape(shape), fill, out)
        return out

    def _taps(self, x: np.ndarray, in_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Source indices (clamped to the axis) and weights of every output position."""
        radius = 1 if self.mode == "linear" else 2
        stretch = min(scale, 1.0) if self.antialias else 1.0
        start = math.floor(-radius / stretch) + 1 if stretch < 1 else 1 - radius
        count = 2 - 2 * start
        taps = np.floor(x).astype(np.int64)[:, None] + np.arange(start, start + count)[None, :]
        distance = (taps - x[:, None]) * stretch
        if self.mode == "linear":
            weights = np.maximum(1 - np.abs(distance), 0.0)
        else:
            weights = _cubic(distance, self.cubic_a)
        if self.antialias:
            weights /= weights.sum(axis=1, keepdims=True)
        if self.exclude_outside:
            weights = np.where((taps < 0) | (taps >= in_len), 0.0, weights)
            total = weights.sum(axis=1, keepdims=True)
            weights /= np.where(total == 0, 1.0, total)
        return np.clip(taps, 0, in_len - 1).astype(np.intp), weights


@KERNELS.register("Resize", since=(10, 11, 13, 18, 19))
def resize(ctx: KernelContext) -> KernelRun:
    mode = ctx.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic") or (ctx.opset < 11 and mode == "cubic"):
        raise ctx.fail(f"unsupported mode {mode!r}")
    if ctx.opset < 11:
        resizer = _Resizer(mode, "asymmetric", "simple")
        return lambda x, scales: (resizer(x, None, scales, None),)
    coordinates = ctx.attr("coordinate_transformation_mode", "half_pixel")
    nearest = ctx.attr("nearest_mode", "round_prefer_floor")
    policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
    axes = ctx.attr("axes", None)
    if coordinates not in _COORDINATE_MODES or (coordinates == "half_pixel_symmetric" and ctx.opset < 19):
        raise ctx.fail(f"unsupported coordinate_transformation_mode {coordinates!r}")
    if nearest not in _NEAREST_MODES - {"simple"}:
        raise ctx.fail(f"unsupported nearest_mode {nearest!r}")
    if policy not in _POLICIES:
        raise ctx.fail(f"unsupported keep_aspect_ratio_policy {policy!r}")
    resizer = _Resizer(
        mode,
        coordinates,
        nearest,
        float(ctx.attr("cubic_coeff_a", -0.75)),
        bool(ctx.attr("exclude_outside", 0)),
        float(ctx.attr("extrapolation_value", 0.0)),
        bool(ctx.attr("antialias", 0)) and mode != "nearest",
        None if axes is None else tuple(int(a) for a in axes),
        policy,
    )

    def run(x, roi=None, scales=None, sizes=None):
        return (resizer(x, roi, scales, sizes),)

    return run


@KERNELS.register("Upsample", since=(1, 7, 9, 10))
def upsample(ctx: KernelContext) -> KernelRun:
    mode = ctx.attr("mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode
    if mode not in ("nearest", "linear"):
        raise ctx.fail(f"unsupported mode {mode!r}")
    resizer = _Resizer(mode, "asymmetric", "simple")
    if ctx.opset >= 9:
        return lambda x, scales: (resizer(x, None, scales, None),)
    if ctx.opset >= 7:
        fixed = np.array(ctx.attr("scales"), dtype=np.float32)
    else:
        fixed = np.array([1.0, 1.0, ctx.attr("height_scale"), ctx.attr("width_scale")], dtype=np.float32)
    return lambda x: (resizer(x, None, fixed, None),)
