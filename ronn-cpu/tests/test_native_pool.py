"""The native (C) pooling kernels called directly, against a numpy reference written here:
DenseNet/ResNet geometries, odd ones (dilation, asymmetric pads, ceil_mode's overhang, stride
3, 1x1 planes), float64, NaN inputs, and arguments the C code declines (numba serves them)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ronn_cpu import native

pytestmark = pytest.mark.skipif(native.extension("pool") is None, reason="no C compiler here")

RNG = np.random.default_rng(7)

# (C, H, W), (kh, kw), (sh, sw), (dh, dw), pads (top, left, bottom, right), ceil_mode
CASES = [
    ((64, 112, 112), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), False),  # DenseNet / ResNet stem
    ((128, 56, 56), (2, 2), (2, 2), (1, 1), (0, 0, 0, 0), False),  # DenseNet transitions
    ((256, 28, 28), (2, 2), (2, 2), (1, 1), (0, 0, 0, 0), False),
    ((512, 14, 14), (2, 2), (2, 2), (1, 1), (0, 0, 0, 0), False),
    ((3, 9, 7), (2, 2), (2, 2), (1, 1), (0, 0, 0, 0), True),  # 2x2 with an overhang
    ((3, 6, 38), (2, 2), (2, 2), (1, 1), (0, 0, 0, 0), False),  # 19 outputs a row: overlapped pieces
    ((2, 13, 12), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), False),
    ((2, 17, 16), (3, 3), (3, 3), (1, 1), (1, 0, 2, 1), False),  # stride 3, asymmetric pads
    ((2, 15, 14), (3, 3), (2, 1), (1, 1), (0, 1, 1, 0), True),
    ((2, 20, 40), (3, 3), (2, 2), (1, 1), (0, 0, 0, 0), True),
    ((3, 20, 40), (3, 2), (1, 2), (2, 2), (2, 1, 0, 2), False),  # dilation 2, rows path
    ((3, 11, 9), (2, 3), (2, 1), (2, 1), (1, 0, 1, 2), True),  # dilation, direct path
    ((2, 34, 50), (5, 5), (3, 3), (1, 1), (2, 2, 2, 2), True),
    ((4, 1, 1), (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), False),  # 1x1 planes
    ((4, 1, 1), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), False),
    ((2, 1, 30), (1, 4), (1, 3), (1, 1), (0, 1, 0, 2), False),  # a 1-D pool as the caller sends it
]


def _out_size(size: int, k: int, s: int, d: int, begin: int, end: int, ceil: bool) -> int:
    """ONNX's output size: the last window starts inside the input or its leading pad."""
    room = size + begin + end - ((k - 1) * d + 1)
    out = (-(-room // s) if ceil else room // s) + 1
    if ceil and (out - 1) * s >= size + begin:
        out -= 1
    return out


def _geometry(shape, kernel, strides, dilations, pads, ceil):
    _, height, width = shape
    out_h = _out_size(height, kernel[0], strides[0], dilations[0], pads[0], pads[2], ceil)
    out_w = _out_size(width, kernel[1], strides[1], dilations[1], pads[1], pads[3], ceil)
    return out_h, out_w


def _windows(x, kernel, strides, dilations, pads, out):
    """(oh, ow, taps): each window's taps inside x, shaped (C, taps)."""
    for oh in range(out[0]):
        for ow in range(out[1]):
            rows = [oh * strides[0] + i * dilations[0] - pads[0] for i in range(kernel[0])]
            cols = [ow * strides[1] + j * dilations[1] - pads[1] for j in range(kernel[1])]
            rows = [r for r in rows if 0 <= r < x.shape[1]]
            cols = [c for c in cols if 0 <= c < x.shape[2]]
            yield oh, ow, x[:, rows][:, :, cols].reshape(x.shape[0], -1)


def reference_max(x, kernel, strides, dilations, pads, out):
    """Window maxima (NaN if any tap is NaN), -inf for a window wholly in the pads."""
    y = np.full((x.shape[0], *out), -np.inf, dtype=np.float64)
    for oh, ow, taps in _windows(x.astype(np.float64), kernel, strides, dilations, pads, out):
        if taps.shape[1]:
            y[:, oh, ow] = np.where(np.isnan(taps).any(axis=1), np.nan, np.nan_to_num(taps, nan=0).max(axis=1))
    return y


def reference_mean(x, kernel, strides, dilations, pads, out):
    """Window sums over the taps inside x, and how many taps that is (count_include_pad=0)."""
    sums = np.zeros((x.shape[0], *out))
    counts = np.zeros(out)
    for oh, ow, taps in _windows(x.astype(np.float64), kernel, strides, dilations, pads, out):
        sums[:, oh, ow] = taps.sum(axis=1)
        counts[oh, ow] = max(taps.shape[1], 1)
    return sums / counts, counts


def _params(kernel, strides, dilations, pads):
    return (*kernel, *strides, *dilations, pads[0], pads[1])


def _facade():
    return native.facade("pool")


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-k{c[1]}-s{c[2]}-d{c[3]}-p{c[4]}-ceil{int(c[5])}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parallel", [False, True])
def test_max_pool_matches_reference(case, dtype, parallel):
    shape, kernel, strides, dilations, pads, ceil = case
    out = _geometry(shape, kernel, strides, dilations, pads, ceil)
    x = RNG.standard_normal(shape).astype(dtype)
    y = np.full((shape[0], *out), 7, dtype)
    pool = _facade()
    fn = pool.max_pool_par if parallel else pool.max_pool
    fn(x, y, *_params(kernel, strides, dilations, pads), dtype(-np.inf))
    want = reference_max(x, kernel, strides, dilations, pads, out)
    np.testing.assert_array_equal(y, want.astype(dtype))  # maxima are exact


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-k{c[1]}-s{c[2]}-d{c[3]}-p{c[4]}-ceil{int(c[5])}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parallel", [False, True])
def test_average_pool_matches_reference(case, dtype, parallel):
    shape, kernel, strides, dilations, pads, ceil = case
    out = _geometry(shape, kernel, strides, dilations, pads, ceil)
    x = RNG.standard_normal(shape).astype(dtype)
    want, counts = reference_mean(x, kernel, strides, dilations, pads, out)
    y = np.full((shape[0], *out), 7, dtype)
    pool = _facade()
    fn = pool.average_pool_par if parallel else pool.average_pool
    fn(x, y, counts.astype(dtype), *_params(kernel, strides, dilations, pads))
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(y, want, rtol=tol, atol=tol * math.prod(kernel))


@pytest.mark.parametrize(
    "case", [CASES[0], CASES[1], CASES[3], CASES[6], CASES[7], CASES[10], CASES[11], CASES[12]], ids=str
)
def test_max_pool_propagates_nan(case):
    shape, kernel, strides, dilations, pads, ceil = case
    out = _geometry(shape, kernel, strides, dilations, pads, ceil)
    x = RNG.standard_normal(shape).astype(np.float32)
    x[RNG.random(shape) < 0.02] = np.nan
    x[RNG.random(shape) < 0.02] = -np.inf
    y = np.empty((shape[0], *out), np.float32)
    _facade().max_pool(x, y, *_params(kernel, strides, dilations, pads), np.float32(-np.inf))
    want = reference_max(x, kernel, strides, dilations, pads, out)
    assert np.isnan(want).any()
    np.testing.assert_array_equal(y, want.astype(np.float32))  # NaN where a tap is NaN, else the max


def test_strided_input_falls_back_to_numba():
    x = RNG.standard_normal((4, 12, 20)).astype(np.float32)[:, :, ::2]  # not C-contiguous
    y = np.empty((4, 6, 5), np.float32)
    params = (2, 2, 2, 2, 1, 1, 0, 0)
    assert native.extension("pool").max_pool(1, x, y, *params, -np.inf) is NotImplemented
    _facade().max_pool(x, y, *params, np.float32(-np.inf))
    np.testing.assert_array_equal(y, reference_max(x, (2, 2), (2, 2), (1, 1), (0, 0), (6, 5)))
    counts = np.full((6, 5), 4, np.float32)
    _facade().average_pool(x, y, counts, *params)
    want, _ = reference_mean(x, (2, 2), (2, 2), (1, 1), (0, 0), (6, 5))
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


def test_mixed_dtypes_and_bad_shapes_are_declined():
    c = native.extension("pool")
    x = RNG.standard_normal((2, 8, 8)).astype(np.float32)
    params = (2, 2, 2, 2, 1, 1, 0, 0)
    assert c.max_pool(1, x, np.empty((2, 4, 4), np.float64), *params, -np.inf) is NotImplemented
    assert c.max_pool(1, x, np.empty((3, 4, 4), np.float32), *params, -np.inf) is NotImplemented
    assert c.max_pool(1, x, np.empty((2, 4, 4), np.float32), 0, 2, 2, 2, 1, 1, 0, 0, -np.inf) is NotImplemented
    counts = np.full((4, 5), 4, np.float32)  # not (OH, OW)
    assert c.average_pool(1, x, np.empty((2, 4, 4), np.float32), counts, *params) is NotImplemented
    assert c.plane_means(x, np.empty(3, np.float32)) is NotImplemented  # x must be 2-D
    assert c.max_pool(1, x, np.empty((2, 4, 4), np.float32), *params, -np.inf) is None


@pytest.mark.parametrize("shape", [(2048, 49), (1024, 49), (64, 3136), (5, 1), (3, 7), (16, 200), (2, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plane_means(shape, dtype):
    x = (RNG.standard_normal(shape) + 3).astype(dtype)
    y = np.full(shape[0], 7, dtype)
    _facade().plane_means(x, y)
    with np.errstate(invalid="ignore"):
        want = x.astype(np.float64).sum(axis=1) / shape[1]  # NaN for empty rows, as numba gives
    tol = 1e-7 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(y, want.astype(dtype), rtol=tol, atol=tol)


@pytest.mark.parametrize("channels,side", [(576, 7), (130, 4), (3, 1), (64, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plane_means_of_a_channels_last_view(channels, side, dtype):
    """GlobalAveragePool after a channels-last region: (C, H*W) planes a view of (H, W, C) data."""
    nhwc = (RNG.standard_normal((1, side, side, channels)) + 1).astype(dtype)
    planes = nhwc.transpose(0, 3, 1, 2).reshape(channels, -1)
    assert not planes.flags.c_contiguous or side == 1
    y = np.full(channels, 7, dtype)
    assert native.extension("pool").plane_means(planes, y) is None  # taken, not declined
    want = nhwc.astype(np.float64).sum(axis=(0, 1, 2)) / (side * side)
    tol = 1e-7 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(y, want.astype(dtype), rtol=tol, atol=tol)


def test_plane_means_sums_in_double():
    x = np.full((1, 1 << 20), 1.0 + 2.0**-23, np.float32)  # a float32 sum would drift
    x[0, 0] = 2.0**24
    y = np.empty(1, np.float32)
    _facade().plane_means(x, y)
    want = (2.0**24 + (x.shape[1] - 1) * (1.0 + 2.0**-23)) / x.shape[1]
    assert y[0] == np.float32(want)


def test_facade_is_what_load_returns_and_delegates_other_names():
    from ronn_cpu.jit import load

    module = load("pool")
    assert module.__name__ == "ronn_cpu.native.pool"
    assert callable(module._combine)  # a numba helper, served by the numba module
