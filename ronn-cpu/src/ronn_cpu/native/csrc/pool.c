/* 2-D pooling of one image (the C twin of ronn_cpu/jit/pool.py).

   max_pool(threads, x, y, kh, kw, sh, sw, dh, dw, ph, pw, lowest)
   average_pool(threads, x, y, counts, kh, kw, sh, sw, dh, dw, ph, pw)
       x (C, H, W) pooled into y (C, OH, OW); taps outside x (pads, ceil_mode's overhang) read
       `lowest` for max and 0 for sums; averages divide by counts (OH, OW). Channels are split
       into min(C, threads) chunks run in parallel.
   plane_means(x, y)
       y[r] = the mean of row r of x (rows, size), summed in double.

   Each window is reduced the way the numba kernel reduces it (same path for the same
   geometry, same order of additions), so pooled values agree bit for bit: 2x2 windows at
   stride 2 inside the plane, one expression per output; 3x3 windows (no dilation), maxima
   down a framed row then across, sums tap by tap in row-major order; other windows directly
   when the output rows are short, else along each input row and then down the kernel rows.
   Maxima propagate NaN as numpy.maximum does (the order of maxima does not change a result:
   the last NaN, else the first largest). plane_means sums in any order, as numba's does.
   Returns None, or NotImplemented for arguments it does not take.

   The typed loops sit at the end of this file, which includes itself once per real type
   (POOL_TYPED defined, with REAL and SFX). */
#ifndef POOL_TYPED
#include "common.h"

#define INLINE static inline __attribute__((always_inline))
/* a function whose floating-point sums may be reassociated (gcc; others sum in order) */
#if defined(__GNUC__) && !defined(__clang__)
#define REASSOCIATE __attribute__((optimize("associative-math", "no-signed-zeros", "no-trapping-math")))
#else
#define REASSOCIATE
#endif
/* parameters past this are declined (no overflow in index arithmetic) */
#define MAX_PARAM ((Py_ssize_t)1 << 24)

enum { PATH_2X2, PATH_3X3, PATH_DIRECT, PATH_ROWS };

typedef struct {
    Py_ssize_t channels, height, width, out_h, out_w;
    Py_ssize_t kh, kw, sh, sw, dh, dw, ph, pw;
    int path;
    Py_ssize_t frame_h, frame_w; /* PATH_3X3: the framed plane's size (pads and overhang included) */
} Window;


/* The smallest o >= 0 with o * step >= need. */
static inline Py_ssize_t first_at_least(Py_ssize_t need, Py_ssize_t step) {
    return need <= 0 ? 0 : (need + step - 1) / step;
}

/* Outputs [lo, hi) of a row whose taps [o * step - lead, + span) all lie in [0, width). */
static inline void inside(Py_ssize_t width, Py_ssize_t lead, Py_ssize_t span, Py_ssize_t step,
                          Py_ssize_t count, Py_ssize_t *lo, Py_ssize_t *hi) {
    *lo = min_ssize(first_at_least(lead, step), count);
    *hi = min_ssize(max_ssize(first_at_least(width - span + 1 + lead, step), *lo), count);
}

/* Which loops reduce this geometry (the numba kernel's choice). */
static int choose_path(const Window *g) {
    if (g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->dh == 1 && g->dw == 1 &&
        g->ph == 0 && g->pw == 0 && 2 * g->out_h <= g->height && 2 * g->out_w <= g->width)
        return PATH_2X2;
    if (g->kh == 3 && g->kw == 3 && g->dh == 1 && g->dw == 1) return PATH_3X3;
    return g->out_w < 16 ? PATH_DIRECT : PATH_ROWS;
}

/* Whether every window of a 3x3 pooling lies inside the plane (no frame needed). */
static int windows_inside(const Window *g) {
    return g->ph == 0 && g->pw == 0 && (g->out_h - 1) * g->sh + 3 <= g->height &&
           (g->out_w - 1) * g->sw + 3 <= g->width;
}

