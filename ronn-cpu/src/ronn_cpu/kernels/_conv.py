"""Convolutions: Conv, ConvTranspose, ConvInteger, QLinearConv and Col2Im.

Conv gathers the input's sliding windows with a strided view (im2col) and runs one batched
matmul for all groups; 1x1 kernels skip the gathering, depthwise kernels multiply-accumulate
over the kernel taps. ConvTranspose and Col2Im run a matmul, then scatter-add each kernel
tap's columns into the output (col2im).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ronn.kernel import KernelContext, KernelRun

from ..jit import parallel
from ._nn_common import (
    KERNELS,
    auto_pad_attr,
    compute_dtype,
    derived,
    ints,
    pad_spatial,
    resolve_pads,
    rounded_to,
    tap_slices,
    widen,
)

# --- geometry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvAttrs:
    """A convolution node's attributes, with per-axis lists left ``None`` when absent."""

    auto_pad: str
    group: int
    kernel_shape: list[int] | None
    strides: list[int] | None
    dilations: list[int] | None
    pads: list[int] | None


def conv_attrs(ctx: KernelContext) -> ConvAttrs:
    """Read and check the attributes shared by the convolution operators."""
    group = int(ctx.attr("group", 1))
    if group < 1:
        raise ctx.fail(f"group must be positive, got {group}")

    def optional_ints(name: str) -> list[int] | None:
        value = ctx.attr(name, None)
        return None if value is None else [int(v) for v in value]

    attrs = ConvAttrs(
        auto_pad_attr(ctx),
        group,
        optional_ints("kernel_shape"),
        optional_ints("strides"),
        optional_ints("dilations"),
        optional_ints("pads"),
    )
    for name in ("strides", "dilations"):
        if any(v < 1 for v in getattr(attrs, name) or ()):
            raise ctx.fail(f"{name} must be positive, got {getattr(attrs, name)}")
    if attrs.pads is not None and any(p < 0 for p in attrs.pads):
        raise ctx.fail(f"pads must not be negative, got {attrs.pads}")
    return attrs


@dataclass(frozen=True)
class Geometry:
    """Where a convolution's kernel taps read: per spatial axis."""

    strides: list[int]
    dilations: list[int]
    begins: list[int]
    ends: list[int]


def conv_geometry(attrs: ConvAttrs, in_shape: Sequence[int], kernel: Sequence[int]) -> Geometry:
    """Strides, dilations and pads of a convolution over ``in_shape`` with ``kernel``."""
    rank = len(in_shape)
    if attrs.kernel_shape is not None and list(attrs.kernel_shape) != list(kernel):
        raise ValueError(f"kernel_shape {attrs.kernel_shape} does not match the weight's {list(kernel)}")
    strides = ints(attrs.strides, rank, 1)
    dilations = ints(attrs.dilations, rank, 1)
    begins, ends = resolve_pads(attrs.auto_pad, in_shape, kernel, strides, dilations, attrs.pads)
    return Geometry(strides, dilations, begins, ends)


def taps(kernel: Sequence[int]) -> list[tuple[int, ...]]:
    """Every kernel tap's index, in row-major order."""
    return list(np.ndindex(*kernel))


def _check_channels(x: Any, w: Any, group: int) -> None:
    if x.ndim < 3 or w.ndim != x.ndim:
        raise ValueError(f"input rank {x.ndim} and weight rank {w.ndim} do not fit a convolution")
    channels, out_channels = x.shape[1], w.shape[0]
    if channels % group or out_channels % group or w.shape[1] * group != channels:
        raise ValueError(
            f"{channels} input channels, weight {tuple(w.shape)} and group {group} do not match"
        )


# --- Conv -----------------------------------------------------------------------------------


