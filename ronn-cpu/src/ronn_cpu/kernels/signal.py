"""Signal processing kernels: DFT, STFT, the Hann/Hamming/Blackman windows, MelWeightMatrix.

Complex tensors are real tensors with a trailing dimension of 2 (real, imaginary); real
signals have a trailing dimension of 1. Transforms run through ``xp.fft`` in complex64 for
float32 and the half-precision types, complex128 for float64, and are cast back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np

from ronn.kernel import KernelContext, KernelRun, KernelTable

from ._cast import onnx_dtype

KERNELS = KernelTable()

_FLOATS = {np.dtype(t) for t in (np.float16, np.float32, np.float64, ml_dtypes.bfloat16)}
_WINDOW_TYPES = _FLOATS | {
    np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
}


# --- complex helpers -----------------------------------------------------------------------


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """The real type transforms of ``dtype`` are computed in."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _as_signal(x: Any) -> Any:
    """The real (trailing 1) or complex (trailing 2) tensor ``x`` without its trailing axis."""
    if x.ndim < 2 or x.shape[-1] not in (1, 2):
        raise ValueError(f"expected a signal whose last dimension is 1 (real) or 2 (complex), got shape {x.shape}")
    work = x.astype(_work_dtype(x.dtype), copy=False)
    if x.shape[-1] == 1:
        return work[..., 0]
    return work[..., 0] + 1j * work[..., 1]


def _as_pairs(xp: Any, spectrum: Any, dtype: np.dtype) -> Any:
    """A complex array as real/imaginary pairs on a new trailing axis, in ``dtype``."""
    return xp.stack([spectrum.real, spectrum.imag], axis=-1).astype(dtype)


def _scalar(value: Any, what: str) -> int:
    """An integer scalar input (a 0-d or one-element tensor) as a Python int."""
    array = np.asarray(value.get() if hasattr(value, "get") else value)
    if array.size != 1:
        raise ValueError(f"{what} must be a scalar, got shape {array.shape}")
    return int(array.reshape(()))


def _float_scalar(value: Any, what: str) -> float:
    """A float scalar input as a Python float."""
    array = np.asarray(value.get() if hasattr(value, "get") else value)
    if array.size != 1:
        raise ValueError(f"{what} must be a scalar, got shape {array.shape}")
    return float(array.reshape(()).astype(np.float64))


# --- DFT -----------------------------------------------------------------------------------


def _signal_axis(axis: int, rank: int) -> int:
    """A DFT axis in ``[0, rank - 2]``; the last (complex) axis is not allowed."""
    resolved = axis + rank if axis < 0 else axis
    if not 0 <= resolved <= rank - 2:
        raise ValueError(f"DFT axis {axis} is out of range for an input of rank {rank} (the last axis is complex)")
    return resolved


