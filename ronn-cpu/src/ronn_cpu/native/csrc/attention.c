/* The masked Softmax of attention scores (the C twin of ronn_cpu/jit/attention.py).

   softmax(threads, s, scale, condition, keeps, fill, use_condition, mask, use_mask)
       In place over the C-contiguous scores s (A, B, S, T), head by head (heads split across
       `threads` OpenMP threads): each row becomes s * scale; where the condition's truth is
       not `keeps`, fill (use_condition); + mask (use_mask); then its Softmax. condition (bool)
       and mask (s's type) are 4-D with any strides, each axis 1 (broadcast) or the scores'.

   Each step rounds to the scores' type, in the body's order (S * scale, Where, + mask, then
   x - max); the exps are summed in double and each is multiplied by the reciprocal of the sum
   in double. A row whose maximum is not finite (all -inf, +inf, any NaN) is all NaN, as the
   standard Softmax gives. The exp runs over many rows at once, so that short rows vectorise
   too: over a head's whole (S, T) block in the plain loops (float32's exp there by a float
   polynomial, at most 1 ulp, as the numba kernel's), over groups of rows padded to whole
   vectors under AVX-512 (float32's exp evaluated in double there, within a hair of correctly
   rounded); 0 below -87.33 either way, as the numba kernel's. float64's exp is libm's.
   Returns None, or NotImplemented for arguments it does not take (strided scores, other
   dtypes, a mask or condition that does not broadcast to the scores).

   The typed loops sit at the end of this file, which includes itself once per real type
   (ATTENTION_TYPED defined, with REAL and SFX). */
#ifndef ATTENTION_TYPED
#include <stdlib.h>

#include "common.h"

#define INLINE static inline __attribute__((always_inline))

/* exp(x) of float32 scores in the plain loops, in float (twice the lanes of evaluating it in
   double, as the AVX-512 rows do): x = n ln2 + r, ln2 in two parts, e^r by Cephes' degree-7
   fit (at most 1 ulp, as the numba kernel's), 2^n built in the exponent bits; 0 below -87.33
   (where float's normal numbers end, as the numba kernel), NaN stays NaN. Its inputs are
   x - max <= 0: above 88 it gives inf. The shifter's rounding and the ends as bit masks keep
   the loop branch-free (gcc would thread a clamped constant into control flow, and leave the
   loop scalar). */
INLINE float exp_f32(float value) {
    const float shifter = 0x1.8p23f; /* adding it rounds to an integer held in the low bits */
    float t = value * 1.44269504088896341f + shifter;
    float n = t - shifter;
    float r = value - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits << 23) + (127u << 23); /* n's low 9 bits moved to the exponent */
    float power;
    memcpy(&power, &bits, sizeof power);
    float e = p * power;
    uint32_t out;
    memcpy(&out, &e, sizeof out);
    uint32_t over = -(uint32_t)(value > 88.72f);
    out = (out & -(uint32_t)!(value < -87.33f) & ~over) | (over & 0x7f800000u);
    memcpy(&e, &out, sizeof e);
    return e;
}

INLINE double exp_f64(double x) { return exp(x); }

/* A 4-D operand (condition or mask) broadcast to the scores: its base, byte strides (0 on an
   axis of size 1) and whether it is used at all. */
typedef struct {
    const char *base;
    Py_ssize_t step[4];
    int used;
} Operand;

/* The scores' shape and the pass's parameters. */
typedef struct {
    Py_ssize_t a, b, s, t;
    double scale, fill;
    int keeps;
    Operand condition, mask;
} Pass;

/* The start of row (a, b, i) of an operand. */
static inline const char *operand_row(const Operand *o, Py_ssize_t a, Py_ssize_t b, Py_ssize_t i) {
    return o->base + a * o->step[0] + b * o->step[1] + i * o->step[2];
}

/* Row i of head (a, b)'s operands: the condition's truths (contiguous or strided) or, broadcast
   along the row, whether it fills the whole row; the mask's row or its one value. */
typedef struct {
    const unsigned char *kept;
    Py_ssize_t kept_step;
    int fill_all;
    const char *add;
    Py_ssize_t add_step;
    double add_all;
} Row;

