/* Convolution helpers (the C twin of ronn_cpu/jit/conv.py), one image at a time in NCHW.

   im2col_rows(x, cols, kh, kw, sh, sw, dh, dw, ph, pw, oh_count, ow_count, oh0, oh1):
       cols ((C*kh*kw, (oh1-oh0)*OW)) = the taps of output rows oh0..oh1 of x (C, H, W);
   kn2row_sum(threads, parts, y, bias, kh, kw, dh, dw, pitch, oh, ow):
       y[m, oy*ow + ox] = bias[m] + sum over taps (i, j) of
       parts[(i*kw + j)*M + m, (oy + i*dh)*pitch + ox + j*dw], taps summed in order;
   depthwise(threads, x, w, bias, y, sh, sw, dh, dw, ph, pw) and depthwise_small(x, w, bias, y,
       sh, sw, dh, dw, ph, pw): x (C, H, W), w (C, kh, kw), y (C, OH, OW);
   gemm_small(w, x, y, shift) and gemm_small_dot(w, x, y, shift): y (M, P) = w (M, K) @ x (K, P)
       + shift[m].
   Pads read zero. Each returns None, or NotImplemented for arguments it does not take.

   The loops exist for float and double: this file includes itself once per type with REAL and
   SFX defined (CONV_LOOPS set), the way epilogue.c includes epilogue_loops.h. */
#ifndef CONV_LOOPS
#include <stdlib.h>

#include "common.h"

/* The first output index o >= 0 with o * stride + offset >= 0, at most count. */
static inline Py_ssize_t first_inside(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t count) {
    if (offset >= 0) return 0;
    Py_ssize_t first = (-offset + stride - 1) / stride;
    return first < count ? first : count;
}

/* One past the last output index o < count with o * stride + offset < size. */
static inline Py_ssize_t end_inside(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t size, Py_ssize_t count) {
    if (offset >= size) return 0;
    Py_ssize_t last = (size - 1 - offset) / stride + 1;
    return last < count ? last : count;
}


/* A convolution's geometry over one (C, H, W) image. */
typedef struct {
    Py_ssize_t channels, height, width, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow;
} Geometry;

/* The kn2row sums' shape: M output channels of oh x ow from rows of the per-tap products. */
typedef struct {
    Py_ssize_t out_channels, kh, kw, dh, dw, pitch, oh, ow;
    Py_ssize_t part_stride, y_stride; /* row lengths of parts and y */
} Kn2row;

/* Output rows at most this wide are summed over the pitch as one run into a buffer, then copied. */
#define KN2ROW_RUN_WIDTH 32
/* The same for depthwise convolutions. */
#define DEPTHWISE_RUN_WIDTH 64

#define CONV_LOOPS
#define REAL float
#define SFX(name) name##_f32
#include "conv.c"
#undef REAL
#undef SFX
#define REAL double
#define SFX(name) name##_f64
#include "conv.c"
#undef REAL
#undef SFX
#undef CONV_LOOPS

/* Whether the output buffer shares memory with any of the count inputs (the loops take them distinct). */
static int overlaps(const Py_buffer *out, Py_buffer *const *inputs, int count) {
    for (int k = 0; k < count; k++)
        if (views_overlap(out, inputs[k])) return 1;
    return 0;
}

static int all_positive(const Py_ssize_t *values, Py_ssize_t count) {
    for (Py_ssize_t k = 0; k < count; k++)
        if (values[k] < 1) return 0;
    return 1;
}