/* Scratch elements one chunk of channels needs, rounded to 16 (chunks do not share lines):
   3x3 maxima a fill row and a framed row, 3x3 sums over a pad a framed plane, other windows
   beyond short rows the row reductions of a plane. */
static Py_ssize_t chunk_scratch(const Window *g, int is_max) {
    Py_ssize_t need = 0;
    if (g->path == PATH_3X3 && is_max) need = g->width + 16 + g->frame_w;
    if (g->path == PATH_3X3 && !is_max && !windows_inside(g)) need = g->frame_h * g->frame_w;
    if (g->path == PATH_ROWS) need = g->height * g->out_w;
    return (need + 15) / 16 * 16;
}

#if defined(__AVX512F__)
#include <immintrin.h>
/* The sum of a float row in double, 32 floats a step in four accumulators (for long rows: gcc
   makes the plain loop a load, a split and two conversions per 16 floats, 10-25% slower). */
static double wide_sum_f32(const float *row, Py_ssize_t size) {
    __m512d a = _mm512_setzero_pd(), b = a, c = a, d = a;
    Py_ssize_t i = 0;
    for (; i + 32 <= size; i += 32) {
        a = _mm512_add_pd(a, _mm512_cvtps_pd(_mm256_loadu_ps(row + i)));
        b = _mm512_add_pd(b, _mm512_cvtps_pd(_mm256_loadu_ps(row + i + 8)));
        c = _mm512_add_pd(c, _mm512_cvtps_pd(_mm256_loadu_ps(row + i + 16)));
        d = _mm512_add_pd(d, _mm512_cvtps_pd(_mm256_loadu_ps(row + i + 24)));
    }
    for (; i + 8 <= size; i += 8) a = _mm512_add_pd(a, _mm512_cvtps_pd(_mm256_loadu_ps(row + i)));
    double total = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a, b), _mm512_add_pd(c, d)));
    for (; i < size; i++) total += (double)row[i];
    return total;
}
#define WIDE_SUM wide_sum_f32
#endif

#define POOL_TYPED
#define REAL float
#define SFX(name) name##_f32
#include "pool.c"
#undef REAL
#undef SFX
#undef WIDE_SUM
#define REAL double
#define SFX(name) name##_f64
#include "pool.c"
#undef REAL
#undef SFX
#undef POOL_TYPED

/* The window geometry from 8 integer arguments and the arrays' shapes; 0 if declined, -1 on
   an error (set). */
static int read_window(PyObject *const *params, const Py_buffer *x, const Py_buffer *y, Window *g) {
    Py_ssize_t values[8];
    for (int i = 0; i < 8; i++)
        if (arg_ssize(params[i], &values[i])) return -1;
    *g = (Window){.kh = values[0], .kw = values[1], .sh = values[2], .sw = values[3],
                  .dh = values[4], .dw = values[5], .ph = values[6], .pw = values[7]};
    for (int i = 0; i < 8; i++)
        if (values[i] < (i < 6 ? 1 : 0) || values[i] > MAX_PARAM) return 0;
    if (x->ndim != 3 || y->ndim != 3 || view_dim(x, 0) != view_dim(y, 0)) return 0;
    g->channels = view_dim(x, 0);
    g->height = view_dim(x, 1);
    g->width = view_dim(x, 2);
    g->out_h = view_dim(y, 1);
    g->out_w = view_dim(y, 2);
    if (g->out_h > MAX_PARAM || g->out_w > MAX_PARAM) return 0;
    g->path = choose_path(g);
    g->frame_h = max_ssize(g->ph + g->height, g->out_h ? (g->out_h - 1) * g->sh + 3 : 0);
    g->frame_w = max_ssize(g->pw + g->width, g->out_w ? (g->out_w - 1) * g->sw + 3 : 0);
    return 1;
}

/* Pool x into y (counts: NULL for max) with the GIL released; NULL with an error set if the
   scratch cannot be allocated. */