static inline void row_operands(const Pass *p, Py_ssize_t a, Py_ssize_t b, Py_ssize_t i, int real_size, Row *r) {
    *r = (Row){0};
    if (p->condition.used) {
        r->kept = (const unsigned char *)operand_row(&p->condition, a, b, i);
        r->kept_step = p->condition.step[3];
        if (r->kept_step == 0) {
            r->fill_all = (r->kept[0] != 0) != p->keeps;
            r->kept = NULL;
        }
    }
    if (p->mask.used) {
        r->add = operand_row(&p->mask, a, b, i);
        r->add_step = p->mask.step[3];
        if (r->add_step == 0) {
            r->add_all = real_size == 4 ? *(const float *)r->add : *(const double *)r->add;
            r->add = NULL;
        }
    }
}

/* Whether the operands are broadcast or contiguous along the rows (of reals of real_size). */
static inline int rows_contiguous(const Pass *p, int real_size) {
    Py_ssize_t kept = p->condition.step[3], add = p->mask.step[3];
    return (!p->condition.used || kept == 0 || kept == 1) && (!p->mask.used || add == 0 || add == real_size);
}

/* float32 rows under AVX-512, in groups of rows through an aligned scratch whose rows are
   padded to whole vectors: each row scaled, filled, masked and shifted into the scratch (its
   last T % 16 scores under a mask, where gcc's loops take 14- or 32-score rows element by
   element; the padding -inf), then exp over the group's whole scratch (no reductions in that
   loop: it runs at the exp's throughput), then each row's sum and product back into the
   scores. The scores are only read in the first step and only written in the last: a row
   stored right before the next one is loaded would stall that load (the masked store's
   footprint overlaps it). Same steps and roundings as the plain loops. */
#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__)
#include <immintrin.h>
#define ROWS512 1
/* floats of scratch a group of rows holds (one row at least) */
#define GROUP_FLOATS 4096

static inline __mmask16 lanes16(Py_ssize_t count) { return (__mmask16)(count >= 16 ? 0xffff : (1u << count) - 1); }

/* exp_f32 of 8 floats, as float (NaN stays NaN, 0 below -87.33). */
static inline __m256 exp8(__m256 value) {
    const __m512d shifter = _mm512_set1_pd(0x1.8p52);
    const __m512d x = _mm512_cvtps_pd(value);
    const __m512d t = _mm512_fmadd_pd(x, _mm512_set1_pd(1.4426950408889634), shifter);
    const __m512d r = _mm512_fnmadd_pd(_mm512_sub_pd(t, shifter), _mm512_set1_pd(0.6931471805599453), x);
    __m512d p = _mm512_set1_pd(1.0 / 362880.0);
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 40320.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 5040.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 720.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 120.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 24.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 6.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.5));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    const __m512i bits = _mm512_add_epi64(_mm512_slli_epi64(_mm512_castpd_si512(t), 52),
                                          _mm512_set1_epi64((long long)1023 << 52));
    const __m256 e = _mm512_cvtpd_ps(_mm512_mul_pd(p, _mm512_castsi512_pd(bits)));
    const __mmask8 low = _mm256_cmp_ps_mask(value, _mm256_set1_ps(-87.33f), _CMP_LT_OQ);
    const __mmask8 over = _mm256_cmp_ps_mask(value, _mm256_set1_ps(89.0f), _CMP_GT_OQ);
    return _mm256_mask_mov_ps(_mm256_maskz_mov_ps((__mmask8)~low, e), over, _mm256_set1_ps(INFINITY));
}

/* Row (operands r) scaled, filled and masked as prepare_row_f32 does, less its maximum (NaN
   if that is not finite), into x (64-byte aligned, the row's length rounded up to 16, the
   padding -inf). The row is only read. */
