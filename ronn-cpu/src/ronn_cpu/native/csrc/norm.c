/* Row-wise normalisations over the last axis of a (rows, D) array (the C twin of
   ronn_cpu/jit/norm.py).

   layer_norm(threads, x, scale, bias, has_bias, epsilon, y, mean, inv_std)
       y[r] = (x[r] - mean[r]) * inv_std[r] * scale (+ bias), with mean[r] and
       inv_std[r] = 1 / sqrt(var[r] + epsilon) (float64 arrays of `rows`) computed in double,
       two passes over the row; scale and bias hold D elements of x's type.
   softmax(threads, x, y), log_softmax(threads, x, y)
       Softmax / LogSoftmax of each row of x into y (same shape and type, not overlapping x).

   As numba's: statistics and the softmax's sum accumulate in double (in any order, so that
   they vectorise); e = exp(x - max) is computed in x's type, the softmax multiplies it by the
   reciprocal of the sum in double, the LogSoftmax is (x - max) - log(sum) in double (numba's
   x - (max + log(sum)) loses the log beside a huge maximum: 0 for a row of float max). A row
   holding a NaN or +inf, or all -inf, comes out all NaN (the NaN reaches every element through
   the sum). float32's exp is evaluated in double by a branch-free polynomial that gcc
   vectorises (within a hair of correctly rounded, denormal results included, as libm's expf);
   float64's is libm's exp. Rows split across `threads` OpenMP threads. Returns None, or
   NotImplemented for arguments it does not take (strided arrays, other dtypes, mismatched
   shapes).

   The typed loops sit at the end of this file, which includes itself once per real type
   (NORM_TYPED defined, with REAL and SFX). */
#ifndef NORM_TYPED
#include "common.h"

#define INLINE static inline __attribute__((always_inline))

/* exp(x) rounded to float, evaluated in double: x = n ln2 + r with |r| <= ln2/2, e^r by its
   Taylor polynomial of degree 9 (relative error under 1e-11), 2^n built in the exponent bits.
   Below -104 the result is 0, above 89 inf (as float's range gives), NaN stays NaN. Those ends
   are bit masks rather than clamps or branches: gcc would thread a clamped constant through
   the polynomial into control flow and leave the loop scalar. */
INLINE float exp_f32(float value) {
    const double shifter = 0x1.8p52; /* adding it rounds to an integer held in the low bits */
    double x = (double)value;
    double t = x * 1.4426950408889634 + shifter;
    double n = t - shifter;
    double r = x - n * 0.6931471805599453;
    double p = 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits << 52) + ((uint64_t)1023 << 52); /* n's low 12 bits moved to the exponent */
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    float e = (float)(p * scale);
    uint32_t out;
    memcpy(&out, &e, sizeof out);
    uint32_t over = -(uint32_t)(value > 89.0f);
    out = (out & -(uint32_t)!(value < -104.0f) & ~over) | (over & 0x7f800000u);
    memcpy(&e, &out, sizeof e);
    return e;
}

INLINE double exp_f64(double x) { return exp(x); }

/* Vectors of doubles for the row passes, loaded from and stored to either type. gcc widens a
   plain float loop's 16 floats a vector by a split and two conversions (and narrows the same
   way), which made LayerNormalization 15-30% slower than numba's; these load 8 (4) floats
   straight into a vector of doubles. Without AVX the plain loops serve. */
#if defined(__AVX512F__)
#include <immintrin.h>
#define VW 8
typedef __m512d vd;
#define vd_set _mm512_set1_pd
#define vd_add _mm512_add_pd
#define vd_sub _mm512_sub_pd
#define vd_mul _mm512_mul_pd
#define vd_fma _mm512_fmadd_pd
#define vd_load_f32(p) _mm512_cvtps_pd(_mm256_loadu_ps(p))
#define vd_load_f64 _mm512_loadu_pd
#define vd_store_f32(p, v) _mm256_storeu_ps((p), _mm512_cvtpd_ps(v))
#define vd_store_f64 _mm512_storeu_pd
#define vd_total _mm512_reduce_add_pd
#ifdef __AVX512VL__ /* a row's last (width % 8) elements under a mask, not one by one */
#define VMASK(count) ((__mmask8)((1u << (count)) - 1))
#define vd_load_f32_masked(p, m) _mm512_cvtps_pd(_mm256_maskz_loadu_ps((m), (p)))
#define vd_load_f64_masked(p, m) _mm512_maskz_loadu_pd((m), (p))
#define vd_store_f32_masked(p, m, v) _mm256_mask_storeu_ps((p), (m), _mm512_cvtpd_ps(v))
#define vd_store_f64_masked(p, m, v) _mm512_mask_storeu_pd((p), (m), (v))
#endif
#elif defined(__AVX__)
#include <immintrin.h>
#define VW 4
typedef __m256d vd;
#define vd_set _mm256_set1_pd
#define vd_add _mm256_add_pd
#define vd_sub _mm256_sub_pd
#define vd_mul _mm256_mul_pd
#ifdef __FMA__
#define vd_fma _mm256_fmadd_pd
#else
#define vd_fma(a, b, c) _mm256_add_pd(_mm256_mul_pd((a), (b)), (c))
#endif
#define vd_load_f32(p) _mm256_cvtps_pd(_mm_loadu_ps(p))
#define vd_load_f64 _mm256_loadu_pd
#define vd_store_f32(p, v) _mm_storeu_ps((p), _mm256_cvtpd_ps(v))
#define vd_store_f64 _mm256_storeu_pd
static inline double vd_total(vd v) {
    __m128d half = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(half, _mm_unpackhi_pd(half, half)));
}
#endif
/* rows normalised together hold at most this many elements (L1-sized), unless one row is longer */
#define SOFTMAX_BLOCK 2048