static PyObject *pool(Arrays *arrays, const Window *g, const Py_buffer *x, Py_buffer *y,
                      const Py_buffer *counts, double fill, Py_ssize_t threads) {
    if (g->channels == 0 || g->out_h == 0 || g->out_w == 0) {
        arrays_release(arrays);
        Py_RETURN_NONE;
    }
    int chunks = (int)min_ssize(max_ssize(threads, 1), g->channels);
    int is_max = counts == NULL;
    Py_ssize_t per_chunk = chunk_scratch(g, is_max);
    void *scratch = NULL;
    size_t bytes = (size_t)(chunks * per_chunk) * (size_t)x->itemsize;
    if (per_chunk && (scratch = PyMem_RawMalloc(bytes)) == NULL) {
        arrays_release(arrays);
        return PyErr_NoMemory();
    }
    const void *weights = counts ? counts->buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    if (arrays->kind == 'f')
        pool_f32(x->buf, y->buf, weights, g, is_max, fill, chunks, scratch, per_chunk);
    else
        pool_f64(x->buf, y->buf, weights, g, is_max, fill, chunks, scratch, per_chunk);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    arrays_release(arrays);
    Py_RETURN_NONE;
}

static PyObject *py_max_pool(FASTCALL_ARGS) {
    CHECK_NARGS("max_pool", 12);
    Py_ssize_t threads;
    double lowest;
    if (arg_ssize(args[0], &threads) || arg_double(args[11], &lowest)) return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *x = arrays_real(&arrays, args[1], 0);
    Py_buffer *y = x ? arrays_real(&arrays, args[2], 1) : NULL;
    if (y == NULL) DECLINE(&arrays);
    Window g;
    int status = read_window(args + 3, x, y, &g);
    if (status < 0) {
        arrays_release(&arrays);
        return NULL;
    }
    if (status == 0) DECLINE(&arrays);
    return pool(&arrays, &g, x, y, NULL, lowest, threads);
}

static PyObject *py_average_pool(FASTCALL_ARGS) {
    CHECK_NARGS("average_pool", 12);
    Py_ssize_t threads;
    if (arg_ssize(args[0], &threads)) return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *x = arrays_real(&arrays, args[1], 0);
    Py_buffer *y = x ? arrays_real(&arrays, args[2], 1) : NULL;
    Py_buffer *counts = y ? arrays_real(&arrays, args[3], 0) : NULL;
    if (counts == NULL) DECLINE(&arrays);
    Window g;
    int status = read_window(args + 4, x, y, &g);
    if (status < 0) {
        arrays_release(&arrays);
        return NULL;
    }
    if (status == 0 || counts->ndim != 2 || view_dim(counts, 0) != g.out_h || view_dim(counts, 1) != g.out_w)
        DECLINE(&arrays);
    return pool(&arrays, &g, x, y, counts, 0.0, threads);
}

static PyObject *py_plane_means(FASTCALL_ARGS) {
    CHECK_NARGS("plane_means", 2);
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *y = arrays_real(&arrays, args[1], 1);
    if (y == NULL) DECLINE(&arrays);
    /* x: C-contiguous, or the other common layout: a channels-last tensor seen as
       (N*C, H*W), its rows adjacent elements and its columns a fixed stride apart */
    Py_buffer *x = &arrays.views[arrays.count];
    if (PyObject_GetBuffer(args[0], x, PyBUF_STRIDES | PyBUF_FORMAT) != 0) {
        PyErr_Clear();
        DECLINE(&arrays);
    }
    arrays.count++;
    if (real_kind(x) != arrays.kind || x->ndim != 2 || view_size(y) != x->shape[0]) DECLINE(&arrays);
    Py_ssize_t rows = x->shape[0], size = x->shape[1], item = x->itemsize;
    Py_ssize_t row_step = x->strides[0], column_step = x->strides[1];
    int contiguous = row_step == size * item && (column_step == item || size == 1);
    int columns = row_step == item && column_step % item == 0 && column_step >= rows * item;
    if (!(contiguous || columns)) DECLINE(&arrays);
    Py_ssize_t pitch = column_step / item;
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f') {
        if (contiguous)
            plane_means_f32(x->buf, y->buf, rows, size);
        else
            column_means_f32(x->buf, y->buf, rows, size, pitch);
    } else {
        if (contiguous)
            plane_means_f64(x->buf, y->buf, rows, size);
        else
            column_means_f64(x->buf, y->buf, rows, size, pitch);
    }
    Py_END_ALLOW_THREADS
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    METHOD(max_pool, "max_pool(threads, x, y, kh, kw, sh, sw, dh, dw, ph, pw, lowest)"),
    METHOD(average_pool, "average_pool(threads, x, y, counts, kh, kw, sh, sw, dh, dw, ph, pw)"),
    METHOD(plane_means, "plane_means(x, y)"),
    {NULL, NULL, 0, NULL},
};