static inline void prepare_row512(const float *row, const Pass *p, const Row *r, float *x) {
    const Py_ssize_t width = p->t;
    const __m512 scale = _mm512_set1_ps((float)p->scale), fill = _mm512_set1_ps((float)p->fill);
    const __m512 offset = _mm512_set1_ps((float)r->add_all), lowest = _mm512_set1_ps(-INFINITY);
    __m512 top = lowest, v = lowest;
    for (Py_ssize_t j = 0; j < width; j += 16) {
        const __mmask16 m = lanes16(width - j);
        v = r->fill_all ? fill : _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + j), scale);
        if (r->kept) {
            __mmask16 truth = _mm_test_epi8_mask(_mm_maskz_loadu_epi8(m, r->kept + j), _mm_set1_epi8(-1));
            v = _mm512_mask_mov_ps(v, p->keeps ? (__mmask16)~truth : truth, fill);
        }
        if (r->add) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, (const float *)r->add + j));
        else if (p->mask.used) v = _mm512_add_ps(v, offset);
        v = _mm512_mask_blend_ps(m, lowest, v);
        if (width > 16) _mm512_store_ps(x + j, v);
        top = _mm512_max_ps(top, v);
    }
    const float most = _mm512_reduce_max_ps(top);
    const __m512 shift = _mm512_set1_ps(isfinite(most) ? most : most - most);
    if (width <= 16) {
        _mm512_store_ps(x, _mm512_sub_ps(v, shift));
        return;
    }
    for (Py_ssize_t j = 0; j < width; j += 16) _mm512_store_ps(x + j, _mm512_sub_ps(_mm512_load_ps(x + j), shift));
}

/* row[j] = e[j] * (1 / the sum of e's row in double), the product in double. */
static inline void normalize_row512(float *row, Py_ssize_t width, const float *e) {
    const Py_ssize_t pitch = (width + 15) / 16 * 16;
    __m512d total = _mm512_setzero_pd(), more = total;
    for (Py_ssize_t j = 0; j < pitch; j += 16) {
        total = _mm512_add_pd(total, _mm512_cvtps_pd(_mm256_load_ps(e + j)));
        more = _mm512_add_pd(more, _mm512_cvtps_pd(_mm256_load_ps(e + j + 8)));
    }
    const __m512d k = _mm512_set1_pd(1.0 / _mm512_reduce_add_pd(_mm512_add_pd(total, more)));
    for (Py_ssize_t j = 0; j < width; j += 8) {
        const __m512d v = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_load_ps(e + j)), k);
        _mm256_mask_storeu_ps(row + j, (__mmask8)lanes16(width - j), _mm512_cvtpd_ps(v));
    }
}

/* The masked Softmax of head (a, b)'s block (S, T); 0 if the scratch a row longer than a
   group needs cannot be had (nothing done). */
static int softmax_head512(float *block, const Pass *p, Py_ssize_t a, Py_ssize_t b) {
    const Py_ssize_t length = p->s, width = p->t, pitch = (width + 15) / 16 * 16;
    const Py_ssize_t group = pitch >= GROUP_FLOATS ? 1 : GROUP_FLOATS / pitch;
    float local[GROUP_FLOATS] __attribute__((aligned(64)));
    float *x = local;
    if (pitch > GROUP_FLOATS && (x = aligned_alloc(64, (size_t)pitch * sizeof(float))) == NULL) return 0;
    Row r;
    for (Py_ssize_t i0 = 0; i0 < length; i0 += group) {
        const Py_ssize_t count = length - i0 < group ? length - i0 : group;
        for (Py_ssize_t g = 0; g < count; g++) {
            row_operands(p, a, b, i0 + g, (int)sizeof(float), &r);
            prepare_row512(block + (i0 + g) * width, p, &r, x + g * pitch);
        }
        for (Py_ssize_t k = 0; k < count * pitch; k += 8) _mm256_store_ps(x + k, exp8(_mm256_load_ps(x + k)));
        for (Py_ssize_t g = 0; g < count; g++) normalize_row512(block + (i0 + g) * width, width, x + g * pitch);
    }
    if (x != local) free(x);
    return 1;
}
#endif

#define ATTENTION_TYPED
#define REAL float
#define SFX(name) name##_f32
#define IS_FLOAT 1
#include "attention.c"
#undef REAL
#undef SFX
#undef IS_FLOAT
#define IS_FLOAT 0
#define REAL double
#define SFX(name) name##_f64
#include "attention.c"
#undef REAL
#undef SFX
#undef IS_FLOAT
#undef ATTENTION_TYPED