#define NORM_TYPED
#define REAL float
#define SFX(name) name##_f32
#define VLOAD vd_load_f32
#define VSTORE vd_store_f32
#define VLOAD_MASKED vd_load_f32_masked
#define VSTORE_MASKED vd_store_f32_masked
#include "norm.c"
#undef REAL
#undef SFX
#undef VLOAD
#undef VSTORE
#undef VLOAD_MASKED
#undef VSTORE_MASKED
#define REAL double
#define SFX(name) name##_f64
#define VLOAD vd_load_f64
#define VSTORE vd_store_f64
#define VLOAD_MASKED vd_load_f64_masked
#define VSTORE_MASKED vd_store_f64_masked
#include "norm.c"
#undef REAL
#undef SFX
#undef VLOAD
#undef VSTORE
#undef VLOAD_MASKED
#undef VSTORE_MASKED
#undef NORM_TYPED

/* x (rows, D) and y of its dtype and shape, C-contiguous, y writable and apart from x; NULL:
   declined. */
static Py_buffer *rows_pair(Arrays *arrays, PyObject *x_obj, PyObject *y_obj, Py_buffer **y) {
    Py_buffer *x = arrays_real(arrays, x_obj, 0);
    *y = x ? arrays_real(arrays, y_obj, 1) : NULL;
    if (*y == NULL || x->ndim != 2 || (*y)->ndim != 2 || view_dim(x, 0) != view_dim(*y, 0) ||
        view_dim(x, 1) != view_dim(*y, 1) || views_overlap(x, *y))
        return NULL;
    return x;
}

/* A C-contiguous float64 array of at least `count` elements (writable), or NULL. */
static Py_buffer *doubles(Arrays *arrays, PyObject *obj, Py_ssize_t count) {
    Py_buffer *view = arrays_add(arrays, obj, 1);
    return (view && real_kind(view) == 'd' && view_size(view) >= count) ? view : NULL;
}

