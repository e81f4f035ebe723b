"""Linear quantization: QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear math.

Scales and zero points are per tensor (a scalar or one element), per axis (1-D, the length
of ``axis``) or blocked (the input's rank, ``ceil(D / block_size)`` along ``axis``).
"""

from __future__ import annotations

import numpy as np

from . import _cast


def is_quantized_type(dtype: np.dtype) -> bool:
    """Whether QuantizeLinear can produce ``dtype``: an integer of 16 bits or fewer, or a float
    of 8 bits or fewer."""
    if _cast.is_integer(dtype):
        return _cast.bit_width(dtype) <= 16
    return dtype in _cast.NARROW_FLOATS and dtype not in (_cast.BFLOAT16, _cast.E8M0)


def broadcast_param(param: np.ndarray, shape: tuple[int, ...], axis: int, block_size: int) -> np.ndarray:
    """A scale or zero point shaped to broadcast against an input of ``shape``."""
    if param.size == 1:
        return param.reshape(())
    rank = len(shape)
    if rank == 0:
        raise ValueError(f"a scale of shape {param.shape} cannot apply to a scalar input")
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for an input of rank {rank}")
    axis %= rank
    if block_size <= 0:
        if param.ndim != 1 or param.shape[0] != shape[axis]:
            raise ValueError(
                f"per-axis scale of shape {param.shape} does not match input dimension "
                f"{shape[axis]} on axis {axis}"
            )
        dims = [1] * rank
        dims[axis] = param.shape[0]
        return param.reshape(dims)
    if param.ndim != rank:
        raise ValueError(f"blocked scale of shape {param.shape} must have the input's rank {rank}")
    blocks = -(-shape[axis] // block_size)
    expected = tuple(blocks if i == axis else d for i, d in enumerate(shape))
    if param.shape != expected:
        raise ValueError(
            f"blocked scale of shape {param.shape} does not fit input {tuple(shape)} with "
            f"block_size {block_size} on axis {axis} (expected {expected})"
        )
    repeated = np.repeat(param, block_size, axis=axis)
    if repeated.shape[axis] != shape[axis]:  # the last block is partial
        repeated = np.take(repeated, np.arange(shape[axis]), axis=axis)
    return repeated


def _as_float(value: np.ndarray) -> np.ndarray:
    """Narrow float or integer values as float32 (float64 stays float64)."""
    if value.dtype == np.float64:
        return value
    return _cast.astype(value, np.dtype(np.float32))


def _division_dtype(scale_dtype: np.dtype) -> np.dtype:
    """The precision of ``x / scale``: the scale's float type (float32 for e8m0 scales)."""
    if scale_dtype == _cast.E8M0:
        return np.dtype(np.float32)
    if _cast.is_floating(scale_dtype):
        return scale_dtype
    return np.dtype(np.float64)


def quantize(
    x: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | None,
    out_dtype: np.dtype,
    *,
    axis: int = 1,
    block_size: int = 0,
    saturate: bool = True,
    precision: np.dtype | None = None,
) -> np.ndarray:
    """``saturate(round_half_even(x / scale) + zero_point)`` in ``out_dtype``."""
    scale = broadcast_param(scale, x.shape, axis, block_size)
    work = precision if precision is not None else _division_dtype(scale.dtype)
    with np.errstate(all="ignore"):
        ratio = _as_float(np.asarray(_cast.astype(x, work) / _cast.astype(scale, work)))
    zero = None
    if zero_point is not None:
        zero = _as_float(broadcast_param(zero_point, x.shape, axis, block_size))
    with np.errstate(all="ignore"):
        if _cast.is_integer(out_dtype):
            low, high = _cast.integer_range(out_dtype)
            rounded = np.rint(ratio)
            if zero is not None:
                rounded = rounded + zero
            return np.clip(rounded, low, high).astype(out_dtype)
        if zero is not None:
            ratio = ratio + zero
        return _cast.cast_numeric(ratio, out_dtype, saturate=saturate)


def dequantize(
    x: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | None,
    out_dtype: np.dtype,
    *,
    axis: int = 1,
    block_size: int = 0,
) -> np.ndarray:
    """``(x - zero_point) * scale`` in ``out_dtype``."""
    if zero_point is not None and _cast.is_integer(x.dtype):
        zero = broadcast_param(zero_point, x.shape, axis, block_size)
        shifted = _cast.astype(x, np.dtype(np.int64)) - _cast.astype(zero, np.dtype(np.int64))
        values = shifted.astype(np.float32)
    else:
        values = _as_float(x)
        if zero_point is not None:
            values = values - _as_float(broadcast_param(zero_point, x.shape, axis, block_size))
    product = values * _as_float(broadcast_param(scale, x.shape, axis, block_size))
    return _cast.astype(np.asarray(product), out_dtype)


def dynamic_quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 quantization of ``x`` over a range [min(x, 0), max(x, 0)] (NaN ignored)."""
    values = x.astype(np.float32)
    finite = values[~np.isnan(values)]
    high = np.float32(max(float(finite.max()), 0.0) if finite.size else 0.0)
    low = np.float32(min(float(finite.min()), 0.0) if finite.size else 0.0)
    scale = np.float32(1.0) if high == low else np.float32((high - low) / np.float32(255))
    zero = np.float32(np.rint(np.clip(np.float32(0) - low / scale, 0, 255)))
    with np.errstate(all="ignore"):
        y = np.clip(np.rint(values / scale) + zero, 0, 255).astype(np.uint8)
    return y, np.asarray(scale, dtype=x.dtype), np.asarray(zero, dtype=np.uint8)
