"""2-D pooling of one image (C, H, W) into (C, OH, OW): max, and average over given counts.

2x2 windows at stride 2 and 3x3 windows (no dilation) are reduced directly, each output one
expression of its taps (pixels at the border checked one by one). Other windows are reduced
separably, each pass over contiguous rows so the loops vectorise: per
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
def _pixel(plane, oh, o, kh, kw, sh, sw, dh, dw, ph, pw, is_max, fill):
    """One window reduced with bounds checks (taps outside the plane skipped)."""
    acc = fill
    started = False
    for i in range(kh):
        ih = oh * sh + i * dh - ph
        if ih < 0 or ih >= plane.shape[0]:
            continue
        src = plane[ih]
        for j in range(kw):
            iw = o * sw + j * dw - pw
            if iw < 0 or iw >= plane.shape[1]:
                continue
            if started:
                acc = _combine(acc, src[iw], is_max)
            else:
                acc = src[iw]
                started = True
    return acc


@njit(inline="always")
def _pool_direct(x, y, counts, c0, c1, kh, kw, sh, sw, dh, dw, ph, pw, is_max, fill):
    """Small outputs: each window reduced directly (short rows would cost more in loop set-up)."""
    for c in range(c0, c1):
        plane = x[c]
        for oh in range(y.shape[1]):
            out = y[c, oh]
            for o in range(y.shape[2]):
                acc = _pixel(plane, oh, o, kh, kw, sh, sw, dh, dw, ph, pw, is_max, fill)
                out[o] = acc if is_max else acc / counts[oh, o]


@njit(inline="always")
def _pool2(x, y, counts, c0, c1, is_max):
    """2x2 windows at stride 2, all inside the image: each output one expression (loads of
    stride 2 vectorise; a pass per tap writing the output back would not)."""
    for c in range(c0, c1):
        for oh in range(y.shape[1]):
            r0 = x[c, 2 * oh]
            r1 = x[c, 2 * oh + 1]
            out = y[c, oh]
            if is_max:
                for o in range(y.shape[2]):
                    m = _combine(r0[2 * o], r0[2 * o + 1], True)
                    m = _combine(m, r1[2 * o], True)
                    out[o] = _combine(m, r1[2 * o + 1], True)
            else:
                row_counts = counts[oh]
                for o in range(y.shape[2]):
                    out[o] = (r0[2 * o] + r0[2 * o + 1] + r1[2 * o] + r1[2 * o + 1]) / row_counts[o]


@njit(inline="always")
def _row3(r0, r1, r2, out, row_counts, sw, is_max, tmp):
    """One output row of 3x3 windows over three framed rows (every window inside); called
    with a literal stride where it is 1 or 2, so the loads vectorise."""
    if is_max:  # down the three rows, contiguously, then across at the stride
        span = (out.shape[0] - 1) * sw + 3 if out.shape[0] else 0
        for k in range(span):
            tmp[k] = _combine(_combine(r0[k], r1[k], True), r2[k], True)
        for t in range(out.shape[0]):
            j = t * sw
            out[t] = _combine(_combine(tmp[j], tmp[j + 1], True), tmp[j + 2], True)
    else:
        for t in range(out.shape[0]):
            j = t * sw
            total = r0[j] + r0[j + 1] + r0[j + 2] + r1[j] + r1[j + 1] + r1[j + 2] + r2[j] + r2[j + 1] + r2[j + 2]
            out[t] = total / row_counts[t]


@njit(inline="always")
def _pool3(x, y, counts, c0, c1, sh, sw, ph, pw, is_max, fill):
    """3x3 windows (no dilation) over each plane copied into a frame of ``fill`` (pads and
    ceil_mode's overhang), so every window is one pass of whole output rows."""
    height = x.shape[1]
    width = x.shape[2]
    oh_count = y.shape[1]
    ow_count = y.shape[2]
    frame_h = max(ph + height, (oh_count - 1) * sh + 3)
    frame_w = max(pw + width, (ow_count - 1) * sw + 3)
    frame = np.empty((frame_h, frame_w), x.dtype)
    for r in range(frame_h):
        for k in range(frame_w):
            frame[r, k] = fill
    tmp = np.empty(frame_w + 3, x.dtype)  # a row's maxima down the window
    for c in range(c0, c1):
        plane = x[c]
        for r in range(height):
            src = plane[r]
            dst = frame[ph + r, pw : pw + width]
            for k in range(width):
                dst[k] = src[k]
        for oh in range(oh_count):
            top = oh * sh
            if sw == 1:
                _row3(frame[top], frame[top + 1], frame[top + 2], y[c, oh], counts[oh], 1, is_max, tmp)
            elif sw == 2:
                _row3(frame[top], frame[top + 1], frame[top + 2], y[c, oh], counts[oh], 2, is_max, tmp)
            else:
                _row3(frame[top], frame[top + 1], frame[top + 2], y[c, oh], counts[oh], sw, is_max, tmp)


@njit(inline="always")
def _pool_channels(x, y, counts, c0, c1, kh, kw, sh, sw, dh, dw, ph, pw, is_max, fill):
    height = x.shape[1]
    width = x.shape[2]
    oh_count = y.shape[1]
    ow_count = y.shape[2]
    if (
        kh == 2 and kw == 2 and sh == 2 and sw == 2 and dh == 1 and dw == 1 and ph == 0 and pw == 0
        and 2 * oh_count <= height and 2 * ow_count <= width
    ):  # fmt: skip
        _pool2(x, y, counts, c0, c1, is_max)
        return
    if kh == 3 and kw == 3 and dh == 1 and dw == 1:
        _pool3(x, y, counts, c0, c1, sh, sw, ph, pw, is_max, fill)
        return
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
