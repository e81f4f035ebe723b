"""2-D pooling of one image (C, H, W) into (C, OH, OW): max, and average over given counts.

Windows are reduced separably, each pass over contiguous rows so the loops vectorise: per
input row, the padded row is split into column phases (column q of phase b holds padded
column q * sw + b) and every kernel column becomes a contiguous slice of one phase; the row
results are then reduced down the kernel rows. Pads (and ceil_mode's overhang) read -inf for
max and 0 for sums; the average divides by ``counts`` (OH, OW), which the caller computes for
count_include_pad either way.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_OPTS = {"cache": True, "nogil": True, "error_model": "numpy"}
_PAR = dict(_OPTS, parallel=True)


@njit(inline="always")
def _combine(t, v, is_max):
    if is_max:
        return v if (v > t) | (v != v) else t  # NaN propagates, as in numpy.maximum
    return t + v


@njit(inline="always")
def _split_row(src, phases, sw, pw, fill):
    """phases[b, q] = padded column q * sw + b of the row (src[q * sw + b - pw], or fill)."""
    width = src.shape[0]
    pitch = phases.shape[1]
    if sw == 1:
        line = phases[0]
        lead = min(pw, pitch)
        for q in range(lead):
            line[q] = fill
        count = max(0, min(width, pitch - lead))
        body = line[lead : lead + count]
        for q in range(count):
            body[q] = src[q]
        tail = line[lead + count :]
        for q in range(pitch - lead - count):
            tail[q] = fill
        return
    for b in range(sw):
        line = phases[b]
        for q in range(pitch):
            line[q] = fill
    if sw == 2:
        # input column t sits at padded column t + pw: pairs (2t, 2t + 1) go to the two phases
        even = phases[pw % 2, pw // 2 :]
        odd = phases[(pw + 1) % 2, (pw + 1) // 2 :]
        pairs = min(width // 2, even.shape[0], odd.shape[0])
        for t in range(pairs):
            even[t] = src[2 * t]
            odd[t] = src[2 * t + 1]
        start = 2 * pairs
    else:
        start = 0
    for column in range(start, width):
        padded = column + pw
        q = padded // sw
        if q < pitch:
            phases[padded % sw, q] = src[column]


@njit(inline="always")
def _pool_direct(x, y, counts, c0, c1, kh, kw, sh, sw, dh, dw, ph, pw, is_max, fill):
    """Small outputs: each window reduced directly (short rows would cost more in loop set-up)."""
    height = x.shape[1]
    width = x.shape[2]
    for c in range(c0, c1):
        plane = x[c]
        for oh in range(y.shape[1]):
            out = y[c, oh]
            for o in range(y.shape[2]):
                acc = fill
                started = False
                for i in range(kh):
                    ih = oh * sh + i * dh - ph
                    if ih < 0 or ih >= height:
                        continue
                    src = plane[ih]
                    for j in range(kw):
                        iw = o * sw + j * dw - pw
                        if iw < 0 or iw >= width:
                            continue
                        v = src[iw]
                        if started:
                            acc = _combine(acc, v, is_max)
                        else:
                            acc = v
                            started = True
                if not is_max:
                    acc = acc / counts[oh, o]
                out[o] = acc


@njit(inline="always")
def _pool_channels(x, y, counts, c0, c1, kh, kw, sh, sw, dh, dw, ph, pw, is_max, fill):
    height = x.shape[1]
    width = x.shape[2]
    oh_count = y.shape[1]
    ow_count = y.shape[2]
    if ow_count < 16:
        _pool_direct(x, y, counts, c0, c1, kh, kw, sh, sw, dh, dw, ph, pw, is_max, fill)
        return
    pitch = ow_count + ((kw - 1) * dw) // sw
    phases = np.empty((sw, pitch), x.dtype)
    rows = np.empty((height, ow_count), x.dtype)
    for c in range(c0, c1):
        plane = x[c]
        # 1. along each input row
        for ih in range(height):
            _split_row(plane[ih], phases, sw, pw, fill)
            out = rows[ih]
            first = phases[0]
            for o in range(ow_count):
                out[o] = first[o]
            for j in range(1, kw):
                part = phases[(j * dw) % sw, (j * dw) // sw :]
                for o in range(ow_count):
                    out[o] = _combine(out[o], part[o], is_max)
        # 2. down the kernel rows
        for oh in range(oh_count):
            out = y[c, oh]
            started = False
            for i in range(kh):
                ih = oh * sh + i * dh - ph
                if ih < 0 or ih >= height:
                    continue
                src = rows[ih]
                if not started:
                    for o in range(ow_count):
                        out[o] = src[o]
                    started = True
                else:
                    for o in range(ow_count):
                        out[o] = _combine(out[o], src[o], is_max)
            if not started:
                for o in range(ow_count):
                    out[o] = fill
            if not is_max:
                row_counts = counts[oh]
                for o in range(ow_count):
                    out[o] = out[o] / row_counts[o]


@njit(**_OPTS)
def max_pool(x, y, kh, kw, sh, sw, dh, dw, ph, pw, lowest):
    """Window maxima; ``lowest`` (-inf) fills the pads."""
    _pool_channels(x, y, y[0], 0, x.shape[0], kh, kw, sh, sw, dh, dw, ph, pw, True, lowest)


@njit(**_PAR)
def max_pool_par(x, y, kh, kw, sh, sw, dh, dw, ph, pw, lowest):
    channels = x.shape[0]
    chunks = min(channels, 16)
    for k in prange(chunks):
        _pool_channels(x, y, y[0], k * channels // chunks, (k + 1) * channels // chunks,
                       kh, kw, sh, sw, dh, dw, ph, pw, True, lowest)  # fmt: skip


@njit(**_OPTS)
def average_pool(x, y, counts, kh, kw, sh, sw, dh, dw, ph, pw):
    """Window sums over the positions inside the input, divided by ``counts``."""
    _pool_channels(x, y, counts, 0, x.shape[0], kh, kw, sh, sw, dh, dw, ph, pw, False, 0.0)


@njit(**_PAR)
def average_pool_par(x, y, counts, kh, kw, sh, sw, dh, dw, ph, pw):
    channels = x.shape[0]
    chunks = min(channels, 16)
    for k in prange(chunks):
        _pool_channels(x, y, counts, k * channels // chunks, (k + 1) * channels // chunks,
                       kh, kw, sh, sw, dh, dw, ph, pw, False, 0.0)  # fmt: skip


@njit(**dict(_OPTS, fastmath={"reassoc", "contract"}))
def plane_means(x, y):
    """y[r] = the mean of row r of x (rows, size), summed in float64 (GlobalAveragePool)."""
    size = x.shape[1]
    for r in range(x.shape[0]):
        row = x[r]
        total = 0.0
        for i in range(size):
            total += row[i]
        y[r] = total / size
