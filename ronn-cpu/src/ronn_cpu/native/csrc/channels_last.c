/* Channels-last (NHWC) convolution kernels: the C twin of ronn_cpu/jit/channels_last.py.

   depthwise(threads, x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params):
       x (N, H, W, C), w (kh, kw, C), y and res (N, OH, OW, C); y = act(bias + taps (+ res)),
       bias = tiled[:C]; rows of y split over threads;
   finish(threads, y, tiled, res, has_res, params): y = act(y + tiled (+ res)) in place, y and
       res flat, tiled the bias repeated (its length a multiple of C);
   gemm(x, w, bias, res, has_res, y, params): y (P, M) = act(x (P, K) @ w (K, M) + bias (+ res));
   im2col(x, cols, n, oh0, oh1, kh, kw, sh, sw, dh, dw, ph, pw): the taps of output rows
       oh0..oh1 of image n, one row of cols per output pixel (zeros outside the image);
   stem(threads, x, w, tiled, res, has_res, y, kh, kw, sh, sw, dh, dw, ph, pw, params): a dense
       convolution from an NCHW image, x (N, C, H, W), w (C * kh * kw, M) (rows (c, i, j)), y and
       res (N, OH, OW, M); y = act(bias + conv (+ res)), bias = tiled[:M]: each output pixel's
       taps times the weight rows, several pixels at a time, no im2col; rows of y split over
       threads;
   squeeze_excitation(x, w1, b1, w2, b2, y, params1, params2): y = x * gate per image, x and y
       (N, P * C), w1 (C, C1), w2 (C1, C); the means accumulate in float64.

   params = (p, q, lo, hi, r, mul) is the numba module's piecewise-linear activation:
   g = clip(p * v + q, lo, hi), act(v) = (v * g if mul else g) + r * min(v, 0). Loops run over
   contiguous channels so gcc vectorises them. The depthwise 3x3 and 5x5 kernels (stride 1 or 2
   along the width) compute groups of 4 or 8 output pixels by blocks of channels (two, one or half
   a vector: 32, 16 or 8 floats with AVX-512), their sums in registers, their taps unrolled; other
   kernels and the channels past the blocks go pixel by pixel. Returns None, or NotImplemented for
   arguments it does not take (a strided array, mixed dtypes, a negative pad, an output over an
   input): the numba kernel serves those (stem has none: the facade runs numba's im2col, a product
   and the epilogue instead).

   The typed kernels are written once and compiled per real type: this file includes itself
   with CL_TYPED, REAL, UINT (the unsigned integer of its size) and SFX defined (float, then
   double). */
#ifdef CL_TYPED

typedef struct {
    REAL p, q, lo, hi, r;
    int form;
} SFX(Act);

static SFX(Act) SFX(act_of)(const REAL *params) {
    SFX(Act) act = {params[0], params[1], params[2], params[3], params[4], FORM_CLIP};
    if (params[5] != 0)
        act.form = FORM_SWISH;
    else if (params[4] != 0)
        act.form = FORM_LEAKY;
    return act;
}

/* min(max(g, lo), hi) as the numba kernels compute it (hi wins when lo > hi; NaN stays NaN) */
static inline REAL SFX(clip)(REAL g, REAL lo, REAL hi) {
    g = g < lo ? lo : g;
    return g > hi ? hi : g;
}

#define CLIPPED(v) SFX(clip)(p * (v) + q, lo, hi)
#define ACT_CLIP(v) CLIPPED(v)
#define ACT_LEAKY(v) (CLIPPED(v) + r * ((v) < 0 ? (v) : (REAL)0))
#define ACT_SWISH(v) ((v) * CLIPPED(v))

/* out[k] = act(src[k] (+ shift[k]) (+ res[k])) for k < count; shift and res may be NULL, out
   may be src (same index: no dependence between iterations). */
static inline __attribute__((always_inline)) void SFX(store)(REAL *out, const REAL *src, const REAL *shift,
                                                             const REAL *res, Py_ssize_t count,
                                                             const SFX(Act) *act) {
    const REAL p = act->p, q = act->q, lo = act->lo, hi = act->hi, r = act->r;
    (void)r;
#define STORE_LOOP(VALUE, ACT)                                                        \
    _Pragma("GCC ivdep") _Pragma("GCC unroll 1") for (Py_ssize_t k = 0; k < count; k++) { \
        REAL v = VALUE;                                 \
        out[k] = ACT(v);                                \
    }
#define STORE_FORMS(VALUE)                                                      \
    switch (act->form) {                                                        \
        case FORM_SWISH: STORE_LOOP(VALUE, ACT_SWISH) break;                    \
        case FORM_LEAKY: STORE_LOOP(VALUE, ACT_LEAKY) break;                    \
        default: STORE_LOOP(VALUE, ACT_CLIP) break;                             \
    }
    if (shift && res) {
        STORE_FORMS(src[k] + shift[k] + res[k])
    } else if (shift) {
        STORE_FORMS(src[k] + shift[k])
    } else if (res) {
        STORE_FORMS(src[k] + res[k])
    } else {
        STORE_FORMS(src[k])
    }
#undef STORE_FORMS
#undef STORE_LOOP
}

/* --- depthwise ------------------------------------------------------------------------------ */

typedef struct {
    const REAL *x, *w, *bias, *res;
    REAL *y;
    SFX(Act) act;
} SFX(DwArrays);

/* GCC vectors: "wide" the widest registers worth using (64 bytes with AVX-512, else 32: pairs
   of 16-byte registers where there are no wider ones), "half" half as wide; loads unaligned */
typedef REAL SFX(wide) __attribute__((vector_size(VECTOR_BYTES)));
typedef REAL SFX(half) __attribute__((vector_size(VECTOR_BYTES / 2)));
#define WIDE ((int)(VECTOR_BYTES / sizeof(REAL)))
#define HALF (WIDE / 2)