static PyObject *py_im2col_rows(FASTCALL_ARGS) {
    CHECK_NARGS("im2col_rows", 14);
    Py_ssize_t v[12]; /* kh, kw, sh, sw, dh, dw, ph, pw, oh_count, ow_count, oh0, oh1 */
    if (args_ssize(args + 2, 12, v)) return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *x = arrays_real(&arrays, args[0], 0);
    Py_buffer *cols = x ? arrays_real(&arrays, args[1], 1) : NULL;
    if (cols == NULL || x->ndim != 3 || cols->ndim != 2 || !all_positive(v, 6) || v[8] < 0 || v[9] < 0 ||
        v[10] < 0 || v[11] < v[10] || overlaps(cols, &x, 1))
        DECLINE(&arrays);
    Geometry g = {.channels = view_dim(x, 0), .height = view_dim(x, 1), .width = view_dim(x, 2), .kh = v[0],
                  .kw = v[1], .sh = v[2], .sw = v[3], .dh = v[4], .dw = v[5], .ph = v[6], .pw = v[7], .oh = v[8],
                  .ow = v[9]};
    Py_ssize_t oh0 = v[10], oh1 = v[11], pitch = view_dim(cols, 1);
    if (view_dim(cols, 0) < g.channels * g.kh * g.kw || pitch < (oh1 - oh0) * g.ow) DECLINE(&arrays);
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f')
        im2col_rows_f32(x->buf, cols->buf, pitch, &g, oh0, oh1);
    else
        im2col_rows_f64(x->buf, cols->buf, pitch, &g, oh0, oh1);
    Py_END_ALLOW_THREADS
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyObject *py_kn2row_sum(FASTCALL_ARGS) {
    CHECK_NARGS("kn2row_sum", 11);
    Py_ssize_t threads, v[7]; /* kh, kw, dh, dw, pitch, oh, ow */
    if (arg_ssize(args[0], &threads) || args_ssize(args + 4, 7, v)) return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *parts = arrays_real(&arrays, args[1], 0);
    Py_buffer *y = parts ? arrays_real(&arrays, args[2], 1) : NULL;
    Py_buffer *bias = y ? arrays_real(&arrays, args[3], 0) : NULL;
    if (bias == NULL || parts->ndim != 2 || y->ndim != 2 || !all_positive(v, 5) || v[5] < 0 || v[6] < 0 ||
        overlaps(y, (Py_buffer *[]){parts, bias}, 2))
        DECLINE(&arrays);
    Kn2row k = {.out_channels = view_dim(y, 0), .kh = v[0], .kw = v[1], .dh = v[2], .dw = v[3], .pitch = v[4],
                .oh = v[5], .ow = v[6], .part_stride = view_dim(parts, 1), .y_stride = view_dim(y, 1)};
    if (k.out_channels == 0 || k.oh == 0 || k.ow == 0) {
        arrays_release(&arrays);
        Py_RETURN_NONE;
    }
    Py_ssize_t last = (k.oh - 1 + (k.kh - 1) * k.dh) * k.pitch + k.ow - 1 + (k.kw - 1) * k.dw;
    if (view_size(bias) < k.out_channels || k.y_stride < k.oh * k.ow ||
        view_dim(parts, 0) < k.kh * k.kw * k.out_channels || last >= k.part_stride)
        DECLINE(&arrays);
    int nt = threads > 1 ? (int)min_ssize(threads, k.out_channels) : 1;
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f')
        kn2row_sum_f32(parts->buf, y->buf, bias->buf, &k, nt);
    else
        kn2row_sum_f64(parts->buf, y->buf, bias->buf, &k, nt);
    Py_END_ALLOW_THREADS
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

/* The depthwise arguments (x, w, bias, y, sh, sw, dh, dw, ph, pw) as views and a geometry; 0 to decline. */
static int depthwise_args(PyObject *const *args, Arrays *arrays, Py_buffer **views, Geometry *g) {
    Py_ssize_t v[6]; /* sh, sw, dh, dw, ph, pw */
    if (args_ssize(args + 4, 6, v)) return -1;
    for (int k = 0; k < 4; k++) {
        views[k] = arrays_real(arrays, args[k], k == 3);
        if (views[k] == NULL) return 0;
    }
    Py_buffer *x = views[0], *w = views[1], *bias = views[2], *y = views[3];
    if (x->ndim != 3 || w->ndim != 3 || y->ndim != 3 || !all_positive(v, 4) || overlaps(y, views, 3)) return 0;
    *g = (Geometry){.channels = view_dim(x, 0), .height = view_dim(x, 1), .width = view_dim(x, 2),
                    .kh = view_dim(w, 1), .kw = view_dim(w, 2), .sh = v[0], .sw = v[1], .dh = v[2], .dw = v[3],
                    .ph = v[4], .pw = v[5], .oh = view_dim(y, 1), .ow = view_dim(y, 2)};
    return view_dim(w, 0) == g->channels && view_dim(y, 0) == g->channels && view_size(bias) >= g->channels;
}

static PyObject *py_depthwise(FASTCALL_ARGS) {
    CHECK_NARGS("depthwise", 11);
    Py_ssize_t threads;
    if (arg_ssize(args[0], &threads)) return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *views[4];
    Geometry g;
    int ok = depthwise_args(args + 1, &arrays, views, &g);
    if (ok < 0) {
        arrays_release(&arrays);
        return NULL;
    }
    if (!ok) DECLINE(&arrays);
    int nt = threads > 1 ? (int)min_ssize(threads, max_ssize(g.channels, 1)) : 1, done;
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f')
        done = depthwise_f32(views[0]->buf, views[1]->buf, views[2]->buf, views[3]->buf, &g, nt);
    else
        done = depthwise_f64(views[0]->buf, views[1]->buf, views[2]->buf, views[3]->buf, &g, nt);
    Py_END_ALLOW_THREADS
    if (!done) DECLINE(&arrays); /* no memory for the padded planes */
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyObject *py_depthwise_small(FASTCALL_ARGS) {
    CHECK_NARGS("depthwise_small", 10);
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *views[4];
    Geometry g;
    int ok = depthwise_args(args, &arrays, views, &g);
    if (ok < 0) {
        arrays_release(&arrays);
        return NULL;
    }
    if (!ok) DECLINE(&arrays);
    int done;
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f')
        done = depthwise_small_f32(views[0]->buf, views[1]->buf, views[2]->buf, views[3]->buf, &g);
    else
        done = depthwise_small_f64(views[0]->buf, views[1]->buf, views[2]->buf, views[3]->buf, &g);
    Py_END_ALLOW_THREADS
    if (!done) DECLINE(&arrays); /* no memory for the channels-last copies */
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

/* gemm_small's and gemm_small_dot's arguments (w, x, y, shift) as views; 0 to decline. */
static int gemm_args(PyObject *const *args, Arrays *arrays, Py_buffer **views) {
    for (int k = 0; k < 4; k++) {
        views[k] = arrays_real(arrays, args[k], k == 2);
        if (views[k] == NULL) return 0;
    }
    Py_buffer *w = views[0], *x = views[1], *y = views[2], *shift = views[3];
    Py_buffer *inputs[3] = {w, x, shift};
    return w->ndim == 2 && x->ndim == 2 && y->ndim == 2 && !overlaps(y, inputs, 3) &&
           view_dim(w, 1) == view_dim(x, 0) && view_dim(y, 0) == view_dim(w, 0) && view_dim(y, 1) == view_dim(x, 1) &&
           view_size(shift) >= view_dim(w, 0);
}

static PyObject *gemm_call(PyObject *const *args, int dot) {
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *views[4];
    if (!gemm_args(args, &arrays, views)) DECLINE(&arrays);
    Py_ssize_t rows = view_dim(views[0], 0), depth = view_dim(views[0], 1), positions = view_dim(views[1], 1);
    int done = 1;
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f' && dot)
        done = gemm_small_dot_f32(views[0]->buf, views[1]->buf, views[2]->buf, views[3]->buf, rows, depth, positions);
    else if (arrays.kind == 'f')
        gemm_small_f32(views[0]->buf, views[1]->buf, views[2]->buf, views[3]->buf, rows, depth, positions);
    else if (dot)
        done = gemm_small_dot_f64(views[0]->buf, views[1]->buf, views[2]->buf, views[3]->buf, rows, depth, positions);
    else
        gemm_small_f64(views[0]->buf, views[1]->buf, views[2]->buf, views[3]->buf, rows, depth, positions);
    Py_END_ALLOW_THREADS
    if (!done) DECLINE(&arrays);
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyObject *py_gemm_small(FASTCALL_ARGS) {
    CHECK_NARGS("gemm_small", 4);
    return gemm_call(args, 0);
}

static PyObject *py_gemm_small_dot(FASTCALL_ARGS) {
    CHECK_NARGS("gemm_small_dot", 4);
    return gemm_call(args, 1);
}

static PyMethodDef methods[] = {
    METHOD(im2col_rows, "im2col_rows(x, cols, kh, kw, sh, sw, dh, dw, ph, pw, oh_count, ow_count, oh0, oh1)"),
    METHOD(kn2row_sum, "kn2row_sum(threads, parts, y, bias, kh, kw, dh, dw, pitch, oh, ow)"),
    METHOD(depthwise, "depthwise(threads, x, w, bias, y, sh, sw, dh, dw, ph, pw)"),
    METHOD(depthwise_small, "depthwise_small(x, w, bias, y, sh, sw, dh, dw, ph, pw)"),
    METHOD(gemm_small, "gemm_small(w, x, y, shift)"),
    METHOD(gemm_small_dot, "gemm_small_dot(w, x, y, shift)"),
    {NULL, NULL, 0, NULL},
};

DEFINE_MODULE(ronn_native_conv, methods, "Convolution helpers: im2col, kn2row sums, depthwise, small GEMMs.")

#else /* CONV_LOOPS: the loops for one real type, REAL and SFX defined */

static inline void SFX(fill)(REAL *out, Py_ssize_t n, REAL value) {
    for (Py_ssize_t k = 0; k < n; k++) out[k] = value;
}

/* out[k] = 0 for k < n. */
static inline void SFX(zero)(REAL *out, Py_ssize_t n) {
    if (n > 0) memset(out, 0, (size_t)n * sizeof(REAL));
}

/* out[k] = src[k * step] for k < n. */
static inline void SFX(copy_strided)(REAL *restrict out, const REAL *restrict src, Py_ssize_t n, Py_ssize_t step) {
    if (step == 1) {
        if (n > 0) memcpy(out, src, (size_t)n * sizeof(REAL));
    } else if (step == 2)
        for (Py_ssize_t k = 0; k < n; k++) out[k] = src[2 * k];
    else
        for (Py_ssize_t k = 0; k < n; k++) out[k] = src[k * step];
}

/* out[k] += weight * src[k] for k < n. */
static inline void SFX(axpy)(REAL *restrict out, const REAL *restrict src, Py_ssize_t n, REAL weight) {
    for (Py_ssize_t k = 0; k < n; k++) out[k] += weight * src[k];
}

/* Stride 1 with OW == W: the valid rows oh_lo..oh_hi of tap (i, j) are one run of the plane,
   copied at once; the columns outside lo..hi are zeroed after. */
static void SFX(im2col_run)(const REAL *restrict plane, REAL *restrict row, const Geometry *g, Py_ssize_t ih_lo,
                            Py_ssize_t rows, Py_ssize_t offset, Py_ssize_t lo, Py_ssize_t hi) {
    Py_ssize_t width = g->width, start = ih_lo * width + offset, count = rows * width;
    Py_ssize_t a = start < 0 ? -start : 0, b = min_ssize(count, g->height * width - start);
    if (b > a) SFX(copy_strided)(row + a, plane + start + a, b - a, 1);
    if (lo == 0 && hi == width) return;
    for (Py_ssize_t r = 0; r < rows; r++) {
        SFX(zero)(row + r * width, lo);
        SFX(zero)(row + r * width + hi, width - hi);
    }
}

/* Phase b of input row ``src``: line[q] = the padded row's column q * sw + b (input column
   q * sw + b - pw, zero outside the row), for q < count. */
static void SFX(split_phase)(const REAL *restrict src, REAL *restrict line, Py_ssize_t count, Py_ssize_t b,
                             const Geometry *g) {
    Py_ssize_t lo = first_inside(b - g->pw, g->sw, count);
    Py_ssize_t hi = max_ssize(lo, end_inside(b - g->pw, g->sw, g->width, count));
    SFX(zero)(line, lo);
    SFX(copy_strided)(line + lo, src + lo * g->sw + b - g->pw, hi - lo, g->sw);
    SFX(zero)(line + hi, count - hi);
}

/* Tap (i, j) of channel ``plane`` for output rows oh_lo..oh_hi into ``row`` (its first output
   row is oh0), reading the rows directly; columns outside lo..hi read zero. */
static void SFX(im2col_direct)(const REAL *restrict plane, REAL *restrict row, const Geometry *g, Py_ssize_t shift,
                               Py_ssize_t offset, Py_ssize_t oh_lo, Py_ssize_t oh_hi, Py_ssize_t oh0) {
    const Py_ssize_t ow = g->ow;
    const Py_ssize_t lo = first_inside(offset, g->sw, ow), hi = max_ssize(lo, end_inside(offset, g->sw, g->width, ow));
    if (g->sh == 1 && g->sw == 1 && ow == g->width) {
        SFX(im2col_run)(plane, row + (oh_lo - oh0) * ow, g, oh_lo + shift, oh_hi - oh_lo, offset, lo, hi);
        return;
    }
    for (Py_ssize_t oh = oh_lo; oh < oh_hi; oh++) {
        const REAL *line = plane + (oh * g->sh + shift) * g->width;
        REAL *out = row + (oh - oh0) * ow;
        SFX(zero)(out, lo);
        SFX(copy_strided)(out + lo, line + lo * g->sw + offset, hi - lo, g->sw);
        SFX(zero)(out + hi, ow - hi);
    }
}

/* Fill cols (row pitch ``pitch``) with the taps (c, i, j) of output rows oh0..oh1. Given
   ``phases`` (room for sw lines of ``span`` per input row from ih_first on), each input row read
   is first split into its sw zero-padded column phases, so every tap's columns are one
   contiguous copy; phases NULL reads the rows directly (strided). */
static void SFX(im2col_channels)(const REAL *restrict x, REAL *restrict cols, Py_ssize_t pitch, const Geometry *g,
                                 Py_ssize_t oh0, Py_ssize_t oh1, REAL *restrict phases, Py_ssize_t span) {
    const Py_ssize_t ow = g->ow, positions = (oh1 - oh0) * ow;
    const Py_ssize_t ih_first = max_ssize(0, oh0 * g->sh - g->ph);
    const Py_ssize_t ih_stop = min_ssize(g->height, (oh1 - 1) * g->sh + (g->kh - 1) * g->dh - g->ph + 1);
    for (Py_ssize_t c = 0; c < g->channels; c++) {
        const REAL *plane = x + c * g->height * g->width;
        if (phases != NULL)
            for (Py_ssize_t ih = ih_first; ih < ih_stop; ih++)
                for (Py_ssize_t b = 0; b < g->sw; b++)
                    SFX(split_phase)(plane + ih * g->width, phases + ((ih - ih_first) * g->sw + b) * span, span, b, g);
        for (Py_ssize_t i = 0; i < g->kh; i++) {
            Py_ssize_t shift = i * g->dh - g->ph; /* input row = oh * sh + shift */
            Py_ssize_t oh_lo = min_ssize(oh1, max_ssize(oh0, first_inside(shift, g->sh, g->oh)));
            Py_ssize_t oh_hi = max_ssize(oh_lo, min_ssize(oh1, end_inside(shift, g->sh, g->height, g->oh)));
            for (Py_ssize_t j = 0; j < g->kw; j++) {
                REAL *row = cols + ((c * g->kh + i) * g->kw + j) * pitch;
                SFX(zero)(row, (oh_lo - oh0) * ow);
                SFX(zero)(row + (oh_hi - oh0) * ow, positions - (oh_hi - oh0) * ow);
                if (phases == NULL) {
                    SFX(im2col_direct)(plane, row, g, shift, j * g->dw - g->pw, oh_lo, oh_hi, oh0);
                    continue;
                }
                const REAL *phase = phases + (j * g->dw) % g->sw * span + (j * g->dw) / g->sw;
                for (Py_ssize_t oh = oh_lo; oh < oh_hi; oh++)
                    SFX(copy_strided)(row + (oh - oh0) * ow, phase + (oh * g->sh + shift - ih_first) * g->sw * span,
                                      ow, 1);
            }
        }
    }
}

static void SFX(im2col_rows)(const REAL *x, REAL *cols, Py_ssize_t pitch, const Geometry *g, Py_ssize_t oh0,
                             Py_ssize_t oh1) {
    REAL *phases = NULL;
    Py_ssize_t span = g->ow + (g->kw - 1) * g->dw / g->sw; /* a phase line: every tap's columns */
    /* the split pays for wide kernels and strides above 2 (whose strided reads gcc leaves scalar) */
    if ((g->sw > 2 || (g->sw == 2 && g->kw > 3)) && oh1 > oh0 && g->ow > 0) {
        Py_ssize_t rows = min_ssize(g->height, (oh1 - oh0 - 1) * g->sh + (g->kh - 1) * g->dh + 1);
        phases = malloc((size_t)(rows * g->sw * span) * sizeof(REAL)); /* NULL: strided reads */
    }
    SFX(im2col_channels)(x, cols, pitch, g, oh0, oh1, phases, span);
    free(phases);
}

/* out[k] = b + s0[k] + ... + s8[k] (left to right, as the numba kernel sums). */
static inline void SFX(sum9)(REAL *restrict out, Py_ssize_t n, REAL b, const REAL *restrict s0,
                             const REAL *restrict s1, const REAL *restrict s2, const REAL *restrict s3,
                             const REAL *restrict s4, const REAL *restrict s5, const REAL *restrict s6,
                             const REAL *restrict s7, const REAL *restrict s8) {
    for (Py_ssize_t k = 0; k < n; k++)
        out[k] = b + s0[k] + s1[k] + s2[k] + s3[k] + s4[k] + s5[k] + s6[k] + s7[k] + s8[k];
}

static inline void SFX(add_to)(REAL *restrict out, const REAL *restrict src, Py_ssize_t n) {
    for (Py_ssize_t k = 0; k < n; k++) out[k] += src[k];
}

/* out[k] = b + the taps' products of channel m read from position start + k on, for k < n. */
static void SFX(kn2row_run)(const REAL *parts, REAL *out, Py_ssize_t n, REAL b, const Kn2row *g, Py_ssize_t m,
                            Py_ssize_t start) {
    const Py_ssize_t row = g->pitch * g->dh, column = g->dw;
    const REAL *first = parts + m * g->part_stride + start;
    const Py_ssize_t tap = g->out_channels * g->part_stride; /* from one tap's products to the next's */
    if (g->kh == 3 && g->kw == 3) {
        SFX(sum9)(out, n, b, first, first + tap + column, first + 2 * tap + 2 * column, first + 3 * tap + row,
                  first + 4 * tap + row + column, first + 5 * tap + row + 2 * column, first + 6 * tap + 2 * row,
                  first + 7 * tap + 2 * row + column, first + 8 * tap + 2 * row + 2 * column);
        return;
    }
    SFX(fill)(out, n, b);
    for (Py_ssize_t i = 0; i < g->kh; i++)
        for (Py_ssize_t j = 0; j < g->kw; j++)
            SFX(add_to)(out, first + (i * g->kw + j) * tap + i * row + j * column, n);
}

/* Output channels m0..m1; ext (room for (oh-1)*pitch + ow) or NULL. */
static void SFX(kn2row_channels)(const REAL *parts, REAL *y, const REAL *bias, const Kn2row *g, Py_ssize_t m0,
                                 Py_ssize_t m1, REAL *ext) {
    const Py_ssize_t oh = g->oh, ow = g->ow, pitch = g->pitch;
    for (Py_ssize_t m = m0; m < m1; m++) {
        REAL *out = y + m * g->y_stride;
        if (pitch == ow) { /* output rows are the products' rows: one run */
            SFX(kn2row_run)(parts, out, oh * ow, bias[m], g, m, 0);
        } else if (ext != NULL) { /* narrow rows: one run over the pitch, the valid columns copied out */
            SFX(kn2row_run)(parts, ext, (oh - 1) * pitch + ow, bias[m], g, m, 0);
            for (Py_ssize_t oy = 0; oy < oh; oy++) SFX(copy_strided)(out + oy * ow, ext + oy * pitch, ow, 1);
        } else {
            for (Py_ssize_t oy = 0; oy < oh; oy++) SFX(kn2row_run)(parts, out + oy * ow, ow, bias[m], g, m, oy * pitch);
        }
    }
}

/* A share of the output channels, with its own run buffer where the rows are narrow. */
static void SFX(kn2row_share)(const REAL *parts, REAL *y, const REAL *bias, const Kn2row *g, Py_ssize_t m0,
                              Py_ssize_t m1) {
    REAL *ext = NULL;
    if (g->ow < KN2ROW_RUN_WIDTH && g->pitch > g->ow)
        ext = malloc((size_t)((g->oh - 1) * g->pitch + g->ow) * sizeof(REAL)); /* NULL: row by row */
    SFX(kn2row_channels)(parts, y, bias, g, m0, m1, ext);
    free(ext);
}

static void SFX(kn2row_sum)(const REAL *parts, REAL *y, const REAL *bias, const Kn2row *g, int nt) {
    const Py_ssize_t channels = g->out_channels;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int k = 0; k < nt; k++) SFX(kn2row_share)(parts, y, bias, g, k * channels / nt, (k + 1) * channels / nt);
}

/* The channel's zero-padded plane (padded row t, column u holds input (t - ph, u - pw)) split
   into its sh x sw phases: line r of phase (a, b), at phases + ((a * sw + b) * rows + r) * span,
   holds padded row r * sh + a's columns b, b + sw, ...; so every tap reads one phase contiguously. */
static void SFX(split_plane)(const REAL *restrict plane, REAL *restrict phases, Py_ssize_t rows, Py_ssize_t span,
                             const Geometry *g) {
    for (Py_ssize_t a = 0; a < g->sh; a++)
        for (Py_ssize_t b = 0; b < g->sw; b++)
            for (Py_ssize_t r = 0; r < rows; r++) {
                REAL *line = phases + ((a * g->sw + b) * rows + r) * span;
                Py_ssize_t ih = r * g->sh + a - g->ph;
                if (ih < 0 || ih >= g->height)
                    SFX(zero)(line, span);
                else
                    SFX(split_phase)(plane + ih * g->width, line, span, b, g);
            }
}

/* out[k] += the taps t < taps (at most three): w[t] * s_t[k]. */
static inline void SFX(taps_add)(REAL *restrict out, Py_ssize_t n, const REAL *w, Py_ssize_t taps,
                                 const REAL *restrict s0, const REAL *restrict s1, const REAL *restrict s2) {
    const REAL w0 = w[0], w1 = taps > 1 ? w[1] : 0, w2 = taps > 2 ? w[2] : 0;
    if (taps >= 3)
        for (Py_ssize_t k = 0; k < n; k++) out[k] += w0 * s0[k] + w1 * s1[k] + w2 * s2[k];
    else if (taps == 2)
        for (Py_ssize_t k = 0; k < n; k++) out[k] += w0 * s0[k] + w1 * s1[k];
    else
        for (Py_ssize_t k = 0; k < n; k++) out[k] += w0 * s0[k];
}

/* out[k] = b + the nine taps of a 3x3 kernel: w[t] * s[t][k]. */
static inline void SFX(taps9)(REAL *restrict out, Py_ssize_t n, const REAL *w, REAL b, const REAL *const *s) {
    const REAL w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];
    const REAL *restrict s0 = s[0], *restrict s1 = s[1], *restrict s2 = s[2], *restrict s3 = s[3];
    const REAL *restrict s4 = s[4], *restrict s5 = s[5], *restrict s6 = s[6], *restrict s7 = s[7];
    const REAL *restrict s8 = s[8];
    for (Py_ssize_t k = 0; k < n; k++)
        out[k] = b + (w0 * s0[k] + w1 * s1[k] + w2 * s2[k]) + (w3 * s3[k] + w4 * s4[k] + w5 * s5[k]) +
                 (w6 * s6[k] + w7 * s7[k] + w8 * s8[k]);
}

/* out[k] = b + sum over taps t of weights[t] * phases[tap[t] + start + k], three taps a pass
   (one pass for a 3x3 kernel). */
static void SFX(depthwise_run)(const REAL *phases, const Py_ssize_t *tap, Py_ssize_t taps, const REAL *weights,
                               REAL b, REAL *out, Py_ssize_t n, Py_ssize_t start) {
    const REAL *from = phases + start;
    if (taps == 9) {
        const REAL *s[9];
        for (int t = 0; t < 9; t++) s[t] = from + tap[t];
        SFX(taps9)(out, n, weights, b, s);
        return;
    }
    SFX(fill)(out, n, b);
    for (Py_ssize_t t = 0; t < taps; t += 3) {
        Py_ssize_t count = min_ssize(3, taps - t);
        const REAL *s0 = from + tap[t];
        SFX(taps_add)(out, n, weights + t, count, s0, count > 1 ? from + tap[t + 1] : s0,
                      count > 2 ? from + tap[t + 2] : s0);
    }
}

/* One channel from its phases: output (oh, o) sums the taps at phases[tap[t] + oh * span + o].
   Narrow rows run over the whole plane at the phases' pitch into ext, then are copied out. */
static void SFX(depthwise_channel)(const REAL *phases, Py_ssize_t span, const Py_ssize_t *tap, const REAL *weights,
                                   REAL b, REAL *out, REAL *ext, const Geometry *g) {
    const Py_ssize_t taps = g->kh * g->kw, ow = g->ow, oh = g->oh;
    if (span == ow) {
        SFX(depthwise_run)(phases, tap, taps, weights, b, out, oh * ow, 0);
    } else if (ext != NULL) {
        SFX(depthwise_run)(phases, tap, taps, weights, b, ext, (oh - 1) * span + ow, 0);
        for (Py_ssize_t r = 0; r < oh; r++) SFX(copy_strided)(out + r * ow, ext + r * span, ow, 1);
    } else {
        for (Py_ssize_t r = 0; r < oh; r++)
            SFX(depthwise_run)(phases, tap, taps, weights, b, out + r * ow, ow, r * span);
    }
}

/* Channels split over nt threads, each splitting one plane at a time into its own phases.
   Returns 0 (nothing written) without memory for them. */
static int SFX(depthwise)(const REAL *x, const REAL *w, const REAL *bias, REAL *y, const Geometry *g, int nt) {
    if (g->channels == 0 || g->oh == 0 || g->ow == 0) return 1;
    const Py_ssize_t rows = g->oh + (g->kh - 1) * g->dh / g->sh; /* a phase's lines */
    const Py_ssize_t span = g->ow + (g->kw - 1) * g->dw / g->sw;  /* a phase line: every tap's columns */
    const Py_ssize_t taps = g->kh * g->kw, phase_size = g->sh * g->sw * rows * span;
    const Py_ssize_t ext_size = g->ow < DEPTHWISE_RUN_WIDTH && span > g->ow ? (g->oh - 1) * span + g->ow : 0;
    REAL *scratch = malloc((size_t)(nt * (phase_size + ext_size)) * sizeof(REAL));
    Py_ssize_t *tap = malloc((size_t)taps * sizeof(Py_ssize_t));
    if (scratch == NULL || tap == NULL) {
        free(scratch);
        free(tap);
        return 0;
    }
    for (Py_ssize_t i = 0; i < g->kh; i++) /* tap (i, j): its phase's first line, its offset in the phase */
        for (Py_ssize_t j = 0; j < g->kw; j++)
            tap[i * g->kw + j] = ((i * g->dh % g->sh * g->sw + j * g->dw % g->sw) * rows + i * g->dh / g->sh) * span +
                                 j * g->dw / g->sw;
    const Py_ssize_t plane = g->height * g->width, outputs = g->oh * g->ow;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int k = 0; k < nt; k++) {
        REAL *phases = scratch + k * (phase_size + ext_size), *ext = ext_size ? phases + phase_size : NULL;
        for (Py_ssize_t c = k * g->channels / nt; c < (k + 1) * g->channels / nt; c++) {
            SFX(split_plane)(x + c * plane, phases, rows, span, g);
            SFX(depthwise_channel)(phases, span, tap, w + c * taps, bias[c], y + c * outputs, ext, g);
        }
    }
    free(scratch);
    free(tap);
    return 1;
}

/* (rows, cols) src transposed into (cols, rows) dst: sixteen rows at a time, so each store is a
   contiguous run of sixteen. */
static void SFX(transpose)(const REAL *restrict src, REAL *restrict dst, Py_ssize_t rows, Py_ssize_t cols) {
    enum { BLOCK = 16 };
    Py_ssize_t r0 = 0;
    for (; r0 + BLOCK <= rows; r0 += BLOCK)
        for (Py_ssize_t q = 0; q < cols; q++)
            for (int r = 0; r < BLOCK; r++) dst[q * rows + r0 + r] = src[(r0 + r) * cols + q];
    for (Py_ssize_t r = r0; r < rows; r++)
        for (Py_ssize_t q = 0; q < cols; q++) dst[q * rows + r] = src[r * cols + q];
}

/* acc[c] += the taps t < taps (at most three): w_t[c] * x_t[c]. */
static inline void SFX(mul_add)(REAL *restrict acc, Py_ssize_t n, Py_ssize_t taps, const REAL *restrict w0,
                                const REAL *restrict x0, const REAL *restrict w1, const REAL *restrict x1,
                                const REAL *restrict w2, const REAL *restrict x2) {
    if (taps >= 3)
        for (Py_ssize_t c = 0; c < n; c++) acc[c] += w0[c] * x0[c] + w1[c] * x1[c] + w2[c] * x2[c];
    else if (taps == 2)
        for (Py_ssize_t c = 0; c < n; c++) acc[c] += w0[c] * x0[c] + w1[c] * x1[c];
    else
        for (Py_ssize_t c = 0; c < n; c++) acc[c] += w0[c] * x0[c];
}

/* Channels-last inside: each output position sums its valid taps over contiguous channel
   vectors, three taps a pass. Returns 0 (nothing written) without memory for the copies. */
static int SFX(depthwise_small)(const REAL *x, const REAL *w, const REAL *bias, REAL *y, const Geometry *g) {
    const Py_ssize_t channels = g->channels, width = g->width, outputs = g->oh * g->ow;
    const Py_ssize_t inputs = g->height * width, taps = g->kh * g->kw;
    REAL *xt = malloc((size_t)((inputs + taps + outputs) * channels + 1) * sizeof(REAL));
    if (xt == NULL) return 0;
    REAL *wt = xt + inputs * channels, *yt = wt + taps * channels;
    SFX(transpose)(x, xt, channels, inputs);
    SFX(transpose)(w, wt, channels, taps);
    for (Py_ssize_t oh = 0; oh < g->oh; oh++) {
        for (Py_ssize_t o = 0; o < g->ow; o++) {
            REAL *acc = yt + (oh * g->ow + o) * channels;
            SFX(copy_strided)(acc, bias, channels, 1);
            /* the kernel columns j_lo..j_hi read inside the row */
            Py_ssize_t offset = o * g->sw - g->pw;
            Py_ssize_t j_lo = first_inside(offset, g->dw, g->kw);
            Py_ssize_t j_hi = max_ssize(j_lo, end_inside(offset, g->dw, width, g->kw));
            for (Py_ssize_t i = 0; i < g->kh; i++) {
                Py_ssize_t ih = oh * g->sh + i * g->dh - g->ph;
                if (ih < 0 || ih >= g->height) continue;
                for (Py_ssize_t j = j_lo; j < j_hi; j += 3) {
                    Py_ssize_t step = g->dw * channels, count = min_ssize(3, j_hi - j);
                    const REAL *x0 = xt + (ih * width + offset + j * g->dw) * channels;
                    const REAL *w0 = wt + (i * g->kw + j) * channels;
                    SFX(mul_add)(acc, channels, count, w0, x0, w0 + channels, x0 + step, w0 + 2 * channels,
                                 x0 + 2 * step);
                }
            }
        }
    }
    SFX(transpose)(yt, y, outputs, channels);
    free(xt);
    return 1;
}

/* y = w @ x + shift[m]: rows accumulate multiply-adds over the positions, four depths a pass. */
static void SFX(gemm_small)(const REAL *restrict w, const REAL *restrict x, REAL *restrict y,
                            const REAL *restrict shift, Py_ssize_t rows, Py_ssize_t depth, Py_ssize_t positions) {
    for (Py_ssize_t m = 0; m < rows; m++) {
        REAL *out = y + m * positions;
        const REAL *weights = w + m * depth;
        SFX(fill)(out, positions, shift[m]);
        Py_ssize_t k = 0;
        for (; k + 4 <= depth; k += 4) {
            const REAL *x0 = x + k * positions, *x1 = x0 + positions, *x2 = x1 + positions, *x3 = x2 + positions;
            const REAL w0 = weights[k], w1 = weights[k + 1], w2 = weights[k + 2], w3 = weights[k + 3];
            for (Py_ssize_t p = 0; p < positions; p++) out[p] += w0 * x0[p] + w1 * x1[p] + w2 * x2[p] + w3 * x3[p];
        }
        for (; k < depth; k++) SFX(axpy)(out, x + k * positions, positions, weights[k]);
    }
}

/* y = w @ x + shift[m] as dot products over the depth (reassociated), four rows at once against
   each column of x. Returns 0 (nothing written) without memory for x's transpose. */
static int SFX(gemm_small_dot)(const REAL *restrict w, const REAL *restrict x, REAL *restrict y,
                               const REAL *restrict shift, Py_ssize_t rows, Py_ssize_t depth, Py_ssize_t positions) {
    REAL *transposed = NULL; /* one position: x is its column */
    if (positions > 1) {
        transposed = malloc((size_t)(positions * depth) * sizeof(REAL));
        if (transposed == NULL) return 0;
        SFX(transpose)(x, transposed, depth, positions);
    }
    const REAL *columns = positions > 1 ? transposed : x;
    Py_ssize_t m = 0;
    for (; m + 4 <= rows; m += 4) {
        const REAL *w0 = w + m * depth, *w1 = w0 + depth, *w2 = w1 + depth, *w3 = w2 + depth;
        for (Py_ssize_t p = 0; p < positions; p++) {
            const REAL *column = columns + p * depth;
            REAL a0 = shift[m], a1 = shift[m + 1], a2 = shift[m + 2], a3 = shift[m + 3];
#pragma omp simd reduction(+ : a0, a1, a2, a3)
            for (Py_ssize_t k = 0; k < depth; k++) {
                a0 += w0[k] * column[k];
                a1 += w1[k] * column[k];
                a2 += w2[k] * column[k];
                a3 += w3[k] * column[k];
            }
            y[m * positions + p] = a0;
            y[(m + 1) * positions + p] = a1;
            y[(m + 2) * positions + p] = a2;
            y[(m + 3) * positions + p] = a3;
        }
    }
    for (; m < rows; m++) {
        for (Py_ssize_t p = 0; p < positions; p++) {
            const REAL *weights = w + m * depth, *column = columns + p * depth;
            REAL acc = shift[m];
#pragma omp simd reduction(+ : acc)
            for (Py_ssize_t k = 0; k < depth; k++) acc += weights[k] * column[k];
            y[m * positions + p] = acc;
        }
    }
    free(transposed);
    return 1;
}

#endif /* CONV_LOOPS */
