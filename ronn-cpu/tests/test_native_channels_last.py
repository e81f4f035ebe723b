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


# --- stem: a dense convolution from an NCHW image into channels-last -------------------------


def reference_conv(x, w, bias, strides, dilations, pads, group=1):
    """A direct NCHW convolution in float64, (N, M, OH, OW): the input padded with zeros
    (pads top, left, bottom, right), every tap a strided slice, summed with einsum."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    out_channels, per_group, kh, kw = w.shape
    padded = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    oh = (padded.shape[2] - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (padded.shape[3] - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    y = np.zeros((x.shape[0], out_channels, oh, ow)) + np.asarray(bias, np.float64).reshape(-1, 1, 1)
    outputs = out_channels // group
    for g, i, j in itertools.product(range(group), range(kh), range(kw)):
        rows = slice(i * dilations[0], i * dilations[0] + (oh - 1) * strides[0] + 1, strides[0])
        cols = slice(j * dilations[1], j * dilations[1] + (ow - 1) * strides[1] + 1, strides[1])
        window = padded[:, g * per_group : (g + 1) * per_group, rows, cols]
        taps = w[g * outputs : (g + 1) * outputs, :, i, j]
        y[:, g * outputs : (g + 1) * outputs] += np.einsum("nchw,mc->nmhw", window, taps)
    return y


def _stem_case(geometry, dtype, residual, activation):
    """Operands of ``stem`` (the weight as rows (c, i, j) x M) and the expected (N, OH, OW, M)."""
    channels, out_channels, kernel, strides, dilations, pads, size, batch = geometry
    x = RNG.standard_normal((batch, channels, *size)).astype(dtype)
    w = (RNG.standard_normal((out_channels, channels, *kernel)) / np.sqrt(channels * np.prod(kernel))).astype(dtype)
    bias = RNG.standard_normal(out_channels).astype(dtype)
    tiled = np.tile(bias, max(1, -(-512 // out_channels)))
    rows = np.ascontiguousarray(w.reshape(out_channels, -1).T)
    expected = reference_conv(x, w, bias, strides, dilations, pads).transpose(0, 2, 3, 1)
    res = RNG.standard_normal(expected.shape).astype(dtype) if residual else None
    if residual:
        expected = expected + res
    params = store_params(*activation, np.dtype(dtype))
    return x, rows, tiled, res, params, activate(expected, *activation)


def _run_stem(threads, x, rows, tiled, res, params, out_shape, geometry):
    """The stem's output: threads a count (the C function, which must take the arguments),
    "serial" or "parallel" (the facade's stem and stem_par)."""
    _, _, kernel, strides, dilations, pads, _, _ = geometry
    y = np.full(out_shape, np.nan, x.dtype)
    has_res = res is not None
    args = (x, rows, tiled, res if has_res else y, has_res, y, *kernel, *strides, *dilations, *pads[:2], params)
    if threads == "serial":
        facade.stem(*args)
    elif threads == "parallel":
        facade.stem_par(*args)
    else:
        assert _c().stem(threads, *args) is None
    return y


# (C, M, kernel, strides, dilations, pads top, left, bottom, right, size, batch)
STEMS = [
    (3, 16, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), (224, 224), 1),  # MobileNetV3's stem
    (3, 16, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), (17, 23), 2),  # odd sizes, two images
    (3, 24, (3, 3), (1, 1), (1, 1), (0, 1, 2, 1), (17, 23), 2),  # stride 1, asymmetric pads, 16 + 8 channels
    (4, 40, (5, 5), (2, 1), (2, 2), (2, 1, 0, 3), (17, 23), 1),  # 5x5, dilation 2, 32 + 8 channels
    (1, 8, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), (5, 7), 2),  # 1x1, one channel, half a vector
    (1, 16, (1, 1), (2, 2), (1, 1), (1, 0, 0, 1), (9, 8), 1),  # 1x1 of stride 2 with pads
    (3, 64, (7, 7), (2, 2), (1, 1), (3, 3, 3, 3), (31, 29), 1),  # a ResNet stem
    (4, 8, (3, 3), (3, 3), (1, 1), (1, 1, 1, 1), (17, 23), 2),  # stride 3: the kernels of any stride
    (3, 16, (3, 3), (1, 2), (2, 1), (2, 1, 2, 1), (11, 13), 1),  # row dilation
    (3, 100, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), (17, 23), 1),  # more channels than one block
    (3, 16, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), (3, 5), 1),  # fewer pixels in a row than a group
    (1, 8, (3, 3), (1, 1), (1, 1), (3, 3, 3, 3), (2, 2), 1),  # pads wider than the image
    (4, 24, (3, 2), (1, 2), (1, 1), (1, 0, 1, 1), (9, 10), 2),  # a 3x2 kernel
]


