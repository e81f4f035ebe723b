"""Fused epilogues: bias, residual and activation applied to a fresh output in one pass.

``epilogue(y, bias=..., residual=..., activation=...)`` computes ``act(y + bias + residual)``
where ``bias`` holds one value per channel (axis 1: NCHW channels, or the columns of a 2-D
Gemm output) and ``residual`` has ``y``'s shape (or broadcasts to it). ``y`` must be freshly
allocated by the caller: it may be overwritten and returned.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..jit import parallel

#: Gelu is the exact (erf) form, GeluTanh the tanh approximation
ACTIVATIONS = (
    None, "Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu", "GeluTanh",
)  # fmt: skip


def _activate_numpy(y: np.ndarray, activation: str | None, alpha: float, beta: float) -> np.ndarray:
    """The activation applied in place where numpy allows (``y`` is a fresh float array)."""
    if activation is None:
        return y
    if activation == "Relu":
        return np.maximum(y, 0, out=y)
    if activation == "LeakyRelu":
        scaled = y * y.dtype.type(alpha)
        return np.maximum(y, scaled, out=y) if alpha <= 1 else np.minimum(y, scaled, out=y)
    if activation == "Clip":
        np.maximum(y, y.dtype.type(alpha), out=y)
        return np.minimum(y, y.dtype.type(beta), out=y)
    if activation == "Sigmoid":
        with np.errstate(over="ignore"):
            np.negative(y, out=y)
            np.exp(y, out=y)
        y += 1
        return np.reciprocal(y, out=y)
    if activation == "HardSigmoid":
        y *= y.dtype.type(alpha)
        y += y.dtype.type(beta)
        return np.clip(y, 0, 1, out=y)
    if activation == "HardSwish":
        gate = y * y.dtype.type(1 / 6)
        gate += y.dtype.type(0.5)
        np.clip(gate, 0, 1, out=gate)
        y *= gate
        return y
    if activation == "Tanh":
        return np.tanh(y, out=y)
    if activation in ("Gelu", "GeluTanh"):
        from .elementwise import gelu_values

        return gelu_values(y, activation == "GeluTanh")
    raise ValueError(f"unsupported epilogue activation {activation!r}")


def epilogue_numpy(
    y: np.ndarray,
    *,
    bias: Any = None,
    activation: str | None = None,
    alpha: float = 0.01,
    beta: float = 0.0,
    residual: Any = None,
) -> np.ndarray:
    """The reference: separate numpy passes (any float dtype, any broadcastable residual)."""
    if not y.flags.writeable:
        y = y.copy()
    with np.errstate(all="ignore"):
        if bias is not None:
            b = np.asarray(bias).astype(y.dtype, copy=False).reshape(-1)
            if y.ndim >= 2:
                y += b.reshape((1, -1) + (1,) * (y.ndim - 2))
            else:
                y += b
        if residual is not None:
            y += np.asarray(residual).astype(y.dtype, copy=False)
        return _activate_numpy(y, activation, alpha, beta)


_F32 = np.dtype(np.float32)
_FAST = (_F32, np.dtype(np.float64))
_constants: dict[tuple[int, np.dtype], tuple[np.ndarray, np.ndarray]] = {}
_params: dict[tuple[np.dtype, float, float], np.ndarray] = {}
_module: Any = None  # ronn_cpu.jit.epilogue, once loaded
_COSTLY = ("Sigmoid", "Tanh", "Gelu", "GeluTanh")  # more math per element: a second thread pays sooner
#: in float64 these run as numpy passes (the numba fits are float32-accurate)
_FLOAT32_ONLY = ("Tanh", "Gelu", "GeluTanh")


def _jit() -> Any:
    global _module
    if _module is None:
        from ..jit import load

        _module = load("epilogue")
    return _module


def unit_scale(channels: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ones and zeros of ``dtype`` (shared: never write to them)."""
    key = (channels, dtype)
    pair = _constants.get(key)
    if pair is None:
        pair = _constants[key] = (np.ones(channels, dtype), np.zeros(channels, dtype))
    return pair


def kernel_params(dtype: np.dtype, alpha: float, beta: float) -> np.ndarray:
    """The constants a fused kernel reads (alpha, beta, 0, 1, 1/6, 1/2) in ``dtype``."""
    key = (dtype, alpha, beta)
    value = _params.get(key)
    if value is None:
        if len(_params) > 256:
            _params.clear()
        value = _params[key] = np.array([alpha, beta, 0.0, 1.0, 1.0 / 6.0, 0.5], dtype=dtype)
    return value