DEFINE_MODULE(ronn_native_pool, methods, "2-D max and average pooling, and plane means.")

#else /* POOL_TYPED: the loops for one real type */

/* t and v combined: the larger (NaN if v is, and t kept if t is), or the sum. */
INLINE REAL SFX(combine)(REAL t, REAL v, int is_max) {
    if (is_max) {
        REAL larger = v > t ? v : t; /* x86 max: t where either is NaN */
        return v != v ? v : larger;
    }
    return t + v;
}

/* out[o] = the largest of the 2x2 window at column 2 * o of rows r0, r1. */
INLINE void SFX(max_2x2_row)(const REAL *restrict r0, const REAL *restrict r1, REAL *restrict out,
                             Py_ssize_t count) {
    for (Py_ssize_t o = 0; o < count; o++) {
        REAL m = SFX(combine)(r0[2 * o], r0[2 * o + 1], 1);
        m = SFX(combine)(m, r1[2 * o], 1);
        out[o] = SFX(combine)(m, r1[2 * o + 1], 1);
    }
}

/* out[o] = the sum of the 2x2 window at column 2 * o of rows r0, r1, divided by n[o]. */
INLINE void SFX(mean_2x2_row)(const REAL *restrict r0, const REAL *restrict r1, const REAL *restrict n,
                              REAL *restrict out, Py_ssize_t count) {
    for (Py_ssize_t o = 0; o < count; o++)
        out[o] = (r0[2 * o] + r0[2 * o + 1] + r1[2 * o] + r1[2 * o + 1]) / n[o];
}

/* Fixed-width pieces of 2x2 rows, kept out of line so each is one vector loop whatever its
   caller (gcc leaves inlined short loops scalar). */
#define PIECES_2X2(width)                                                                     \
    static __attribute__((noinline)) void SFX(max_2x2_##width)(const REAL *r0, const REAL *r1,  \
                                                               REAL *out) {                    \
        SFX(max_2x2_row)(r0, r1, out, width);                                                 \
    }                                                                                         \
    static __attribute__((noinline)) void SFX(mean_2x2_##width)(const REAL *r0, const REAL *r1, \
                                                                const REAL *n, REAL *out) {   \
        SFX(mean_2x2_row)(r0, r1, n, out, width);                                             \
    }
PIECES_2X2(16)
PIECES_2X2(8)
PIECES_2X2(4)
#undef PIECES_2X2

/* 2x2 windows at stride 2, all inside the plane: each output one expression, each output row
   in pieces of 16, 8 or 4 outputs (the last piece overlapping its predecessor rather than
   leaving a scalar tail; recomputed outputs come out the same). */