@pytest.mark.parametrize("geometry", STEMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stem_matches_reference(geometry, dtype):
    x, rows, tiled, res, params, expected = _stem_case(geometry, dtype, False, ("HardSwish", 0.0, 0.0))
    y = _run_stem(1, x, rows, tiled, res, params, expected.shape, geometry)
    np.testing.assert_allclose(y, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("geometry", [STEMS[1], STEMS[3], STEMS[6], STEMS[9]])
def test_stem_activations_residual_and_threads(activation, geometry):
    for dtype, residual in itertools.product((np.float32, np.float64), (False, True)):
        x, rows, tiled, res, params, expected = _stem_case(geometry, dtype, residual, activation)
        for threads in (1, 3, "serial", "parallel"):
            y = _run_stem(threads, x, rows, tiled, res, params, expected.shape, geometry)
            np.testing.assert_allclose(y, expected, **TOLERANCE[dtype], err_msg=f"{dtype.__name__} {threads}")


def test_stem_reads_zeros_outside_the_image():
    """Taps outside the image are zeros times their weights, as in the padded reference: an
    infinite weight makes NaN at the border pixels only."""
    geometry = STEMS[1]
    x, rows, tiled, res, params, _ = _stem_case(geometry, np.float32, False, (None, 0.0, 0.0))
    rows[0, :4] = np.inf  # channel 0, tap (0, 0): outside the image for the first output row and column
    w = rows.T.reshape(16, 3, 3, 3)
    expected = reference_conv(x, w, tiled[:16], *geometry[3:6]).transpose(0, 2, 3, 1)
    y = _run_stem(1, x, rows, tiled, res, params, expected.shape, geometry)
    np.testing.assert_allclose(y, expected, **TOLERANCE[np.float32])
    assert np.isnan(y[:, 0, :, :4]).all() and np.isnan(y[:, :, 0, :4]).all() and not np.isnan(y[:, 1:, 1:]).any()


def test_stem_declines_what_it_does_not_take():
    geometry = STEMS[2]
    x, rows, tiled, _, params, expected = _stem_case(geometry, np.float32, False, ("Relu", 0.0, 0.0))
    _, _, kernel, strides, dilations, pads, _, _ = geometry
    geo = (*kernel, *strides, *dilations, *pads[:2])
    y = np.empty(expected.shape, np.float32)
    wide = np.empty(x.shape[:3] + (2 * x.shape[3],), np.float32)
    wide[..., : x.shape[3]] = x
    strided = wide[..., : x.shape[3]]  # not contiguous: the facade's numba path computes it
    assert _c().stem(1, strided, rows, tiled, y, False, y, *geo, params) is NotImplemented
    facade.stem(strided, rows, tiled, y, False, y, *geo, params)
    np.testing.assert_allclose(y, expected, **TOLERANCE[np.float32])
    z = np.full(expected.shape, np.nan, np.float32)
    facade.stem_par(strided, rows, tiled, z, False, z, *geo, params)
    np.testing.assert_allclose(z, expected, **TOLERANCE[np.float32])
    out = np.empty(expected.shape, np.float32)
    declined = [
        (x.astype(np.float64), rows, tiled, out, False, out, *geo, params),  # mixed dtypes
        (x, rows[:-1], tiled, out, False, out, *geo, params),  # weight rows other than C * kh * kw
        (x, rows, tiled, out, False, out, *geo[:6], -1, 1, params),  # a negative pad
        (x, rows, tiled, out, False, out, *geo[:2], 0, 1, *geo[4:], params),  # stride 0
        (x, rows, tiled, out, True, out, *geo, params),  # the output over the residual
        (x, rows, tiled, out[:1], True, out, *geo, params),  # a residual of another size
        (x, rows, tiled[:10], out, False, out, *geo, params),  # a bias shorter than M
        (x, rows, tiled, out.reshape(-1, 24), False, out.reshape(-1, 24), *geo, params),  # a 2-D output
    ]
    for args in declined:
        assert _c().stem(1, *args) is NotImplemented
    flat = np.empty(max(x.size, expected.size), np.float32)  # the output over the input
    over = flat[: expected.size].reshape(expected.shape)
    image = flat[: x.size].reshape(x.shape)
    assert _c().stem(1, image, rows, tiled, over, False, over, *geo, params) is NotImplemented


# --- the stem through sessions: the layout pass makes it channels_last=2 ----------------------


def _onnx_model(nodes, inputs, outputs, initializers, ronn_domain=False) -> bytes:
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    imports = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("ronn", 1)] if ronn_domain else [])
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    return model.SerializeToString()