def convolve(xp: Any, x: Any, w: Any, group: int, geo: Geometry) -> Any:
    """The convolution of ``x`` (N, C, *in) with ``w`` (M, C/group, *k), no bias."""
    _check_channels(x, w, group)
    n, channels = x.shape[:2]
    out_channels = w.shape[0]
    kernel = w.shape[2:]
    padded = pad_spatial(xp, x, geo.begins, geo.ends, 0)
    out_shape = tuple(
        (size - ((k - 1) * d + 1)) // s + 1
        for size, k, s, d in zip(padded.shape[2:], kernel, geo.strides, geo.dilations)
    )
    if any(o < 1 for o in out_shape):
        raise ValueError(f"the kernel {tuple(kernel)} does not fit the padded input {padded.shape[2:]}")
    in_group = channels // group
    if in_group == 1 and group == channels and group > 1:
        return _depthwise(xp, padded, w, out_shape, geo)
    positions = math.prod(out_shape)
    if all(k == 1 for k in kernel):  # a 1x1 kernel reads the (strided) input itself
        taken = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out_shape, geo.strides))
        cols = padded[(slice(None), slice(None)) + taken].reshape(n, group, in_group, positions)
    else:
        cols = _windows(xp, padded, kernel, out_shape, geo).reshape(
            n, group, in_group * math.prod(kernel), positions
        )
    weights = w.reshape(group, out_channels // group, -1)
    if group == 1:
        y = xp.matmul(weights[0], cols[:, 0])
    else:
        y = xp.matmul(weights, cols)
    return y.reshape((n, out_channels) + out_shape)


def _windows(xp: Any, padded: Any, kernel: Sequence[int], out_shape: Sequence[int], geo: Geometry) -> Any:
    """A read-only strided view (N, C, *kernel, *out) of every tap at every output position."""
    spatial_strides = padded.strides[2:]
    shape = padded.shape[:2] + tuple(kernel) + tuple(out_shape)
    strides = (
        padded.strides[:2]
        + tuple(st * d for st, d in zip(spatial_strides, geo.dilations))
        + tuple(st * s for st, s in zip(spatial_strides, geo.strides))
    )
    return xp.lib.stride_tricks.as_strided(padded, shape=shape, strides=strides, writeable=False)


def _depthwise(xp: Any, padded: Any, w: Any, out_shape: Sequence[int], geo: Geometry) -> Any:
    """A depthwise convolution: one multiply-accumulate over the output per kernel tap."""
    n, channels = padded.shape[:2]
    multiplier = w.shape[0] // channels
    kernel = w.shape[2:]
    per_tap = w.reshape(channels, multiplier, -1)
    expand = (1,) * len(out_shape)
    acc = xp.zeros((n, channels, multiplier) + tuple(out_shape), dtype=padded.dtype)
    scratch = xp.empty_like(acc)
    for index, tap in enumerate(taps(kernel)):
        window = padded[(slice(None), slice(None)) + tap_slices(tap, out_shape, geo.strides, geo.dilations)]
        xp.multiply(window[:, :, None], per_tap[:, :, index].reshape((channels, multiplier) + expand), out=scratch)
        acc += scratch
    return acc.reshape((n, channels * multiplier) + tuple(out_shape))


def _add_bias(y: Any, bias: Any) -> Any:
    if bias is not None:
        if bias.shape != (y.shape[1],):
            raise ValueError(f"bias shape {bias.shape} does not match {y.shape[1]} output channels")
        y += bias.reshape((-1,) + (1,) * (y.ndim - 2)).astype(y.dtype, copy=False)
    return y


# --- the fast Conv ---------------------------------------------------------------------------

_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_scratch = threading.local()
#: 1x1 convolutions of at most this many multiply-adds (one image) run in numba, not BLAS
_SMALL_GEMM = 1 << 16
#: bytes of im2col columns built at a time (a band of output rows): about the L2 cache
_COLUMNS_BUDGET = 1 << 20


def scratch(size: int, dtype: np.dtype, purpose: str = "") -> np.ndarray:
    """A reusable per-thread 1-D buffer of at least ``size`` elements (contents undefined);
    a kernel needing two at once names the second by ``purpose``."""
    name = "buffer_" + dtype.char + purpose
    buffer = getattr(_scratch, name, None)
    if buffer is None or buffer.size < size:
        buffer = np.empty(max(size, 1 << 16), dtype)
        setattr(_scratch, name, buffer)
    return buffer[:size]


_jit_module: Any = None  # ronn_cpu.jit.conv once loaded


def _jit_conv() -> Any:
    global _jit_module
    if _jit_module is None:
        from ..jit import load

        _jit_module = load("conv")
    return _jit_module


def _padded_frame(x: np.ndarray, geometry: _Geometry2d) -> tuple[int, int, int, int]:
    """(H, W, HP, WP) of a 1-D or 2-D convolution's input: its size and the padded image's."""
    height, width = (1,) + x.shape[2:] if x.ndim == 3 else x.shape[2:]
    (ph, pw), (eh, ew) = geometry.begins, geometry.ends
    return height, width, height + ph + eh, width + pw + ew


def _zero_borders(plane: np.ndarray, ph: int, pw: int, height: int, width: int) -> np.ndarray:
    """Zero the padding around the (height, width) image at (ph, pw) in (C, HP, WP) ``plane``."""
    plane[:, :ph] = 0
    plane[:, ph + height :] = 0
    plane[:, ph : ph + height, :pw] = 0
    plane[:, ph : ph + height, pw + width :] = 0
    return plane


#: the most scratch memory (bytes, per thread) the stride-1 paths may take for one image;
#: beyond it (large images) the banded im2col runs, whose columns stay about the L2 cache's size
_STRIDE1_SCRATCH = 32 << 20

_REFERENCE = object()  # plan marker: the numpy reference computes this shape


@dataclass(frozen=True)
class _Geometry2d:
    """A 2-D convolution's geometry (a 1-D one runs as 1 x L)."""

    out_shape: tuple[int, ...]  # the node's output shape
    out_2d: tuple[int, int]  # (OH, OW)
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    begins: tuple[int, int]
    ends: tuple[int, int]


class FastConv:
    """A Conv node prepared at session creation, with an optional fused epilogue.

    ``FastConv(ctx, activation=..., alpha=..., beta=...)`` reads the node's attributes and, when
    the weight (input 1) and bias (input 2) are initializers, prepares them once. Calling it
    with ``(x, w, bias=None, residual=None)`` returns ``act(conv(x, w) + bias + residual)``
    (``residual`` of the output's shape, or broadcasting to it).

    float32/float64 (and, computed in float32, float16) 1-D and 2-D convolutions take the
    fast paths, planned once per input shape: 1x1 kernels as one GEMM per group and image
    with no im2col, depthwise kernels (group == channels == outputs) as a direct numba kernel
    adding the bias, others as a numba im2col into a reused per-thread buffer and one GEMM per
    group and image; then bias, residual and activation in one numba pass. Other ranks and
    types run the numpy reference (:func:`convolve`).
    """

    def __init__(
        self,
        ctx: KernelContext,
        *,
        activation: str | None = None,
        alpha: float = 0.01,
        beta: float = 0.0,
        weight_index: int = 1,
        bias_index: int = 2,
    ) -> None:
        from ._epilogue import ACTIVATIONS

        if activation not in ACTIVATIONS:
            raise ctx.fail(f"unsupported fused activation {activation!r}")
        self.attrs = conv_attrs(ctx)
        self.activation = activation
        self.alpha = float(alpha)
        self.beta = float(beta)
        self._plans: dict[tuple[Any, ...], Any] = {}
        self._weight_source: Any = None
        self._weight: Any = None
        self._bias_source: Any = None
        self._bias: Any = None
        weight = ctx.constant(weight_index)
        if isinstance(weight, np.ndarray) and weight.ndim >= 3:
            self._prepare_weight(weight)
        bias = ctx.constant(bias_index)
        if isinstance(bias, np.ndarray) and self._weight is not None:
            self._prepare_bias(bias, self._weight.dtype)

    # --- prepared operands -------------------------------------------------------------

    def _prepare_weight(self, w: np.ndarray) -> np.ndarray:
        """The weight in its compute dtype, C-contiguous (kept while ``w`` stays the source)."""
        if w is self._weight_source:
            return self._weight
        prepared = np.ascontiguousarray(widen(w))
        self._weight_source, self._weight = w, prepared
        return prepared

    def _prepare_bias(self, bias: np.ndarray, dtype: np.dtype) -> np.ndarray:
        if bias is self._bias_source and self._bias.dtype == dtype:
            return self._bias
        prepared = np.ascontiguousarray(bias.reshape(-1), dtype=dtype)
        self._bias_source, self._bias = bias, prepared
        return prepared

    # --- running -----------------------------------------------------------------------

    def __call__(self, x: Any, w: Any, bias: Any = None, residual: Any = None) -> Any:
        entry = self._plans.get((x.shape, w.shape, x.dtype))
        if entry is None:
            entry = self._plan(x, w)
        if entry is _REFERENCE:
            return self._reference(x, w, bias, residual)
        execute, finish, out_shape, work = entry
        weight = self._weight if w is self._weight_source else self._prepare_weight(w)
        if weight.dtype != work:
            weight = weight.astype(work)
        values = x if x.dtype == work else x.astype(work)
        if not values.flags.c_contiguous:
            values = np.ascontiguousarray(values)
        shift = None
        if bias is not None:
            if bias is self._bias_source and self._bias.dtype == work:
                shift = self._bias
            else:
                if bias.shape != (w.shape[0],):
                    raise ValueError(f"bias shape {bias.shape} does not match {w.shape[0]} output channels")
                shift = self._prepare_bias(bias, work)
        y = np.empty(out_shape, dtype=work)
        if execute(values, weight, shift, y):
            shift = None  # the kernel added it
        if shift is not None or residual is not None or finish is not None:
            y = self._finish(y, shift, residual, finish)
        return y if y.dtype == x.dtype else y.astype(x.dtype)

    def _finish(self, y: np.ndarray, shift: Any, residual: Any, finish: Any) -> np.ndarray:
        if residual is not None and (
            residual.shape != y.shape or residual.dtype != y.dtype or not residual.flags.c_contiguous
        ):
            from ._epilogue import epilogue

            if np.broadcast_shapes(residual.shape, y.shape) != y.shape:
                raise ValueError(f"residual of shape {residual.shape} does not broadcast to {y.shape}")
            return epilogue(
                y, bias=shift, activation=self.activation, alpha=self.alpha, beta=self.beta,
                residual=widen(residual).astype(y.dtype, copy=False),
            )  # fmt: skip
        kernel, zeros, params, channels, inner = finish or self._finisher(y)
        flat = y.reshape(-1)
        if residual is None:
            kernel(flat, zeros if shift is None else shift, flat, False, channels, inner, params)
        else:
            kernel(flat, zeros if shift is None else shift, residual.reshape(-1), True, channels, inner, params)
        return y

    def _finisher(self, y: np.ndarray) -> tuple[Any, ...]:
        """The epilogue's numba kernel and arguments for outputs shaped like ``y``."""
        from ._epilogue import _COSTLY, _jit, kernel_params, unit_scale

        module = _jit()
        channels = y.shape[1]
        inner = y.size // (y.shape[0] * channels)
        work = y.size * 16 if self.activation in _COSTLY else y.size
        kernels = module.BIAS_PAR if parallel(work) else module.BIAS
        return (
            kernels[module.KINDS[self.activation]],
            unit_scale(channels, y.dtype)[1],
            kernel_params(y.dtype, self.alpha, self.beta),
            channels,
            inner,
        )

    def _reference(self, x, w, bias, residual) -> Any:  # noqa: ANN001
        from ._epilogue import epilogue_numpy

        geo = conv_geometry(self.attrs, x.shape[2:], w.shape[2:])
        y = convolve(np, widen(x), self._prepare_weight(w), self.attrs.group, geo)
        if bias is not None and bias.shape != (w.shape[0],):
            raise ValueError(f"bias shape {bias.shape} does not match {w.shape[0]} output channels")
        y = epilogue_numpy(
            np.ascontiguousarray(y), bias=bias, activation=self.activation, alpha=self.alpha, beta=self.beta,
            residual=None if residual is None else widen(residual),
        )  # fmt: skip
        return y.astype(x.dtype, copy=False)

    # --- planning, once per input shape --------------------------------------------------

    def _plan(self, x: np.ndarray, w: np.ndarray) -> Any:
        work = compute_dtype(x.dtype)
        geometry = self._geometry(x, w)
        if work not in _FAST_DTYPES or geometry is None or not isinstance(x, np.ndarray):
            entry: Any = _REFERENCE
        else:
            channels, out_channels, group = x.shape[1], w.shape[0], self.attrs.group
            if group == channels and out_channels == channels and group > 1:
                execute = self._depthwise_plan(x, geometry)
            elif geometry.kernel == (1, 1) and not any(geometry.begins) and not any(geometry.ends):
                execute = self._pointwise_plan(x, w, geometry)
            elif self._kn2row_pays(channels, out_channels, group, geometry, work, x):
                execute = self._kn2row_plan(x, w, geometry, work)
            elif self._shifted_pays(channels, group, geometry, work, x):
                execute = self._shifted_plan(x, w, geometry, work)
            else:
                execute = self._im2col_plan(x, w, geometry, work)
            finish = None
            if self.activation is not None:
                finish = self._finisher(np.empty(geometry.out_shape, work))
            entry = (execute, finish, geometry.out_shape, work)
        if len(self._plans) > 32:
            self._plans.clear()
        self._plans[(x.shape, w.shape, x.dtype)] = entry
        return entry

    def _geometry(self, x: Any, w: Any) -> _Geometry2d | None:
        """The 2-D geometry (checking shapes), or None for other ranks."""
        _check_channels(x, w, self.attrs.group)
        geo = conv_geometry(self.attrs, x.shape[2:], w.shape[2:])
        kernel = w.shape[2:]
        out_spatial = tuple(
            (size + b + e - ((k - 1) * d + 1)) // s + 1
            for size, k, s, d, b, e in zip(x.shape[2:], kernel, geo.strides, geo.dilations, geo.begins, geo.ends)
        )
        if any(o < 1 for o in out_spatial):
            raise ValueError(f"the kernel {tuple(kernel)} does not fit the padded input of {x.shape}")
        if x.ndim not in (3, 4):
            return None
        lead = ((1,), (0,)) if x.ndim == 3 else ((), ())  # a 1-D convolution runs as 1 x L
        return _Geometry2d(
            (x.shape[0], w.shape[0]) + out_spatial,
            lead[0] + out_spatial,
            lead[0] + tuple(kernel),
            lead[0] + tuple(geo.strides),
            lead[0] + tuple(geo.dilations),
            lead[1] + tuple(geo.begins),
            lead[1] + tuple(geo.ends),
        )

    def _pointwise_plan(self, x: np.ndarray, w: np.ndarray, geometry: _Geometry2d) -> Any:
        n, channels = x.shape[:2]
        out_channels = w.shape[0]
        (sh, sw), (oh, ow) = geometry.strides, geometry.out_2d
        subsample = (sh, sw) != (1, 1)
        planes = (n, channels) + ((1,) + x.shape[2:] if x.ndim == 3 else x.shape[2:])
        positions = oh * ow
        group = self.attrs.group
        cg, mg = channels // group, out_channels // group
        matmul = np.matmul
        if n == 1 and group == 1 and not subsample and out_channels * channels * positions <= _SMALL_GEMM:
            small = _jit_conv().gemm_small if positions >= 8 else _jit_conv().gemm_small_dot
            zeros = np.zeros(out_channels, compute_dtype(x.dtype))

            def execute_small(values: np.ndarray, weight: np.ndarray, shift: Any, y: np.ndarray) -> bool:
                small(weight.reshape(out_channels, channels), values.reshape(channels, positions),
                      y.reshape(out_channels, positions), zeros if shift is None else shift)  # fmt: skip
                return True

            return execute_small

        def execute(values: np.ndarray, weight: np.ndarray, shift: Any, y: np.ndarray) -> bool:
            if subsample:
                values = np.ascontiguousarray(
                    values.reshape(planes)[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]
                )
            if group == 1:
                if n == 1:
                    matmul(weight.reshape(out_channels, channels), values.reshape(channels, positions),
                           out=y.reshape(out_channels, positions))  # fmt: skip
                else:
                    matmul(weight.reshape(out_channels, channels), values.reshape(n, channels, positions),
                           out=y.reshape(n, out_channels, positions))  # fmt: skip
            else:
                matmul(weight.reshape(group, mg, cg), values.reshape(n, group, cg, positions),
                       out=y.reshape(n, group, mg, positions))  # fmt: skip
            return False

        return execute

    def _depthwise_plan(self, x: np.ndarray, geometry: _Geometry2d) -> Any:
        from ._epilogue import unit_scale

        module = _jit_conv()
        n, channels = x.shape[:2]
        (oh, ow), (kh, kw) = geometry.out_2d, geometry.kernel
        (sh, sw), (dh, dw), (ph, pw) = geometry.strides, geometry.dilations, geometry.begins
        planes = (n, channels) + ((1,) + x.shape[2:] if x.ndim == 3 else x.shape[2:])
        wide = parallel(channels * oh * ow * kh * kw)
        positions = oh * ow
        if positions <= 64 and channels >= 8 or positions <= 256 and channels >= 24:
            fn = module.depthwise_small  # channels-last inside: small planes, many channels
        else:
            fn = module.depthwise_par if wide else module.depthwise
        zeros = unit_scale(channels, compute_dtype(x.dtype))[1]

        def execute(values: np.ndarray, weight: np.ndarray, shift: Any, y: np.ndarray) -> bool:
            x4 = values.reshape(planes)
            y4 = y.reshape(n, channels, oh, ow)
            w3 = weight.reshape(channels, kh, kw)
            bias = zeros if shift is None else shift
            for image in range(n):
                fn(x4[image], w3, bias, y4[image], sh, sw, dh, dw, ph, pw)
            return True

        return execute

    @staticmethod
    def _kn2row_pays(
        channels: int, out_channels: int, group: int, geometry: _Geometry2d, work: np.dtype, x: np.ndarray
    ) -> bool:
        """Whether the kn2row path beats im2col: stride 1, one group, and at most half as many
        outputs as inputs (DenseNet's growth convolutions), where one GEMM with kh*kw times
        the output rows moves less data than the columns kh*kw times the input would; and its
        products (kh*kw*M rows over the padded image) fit :data:`_STRIDE1_SCRATCH`."""
        if group != 1 or geometry.strides != (1, 1) or geometry.kernel == (1, 1) or 2 * out_channels > channels:
            return False
        _, _, hp, wp = _padded_frame(x, geometry)
        return math.prod(geometry.kernel) * out_channels * hp * wp * work.itemsize <= _STRIDE1_SCRATCH

    @staticmethod
    def _shifted_pays(channels: int, group: int, geometry: _Geometry2d, work: np.dtype, x: np.ndarray) -> bool:
        """Whether the shifted-copy columns serve: one group, a kernel larger than 1x1, at least
        100 output positions, and columns (kh*kw*C rows over the output at the stride phase's
        width) that fit :data:`_STRIDE1_SCRATCH` (larger images take the banded im2col)."""
        (oh, ow) = geometry.out_2d
        if group != 1 or geometry.kernel == (1, 1) or oh * ow < 100:
            return False
        wq = -(-_padded_frame(x, geometry)[3] // geometry.strides[1])
        return math.prod(geometry.kernel) * channels * oh * wq * work.itemsize <= _STRIDE1_SCRATCH

    def _kn2row_plan(self, x: np.ndarray, w: np.ndarray, geometry: _Geometry2d, work: np.dtype) -> Any:
        """A stride-1 convolution as one GEMM and shifted sums (kn2row): the padded image
        (C, HP * WP) times all taps' weights stacked ((kh*kw*M, C), prepared once) gives each
        tap's product at every padded position; output (oy, ox) sums tap (i, j)'s product at
        (oy + i*dh, ox + j*dw), with the bias, in one numba pass. No columns are built."""
        from ._epilogue import unit_scale

        module = _jit_conv()
        n, channels, out_channels = x.shape[0], x.shape[1], w.shape[0]
        height, width, hp, wp = _padded_frame(x, geometry)
        (kh, kw), (oh, ow) = geometry.kernel, geometry.out_2d
        (dh, dw), (ph, pw) = geometry.dilations, geometry.begins
        padded_size = channels * hp * wp
        taps = kh * kw
        parts_shape = (taps * out_channels, hp * wp)
        summing = module.kn2row_sum_par if parallel(out_channels * oh * ow * taps) else module.kn2row_sum
        zeros = unit_scale(out_channels, work)[1]
        stacked: list[Any] = [(None, None)]  # [(source weight, its (taps*M, C) stack)]: replaced whole

        def stack(weight: np.ndarray) -> np.ndarray:
            source, prepared = stacked[0]  # one read: concurrent runs never mix two weights' entries
            if source is not weight:
                # (M, C, kh, kw) -> (kh, kw, M, C): tap-major rows
                shaped = weight.reshape(out_channels, channels, kh, kw).transpose(2, 3, 0, 1)
                prepared = np.ascontiguousarray(shaped).reshape(taps * out_channels, channels)
                stacked[0] = (weight, prepared)
            return prepared

        if self._weight is not None and self._weight.dtype == work:
            stack(self._weight)  # the initializer's stacked copy, made once

        def execute(values: np.ndarray, weight: np.ndarray, shift: Any, y: np.ndarray) -> bool:
            w2 = stack(weight)
            x4 = values.reshape(n, channels, height, width)
            y3 = y.reshape(n, out_channels, oh * ow)
            bias = zeros if shift is None else shift
            parts = scratch(parts_shape[0] * parts_shape[1], work).reshape(parts_shape)
            if hp != height or wp != width:
                padded = _zero_borders(scratch(padded_size, work, "padded").reshape(channels, hp, wp), ph, pw, height, width)
            for image in range(n):
                if hp != height or wp != width:
                    padded[:, ph : ph + height, pw : pw + width] = x4[image]
                    source = padded.reshape(channels, hp * wp)
                else:
                    source = x4[image].reshape(channels, hp * wp)
                np.matmul(w2, source, out=parts)
                summing(parts, y3[image], bias, kh, kw, dh, dw, wp, oh, ow)
            return True

        return execute

    def _shifted_plan(self, x: np.ndarray, w: np.ndarray, geometry: _Geometry2d, work: np.dtype) -> Any:
        """A convolution as one GEMM over columns that are plain copies. The padded image is
        split into its stride phases (sh*sw planes: padded rows a, a+sh, ... and columns b,
        b+sw, ...; stride 1 has one, the padded image itself); on a phase's grid (output rows
        at the phase's width WQ), tap (i, j)'s column row for channel c is phase
        (i*dh % sh, j*dw % sw) read from offset (i*dh // sh) * WQ + j*dw // sw on, so the
        columns are kh*kw contiguous slice copies instead of a gather. The GEMM's result has
        WQ - OW extra columns per output row, dropped while copying it into the output."""
        n, channels, out_channels = x.shape[0], x.shape[1], w.shape[0]
        height, width, hp, wp = _padded_frame(x, geometry)
        (kh, kw), (oh, ow) = geometry.kernel, geometry.out_2d
        (sh, sw), (dh, dw), (ph, pw) = geometry.strides, geometry.dilations, geometry.begins
        taps = kh * kw
        hq, wq = -(-hp // sh), -(-wp // sw)  # a phase plane's rows and columns
        span = oh * wq  # GEMM columns: every output row at the phase's width
        reads = [
            ((i * dh % sh) * sw + j * dw % sw, (i * dh // sh) * wq + j * dw // sw) for i in range(kh) for j in range(kw)
        ]  # (phase, offset) of each tap
        plane = max(hq * wq, max(offset for _, offset in reads) + span)  # the last rows read past the grid
        phased = (sh, sw) != (1, 1)
        fills = [(a * sw + b, len(range(a, hp, sh)), len(range(b, wp, sw)), a, b) for a in range(sh) for b in range(sw)]

        def execute(values: np.ndarray, weight: np.ndarray, shift: Any, y: np.ndarray) -> bool:
            x4 = values.reshape(n, channels, height, width)
            y3 = y.reshape(n, out_channels, oh, ow)
            w2 = weight.reshape(out_channels, channels * taps)  # rows ordered (c, i, j) as the columns
            if phased:
                padded = _zero_borders(scratch(channels * hp * wp, work, "padded").reshape(channels, hp, wp),
                                       ph, pw, height, width)  # fmt: skip
                phases = scratch(sh * sw * channels * plane, work, "phases").reshape(sh * sw, channels, plane)
                phases[...] = 0
            else:
                flat = scratch(channels * plane, work, "padded").reshape(channels, plane)
                padded = _zero_borders(flat[:, : hp * wp].reshape(channels, hp, wp), ph, pw, height, width)
                flat[:, hp * wp :] = 0
                phases = flat.reshape(1, channels, plane)
            cols = scratch(channels * taps * span, work).reshape(channels, taps, span)
            wide = scratch(out_channels * span, work, "wide").reshape(out_channels, span)
            for image in range(n):
                padded[:, ph : ph + height, pw : pw + width] = x4[image]
                if phased:
                    for phase, rows, columns, a, b in fills:
                        grid = phases[phase, :, : rows * wq].reshape(channels, rows, wq)
                        grid[:, :, :columns] = padded[:, a::sh, b::sw]
                for tap, (phase, offset) in enumerate(reads):
                    cols[:, tap] = phases[phase, :, offset : offset + span]
                np.matmul(w2, cols.reshape(channels * taps, span), out=wide)
                y3[image] = wide.reshape(out_channels, oh, wq)[:, :, :ow]
            return False

        return execute

    def _im2col_plan(self, x: np.ndarray, w: np.ndarray, geometry: _Geometry2d, work: np.dtype) -> Any:
        module = _jit_conv()
        n, channels = x.shape[:2]
        out_channels = w.shape[0]
        group = self.attrs.group
        cg, mg = channels // group, out_channels // group
        (kh, kw), (oh, ow) = geometry.kernel, geometry.out_2d
        (sh, sw), (dh, dw), (ph, pw) = geometry.strides, geometry.dilations, geometry.begins
        positions = oh * ow
        rows = cg * kh * kw
        planes = (n, group, cg) + ((1,) + x.shape[2:] if x.ndim == 3 else x.shape[2:])
        fill = module.im2col_rows
        matmul = np.matmul
        # a large column matrix is built and multiplied a band of output rows at a time, so it
        # stays in cache between im2col writing it and the GEMM reading it
        band = max(1, _COLUMNS_BUDGET // (rows * ow * work.itemsize))
        if band < oh:
            bands = [(start, min(oh, start + band)) for start in range(0, oh, band)]

            def execute_bands(values: np.ndarray, weight: np.ndarray, shift: Any, y: np.ndarray) -> bool:
                x5 = values.reshape(planes)
                y4 = y.reshape(n, group, mg, positions)
                w3 = weight.reshape(group, mg, rows)
                for image in range(n):
                    for g in range(group):
                        for start, stop in bands:
                            count = (stop - start) * ow
                            cols = scratch(rows * count, work).reshape(rows, count)
                            fill(x5[image, g], cols, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, start, stop)
                            matmul(w3[g], cols, out=y4[image, g, :, start * ow : stop * ow])
                return False

            return execute_bands

        def execute(values: np.ndarray, weight: np.ndarray, shift: Any, y: np.ndarray) -> bool:
            cols = scratch(rows * positions, work).reshape(rows, positions)
            x5 = values.reshape(planes)
            y4 = y.reshape(n, group, mg, positions)
            w3 = weight.reshape(group, mg, rows)
            for image in range(n):
                for g in range(group):
                    fill(x5[image, g], cols, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, 0, oh)
                    matmul(w3[g], cols, out=y4[image, g])
            return False

        return execute


@KERNELS.register("Conv", since=(1, 11, 22))
def conv(ctx: KernelContext) -> KernelRun:
    """Conv: N-D convolution with groups, strides, dilations, pads and optional bias."""
    if ctx.xp is not np:  # another provider reusing the kernel: the array-namespace version
        return _generic_conv(ctx)
    op = FastConv(ctx)

    def run(x, w, bias=None):
        return (op(x, w, bias),)

    return run


def _generic_conv(ctx: KernelContext) -> KernelRun:
    xp = ctx.xp
    attrs = conv_attrs(ctx)
    weights = derived(ctx, 1, widen)

    def run(x, w, bias=None):
        geo = conv_geometry(attrs, x.shape[2:], w.shape[2:])
        y = convolve(xp, widen(x), weights(w), attrs.group, geo)
        return (_add_bias(y, bias).astype(x.dtype, copy=False),)

    return run


# --- integer convolutions ---------------------------------------------------------------


def _centred(x: Any, zero_point: Any, channel_axis_size: int | None = None) -> Any:
    """``x - zero_point`` in float64 (exact for 8-bit data); per-channel points on axis 0."""
    values = x.astype(np.float64)
    if zero_point is None:
        return values
    zp = zero_point.astype(np.float64)
    if zp.ndim == 1 and zp.size > 1 and channel_axis_size is not None:
        if zp.size != channel_axis_size:
            raise ValueError(f"{zp.size} zero points for {channel_axis_size} channels")
        zp = zp.reshape((-1,) + (1,) * (values.ndim - 1))
    elif zp.size != 1:
        raise ValueError(f"zero point of shape {zp.shape} is neither a scalar nor per channel")
    else:
        zp = zp.reshape(())
    return values - zp


@KERNELS.register("ConvInteger", since=10)
def conv_integer(ctx: KernelContext) -> KernelRun:
    """ConvInteger: convolution of 8-bit integers after removing zero points, into int32."""
    xp = ctx.xp
    attrs = conv_attrs(ctx)

    def run(x, w, x_zero_point=None, w_zero_point=None):
        geo = conv_geometry(attrs, x.shape[2:], w.shape[2:])
        y = convolve(xp, _centred(x, x_zero_point), _centred(w, w_zero_point, w.shape[0]), attrs.group, geo)
        return (xp.rint(y).astype(np.int32),)

    return run


@KERNELS.register("QLinearConv", since=10)
def qlinear_conv(ctx: KernelContext) -> KernelRun:
    """QLinearConv: a quantized convolution requantized to the output's scale and zero point."""
    xp = ctx.xp
    attrs = conv_attrs(ctx)

    def run(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point=None, bias=None):
        geo = conv_geometry(attrs, x.shape[2:], w.shape[2:])
        acc = convolve(xp, _centred(x, x_zero_point), _centred(w, w_zero_point, w.shape[0]), attrs.group, geo)
        if bias is not None:
            acc = _add_bias(acc, bias)
        if w_scale.size > 1:
            if w_scale.shape != (w.shape[0],):
                raise ValueError(f"w_scale shape {w_scale.shape} does not match {w.shape[0]} output channels")
            w_scale = w_scale.reshape((-1,) + (1,) * (acc.ndim - 2))
        # formed in the scales' type, as onnx's definition does, then applied in float64
        multiplier = (x_scale.reshape(()) * w_scale / y_scale.reshape(())).astype(np.float64)
        out_dtype = x.dtype if y_zero_point is None else y_zero_point.dtype
        scaled = acc * multiplier
        if y_zero_point is not None:
            scaled += y_zero_point.astype(np.float64).reshape(())
        return (rounded_to(scaled, out_dtype),)

    return run


# --- ConvTranspose and Col2Im -----------------------------------------------------------


def col2im(
    xp: Any,
    cols: Any,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    begins: Sequence[int],
    out_shape: Sequence[int],
) -> Any:
    """Scatter-add ``cols`` (N, C, *kernel, *blocks) into an image (N, C, *out_shape).

    Block ``i`` and tap ``t`` of an axis land at ``i * stride + t * dilation - begin``;
    positions outside the image are dropped (``begin`` may be negative).
    """
    rank = len(kernel)
    blocks = cols.shape[2 + rank :]
    lead = [max(0, -b) for b in begins]
    span = [(nb - 1) * s + (k - 1) * d + 1 for nb, k, s, d in zip(blocks, kernel, strides, dilations)]
    size = [ld + max(sp, b + o) for ld, sp, b, o in zip(lead, span, begins, out_shape)]
    image = xp.zeros(cols.shape[:2] + tuple(size), dtype=cols.dtype)
    everything = (slice(None), slice(None))
    for tap in taps(kernel):
        target = tuple(
            slice(ld + t * d, ld + t * d + (nb - 1) * s + 1, s)
            for ld, t, nb, s, d in zip(lead, tap, blocks, strides, dilations)
        )
        image[everything + target] += cols[everything + tap]
    crop = tuple(slice(ld + b, ld + b + o) for ld, b, o in zip(lead, begins, out_shape))
    return xp.ascontiguousarray(image[everything + crop])


def transpose_geometry(
    attrs: ConvAttrs,
    output_padding: list[int] | None,
    output_shape: list[int] | None,
    in_shape: Sequence[int],
    kernel: Sequence[int],
) -> tuple[Geometry, list[int]]:
    """A ConvTranspose's geometry and spatial output shape (pads derived per the spec)."""
    rank = len(in_shape)
    if attrs.kernel_shape is not None and list(attrs.kernel_shape) != list(kernel):
        raise ValueError(f"kernel_shape {attrs.kernel_shape} does not match the weight's {list(kernel)}")
    strides = ints(attrs.strides, rank, 1)
    dilations = ints(attrs.dilations, rank, 1)
    extra = ints(output_padding, rank, 0)
    natural = [  # the full output before any padding is removed
        s * (n - 1) + e + (k - 1) * d + 1 for n, k, s, d, e in zip(in_shape, kernel, strides, dilations, extra)
    ]
    if output_shape is None and attrs.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        output_shape = [n * s for n, s in zip(in_shape, strides)]
    if output_shape is not None:
        shape = [int(v) for v in output_shape][-rank:]
        if len(shape) != rank:
            raise ValueError(f"output_shape {output_shape} does not match {rank} spatial axes")
        begins, ends = [], []
        for total in (nat - o for nat, o in zip(natural, shape)):
            small, large = total // 2, total - total // 2
            begin, end = (small, large) if attrs.auto_pad == "SAME_UPPER" else (large, small)
            begins.append(begin)
            ends.append(end)
        return Geometry(strides, dilations, begins, ends), shape
    begins, ends = resolve_pads(attrs.auto_pad, in_shape, kernel, strides, dilations, attrs.pads)
    shape = [nat - b - e for nat, b, e in zip(natural, begins, ends)]
    if any(o < 1 for o in shape):
        raise ValueError(f"pads {attrs.pads} leave an empty output {shape}")
    return Geometry(strides, dilations, begins, ends), shape


def transpose_convolve(xp: Any, x: Any, w: Any, group: int, geo: Geometry, out_shape: Sequence[int]) -> Any:
    """The transposed convolution of ``x`` (N, C, *in) with ``w`` (C, M/group, *k), no bias."""
    if x.ndim < 3 or w.ndim != x.ndim or x.shape[1] != w.shape[0] or x.shape[1] % group:
        raise ValueError(f"input {x.shape}, weight {w.shape} and group {group} do not match")
    n, channels = x.shape[:2]
    in_group, out_group = channels // group, w.shape[1]
    kernel, in_shape = w.shape[2:], x.shape[2:]
    positions = math.prod(in_shape)
    weights = w.reshape(group, in_group, -1).transpose(0, 2, 1)  # (G, M/G * K, C/G)
    if group == 1:
        cols = xp.matmul(weights[0], x.reshape(n, in_group, positions))
    else:
        cols = xp.matmul(weights, x.reshape(n, group, in_group, positions))
    cols = cols.reshape((n, out_group * group) + tuple(kernel) + tuple(in_shape))
    return col2im(xp, cols, kernel, geo.strides, geo.dilations, geo.begins, out_shape)


@KERNELS.register("ConvTranspose", since=(1, 11, 22))
def conv_transpose(ctx: KernelContext) -> KernelRun:
    """ConvTranspose: the gradient of Conv, with output_padding / output_shape."""
    xp = ctx.xp
    attrs = conv_attrs(ctx)
    output_padding = ctx.attr("output_padding", None)
    output_shape = ctx.attr("output_shape", None)
    weights = derived(ctx, 1, widen)

    def run(x, w, bias=None):
        geo, shape = transpose_geometry(
            attrs,
            None if output_padding is None else list(output_padding),
            None if output_shape is None else list(output_shape),
            x.shape[2:],
            w.shape[2:],
        )
        y = transpose_convolve(xp, widen(x), weights(w), attrs.group, geo, shape)
        return (_add_bias(y, bias).astype(x.dtype, copy=False),)

    return run


@KERNELS.register("Col2Im", since=18)
def col2im_op(ctx: KernelContext) -> KernelRun:
    """Col2Im: rearrange column blocks (N, C*prod(block), L) into an image, summing overlaps."""
    xp = ctx.xp
    dilations_attr = ctx.attr("dilations", None)
    pads_attr = ctx.attr("pads", None)
    strides_attr = ctx.attr("strides", None)

    def run(x, image_shape, block_shape):
        image = [int(v) for v in np.asarray(image_shape).reshape(-1)]
        block = [int(v) for v in np.asarray(block_shape).reshape(-1)]
        rank = len(image)
        if len(block) != rank:
            raise ValueError(f"image_shape {image} and block_shape {block} differ in length")
        dilations = ints(dilations_attr, rank, 1)
        strides = ints(strides_attr, rank, 1)
        pads = ints(pads_attr, 2 * rank, 0)
        begins, ends = pads[:rank], pads[rank:]
        counts = [
            (i + b + e - (k - 1) * d - 1) // s + 1
            for i, b, e, k, d, s in zip(image, begins, ends, block, dilations, strides)
        ]
        kernel_size = math.prod(block)
        if x.ndim != 3 or x.shape[1] % kernel_size or x.shape[2] != math.prod(counts) or min(counts) < 1:
            raise ValueError(
                f"input {x.shape} does not hold blocks {block} sliding over {image} ({counts} blocks)"
            )
        if x.dtype.kind in "OUS":
            raise TypeError("Col2Im cannot sum string tensors")
        values = x.astype(np.uint8) if x.dtype == np.bool_ else widen(x)
        cols = values.reshape((x.shape[0], x.shape[1] // kernel_size) + tuple(block) + tuple(counts))
        y = col2im(xp, cols, block, strides, dilations, begins, image)
        return ((y != 0) if x.dtype == np.bool_ else y.astype(x.dtype, copy=False),)

    return run


# --- DeformConv ---------------------------------------------------------------------------


def _sample_multilinear(xp: Any, images: Any, positions: Any) -> Any:
    """Sample ``images`` (N, G, Cg, *in) at ``positions`` (N, G, D, Q): (N, G, Cg, Q).

    Multilinear interpolation over the D spatial axes; corners outside the image read zero
    (GridSample with align_corners=1 and zero padding).
    """
    n, g, cg = images.shape[:3]
    spatial = images.shape[3:]
    flat = images.reshape(n, g, cg, -1)
    lower = xp.floor(positions)
    frac = positions - lower
    lower = lower.astype(np.int64)
    axis_steps = [math.prod(spatial[a + 1 :]) for a in range(len(spatial))]
    total = None
    for corner in np.ndindex(*(2,) * len(spatial)):
        weight = None
        index = None
        inside = None
        for axis, bit in enumerate(corner):
            coord = lower[:, :, axis] + bit
            part = frac[:, :, axis] if bit else 1 - frac[:, :, axis]
            ok = (coord >= 0) & (coord < spatial[axis])
            weight = part if weight is None else weight * part
            inside = ok if inside is None else inside & ok
            term = xp.clip(coord, 0, spatial[axis] - 1) * axis_steps[axis]
            index = term if index is None else index + term
        weight = xp.where(inside, weight, 0).astype(images.dtype)
        values = xp.take_along_axis(flat, index[:, :, None, :], axis=3) * weight[:, :, None, :]
        total = values if total is None else total + values
    return total


def _deform_positions(
    xp: Any, offset: Any, kernel: Sequence[int], out_shape: Sequence[int], geo: Geometry, dtype: np.dtype
) -> Any:
    """Where each tap reads for each output position: (N, offset groups, D, K * P)."""
    n, rank = offset.shape[0], len(kernel)
    taps_count, positions_count = math.prod(kernel), math.prod(out_shape)
    starts = np.meshgrid(
        *[np.arange(o) * s - b for o, s, b in zip(out_shape, geo.strides, geo.begins)], indexing="ij"
    )
    tap_grid = np.array(taps(kernel), dtype=np.float64).reshape(taps_count, rank)
    base = np.stack(  # (K, D, P): the undeformed positions
        [tap_grid[:, a, None] * geo.dilations[a] + starts[a].reshape(1, -1) for a in range(rank)], axis=1
    ).astype(dtype)
    shifts = offset.astype(dtype, copy=False).reshape(n, -1, taps_count, rank, positions_count)
    positions = xp.asarray(base)[None, None] + shifts  # (N, OG, K, D, P)
    return positions.transpose(0, 1, 3, 2, 4).reshape(n, shifts.shape[1], rank, -1)


@KERNELS.register("DeformConv", since=(19, 22))
def deform_conv(ctx: KernelContext) -> KernelRun:
    """DeformConv: convolution whose taps read at learned offsets (multilinear sampling)."""
    xp = ctx.xp
    attrs = conv_attrs(ctx)
    offset_groups = int(ctx.attr("offset_group", 1))
    if offset_groups < 1:
        raise ctx.fail(f"offset_group must be positive, got {offset_groups}")

    def run(x, w, offset, bias=None, mask=None):
        _check_channels(x, w, attrs.group)
        n, channels = x.shape[:2]
        kernel = tuple(w.shape[2:])
        geo = conv_geometry(attrs, x.shape[2:], kernel)
        out_shape = tuple(offset.shape[2:])
        expected = tuple(
            (size + b + e - (k - 1) * d - 1) // s + 1
            for size, b, e, k, d, s in zip(x.shape[2:], geo.begins, geo.ends, kernel, geo.dilations, geo.strides)
        )
        taps_count, positions_count = math.prod(kernel), math.prod(out_shape)
        if (
            channels % offset_groups
            or out_shape != expected
            or offset.shape[:2] != (n, offset_groups * taps_count * len(kernel))
        ):
            raise ValueError(
                f"offset {offset.shape} does not fit input {x.shape}, kernel {kernel}, offset_group {offset_groups}"
            )
        values = widen(x)
        positions = _deform_positions(xp, offset, kernel, out_shape, geo, values.dtype)
        images = values.reshape((n, offset_groups, channels // offset_groups) + x.shape[2:])
        sampled = _sample_multilinear(xp, images, positions)
        sampled = sampled.reshape(n, offset_groups, -1, taps_count, positions_count)
        if mask is not None:
            weights = mask.astype(values.dtype, copy=False)
            sampled = sampled * weights.reshape(n, offset_groups, 1, taps_count, positions_count)
        group, in_group = attrs.group, channels // attrs.group
        cols = sampled.reshape(n, group, in_group * taps_count, positions_count)
        kernels = widen(w).reshape(group, w.shape[0] // group, -1)
        y = xp.matmul(kernels, cols).reshape((n, w.shape[0]) + out_shape)
        return (_add_bias(y, bias).astype(x.dtype, copy=False),)

    return run


# --- CausalConvWithState ------------------------------------------------------------------


@KERNELS.register("CausalConvWithState", since=27)
def causal_conv_with_state(ctx: KernelContext) -> KernelRun:
    """CausalConvWithState: a depthwise causal 1-D convolution carrying its last k-1 inputs."""
    xp = ctx.xp
    activation = ctx.attr("activation", "none")
    if isinstance(activation, bytes):
        activation = activation.decode()
    if activation not in ("none", "silu", "swish"):
        raise ctx.fail(f"unsupported activation {activation!r}")

    def run(x, w, bias=None, past_state=None):
        if x.ndim != 3 or w.ndim != 3 or w.shape[:2] != (x.shape[1], 1):
            raise ValueError(f"input {x.shape} and weight {w.shape} do not fit a depthwise 1-D convolution")
        n, channels, length = x.shape
        k = w.shape[2]
        if past_state is None:
            history = xp.zeros((n, channels, k - 1), dtype=x.dtype)
        elif past_state.shape != (n, channels, k - 1):
            raise ValueError(f"past_state shape {past_state.shape} is not {(n, channels, k - 1)}")
        else:
            history = past_state
        padded = xp.concatenate([history, x], axis=2)
        values, weights = widen(padded), widen(w)
        y = xp.zeros((n, channels, length), dtype=values.dtype)
        for tap in range(k):
            y += values[:, :, tap : tap + length] * weights[:, 0, tap, None]
        if bias is not None:
            y += widen(bias)[:, None]
        if activation != "none":
            y = y / (1 + xp.exp(-y))
        present = xp.ascontiguousarray(padded[:, :, padded.shape[2] - (k - 1) :])
        return (y.astype(x.dtype, copy=False), present)

    return run