def affine(
    src: np.ndarray,
    dst: np.ndarray,
    scale: np.ndarray | None,
    shift: np.ndarray | None,
    *,
    activation: str | None = None,
    alpha: float = 0.01,
    beta: float = 0.0,
    residual: np.ndarray | None = None,
) -> np.ndarray:
    """``dst = act(src * scale + shift + residual)`` in one numba pass, per channel (axis 1).

    ``src``/``dst``/``residual``: C-contiguous float32 or float64 arrays of one shape and dtype
    (``dst`` may be ``src``); ``scale``/``shift``: contiguous 1-D arrays of that dtype with one
    value per channel, or None. The caller checks these; :func:`epilogue` is the checked entry.
    """
    size = src.size
    if size == 0:
        return dst
    dtype = src.dtype
    entry = _entries.get((activation, alpha, beta, dtype))
    if entry is None:
        entry = _entry(activation, alpha, beta, dtype)
    bias_serial, bias_wide, affine_serial, affine_wide, constants, costly = entry
    channels = src.shape[1] if src.ndim >= 2 else 1
    inner = size // (src.shape[0] * channels) if src.ndim >= 2 else size
    wide = size >= _WIDE_AT and parallel(size * 16 if costly else size)
    flat = dst.reshape(-1)
    has_res = residual is not None
    res = residual.reshape(-1) if has_res else flat
    if src is dst and scale is None:
        if shift is None:
            shift = unit_scale(channels, dtype)[1]
        (bias_wide if wide else bias_serial)(flat, shift, res, has_res, channels, inner, constants)
        return dst
    if scale is None or shift is None:
        ones, zeros = unit_scale(channels, dtype)
        scale = ones if scale is None else scale
        shift = zeros if shift is None else shift
    if src is dst:  # the loops only vectorise over distinct arrays
        src = src.copy()
    kernel = affine_wide if wide else affine_serial
    kernel(src.reshape(-1), flat, scale, shift, res, has_res, channels, inner, constants)
    return dst


#: (activation, alpha, beta, dtype) -> the kernels and constants ``affine`` calls
_entries: dict[tuple[Any, ...], tuple[Any, ...]] = {}
#: below this size no variant runs in parallel (saves asking)
_WIDE_AT = 1 << 16


def _entry(activation: str | None, alpha: float, beta: float, dtype: np.dtype) -> tuple[Any, ...]:
    module = _module or _jit()
    kind = module.KINDS[activation]
    entry = (
        module.BIAS[kind], module.BIAS_PAR[kind], module.AFFINE[kind], module.AFFINE_PAR[kind],
        kernel_params(dtype, alpha, beta), activation in _COSTLY,
    )  # fmt: skip
    if len(_entries) > 256:
        _entries.clear()
    _entries[(activation, alpha, beta, dtype)] = entry
    return entry


def _per_channel(value: Any, channels: int, dtype: np.dtype) -> np.ndarray | None:
    """A bias as a contiguous 1-D array of ``channels`` values, or None when it is not one."""
    array = np.asarray(value)
    if array.size != channels or array.size == 0:
        return None
    return np.ascontiguousarray(array.reshape(-1), dtype=dtype)


def epilogue(
    y: np.ndarray,
    *,
    bias: Any = None,
    activation: str | None = None,
    alpha: float = 0.01,
    beta: float = 0.0,
    residual: Any = None,
) -> np.ndarray:
    """``activation(y + bias + residual)``, written into ``y`` when it can be (``y`` is fresh).

    ``bias`` holds one value per channel (axis 1; the columns of a 2-D output); ``residual``
    has ``y``'s shape or broadcasts to it. float32 and float64 outputs of the usual layouts
    take one numba pass; anything else runs as numpy passes.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unsupported epilogue activation {activation!r}")
    if activation is None and residual is None:
        if bias is None:
            return y
        if (
            y.ndim == 2 and bias.__class__ is np.ndarray and bias.shape == (y.shape[1],) and bias.dtype == y.dtype
            and y.flags.writeable
        ):  # fmt: skip
            # a bias alone over columns: numpy's in-place add is one pass, and cheaper to call
            y += bias
            return y
    dtype = y.dtype
    if (
        (dtype == _F32 or dtype in _FAST and activation not in _FLOAT32_ONLY)
        and y.ndim >= 2
        and y.size
        and y.flags.c_contiguous
        and y.flags.writeable
        and (residual is None or getattr(residual, "shape", None) == y.shape)
    ):
        shift = None
        if bias is not None:
            if (
                bias.__class__ is np.ndarray and bias.ndim == 1 and bias.dtype == dtype
                and bias.shape[0] == y.shape[1] and bias.flags.c_contiguous
            ):  # fmt: skip
                shift = bias
            else:
                shift = _per_channel(bias, y.shape[1], dtype)
        if bias is None or shift is not None:
            if residual is not None and (residual.dtype != dtype or not residual.flags.c_contiguous):
                residual = np.ascontiguousarray(residual, dtype=dtype)
            return affine(y, y, None, shift, activation=activation, alpha=alpha, beta=beta, residual=residual)
    return epilogue_numpy(y, bias=bias, activation=activation, alpha=alpha, beta=beta, residual=residual)
