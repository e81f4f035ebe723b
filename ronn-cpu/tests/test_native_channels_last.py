"""The native channels-last kernels (``ronn_cpu.native.channels_last``), called directly on
MobileNet's depthwise geometries and odd ones, against independent float64 numpy references;
arrays the C code does not take go to the numba kernels through the facade."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ronn_cpu import jit, native
from ronn_cpu.kernels._channels_last import store_params
from ronn_cpu.native import channels_last as facade

pytestmark = pytest.mark.skipif(native.extension("channels_last") is None, reason="no C compiler here")

RNG = np.random.default_rng(77)
TOLERANCE = {np.float32: {"rtol": 2e-5, "atol": 2e-5}, np.float64: {"rtol": 1e-12, "atol": 1e-12}}
#: (name, alpha, beta): every activation the kernels apply themselves
ACTIVATIONS = [(None, 0.0, 0.0), ("Relu", 0.0, 0.0), ("LeakyRelu", 0.1, 0.0), ("Clip", -0.5, 0.75),
               ("HardSigmoid", 0.2, 0.5), ("HardSwish", 0.0, 0.0)]  # fmt: skip


def _c() -> object:
    return native.extension("channels_last")


def activate(v: np.ndarray, name: str | None, alpha: float, beta: float) -> np.ndarray:
    """The activation by its definition."""
    if name == "Relu":
        return np.maximum(v, 0)
    if name == "LeakyRelu":
        return np.where(v < 0, alpha * v, v)
    if name == "Clip":
        return np.minimum(np.maximum(v, alpha), beta)
    if name == "HardSigmoid":
        return np.clip(alpha * v + beta, 0, 1)
    if name == "HardSwish":
        return v * np.clip(v / 6 + 0.5, 0, 1)
    return v


def reference_depthwise(x, w, bias, strides, dilations, pads, out_hw):
    """bias + the taps inside the image (those outside are skipped, not multiplied by 0), in
    float64: one strided slice of valid rows and columns per tap."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, height, width, channels = x.shape
    oh, ow = out_hw
    y = np.empty((n, oh, ow, channels))
    y[...] = bias
    for i, j in itertools.product(range(w.shape[0]), range(w.shape[1])):
        rows = np.arange(oh) * strides[0] + i * dilations[0] - pads[0]
        cols = np.arange(ow) * strides[1] + j * dilations[1] - pads[1]
        r = np.nonzero((rows >= 0) & (rows < height))[0]
        c = np.nonzero((cols >= 0) & (cols < width))[0]
        y[:, r[:, None], c[None, :]] += w[i, j] * x[:, rows[r][:, None], cols[c][None, :]]
    return y


