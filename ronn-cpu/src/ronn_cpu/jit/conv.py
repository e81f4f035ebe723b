"""Convolution helpers: im2col for the GEMM path, the shifted sums of the kn2row path, direct
depthwise convolutions.

All work on one image at a time in NCHW: ``x`` is (C, H, W) C-contiguous. The depthwise
kernel has a ``_par`` variant that splits channels over numba's threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_OPTS = {"cache": True, "nogil": True, "error_model": "numpy"}
_PAR = dict(_OPTS, parallel=True)


@njit(inline="always")
def _first_inside(offset, stride, count):
    """The first output index o >= 0 with o * stride + offset >= 0, at most ``count``."""
    if offset >= 0:
        return 0
    first = (-offset + stride - 1) // stride
    return first if first < count else count


@njit(inline="always")
def _end_inside(offset, stride, size, count):
    """One past the last output index o < count with o * stride + offset < size."""
    if offset >= size:
        return 0
    last = (size - 1 - offset) // stride + 1
    return last if last < count else count


@njit(inline="always")
def _split_pairs(src, even, odd, pad):
    """even[q] / odd[q] = the padded row's columns 2q / 2q + 1 (padded column p is
    src[p - pad], zero outside); the loads pair up, so the loop vectorises."""
    width = src.shape[0]
    pitch = even.shape[0]
    for q in range(pitch):
        even[q] = 0
        odd[q] = 0
    # input column t sits at padded column t + pad
    first = pad % 2  # parity of the padded column of input column 0
    start = pad // 2  # its phase index
    pairs = width // 2
    if start + pairs > pitch:
        pairs = max(0, pitch - start - 1)
    a = even if first == 0 else odd
    b = odd if first == 0 else even
    shift = 0 if first == 0 else 1  # input column 2t + 1 lands at phase index start + t + shift
    ta = a[start:]
    tb = b[start + shift :]
    limit = min(pairs, ta.shape[0], tb.shape[0])
    for t in range(limit):
        ta[t] = src[2 * t]
        tb[t] = src[2 * t + 1]
    # the columns the paired loop left: an odd last column, or pairs cut off by the pitch
    for column in range(2 * limit, width):
        padded = column + pad
        q = padded // 2
        if q < pitch:
            if padded % 2 == 0:
                even[q] = src[column]
            else:
                odd[q] = src[column]


@njit(inline="always")
def _im2col_channels(x, cols, c0, c1, kh, kw, sh, sw, dh, dw, ph, pw, oh_count, ow_count, oh0, oh1):
    """Rows ``(c, i, j)`` of cols (C*kh*kw, (oh1 - oh0) * OW) for channels c0..c1 of x
    (C, H, W): the taps of output rows oh0..oh1 of OH."""
    height = x.shape[1]
    width = x.shape[2]
    positions = (oh1 - oh0) * ow_count
    # the input rows output rows oh0..oh1 read
    ih_first = max(0, oh0 * sh - ph)
    ih_stop = min(height, (oh1 - 1) * sh + (kh - 1) * dh - ph + 1)
    # stride 1 with OW == W: the valid rows of one tap are one run of the input plane
    runs = sh == 1 and sw == 1 and ow_count == width
    # strided columns: per channel, the zero-padded columns split by phase (column q of phase
    # b holds input column q * sw + b - pw), so every tap's columns are contiguous
    pitch = ow_count + ((kw - 1) * dw) // sw
    phases = np.empty((sw if sw > 1 else 0, height, pitch), x.dtype)
    for c in range(c0, c1):
        plane = x[c]
        flat = plane.reshape(-1)
        if sw == 2:
            for ih in range(ih_first, ih_stop):
                _split_pairs(plane[ih], phases[0, ih], phases[1, ih], pw)
        elif sw > 1:
            for b in range(sw):
                lo = _first_inside(b - pw, sw, pitch)
                hi = max(lo, _end_inside(b - pw, sw, width, pitch))
                for ih in range(ih_first, ih_stop):
                    line = phases[b, ih]
                    for q in range(lo):
                        line[q] = 0
                    tail = line[hi:]
                    for q in range(pitch - hi):
                        tail[q] = 0
                    body = line[lo:hi]
                    src = plane[ih, lo * sw + b - pw : (hi - 1) * sw + b - pw + 1 : sw]
                    for q in range(hi - lo):
                        body[q] = src[q]
        for i in range(kh):
            # output rows whose input row is inside the image
            oh_lo = min(oh1, max(oh0, _first_inside(i * dh - ph, sh, oh_count)))
            oh_hi = max(oh_lo, min(oh1, _end_inside(i * dh - ph, sh, height, oh_count)))
            for j in range(kw):
                row = cols[(c * kh + i) * kw + j]
                offset = j * dw - pw
                lo = _first_inside(offset, sw, ow_count)
                hi = max(lo, _end_inside(offset, sw, width, ow_count))
                head = row[: (oh_lo - oh0) * ow_count]
                for k in range((oh_lo - oh0) * ow_count):
                    head[k] = 0
                tail = row[(oh_hi - oh0) * ow_count :]
                for k in range(positions - (oh_hi - oh0) * ow_count):
                    tail[k] = 0
                if oh_hi == oh_lo:
                    continue
                if runs:
                    # row[oh * W + o] = plane[oh + i*dh - ph, o + offset] for every valid oh at once;
                    # the columns that fall outside the plane are zeroed after
                    start = (oh_lo + i * dh - ph) * width + offset
                    count = (oh_hi - oh_lo) * width
                    a = -start if start < 0 else 0
                    b = min(count, flat.size - start)
                    target = row[(oh_lo - oh0) * width + a : (oh_lo - oh0) * width + b]
                    source = flat[start + a : start + b]
                    for k in range(b - a):
                        target[k] = source[k]
                    if lo > 0 or hi < ow_count:
                        for oh in range(oh_lo - oh0, oh_hi - oh0):
                            line = row[oh * width : (oh + 1) * width]
                            for o in range(lo):
                                line[o] = 0
                            end = line[hi:]
                            for o in range(width - hi):
                                end[o] = 0
                    continue
                if sw > 1:
                    # contiguous copies from the column phase holding this tap's columns
                    phase = phases[(j * dw) % sw]
                    q0 = (j * dw) // sw
                    for oh in range(oh_lo, oh_hi):
                        ih = oh * sh + i * dh - ph
                        out = row[(oh - oh0) * ow_count : (oh - oh0 + 1) * ow_count]
                        src = phase[ih, q0 : q0 + ow_count]
                        for o in range(ow_count):
                            out[o] = src[o]
                    continue
                for oh in range(oh_lo, oh_hi):
                    ih = oh * sh + i * dh - ph
                    out = row[(oh - oh0) * ow_count : (oh - oh0 + 1) * ow_count]
                    for o in range(lo):
                        out[o] = 0
                    end = out[hi:]
                    for o in range(ow_count - hi):
                        end[o] = 0
                    body = out[lo:hi]
                    src = plane[ih, lo + offset : hi + offset]
                    for o in range(hi - lo):
                        body[o] = src[o]


@njit(**_OPTS)
def im2col_rows(x, cols, kh, kw, sh, sw, dh, dw, ph, pw, oh_count, ow_count, oh0, oh1):
    """Fill ``cols`` (C*kh*kw, (oh1 - oh0) * OW) with the taps of output rows oh0..oh1 of
    ``x`` (C, H, W) convolved into (OH, OW); pads read zero. (Serial only: it runs at memory
    speed, a second thread gains nothing.)"""
    _im2col_channels(x, cols, 0, x.shape[0], kh, kw, sh, sw, dh, dw, ph, pw, oh_count, ow_count, oh0, oh1)


@njit(inline="always")
def _kn2row_channels(parts, y, bias, m0, m1, kh, kw, dh, dw, pitch, oh, ow):
    """y[m, oy, ox] = bias[m] + sum over taps (i, j) of parts[(i*kw + j)*M + m] read at
    (oy + i*dh) * pitch + ox + j*dw, for output channels m0..m1 (y is (M, OH*OW))."""
    out_channels = y.shape[0]
    for m in range(m0, m1):
        b = bias[m]
        out = y[m]
        if kh == 3 and kw == 3:  # nine streams, each output written once
            p0 = parts[m]
            p1 = parts[out_channels + m]
            p2 = parts[2 * out_channels + m]
            p3 = parts[3 * out_channels + m]
            p4 = parts[4 * out_channels + m]
            p5 = parts[5 * out_channels + m]
            p6 = parts[6 * out_channels + m]
            p7 = parts[7 * out_channels + m]
            p8 = parts[8 * out_channels + m]
            for oy in range(oh):
                r0 = oy * pitch
                r1 = r0 + dh * pitch
                r2 = r1 + dh * pitch
                o = oy * ow
                for ox in range(ow):
                    out[o + ox] = (
                        b + p0[r0 + ox] + p1[r0 + ox + dw] + p2[r0 + ox + 2 * dw]
                        + p3[r1 + ox] + p4[r1 + ox + dw] + p5[r1 + ox + 2 * dw]
                        + p6[r2 + ox] + p7[r2 + ox + dw] + p8[r2 + ox + 2 * dw]
                    )  # fmt: skip
        else:
            for oy in range(oh):
                o = oy * ow
                for ox in range(ow):
                    out[o + ox] = b
                for i in range(kh):
                    for j in range(kw):
                        src = parts[(i * kw + j) * out_channels + m]
                        base = (oy + i * dh) * pitch + j * dw
                        for ox in range(ow):
                            out[o + ox] += src[base + ox]


@njit(**_OPTS)
def kn2row_sum(parts, y, bias, kh, kw, dh, dw, pitch, oh, ow):
    """The kn2row convolution's second half: the shifted sums of the per-tap products
    ``parts`` ((kh*kw*M, HP*pitch), one GEMM over the padded image) into y (M, OH*OW)."""
    _kn2row_channels(parts, y, bias, 0, y.shape[0], kh, kw, dh, dw, pitch, oh, ow)


@njit(**_PAR)
def kn2row_sum_par(parts, y, bias, kh, kw, dh, dw, pitch, oh, ow):
    channels = y.shape[0]
    chunks = min(channels, 16)
    for k in prange(chunks):
        _kn2row_channels(parts, y, bias, k * channels // chunks, (k + 1) * channels // chunks,
                         kh, kw, dh, dw, pitch, oh, ow)  # fmt: skip


@njit(inline="always")
def _depthwise_phases(x, w, bias, y, c0, c1, sh, sw, dh, dw, ph, pw):
    """Depthwise convolution as long vectorised passes, any kernel, stride and dilation.

    Per channel, the zero-padded input is split into sh x sw phase planes (row r, column q of
    phase (a, b) holds padded position (r*sh + a, q*sw + b)); kernel tap (i, j) then reads one
    phase at a fixed offset for every output, so the output, laid out with the phases' row
    pitch, is a sum of one long multiply-add pass per tap. The valid columns are copied out.
    """
    height = x.shape[1]
    width = x.shape[2]
    kh = w.shape[1]
    kw = w.shape[2]
    oh_count = y.shape[1]
    ow_count = y.shape[2]
    rows = oh_count + ((kh - 1) * dh) // sh  # phase plane rows
    pitch = ow_count + ((kw - 1) * dw) // sw  # phase plane columns: the output's row pitch
    phases = np.empty((sh * sw, rows * pitch), x.dtype)
    ext = np.empty(oh_count * pitch, x.dtype)
    count = (oh_count - 1) * pitch + ow_count
    for c in range(c0, c1):
        plane = x[c]
        # fill the phases from the padded input
        for a in range(sh):
            for r in range(rows):
                ih = r * sh + a - ph
                for b in range(sw):
                    line = phases[a * sw + b, r * pitch : (r + 1) * pitch]
                    if ih < 0 or ih >= height:
                        for q in range(pitch):
                            line[q] = 0
                        continue
                    src = plane[ih]
                    # columns q with 0 <= q*sw + b - pw < width
                    lo = _first_inside(b - pw, sw, pitch)
                    hi = max(lo, _end_inside(b - pw, sw, width, pitch))
                    for q in range(lo):
                        line[q] = 0
                    tail = line[hi:]
                    for q in range(pitch - hi):
                        tail[q] = 0
                    body = line[lo:hi]
                    if sw == 1:
                        part = src[lo + b - pw : hi + b - pw]
                    else:
                        part = src[lo * sw + b - pw : (hi - 1) * sw + b - pw + 1 : sw]
                    for q in range(hi - lo):
                        body[q] = part[q]
        b0 = bias[c]
        for k in range(count):
            ext[k] = b0
        run = ext[:count]
        for i in range(kh):
            a = (i * dh) % sh
            ri = (i * dh) // sh
            for bb in range(sw):
                # the taps of kernel row i reading phase column bb, three (or two) per pass
                j = 0
                while j < kw and (j * dw) % sw != bb:
                    j += 1
                while j < kw:
                    j2 = j + 1
                    while j2 < kw and (j2 * dw) % sw != bb:
                        j2 += 1
                    j3 = j2 + 1
                    while j3 < kw and (j3 * dw) % sw != bb:
                        j3 += 1
                    phase = phases[a * sw + bb]
                    o1 = ri * pitch + (j * dw) // sw
                    s1 = phase[o1 : o1 + count]
                    w1 = w[c, i, j]
                    if j2 >= kw:
                        for k in range(count):
                            run[k] += w1 * s1[k]
                        break
                    o2 = ri * pitch + (j2 * dw) // sw
                    s2 = phase[o2 : o2 + count]
                    w2 = w[c, i, j2]
                    if j3 >= kw:
                        for k in range(count):
                            run[k] += w1 * s1[k] + w2 * s2[k]
                        break
                    o3 = ri * pitch + (j3 * dw) // sw
                    s3 = phase[o3 : o3 + count]
                    w3 = w[c, i, j3]
                    for k in range(count):
                        run[k] += w1 * s1[k] + w2 * s2[k] + w3 * s3[k]
                    j = j3 + 1
                    while j < kw and (j * dw) % sw != bb:
                        j += 1
        for oh in range(oh_count):
            line = ext[oh * pitch : oh * pitch + ow_count]
            out = y[c, oh]
            for o in range(ow_count):
                out[o] = line[o]


@njit(**_OPTS)
def depthwise(x, w, bias, y, sh, sw, dh, dw, ph, pw):
    """A depthwise convolution of one image: x (C, H, W), w (C, kh, kw), y (C, OH, OW),
    plus ``bias`` (C,); pads read zero."""
    _depthwise_phases(x, w, bias, y, 0, x.shape[0], sh, sw, dh, dw, ph, pw)


@njit(**_PAR)
def depthwise_par(x, w, bias, y, sh, sw, dh, dw, ph, pw):
    channels = x.shape[0]
    chunks = min(channels, 16)
    for k in prange(chunks):
        _depthwise_phases(x, w, bias, y, k * channels // chunks, (k + 1) * channels // chunks,
                          sh, sw, dh, dw, ph, pw)  # fmt: skip


@njit(**_OPTS)
def depthwise_small(x, w, bias, y, sh, sw, dh, dw, ph, pw):
    """``depthwise`` for small planes: channels-last inside, each tap one pass over channels.

    x is transposed to (H*W, C) and w to (kh*kw, C); every output position sums its valid
    taps as multiply-adds over contiguous channel vectors, then is stored back in (C, OH, OW).
    """
    channels = x.shape[0]
    height = x.shape[1]
    width = x.shape[2]
    kh = w.shape[1]
    kw = w.shape[2]
    oh_count = y.shape[1]
    ow_count = y.shape[2]
    flat_x = x.reshape(channels, height * width)
    flat_w = w.reshape(channels, kh * kw)
    xt = np.empty((height * width, channels), x.dtype)
    for c in range(channels):
        row = flat_x[c]
        for q in range(height * width):
            xt[q, c] = row[q]
    wt = np.empty((kh * kw, channels), x.dtype)
    for c in range(channels):
        row = flat_w[c]
        for t in range(kh * kw):
            wt[t, c] = row[t]
    yt = np.empty((oh_count * ow_count, channels), x.dtype)
    for oh in range(oh_count):
        for o in range(ow_count):
            acc = yt[oh * ow_count + o]
            for c in range(channels):
                acc[c] = bias[c]
            for i in range(kh):
                ih = oh * sh + i * dh - ph
                if ih < 0 or ih >= height:
                    continue
                for j in range(kw):
                    iw = o * sw + j * dw - pw
                    if iw < 0 or iw >= width:
                        continue
                    src = xt[ih * width + iw]
                    weight = wt[i * kw + j]
                    for c in range(channels):
                        acc[c] += weight[c] * src[c]
    flat_y = y.reshape(channels, oh_count * ow_count)
    for c in range(channels):
        out = flat_y[c]
        for p in range(oh_count * ow_count):
            out[p] = yt[p, c]


@njit(**dict(_OPTS, fastmath={"contract"}))
def gemm_small(w, x, y, shift):
    """y (M, P) = w (M, K) @ x (K, P) (+ shift per row): a 1x1 convolution too small for BLAS
    to pay for its call, with 8 or more positions: rows accumulate multiply-adds over P."""
    rows = w.shape[0]
    depth = w.shape[1]
    positions = x.shape[1]
    for m in range(rows):
        out = y[m]
        b = shift[m]  # zeros when there is no shift (never a product: 0 * inf is NaN)
        for p in range(positions):
            out[p] = b
        weights = w[m]
        for k in range(depth):
            wk = weights[k]
            src = x[k]
            for p in range(positions):
                out[p] += wk * src[p]


@njit(**dict(_OPTS, fastmath={"reassoc", "contract"}))
def gemm_small_dot(w, x, y, shift):
    """``gemm_small`` for fewer than 8 positions: one dot product per output over K (the sum
    may be reassociated, so it vectorises)."""
    rows = w.shape[0]
    depth = w.shape[1]
    positions = x.shape[1]
    columns = np.empty((positions, depth), x.dtype)
    for k in range(depth):
        for p in range(positions):
            columns[p, k] = x[k, p]
    for m in range(rows):
        weights = w[m]
        for p in range(positions):
            column = columns[p]
            acc = shift[m]  # zeros when there is no shift
            for k in range(depth):
                acc += weights[k] * column[k]
            y[m, p] = acc