def _dft(xp: Any, x: Any, length: int | None, axis: int, inverse: bool, onesided: bool) -> Any:
    """One DFT along ``axis`` of the signal dims, with the semantics of ONNX's DFT."""
    axis = _signal_axis(axis, x.ndim)
    size = x.shape[axis]
    if length is None:
        length = 2 * (size - 1) if inverse and onesided else size
    if length <= 0:
        raise ValueError(f"dft_length must be positive, got {length}")
    signal = _as_signal(x)
    if inverse and onesided:
        result = xp.fft.irfft(signal, n=length, axis=axis)
        return result[..., None].astype(x.dtype)
    if inverse:
        return _as_pairs(xp, xp.fft.ifft(signal, n=length, axis=axis), x.dtype)
    if onesided and x.shape[-1] == 1:
        return _as_pairs(xp, xp.fft.rfft(signal, n=length, axis=axis), x.dtype)
    spectrum = xp.fft.fft(signal, n=length, axis=axis)
    if onesided:
        spectrum = xp.take(spectrum, xp.arange(length // 2 + 1), axis=axis)
    return _as_pairs(xp, spectrum, x.dtype)


@KERNELS.register("DFT", since=(17, 20))
def dft(ctx: KernelContext) -> KernelRun:
    """DFT: the axis is an attribute (default 1) before opset 20, an input (default -2) after."""
    xp = ctx.xp
    inverse = bool(ctx.attr("inverse", 0))
    onesided = bool(ctx.attr("onesided", 0))
    axis_input = ctx.opset >= 20
    attribute_axis = -2 if axis_input else int(ctx.attr("axis", 1))

    def run(x: Any, dft_length: Any = None, axis: Any = None) -> tuple[Any]:
        length = None if dft_length is None else _scalar(dft_length, "dft_length")
        chosen = _scalar(axis, "axis") if axis_input and axis is not None else attribute_axis
        return (_dft(xp, x, length, chosen, inverse, onesided),)

    return run


# --- STFT ----------------------------------------------------------------------------------


def _frames(xp: Any, signal: Any, frame_length: int, frame_step: int) -> Any:
    """``signal`` [batch, length] cut into [batch, frames, frame_length]."""
    length = signal.shape[1]
    count = (length - frame_length) // frame_step + 1
    if frame_length > length or count <= 0:
        raise ValueError(f"frame_length {frame_length} does not fit a signal of length {length}")
    starts = xp.arange(count) * frame_step
    index = starts[:, None] + xp.arange(frame_length)[None, :]
    return signal[:, index]


@KERNELS.register("STFT", since=17)
def stft(ctx: KernelContext) -> KernelRun:
    """STFT of a [batch, length, 1 or 2] signal: [batch, frames, bins, 2]."""
    xp = ctx.xp
    onesided = bool(ctx.attr("onesided", 1))

    def run(signal: Any, frame_step: Any, window: Any = None, frame_length: Any = None) -> tuple[Any]:
        if signal.ndim != 3:
            raise ValueError(f"STFT expects a signal of rank 3, got shape {signal.shape}")
        step = _scalar(frame_step, "frame_step")
        if step <= 0:
            raise ValueError(f"frame_step must be positive, got {step}")
        if window is not None and window.ndim != 1:
            raise ValueError(f"window must be 1-D, got shape {window.shape}")
        if frame_length is not None:
            size = _scalar(frame_length, "frame_length")
            if window is not None and window.shape[0] != size:
                raise ValueError(f"window length {window.shape[0]} differs from frame_length {size}")
        else:
            size = signal.shape[1] if window is None else window.shape[0]
        if size <= 0:
            raise ValueError(f"frame_length must be positive, got {size}")
        frames = _frames(xp, _as_signal(signal), size, step)
        if window is not None:
            frames = frames * window.astype(_work_dtype(signal.dtype))
        if onesided and signal.shape[-1] == 1:
            spectrum = xp.fft.rfft(frames, n=size, axis=-1)
        else:
            spectrum = xp.fft.fft(frames, n=size, axis=-1)
            if onesided:
                spectrum = spectrum[..., : size // 2 + 1]
        return (_as_pairs(xp, spectrum, signal.dtype),)

    return run


# --- windows -------------------------------------------------------------------------------


def _output_dtype(ctx: KernelContext, allowed: set[np.dtype]) -> np.dtype:
    code = ctx.attr("output_datatype", 1)
    try:
        dtype = onnx_dtype(code)
    except (TypeError, ValueError):
        raise ctx.fail(f"output_datatype {code} is not a supported element type") from None
    if dtype not in allowed:
        raise ctx.fail(f"output_datatype {code} ({dtype}) is not allowed")
    return dtype


# Each window is written so its peak (phase pi) comes out as exactly 1 in float64, which
# matters when the output type is an integer.


def _hann(phase: Any, xp: Any) -> Any:
    return 0.5 - 0.5 * xp.cos(phase)


def _hamming(phase: Any, xp: Any) -> Any:
    beta = 21.0 / 46.0  # alpha = 25/46 = 1 - beta
    return 1.0 - beta * (1.0 + xp.cos(phase))


def _blackman(phase: Any, xp: Any) -> Any:
    # 0.42 - 0.5 cos(phase) + 0.08 cos(2 phase)
    return 0.5 * (1.0 - xp.cos(phase)) - 0.08 * (1.0 - xp.cos(2.0 * phase))


def _window_kernel(formula: Callable[[Any, Any], Any]) -> Callable[[KernelContext], KernelRun]:
    """A window op: ``formula(2 pi n / N, xp)`` for n in [0, size), N = size (periodic) or size - 1."""

    def factory(ctx: KernelContext) -> KernelRun:
        xp = ctx.xp
        dtype = _output_dtype(ctx, _WINDOW_TYPES)
        periodic = bool(ctx.attr("periodic", 1))

        def run(size: Any) -> tuple[Any]:
            count = _scalar(size, "size")
            if count < 0:
                raise ValueError(f"window size must not be negative, got {count}")
            period = count if periodic else count - 1
            with np.errstate(divide="ignore", invalid="ignore"):
                phase = xp.arange(count, dtype=np.float64) * (2.0 * np.pi / period if period else np.nan)
                return (formula(phase, xp).astype(dtype),)

        return run

    factory.__doc__ = f"The {formula.__name__.strip('_')} window of a given size."
    return factory


KERNELS.register("HannWindow", since=17)(_window_kernel(_hann))
KERNELS.register("HammingWindow", since=17)(_window_kernel(_hamming))
KERNELS.register("BlackmanWindow", since=17)(_window_kernel(_blackman))


# --- MelWeightMatrix -----------------------------------------------------------------------


def _mel_band_edges(bins: int, dft_length: int, rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """The spectrogram bin of each of the ``bins + 2`` band edges, spaced evenly in mel."""
    low_mel = 2595.0 * np.log10(1.0 + low_hz / 700.0)
    high_mel = 2595.0 * np.log10(1.0 + high_hz / 700.0)
    step = (high_mel - low_mel) / (bins + 2)
    mels = low_mel + step * np.arange(bins + 2, dtype=np.float64)
    hertz = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    return np.floor((dft_length + 1) * hertz / rate).astype(np.int64)


def _mel_matrix(bins: int, dft_length: int, rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """[dft_length // 2 + 1, bins] triangular filters peaking at 1."""
    edges = _mel_band_edges(bins, dft_length, rate, low_hz, high_hz)
    left, center, right = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    j = np.arange(dft_length // 2 + 1)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = np.where((j >= left) & (j <= center), (j - left) / (center - left), 0.0)
        falling = np.where((j >= center) & (j < right), (right - j) / (right - center), 0.0)
    return np.where(j == center, 1.0, np.maximum(rising, falling))


@KERNELS.register("MelWeightMatrix", since=17)
def mel_weight_matrix(ctx: KernelContext) -> KernelRun:
    """Triangular mel filterbank weights, [dft_length // 2 + 1, num_mel_bins]."""
    xp = ctx.xp
    dtype = _output_dtype(ctx, _WINDOW_TYPES)

    def run(num_mel_bins: Any, dft_length: Any, sample_rate: Any, lower_edge_hertz: Any, upper_edge_hertz: Any):
        bins = _scalar(num_mel_bins, "num_mel_bins")
        length = _scalar(dft_length, "dft_length")
        rate = _scalar(sample_rate, "sample_rate")
        low = _float_scalar(lower_edge_hertz, "lower_edge_hertz")
        high = _float_scalar(upper_edge_hertz, "upper_edge_hertz")
        if bins <= 0 or length <= 0 or rate <= 0:
            raise ValueError("num_mel_bins, dft_length and sample_rate must be positive")
        if not 0 <= low <= high:
            raise ValueError(f"need 0 <= lower_edge_hertz <= upper_edge_hertz, got {low} and {high}")
        matrix = _mel_matrix(bins, length, rate, low, high)
        return (xp.asarray(matrix.astype(dtype)),)

    return run