def _depthwise_case(shape, kernel, strides, dilations, pads, dtype, residual, activation):
    n, height, width, channels = shape
    ph, pw, eh, ew = pads
    oh = (height + ph + eh - (kernel[0] - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (width + pw + ew - (kernel[1] - 1) * dilations[1] - 1) // strides[1] + 1
    x = RNG.standard_normal(shape).astype(dtype)
    w = RNG.standard_normal((*kernel, channels)).astype(dtype)
    bias = RNG.standard_normal(channels).astype(dtype)
    tiled = np.tile(bias, max(1, -(-512 // channels)))
    res = RNG.standard_normal((n, oh, ow, channels)).astype(dtype) if residual else None
    params = store_params(*activation, np.dtype(dtype))
    expected = reference_depthwise(x, w, bias, strides, dilations, (ph, pw), (oh, ow))
    if residual:
        expected = expected + res
    return x, w, tiled, res, params, activate(expected, *activation), (n, oh, ow, channels)


def _run_depthwise(threads, x, w, tiled, res, params, out_shape, strides, dilations, pads):
    """The C kernel's output (it must take the arguments); threads None: the facade's _par."""
    y = np.full(out_shape, np.nan, x.dtype)
    has_res = res is not None
    args = (x, w, tiled, res if has_res else y, has_res, y, *strides, *dilations, *pads[:2], params)
    if threads is None:
        facade.depthwise_par(*args)
    else:
        assert _c().depthwise(threads, *args) is None
    return y


# (shape N, H, W, C; kernel; strides; dilations; pads top, left, bottom, right)
MOBILENET = [
    ((1, 112, 112, 16), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
    ((1, 56, 56, 72), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
    ((1, 28, 28, 88), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    ((1, 28, 28, 96), (5, 5), (2, 2), (1, 1), (2, 2, 2, 2)),
    ((1, 14, 14, 240), (5, 5), (1, 1), (1, 1), (2, 2, 2, 2)),
    ((1, 14, 14, 120), (5, 5), (1, 1), (1, 1), (2, 2, 2, 2)),
    ((1, 14, 14, 288), (5, 5), (2, 2), (1, 1), (2, 2, 2, 2)),
    ((1, 7, 7, 576), (5, 5), (1, 1), (1, 1), (2, 2, 2, 2)),
]
ODD = [
    ((2, 9, 11, 19), (3, 3), (1, 1), (2, 2), (2, 2, 2, 2)),  # dilation 2, channels 16 + 3
    ((1, 10, 13, 40), (5, 5), (1, 2), (1, 1), (0, 3, 1, 0)),  # asymmetric pads, 32 + 8 channels
    ((1, 12, 12, 24), (3, 3), (3, 3), (1, 1), (1, 1, 1, 1)),  # stride 3
    ((1, 11, 9, 33), (7, 7), (1, 1), (1, 1), (3, 3, 3, 3)),  # 7x7 kernel
    ((3, 1, 1, 8), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),  # 1x1 images
    ((1, 4, 5, 5), (5, 5), (2, 1), (1, 1), (4, 4, 4, 4)),  # pads wider than the image, 5 channels
    ((1, 6, 20, 64), (3, 3), (1, 2), (2, 1), (0, 0, 0, 0)),  # no pads, row dilation
    ((1, 9, 9, 48), (3, 5), (1, 1), (1, 1), (1, 2, 1, 2)),  # a 3x5 kernel
]


@pytest.mark.parametrize("geometry", MOBILENET + ODD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_matches_reference(geometry, dtype):
    shape, kernel, strides, dilations, pads = geometry
    x, w, tiled, res, params, expected, out_shape = _depthwise_case(
        shape, kernel, strides, dilations, pads, dtype, False, ("HardSwish", 0.0, 0.0)
    )
    y = _run_depthwise(1, x, w, tiled, res, params, out_shape, strides, dilations, pads)
    np.testing.assert_allclose(y, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("geometry", [MOBILENET[2], MOBILENET[7], ODD[0], ODD[4]])
def test_depthwise_activations_and_residual(activation, geometry):
    shape, kernel, strides, dilations, pads = geometry
    for residual in (False, True):
        x, w, tiled, res, params, expected, out_shape = _depthwise_case(
            shape, kernel, strides, dilations, pads, np.float32, residual, activation
        )
        for threads in (1, 3, None):
            y = _run_depthwise(threads, x, w, tiled, res, params, out_shape, strides, dilations, pads)
            np.testing.assert_allclose(y, expected, **TOLERANCE[np.float32])


@pytest.mark.parametrize("offset", [0, 1, 4, 12])
@pytest.mark.parametrize(
    "geometry", [MOBILENET[4], MOBILENET[7], ((1, 9, 9, 64), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1))]
)
def test_depthwise_at_every_alignment(offset, geometry):
    """Input vectors start anywhere in a cache line (unaligned blocks at both ends of the channels)."""
    shape, kernel, strides, dilations, pads = geometry
    x, w, tiled, res, params, expected, out_shape = _depthwise_case(
        shape, kernel, strides, dilations, pads, np.float32, True, ("LeakyRelu", 0.1, 0.0)
    )
    buffer = np.empty(x.size + 32, np.float32)
    start = (offset - buffer.ctypes.data // 4) % 16  # x at offset floats past a 64-byte boundary
    moved = buffer[start : start + x.size].reshape(x.shape)
    moved[...] = x
    y = _run_depthwise(1, moved, w, tiled, res, params, out_shape, strides, dilations, pads)
    np.testing.assert_allclose(y, expected, **TOLERANCE[np.float32])


def test_depthwise_runs_in_c_and_declines_what_it_does_not_take():
    shape, kernel, strides, dilations, pads = MOBILENET[4]
    x, w, tiled, _, params, expected, out_shape = _depthwise_case(
        shape, kernel, strides, dilations, pads, np.float32, False, ("Relu", 0.0, 0.0)
    )
    y = np.empty(out_shape, np.float32)
    assert _c().depthwise(1, x, w, tiled, y, False, y, *strides, *dilations, *pads[:2], params) is None
    np.testing.assert_allclose(y, expected, **TOLERANCE[np.float32])
    wide = np.empty(shape[:3] + (2 * shape[3],), np.float32)
    wide[..., : shape[3]] = x
    strided = wide[..., : shape[3]]  # not contiguous: numba computes it
    assert _c().depthwise(1, strided, w, tiled, y, False, y, *strides, *dilations, *pads[:2], params) is NotImplemented
    z = np.empty(out_shape, np.float32)
    facade.depthwise(strided, w, tiled, z, False, z, *strides, *dilations, *pads[:2], params)
    np.testing.assert_allclose(z, expected, **TOLERANCE[np.float32])
    out = np.empty(out_shape, np.float32)  # mixed dtypes, a negative pad, the output over the residual
    assert (
        _c().depthwise(1, x.astype(np.float64), w, tiled, out, False, out, *strides, 1, 1, 2, 2, params)
        is NotImplemented
    )
    assert _c().depthwise(1, x, w, tiled, out, False, out, *strides, 1, 1, -1, 2, params) is NotImplemented
    assert _c().depthwise(1, x, w, tiled, out, True, out, *strides, 1, 1, 2, 2, params) is NotImplemented


def test_depthwise_skips_taps_outside_the_image_even_with_infinite_weights():
    shape, kernel, strides, dilations, pads = MOBILENET[7]
    x, w, tiled, res, params, _, out_shape = _depthwise_case(
        shape, kernel, strides, dilations, pads, np.float32, False, (None, 0.0, 0.0)
    )
    w[0, 0, :4] = np.inf  # reaches only the pixels whose first tap is inside: the others stay finite
    expected = reference_depthwise(x, w, tiled[: shape[3]], strides, dilations, pads, out_shape[1:3])
    y = _run_depthwise(1, x, w, tiled, res, params, out_shape, strides, dilations, pads)
    np.testing.assert_allclose(y, expected, **TOLERANCE[np.float32])
    assert np.isfinite(y[0, 0, 0]).all() and not np.isfinite(y[0, 3, 3, :4]).any()


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finish(activation, dtype):
    channels, rows = 24, 301
    bias = RNG.standard_normal(channels).astype(dtype)
    tiled = np.tile(bias, 22)  # 528 values: rows do not end on a period
    params = store_params(*activation, np.dtype(dtype))
    values = RNG.standard_normal(rows * channels).astype(dtype)
    res = RNG.standard_normal(rows * channels).astype(dtype)
    for kernel, has_res in itertools.product((facade.finish, facade.finish_par), (False, True)):
        y = values.copy()
        kernel(y, tiled, res if has_res else y, has_res, params)
        expected = (
            values.astype(np.float64).reshape(rows, channels) + bias + (res.reshape(rows, channels) if has_res else 0)
        )
        np.testing.assert_allclose(y.reshape(rows, channels), activate(expected, *activation), **TOLERANCE[dtype])


@pytest.mark.parametrize("activation", ACTIVATIONS[1:3] + ACTIVATIONS[5:])
@pytest.mark.parametrize("sizes", [(1, 8, 16), (4, 37, 300), (49, 96, 24), (3, 5, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm(activation, sizes, dtype):
    rows, depth, outputs = sizes
    x = RNG.standard_normal((rows, depth)).astype(dtype)
    w = RNG.standard_normal((depth, outputs)).astype(dtype)
    bias = np.tile(RNG.standard_normal(outputs).astype(dtype), 3)
    res = RNG.standard_normal((rows, outputs)).astype(dtype)
    params = store_params(*activation, np.dtype(dtype))
    for has_res in (False, True):
        y = np.empty((rows, outputs), dtype)
        facade.gemm(x, w, bias, res if has_res else y, has_res, y, params)
        expected = x.astype(np.float64) @ w + bias[:outputs] + (res if has_res else 0)
        np.testing.assert_allclose(y, activate(expected, *activation), rtol=1e-5, atol=1e-5)


def reference_im2col(x, n, oh0, oh1, ow_count, kernel, strides, dilations, pads):
    height, width, channels = x.shape[1:]
    rows = []
    for oh, ow in itertools.product(range(oh0, oh1), range(ow_count)):
        taps = []
        for i, j in itertools.product(range(kernel[0]), range(kernel[1])):
            ih, iw = oh * strides[0] + i * dilations[0] - pads[0], ow * strides[1] + j * dilations[1] - pads[1]
            inside = 0 <= ih < height and 0 <= iw < width
            taps.append(x[n, ih, iw] if inside else np.zeros(channels, x.dtype))
        rows.append(np.concatenate(taps))
    return np.array(rows)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", [((3, 3), (1, 1), (1, 1), (1, 1)), ((3, 2), (2, 1), (1, 2), (0, 2))])
def test_im2col(dtype, geometry):
    kernel, strides, dilations, pads = geometry
    x = RNG.standard_normal((2, 7, 6, 5)).astype(dtype)
    ow_count = (6 + 2 * pads[1] - (kernel[1] - 1) * dilations[1] - 1) // strides[1] + 1
    cols = np.full((2 * ow_count, kernel[0] * kernel[1] * 5), np.nan, dtype)
    facade.im2col(x, cols, 1, 1, 3, *kernel, *strides, *dilations, *pads)
    np.testing.assert_array_equal(cols, reference_im2col(x, 1, 1, 3, ow_count, kernel, strides, dilations, pads))


@pytest.mark.parametrize("activations", [(("Relu", 0.0, 0.0), ("HardSigmoid", 1 / 6, 0.5)),
                                         (("HardSwish", 0.0, 0.0), ("Clip", 0.0, 1.0)),
                                         (("LeakyRelu", 0.2, 0.0), (None, 0.0, 0.0))])  # fmt: skip
@pytest.mark.parametrize("sizes", [(1, 56, 16, 8), (2, 7, 576, 144), (1, 1, 3, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_squeeze_excitation(activations, sizes, dtype):
    images, side, channels, hidden = sizes
    x = RNG.standard_normal((images, side * side, channels)).astype(dtype)
    w1 = RNG.standard_normal((channels, hidden)).astype(dtype) / 4
    w2 = RNG.standard_normal((hidden, channels)).astype(dtype) / 4
    b1, b2 = RNG.standard_normal(hidden).astype(dtype), RNG.standard_normal(channels).astype(dtype)
    y = np.empty_like(x)
    (first, gate) = activations
    facade.squeeze_excitation(x.reshape(images, -1), w1, b1, w2, b2, y.reshape(images, -1),
                              store_params(*first, np.dtype(dtype)), store_params(*gate, np.dtype(dtype)))  # fmt: skip
    mean = x.astype(np.float64).mean(axis=1)
    scale = activate(activate(mean @ w1 + b1, *first) @ w2 + b2, *gate)
    np.testing.assert_allclose(y, x * scale[:, None, :], rtol=1e-5, atol=1e-5)


def test_strided_arrays_go_to_numba():
    x = RNG.standard_normal((4, 20)).astype(np.float32)[:, ::2]
    w = RNG.standard_normal((10, 6)).astype(np.float32)
    bias = np.zeros(6, np.float32)
    params = store_params(None, 0.0, 0.0, np.dtype(np.float32))
    y = np.empty((4, 6), np.float32)
    assert _c().gemm(x, w, bias, y, False, y, params) is NotImplemented
    facade.gemm(x, w, bias, y, False, y, params)
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)
    assert jit.load("channels_last") is facade