static PyObject *py_layer_norm(FASTCALL_ARGS) {
    CHECK_NARGS("layer_norm", 9);
    Py_ssize_t threads, has_bias;
    double epsilon;
    if (arg_ssize(args[0], &threads) || arg_ssize(args[4], &has_bias) || arg_double(args[5], &epsilon))
        return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *y, *x = rows_pair(&arrays, args[1], args[6], &y);
    if (x == NULL) DECLINE(&arrays);
    Py_ssize_t rows = view_dim(x, 0), width = view_dim(x, 1);
    Py_buffer *scale = arrays_real(&arrays, args[2], 0);
    Py_buffer *bias = scale ? arrays_real(&arrays, args[3], 0) : NULL;
    Py_buffer *mean = bias ? doubles(&arrays, args[7], rows) : NULL;
    Py_buffer *inv = mean ? doubles(&arrays, args[8], rows) : NULL;
    if (inv == NULL || view_size(scale) < width || (has_bias && view_size(bias) < width)) DECLINE(&arrays);
    int nt = (int)(threads < 1 ? 1 : threads > rows ? rows : threads);
    const void *beta = has_bias ? bias->buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f')
        layer_norm_f32(x->buf, scale->buf, beta, epsilon, y->buf, mean->buf, inv->buf, rows, width, nt);
    else
        layer_norm_f64(x->buf, scale->buf, beta, epsilon, y->buf, mean->buf, inv->buf, rows, width, nt);
    Py_END_ALLOW_THREADS
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyObject *softmax_call(PyObject *const *args, int logs) {
    Py_ssize_t threads;
    if (arg_ssize(args[0], &threads)) return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *y, *x = rows_pair(&arrays, args[1], args[2], &y);
    if (x == NULL) DECLINE(&arrays);
    Py_ssize_t rows = view_dim(x, 0), width = view_dim(x, 1);
    int nt = (int)(threads < 1 ? 1 : threads > rows ? rows : threads);
    Py_BEGIN_ALLOW_THREADS
    if (width > 0) {
        if (arrays.kind == 'f')
            softmax_f32(x->buf, y->buf, rows, width, logs, nt);
        else
            softmax_f64(x->buf, y->buf, rows, width, logs, nt);
    }
    Py_END_ALLOW_THREADS
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyObject *py_softmax(FASTCALL_ARGS) {
    CHECK_NARGS("softmax", 3);
    return softmax_call(args, 0);
}

static PyObject *py_log_softmax(FASTCALL_ARGS) {
    CHECK_NARGS("log_softmax", 3);
    return softmax_call(args, 1);
}

static PyMethodDef methods[] = {
    METHOD(layer_norm, "layer_norm(threads, x, scale, bias, has_bias, epsilon, y, mean, inv_std)"),
    METHOD(softmax, "softmax(threads, x, y)"),
    METHOD(log_softmax, "log_softmax(threads, x, y)"),
    {NULL, NULL, 0, NULL},
};

DEFINE_MODULE(ronn_native_norm, methods, "LayerNormalization, Softmax and LogSoftmax over rows.")

#else /* NORM_TYPED: the loops for one real type */

/* The sum of row[i] (minus `center`, squared, if `square`) in double, in any order: four
   vector accumulators over 4 VW elements a step (one would wait on each add), one over VW,
   the last few one by one. */
INLINE double SFX(row_sum)(const REAL *row, Py_ssize_t width, double center, int square) {
    Py_ssize_t i = 0;
    double total = 0.0;
#ifdef VW
    const vd c = vd_set(center);
    vd a = vd_set(0.0), b = a, e = a, f = a;
    for (; i + 4 * VW <= width; i += 4 * VW) {
        vd p = VLOAD(row + i), q = VLOAD(row + i + VW), r = VLOAD(row + i + 2 * VW), t = VLOAD(row + i + 3 * VW);
        if (square) {
            p = vd_sub(p, c), q = vd_sub(q, c), r = vd_sub(r, c), t = vd_sub(t, c);
            a = vd_fma(p, p, a), b = vd_fma(q, q, b), e = vd_fma(r, r, e), f = vd_fma(t, t, f);
        } else {
            a = vd_add(a, p), b = vd_add(b, q), e = vd_add(e, r), f = vd_add(f, t);
        }
    }
    a = vd_add(vd_add(a, b), vd_add(e, f));
    for (; i + VW <= width; i += VW) {
        vd p = VLOAD(row + i);
        if (square) {
            p = vd_sub(p, c);
            a = vd_fma(p, p, a);
        } else {
            a = vd_add(a, p);
        }
    }
#ifdef VMASK
    if (i < width) {
        const __mmask8 tail = VMASK(width - i);
        vd p = VLOAD_MASKED(row + i, tail);
        if (square) {
            p = vd_sub(p, c);
            a = _mm512_mask3_fmadd_pd(p, p, a, tail);
        } else {
            a = vd_add(a, p);
        }
        i = width;
    }
#endif
    total = vd_total(a);
#endif
    for (; i < width; i++) {
        double d = (double)row[i] - center;
        total += square ? d * d : d;
    }
    return total;
}

/* One row of LayerNormalization (bias NULL: none); its mean and 1/std into *mean, *inv. */
INLINE void SFX(layer_norm_row)(const REAL *restrict row, const REAL *restrict scale,
                                const REAL *restrict bias, double epsilon, REAL *restrict out, double *mean,
                                double *inv, Py_ssize_t width) {
    const double mu = SFX(row_sum)(row, width, 0.0, 0) / (double)width;
    const double k = 1.0 / sqrt(SFX(row_sum)(row, width, mu, 1) / (double)width + epsilon);
    *mean = mu;
    *inv = k;
    Py_ssize_t i = 0;
#ifdef VW
    const vd m = vd_set(mu), kv = vd_set(k);
    for (; i + VW <= width; i += VW) {
        vd v = vd_mul(vd_sub(VLOAD(row + i), m), kv);
        VSTORE(out + i, bias ? vd_fma(v, VLOAD(scale + i), VLOAD(bias + i)) : vd_mul(v, VLOAD(scale + i)));
    }
#ifdef VMASK
    if (i < width) {
        const __mmask8 tail = VMASK(width - i);
        vd v = vd_mul(vd_sub(VLOAD_MASKED(row + i, tail), m), kv), g = VLOAD_MASKED(scale + i, tail);
        VSTORE_MASKED(out + i, tail, bias ? vd_fma(v, g, VLOAD_MASKED(bias + i, tail)) : vd_mul(v, g));
        i = width;
    }
#endif
#endif
    for (; i < width; i++) {
        double v = ((double)row[i] - mu) * k;
        out[i] = (REAL)(bias ? v * (double)scale[i] + (double)bias[i] : v * (double)scale[i]);
    }
}

/* LayerNormalization of every row (bias NULL: none). */
static void SFX(layer_norm)(const REAL *x, const REAL *scale, const REAL *bias, double epsilon, REAL *y,
                            double *mean, double *inv, Py_ssize_t rows, Py_ssize_t width, int nt) {
    if (nt <= 1) { /* no OpenMP call: a team of one still costs a few hundred nanoseconds */
        for (Py_ssize_t r = 0; r < rows; r++)
            SFX(layer_norm_row)(x + r * width, scale, bias, epsilon, y + r * width, mean + r, inv + r, width);
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (Py_ssize_t r = 0; r < rows; r++)
        SFX(layer_norm_row)(x + r * width, scale, bias, epsilon, y + r * width, mean + r, inv + r, width);
}

/* The row's maximum (with a NaN in the row, any value: the NaN spreads through the sum), 16
   running maxima at a time over long rows (one would wait on each comparison). */
INLINE REAL SFX(row_max)(const REAL *row, Py_ssize_t width) {
    Py_ssize_t i = 0;
    REAL top = row[0];
    if (width >= 32) {
        REAL lanes[16];
        for (int k = 0; k < 16; k++) lanes[k] = row[k];
        for (i = 16; i + 16 <= width; i += 16)
            for (int k = 0; k < 16; k++) lanes[k] = row[i + k] > lanes[k] ? row[i + k] : lanes[k];
        for (int k = 0; k < 16; k++) top = lanes[k] > top ? lanes[k] : top;
    }
    for (; i < width; i++) top = row[i] > top ? row[i] : top;
    return top;
}

/* Softmax (or LogSoftmax) of `count` rows: per row out = x - max; exp over the whole block at
   once (short rows vectorise too); per row the sum of the exps in double, then out scaled by
   its reciprocal, or out = (x - max) - log(sum). */
INLINE void SFX(softmax_block)(const REAL *restrict x, REAL *restrict out, Py_ssize_t count, Py_ssize_t width,
                               int logs) {
    REAL tops[SOFTMAX_BLOCK];
    for (Py_ssize_t r = 0; r < count; r++) {
        const REAL *row = x + r * width;
        REAL *dst = out + r * width;
        const REAL top = tops[r] = SFX(row_max)(row, width);
        for (Py_ssize_t i = 0; i < width; i++) dst[i] = row[i] - top;
    }
    for (Py_ssize_t i = 0; i < count * width; i++) out[i] = SFX(exp)(out[i]);
    for (Py_ssize_t r = 0; r < count; r++) {
        const REAL *row = x + r * width;
        REAL *dst = out + r * width;
        const double total = SFX(row_sum)(dst, width, 0.0, 0);
        if (logs) { /* (x - max) - log(sum): x - (max + log(sum)) would lose log(sum) beside a huge max */
            const double top = (double)tops[r], shift = log(total);
            for (Py_ssize_t i = 0; i < width; i++) dst[i] = (REAL)(((double)row[i] - top) - shift);
        } else {
            const double k = 1.0 / total;
            for (Py_ssize_t i = 0; i < width; i++) dst[i] = (REAL)((double)dst[i] * k);
        }
    }
}

/* Rows in blocks of about SOFTMAX_BLOCK elements (at least one row), blocks across threads. */
static void SFX(softmax)(const REAL *x, REAL *y, Py_ssize_t rows, Py_ssize_t width, int logs, int nt) {
    const Py_ssize_t per = width >= SOFTMAX_BLOCK ? 1 : SOFTMAX_BLOCK / width;
    const Py_ssize_t blocks = (rows + per - 1) / per;
    if (nt > blocks) nt = (int)blocks;
    if (nt <= 1) {
        for (Py_ssize_t r0 = 0; r0 < rows; r0 += per)
            SFX(softmax_block)(x + r0 * width, y + r0 * width, rows - r0 < per ? rows - r0 : per, width, logs);
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (Py_ssize_t b = 0; b < blocks; b++) {
        const Py_ssize_t r0 = b * per, count = rows - r0 < per ? rows - r0 : per;
        SFX(softmax_block)(x + r0 * width, y + r0 * width, count, width, logs);
    }
}

#endif