static inline SFX(wide) SFX(load_wide)(const REAL *p) {
    SFX(wide) v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline SFX(half) SFX(load_half)(const REAL *p) {
    SFX(half) v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* BODY for each tap (i, j) in [i0, i1) x [j0, j1), with xs and ws its input and weight values */
#define FOR_TAPS(BODY)                                                                   \
    for (Py_ssize_t i = i0; i < i1; i++) {                                               \
        const Py_ssize_t row = (ih0 + i * g->dh) * g->width;                             \
        for (Py_ssize_t j = j0; j < j1; j++) {                                           \
            const REAL *restrict xs = image + (row + iw0 + j * g->dw) * g->channels + c0; \
            const REAL *restrict ws = w + (i * kw + j) * g->channels + c0;              \
            BODY                                                                         \
        }                                                                                \
    }

/* acc[0..cb) = bias + the taps (i, j) in [i0, i1) x [j0, j1) of one pixel, for cb channels from
   c0: image is x[n], (ih0, iw0) the pixel's first tap. Inlined with cb constant: a block of one
   wide or half vector sums in a register, other counts channel by channel. */
static inline __attribute__((always_inline)) void SFX(dw_taps)(REAL *restrict acc, int cb, const REAL *restrict image,
                                                               const REAL *restrict w, const REAL *restrict bias,
                                                               const Geometry *g, Py_ssize_t c0, Py_ssize_t ih0,
                                                               Py_ssize_t iw0, Py_ssize_t i0, Py_ssize_t i1,
                                                               Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t kw) {
    if (cb == WIDE) {
        SFX(wide) sum = SFX(load_wide)(bias + c0);
        FOR_TAPS(sum += SFX(load_wide)(ws) * SFX(load_wide)(xs);)
        memcpy(acc, &sum, sizeof sum);
    } else if (cb == HALF) {
        SFX(half) sum = SFX(load_half)(bias + c0);
        FOR_TAPS(sum += SFX(load_half)(ws) * SFX(load_half)(xs);)
        memcpy(acc, &sum, sizeof sum);
    } else {
        for (int k = 0; k < cb; k++) {
            REAL sum = bias[c0 + k];
            FOR_TAPS(sum += ws[k] * xs[k];)
            acc[k] = sum;
        }
    }
}
#undef FOR_TAPS

/* One output pixel, channels c0..C, any kernel: out (and res) point at the pixel's C values,
   the taps (i, j) in [i0, i1) x [j0, j1) are those inside the image. */
static void SFX(dw_pixel)(const SFX(DwArrays) *a, const Geometry *g, const REAL *image, REAL *out, const REAL *res,
                          Py_ssize_t c0, Py_ssize_t ih0, Py_ssize_t iw0, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t j0,
                          Py_ssize_t j1) {
    const Py_ssize_t channels = g->channels, kw = g->kw;
    REAL acc[WIDE];
#define DW_BLOCK(CB)                                                                    \
    do {                                                                                \
        SFX(dw_taps)(acc, CB, image, a->w, a->bias, g, c0, ih0, iw0, i0, i1, j0, j1, kw); \
        SFX(store)(out + c0, acc, NULL, res ? res + c0 : NULL, CB, &a->act);            \
        c0 += CB;                                                                       \
    } while (0)
    while (c0 + WIDE <= channels) DW_BLOCK(WIDE);
    if (c0 + HALF <= channels) DW_BLOCK(HALF);
    if (c0 < channels) DW_BLOCK((int)(channels - c0));
#undef DW_BLOCK
}

/* what a column outside the image reads */
static const REAL SFX(zeros)[2 * WIDE];

/* Output pixels ow..ow + count of row r (input rows from ih0), channels c0 .. c0 + nv wide
   vectors (nv 1 or 2; 0: one half vector), for a k x k kernel of horizontal stride sw and
   dilation 1. All but the image's sizes are constants once inlined: the taps unroll into
   straight code (no loop, so no induction variable per address to keep in registers), the
   count * nv sums stay in registers and a weight vector serves count pixels. Kernel rows outside
   the image are skipped. checked: a column outside it reads zeros, so its taps add +0 (finite
   weights: the caller's check; the sums only ever lose the sign of a -0); else all are inside. */
static inline __attribute__((always_inline)) void SFX(dw_group)(const SFX(DwArrays) *a, const Geometry *g,
                                                                const REAL *image, Py_ssize_t r, Py_ssize_t ih0,
                                                                Py_ssize_t ow, int count, int nv, int k, int sw,
                                                                int checked, Py_ssize_t c0) {
    const Py_ssize_t channels = g->channels, width = g->width, iw0 = ow * sw - g->pw;
    const REAL *bias = a->bias + c0;
    SFX(wide) sum[MAX_GROUP][2], weight[5][2];
    SFX(half) part[MAX_GROUP], half_weight[5];
    UNROLL for (int p = 0; p < count; p++) {
        if (nv == 0) {
            part[p] = SFX(load_half)(bias);
        } else {
            sum[p][0] = SFX(load_wide)(bias);
            if (nv == 2) sum[p][1] = SFX(load_wide)(bias + WIDE);
        }
    }
    UNROLL for (int i = 0; i < k; i++) {
        const Py_ssize_t ih = ih0 + i * g->dh;
        if ((size_t)ih >= (size_t)g->height) continue;
        const REAL *ws = a->w + i * k * channels + c0;
        UNROLL for (int j = 0; j < k; j++) {
            if (nv == 0) {
                half_weight[j] = SFX(load_half)(ws + j * channels);
            } else {
                weight[j][0] = SFX(load_wide)(ws + j * channels);
                if (nv == 2) weight[j][1] = SFX(load_wide)(ws + j * channels + WIDE);
            }
        }
        Py_ssize_t at = (ih * width + iw0) * channels + c0; /* of column q, walking the row */
        UNROLL for (int q = 0; q < (count - 1) * sw + k; q++, at += channels) {
            const REAL *column = checked && (size_t)(iw0 + q) >= (size_t)width ? SFX(zeros) : image + at;
            SFX(wide) x0, x1;
            SFX(half) xh;
            if (nv == 0) {
                xh = SFX(load_half)(column);
            } else {
                x0 = SFX(load_wide)(column);
                if (nv == 2) x1 = SFX(load_wide)(column + WIDE);
            }
            UNROLL for (int p = 0; p < count; p++) {
                const int j = q - p * sw; /* the tap by which column q reaches pixel p */
                if (j < 0 || j >= k) continue;
                if (nv == 0) {
                    part[p] += half_weight[j] * xh;
                } else {
                    sum[p][0] += weight[j][0] * x0;
                    if (nv == 2) sum[p][1] += weight[j][1] * x1;
                }
            }
        }
    }
    REAL values[2 * WIDE];
    UNROLL for (int p = 0; p < count; p++) {
        const Py_ssize_t at = (r * g->ow_count + ow + p) * channels + c0;
        if (nv == 0) {
            memcpy(values, &part[p], sizeof part[p]);
        } else {
            memcpy(values, &sum[p][0], sizeof sum[p][0]);
            if (nv == 2) memcpy(values + WIDE, &sum[p][1], sizeof sum[p][1]);
        }
        SFX(store)(a->y + at, values, NULL, a->res ? a->res + at : NULL, nv == 0 ? HALF : nv * WIDE, &a->act);
    }
}

typedef void (*SFX(DwGroup))(const SFX(DwArrays) *, const Geometry *, const REAL *, Py_ssize_t, Py_ssize_t,
                              Py_ssize_t, Py_ssize_t);

/* The group kernels of a k x k kernel of horizontal stride sw, by nv (0: half a vector, 1, 2):
   inside (all taps in the image's width) wide pixels at a time for two vectors, MAX_GROUP for
   fewer channels; border 4. */
typedef struct {
    int k, sw, wide;
    SFX(DwGroup) inside[3], border[3];
} SFX(DwKernel);

#define DW_GROUP(K, SW, COUNT, NV, CHECKED)                                                                \
    static __attribute__((noinline)) void SFX(dw_group_##K##_##SW##_##NV##_##CHECKED)(                   \
        const SFX(DwArrays) * a, const Geometry *g, const REAL *image, Py_ssize_t r, Py_ssize_t ih0,      \
        Py_ssize_t ow, Py_ssize_t c0) {                                                                  \
        SFX(dw_group)(a, g, image, r, ih0, ow, COUNT, NV, K, SW, CHECKED, c0);                           \
    }
#define DW_KERNEL(K, SW, WIDE_COUNT)                                                                      \
    DW_GROUP(K, SW, MAX_GROUP, 0, 0)                                                                      \
    DW_GROUP(K, SW, MAX_GROUP, 1, 0)                                                                      \
    DW_GROUP(K, SW, WIDE_COUNT, 2, 0)                                                                     \
    DW_GROUP(K, SW, 4, 0, 1)                                                                              \
    DW_GROUP(K, SW, 4, 1, 1)                                                                              \
    DW_GROUP(K, SW, 4, 2, 1)                                                                              \
    static const SFX(DwKernel) SFX(dw_kernel_##K##_##SW) = {                                              \
        K, SW, WIDE_COUNT,                                                                                \
        {SFX(dw_group_##K##_##SW##_0_0), SFX(dw_group_##K##_##SW##_1_0), SFX(dw_group_##K##_##SW##_2_0)}, \
        {SFX(dw_group_##K##_##SW##_0_1), SFX(dw_group_##K##_##SW##_1_1), SFX(dw_group_##K##_##SW##_2_1)}};
/* 8 pixels of two vectors: 16 sums, up to 10 weight vectors and an input column in registers
   (with 32 of them; 4 pixels where a 5x5 kernel of stride 2 makes that too many) */
DW_KERNEL(3, 1, WIDE_GROUP)
DW_KERNEL(3, 2, WIDE_GROUP)
DW_KERNEL(5, 1, WIDE_GROUP)
DW_KERNEL(5, 2, 4)
#undef DW_KERNEL
#undef DW_GROUP

/* Channels c0 .. c0 + nv wide vectors of output row r: runs of pixels whose taps all fall inside
   the image's width (columns ow_lo..ow_hi) by the inside kernel, the others by the border one
   (a last group overlapping the one before: its pixels written twice, alike). */
static void SFX(dw_row_block)(const SFX(DwArrays) *a, const Geometry *g, const REAL *image, Py_ssize_t r,
                              Py_ssize_t ih0, const SFX(DwKernel) *kernel, int nv, Py_ssize_t c0, Py_ssize_t ow_lo,
                              Py_ssize_t ow_hi) {
    const Py_ssize_t ow_count = g->ow_count, count = nv == 2 ? kernel->wide : MAX_GROUP;
    const SFX(DwGroup) inside = kernel->inside[nv], border = kernel->border[nv];
    Py_ssize_t ow = 0;
    while (ow < ow_count) {
        if (ow >= ow_lo && ow + count <= ow_hi) {
            inside(a, g, image, r, ih0, ow, c0);
            ow += count;
        } else {
            const Py_ssize_t start = ow + 4 <= ow_count ? ow : ow_count - 4;
            border(a, g, image, r, ih0, start, c0);
            ow = start + 4;
        }
    }
}

/* Where the aligned channel blocks start: loads that straddle two cache lines cost twice. Where
   every pixel starts at the same offset in a vector and that is not 0, one vector at each end of
   the channels overlaps the aligned blocks between them (channels computed twice, alike); else 0. */
static Py_ssize_t SFX(aligned_start)(const Geometry *g, const REAL *x) {
    const Py_ssize_t misaligned = (Py_ssize_t)((uintptr_t)x % VECTOR_BYTES) / (Py_ssize_t)sizeof(REAL);
    if (misaligned == 0 || (g->channels * (Py_ssize_t)sizeof(REAL)) % VECTOR_BYTES || g->channels < 4 * WIDE)
        return 0;
    return WIDE - misaligned;
}

/* Output row r of a 3x3 or 5x5 kernel of horizontal stride 1 or 2 and dilation 1, OW >= 4:
   channel block by block, the channels past the last half vector pixel by pixel. */
static void SFX(dw_row_fixed)(const SFX(DwArrays) *a, const Geometry *g, const REAL *image, Py_ssize_t r,
                              Py_ssize_t ih0, const SFX(DwKernel) *kernel) {
    const Py_ssize_t channels = g->channels, k = kernel->k, sw = kernel->sw, span = g->width - k + g->pw;
    Py_ssize_t ow_lo = (g->pw + sw - 1) / sw, ow_hi = span < 0 ? 0 : span / sw + 1;
    ow_hi = ow_hi < g->ow_count ? ow_hi : g->ow_count;
    Py_ssize_t c0 = SFX(aligned_start)(g, a->x), end = channels;
    if (c0) { /* the two unaligned vectors, then the aligned ones between them */
        SFX(dw_row_block)(a, g, image, r, ih0, kernel, 1, 0, ow_lo, ow_hi);
        SFX(dw_row_block)(a, g, image, r, ih0, kernel, 1, channels - WIDE, ow_lo, ow_hi);
        end = channels - WIDE + c0;
    }
    for (; c0 + 2 * WIDE <= end; c0 += 2 * WIDE) SFX(dw_row_block)(a, g, image, r, ih0, kernel, 2, c0, ow_lo, ow_hi);
    if (c0 + WIDE <= end) {
        SFX(dw_row_block)(a, g, image, r, ih0, kernel, 1, c0, ow_lo, ow_hi);
        c0 += WIDE;
    }
    if (c0 + HALF <= end) {
        SFX(dw_row_block)(a, g, image, r, ih0, kernel, 0, c0, ow_lo, ow_hi);
        c0 += HALF;
    }
    if (c0 < end) {
        const Py_ssize_t i0 = first_valid(ih0, g->dh), i1 = end_valid(ih0, g->dh, g->height, k);
        for (Py_ssize_t ow = 0; ow < g->ow_count; ow++) {
            const Py_ssize_t iw0 = ow * sw - g->pw, at = (r * g->ow_count + ow) * channels;
            const Py_ssize_t j0 = first_valid(iw0, 1), j1 = end_valid(iw0, 1, g->width, k);
            SFX(dw_pixel)(a, g, image, a->y + at, a->res ? a->res + at : NULL, c0, ih0, iw0, i0, i1, j0, j1);
        }
    }
}

/* Output row r of any kernel, pixel by pixel. */
static void SFX(dw_row_any)(const SFX(DwArrays) *a, const Geometry *g, const REAL *image, Py_ssize_t r,
                            Py_ssize_t ih0) {
    const Py_ssize_t i0 = first_valid(ih0, g->dh), i1 = end_valid(ih0, g->dh, g->height, g->kh);
    for (Py_ssize_t ow = 0; ow < g->ow_count; ow++) {
        const Py_ssize_t iw0 = ow * g->sw - g->pw, at = (r * g->ow_count + ow) * g->channels;
        const Py_ssize_t j0 = first_valid(iw0, g->dw), j1 = end_valid(iw0, g->dw, g->width, g->kw);
        SFX(dw_pixel)(a, g, image, a->y + at, a->res ? a->res + at : NULL, 0, ih0, iw0, i0, i1, j0, j1);
    }
}

/* Whether all count values are finite: none has an exponent of all ones (integer ops, which
   vectorise). */
static int SFX(finite)(const REAL *values, Py_ssize_t count) {
    const UINT exponent = sizeof(REAL) == 4 ? (UINT)0x7f800000u : (UINT)0x7ff0000000000000ull;
    UINT special = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        UINT bits;
        memcpy(&bits, values + i, sizeof bits);
        special |= (UINT)((bits & exponent) == exponent);
    }
    return special == 0;
}

/* The group kernels for g: 3x3 and 5x5 kernels of horizontal stride 1 or 2 and dilation 1 over
   rows of at least 4 pixels, with finite weights (a border group adds zero times them); NULL for
   the others (pixel by pixel). */
static const SFX(DwKernel) *SFX(dw_kernel)(const Geometry *g, const REAL *w) {
    if (g->kh != g->kw || g->dw != 1 || g->ow_count < 4 || (g->sw != 1 && g->sw != 2) || (g->kh != 3 && g->kh != 5) ||
        !SFX(finite)(w, g->kh * g->kw * g->channels))
        return NULL;
    if (g->kh == 3) return g->sw == 1 ? &SFX(dw_kernel_3_1) : &SFX(dw_kernel_3_2);
    return g->sw == 1 ? &SFX(dw_kernel_5_1) : &SFX(dw_kernel_5_2);
}

/* Output row r of the N * OH rows. */
static void SFX(dw_row)(const SFX(DwArrays) *a, const Geometry *g, const SFX(DwKernel) *kernel, Py_ssize_t r) {
    const Py_ssize_t n = r / g->oh_count, oh = r - n * g->oh_count, ih0 = oh * g->sh - g->ph;
    const REAL *image = a->x + n * g->height * g->width * g->channels;
    if (kernel)
        SFX(dw_row_fixed)(a, g, image, r, ih0, kernel);
    else
        SFX(dw_row_any)(a, g, image, r, ih0);
}

static void SFX(depthwise)(const SFX(DwArrays) *a, const Geometry *g, int threads) {
    const Py_ssize_t rows = g->n * g->oh_count;
    const SFX(DwKernel) *kernel = SFX(dw_kernel)(g, a->w);
#pragma omp parallel for num_threads(threads) if(threads > 1) schedule(static)
    for (Py_ssize_t r = 0; r < rows; r++) SFX(dw_row)(a, g, kernel, r);
}

/* --- finish, gemm ----------------------------------------------------------------------------- */

/* y[start:stop] = act(y + tiled + res), tiled repeated every period values from start */
static void SFX(finish_range)(REAL *y, const REAL *tiled, Py_ssize_t period, const REAL *res,
                              const SFX(Act) *act, Py_ssize_t start, Py_ssize_t stop) {
    for (Py_ssize_t at = start; at < stop; at += period) {
        const Py_ssize_t count = stop - at < period ? stop - at : period;
        SFX(store)(y + at, y + at, tiled, res ? res + at : NULL, count, act);
    }
}

static void SFX(finish)(REAL *y, Py_ssize_t size, const REAL *tiled, Py_ssize_t period, const REAL *res,
                        const SFX(Act) *act, int threads) {
    const Py_ssize_t blocks = (size + period - 1) / period;
    const Py_ssize_t chunks = threads > 1 ? (blocks < threads ? blocks : threads) : 1;
#pragma omp parallel for num_threads(threads) if(chunks > 1) schedule(static)
    for (Py_ssize_t k = 0; k < chunks; k++) {
        const Py_ssize_t start = (k * blocks / chunks) * period, end = ((k + 1) * blocks / chunks) * period;
        SFX(finish_range)(y, tiled, period, res, act, start, end < size ? end : size);
    }
}

#define GEMM_COLUMNS 256

/* y (rows, outputs) = act(x (rows, depth) @ w (depth, outputs) + bias (+ res)); each row
   accumulates depth scaled weight rows, GEMM_COLUMNS outputs at a time. */
static void SFX(gemm)(const REAL *x, const REAL *w, const REAL *bias, const REAL *res, REAL *y, Py_ssize_t rows,
                      Py_ssize_t depth, Py_ssize_t outputs, const SFX(Act) *act) {
    REAL acc[GEMM_COLUMNS];
    for (Py_ssize_t p = 0; p < rows; p++) {
        const REAL *src = x + p * depth;
        for (Py_ssize_t m0 = 0; m0 < outputs; m0 += GEMM_COLUMNS) {
            const Py_ssize_t count = outputs - m0 < GEMM_COLUMNS ? outputs - m0 : GEMM_COLUMNS;
            for (Py_ssize_t m = 0; m < count; m++) acc[m] = 0;
            for (Py_ssize_t k = 0; k < depth; k++) {
                const REAL v = src[k];
                const REAL *restrict wk = w + k * outputs + m0;
                for (Py_ssize_t m = 0; m < count; m++) acc[m] += v * wk[m];
            }
            const Py_ssize_t at = p * outputs + m0;
            SFX(store)(y + at, acc, bias + m0, res ? res + at : NULL, count, act);
        }
    }
}

/* --- im2col ----------------------------------------------------------------------------------- */

static void SFX(im2col)(const REAL *x, REAL *cols, const Geometry *g, Py_ssize_t n, Py_ssize_t oh0, Py_ssize_t oh1,
                        Py_ssize_t ow_count, Py_ssize_t width_cols) {
    const Py_ssize_t channels = g->channels, bytes = channels * (Py_ssize_t)sizeof(REAL);
    const REAL *image = x + n * g->height * g->width * channels;
    for (Py_ssize_t oh = oh0; oh < oh1; oh++) {
        for (Py_ssize_t ow = 0; ow < ow_count; ow++) {
            REAL *row = cols + ((oh - oh0) * ow_count + ow) * width_cols;
            for (Py_ssize_t i = 0; i < g->kh; i++) {
                const Py_ssize_t ih = oh * g->sh + i * g->dh - g->ph;
                for (Py_ssize_t j = 0; j < g->kw; j++) {
                    const Py_ssize_t iw = ow * g->sw + j * g->dw - g->pw;
                    REAL *dst = row + (i * g->kw + j) * channels;
                    if (ih < 0 || ih >= g->height || iw < 0 || iw >= g->width)
                        memset(dst, 0, (size_t)bytes);
                    else
                        memcpy(dst, image + (ih * g->width + iw) * channels, (size_t)bytes);
                }
            }
        }
    }
}

/* --- stem: a dense convolution from an NCHW image --------------------------------------------- */

typedef struct {
    const REAL *x, *w, *bias, *res; /* w (depth, mpad) and bias (mpad): zeros past M */
    REAL *y;
    const REAL *zeros; /* a row of zeros: what the kernel rows above and below the image read */
    SFX(Act) act;
    Py_ssize_t outputs, mpad;
} SFX(StemArrays);

/* Output pixels at .. at + pixels of y (count of them stored), channels m0 .. m0 + nv wide
   vectors: tap (c, i, j) of pixel p is rows[c * kh + i][col + p * sw + j * dw] (sw and kw the
   constants SW and KW where not 0, the geometry's else; dilation 1 with KW), its weight row
   (c, i, j) of w. Each tap adds one input value times a weight row to the pixels * nv sums,
   which stay in registers: a weight row serves all the pixels, and pixels * nv independent sums
   hide the latency of the multiply-adds. The sums go out through a buffer where the pixels'
   channels are contiguous, then the epilogue runs once over them. */
static inline __attribute__((always_inline)) void SFX(stem_group)(const SFX(StemArrays) *a, const Geometry *g,
                                                                  const REAL *const *rows, Py_ssize_t col,
                                                                  Py_ssize_t at, int count, Py_ssize_t m0,
                                                                  int pixels, int nv, int SW, int KW) {
    const Py_ssize_t mpad = a->mpad, outputs = a->outputs, row_count = g->channels * g->kh;
    const Py_ssize_t kw = KW ? KW : g->kw, dw = KW ? 1 : g->dw, step = SW ? SW : g->sw;
    const REAL *restrict w = a->w + m0;
    SFX(wide) sum[STEM_PIXELS][STEM_VECTORS], weight[STEM_VECTORS];
    UNROLL for (int v = 0; v < nv; v++) weight[v] = SFX(load_wide)(a->bias + m0 + v * WIDE);
    UNROLL for (int p = 0; p < pixels; p++) UNROLL for (int v = 0; v < nv; v++) sum[p][v] = weight[v];
    for (Py_ssize_t ci = 0; ci < row_count; ci++) {
        const REAL *xs = rows[ci] + col;
        UNROLL for (Py_ssize_t j = 0; j < kw; j++, xs += dw, w += mpad) {
            UNROLL for (int v = 0; v < nv; v++) weight[v] = SFX(load_wide)(w + v * WIDE);
            UNROLL for (int p = 0; p < pixels; p++) {
                const REAL value = xs[p * step];
                UNROLL for (int v = 0; v < nv; v++) sum[p][v] += weight[v] * value;
            }
        }
    }
    REAL *out = a->y + at * outputs + m0;
    const REAL *res = a->res ? a->res + at * outputs + m0 : NULL;
    REAL values[STEM_PIXELS * STEM_VECTORS * WIDE + STEM_VECTORS * WIDE];
    if (m0 == 0 && mpad <= nv * WIDE) { /* all the channels: the pixels' values are contiguous */
        UNROLL for (int p = 0; p < pixels; p++) UNROLL for (int v = 0; v < nv; v++)
            memcpy(values + p * outputs + v * WIDE, &sum[p][v], sizeof sum[p][v]); /* past M: the next overwrites */
        SFX(store)(out, values, NULL, res, count * outputs, &a->act);
    } else {
        const Py_ssize_t width = outputs - m0 < nv * WIDE ? outputs - m0 : nv * WIDE;
        for (int p = 0; p < count; p++) {
            UNROLL for (int v = 0; v < nv; v++) memcpy(values + v * WIDE, &sum[p][v], sizeof sum[p][v]);
            SFX(store)(out + p * outputs, values, NULL, res ? res + p * outputs : NULL, width, &a->act);
        }
    }
}

typedef void (*SFX(StemGroup))(const SFX(StemArrays) *, const Geometry *, const REAL *const *, Py_ssize_t, Py_ssize_t,
                               int, Py_ssize_t);

/* The group kernels of nv wide vectors of channels, by kernel width (any, or 3 with dilation 1:
   its taps unrolled) and horizontal stride (any, 1, 2). */
typedef struct {
    int pixels;
    SFX(StemGroup) group[2][3];
} SFX(StemKernel);

#define STEM_GROUP(NV, PIXELS, SW, KW)                                                                       \
    static __attribute__((noinline)) void SFX(stem_group_##NV##_##SW##_##KW)(                                \
        const SFX(StemArrays) * a, const Geometry *g, const REAL *const *rows, Py_ssize_t col, Py_ssize_t at, \
        int count, Py_ssize_t m0) {                                                                          \
        SFX(stem_group)(a, g, rows, col, at, count, m0, PIXELS, NV, SW, KW);                                 \
    }
#define STEM_KERNEL(NV, PIXELS)                                                                                 \
    STEM_GROUP(NV, PIXELS, 0, 0)                                                                                \
    STEM_GROUP(NV, PIXELS, 1, 0)                                                                                \
    STEM_GROUP(NV, PIXELS, 2, 0)                                                                                \
    STEM_GROUP(NV, PIXELS, 0, 3)                                                                                \
    STEM_GROUP(NV, PIXELS, 1, 3)                                                                                \
    STEM_GROUP(NV, PIXELS, 2, 3)                                                                                \
    static const SFX(StemKernel) SFX(stem_kernel_##NV) = {                                                      \
        PIXELS,                                                                                                 \
        {{SFX(stem_group_##NV##_0_0), SFX(stem_group_##NV##_1_0), SFX(stem_group_##NV##_2_0)},                  \
         {SFX(stem_group_##NV##_0_3), SFX(stem_group_##NV##_1_3), SFX(stem_group_##NV##_2_3)}}};
STEM_KERNEL(1, STEM_PIXELS_1)
STEM_KERNEL(2, STEM_PIXELS_2)
STEM_KERNEL(3, STEM_PIXELS_3)
STEM_KERNEL(4, STEM_PIXELS_4)
#undef STEM_KERNEL
#undef STEM_GROUP

static const SFX(StemKernel) *const SFX(stem_kernels)[STEM_VECTORS] = {
    &SFX(stem_kernel_1), &SFX(stem_kernel_2), &SFX(stem_kernel_3), &SFX(stem_kernel_4)};

/* Output row r of the N * OH rows, channel block by channel block, in groups of the block
   kernel's pixels (the last group overlapping the one before). rows: the input rows its taps read
   (the row of zeros above and below the image); a group whose taps all fall inside the image's
   width reads them there, the others from a strip of their columns copied with zeros around (the
   same values summed in the same order: a pixel computed twice comes out the same). scratch:
   2 * C * kh row pointers, then C * kh strips of (STEM_PIXELS - 1) * sw + (kw - 1) * dw + 1 values. */
static void SFX(stem_row)(const SFX(StemArrays) *a, const Geometry *g, Py_ssize_t r, void *scratch) {
    const Py_ssize_t n = r / g->oh_count, oh = r - n * g->oh_count, ih0 = oh * g->sh - g->ph;
    const Py_ssize_t ow_count = g->ow_count, width = g->width, sw = g->sw, row_count = g->channels * g->kh;
    const REAL *image = a->x + n * g->channels * g->height * width;
    const REAL **rows = scratch, **strip_rows = rows + row_count;
    REAL *strip = (REAL *)(strip_rows + row_count);
    for (Py_ssize_t c = 0; c < g->channels; c++) {
        for (Py_ssize_t i = 0; i < g->kh; i++) {
            const Py_ssize_t ih = ih0 + i * g->dh;
            rows[c * g->kh + i] = (size_t)ih < (size_t)g->height ? image + (c * g->height + ih) * width : a->zeros;
        }
    }
    const Py_ssize_t span = width - 1 - (g->kw - 1) * g->dw + g->pw; /* the pixels inside the width: */
    const Py_ssize_t ow_lo = (g->pw + sw - 1) / sw, ow_hi = span < 0 ? 0 : span / sw + 1; /* ow_lo .. ow_hi */
    const int which = sw == 1 ? 1 : sw == 2 ? 2 : 0;
    for (Py_ssize_t m0 = 0; m0 < a->mpad; m0 += STEM_VECTORS * WIDE) {
        const Py_ssize_t left = (a->mpad - m0) / WIDE;
        const SFX(StemKernel) *kernel = SFX(stem_kernels)[(left < STEM_VECTORS ? left : STEM_VECTORS) - 1];
        const int pixels = kernel->pixels;
        const SFX(StemGroup) group = kernel->group[g->kw == 3 && g->dw == 1][which];
        const Py_ssize_t length = (pixels - 1) * sw + (g->kw - 1) * g->dw + 1;
        for (Py_ssize_t ow = 0; ow < ow_count;) {
            const Py_ssize_t start = ow + pixels <= ow_count || ow_count < pixels ? ow : ow_count - pixels;
            const int count = ow_count - start < pixels ? (int)(ow_count - start) : pixels;
            const Py_ssize_t col = start * sw - g->pw, at = r * ow_count + start;
            if (start >= ow_lo && start + pixels <= ow_hi) {
                group(a, g, rows, col, at, count, m0);
            } else {
                /* columns col + q0 .. col + q1 inside the image, zeros around */
                const Py_ssize_t q0 = col < 0 ? (-col < length ? -col : length) : 0;
                const Py_ssize_t q1 = width - col < length ? (width - col > q0 ? width - col : q0) : length;
                for (Py_ssize_t ci = 0; ci < row_count; ci++) {
                    REAL *dst = strip + ci * length;
                    for (Py_ssize_t q = 0; q < q0; q++) dst[q] = 0;
                    if (q1 > q0) memcpy(dst + q0, rows[ci] + col + q0, sizeof(REAL) * (size_t)(q1 - q0));
                    for (Py_ssize_t q = q1; q < length; q++) dst[q] = 0;
                    strip_rows[ci] = dst;
                }
                group(a, g, strip_rows, 0, at, count, m0);
            }
            ow = start + pixels;
        }
    }
}

/* y = act(conv(x, w) + bias (+ res)), output rows split over chunks (threads): chunk k uses
   scratch + k * stride bytes (see stem_row). */
static void SFX(stem)(const SFX(StemArrays) *a, const Geometry *g, int threads, char *scratch, size_t stride) {
    const Py_ssize_t rows = g->n * g->oh_count, chunks = threads < rows ? threads : rows;
#pragma omp parallel for num_threads(threads) if(chunks > 1) schedule(static)
    for (Py_ssize_t k = 0; k < chunks; k++) {
        for (Py_ssize_t r = k * rows / chunks; r < (k + 1) * rows / chunks; r++)
            SFX(stem_row)(a, g, r, scratch + (size_t)k * stride);
    }
}

/* --- squeeze and excitation ------------------------------------------------------------------- */

/* total[k] = the sum of values[at + k] over the runs of period values from at = 0 (float64) */
static void SFX(run_sums)(double *restrict total, const REAL *restrict values, Py_ssize_t size, Py_ssize_t period) {
    for (Py_ssize_t k = 0; k < period; k++) total[k] = 0.0;
    for (Py_ssize_t at = 0; at < size; at += period) {
        const Py_ssize_t count = size - at < period ? size - at : period;
        for (Py_ssize_t k = 0; k < count; k++) total[k] += (double)values[at + k];
    }
}

/* out (outputs) = v (depth) @ w (depth, outputs): depth scaled weight rows */
static void SFX(gemv)(REAL *restrict out, const REAL *restrict v, const REAL *restrict w, Py_ssize_t depth,
                      Py_ssize_t outputs) {
    for (Py_ssize_t j = 0; j < outputs; j++) out[j] = 0;
    for (Py_ssize_t c = 0; c < depth; c++) {
        const REAL scale = v[c];
        for (Py_ssize_t j = 0; j < outputs; j++) out[j] += scale * w[c * outputs + j];
    }
}

/* dst = src * tiled over the runs of period values */
static void SFX(scale_runs)(REAL *restrict dst, const REAL *restrict src, const REAL *restrict tiled, Py_ssize_t size,
                            Py_ssize_t period) {
    for (Py_ssize_t at = 0; at < size; at += period) {
        const Py_ssize_t count = size - at < period ? size - at : period;
        for (Py_ssize_t k = 0; k < count; k++) dst[at + k] = src[at + k] * tiled[k];
    }
}

/* y = x * gate(act2(act1(mean(x) @ w1 + b1) @ w2 + b2)) per image of positions * channels values.
   The passes over an image run over runs of period values (a whole number of pixels, at least
   256 values), so they vectorise when C is small; the sums accumulate in float64. scratch: period
   doubles, then period + 2 * channels + 2 * hidden REALs. */
static void SFX(squeeze_excitation)(const REAL *x, const REAL *w1, const REAL *b1, const REAL *w2, const REAL *b2,
                                    REAL *y, Py_ssize_t images, Py_ssize_t positions, Py_ssize_t channels,
                                    Py_ssize_t hidden_count, const SFX(Act) *act1, const SFX(Act) *act2,
                                    Py_ssize_t period, double *scratch) {
    double *total = scratch;
    REAL *tiled = (REAL *)(total + period), *mean = tiled + period, *gate = mean + channels;
    REAL *hidden = gate + channels, *acc = hidden + hidden_count;
    const Py_ssize_t size = positions * channels;
    for (Py_ssize_t n = 0; n < images; n++) {
        SFX(run_sums)(total, x + n * size, size, period);
        for (Py_ssize_t c = 0; c < channels; c++) {
            double sum = 0.0;
            for (Py_ssize_t at = c; at < period; at += channels) sum += total[at];
            mean[c] = (REAL)(sum / (double)positions);
        }
        SFX(gemv)(acc, mean, w1, channels, hidden_count);
        SFX(store)(hidden, acc, b1, NULL, hidden_count, act1);
        SFX(gemv)(gate, hidden, w2, hidden_count, channels);
        SFX(store)(gate, gate, b2, NULL, channels, act2);
        for (Py_ssize_t k = 0; k < period; k++) tiled[k] = gate[k % channels];
        SFX(scale_runs)(y + n * size, x + n * size, tiled, size, period);
    }
}

#undef CLIPPED
#undef ACT_CLIP
#undef ACT_LEAKY
#undef ACT_SWISH
#undef WIDE
#undef HALF

#else /* the shared part, then the typed kernels, then the Python functions */

#include "common.h"

#ifdef __AVX512F__
#define VECTOR_BYTES 64
#else
#define VECTOR_BYTES 32
#endif
#define UNROLL _Pragma("GCC unroll 16")
#define MAX_GROUP 8 /* output pixels computed together by dw_group */
#define WIDE_GROUP (VECTOR_BYTES == 64 ? 8 : 4) /* the same for two vectors: 32 registers or 16 */
/* stem's groups of output pixels by wide vectors of channels: 1 to STEM_VECTORS vectors (more: by
   blocks of as many), STEM_PIXELS pixels at most; their sums take 12, 16, 24 and 24 registers of 32
   with AVX-512 (besides the weight row), 8, 12, 12 and 12 of 16 without */
#define STEM_VECTORS 4
#define STEM_PIXELS 12
#define STEM_PIXELS_1 (VECTOR_BYTES == 64 ? 12 : 8)
#define STEM_PIXELS_2 (VECTOR_BYTES == 64 ? 8 : 6)
#define STEM_PIXELS_3 (VECTOR_BYTES == 64 ? 8 : 4)
#define STEM_PIXELS_4 (VECTOR_BYTES == 64 ? 6 : 3)

enum { FORM_CLIP, FORM_LEAKY, FORM_SWISH };

/* A convolution's sizes: input (N, H, W, C), kernel (kh, kw), output (N, OH, OW, C). */
typedef struct {
    Py_ssize_t n, height, width, channels, kh, kw, oh_count, ow_count;
    Py_ssize_t sh, sw, dh, dw, ph, pw;
} Geometry;

/* The first k >= 0 with 0 <= start + k * step. */
static inline Py_ssize_t first_valid(Py_ssize_t start, Py_ssize_t step) {
    return start >= 0 ? 0 : (-start + step - 1) / step;
}

/* One past the last k < count with start + k * step < size. */
static inline Py_ssize_t end_valid(Py_ssize_t start, Py_ssize_t step, Py_ssize_t size, Py_ssize_t count) {
    if (start >= size) return 0;
    Py_ssize_t end = (size - 1 - start) / step + 1;
    return end < count ? end : count;
}

#define CL_TYPED
#define REAL float
#define UINT uint32_t
#define SFX(name) name##_f32
#include "channels_last.c"
#undef REAL
#undef UINT
#undef SFX
#define REAL double
#define UINT uint64_t
#define SFX(name) name##_f64
#include "channels_last.c"
#undef REAL
#undef UINT
#undef SFX
#undef CL_TYPED

/* Strides and dilations of at least 1, pads of at least 0 (what the kernels are written for). */
static int geometry_ok(const Geometry *g) {
    return g->sh >= 1 && g->sw >= 1 && g->dh >= 1 && g->dw >= 1 && g->ph >= 0 && g->pw >= 0 && g->kh >= 1 &&
           g->kw >= 1;
}

static PyObject *py_depthwise(FASTCALL_ARGS) {
    CHECK_NARGS("depthwise", 14);
    Py_ssize_t threads, has_res, geo[6];
    if (arg_ssize(args[0], &threads) || arg_ssize(args[5], &has_res) || args_ssize(args + 7, 6, geo)) return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *x = arrays_real(&arrays, args[1], 0);
    Py_buffer *w = x ? arrays_real(&arrays, args[2], 0) : NULL;
    Py_buffer *tiled = w ? arrays_real(&arrays, args[3], 0) : NULL;
    Py_buffer *res = tiled && has_res ? arrays_real(&arrays, args[4], 0) : NULL;
    Py_buffer *y = tiled && (res || !has_res) ? arrays_real(&arrays, args[6], 1) : NULL;
    Py_buffer *params = y ? arrays_real(&arrays, args[13], 0) : NULL;
    if (params == NULL || x->ndim != 4 || w->ndim != 3 || y->ndim != 4) DECLINE(&arrays);
    Geometry g = {.n = view_dim(x, 0), .height = view_dim(x, 1), .width = view_dim(x, 2), .channels = view_dim(x, 3),
                  .kh = view_dim(w, 0), .kw = view_dim(w, 1), .oh_count = view_dim(y, 1), .ow_count = view_dim(y, 2),
                  .sh = geo[0], .sw = geo[1], .dh = geo[2], .dw = geo[3], .ph = geo[4], .pw = geo[5]};
    if (!geometry_ok(&g) || view_dim(w, 2) != g.channels || view_dim(y, 0) != g.n || view_dim(y, 3) != g.channels ||
        view_size(tiled) < g.channels || view_size(params) < 6 || (res && view_size(res) != view_size(y)) ||
        views_overlap(x, y) || (res && views_overlap(res, y)))
        DECLINE(&arrays); /* (an output written over its inputs: numba's order of reads decides) */
    int nt = threads > 1 ? (int)threads : 1;
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f') {
        DwArrays_f32 a = {x->buf, w->buf, tiled->buf, res ? res->buf : NULL, y->buf, act_of_f32(params->buf)};
        depthwise_f32(&a, &g, nt);
    } else {
        DwArrays_f64 a = {x->buf, w->buf, tiled->buf, res ? res->buf : NULL, y->buf, act_of_f64(params->buf)};
        depthwise_f64(&a, &g, nt);
    }
    Py_END_ALLOW_THREADS
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyObject *py_finish(FASTCALL_ARGS) {
    CHECK_NARGS("finish", 6);
    Py_ssize_t threads, has_res;
    if (arg_ssize(args[0], &threads) || arg_ssize(args[4], &has_res)) return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *y = arrays_real(&arrays, args[1], 1);
    Py_buffer *tiled = y ? arrays_real(&arrays, args[2], 0) : NULL;
    Py_buffer *res = tiled && has_res ? arrays_real(&arrays, args[3], 0) : NULL;
    Py_buffer *params = tiled && (res || !has_res) ? arrays_real(&arrays, args[5], 0) : NULL;
    if (params == NULL || y->ndim != 1 || tiled->ndim != 1 || view_size(tiled) < 1 || view_size(params) < 6 ||
        (res && (view_size(res) < view_size(y) || views_overlap(res, y))))
        DECLINE(&arrays);
    Py_ssize_t size = view_size(y), period = view_size(tiled);
    int nt = threads > 1 ? (int)threads : 1;
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f') {
        Act_f32 act = act_of_f32(params->buf);
        finish_f32(y->buf, size, tiled->buf, period, res ? res->buf : NULL, &act, nt);
    } else {
        Act_f64 act = act_of_f64(params->buf);
        finish_f64(y->buf, size, tiled->buf, period, res ? res->buf : NULL, &act, nt);
    }
    Py_END_ALLOW_THREADS
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyObject *py_gemm(FASTCALL_ARGS) {
    CHECK_NARGS("gemm", 7);
    Py_ssize_t has_res;
    if (arg_ssize(args[4], &has_res)) return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *x = arrays_real(&arrays, args[0], 0);
    Py_buffer *w = x ? arrays_real(&arrays, args[1], 0) : NULL;
    Py_buffer *bias = w ? arrays_real(&arrays, args[2], 0) : NULL;
    Py_buffer *res = bias && has_res ? arrays_real(&arrays, args[3], 0) : NULL;
    Py_buffer *y = bias && (res || !has_res) ? arrays_real(&arrays, args[5], 1) : NULL;
    Py_buffer *params = y ? arrays_real(&arrays, args[6], 0) : NULL;
    if (params == NULL || x->ndim != 2 || w->ndim != 2 || y->ndim != 2) DECLINE(&arrays);
    Py_ssize_t rows = view_dim(y, 0), depth = view_dim(w, 0), outputs = view_dim(w, 1);
    if (view_dim(x, 0) != rows || view_dim(x, 1) != depth || view_dim(y, 1) != outputs || view_size(bias) < outputs ||
        view_size(params) < 6 || (res && view_size(res) != view_size(y)) || views_overlap(x, y))
        DECLINE(&arrays);
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f') {
        Act_f32 act = act_of_f32(params->buf);
        gemm_f32(x->buf, w->buf, bias->buf, res ? res->buf : NULL, y->buf, rows, depth, outputs, &act);
    } else {
        Act_f64 act = act_of_f64(params->buf);
        gemm_f64(x->buf, w->buf, bias->buf, res ? res->buf : NULL, y->buf, rows, depth, outputs, &act);
    }
    Py_END_ALLOW_THREADS
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyObject *py_im2col(FASTCALL_ARGS) {
    CHECK_NARGS("im2col", 13);
    Py_ssize_t v[11];
    if (args_ssize(args + 2, 11, v)) return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *x = arrays_real(&arrays, args[0], 0);
    Py_buffer *cols = x ? arrays_real(&arrays, args[1], 1) : NULL;
    if (cols == NULL || x->ndim != 4 || cols->ndim != 2) DECLINE(&arrays);
    Py_ssize_t n = v[0], oh0 = v[1], oh1 = v[2];
    Geometry g = {.n = view_dim(x, 0), .height = view_dim(x, 1), .width = view_dim(x, 2), .channels = view_dim(x, 3),
                  .kh = v[3], .kw = v[4], .sh = v[5], .sw = v[6], .dh = v[7], .dw = v[8], .ph = v[9], .pw = v[10]};
    Py_ssize_t count = view_dim(cols, 0), width_cols = view_dim(cols, 1);
    if (!geometry_ok(&g) || n < 0 || n >= g.n || oh0 < 0 || oh1 <= oh0 || count % (oh1 - oh0) ||
        width_cols < g.kh * g.kw * g.channels)
        DECLINE(&arrays);
    Py_ssize_t ow_count = count / (oh1 - oh0);
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f')
        im2col_f32(x->buf, cols->buf, &g, n, oh0, oh1, ow_count, width_cols);
    else
        im2col_f64(x->buf, cols->buf, &g, n, oh0, oh1, ow_count, width_cols);
    Py_END_ALLOW_THREADS
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

/* What stem needs besides its arguments, in one zeroed block from PyMem_RawCalloc: the weight
   (depth, M) with its rows padded to mpad values and the bias (mpad values), zeros past M; a row
   of zeros (width values); then the chunks' scratch, stride bytes each (a multiple of 64). */
typedef struct {
    char *block;
    size_t head, stride; /* where the chunks' scratch starts, and each one's size */
} StemScratch;

static int stem_scratch(StemScratch *s, const Py_buffer *w, const Py_buffer *tiled, const Geometry *g,
                        Py_ssize_t depth, Py_ssize_t outputs, Py_ssize_t mpad, size_t item, int chunks) {
    const size_t rows = (size_t)(g->channels * g->kh), length = (size_t)((STEM_PIXELS - 1) * g->sw +
                                                                         (g->kw - 1) * g->dw + 1);
    s->head = ((size_t)((depth + 1) * mpad + g->width) * item + 63) / 64 * 64;
    s->stride = (2 * rows * sizeof(void *) + rows * length * item + 63) / 64 * 64;
    s->block = PyMem_RawCalloc(s->head + (size_t)chunks * s->stride, 1);
    if (s->block == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    const size_t row = (size_t)outputs * item, pitch = (size_t)mpad * item;
    for (Py_ssize_t k = 0; k < depth; k++)
        memcpy(s->block + (size_t)k * pitch, (const char *)w->buf + (size_t)k * row, row);
    memcpy(s->block + (size_t)depth * pitch, tiled->buf, row);
    return 0;
}

static PyObject *py_stem(FASTCALL_ARGS) {
    CHECK_NARGS("stem", 16);
    Py_ssize_t threads, has_res, geo[8];
    if (arg_ssize(args[0], &threads) || arg_ssize(args[5], &has_res) || args_ssize(args + 7, 8, geo)) return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *x = arrays_real(&arrays, args[1], 0);
    Py_buffer *w = x ? arrays_real(&arrays, args[2], 0) : NULL;
    Py_buffer *tiled = w ? arrays_real(&arrays, args[3], 0) : NULL;
    Py_buffer *res = tiled && has_res ? arrays_real(&arrays, args[4], 0) : NULL;
    Py_buffer *y = tiled && (res || !has_res) ? arrays_real(&arrays, args[6], 1) : NULL;
    Py_buffer *params = y ? arrays_real(&arrays, args[15], 0) : NULL;
    if (params == NULL || x->ndim != 4 || w->ndim != 2 || y->ndim != 4) DECLINE(&arrays);
    Geometry g = {.n = view_dim(x, 0), .channels = view_dim(x, 1), .height = view_dim(x, 2), .width = view_dim(x, 3),
                  .kh = geo[0], .kw = geo[1], .oh_count = view_dim(y, 1), .ow_count = view_dim(y, 2),
                  .sh = geo[2], .sw = geo[3], .dh = geo[4], .dw = geo[5], .ph = geo[6], .pw = geo[7]};
    const Py_ssize_t depth = view_dim(w, 0), outputs = view_dim(w, 1);
    if (!geometry_ok(&g) || depth != g.channels * g.kh * g.kw || depth < 1 || outputs < 1 || view_dim(y, 0) != g.n ||
        view_dim(y, 3) != outputs || view_size(tiled) < outputs || view_size(params) < 6 ||
        (res && view_size(res) != view_size(y)) || views_overlap(x, y) || views_overlap(w, y) || views_overlap(tiled, y) ||
        (res && views_overlap(res, y)))
        DECLINE(&arrays);
    if (view_size(y) == 0) {
        arrays_release(&arrays);
        Py_RETURN_NONE;
    }
    const size_t item = arrays.kind == 'f' ? sizeof(float) : sizeof(double);
    const Py_ssize_t lanes = VECTOR_BYTES / (Py_ssize_t)item, mpad = (outputs + lanes - 1) / lanes * lanes;
    const Py_ssize_t rows = g.n * g.oh_count;
    const int nt = threads > 1 ? (int)(threads < rows ? threads : rows) : 1;
    StemScratch s;
    if (stem_scratch(&s, w, tiled, &g, depth, outputs, mpad, item, nt)) {
        arrays_release(&arrays);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f') {
        const float *padded = (const float *)s.block;
        StemArrays_f32 a = {x->buf, padded, padded + depth * mpad, res ? res->buf : NULL, y->buf,
                            padded + (depth + 1) * mpad, act_of_f32(params->buf), outputs, mpad};
        stem_f32(&a, &g, nt, s.block + s.head, s.stride);
    } else {
        const double *padded = (const double *)s.block;
        StemArrays_f64 a = {x->buf, padded, padded + depth * mpad, res ? res->buf : NULL, y->buf,
                            padded + (depth + 1) * mpad, act_of_f64(params->buf), outputs, mpad};
        stem_f64(&a, &g, nt, s.block + s.head, s.stride);
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(s.block);
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyObject *py_squeeze_excitation(FASTCALL_ARGS) {
    CHECK_NARGS("squeeze_excitation", 8);
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *views[8] = {NULL};
    for (int i = 0; i < 8; i++) {
        views[i] = arrays_real(&arrays, args[i], i == 5);
        if (views[i] == NULL) DECLINE(&arrays);
    }
    Py_buffer *x = views[0], *w1 = views[1], *b1 = views[2], *w2 = views[3], *b2 = views[4], *y = views[5];
    if (x->ndim != 2 || w1->ndim != 2 || w2->ndim != 2) DECLINE(&arrays);
    Py_ssize_t images = view_dim(x, 0), size = view_dim(x, 1), channels = view_dim(w1, 0), hidden = view_dim(w1, 1);
    if (channels < 1 || size % channels || size == 0 || view_dim(w2, 0) != hidden || view_dim(w2, 1) != channels ||
        view_size(b1) < hidden || view_size(b2) < channels || view_size(y) != view_size(x) || views_overlap(x, y) ||
        view_size(views[6]) < 6 || view_size(views[7]) < 6)
        DECLINE(&arrays);
    size_t item = arrays.kind == 'f' ? sizeof(float) : sizeof(double);
    Py_ssize_t positions = size / channels, period = channels * (channels < 256 ? 256 / channels : 1);
    size_t reals = (size_t)(period + 2 * channels + 2 * hidden);
    double *scratch = PyMem_RawMalloc(sizeof(double) * (size_t)period + item * reals);
    if (scratch == NULL) {
        arrays_release(&arrays);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f') {
        Act_f32 act1 = act_of_f32(views[6]->buf), act2 = act_of_f32(views[7]->buf);
        squeeze_excitation_f32(x->buf, w1->buf, b1->buf, w2->buf, b2->buf, y->buf, images, positions, channels, hidden,
                               &act1, &act2, period, scratch);
    } else {
        Act_f64 act1 = act_of_f64(views[6]->buf), act2 = act_of_f64(views[7]->buf);
        squeeze_excitation_f64(x->buf, w1->buf, b1->buf, w2->buf, b2->buf, y->buf, images, positions, channels, hidden,
                               &act1, &act2, period, scratch);
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    METHOD(depthwise, "depthwise(threads, x, w, tiled, res, has_res, y, sh, sw, dh, dw, ph, pw, params)"),
    METHOD(finish, "finish(threads, y, tiled, res, has_res, params)"),
    METHOD(gemm, "gemm(x, w, bias, res, has_res, y, params)"),
    METHOD(im2col, "im2col(x, cols, n, oh0, oh1, kh, kw, sh, sw, dh, dw, ph, pw)"),
    METHOD(stem, "stem(threads, x, w, tiled, res, has_res, y, kh, kw, sh, sw, dh, dw, ph, pw, params)"),
    METHOD(squeeze_excitation, "squeeze_excitation(x, w1, b1, w2, b2, y, params1, params2)"),
    {NULL, NULL, 0, NULL},
};

DEFINE_MODULE(ronn_native_channels_last, methods, "Channels-last convolution kernels.")

#endif
