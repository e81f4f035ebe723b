"""The C convolution helpers (``ronn_cpu.native.conv``) against independent numpy references:
im2col, the kn2row sums, depthwise convolutions and the small GEMMs, on the geometries the
CNNs use and odd ones (dilations, asymmetric pads, stride 3, 1x1, float64), plus the arrays the
C code declines, which must reach the numba kernels."""

from __future__ import annotations

import numpy as np
import pytest
from ronn_cpu import native

if native.extension("conv") is None:
    pytest.skip("the native conv module does not build here", allow_module_level=True)

from ronn_cpu.native import conv

RNG = np.random.default_rng(7)


def _tolerance(dtype: type) -> dict[str, float]:
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


def _out_size(size: int, kernel: int, stride: int, dilation: int, begin: int, end: int) -> int:
    return (size + begin + end - (kernel - 1) * dilation - 1) // stride + 1


def _padded(x: np.ndarray, begins: tuple[int, int], ends: tuple[int, int]) -> np.ndarray:
    """x (C, H, W) zero-padded by begins and ends (float64)."""
    return np.pad(x.astype(np.float64), [(0, 0), (begins[0], ends[0]), (begins[1], ends[1])])


def _taps(padded: np.ndarray, i: int, j: int, geo: dict, oh: int, ow: int) -> np.ndarray:
    """padded[:, oh * sh + i * dh, ow * sw + j * dw] over the output grid: (C, OH, OW)."""
    sh, sw, dh, dw = geo["sh"], geo["sw"], geo["dh"], geo["dw"]
    return padded[:, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw]


# --- im2col ---------------------------------------------------------------------------------

#: (C, H, W, kh, kw, sh, sw, dh, dw, pads (top, left, bottom, right))
IM2COL_CASES = [
    (3, 224, 224, 3, 3, 2, 2, 1, 1, (1, 1, 1, 1)),  # MobileNetV3-small's stem
    (3, 64, 64, 7, 7, 2, 2, 1, 1, (3, 3, 3, 3)),  # ResNet's stem (column phases)
    (8, 14, 14, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1)),  # stride 1, OW == W: runs of the plane
    (4, 9, 11, 3, 3, 1, 1, 2, 2, (2, 0, 1, 3)),  # dilation 2, asymmetric pads
    (2, 10, 13, 3, 2, 3, 3, 1, 2, (2, 0, 1, 3)),  # stride 3
    (5, 7, 7, 1, 1, 1, 1, 1, 1, (0, 0, 0, 0)),  # 1x1
    (3, 12, 12, 5, 5, 2, 3, 2, 1, (3, 1, 0, 2)),  # mixed strides and dilations
    (2, 1, 20, 1, 4, 1, 1, 1, 3, (0, 2, 0, 1)),  # a 1-D convolution
    (2, 5, 5, 3, 3, 1, 1, 1, 1, (4, 4, 4, 4)),  # pads wider than the kernel reaches
]


def _im2col_reference(x: np.ndarray, kh: int, kw: int, geo: dict, oh: int, ow: int, oh0: int, oh1: int) -> np.ndarray:
    channels = x.shape[0]
    rows_needed = (oh - 1) * geo["sh"] + (kh - 1) * geo["dh"] + 1
    cols_needed = (ow - 1) * geo["sw"] + (kw - 1) * geo["dw"] + 1
    ends = (max(0, rows_needed - geo["ph"] - x.shape[1]), max(0, cols_needed - geo["pw"] - x.shape[2]))
    padded = _padded(x, (geo["ph"], geo["pw"]), ends)
    cols = np.empty((channels, kh, kw, oh1 - oh0, ow))
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = _taps(padded, i, j, geo, oh, ow)[:, oh0:oh1]
    return cols.reshape(channels * kh * kw, (oh1 - oh0) * ow)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", IM2COL_CASES)