def _value(name, dtype, shape=None):
    from onnx import helper

    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)


def _activation_nodes(activation, source, target, dtype):
    """The ONNX node computing the activation (and Clip's bounds as initializers)."""
    from onnx import helper, numpy_helper

    name, alpha, beta = activation
    if name is None:
        return [helper.make_node("Identity", [source], [target])], []
    if name == "Clip":
        bounds = [numpy_helper.from_array(np.array(v, dtype), n) for v, n in ((alpha, "lo"), (beta, "hi"))]
        return [helper.make_node("Clip", [source, "lo", "hi"], [target])], bounds
    attributes = {"LeakyRelu": {"alpha": alpha}, "HardSigmoid": {"alpha": alpha, "beta": beta}}.get(name, {})
    return [helper.make_node(name, [source], [target], **attributes)], []


def _stem_model(geometry, dtype, activation):
    """Stem convolution, its activation, then a depthwise 3x3 convolution: a region the layout pass
    makes channels-last, the stem reading the image as it is (channels_last=2)."""
    from onnx import helper, numpy_helper

    channels, out_channels, kernel, strides, dilations, pads, size, batch = geometry
    w = (RNG.standard_normal((out_channels, channels, *kernel)) / np.sqrt(channels * np.prod(kernel))).astype(dtype)
    b = RNG.standard_normal(out_channels).astype(dtype)
    dw = RNG.standard_normal((out_channels, 1, 3, 3)).astype(dtype) / 3
    db = RNG.standard_normal(out_channels).astype(dtype)
    stem = helper.make_node("Conv", ["x", "w", "b"], ["s"], kernel_shape=list(kernel), strides=list(strides),
                            dilations=list(dilations), pads=list(pads))  # fmt: skip
    act, bounds = _activation_nodes(activation, "s", "a", dtype)
    depthwise = helper.make_node("Conv", ["a", "dw", "db"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                 group=out_channels)  # fmt: skip
    inits = [numpy_helper.from_array(v, n) for v, n in ((w, "w"), (b, "b"), (dw, "dw"), (db, "db"))] + bounds
    model = _onnx_model([stem, *act, depthwise], [_value("x", dtype, [batch, channels, *size])], [_value("y", dtype)],
                        inits)  # fmt: skip
    x = RNG.standard_normal((batch, channels, *size)).astype(dtype)
    first = activate(reference_conv(x, w, b, strides, dilations, pads), *activation)
    expected = reference_conv(first, dw, db, (1, 1), (1, 1), (1, 1, 1, 1), group=out_channels)
    return model, x, expected


def _counting(monkeypatch):
    """Count the facade's stem calls (the session's plan looks the kernel up when it first runs)."""
    calls = []
    for name in ("stem", "stem_par"):
        kernel = getattr(facade, name)
        monkeypatch.setattr(facade, name, lambda *args, kernel=kernel: calls.append(1) or kernel(*args))
    return calls


#: (C, M, kernel, strides, dilations, pads, size, batch) of stems in a region
SESSION_STEMS = [
    (3, 16, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), (17, 23), 2),
    (3, 8, (3, 3), (1, 1), (1, 1), (0, 1, 2, 1), (17, 23), 1),  # stride 1, asymmetric pads
    (4, 24, (5, 5), (2, 2), (2, 2), (2, 2, 2, 2), (17, 23), 2),  # 5x5, dilation 2
    (1, 40, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), (17, 23), 2),  # 1x1 of one channel
    (3, 24, (1, 1), (2, 2), (1, 1), (0, 1, 1, 0), (17, 23), 1),  # 1x1 of stride 2 with pads
    (3, 40, (3, 3), (2, 1), (1, 1), (1, 1, 1, 1), (16, 16), 1),
]
#: the activations the stem applies itself (float attributes are float32 in the file: values it holds exactly)
SESSION_ACTIVATIONS = [(None, 0.0, 0.0), ("Relu", 0.0, 0.0), ("LeakyRelu", 0.125, 0.0), ("Clip", -0.5, 0.75),
                       ("HardSigmoid", 0.25, 0.5), ("HardSwish", 0.0, 0.0)]  # fmt: skip