/* A 4-D buffer with strides (read-only, any layout), or NULL: declined (no error set). */
static Py_buffer *arrays_strided(Arrays *arrays, PyObject *obj) {
    if (arrays->count >= MAX_VIEWS) return NULL;
    Py_buffer *view = &arrays->views[arrays->count];
    if (PyObject_GetBuffer(obj, view, PyBUF_RECORDS_RO) != 0) {
        PyErr_Clear();
        return NULL;
    }
    arrays->count++;
    return view;
}

/* The operand from a 4-D view broadcasting to `shape` (each axis 1 or the scores'); 0 if not. */
static int operand(const Py_buffer *view, const Py_ssize_t *shape, Operand *o) {
    if (view->ndim != 4 || view->strides == NULL) return 0;
    for (int k = 0; k < 4; k++) {
        Py_ssize_t size = view->shape[k];
        if (size != 1 && size != shape[k]) return 0;
        o->step[k] = size == 1 ? 0 : view->strides[k];
    }
    o->base = view->buf;
    o->used = 1;
    return 1;
}

static PyObject *py_softmax(FASTCALL_ARGS) {
    CHECK_NARGS("softmax", 9);
    Py_ssize_t threads, keeps, use_condition, use_mask;
    Pass pass = {0};
    if (arg_ssize(args[0], &threads) || arg_double(args[2], &pass.scale) || arg_ssize(args[4], &keeps) ||
        arg_double(args[5], &pass.fill) || arg_ssize(args[6], &use_condition) || arg_ssize(args[8], &use_mask))
        return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *s = arrays_real(&arrays, args[1], 1);
    if (s == NULL || s->ndim != 4) DECLINE(&arrays);
    Py_ssize_t shape[4] = {view_dim(s, 0), view_dim(s, 1), view_dim(s, 2), view_dim(s, 3)};
    if (use_condition) {
        Py_buffer *c = arrays_strided(&arrays, args[3]);
        if (c == NULL || c->itemsize != 1 || c->format == NULL || strcmp(c->format, "?") != 0 ||
            !operand(c, shape, &pass.condition))
            DECLINE(&arrays);
    }
    if (use_mask) {
        Py_buffer *m = arrays_strided(&arrays, args[7]);
        if (m == NULL || real_kind(m) != arrays.kind || !operand(m, shape, &pass.mask)) DECLINE(&arrays);
    }
    pass.a = shape[0], pass.b = shape[1], pass.s = shape[2], pass.t = shape[3];
    pass.keeps = keeps != 0;
    Py_ssize_t heads = pass.a * pass.b;
    int nt = (int)(threads < 1 ? 1 : threads > heads ? heads : threads);
    Py_BEGIN_ALLOW_THREADS
    if (pass.t > 0) {
        if (arrays.kind == 'f')
            softmax_f32(s->buf, &pass, nt);
        else
            softmax_f64(s->buf, &pass, nt);
    }
    Py_END_ALLOW_THREADS
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    METHOD(softmax, "softmax(threads, s, scale, condition, keeps, fill, use_condition, mask, use_mask)"),
    {NULL, NULL, 0, NULL},
};

DEFINE_MODULE(ronn_native_attention, methods, "The scaled, masked Softmax of attention scores.")

#else /* ATTENTION_TYPED: the loops for one real type */

/* The row's maximum (with a NaN in it, any value: the NaN spreads through the sum), 16
   running maxima at a time over long rows (one would wait on each comparison). */
INLINE REAL SFX(row_max)(const REAL *row, Py_ssize_t width) {
    Py_ssize_t j = 0;
    REAL top = row[0];
    if (width >= 32) {
        REAL lanes[16];
        for (int k = 0; k < 16; k++) lanes[k] = row[k];
        for (j = 16; j + 16 <= width; j += 16)
            for (int k = 0; k < 16; k++) lanes[k] = row[j + k] > lanes[k] ? row[j + k] : lanes[k];
        for (int k = 0; k < 16; k++) top = lanes[k] > top ? lanes[k] : top;
    }
    for (; j < width; j++) top = row[j] > top ? row[j] : top;
    return top;
}