def test_im2col_rows(case, dtype):
    channels, height, width, kh, kw, sh, sw, dh, dw, (pt, pl, pb, pr) = case
    geo = {"sh": sh, "sw": sw, "dh": dh, "dw": dw, "ph": pt, "pw": pl}
    oh, ow = _out_size(height, kh, sh, dh, pt, pb), _out_size(width, kw, sw, dw, pl, pr)
    x = RNG.standard_normal((channels, height, width)).astype(dtype)
    for oh0, oh1 in {(0, oh), (0, max(1, oh // 3)), (oh // 2, oh), (1, max(1, oh - 1))}:
        cols = np.full((channels * kh * kw, (oh1 - oh0) * ow), np.nan, dtype)  # every entry is written
        conv.im2col_rows(x, cols, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, oh0, oh1)
        np.testing.assert_array_equal(cols, _im2col_reference(x, kh, kw, geo, oh, ow, oh0, oh1))


# --- kn2row ---------------------------------------------------------------------------------

#: (M, HP, pitch, kh, kw, dh, dw)
KN2ROW_CASES = [
    (32, 58, 58, 3, 3, 1, 1),  # DenseNet-121's growth convolutions (56, 28, 14, 7)
    (32, 30, 30, 3, 3, 1, 1),
    (32, 16, 16, 3, 3, 1, 1),
    (32, 9, 9, 3, 3, 1, 1),
    (5, 12, 14, 3, 2, 2, 3),  # dilations
    (4, 10, 10, 1, 3, 1, 1),
    (3, 11, 40, 5, 5, 1, 1),  # wide rows, a 5x5 kernel
    (3, 8, 6, 3, 1, 1, 1),  # pitch == OW: one run
    (1, 7, 9, 7, 3, 1, 2),
]


def _kn2row_reference(parts: np.ndarray, bias: np.ndarray, kh: int, kw: int, dh: int, dw: int, pitch: int):
    out_channels = bias.shape[0]
    grid = parts.astype(np.float64).reshape(kh, kw, out_channels, -1, pitch)
    oh, ow = grid.shape[3] - (kh - 1) * dh, pitch - (kw - 1) * dw
    y = np.broadcast_to(bias.astype(np.float64)[:, None, None], (out_channels, oh, ow)).copy()
    for i in range(kh):
        for j in range(kw):
            y += grid[i, j, :, i * dh : i * dh + oh, j * dw : j * dw + ow]
    return y.reshape(out_channels, oh * ow), oh, ow


@pytest.mark.parametrize("name", ["kn2row_sum", "kn2row_sum_par"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", KN2ROW_CASES)
def test_kn2row_sum(case, dtype, name):
    out_channels, hp, pitch, kh, kw, dh, dw = case
    parts = RNG.standard_normal((kh * kw * out_channels, hp * pitch)).astype(dtype)
    bias = RNG.standard_normal(out_channels).astype(dtype)
    want, oh, ow = _kn2row_reference(parts, bias, kh, kw, dh, dw, pitch)
    y = np.full((out_channels, oh * ow), np.nan, dtype)
    getattr(conv, name)(parts, y, bias, kh, kw, dh, dw, pitch, oh, ow)
    np.testing.assert_allclose(y, want, **_tolerance(dtype))


def _direct_conv(x: np.ndarray, w: np.ndarray, pads: tuple[int, int, int, int], dilations=(1, 1)) -> np.ndarray:
    """A stride-1 convolution of one image (C, H, W) by w (M, C, kh, kw) in float64."""
    kh, kw = w.shape[2:]
    padded = _padded(x, pads[:2], pads[2:])
    geo = {"sh": 1, "sw": 1, "dh": dilations[0], "dw": dilations[1]}
    oh = padded.shape[1] - (kh - 1) * dilations[0]
    ow = padded.shape[2] - (kw - 1) * dilations[1]
    taps = np.stack([_taps(padded, i, j, geo, oh, ow) for i in range(kh) for j in range(kw)], axis=1)
    return np.einsum("mct,ctyx->myx", w.reshape(w.shape[0], w.shape[1], -1).astype(np.float64), taps)


@pytest.mark.parametrize("size", [56, 28, 14, 7])
def test_kn2row_as_densenet_runs_it(size):
    """The caller's whole kn2row convolution (C=128 -> M=32, 3x3, pad 1): one GEMM over the padded
    image, then the shifted sums, against a direct convolution."""
    channels, out_channels = 128, 32
    x = RNG.standard_normal((channels, size, size)).astype(np.float32)
    w = (RNG.standard_normal((out_channels, channels, 3, 3)) / 30).astype(np.float32)
    bias = RNG.standard_normal(out_channels).astype(np.float32)
    hp = wp = size + 2
    padded = np.zeros((channels, hp, wp), np.float32)
    padded[:, 1:-1, 1:-1] = x
    stacked = np.ascontiguousarray(w.transpose(2, 3, 0, 1)).reshape(9 * out_channels, channels)
    parts = stacked @ padded.reshape(channels, hp * wp)
    y = np.full((out_channels, size * size), np.nan, np.float32)
    conv.kn2row_sum(parts, y, bias, 3, 3, 1, 1, wp, size, size)
    want = _direct_conv(x, w, (1, 1, 1, 1)) + bias[:, None, None]
    np.testing.assert_allclose(y.reshape(want.shape), want, rtol=1e-4, atol=1e-4)


# --- depthwise ------------------------------------------------------------------------------

#: (C, H, W, k, stride, dilation, pads (top, left, bottom, right))
DEPTHWISE_CASES = [
    (32, 112, 112, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    (16, 56, 56, (3, 3), (2, 2), (1, 1), (0, 0, 1, 1)),  # TF-style SAME pads
    (8, 28, 28, (5, 5), (2, 2), (1, 1), (2, 2, 2, 2)),
    (5, 11, 9, (3, 3), (2, 2), (2, 2), (2, 1, 0, 3)),  # dilation 2, asymmetric pads
    (3, 13, 14, (3, 2), (3, 3), (1, 2), (1, 0, 2, 1)),  # stride 3
    (6, 7, 7, (7, 7), (1, 3), (1, 1), (3, 3, 3, 3)),
    (9, 6, 6, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),  # 1x1
    (576, 7, 7, (5, 5), (1, 1), (1, 1), (2, 2, 2, 2)),  # small planes, many channels
    (96, 14, 14, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
]


def _depthwise_reference(x, w, bias, strides, dilations, pads):
    kh, kw = w.shape[1:]
    padded = _padded(x, pads[:2], pads[2:])
    geo = {"sh": strides[0], "sw": strides[1], "dh": dilations[0], "dw": dilations[1]}
    oh = _out_size(x.shape[1], kh, strides[0], dilations[0], pads[0], pads[2])
    ow = _out_size(x.shape[2], kw, strides[1], dilations[1], pads[1], pads[3])
    y = np.broadcast_to(bias.astype(np.float64)[:, None, None], (x.shape[0], oh, ow)).copy()
    for i in range(kh):
        for j in range(kw):
            y += w[:, i, j, None, None].astype(np.float64) * _taps(padded, i, j, geo, oh, ow)
    return y


@pytest.mark.parametrize("name", ["depthwise", "depthwise_par", "depthwise_small"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", DEPTHWISE_CASES)
def test_depthwise(case, dtype, name):
    channels, height, width, kernel, strides, dilations, pads = case
    x = RNG.standard_normal((channels, height, width)).astype(dtype)
    w = RNG.standard_normal((channels, *kernel)).astype(dtype)
    bias = RNG.standard_normal(channels).astype(dtype)
    want = _depthwise_reference(x, w, bias, strides, dilations, pads)
    y = np.full(want.shape, np.nan, dtype)
    getattr(conv, name)(x, w, bias, y, *strides, *dilations, pads[0], pads[1])
    np.testing.assert_allclose(y, want, **_tolerance(dtype))


# --- small GEMMs ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 7, 36), (32, 32, 64), (16, 64, 49), (9, 13, 4), (64, 256, 7), (3, 5, 1)])
def test_small_gemms(shape, dtype):
    rows, depth, positions = shape
    w = RNG.standard_normal((rows, depth)).astype(dtype)
    x = RNG.standard_normal((depth, positions)).astype(dtype)
    shift = RNG.standard_normal(rows).astype(dtype)
    want = w.astype(np.float64) @ x + shift[:, None]
    for name in ("gemm_small", "gemm_small_dot"):
        y = np.full((rows, positions), np.nan, dtype)
        getattr(conv, name)(w, x, y, shift)
        np.testing.assert_allclose(y, want, rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-4, err_msg=name)


# --- what the C code declines ---------------------------------------------------------------


def test_strided_arrays_fall_back_to_numba():
    """A non-contiguous input makes the C function return NotImplemented; the facade's result is
    still right (the numba kernel ran)."""
    c = native.extension("conv")
    parts = RNG.standard_normal((9 * 4, 2 * 10 * 10)).astype(np.float32)[:, ::2]  # strided rows
    bias = RNG.standard_normal(4).astype(np.float32)
    y = np.full((4, 64), np.nan, np.float32)
    assert c.kn2row_sum(1, parts, y, bias, 3, 3, 1, 1, 10, 8, 8) is NotImplemented
    conv.kn2row_sum(parts, y, bias, 3, 3, 1, 1, 10, 8, 8)
    np.testing.assert_allclose(y, _kn2row_reference(parts, bias, 3, 3, 1, 1, 10)[0], rtol=1e-5, atol=1e-5)

    x = RNG.standard_normal((3, 9, 9)).astype(np.float32)
    geo = {"sh": 1, "sw": 1, "dh": 1, "dw": 1, "ph": 1, "pw": 1}
    cols = np.full((27, 162), np.nan, np.float32)[:, ::2]  # strided columns
    assert c.im2col_rows(x, cols, 3, 3, 1, 1, 1, 1, 1, 1, 9, 9, 0, 9) is NotImplemented
    conv.im2col_rows(x, cols, 3, 3, 1, 1, 1, 1, 1, 1, 9, 9, 0, 9)
    np.testing.assert_array_equal(cols, _im2col_reference(x, 3, 3, geo, 9, 9, 0, 9))

    x = RNG.standard_normal((3, 9, 18)).astype(np.float32)[:, :, ::2]  # strided input

    w = RNG.standard_normal((3, 3, 3)).astype(np.float32)
    want = _depthwise_reference(x, w, bias[:3], (1, 1), (1, 1), (1, 1, 1, 1))
    y = np.full(want.shape, np.nan, np.float32)
    assert c.depthwise(1, x, w, bias[:3], y, 1, 1, 1, 1, 1, 1) is NotImplemented
    conv.depthwise(x, w, bias[:3], y, 1, 1, 1, 1, 1, 1)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)

    x = np.ascontiguousarray(x)
    strided_bias = np.repeat(bias[:3], 2)[::2]  # (numba's depthwise_small takes only a strided bias)
    y = np.full(want.shape, np.nan, np.float32)
    assert c.depthwise_small(x, w, strided_bias, y, 1, 1, 1, 1, 1, 1) is NotImplemented
    conv.depthwise_small(x, w, strided_bias, y, 1, 1, 1, 1, 1, 1)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_mixed_dtypes_are_declined():
    c = native.extension("conv")
    w = RNG.standard_normal((4, 5)).astype(np.float32)
    x = RNG.standard_normal((5, 9))  # float64
    y = np.zeros((4, 9), np.float32)
    assert c.gemm_small(w, x, y, np.zeros(4, np.float32)) is NotImplemented
    assert c.gemm_small(w, x.astype(np.float32), y, np.zeros(4, np.float32)) is None
    with pytest.raises(TypeError):
        c.gemm_small(w, x, y)
