"""Channels-last (NHWC) convolution kernels with fused bias, residual and activation.

Tensors are (N, H, W, C) C-contiguous: the inner loops run over the channels of one pixel,
contiguous in memory, so they vectorise whatever the kernel size, stride or dilation. Each
kernel writes every output element; the epilogue (``+ bias``, ``+ res`` when ``has_res``,
then the activation) runs over runs of output rows while they are in cache. The activation is
the piecewise-linear form ``params`` = (p, q, lo, hi, r, mul) gives (see ``_store``): none,
Relu, LeakyRelu, Clip, HardSigmoid and HardSwish; callers apply any other afterwards. One
form for all of them keeps every kernel a single, quickly compiled function.

Kernels (``_par`` variants split the rows over numba's threads):

* ``depthwise(x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params)``: a depthwise
  convolution, x (N, H, W, C), w (kh, kw, C), res and y (N, OH, OW, C); pixels whose taps all
  fall inside the image take an unrolled path for 3x3 and 5x5 kernels;
* ``im2col(x, cols, n, oh0, oh1, kh, kw, sh, sw, dh, dw, ph, pw)``: rows ``(oh - oh0) * OW +
  ow`` of cols ((oh1 - oh0) * OW, kh * kw * C) hold the taps of output row oh of image n
  (zeros outside the image), for a GEMM with the (kh * kw * C, M) weight;
* ``finish(y, tiled, res, has_res, params)``: ``y = act(y + bias + res)`` in place over y
  (P, C) seen flat;
* ``gemm(x, w, bias, res, has_res, y, params)``: y (P, M) = act(x (P, K) @ w (K, M) + bias +
  res), for products too small for a BLAS call to pay;
* ``squeeze_excitation(x, w1, b1, w2, b2, y, params1, params2)``: a whole
  squeeze-and-excitation block (mean over pixels, two small products, the scaling).

``tiled`` is the per-channel bias repeated to a multiple of C (at least a few hundred
values), so the epilogue's loops run long even when C is small.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_OPTS = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": {"contract"}}
_PAR = dict(_OPTS, parallel=True)
_CHUNKS = 32  # parallel work items at most


@njit(inline="always")
def _store(dst, src, shift, res, has_res, params):
    """``dst = act(src + shift (+ res))`` over 1-D runs of one length, where ``act`` is the
    piecewise-linear form ``params`` = (p, q, lo, hi, r, mul) describes:
    ``g = clip(p * v + q, lo, hi)``, ``act(v) = (v * g if mul else g) + r * min(v, 0)``.
    ``dst`` may be ``src``. Inlined, so that an in-place call is seen as one (a compiled
    callee's overlap check would fall back to scalar loops). The activation is computed
    (``p * v + q``), never a select of the loaded value: ``v if v > 0 else 0`` in place
    compiles to masked stores, slow on AMD."""
    if has_res:
        for k in range(dst.shape[0]):
            dst[k] = src[k] + shift[k] + res[k]
        _activate(dst, params)
    else:
        _activate_from(dst, src, shift, params)


@njit(inline="always")
def _clip(g, lo, hi):
    """min(max(g, lo), hi), as Clip (hi wins when lo > hi; NaN stays NaN)."""
    g = lo if g < lo else g
    return hi if g > hi else g


@njit(inline="always")
def _activate_from(dst, src, shift, params):
    p = params[0]
    q = params[1]
    lo = params[2]
    hi = params[3]
    r = params[4]
    zero = p - p
    count = dst.shape[0]
    if params[5] != zero:  # HardSwish: v * clip(v / 6 + 1 / 2, 0, 1)
        for k in range(count):
            v = src[k] + shift[k]
            dst[k] = v * _clip(p * v + q, lo, hi)
    elif r != zero:  # LeakyRelu
        for k in range(count):
            v = src[k] + shift[k]
            dst[k] = _clip(p * v + q, lo, hi) + r * (v if v < zero else zero)
    else:  # none, Relu, Clip, HardSigmoid
        for k in range(count):
            v = src[k] + shift[k]
            dst[k] = _clip(p * v + q, lo, hi)


@njit(inline="always")
def _add_activate(run, res, params):
    """``run = act(run + res)`` in place."""
    p = params[0]
    q = params[1]
    lo = params[2]
    hi = params[3]
    r = params[4]
    zero = p - p
    count = run.shape[0]
    if params[5] != zero:
        for k in range(count):
            v = run[k] + res[k]
            run[k] = v * _clip(p * v + q, lo, hi)
    elif r != zero:
        for k in range(count):
            v = run[k] + res[k]
            run[k] = _clip(p * v + q, lo, hi) + r * (v if v < zero else zero)
    else:
        for k in range(count):
            v = run[k] + res[k]
            run[k] = _clip(p * v + q, lo, hi)


@njit(inline="always")
def _activate(run, params):
    """In place; only after a pass that wrote ``run`` (see ``_store``)."""
    p = params[0]
    q = params[1]
    lo = params[2]
    hi = params[3]
    r = params[4]
    zero = p - p
    count = run.shape[0]
    if params[5] != zero:
        for k in range(count):
            v = run[k]
            run[k] = v * _clip(p * v + q, lo, hi)
    elif r != zero:
        for k in range(count):
            v = run[k]
            run[k] = _clip(p * v + q, lo, hi) + r * (v if v < zero else zero)
    else:
        for k in range(count):
            v = run[k]
            run[k] = _clip(p * v + q, lo, hi)


# --- depthwise ---------------------------------------------------------------------------------


@njit(inline="always")
def _first_valid(start, step, size):
    """The first k >= 0 with 0 <= start + k * step (the kernel taps from the image's start)."""
    return 0 if start >= 0 else (-start + step - 1) // step


@njit(inline="always")
def _end_valid(start, step, size, count):
    """One past the last k < count with start + k * step < size."""
    if start >= size:
        return 0
    return min(count, (size - 1 - start) // step + 1)


@njit(inline="always")
def _row_taps(y, n, oh, ow, x, ih, taps, first, j_lo, j_hi, iw0, dw):
    """``y[n, oh, ow] += sum_j taps[first + j] * x[n, ih, iw0 + j * dw]`` for j in j_lo..j_hi
    (all inside the image), up to five taps per pass over the channels. Plain indexing, no
    array views: views made in branches cost reference counting per pixel."""
    channels = y.shape[3]
    j = j_lo
    while j < j_hi:
        left = j_hi - j
        q = iw0 + j * dw
        f = first + j
        if left >= 5:
            for c in range(channels):
                y[n, oh, ow, c] += (
                    taps[f, c] * x[n, ih, q, c] + taps[f + 1, c] * x[n, ih, q + dw, c]
                    + taps[f + 2, c] * x[n, ih, q + 2 * dw, c] + taps[f + 3, c] * x[n, ih, q + 3 * dw, c]
                    + taps[f + 4, c] * x[n, ih, q + 4 * dw, c]
                )  # fmt: skip
            j += 5
        elif left >= 3:
            for c in range(channels):
                y[n, oh, ow, c] += (
                    taps[f, c] * x[n, ih, q, c] + taps[f + 1, c] * x[n, ih, q + dw, c]
                    + taps[f + 2, c] * x[n, ih, q + 2 * dw, c]
                )  # fmt: skip
            j += 3
        else:
            for c in range(channels):
                y[n, oh, ow, c] += taps[f, c] * x[n, ih, q, c]
            j += 1


@njit(**_OPTS)
def _border_pixel(y, n, oh, ow, x, taps, bias, ih0, iw0, i_lo, i_hi, kw, dh, dw):
    """A pixel some of whose taps fall outside the image: bias, then a pass per kernel row."""
    width = x.shape[2]
    for c in range(y.shape[3]):
        y[n, oh, ow, c] = bias[c]
    j_lo = _first_valid(iw0, dw, width)
    j_hi = _end_valid(iw0, dw, width, kw)
    for i in range(i_lo, i_hi):
        _row_taps(y, n, oh, ow, x, ih0 + i * dh, taps, i * kw, j_lo, j_hi, iw0, dw)


@njit(**_OPTS)
def _row_epilogue(y, res, has_res, n, oh, params):
    run = y[n, oh].reshape(y.shape[2] * y.shape[3])
    if has_res:
        _add_activate(run, res[n, oh].reshape(run.shape[0]), params)
    else:
        _activate(run, params)


@njit(**_OPTS)
def _depthwise3_rows(x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params, r0, r1):
    """Output rows r0..r1 of the (N * OH) rows of a 3x3 depthwise convolution: a pixel whose
    taps are all inside the image is one pass over its channels."""
    height = x.shape[1]
    width = x.shape[2]
    channels = x.shape[3]
    oh_count = y.shape[1]
    ow_count = y.shape[2]
    taps = w.reshape(9, channels)
    bias = tiled[:channels]
    ow_lo = min(ow_count, (pw + sw - 1) // sw)
    ow_hi = max(ow_lo, min(ow_count, (width - 1 - 2 * dw + pw) // sw + 1))
    for r in range(r0, r1):
        n = r // oh_count
        oh = r - n * oh_count
        ih0 = oh * sh - ph
        i_lo = _first_valid(ih0, dh, height)
        i_hi = _end_valid(ih0, dh, height, 3)
        full_rows = i_lo == 0 and i_hi == 3
        for ow in range(ow_count):
            iw0 = ow * sw - pw
            if not (full_rows and ow >= ow_lo and ow < ow_hi):
                _border_pixel(y, n, oh, ow, x, taps, bias, ih0, iw0, i_lo, i_hi, 3, dh, dw)
                continue
            i1 = ih0 + dh
            i2 = ih0 + 2 * dh
            j1 = iw0 + dw
            j2 = iw0 + 2 * dw
            for c in range(channels):
                y[n, oh, ow, c] = (
                    bias[c] + taps[0, c] * x[n, ih0, iw0, c] + taps[1, c] * x[n, ih0, j1, c] + taps[2, c] * x[n, ih0, j2, c]
                    + taps[3, c] * x[n, i1, iw0, c] + taps[4, c] * x[n, i1, j1, c] + taps[5, c] * x[n, i1, j2, c]
                    + taps[6, c] * x[n, i2, iw0, c] + taps[7, c] * x[n, i2, j1, c] + taps[8, c] * x[n, i2, j2, c]
                )  # fmt: skip
        _row_epilogue(y, res, has_res, n, oh, params)


@njit(**_OPTS)
def _depthwise5_rows(x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params, r0, r1):
    """Rows r0..r1 of a 5x5 depthwise convolution: a pixel whose taps are all inside the image
    is one pass over its channels."""
    height = x.shape[1]
    width = x.shape[2]
    channels = x.shape[3]
    oh_count = y.shape[1]
    ow_count = y.shape[2]
    taps = w.reshape(25, channels)
    bias = tiled[:channels]
    ow_lo = min(ow_count, (pw + sw - 1) // sw)
    ow_hi = max(ow_lo, min(ow_count, (width - 1 - 4 * dw + pw) // sw + 1))
    for r in range(r0, r1):
        n = r // oh_count
        oh = r - n * oh_count
        ih0 = oh * sh - ph
        i_lo = _first_valid(ih0, dh, height)
        i_hi = _end_valid(ih0, dh, height, 5)
        full_rows = i_lo == 0 and i_hi == 5
        for ow in range(ow_count):
            iw0 = ow * sw - pw
            if not (full_rows and ow >= ow_lo and ow < ow_hi):
                _border_pixel(y, n, oh, ow, x, taps, bias, ih0, iw0, i_lo, i_hi, 5, dh, dw)
                continue
            i0 = ih0
            i1 = ih0 + dh
            i2 = ih0 + 2 * dh
            i3 = ih0 + 3 * dh
            i4 = ih0 + 4 * dh
            j0 = iw0
            j1 = iw0 + dw
            j2 = iw0 + 2 * dw
            j3 = iw0 + 3 * dw
            j4 = iw0 + 4 * dw
            for c in range(channels):
                y[n, oh, ow, c] = (
                    bias[c] + taps[0, c] * x[n, i0, j0, c] + taps[1, c] * x[n, i0, j1, c] + taps[2, c] * x[n, i0, j2, c] + taps[3, c] * x[n, i0, j3, c] + taps[4, c] * x[n, i0, j4, c]
                    + taps[5, c] * x[n, i1, j0, c] + taps[6, c] * x[n, i1, j1, c] + taps[7, c] * x[n, i1, j2, c] + taps[8, c] * x[n, i1, j3, c] + taps[9, c] * x[n, i1, j4, c]
                    + taps[10, c] * x[n, i2, j0, c] + taps[11, c] * x[n, i2, j1, c] + taps[12, c] * x[n, i2, j2, c] + taps[13, c] * x[n, i2, j3, c] + taps[14, c] * x[n, i2, j4, c]
                    + taps[15, c] * x[n, i3, j0, c] + taps[16, c] * x[n, i3, j1, c] + taps[17, c] * x[n, i3, j2, c] + taps[18, c] * x[n, i3, j3, c] + taps[19, c] * x[n, i3, j4, c]
                    + taps[20, c] * x[n, i4, j0, c] + taps[21, c] * x[n, i4, j1, c] + taps[22, c] * x[n, i4, j2, c] + taps[23, c] * x[n, i4, j3, c] + taps[24, c] * x[n, i4, j4, c]
                )  # fmt: skip
        _row_epilogue(y, res, has_res, n, oh, params)


@njit(**_OPTS)
def _depthwise_any_rows(x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params, r0, r1):
    """Rows r0..r1 of a depthwise convolution of any kernel: a pass per kernel row."""
    height = x.shape[1]
    width = x.shape[2]
    channels = x.shape[3]
    kh = w.shape[0]
    kw = w.shape[1]
    oh_count = y.shape[1]
    ow_count = y.shape[2]
    taps = w.reshape(kh * kw, channels)
    bias = tiled[:channels]
    for r in range(r0, r1):
        n = r // oh_count
        oh = r - n * oh_count
        ih0 = oh * sh - ph
        i_lo = _first_valid(ih0, dh, height)
        i_hi = _end_valid(ih0, dh, height, kh)
        for ow in range(ow_count):
            _border_pixel(y, n, oh, ow, x, taps, bias, ih0, ow * sw - pw, i_lo, i_hi, kw, dh, dw)
        _row_epilogue(y, res, has_res, n, oh, params)


@njit(inline="always")
def _depthwise_rows(x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params, r0, r1):
    if w.shape[0] == 3 and w.shape[1] == 3:
        _depthwise3_rows(x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params, r0, r1)
    elif w.shape[0] == 5 and w.shape[1] == 5:
        _depthwise5_rows(x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params, r0, r1)
    else:
        _depthwise_any_rows(x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params, r0, r1)


@njit(**_OPTS)
def depthwise(x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params):
    rows = y.shape[0] * y.shape[1]
    _depthwise_rows(x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params, 0, rows)


@njit(**_PAR)
def depthwise_par(x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params):
    rows = y.shape[0] * y.shape[1]
    chunks = min(rows, _CHUNKS)
    for k in prange(chunks):
        _depthwise_rows(x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params,
                        k * rows // chunks, (k + 1) * rows // chunks)  # fmt: skip


# --- im2col for dense convolutions -------------------------------------------------------------


@njit(**_OPTS)
def im2col(x, cols, n, oh0, oh1, kh, kw, sh, sw, dh, dw, ph, pw):
    height = x.shape[1]
    width = x.shape[2]
    channels = x.shape[3]
    ow_count = cols.shape[0] // (oh1 - oh0)
    image = x[n]
    for oh in range(oh0, oh1):
        for ow in range(ow_count):
            row = cols[(oh - oh0) * ow_count + ow]
            for i in range(kh):
                ih = oh * sh + i * dh - ph
                for j in range(kw):
                    iw = ow * sw + j * dw - pw
                    dst = row[(i * kw + j) * channels : (i * kw + j + 1) * channels]
                    if ih < 0 or ih >= height or iw < 0 or iw >= width:
                        for c in range(channels):
                            dst[c] = 0
                    else:
                        src = image[ih, iw]
                        for c in range(channels):
                            dst[c] = src[c]


# --- epilogue over (P, C) ---------------------------------------------------------------------


@njit(**_OPTS)
def _finish_range(flat, tiled, res, has_res, params, start, stop):
    period = tiled.shape[0]
    at = start
    while at < stop:
        end = min(stop, at + period)
        run = flat[at:end]
        _store(run, run, tiled[: end - at], res[at:end] if has_res else run, has_res, params)
        at = end


@njit(**_OPTS)
def finish(y, tiled, res, has_res, params):
    """``y = act(y + bias + res)``: y and res flat views of (P, C); ``tiled`` the bias repeated
    a whole number of times (its length a multiple of C)."""
    _finish_range(y, tiled, res, has_res, params, 0, y.shape[0])


@njit(**_PAR)
def finish_par(y, tiled, res, has_res, params):
    period = tiled.shape[0]
    blocks = (y.shape[0] + period - 1) // period
    chunks = min(blocks, _CHUNKS)
    for k in prange(chunks):
        start = (k * blocks // chunks) * period
        stop = min(y.shape[0], ((k + 1) * blocks // chunks) * period)
        _finish_range(y, tiled, res, has_res, params, start, stop)


# --- small pointwise products ------------------------------------------------------------------


@njit(**_OPTS)
def gemm(x, w, bias, res, has_res, y, params):
    """y (P, M) = act(x (P, K) @ w (K, M) + bias (+ res (P, M))): each row accumulates K
    scaled weight rows."""
    depth = w.shape[0]
    outputs = w.shape[1]
    acc = np.empty(outputs, y.dtype)
    for p in range(y.shape[0]):
        src = x[p]
        for m in range(outputs):
            acc[m] = 0
        for k in range(depth):
            v = src[k]
            wk = w[k]
            for m in range(outputs):
                acc[m] += v * wk[m]
        out = y[p]
        _store(out, acc, bias, res[p] if has_res else out, has_res, params)


# --- squeeze and excitation --------------------------------------------------------------------


@njit(**_OPTS)
def squeeze_excitation(x, w1, b1, w2, b2, y, params1, params2):
    """y = x * gate(act(mean(x) @ w1 + b1) @ w2 + b2) per image: x and y (N, P * C) flat,
    w1 (C, C1), w2 (C1, C). The passes over x run over runs of a whole number of pixels (at
    least 256 values), so they vectorise when C is small; the sums accumulate in float64."""
    channels = w1.shape[0]
    hidden_count = w1.shape[1]
    size = x.shape[1]
    positions = size // channels
    period = channels * max(1, 256 // channels)
    total = np.empty(period, np.float64)
    mean = np.empty(channels, x.dtype)
    acc1 = np.empty(hidden_count, x.dtype)
    hidden = np.empty(hidden_count, x.dtype)
    acc2 = np.empty(channels, x.dtype)
    gate = np.empty(channels, x.dtype)
    tiled = np.empty(period, x.dtype)
    for n in range(x.shape[0]):
        image = x[n]
        for k in range(period):
            total[k] = 0.0
        at = 0
        while at < size:
            end = min(size, at + period)
            run = image[at:end]
            for k in range(end - at):
                total[k] += run[k]
            at = end
        for c in range(channels):
            t = 0.0
            for r in range(period // channels):
                t += total[r * channels + c]
            mean[c] = t / positions
        for j in range(hidden_count):
            acc1[j] = 0
        for c in range(channels):
            v = mean[c]
            weights = w1[c]
            for j in range(hidden_count):
                acc1[j] += v * weights[j]
        _store(hidden, acc1, b1, hidden, False, params1)
        for c in range(channels):
            acc2[c] = 0
        for j in range(hidden_count):
            v = hidden[j]
            weights = w2[j]
            for c in range(channels):
                acc2[c] += v * weights[c]
        _store(gate, acc2, b2, gate, False, params2)
        for k in range(period):
            tiled[k] = gate[k % channels]
        out = y[n]
        at = 0
        while at < size:
            end = min(size, at + period)
            src = image[at:end]
            dst = out[at:end]
            for k in range(end - at):
                dst[k] = src[k] * tiled[k]
            at = end