/* The row's sum in double, 8 running sums at a time over long rows. */
INLINE double SFX(row_sum)(const REAL *row, Py_ssize_t width) {
    Py_ssize_t j = 0;
    double total = 0.0;
    if (width >= 16) {
        double lanes[8] = {0};
        for (; j + 8 <= width; j += 8)
            for (int k = 0; k < 8; k++) lanes[k] += (double)row[j + k];
        total = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
    }
    for (; j < width; j++) total += (double)row[j];
    return total;
}

/* Row i of head (a, b): s * scale, the condition's fill, + mask, stored; returns its maximum. */
INLINE REAL SFX(prepare_row)(REAL *restrict row, const Pass *p, const Row *r) {
    const Py_ssize_t width = p->t;
    const REAL scale = (REAL)p->scale, fill = (REAL)p->fill, add_all = (REAL)r->add_all;
    if (r->fill_all)
        for (Py_ssize_t j = 0; j < width; j++) row[j] = fill;
    else
        for (Py_ssize_t j = 0; j < width; j++) row[j] = row[j] * scale;
    const unsigned char *kept = r->kept;
    if (kept && r->kept_step == 1) {
        const int keeps = p->keeps;
        for (Py_ssize_t j = 0; j < width; j++) row[j] = ((kept[j] != 0) != keeps) ? fill : row[j];
    } else if (kept) {
        for (Py_ssize_t j = 0; j < width; j++)
            if ((kept[j * r->kept_step] != 0) != p->keeps) row[j] = fill;
    }
    if (r->add && r->add_step == (Py_ssize_t)sizeof(REAL)) {
        const REAL *add = (const REAL *)r->add;
        for (Py_ssize_t j = 0; j < width; j++) row[j] = row[j] + add[j];
    } else if (r->add) {
        for (Py_ssize_t j = 0; j < width; j++) row[j] = row[j] + *(const REAL *)(r->add + j * r->add_step);
    } else if (p->mask.used) {
        for (Py_ssize_t j = 0; j < width; j++) row[j] = row[j] + add_all;
    }
    return SFX(row_max)(row, width);
}

/* The masked Softmax of head (a, b)'s block (S, T), in place: per row the prepared scores
   less their maximum, exp over the whole block, per row the product with 1 / sum. */
static void SFX(softmax_head)(REAL *block, const Pass *p, Py_ssize_t a, Py_ssize_t b) {
    const Py_ssize_t length = p->s, width = p->t;
    Row r;
#ifdef ROWS512
    if (IS_FLOAT && rows_contiguous(p, (int)sizeof(REAL)) && softmax_head512((float *)block, p, a, b)) return;
#endif
    for (Py_ssize_t i = 0; i < length; i++) {
        REAL *row = block + i * width;
        row_operands(p, a, b, i, (int)sizeof(REAL), &r);
        REAL top = SFX(prepare_row)(row, p, &r);
        if (!isfinite(top)) top = top - top; /* NaN: so is the row */
        for (Py_ssize_t j = 0; j < width; j++) row[j] = row[j] - top;
    }
    for (Py_ssize_t j = 0; j < length * width; j++) block[j] = SFX(exp)(block[j]);
    for (Py_ssize_t i = 0; i < length; i++) {
        REAL *row = block + i * width;
        const double inv = 1.0 / SFX(row_sum)(row, width);
        for (Py_ssize_t j = 0; j < width; j++) row[j] = (REAL)((double)row[j] * inv);
    }
}

/* Every head of the scores, heads across `nt` threads. */
static void SFX(softmax)(REAL *s, const Pass *p, int nt) {
    const Py_ssize_t heads = p->a * p->b, block = p->s * p->t;
    if (nt <= 1) { /* no OpenMP call: a team of one still costs a few hundred nanoseconds */
        for (Py_ssize_t h = 0; h < heads; h++) SFX(softmax_head)(s + h * block, p, h / p->b, h % p->b);
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (Py_ssize_t h = 0; h < heads; h++) SFX(softmax_head)(s + h * block, p, h / p->b, h % p->b);
}

#endif