@pytest.mark.parametrize("activation", SESSION_ACTIVATIONS, ids=[a[0] or "none" for a in SESSION_ACTIVATIONS])
@pytest.mark.parametrize("geometry", SESSION_STEMS, ids=[f"s{i}" for i in range(len(SESSION_STEMS))])
def test_stem_in_a_channels_last_region(geometry, activation, monkeypatch):
    import ronn

    ort = pytest.importorskip("onnxruntime")
    calls = _counting(monkeypatch)
    for dtype in (np.float32, np.float64):
        model, x, expected = _stem_model(geometry, dtype, activation)
        session = ronn.InferenceSession(model)
        fused = [n for n in session.model.graph.nodes if n.op_type == "FusedConv"]
        stems = [n for n in fused if n.attributes.get("channels_last") == 2]
        assert len(stems) == 1 and stems[0].attributes.get("group", 1) == 1
        assert stems[0].attributes.get("activation") == (activation[0] or "Identity")
        before = len(calls)
        got = session.run(None, {"x": x})[0]
        assert len(calls) > before  # the stem kernel ran
        assert got.dtype == dtype and got.shape == expected.shape
        rtol = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)
        if dtype == np.float32:  # onnxruntime has no float64 Conv
            theirs = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            np.testing.assert_allclose(got, theirs, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stem_fused_conv_with_residual(dtype, threads, monkeypatch):
    """``ronn::FusedConv`` with channels_last=2 and a residual, as the layout pass writes it."""
    import ronn
    from onnx import helper, numpy_helper

    calls = _counting(monkeypatch)
    for geometry, activation in ((STEMS[1], ("HardSwish", 0.0, 0.0)), (STEMS[3], ("LeakyRelu", 0.125, 0.0)),
                                 (STEMS[0], ("Clip", 0.0, 6.0))):  # fmt: skip
        channels, out_channels, kernel, strides, dilations, pads, size, batch = geometry
        x = RNG.standard_normal((batch, channels, *size)).astype(dtype)
        w = (RNG.standard_normal((out_channels, channels, *kernel)) / np.sqrt(channels * np.prod(kernel))).astype(dtype)
        b = RNG.standard_normal(out_channels).astype(dtype)
        conv = reference_conv(x, w, b, strides, dilations, pads).transpose(0, 2, 3, 1)
        z = RNG.standard_normal(conv.shape).astype(dtype)
        attributes = {"activation": activation[0], "activation_alpha": activation[1]}
        if activation[0] == "Clip":
            attributes["activation_beta"] = activation[2]
        node = helper.make_node("FusedConv", ["x", "W", "B", "z"], ["y"], domain="ronn", kernel_shape=list(kernel),
                                strides=list(strides), dilations=list(dilations), pads=list(pads), group=1,
                                channels_last=2, **attributes)  # fmt: skip
        model = _onnx_model([node], [_value("x", dtype, list(x.shape)), _value("z", dtype, list(z.shape))],
                            [_value("y", dtype)], [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
                            ronn_domain=True)  # fmt: skip
        so = ronn.SessionOptions()
        so.graph_optimization_level = ronn.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = threads
        got = ronn.InferenceSession(model, so).run(None, {"x": x, "z": z})[0]
        rtol = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got, activate(conv + z, *activation), rtol=rtol, atol=rtol)
    assert calls