INLINE void SFX(pool_2x2)(const REAL *x, REAL *y, const REAL *counts, const Window *g,
                          Py_ssize_t c0, Py_ssize_t c1, int is_max) {
    const Py_ssize_t width = g->width, ow = g->out_w;
#define PIECE(w, at)                                                                          \
    (is_max ? SFX(max_2x2_##w)(r0 + 2 * (at), r1 + 2 * (at), out + (at))                      \
            : SFX(mean_2x2_##w)(r0 + 2 * (at), r1 + 2 * (at), n + (at), out + (at)))
    for (Py_ssize_t c = c0; c < c1; c++) {
        for (Py_ssize_t oh = 0; oh < g->out_h; oh++) {
            const REAL *r0 = x + (c * g->height + 2 * oh) * width, *r1 = r0 + width;
            const REAL *n = counts + oh * ow;
            REAL *out = y + (c * g->out_h + oh) * ow;
            if (ow >= 16) {
                for (Py_ssize_t o = 0; o + 16 <= ow; o += 16) PIECE(16, o);
                if (ow % 16) PIECE(16, ow - 16);
            } else if (ow >= 8) {
                PIECE(8, 0);
                if (ow > 8) PIECE(8, ow - 8);
            } else if (ow >= 4) {
                PIECE(4, 0);
                if (ow > 4) PIECE(4, ow - 4);
            } else if (is_max) {
                SFX(max_2x2_row)(r0, r1, out, ow);
            } else {
                SFX(mean_2x2_row)(r0, r1, n, out, ow);
            }
        }
    }
#undef PIECE
}

/* out[t] = the largest of framed[t * step + 0..2] (called with a literal step: loads vectorise). */
INLINE void SFX(max_across_3)(const REAL *restrict framed, REAL *restrict out, Py_ssize_t count,
                              Py_ssize_t step) {
    for (Py_ssize_t t = 0; t < count; t++) {
        const REAL *w = framed + t * step;
        out[t] = SFX(combine)(SFX(combine)(w[0], w[1], 1), w[2], 1);
    }
}

/* out[k] = the largest of r0[k], r1[k], r2[k]. */
INLINE void SFX(max_down_3)(const REAL *restrict r0, const REAL *restrict r1, const REAL *restrict r2,
                            REAL *restrict out, Py_ssize_t count) {
    for (Py_ssize_t k = 0; k < count; k++) out[k] = SFX(combine)(SFX(combine)(r0[k], r1[k], 1), r2[k], 1);
}

/* 3x3 maxima: per output row the framed row (fill in its pads) of maxima down the three
   input rows (a fill row where outside), then maxima across at the stride. scratch: the
   fill row, then the framed row. */
static void SFX(max_3x3)(const REAL *x, REAL *y, const Window *g, Py_ssize_t c0, Py_ssize_t c1,
                         REAL fill, REAL *scratch) {
    const Py_ssize_t height = g->height, width = g->width, ow = g->out_w;
    REAL *fill_row = scratch, *framed = scratch + (width + 15) / 16 * 16;
    for (Py_ssize_t k = 0; k < width; k++) fill_row[k] = fill;
    /* input columns some window reads: [0, used) */
    const Py_ssize_t used = max_ssize(0, min_ssize(width, (ow - 1) * g->sw + 3 - g->pw));
    for (Py_ssize_t k = 0; k < g->frame_w; k++) framed[k] = fill;
    for (Py_ssize_t c = c0; c < c1; c++) {
        const REAL *plane = x + c * height * width;
        for (Py_ssize_t oh = 0; oh < g->out_h; oh++) {
            const REAL *rows[3];
            for (int i = 0; i < 3; i++) {
                Py_ssize_t ih = oh * g->sh - g->ph + i;
                rows[i] = (ih >= 0 && ih < height) ? plane + ih * width : fill_row;
            }
            SFX(max_down_3)(rows[0], rows[1], rows[2], framed + g->pw, used);
            REAL *out = y + (c * g->out_h + oh) * ow;
            if (g->sw == 1)
                SFX(max_across_3)(framed, out, ow, 1);
            else if (g->sw == 2)
                SFX(max_across_3)(framed, out, ow, 2);
            else
                SFX(max_across_3)(framed, out, ow, g->sw);
        }
    }
}

/* out[t] = the 3x3 window's sum (row-major order) over rows whose column t * step starts it,
   divided by n[t] (called with a literal step). */
INLINE void SFX(mean_3x3_inside)(const REAL *restrict r0, const REAL *restrict r1,
                                 const REAL *restrict r2, REAL *restrict out,
                                 const REAL *restrict n, Py_ssize_t count, Py_ssize_t step) {
    for (Py_ssize_t t = 0; t < count; t++) {
        const Py_ssize_t j = t * step;
        out[t] = (r0[j] + r0[j + 1] + r0[j + 2] + r1[j] + r1[j + 1] + r1[j + 2] + r2[j] + r2[j + 1] +
                  r2[j + 2]) / n[t];
    }
}

/* Rows oh of 3x3 means over the plane `rows` (pitch elements apart), every window inside. */
INLINE void SFX(mean_3x3_rows)(const REAL *rows, Py_ssize_t pitch, REAL *y, const REAL *counts,
                               const Window *g) {
    const Py_ssize_t ow = g->out_w, sw = g->sw;
    for (Py_ssize_t oh = 0; oh < g->out_h; oh++) {
        const REAL *r0 = rows + oh * g->sh * pitch;
        REAL *out = y + oh * ow;
        const REAL *n = counts + oh * ow;
        if (sw == 1)
            SFX(mean_3x3_inside)(r0, r0 + pitch, r0 + 2 * pitch, out, n, ow, 1);
        else if (sw == 2)
            SFX(mean_3x3_inside)(r0, r0 + pitch, r0 + 2 * pitch, out, n, ow, 2);
        else
            SFX(mean_3x3_inside)(r0, r0 + pitch, r0 + 2 * pitch, out, n, ow, sw);
    }
}

/* 3x3 means, tap by tap in row-major order: over the plane itself where every window lies
   inside it, else over a copy framed by zeros (pads and overhang). */
static void SFX(mean_3x3)(const REAL *x, REAL *y, const REAL *counts, const Window *g,
                          Py_ssize_t c0, Py_ssize_t c1, REAL *frame) {
    const Py_ssize_t height = g->height, width = g->width, pitch = g->frame_w;
    const Py_ssize_t plane_out = g->out_h * g->out_w;
    if (windows_inside(g)) {
        for (Py_ssize_t c = c0; c < c1; c++)
            SFX(mean_3x3_rows)(x + c * height * width, width, y + c * plane_out, counts, g);
        return;
    }
    for (Py_ssize_t k = 0; k < g->frame_h * pitch; k++) frame[k] = 0;
    REAL *inner = frame + g->ph * pitch + g->pw;
    for (Py_ssize_t c = c0; c < c1; c++) {
        const REAL *plane = x + c * height * width;
        for (Py_ssize_t r = 0; r < height; r++)
            memcpy(inner + r * pitch, plane + r * width, (size_t)width * sizeof(REAL));
        SFX(mean_3x3_rows)(frame, pitch, y + c * plane_out, counts, g);
    }
}

/* Each window reduced on its own, taps outside the plane skipped (short output rows); sums
   accumulate in double, as numba's do here (its accumulator starts as the literal 0.0). */
INLINE void SFX(pool_direct)(const REAL *x, REAL *y, const REAL *counts, const Window *g,
                             Py_ssize_t c0, Py_ssize_t c1, int is_max, REAL fill) {
    const Py_ssize_t height = g->height, width = g->width;
    for (Py_ssize_t c = c0; c < c1; c++) {
        const REAL *plane = x + c * height * width;
        for (Py_ssize_t oh = 0; oh < g->out_h; oh++) {
            REAL *out = y + (c * g->out_h + oh) * g->out_w;
            for (Py_ssize_t o = 0; o < g->out_w; o++) {
                REAL best = fill;
                double total = 0.0;
                int started = 0;
                for (Py_ssize_t i = 0; i < g->kh; i++) {
                    Py_ssize_t ih = oh * g->sh + i * g->dh - g->ph;
                    if (ih < 0 || ih >= height) continue;
                    for (Py_ssize_t j = 0; j < g->kw; j++) {
                        Py_ssize_t iw = o * g->sw + j * g->dw - g->pw;
                        if (iw < 0 || iw >= width) continue;
                        REAL v = plane[ih * width + iw];
                        if (is_max)
                            best = started ? SFX(combine)(best, v, 1) : v;
                        else
                            total = started ? total + (double)v : (double)v;
                        started = 1;
                    }
                }
                out[o] = is_max ? best : (REAL)(total / (double)counts[oh * g->out_w + o]);
            }
        }
    }
}

/* out[o] = base[o * step] (first tap) or out[o] combined with it (called with a literal step). */
INLINE void SFX(reduce_tap)(const REAL *restrict base, REAL *restrict out, Py_ssize_t count,
                            Py_ssize_t step, int first, int is_max) {
    if (first)
        for (Py_ssize_t o = 0; o < count; o++) out[o] = base[o * step];
    else
        for (Py_ssize_t o = 0; o < count; o++) out[o] = SFX(combine)(out[o], base[o * step], is_max);
}

/* out[o] = the reduction of kernel column taps src[o * sw + j * dw - pw] (fill outside). */
INLINE void SFX(reduce_row)(const REAL *restrict src, REAL *restrict out, const Window *g,
                            int is_max, REAL fill) {
    const Py_ssize_t ow = g->out_w, sw = g->sw;
    for (Py_ssize_t j = 0; j < g->kw; j++) {
        const Py_ssize_t lead = g->pw - j * g->dw;
        Py_ssize_t lo, hi;
        inside(g->width, lead, 1, sw, ow, &lo, &hi);
        for (Py_ssize_t o = 0; o < lo; o++) out[o] = j ? SFX(combine)(out[o], fill, is_max) : fill;
        if (hi > lo) {
            const REAL *base = src + (lo * sw - lead);
            if (sw == 1)
                SFX(reduce_tap)(base, out + lo, hi - lo, 1, j == 0, is_max);
            else if (sw == 2)
                SFX(reduce_tap)(base, out + lo, hi - lo, 2, j == 0, is_max);
            else
                SFX(reduce_tap)(base, out + lo, hi - lo, sw, j == 0, is_max);
        }
        for (Py_ssize_t o = hi; o < ow; o++) out[o] = j ? SFX(combine)(out[o], fill, is_max) : fill;
    }
}

/* Any window: reduced along every input row into `rows` (H, OW), then down the kernel rows. */
INLINE void SFX(pool_rows)(const REAL *x, REAL *y, const REAL *counts, const Window *g,
                           Py_ssize_t c0, Py_ssize_t c1, int is_max, REAL fill, REAL *rows) {
    const Py_ssize_t height = g->height, width = g->width, ow = g->out_w;
    for (Py_ssize_t c = c0; c < c1; c++) {
        const REAL *plane = x + c * height * width;
        for (Py_ssize_t ih = 0; ih < height; ih++)
            SFX(reduce_row)(plane + ih * width, rows + ih * ow, g, is_max, fill);
        for (Py_ssize_t oh = 0; oh < g->out_h; oh++) {
            REAL *restrict out = y + (c * g->out_h + oh) * ow;
            int started = 0;
            for (Py_ssize_t i = 0; i < g->kh; i++) {
                Py_ssize_t ih = oh * g->sh + i * g->dh - g->ph;
                if (ih < 0 || ih >= height) continue;
                const REAL *restrict src = rows + ih * ow;
                if (started) {
                    for (Py_ssize_t o = 0; o < ow; o++) out[o] = SFX(combine)(out[o], src[o], is_max);
                } else {
                    for (Py_ssize_t o = 0; o < ow; o++) out[o] = src[o];
                    started = 1;
                }
            }
            if (!started)
                for (Py_ssize_t o = 0; o < ow; o++) out[o] = fill;
            if (!is_max) {
                const REAL *restrict n = counts + oh * ow;
                for (Py_ssize_t o = 0; o < ow; o++) out[o] = out[o] / n[o];
            }
        }
    }
}

/* Channels [c0, c1) by the geometry's path; is_max a literal where called. */
INLINE void SFX(pool_chunk)(const REAL *x, REAL *y, const REAL *counts, const Window *g,
                            Py_ssize_t c0, Py_ssize_t c1, int is_max, REAL fill, REAL *scratch) {
    switch (g->path) {
        case PATH_2X2: SFX(pool_2x2)(x, y, counts, g, c0, c1, is_max); break;
        case PATH_3X3:
            if (is_max)
                SFX(max_3x3)(x, y, g, c0, c1, fill, scratch);
            else
                SFX(mean_3x3)(x, y, counts, g, c0, c1, scratch);
            break;
        case PATH_DIRECT: SFX(pool_direct)(x, y, counts, g, c0, c1, is_max, fill); break;
        default: SFX(pool_rows)(x, y, counts, g, c0, c1, is_max, fill, scratch); break;
    }
}

/* Every channel, in `chunks` parallel chunks, each with `per_chunk` elements of scratch. */
static void SFX(pool)(const REAL *x, REAL *y, const REAL *counts, const Window *g, int is_max,
                      double fill_value, int chunks, REAL *scratch, Py_ssize_t per_chunk) {
    const REAL fill = (REAL)fill_value;
    const Py_ssize_t channels = g->channels;
    if (chunks == 1) {
        if (is_max)
            SFX(pool_chunk)(x, y, counts, g, 0, channels, 1, fill, scratch);
        else
            SFX(pool_chunk)(x, y, counts, g, 0, channels, 0, fill, scratch);
        return;
    }
#pragma omp parallel for num_threads(chunks) schedule(static)
    for (int k = 0; k < chunks; k++) {
        Py_ssize_t c0 = k * channels / chunks, c1 = (k + 1) * channels / chunks;
        REAL *mine = scratch ? scratch + k * per_chunk : NULL;
        if (is_max)
            SFX(pool_chunk)(x, y, counts, g, c0, c1, 1, fill, mine);
        else
            SFX(pool_chunk)(x, y, counts, g, c0, c1, 0, fill, mine);
    }
}

/* y[r] = the mean of row r of x (rows, size), summed in double in any order (as numba's
   fastmath reassoc: the sums vectorise). */
static REASSOCIATE void SFX(plane_means)(const REAL *x, REAL *y, Py_ssize_t rows, Py_ssize_t size) {
#ifdef WIDE_SUM
    if (size >= 128) {
        for (Py_ssize_t r = 0; r < rows; r++) y[r] = (REAL)(WIDE_SUM(x + r * size, size) / (double)size);
        return;
    }
#endif
    for (Py_ssize_t r = 0; r < rows; r++) {
        const REAL *row = x + r * size;
        double total = 0.0;
        for (Py_ssize_t i = 0; i < size; i++) total += (double)row[i];
        y[r] = (REAL)(total / (double)size);
    }
}

/* The same means when row r's element i sits at x[i * pitch + r] (a channels-last tensor):
   the rows are summed side by side, in double, in blocks that stay in registers. */
static void SFX(column_means)(const REAL *x, REAL *y, Py_ssize_t rows, Py_ssize_t size, Py_ssize_t pitch) {
    enum { BLOCK = 64 };
    for (Py_ssize_t r0 = 0; r0 < rows; r0 += BLOCK) {
        const Py_ssize_t count = rows - r0 < BLOCK ? rows - r0 : BLOCK;
        double totals[BLOCK] = {0.0};
        for (Py_ssize_t i = 0; i < size; i++) {
            const REAL *line = x + i * pitch + r0;
            for (Py_ssize_t k = 0; k < count; k++) totals[k] += (double)line[k];
        }
        for (Py_ssize_t k = 0; k < count; k++) y[r0 + k] = (REAL)(totals[k] / (double)size);
    }
}

#endif
