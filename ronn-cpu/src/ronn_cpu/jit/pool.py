"""2-D pooling of one image (C, H, W) into (C, OH, OW): max, and average over given counts.

Windows that reach past the input (pads, ceil_mode) skip the missing positions: the max of
the positions inside, the sum of the positions inside divided by ``counts`` (which the
caller computes for count_include_pad either way).
"""

from __future__ import annotations

from numba import njit, prange

_OPTS = {"cache": True, "nogil": True, "error_model": "numpy"}
_PAR = dict(_OPTS, parallel=True)


@njit(inline="always")
def _range_inside(offset, stride, size, count):
    """Output indices o in [lo, hi) with 0 <= o * stride + offset < size."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    if offset >= size:
        return lo, lo
    hi = (size - 1 - offset) // stride + 1
    if hi > count:
        hi = count
    return lo, (hi if hi > lo else lo)


@njit(inline="always")
def _max_channels(x, y, c0, c1, kh, kw, sh, sw, dh, dw, ph, pw, lowest):
    height = x.shape[1]
    width = x.shape[2]
    oh_count = y.shape[1]
    ow_count = y.shape[2]
    for c in range(c0, c1):
        for oh in range(oh_count):
            out = y[c, oh]
            for o in range(ow_count):
                out[o] = lowest
            for i in range(kh):
                ih = oh * sh + i * dh - ph
                if ih < 0 or ih >= height:
                    continue
                for j in range(kw):
                    offset = j * dw - pw
                    lo, hi = _range_inside(offset, sw, width, ow_count)
                    target = out[lo:hi]
                    if sw == 1:
                        src = x[c, ih, lo + offset : hi + offset]
                    else:
                        src = x[c, ih, lo * sw + offset : (hi - 1) * sw + offset + 1 : sw]
                    for o in range(hi - lo):
                        v = src[o]
                        t = target[o]
                        target[o] = t if (v <= t or t != t) else v  # NaN propagates, as in numpy


@njit(**_OPTS)
def max_pool(x, y, kh, kw, sh, sw, dh, dw, ph, pw, lowest):
    _max_channels(x, y, 0, x.shape[0], kh, kw, sh, sw, dh, dw, ph, pw, lowest)


@njit(**_PAR)
def max_pool_par(x, y, kh, kw, sh, sw, dh, dw, ph, pw, lowest):
    channels = x.shape[0]
    for c in prange(channels):
        _max_channels(x, y, c, c + 1, kh, kw, sh, sw, dh, dw, ph, pw, lowest)


@njit(inline="always")
def _average_channels(x, y, counts, c0, c1, kh, kw, sh, sw, dh, dw, ph, pw):
    height = x.shape[1]
    width = x.shape[2]
    oh_count = y.shape[1]
    ow_count = y.shape[2]
    for c in range(c0, c1):
        for oh in range(oh_count):
            out = y[c, oh]
            for o in range(ow_count):
                out[o] = 0
            for i in range(kh):
                ih = oh * sh + i * dh - ph
                if ih < 0 or ih >= height:
                    continue
                for j in range(kw):
                    offset = j * dw - pw
                    lo, hi = _range_inside(offset, sw, width, ow_count)
                    target = out[lo:hi]
                    if sw == 1:
                        src = x[c, ih, lo + offset : hi + offset]
                    else:
                        src = x[c, ih, lo * sw + offset : (hi - 1) * sw + offset + 1 : sw]
                    for o in range(hi - lo):
                        target[o] += src[o]
            row_counts = counts[oh]
            for o in range(ow_count):
                out[o] /= row_counts[o]


@njit(**_OPTS)
def average_pool(x, y, counts, kh, kw, sh, sw, dh, dw, ph, pw):
    _average_channels(x, y, counts, 0, x.shape[0], kh, kw, sh, sw, dh, dw, ph, pw)


@njit(**_PAR)
def average_pool_par(x, y, counts, kh, kw, sh, sw, dh, dw, ph, pw):
    channels = x.shape[0]
    for c in prange(channels):
        _average_channels(x, y, counts, c, c + 1, kh, kw, sh, sw, dh, dw, ph, pw)
