"""Channels-last convolutions: ``ronn::FusedConv`` with ``channels_last`` set.

The optimizer's layout pass (``ronn.optimizer.layout``) keeps runs of convolutions and the
elementwise operators between them in (N, H, W, C) order. Then

* a depthwise convolution is one direct numba kernel whose inner loops run over contiguous
  channels (:mod:`ronn_cpu.jit.channels_last`), bias, residual and activation included;
* a 1x1 convolution is one GEMM ``(N*H*W, C) @ (C, M)`` into the output, the weight
  transposed once;
* any other convolution of one group gathers its taps with an im2col whose rows are
  contiguous runs of channels, then runs one GEMM per band of output rows;
* the epilogue (bias, residual, activation) is one numba pass over the GEMM's output.

``channels_last=2`` marks the convolution that enters a region: X is still (N, C, H, W), the
output channels-last. A dense convolution reads its taps from the NCHW input directly (the
stem of a CNN: no transposed copy of the image): a small one (few taps per pixel and output
channels, as a stem has) is one native kernel that computes each output pixel's channels from its
taps, epilogue included (``stem``; no columns, no skinny GEMM), a larger one gathers its columns
with an NCHW im2col; the others transpose X first.
Grouped convolutions that are not depthwise, and types numba does not compute, run the numpy
reference between transposes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ronn.kernel import KernelContext

from ..jit import load, parallel
from ._conv import conv_attrs, conv_geometry, convolve, scratch
from ._nn_common import compute_dtype, widen

_FAST = (np.dtype(np.float32), np.dtype(np.float64))
#: the activations the numba kernels apply themselves: the piecewise-linear ones
_PIECEWISE_LINEAR = (None, "Relu", "LeakyRelu", "Clip", "HardSigmoid", "HardSwish")
_params_cache: dict[tuple[Any, ...], np.ndarray] = {}  # store_params' results
#: 1x1 products (rows x depth x outputs) up to this size skip BLAS; rows up to _FEW_ROWS always do
_SMALL_PRODUCT = 1 << 15
_FEW_ROWS = 4
#: the epilogue's bias is tiled to at least this many elements, so its loops run long
_TILE = 512
#: bytes of im2col columns gathered at a time
_COLUMNS_BUDGET = 1 << 20
#: a convolution of one group from an NCHW image (1x1 ones included) with (taps per pixel C * kh * kw,
#: output channels) within one of these runs the direct stem kernel; the im2col (or transposed copy)
#: and GEMM path catches up past them (more output channels: the GEMM's blocks fill better)
_STEM_LIMITS = ((576, 32), (160, 64), (72, 128))


def store_params(activation: str | None, alpha: float, beta: float, dtype: np.dtype) -> np.ndarray:
    """(p, q, lo, hi, r, mul) of the numba epilogue: ``g = clip(p * v + q, lo, hi)``, then
    ``(v * g if mul else g) + r * min(v, 0)``; an activation it cannot express (Sigmoid, Tanh,
    Gelu) gives the identity, applied afterwards by the caller."""
    key = (activation, alpha, beta, dtype)
    value = _params_cache.get(key)
    if value is not None:
        return value
    inf = np.inf
    p, q, lo, hi, r, mul = {
        "Relu": (1.0, 0.0, 0.0, inf, 0.0, 0.0),
        "LeakyRelu": (1.0, 0.0, 0.0, inf, alpha, 0.0),
        "Clip": (1.0, 0.0, alpha, beta, 0.0, 0.0),
        "HardSigmoid": (alpha, beta, 0.0, 1.0, 0.0, 0.0),
        "HardSwish": (1.0 / 6.0, 0.5, 0.0, 1.0, 0.0, 1.0),
    }.get(activation, (1.0, 0.0, -inf, inf, 0.0, 0.0))
    value = np.array([p, q, lo, hi, r, mul], dtype=dtype)
    if len(_params_cache) > 256:
        _params_cache.clear()
    _params_cache[key] = value
    return value


_module: Any = None


def _jit() -> Any:
    global _module
    if _module is None:
        _module = load("channels_last")
    return _module


@dataclass(frozen=True)
class _Plan:
    """How one input shape runs: ``execute(x, w, tiled, res, y)`` fills y (None: the numpy
    reference computes it)."""

    execute: Any
    out_shape: tuple[int, ...]  # (N, OH, OW, M)
    work: np.dtype


class ChannelsLastConv:
    """A channels-last convolution prepared at session creation (see the module docstring).

    ``ChannelsLastConv(ctx, activation=..., alpha=..., beta=..., nchw_input=...)`` reads the
    node's Conv attributes; calling it with ``(x, w, bias=None, residual=None)`` returns
    ``act(conv(x, w) + bias + residual)`` as (N, OH, OW, M). ``activation`` is one of
    ``_epilogue.ACTIVATIONS``.
    """

    def __init__(
        self,
        ctx: KernelContext,
        *,
        activation: str | None = None,
        alpha: float = 0.01,
        beta: float = 0.0,
        nchw_input: bool = False,
    ) -> None:
        from ._epilogue import ACTIVATIONS

        if activation not in ACTIVATIONS:
            raise ctx.fail(f"unsupported fused activation {activation!r}")
        self.attrs = conv_attrs(ctx)
        self.activation = activation
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.nchw_input = nchw_input
        self._after = activation not in _PIECEWISE_LINEAR  # Sigmoid, Tanh, Gelu: applied after
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        # the last weight and bias seen and their prepared forms (the constant ones, usually);
        # a tuple each, replaced whole, so concurrent runs never see half an update
        self._weight_entry: tuple[Any, np.dtype | None, Any] = (None, None, None)
        self._bias_entry: tuple[Any, np.dtype | None, Any] = (None, None, None)
        weight = ctx.constant(1)
        if isinstance(weight, np.ndarray) and weight.ndim == 4 and compute_dtype(weight.dtype) in _FAST:
            work = compute_dtype(weight.dtype)
            self._prepared_weight(weight, work)
            bias = ctx.constant(2)
            if bias is None or isinstance(bias, np.ndarray):
                self._tiled_bias(bias, weight.shape[0], work)

    # --- prepared operands -------------------------------------------------------------

    def _layout(self, w: Any) -> str:
        """How the weight is laid out for the kernels: by the node's geometry, fixed."""
        group = self.attrs.group
        if group > 1:
            return "depthwise" if w.shape[1] == 1 and w.shape[0] == group else "reference"
        return "dense_nchw" if self.nchw_input else "dense"

    def _prepared_weight(self, w: np.ndarray, work: np.dtype) -> Any:
        """The weight laid out for the kernels, prepared once per weight array and dtype."""
        source, dtype, prepared = self._weight_entry
        if source is w and dtype == work:
            return prepared
        m, c, kh, kw = w.shape
        values = w.astype(work, copy=False)
        layout = self._layout(w)
        if layout == "depthwise":  # (kh, kw, M)
            prepared = np.ascontiguousarray(values.reshape(m, kh, kw).transpose(1, 2, 0))
        elif layout == "dense_nchw":  # rows (c, i, j), as the NCHW im2col gathers them
            prepared = np.ascontiguousarray(values.reshape(m, c * kh * kw).T)
        elif layout == "dense":  # rows (i, j, c), as the NHWC im2col gathers them (1x1: (C, M))
            prepared = np.ascontiguousarray(values.transpose(2, 3, 1, 0).reshape(kh * kw * c, m))
        else:
            prepared = None
        self._weight_entry = (w, work, prepared)
        return prepared

    def _tiled_bias(self, bias: Any, channels: int, work: np.dtype) -> np.ndarray:
        """The bias (zeros when absent) repeated to at least ``_TILE`` elements."""
        source, dtype, tiled = self._bias_entry
        if source is bias and dtype == work and tiled.shape[0] % max(channels, 1) == 0:
            return tiled
        if bias is None:
            values = np.zeros(channels, work)
        else:
            if bias.shape != (channels,):
                raise ValueError(f"bias shape {bias.shape} does not match {channels} output channels")
            values = bias.astype(work)
        tiled = np.tile(values, max(1, -(-_TILE // max(channels, 1))))
        self._bias_entry = (bias, work, tiled)
        return tiled

    # --- running -----------------------------------------------------------------------

    def __call__(self, x: Any, w: Any, bias: Any = None, residual: Any = None) -> Any:
        plan = self._plans.get((x.shape, w.shape, x.dtype))
        if plan is None:
            plan = self._plan(x, w)
        execute = plan.execute
        if execute is None:
            return self._reference(x, w, bias, residual)
        work = plan.work
        values = x if x.dtype == work and x.flags.c_contiguous else np.ascontiguousarray(x, dtype=work)
        res = None
        if residual is not None:
            if residual.shape == plan.out_shape:
                res = residual if residual.dtype == work and residual.flags.c_contiguous else (
                    np.ascontiguousarray(residual, dtype=work))
            elif np.broadcast_shapes(residual.shape, plan.out_shape) != plan.out_shape:
                return self._reference(x, w, bias, residual)  # the residual widens the result
            else:
                res = np.ascontiguousarray(np.broadcast_to(residual, plan.out_shape), dtype=work)
        y = np.empty(plan.out_shape, work)
        execute(values, self._prepared_weight(w, work), self._tiled_bias(bias, w.shape[0], work), res, y)
        if self._after:
            from ._epilogue import epilogue

            y = epilogue(y.reshape(-1, y.shape[-1]), activation=self.activation).reshape(y.shape)
        return y if y.dtype == x.dtype else y.astype(x.dtype)

    def _reference(self, x: Any, w: Any, bias: Any, residual: Any) -> Any:
        """The numpy convolution between transposes (any group, any float type)."""
        from ._epilogue import epilogue_numpy

        nchw = x if self.nchw_input else x.transpose(0, 3, 1, 2)
        geo = conv_geometry(self.attrs, nchw.shape[2:], w.shape[2:])
        y = convolve(np, widen(nchw), widen(w), self.attrs.group, geo)
        if bias is not None:
            if bias.shape != (w.shape[0],):
                raise ValueError(f"bias shape {bias.shape} does not match {w.shape[0]} output channels")
            y = y + widen(bias).reshape(-1, 1, 1).astype(y.dtype, copy=False)
        y = np.ascontiguousarray(y.transpose(0, 2, 3, 1))
        if residual is not None:
            y = y + widen(residual)
        y = epilogue_numpy(y, activation=self.activation, alpha=self.alpha, beta=self.beta)
        return y.astype(x.dtype, copy=False)

    # --- planning, once per input shape --------------------------------------------------

    def _plan(self, x: Any, w: Any) -> _Plan:
        if x.ndim != 4 or w.ndim != 4:
            raise ValueError(f"a channels-last convolution needs 4-D input and weight, got {x.shape} and {w.shape}")
        n = x.shape[0]
        channels, spatial = (x.shape[1], x.shape[2:]) if self.nchw_input else (x.shape[3], x.shape[1:3])
        out_channels, group = w.shape[0], self.attrs.group
        if channels % group or out_channels % group or w.shape[1] * group != channels:
            raise ValueError(f"{channels} input channels, weight {tuple(w.shape)} and group {group} do not match")
        geo = conv_geometry(self.attrs, spatial, w.shape[2:])
        kh, kw = w.shape[2:]
        out_spatial = tuple(
            (size + b + e - ((k - 1) * d + 1)) // s + 1
            for size, k, s, d, b, e in zip(spatial, (kh, kw), geo.strides, geo.dilations, geo.begins, geo.ends)
        )
        if any(o < 1 for o in out_spatial):
            raise ValueError(f"the kernel {(kh, kw)} does not fit the padded input of {x.shape}")
        out_shape = (n,) + out_spatial + (out_channels,)
        work = compute_dtype(x.dtype)
        layout = self._layout(w)
        execute = None
        if work in _FAST and isinstance(x, np.ndarray) and all(out_shape) and layout != "reference":
            params = store_params(self.activation, self.alpha, self.beta, work)
            geometry = (kh, kw, *geo.strides, *geo.dilations, *geo.begins)
            depth = channels * kh * kw
            if layout == "depthwise":
                execute = self._depthwise(geometry, params, parallel(math.prod(out_shape) * kh * kw // 4))
            elif self.nchw_input and any(depth <= d and out_channels <= m for d, m in _STEM_LIMITS):
                execute = self._stem(geometry, params, parallel(math.prod(out_shape) * depth // 16))
            if execute is None and layout != "depthwise":
                if (kh, kw) == (1, 1) and not any(geo.begins) and not any(geo.ends):
                    execute = self._pointwise(geometry, params, out_shape, channels, parallel(math.prod(out_shape)))
                else:
                    execute = self._dense(geometry, params, out_shape, work, parallel(math.prod(out_shape)))
        plan = _Plan(execute, out_shape, work)
        if len(self._plans) > 32:
            self._plans.clear()
        self._plans[(x.shape, w.shape, x.dtype)] = plan
        return plan

    def _depthwise(self, geometry: tuple[int, ...], params: np.ndarray, wide: bool) -> Any:
        module = _jit()
        _, _, sh, sw, dh, dw, ph, pw = geometry
        kernel = module.depthwise_par if wide else module.depthwise
        nchw_input = self.nchw_input

        def execute(x: np.ndarray, w: np.ndarray, tiled: np.ndarray, res: Any, y: np.ndarray) -> None:
            if nchw_input:
                x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            if res is None:
                kernel(x, w, tiled, y, False, y, sh, sw, dh, dw, ph, pw, params)
            else:
                kernel(x, w, tiled, res, True, y, sh, sw, dh, dw, ph, pw, params)

        return execute

    def _pointwise(self, geometry: tuple[int, ...], params: np.ndarray, out_shape: tuple[int, ...],
                   channels: int, wide: bool) -> Any:  # fmt: skip
        module = _jit()
        _, _, sh, sw, _, _, _, _ = geometry
        n, oh, ow, out_channels = out_shape
        rows = n * oh * ow
        subsample = (sh, sw) != (1, 1)
        nchw_input = self.nchw_input
        small = rows <= _FEW_ROWS or rows * channels * out_channels <= _SMALL_PRODUCT
        gemm, finish = module.gemm, (module.finish_par if wide else module.finish)
        matmul = np.matmul

        def execute(x: np.ndarray, w: np.ndarray, tiled: np.ndarray, res: Any, y: np.ndarray) -> None:
            if nchw_input:
                x = x.transpose(0, 2, 3, 1)
            if subsample:
                x = x[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]
            if not x.flags.c_contiguous:
                x = np.ascontiguousarray(x)
            out = y.reshape(rows, out_channels)
            if small:
                if res is None:
                    gemm(x.reshape(rows, channels), w, tiled, out, False, out, params)
                else:
                    gemm(x.reshape(rows, channels), w, tiled, res.reshape(rows, out_channels), True, out, params)
                return
            matmul(x.reshape(rows, channels), w, out=out)
            flat = y.reshape(-1)
            if res is None:
                finish(flat, tiled, flat, False, params)
            else:
                finish(flat, tiled, res.reshape(-1), True, params)

        return execute

    def _stem(self, geometry: tuple[int, ...], params: np.ndarray, wide: bool) -> Any:
        """A small dense convolution from the NCHW image (a CNN's stem): one C kernel computes the
        output pixels' channels from their taps directly, epilogue included (no im2col columns,
        no skinny GEMM). The numba modules have no such kernel: the im2col path instead."""
        module = _jit()
        kernel = getattr(module, "stem_par" if wide else "stem", None)
        if kernel is None:
            return None
        kh, kw, sh, sw, dh, dw, ph, pw = geometry

        def execute(x: np.ndarray, w: np.ndarray, tiled: np.ndarray, res: Any, y: np.ndarray) -> None:
            if res is None:
                kernel(x, w, tiled, y, False, y, kh, kw, sh, sw, dh, dw, ph, pw, params)
            else:
                kernel(x, w, tiled, res, True, y, kh, kw, sh, sw, dh, dw, ph, pw, params)

        return execute

    def _dense(self, geometry: tuple[int, ...], params: np.ndarray, out_shape: tuple[int, ...], work: np.dtype,
               wide: bool) -> Any:  # fmt: skip
        module = _jit()
        kh, kw, sh, sw, dh, dw, ph, pw = geometry
        n, oh, ow, out_channels = out_shape
        finish = module.finish_par if wide else module.finish
        nchw = self.nchw_input
        fill = load("conv").im2col_rows if nchw else module.im2col

        def execute(x: np.ndarray, w: np.ndarray, tiled: np.ndarray, res: Any, y: np.ndarray) -> None:
            depth = w.shape[0]
            band = max(1, min(oh, _COLUMNS_BUDGET // max(1, depth * ow * work.itemsize)))
            out = y.reshape(n, oh * ow, out_channels)
            for image in range(n):
                for start in range(0, oh, band):
                    stop = min(oh, start + band)
                    count = (stop - start) * ow
                    if nchw:
                        cols = scratch(depth * count, work).reshape(depth, count)
                        fill(x[image], cols, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, start, stop)
                        np.matmul(cols.T, w, out=out[image, start * ow : stop * ow])
                    else:
                        cols = scratch(depth * count, work).reshape(count, depth)
                        fill(x, cols, image, start, stop, kh, kw, sh, sw, dh, dw, ph, pw)
                        np.matmul(cols, w, out=out[image, start * ow : stop * ow])
            flat = y.reshape(-1)
            finish(flat, tiled, flat if res is None else res.reshape(-1), res is not None, params)

        return execute


class SqueezeExcitation:
    """``ronn::SqueezeExcitation`` over channels-last X (N, H, W, C): the mean over pixels, two
    1x1 convolutions with their activations, and X scaled by the gate, in one numba kernel
    (activations other than those the kernel applies: numpy for the small products)."""

    def __init__(self, first: tuple[str | None, float, float], gate: tuple[str | None, float, float]) -> None:
        from ._epilogue import ACTIVATIONS

        for name, _, _ in (first, gate):
            if name not in ACTIVATIONS:
                raise ValueError(f"unsupported squeeze-and-excitation activation {name!r}")
        self.first = first
        self.gate = gate
        self._numba = first[0] in _PIECEWISE_LINEAR and gate[0] in _PIECEWISE_LINEAR
        self._prepared: dict[tuple[int, ...], tuple[Any, ...]] = {}

    def _operands(self, w1: Any, b1: Any, w2: Any, b2: Any, work: np.dtype) -> tuple[Any, ...]:
        key = (id(w1), id(b1), id(w2), id(b2), id(work))
        entry = self._prepared.get(key)
        if entry is not None and entry[0] is w1 and entry[1] is b1 and entry[2] is w2 and entry[3] is b2:
            return entry[4:]
        hidden, channels = w1.shape[:2]
        if w1.shape[2:] != (1, 1) or w2.shape != (channels, hidden, 1, 1):
            raise ValueError(f"squeeze-and-excitation weights {w1.shape} and {w2.shape} do not fit")
        first = np.ascontiguousarray(w1.reshape(hidden, channels).T, dtype=work)  # (C, C1)
        second = np.ascontiguousarray(w2.reshape(channels, hidden).T, dtype=work)  # (C1, C)
        shift1 = np.zeros(hidden, work) if b1 is None else np.ascontiguousarray(b1.reshape(-1), dtype=work)
        shift2 = np.zeros(channels, work) if b2 is None else np.ascontiguousarray(b2.reshape(-1), dtype=work)
        if shift1.shape != (hidden,) or shift2.shape != (channels,):
            raise ValueError("squeeze-and-excitation biases do not match the weights")
        if len(self._prepared) > 8:
            self._prepared.clear()
        self._prepared[key] = (w1, b1, w2, b2, first, shift1, second, shift2)
        return first, shift1, second, shift2

    def __call__(self, x: Any, w1: Any, b1: Any, w2: Any, b2: Any) -> Any:
        from ._epilogue import epilogue_numpy

        if x.ndim != 4 or x.shape[3] != w1.shape[1]:
            raise ValueError(f"input {x.shape} does not fit weights {w1.shape}")
        work = compute_dtype(x.dtype)
        first, shift1, second, shift2 = self._operands(w1, b1, w2, b2, work)
        values = np.ascontiguousarray(x, dtype=work)
        n, h, w, c = values.shape
        flat = values.reshape(n, h * w, c)
        if self._numba and work in _FAST and values.size:
            y = np.empty_like(values)
            _jit().squeeze_excitation(
                values.reshape(n, -1), first, shift1, second, shift2, y.reshape(n, -1),
                store_params(*self.first, work), store_params(*self.gate, work),
            )  # fmt: skip
        else:
            mean = flat.mean(axis=1, dtype=np.float64).astype(work)
            hidden = epilogue_numpy(mean @ first + shift1, activation=self.first[0], alpha=self.first[1],
                                    beta=self.first[2])  # fmt: skip
            gate = epilogue_numpy(hidden @ second + shift2, activation=self.gate[0], alpha=self.gate[1],
                                  beta=self.gate[2])  # fmt: skip
            y = values * gate.reshape(n, 1, 1, c)
        return y if y.dtype == x.dtype else y.astype(x.dtype)
